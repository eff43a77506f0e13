//! `events`: a container's resource statistics, every interval or once, and its OOM
//! notices, as typed values; the CLI prints them as runc's JSON lines.
//!
//! Like `ps`, these hold the container's lock only while its state is read, so that
//! `kill`, `pause` and `delete` go on while a stream is watched. A stream ends when the
//! container's init exits (a pidfd says so at once) or its cgroup goes away.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

pub use berth_cgroups::Stats;
use berth_cgroups::{Manager, OomNotice, OomWatcher};

use crate::container::{pidfd, status_of, Runtime};
use crate::error::{Context, Error, Result};
use crate::state::{self, Op, Saved, StateDir, Status};

/// One thing that happened to a container.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A sample of its resource usage.
    Stats(Box<Stats>),
    /// The kernel's OOM killer ran in its memory cgroup.
    Oom,
}

/// The cgroup of a container that `events` may watch: created, running or paused.
fn watched_cgroup<'a>(dir: &StateDir, saved: &'a Saved) -> Result<&'a Manager> {
    match status_of(dir, saved) {
        Status::Created | Status::Running | Status::Paused => {}
        status @ (Status::Creating | Status::Stopped) => {
            return Err(Error::BadState {
                op: Op::Events,
                status,
            });
        }
    }
    saved.cgroup.as_ref().ok_or_else(|| {
        Error::Unsupported("the container has no cgroup to report statistics of".into())
    })
}

impl Runtime {
    /// One sample of the resource usage of a created, running or paused container.
    pub fn stats(&self, id: &str) -> Result<Stats> {
        let dir = StateDir::open(&self.root, id)?;
        let saved = dir.load()?;
        Ok(watched_cgroup(&dir, &saved)?.stats()?)
    }

    /// Starts watching a created, running or paused container: a statistics sample every
    /// `interval` (the first one an interval from now, as runc does), and OOM notices
    /// where the host has a memory controller for it.
    pub fn events(&self, id: &str, interval: Duration) -> Result<EventStream> {
        if interval.is_zero() {
            return Err(Error::Unsupported(
                "duration interval must be greater than 0".into(),
            ));
        }
        let dir = StateDir::open(&self.root, id)?;
        let saved = dir.load()?;
        let cgroup = watched_cgroup(&dir, &saved)?.clone();
        // The pidfd is the init's only if the pid was not reused before it was opened.
        let init = match pidfd(saved.pid) {
            Some(fd) if state::pid_alive(saved.pid, saved.pid_start) => fd,
            _ => {
                return Err(Error::BadState {
                    op: Op::Events,
                    status: Status::Stopped,
                })
            }
        };
        // Without a memory controller there is nothing to notice; statistics still come.
        let oom = match cgroup.watch_oom() {
            Ok(watcher) => Some(watcher),
            Err(berth_cgroups::CgroupError::ControllerUnavailable { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(EventStream {
            cgroup,
            init,
            oom,
            interval,
            next_sample: Instant::now() + interval,
            ended: false,
        })
    }
}

/// The events of one container, from [`Runtime::events`].
#[derive(Debug)]
pub struct EventStream {
    cgroup: Manager,
    /// A pidfd of the container's init: readable once the init has exited.
    init: OwnedFd,
    oom: Option<OomWatcher>,
    interval: Duration,
    next_sample: Instant,
    ended: bool,
}

/// Whether `fd` polls readable now.
fn readable(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

impl EventStream {
    /// Blocks until the next event. `None` when the container has stopped (then every
    /// later call says `None` too), or when `cancel` (a signalfd, say) turns readable.
    ///
    /// A failed statistics sample is an error, and the stream goes on with the next one;
    /// after an error of the OOM watch, the stream goes on without OOM notices.
    pub fn next(&mut self, cancel: Option<BorrowedFd<'_>>) -> Result<Option<Event>> {
        loop {
            // OOM notices first: the kill that ended a container is reported before its end.
            if let Some(watcher) = &mut self.oom {
                match watcher.check() {
                    Ok(Some(OomNotice::Oom)) => return Ok(Some(Event::Oom)),
                    Ok(Some(OomNotice::Gone)) => self.ended = true,
                    Ok(None) => {}
                    Err(e) => {
                        self.oom = None;
                        return Err(e.into());
                    }
                }
            }
            if self.ended || readable(self.init.as_fd()) {
                self.ended = true;
                return Ok(None);
            }
            let now = Instant::now();
            if now >= self.next_sample {
                // Samples missed while the caller was slow are dropped, as a Go ticker does.
                self.next_sample += self.interval;
                if self.next_sample <= now {
                    self.next_sample = now + self.interval;
                }
                return Ok(Some(Event::Stats(Box::new(self.cgroup.stats()?))));
            }
            let wait = self.next_sample - now;
            let mut fds = vec![PollFd::new(self.init.as_fd(), PollFlags::POLLIN)];
            if let Some(watcher) = &self.oom {
                fds.push(PollFd::new(watcher.as_fd(), PollFlags::POLLIN));
            }
            if let Some(fd) = cancel {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
            // Rounded up: a timeout rounded down to 0 ms would spin until the sample is due.
            let timeout = PollTimeout::try_from(wait.as_nanos().div_ceil(1_000_000))
                .unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e).ctx(|| "poll for container events".into()),
            }
            if cancel.is_some_and(readable) {
                return Ok(None);
            }
        }
    }
}
