//! Finding plugins and running them: one process per call, with a deadline, a bounded
//! stdout and none of the caller's descriptors.
//!
//! A plugin runs in a process group of its own, so that on timeout the group is killed:
//! `bridge` runs `host-local`, and a grandchild that held the stdout pipe open would keep
//! the read waiting past the kill of the plugin alone. stdin, stdout and stderr are pipes
//! served by one poll loop (no helper threads to outlive a kill). Rust opens every
//! descriptor close-on-exec, and so does this crate; against descriptors that other code of
//! the process opened without it, the child marks every descriptor from 3 up close-on-exec
//! (close_range(2), Linux 5.11 and later) just before exec.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Deserialize;

use crate::error::{PluginError, Site};
use crate::CniError;

/// Where plugins are looked for, in this order, by default.
pub const DEFAULT_PLUGIN_DIRS: [&str; 2] = ["/opt/cni/bin", "/usr/lib/cni"];

/// How long one plugin run may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How much a plugin may print on stdout by default.
pub const DEFAULT_MAX_OUTPUT: usize = 1 << 20;

/// How much of a plugin's stderr is kept (the end of it), for errors.
const STDERR_KEPT: usize = 64 << 10;

/// How much of a plugin's unstructured output goes into an error message.
const MESSAGE_KEPT: usize = 2 << 10;

/// The executable of `plugin_type` in the first of `dirs` that has one: a regular file
/// (or a link to one) with an execute bit. The type must be a plain file name.
pub fn find_plugin(dirs: &[PathBuf], plugin_type: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    crate::config::check_plugin_type(plugin_type).ok()?;
    dirs.iter().map(|d| d.join(plugin_type)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// `CNI_PATH`: the search directories, `:`-separated.
pub fn search_path(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.to_string_lossy())
        .collect::<Vec<_>>()
        .join(":")
}

/// What a plugin's VERSION says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VersionInfo {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions", default)]
    pub supported_versions: Vec<String>,
}

/// The parameters of one plugin run.
pub(crate) struct Invocation<'a> {
    pub site: Site,
    pub path: &'a Path,
    /// The environment besides `CNI_COMMAND`, as (name, value).
    pub env: Vec<(&'static str, &'a OsStr)>,
    pub stdin: &'a [u8],
    pub timeout: Duration,
    pub max_output: usize,
}

/// Runs the plugin; its stdout on success.
pub(crate) fn invoke(inv: Invocation<'_>) -> Result<Vec<u8>, CniError> {
    let mut cmd = std::process::Command::new(inv.path);
    // The plugin gets the caller's environment (PATH, for the tools plugins run) without
    // any CNI_ variable of the caller's, and then its own.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CNI_") {
            cmd.env_remove(k);
        }
    }
    if std::env::var_os("PATH").is_none() {
        cmd.env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    }
    cmd.env("CNI_COMMAND", inv.site.command.as_str());
    for (k, v) in &inv.env {
        cmd.env(k, v);
    }
    match run(cmd, inv.stdin, inv.timeout, inv.max_output) {
        Ok(out) => Ok(out),
        Err(RunError::Spawn(source)) => Err(CniError::Spawn {
            site: inv.site,
            path: inv.path.to_path_buf(),
            source,
        }),
        Err(RunError::Io(source)) => Err(CniError::Io {
            site: inv.site,
            source,
        }),
        Err(RunError::Timeout) => Err(CniError::Timeout {
            site: inv.site,
            timeout: inv.timeout,
        }),
        Err(RunError::TooLarge) => Err(CniError::OutputTooLarge {
            site: inv.site,
            limit: inv.max_output,
        }),
        Err(RunError::Exited {
            status,
            stdout,
            stderr,
        }) => Err(failure(inv.site, status, &stdout, &stderr)),
    }
}

/// The error for a plugin that exited unsuccessfully: its CNI error if it printed one,
/// else what it printed.
fn failure(site: Site, status: ExitStatus, stdout: &[u8], stderr: &[u8]) -> CniError {
    if let Ok(error) = serde_json::from_slice::<PluginError>(stdout) {
        return CniError::Failed { site, error };
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    let mut output = [text(stdout), text(stderr)]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" / ");
    if output.is_empty() {
        output = "nothing".into();
    }
    if output.len() > MESSAGE_KEPT {
        let mut cut = output.len() - MESSAGE_KEPT;
        while !output.is_char_boundary(cut) {
            cut += 1;
        }
        output = format!("...{}", &output[cut..]);
    }
    let status = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => status.to_string(),
    };
    CniError::Exited {
        site,
        status,
        output,
    }
}

#[derive(Debug)]
enum RunError {
    Spawn(io::Error),
    Io(io::Error),
    Timeout,
    TooLarge,
    Exited {
        status: ExitStatus,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
}

/// A started plugin: its process group is killed and the child reaped when dropped before
/// it was waited for.
struct Running {
    child: Child,
    reaped: bool,
}

impl Running {
    fn kill(&mut self) {
        if self.reaped {
            return;
        }
        // The child is the leader of its own group (process_group(0)), and its pid stays
        // taken until it is reaped below, so the group id names no one else.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.wait();
        self.reaped = true;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL)?;
    fcntl(
        fd.as_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK),
    )?;
    Ok(())
}

/// Reads what is there without blocking; false at end of file.
fn drain(r: &mut impl Read, into: &mut Vec<u8>) -> io::Result<bool> {
    let mut buf = [0u8; 16 << 10];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

fn run(
    mut cmd: std::process::Command,
    input: &[u8],
    timeout: Duration,
    max_output: usize,
) -> Result<Vec<u8>, RunError> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // Marking descriptors 3 and up close-on-exec leaves the stdio pipes (0-2) alone, and
    // std's own error pipe is close-on-exec already.
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: it makes one system call, close_range(2), with
    // integer arguments, and ignores its result; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            // Kernels before 5.11 do not know the flag (EINVAL) or the call (ENOSYS):
            // then only the descriptors' own close-on-exec flags guard them.
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        })
    };
    let deadline = Instant::now() + timeout;
    // ETXTBSY: the executable is open for writing, by an upgrade that is replacing it or,
    // for a moment, by a child of another thread forked while it was being written (the
    // descriptor is close-on-exec, but open until that child's exec). Both pass.
    let mut tries = 0u32;
    let child = loop {
        match cmd.spawn() {
            Ok(c) => break c,
            Err(e)
                if e.raw_os_error() == Some(libc::ETXTBSY)
                    && tries < 10
                    && Instant::now() < deadline =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20) * tries);
            }
            Err(e) => return Err(RunError::Spawn(e)),
        }
    };
    let mut running = Running {
        child,
        reaped: false,
    };
    let (Some(stdin), Some(stdout), Some(stderr)) = (
        running.child.stdin.take(),
        running.child.stdout.take(),
        running.child.stderr.take(),
    ) else {
        return Err(RunError::Io(io::Error::other(
            "the plugin's pipes are missing",
        )));
    };
    for fd in [stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()] {
        // SAFETY: the three descriptors are owned by the pipes above, open for this call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        set_nonblocking(fd).map_err(RunError::Io)?;
    }
    let mut stdin = (!input.is_empty()).then_some(stdin);
    let mut stdout = Some(stdout);
    let mut stderr = Some(stderr);
    let mut written = 0;
    let mut out = Vec::new();
    let mut err = Vec::new();

    while stdin.is_some() || stdout.is_some() || stderr.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            running.kill();
            return Err(RunError::Timeout);
        }
        let wait = PollTimeout::try_from(left.as_millis().clamp(1, 1000) as i32)
            .unwrap_or(PollTimeout::MAX);
        // Which of the three are polled, and what came back.
        let mut revents = [None::<PollFlags>; 3];
        {
            let mut fds = Vec::with_capacity(3);
            let mut which = Vec::with_capacity(3);
            if let Some(s) = &stdin {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLOUT));
                which.push(0);
            }
            if let Some(s) = &stdout {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
                which.push(1);
            }
            if let Some(s) = &stderr {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
                which.push(2);
            }
            match poll(&mut fds, wait) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(RunError::Io(e.into())),
            }
            for (fd, w) in fds.iter().zip(which) {
                revents[w] = fd.revents();
            }
        }
        let ready = |i: usize| revents[i].is_some_and(|r| !r.is_empty());
        if ready(0) {
            if let Some(s) = stdin.as_mut() {
                match s.write(&input[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // The plugin closed its stdin: it has read all it wants.
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => written = input.len(),
                    Err(e) => return Err(RunError::Io(e)),
                }
                if written >= input.len() {
                    stdin = None;
                }
            }
        }
        if ready(1) {
            if let Some(s) = stdout.as_mut() {
                let open = drain(s, &mut out).map_err(RunError::Io)?;
                if out.len() > max_output {
                    running.kill();
                    return Err(RunError::TooLarge);
                }
                if !open {
                    stdout = None;
                }
            }
        }
        if ready(2) {
            if let Some(s) = stderr.as_mut() {
                let open = drain(s, &mut err).map_err(RunError::Io)?;
                if err.len() > STDERR_KEPT {
                    err.drain(..err.len() - STDERR_KEPT);
                }
                if !open {
                    stderr = None;
                }
            }
        }
    }

    // Both outputs are closed: the plugin is exiting (or handed them to no one).
    let status = loop {
        match running.child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(RunError::Io(e)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            running.kill();
            return Err(RunError::Timeout);
        }
        std::thread::sleep(left.min(Duration::from_millis(5)));
    };
    running.reaped = true;
    if status.success() {
        Ok(out)
    } else {
        Err(RunError::Exited {
            status,
            stdout: out,
            stderr: err,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Command;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn sh(body: &str, input: &[u8], timeout: Duration, max: usize) -> Result<Vec<u8>, RunError> {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), "p", body);
        run(std::process::Command::new(p), input, timeout, max)
    }

    #[test]
    fn stdin_reaches_the_plugin_and_stdout_comes_back() {
        let input = vec![b'x'; 300 << 10]; // more than a pipe holds
        let out = sh("wc -c", &input, Duration::from_secs(20), 1 << 20).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap().trim(),
            (300 << 10).to_string()
        );
    }

    #[test]
    fn a_plugin_that_ignores_its_stdin_still_works() {
        let out = sh(
            "echo hi",
            &vec![b'x'; 1 << 20],
            Duration::from_secs(20),
            100,
        )
        .unwrap();
        assert_eq!(out, b"hi\n");
    }

    #[test]
    fn an_endless_stdout_is_cut_at_the_limit() {
        let e = sh("yes", b"", Duration::from_secs(20), 4096).unwrap_err();
        assert!(matches!(e, RunError::TooLarge), "{e:?}");
    }

    #[test]
    fn a_hung_plugin_and_its_children_are_killed_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let body = format!("sleep 30 &\necho $! > {}\nwait", pidfile.display());
        let start = Instant::now();
        let e = sh(&body, b"", Duration::from_millis(500), 100).unwrap_err();
        assert!(matches!(e, RunError::Timeout), "{e:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild was killed with the group (it is a zombie or gone: either way
        // not sleeping).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.chars().next()))
                .flatten();
            if matches!(state, None | Some('Z')) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "grandchild {pid} still {state:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_plugin_that_closes_its_outputs_and_lingers_hits_the_deadline() {
        let e = sh(
            "exec >&- 2>&-\nsleep 30",
            b"",
            Duration::from_millis(300),
            100,
        )
        .unwrap_err();
        assert!(matches!(e, RunError::Timeout), "{e:?}");
    }

    #[test]
    fn a_failure_carries_the_plugin_error_or_its_output() {
        let e = sh(
            r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"try later"}'; exit 1"#,
            b"",
            Duration::from_secs(20),
            4096,
        )
        .unwrap_err();
        let RunError::Exited {
            status,
            stdout,
            stderr,
        } = e
        else {
            panic!("{e:?}")
        };
        let site = Site {
            network: "n".into(),
            plugin: "p".into(),
            command: Command::Add,
        };
        let msg = failure(site.clone(), status, &stdout, &stderr).to_string();
        assert_eq!(
            msg,
            "network n: ADD of plugin p failed: busy: try later (CNI error code 11)"
        );
        let e = sh("echo oops >&2; exit 3", b"", Duration::from_secs(20), 4096).unwrap_err();
        let RunError::Exited {
            status,
            stdout,
            stderr,
        } = e
        else {
            panic!("{e:?}")
        };
        let msg = failure(site, status, &stdout, &stderr).to_string();
        assert_eq!(
            msg,
            "network n: ADD of plugin p failed: exit status 3, without a CNI error; it said: oops"
        );
    }

    #[test]
    fn a_missing_executable_is_a_spawn_error() {
        let e = run(
            std::process::Command::new("/nonexistent/plugin"),
            b"",
            Duration::from_secs(1),
            10,
        )
        .unwrap_err();
        assert!(matches!(e, RunError::Spawn(_)), "{e:?}");
    }

    #[test]
    fn plugins_are_found_in_search_order_and_must_be_executable() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        script(b.path(), "p", "true");
        std::fs::write(a.path().join("p"), "not executable").unwrap();
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find_plugin(&dirs, "p"), Some(b.path().join("p")));
        script(a.path(), "p", "true");
        assert_eq!(find_plugin(&dirs, "p"), Some(a.path().join("p")));
        std::fs::create_dir(b.path().join("d")).unwrap();
        assert_eq!(find_plugin(&dirs, "d"), None);
        assert_eq!(find_plugin(&dirs, "../p"), None);
        assert_eq!(find_plugin(&dirs, "absent"), None);
        assert_eq!(
            search_path(&dirs),
            format!("{}:{}", a.path().display(), b.path().display())
        );
    }
}
