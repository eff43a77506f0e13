//! OOM notices for a container's memory cgroup.
//!
//! cgroup v1: an eventfd registered for `memory.oom_control` through
//! `cgroup.event_control`; the kernel signals it on each OOM in the cgroup, and once more
//! when the cgroup is removed (then `cgroup.event_control` is gone too).
//!
//! cgroup v2: an inotify watch on `memory.events`, whose `oom_kill` counter is compared
//! with the last value seen, and on `cgroup.events`, whose `populated 0` means that no
//! process is left.
//!
//! The watcher's descriptor can join a caller's `poll(2)` set ([`AsFd`]); after it turns
//! readable, [`OomWatcher::check`] says what happened. [`OomWatcher::wait`] does the
//! polling for callers that have nothing else to wait for.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::error::{CgroupError, Result};
use crate::files::{self, read_if_present};
use crate::manager::{Manager, Target};

/// How often [`OomWatcher::wait`] looks at its stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// What the watcher noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomNotice {
    /// The kernel's OOM handling ran in the cgroup (v1), or killed a process there (v2).
    Oom,
    /// The cgroup was removed (v1), or has no process left (v2). Nothing more will come.
    Gone,
}

/// Watches one container's memory cgroup for OOM kills. See the module documentation.
#[derive(Debug)]
pub struct OomWatcher {
    source: Source,
    /// Set once [`OomNotice::Gone`] has been seen.
    gone: bool,
}

#[derive(Debug)]
enum Source {
    V1 {
        eventfd: EventFd,
        /// Kept open: the registration refers to it.
        _oom_control: File,
        /// `cgroup.event_control`, which disappears with the cgroup.
        event_control: PathBuf,
    },
    V2 {
        inotify: Inotify,
        dir: PathBuf,
        /// The `oom_kill` count last reported.
        oom_kills: u64,
    },
}

/// The error for a failed eventfd or inotify call about `path`.
fn watch_error(path: &Path, errno: Errno) -> CgroupError {
    CgroupError::Watch {
        what: "OOM kills",
        path: path.to_path_buf(),
        source: errno.into(),
    }
}

/// The `oom_kill` count in `dir/memory.events`; `None` if the file is gone.
fn v2_oom_kills(dir: &Path) -> Result<Option<u64>> {
    Ok(read_if_present(dir, "memory.events")?.map(|text| key_value(&text, "oom_kill")))
}

/// The value of `key` in a `key value` file, 0 if absent or not a number.
fn key_value(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

impl Manager {
    /// How many processes the OOM killer has killed in the container's memory cgroup
    /// (`oom_kill` of v1's memory.oom_control or v2's memory.events); `None` without a
    /// memory controller or a cgroup.
    pub fn oom_kills(&self) -> Result<Option<u64>> {
        match self.target("memory", Some("memory")) {
            None => Ok(None),
            Some(Target::V1(dir)) => Ok(read_if_present(dir, "memory.oom_control")?
                .map(|text| key_value(&text, "oom_kill"))),
            Some(Target::V2(dir)) => v2_oom_kills(dir),
        }
    }

    /// Starts watching the container's memory cgroup for OOM kills; fails if the host has
    /// no memory controller for it or the cgroup does not exist.
    pub fn watch_oom(&self) -> Result<OomWatcher> {
        let target = self.target("memory", Some("memory")).ok_or_else(|| {
            CgroupError::ControllerUnavailable {
                what: "OOM notification".to_string(),
                controller: "memory".to_string(),
            }
        })?;
        let source = match target {
            Target::V1(dir) => watch_v1(dir)?,
            Target::V2(dir) => watch_v2(dir)?,
        };
        Ok(OomWatcher {
            source,
            gone: false,
        })
    }
}

fn watch_v1(dir: &Path) -> Result<Source> {
    let control = dir.join("memory.oom_control");
    let oom_control = File::open(&control).map_err(|source| CgroupError::Read {
        path: control.clone(),
        source,
    })?;
    let eventfd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| watch_error(&control, e))?;
    let registration = format!("{} {}", eventfd.as_raw_fd(), oom_control.as_raw_fd());
    files::write(dir, "cgroup.event_control", &registration)?;
    Ok(Source::V1 {
        eventfd,
        _oom_control: oom_control,
        event_control: dir.join("cgroup.event_control"),
    })
}

fn watch_v2(dir: &Path) -> Result<Source> {
    let events = dir.join("memory.events");
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(|e| watch_error(&events, e))?;
    for file in ["memory.events", "cgroup.events"] {
        let path = dir.join(file);
        inotify
            .add_watch(&path, AddWatchFlags::IN_MODIFY)
            .map_err(|e| watch_error(&path, e))?;
    }
    // Kills before the watch started are not news.
    let oom_kills = v2_oom_kills(dir)?.unwrap_or(0);
    Ok(Source::V2 {
        inotify,
        dir: dir.to_path_buf(),
        oom_kills,
    })
}

impl OomWatcher {
    /// What happened since the last call, without blocking; `None` if nothing did. Call
    /// it again after an [`OomNotice::Oom`]: a removal may have come with it.
    pub fn check(&mut self) -> Result<Option<OomNotice>> {
        if self.gone {
            return Ok(Some(OomNotice::Gone));
        }
        let notice = match &mut self.source {
            Source::V1 {
                eventfd,
                event_control,
                ..
            } => match eventfd.read() {
                // The kernel also signals when the cgroup goes away.
                Ok(_) if !event_control.exists() => Some(OomNotice::Gone),
                Ok(_) => Some(OomNotice::Oom),
                Err(Errno::EAGAIN) => None,
                Err(e) => return Err(watch_error(event_control, e)),
            },
            Source::V2 {
                inotify,
                dir,
                oom_kills,
            } => {
                // Drain the queue; the files say what changed.
                loop {
                    match inotify.read_events() {
                        Ok(events) if !events.is_empty() => {}
                        Ok(_) | Err(Errno::EAGAIN) => break,
                        Err(e) => return Err(watch_error(&dir.join("memory.events"), e)),
                    }
                }
                match v2_oom_kills(dir)? {
                    Some(kills) if kills > *oom_kills => {
                        *oom_kills = kills;
                        Some(OomNotice::Oom)
                    }
                    Some(_) => read_if_present(dir, "cgroup.events")?
                        .filter(|text| key_value(text, "populated") > 0)
                        .is_none()
                        .then_some(OomNotice::Gone),
                    None => Some(OomNotice::Gone),
                }
            }
        };
        if notice == Some(OomNotice::Gone) {
            self.gone = true;
        }
        Ok(notice)
    }

    /// Blocks until something happens, `timeout` passes (`None`: no limit) or `stop` is
    /// set; returns `None` for the last two. `stop` is looked at every 100 ms.
    pub fn wait(
        &mut self,
        timeout: Option<Duration>,
        stop: &AtomicBool,
    ) -> Result<Option<OomNotice>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(notice) = self.check()? {
                return Ok(Some(notice));
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let slice = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(STOP_CHECK),
                    _ => return Ok(None),
                },
                None => STOP_CHECK,
            };
            let timeout = PollTimeout::try_from(slice).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(watch_error(self.watched_file(), e)),
            }
        }
    }

    /// The file the watch is about, for messages.
    fn watched_file(&self) -> &Path {
        match &self.source {
            Source::V1 { event_control, .. } => event_control,
            Source::V2 { dir, .. } => dir,
        }
    }
}

impl AsFd for OomWatcher {
    /// Readable when [`OomWatcher::check`] may have news.
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.source {
            Source::V1 { eventfd, .. } => eventfd.as_fd(),
            Source::V2 { inotify, .. } => inotify.as_fd(),
        }
    }
}
