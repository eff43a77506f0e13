//! Driving a runtime through runc's command line, every command bounded by a timeout.
//!
//! A command's stdout and stderr go to files, not pipes: a container started by `create`
//! inherits them and may outlive the command, and nothing here ever waits for a pipe to close.
//! Each command runs in its own process group, killed whole when it overruns.

use std::cell::Cell;
use std::fs::{self, File};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How one finished command ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The exit code, `None` when a signal ended it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// `exit N` or `signal N`, then the last line of stderr if there is one.
    pub fn summary(&self) -> String {
        let how = match (self.code, self.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("signal {s}"),
            (None, None) => "unknown status".to_string(),
        };
        match self.stderr.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(l) => format!("{how}: {}", l.trim()),
            None => how,
        }
    }
}

/// Runs `cmd` with stdin from /dev/null and stdout/stderr into `out_base.{out,err}`, killing its
/// process group after `timeout`. `what` names the command in errors.
pub fn run_bounded(
    mut cmd: Command,
    what: &str,
    out_base: &Path,
    timeout: Duration,
) -> Result<Outcome, String> {
    let out_path = out_base.with_extension("out");
    let err_path = out_base.with_extension("err");
    let out = File::create(&out_path)
        .map_err(|e| format!("{what}: cannot create {}: {e}", out_path.display()))?;
    let err = File::create(&err_path)
        .map_err(|e| format!("{what}: cannot create {}: {e}", err_path.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                kill_group(child.id());
                let _ = child.wait();
                reap_orphans();
                return Err(format!(
                    "{what} did not finish within {}s and was killed",
                    timeout.as_secs()
                ));
            }
            Ok(None) => sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("{what}: cannot wait: {e}")),
        }
    };
    reap_orphans();
    let read = |p: &Path| {
        fs::read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    Ok(Outcome {
        code: status.code(),
        signal: status.signal(),
        stdout: read(&out_path),
        stderr: read(&err_path),
    })
}

fn kill_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals the process group `pgid`, which this
    // process created for the child with process_group(0); it touches no memory.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

/// Makes this process the reaper of orphaned descendants (PR_SET_CHILD_SUBREAPER), as a
/// container shim is: a container's init whose runtime command exited is re-parented here
/// instead of to PID 1, and [`reap_orphans`] collects it once it exits, so that a stopped
/// container does not linger as a zombie that still takes signals.
pub fn become_subreaper() -> Result<(), String> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Collects every exited orphan. Only called when no command spawned here is running, so it
/// never takes the exit status of a child that `run_bounded` still waits for.
pub fn reap_orphans() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into `status`, a valid local; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r <= 0 {
            return;
        }
    }
}

/// The runtime under test with its own state directory (`--root`).
pub struct Runtime {
    pub path: PathBuf,
    root: PathBuf,
    scratch: PathBuf,
    timeout: Duration,
    count: Cell<u32>,
}

impl Runtime {
    pub fn new(path: PathBuf, root: PathBuf, scratch: PathBuf, timeout: Duration) -> Runtime {
        Runtime {
            path,
            root,
            scratch,
            timeout,
            count: Cell::new(0),
        }
    }

    /// The runtime's file name (`runc`, `crun`, `berth`).
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }

    /// `RUNTIME --root ROOT ARGS...`, bounded by the command timeout.
    pub fn cmd(&self, args: &[&str]) -> Result<Outcome, String> {
        let n = self.count.get() + 1;
        self.count.set(n);
        let what = format!("`{} {}`", self.name(), args.join(" "));
        let mut cmd = Command::new(&self.path);
        cmd.arg("--root").arg(&self.root).args(args);
        run_bounded(
            cmd,
            &what,
            &self.scratch.join(format!("cmd-{n:04}")),
            self.timeout,
        )
    }

    /// The first line of `RUNTIME --version`, or why there is none.
    pub fn version(&self) -> String {
        let mut cmd = Command::new(&self.path);
        cmd.arg("--version");
        let what = format!("`{} --version`", self.name());
        match run_bounded(cmd, &what, &self.scratch.join("version"), self.timeout) {
            Ok(o) if o.ok() => o.stdout.lines().next().unwrap_or("").trim().to_string(),
            Ok(o) => format!("--version failed: {}", o.summary()),
            Err(e) => e,
        }
    }

    /// `state ID` parsed as JSON.
    pub fn state(&self, id: &str) -> Result<serde_json::Value, String> {
        let o = self.cmd(&["state", id])?;
        if !o.ok() {
            return Err(format!("`state {id}` failed: {}", o.summary()));
        }
        serde_json::from_str(&o.stdout)
            .map_err(|e| format!("`state {id}` printed no JSON ({e}): {:?}", o.stdout.trim()))
    }

    /// Polls `state ID` until its status is `want` or `limit` passes; returns the last status
    /// seen (or the last error).
    pub fn wait_status(&self, id: &str, want: &str, limit: Duration) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        loop {
            reap_orphans();
            let seen = self
                .state(id)
                .map(|s| s["status"].as_str().unwrap_or("<no status>").to_string());
            if seen.as_deref() == Ok(want) || Instant::now() >= deadline {
                return seen;
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Best-effort `delete --force ID`, for cleanup; its outcome does not matter.
    pub fn force_delete(&self, id: &str) {
        let _ = self.cmd(&["delete", "--force", id]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_overruns_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30"]);
        let start = Instant::now();
        let err = run_bounded(
            cmd,
            "`sleep`",
            &dir.path().join("x"),
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(err.contains("did not finish within"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn output_and_status_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo first >&2; echo last >&2; exit 3"]);
        let o = run_bounded(cmd, "`sh`", &dir.path().join("x"), Duration::from_secs(20)).unwrap();
        assert_eq!(o.code, Some(3));
        assert!(!o.ok());
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.summary(), "exit 3: last");
    }
}
