//! The runtime that makes a pod's containers: libberth in the shim's own process (the
//! built-in `berth` handler), or an OCI runtime binary such as runc, crun or runsc driven
//! through its command line, as containerd's runc shim drives it (a RuntimeClass handler).
//!
//! Both hand back the same things: the container's or exec'd process's host pid (a child
//! of the shim, which is their subreaper either way) and, with a terminal, the pty master.

use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ChildStdio};

use libberth::process::Stdio;
use libberth::{
    apply_overrides, ConsoleTarget, CreateOptions, Created, ExecOptions, Execed, ProcessOverrides,
    Runtime,
};
use oci_spec::runtime::{Process, Spec};

/// The runtime of one pod's containers.
pub enum ContainerRuntime {
    Builtin(Runtime),
    Binary(OciBinary),
}

/// An OCI runtime binary with its own state root.
pub struct OciBinary {
    pub path: PathBuf,
    /// Global options before every subcommand.
    pub options: Vec<String>,
    pub root: PathBuf,
    /// Where the shim keeps pid files, logs, console sockets and exec process files.
    pub work: PathBuf,
    /// Each container's bundle, for exec's process.
    bundles: HashMap<String, PathBuf>,
    serial: u64,
}

/// `container "id": text`, as every shim error reads.
fn msg(id: &str, e: impl std::fmt::Display) -> String {
    format!("container {id:?}: {e}")
}

/// A libberth error with its causes.
fn berth(id: &str, e: libberth::Error) -> String {
    msg(id, e.chain())
}

impl ContainerRuntime {
    pub fn binary(
        path: PathBuf,
        options: Vec<String>,
        root: PathBuf,
        work: PathBuf,
    ) -> ContainerRuntime {
        ContainerRuntime::Binary(OciBinary {
            path,
            options,
            root,
            work,
            bundles: HashMap::new(),
            serial: 0,
        })
    }

    /// Creates the container, leaving it waiting for `start`.
    pub fn create(&mut self, o: &CreateOptions) -> Result<Created, String> {
        match self {
            ContainerRuntime::Builtin(rt) => rt.create(o).map_err(|e| berth(&o.id, e)),
            ContainerRuntime::Binary(b) => b.create(o),
        }
    }

    pub fn start(&mut self, id: &str) -> Result<(), String> {
        match self {
            ContainerRuntime::Builtin(rt) => rt.start(id).map_err(|e| berth(id, e)),
            ContainerRuntime::Binary(b) => b.run(id, &["start", id]).map(drop),
        }
    }

    pub fn kill(&mut self, id: &str, signal: i32, all: bool) -> Result<(), String> {
        match self {
            ContainerRuntime::Builtin(rt) => rt.kill(id, signal, all).map_err(|e| berth(id, e)),
            ContainerRuntime::Binary(b) => {
                let sig = signal.to_string();
                let mut args = vec!["kill"];
                if all {
                    args.push("--all");
                }
                args.extend([id, sig.as_str()]);
                b.run(id, &args).map(drop)
            }
        }
    }

    /// Deletes the container; one the runtime no longer knows counts as deleted.
    pub fn delete(&mut self, id: &str, force: bool) -> Result<(), String> {
        match self {
            ContainerRuntime::Builtin(rt) => match rt.delete(id, force) {
                Ok(()) | Err(libberth::Error::NotFound(_)) => Ok(()),
                Err(e) => Err(berth(id, e)),
            },
            ContainerRuntime::Binary(b) => {
                let mut args = vec!["delete"];
                if force {
                    args.push("--force");
                }
                args.push(id);
                let r = match b.run(id, &args) {
                    Err(e) if e.contains("does not exist") || e.contains("not exist") => Ok(()),
                    r => r.map(drop),
                };
                if r.is_ok() {
                    b.bundles.remove(id);
                    b.forget(id);
                }
                r
            }
        }
    }

    /// The container's own process with `o` applied: what an exec runs.
    pub fn exec_process(&self, id: &str, o: &ProcessOverrides) -> Result<Process, String> {
        match self {
            ContainerRuntime::Builtin(rt) => rt.exec_process(id, o).map_err(|e| berth(id, e)),
            ContainerRuntime::Binary(b) => {
                let bundle = b
                    .bundles
                    .get(id)
                    .ok_or_else(|| msg(id, "container does not exist"))?;
                let config = bundle.join("config.json");
                let spec = Spec::load(&config)
                    .map_err(|e| msg(id, format!("{}: {e}", config.display())))?;
                apply_overrides(spec.process().clone().unwrap_or_default(), o)
                    .map_err(|e| berth(id, e))
            }
        }
    }

    /// Whether the kernel's OOM killer killed in the container's cgroup (asked once its
    /// init has exited, before delete). libberth knows the cgroup; a binary's cgroup is
    /// not read (its OOM kills show as plain exits, code 137).
    pub fn oom_killed(&self, id: &str) -> bool {
        match self {
            ContainerRuntime::Builtin(rt) => rt
                .saved(id)
                .ok()
                .and_then(|s| s.cgroup)
                .and_then(|cg| cg.oom_kills().ok().flatten())
                .is_some_and(|n| n > 0),
            ContainerRuntime::Binary(_) => false,
        }
    }

    /// Starts `o.process` in the running container.
    pub fn exec(&mut self, o: &ExecOptions) -> Result<Execed, String> {
        match self {
            ContainerRuntime::Builtin(rt) => rt.exec(o).map_err(|e| berth(&o.id, e)),
            ContainerRuntime::Binary(b) => b.exec(o),
        }
    }
}

impl OciBinary {
    /// The runtime's command with its global options: its state root, and errors as JSON
    /// lines in `log` (runc, crun and runsc all take `--log` and `--log-format json`).
    fn command(&self, log: &Path) -> Command {
        let mut c = Command::new(&self.path);
        c.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(log)
            .arg("--log-format")
            .arg("json")
            .args(&self.options);
        // SAFETY: between fork and exec only async-signal-safe calls: the shim blocks
        // SIGCHLD, SIGTERM, SIGINT and SIGPIPE for its signalfd, and the runtime (and the
        // container it starts) must not inherit that mask.
        unsafe {
            c.pre_exec(|| {
                let empty = nix::sys::signal::SigSet::empty();
                nix::sys::signal::sigprocmask(
                    nix::sys::signal::SigmaskHow::SIG_SETMASK,
                    Some(&empty),
                    None,
                )
                .map_err(std::io::Error::from)
            });
        }
        c
    }

    /// `--console-socket` for `target`: a socket of the shim's own where the master comes
    /// back to the shim ([`ConsoleTarget::Return`]).
    fn console(
        &self,
        c: &mut Command,
        target: Option<&ConsoleTarget>,
    ) -> Result<Option<ConsoleSocket>, String> {
        let (own, arg) = match target {
            None => return Ok(None),
            Some(ConsoleTarget::Socket(p)) => (None, p.display().to_string()),
            Some(ConsoleTarget::Return) => {
                let s = ConsoleSocket::bind(&self.work, "console")?;
                let arg = s.arg.clone();
                (Some(s), arg)
            }
        };
        c.arg("--console-socket").arg(arg);
        Ok(own)
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.work.join(format!("{id}.runtime.log"))
    }

    /// Removes what the shim kept for `id`.
    fn forget(&self, id: &str) {
        let _ = fs::remove_file(self.log_path(id));
    }

    /// Runs `args` with the runtime's stdio on /dev/null and its log captured; the error
    /// names the runtime, the operation and what the runtime said.
    fn run(&self, id: &str, args: &[&str]) -> Result<(), String> {
        let mut c = self.command(&self.log_path(id));
        c.args(args)
            .stdin(ChildStdio::null())
            .stdout(ChildStdio::null())
            .stderr(ChildStdio::piped());
        self.finish(id, args[0], c)
    }

    /// Runs `c` to its end and turns a failure into the runtime's own words.
    fn finish(&self, id: &str, op: &str, mut c: Command) -> Result<(), String> {
        fs::create_dir_all(&self.work)
            .map_err(|e| msg(id, format!("create {}: {e}", self.work.display())))?;
        let log = self.log_path(id);
        let mark = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let out = c
            .output()
            .map_err(|e| msg(id, format!("run {}: {e}", self.path.display())))?;
        if out.status.success() {
            return Ok(());
        }
        let mut said = errors_in_log(&log, mark);
        if said.is_empty() {
            said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        }
        if said.is_empty() {
            said = format!("exited with {}", out.status);
        }
        Err(msg(id, format!("{} {op}: {said}", self.path.display())))
    }

    fn create(&mut self, o: &CreateOptions) -> Result<Created, String> {
        fs::create_dir_all(&self.work)
            .map_err(|e| msg(&o.id, format!("create {}: {e}", self.work.display())))?;
        let pid_file = self.work.join(format!("{}.pid", o.id));
        let _ = fs::remove_file(&pid_file);
        let mut c = self.command(&self.log_path(&o.id));
        c.arg("create")
            .arg("--bundle")
            .arg(&o.bundle)
            .arg("--pid-file")
            .arg(&pid_file);
        let console = self
            .console(&mut c, o.console.as_ref())
            .map_err(|e| msg(&o.id, e))?;
        c.arg(&o.id);
        set_stdio(&mut c, &o.stdio).map_err(|e| msg(&o.id, e))?;
        self.finish(&o.id, "create", c)?;
        let got = started(&pid_file, console);
        let (pid, master) = match got {
            Ok(got) => got,
            Err(e) => {
                let _ = self.run(&o.id, &["delete", "--force", &o.id]);
                return Err(msg(&o.id, e));
            }
        };
        self.bundles.insert(o.id.clone(), o.bundle.clone());
        Ok(Created {
            pid,
            console_master: master,
        })
    }

    fn exec(&mut self, o: &ExecOptions) -> Result<Execed, String> {
        fs::create_dir_all(&self.work)
            .map_err(|e| msg(&o.id, format!("create {}: {e}", self.work.display())))?;
        self.serial += 1;
        let base = self.work.join(format!("{}.exec{}", o.id, self.serial));
        let process = base.with_extension("json");
        let pid_file = base.with_extension("pid");
        let json = serde_json::to_vec(&o.process).map_err(|e| msg(&o.id, e))?;
        fs::write(&process, json)
            .map_err(|e| msg(&o.id, format!("write {}: {e}", process.display())))?;
        let mut c = self.command(&self.log_path(&o.id));
        c.arg("exec")
            .arg("--process")
            .arg(&process)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("--detach");
        let console = self
            .console(&mut c, o.console.as_ref())
            .map_err(|e| msg(&o.id, e))?;
        c.arg(&o.id);
        let r = set_stdio(&mut c, &o.stdio)
            .map_err(|e| msg(&o.id, e))
            .and_then(|()| self.finish(&o.id, "exec", c));
        let _ = fs::remove_file(&process);
        r?;
        // The process runs: a failure here leaves it to the caller's reaping (its pid is
        // unknown without the pid file; the shim reaps every child it has).
        let got = started(&pid_file, console);
        let (pid, console_master) = got.map_err(|e| msg(&o.id, e))?;
        Ok(Execed {
            pid,
            console_master,
        })
    }
}

/// The started process's pid and, with a terminal, its pty master; the pid file and the
/// console socket go either way.
fn started(
    pid_file: &Path,
    console: Option<ConsoleSocket>,
) -> Result<(i32, Option<OwnedFd>), String> {
    let got = read_pid(pid_file).and_then(|pid| {
        let master = console.as_ref().map(ConsoleSocket::receive).transpose()?;
        Ok((pid, master))
    });
    let _ = fs::remove_file(pid_file);
    got
}

/// A socket for the runtime to send a pty master to (`--console-socket`), removed when
/// dropped. The runtime is given it through `/proc/<shim>/fd/<dir>/`: a pod directory's
/// path can be longer than a socket address may be.
struct ConsoleSocket {
    path: PathBuf,
    arg: String,
    listener: UnixListener,
    _dir: OwnedFd,
}

impl ConsoleSocket {
    fn bind(dir: &Path, name: &str) -> Result<ConsoleSocket, String> {
        let d = nix::fcntl::open(
            dir,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("open {}: {e}", dir.display()))?;
        let path = dir.join(name);
        let _ = fs::remove_file(&path);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&d);
        let listener = UnixListener::bind(format!("/proc/self/fd/{fd}/{name}"))
            .map_err(|e| format!("bind {}: {e}", path.display()))?;
        Ok(ConsoleSocket {
            arg: format!("/proc/{}/fd/{fd}/{name}", std::process::id()),
            path,
            listener,
            _dir: d,
        })
    }

    /// The pty master the runtime sent (it has connected and sent by the time its create
    /// or exec returns, so this never waits on a live runtime).
    fn receive(&self) -> Result<OwnedFd, String> {
        receive_console(&self.listener)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The container's (or exec's) stdio as the runtime's own: runc and crun hand their stdio
/// to the process they start. Missing ones are /dev/null.
fn set_stdio(c: &mut Command, s: &Stdio) -> Result<(), String> {
    let dup = |f: &Option<OwnedFd>| -> Result<ChildStdio, String> {
        match f {
            Some(fd) => fd
                .try_clone()
                .map(ChildStdio::from)
                .map_err(|e| format!("dup stdio: {e}")),
            None => Ok(ChildStdio::null()),
        }
    };
    c.stdin(dup(&s.stdin)?)
        .stdout(dup(&s.stdout)?)
        .stderr(dup(&s.stderr)?);
    Ok(())
}

/// The pty master the runtime sent on `l` (it has connected and sent by the time its
/// create or exec returns, so this never waits on a live runtime).
fn receive_console(l: &UnixListener) -> Result<OwnedFd, String> {
    l.set_nonblocking(true)
        .map_err(|e| format!("console socket: {e}"))?;
    let (conn, _) = l
        .accept()
        .map_err(|e| format!("the runtime sent no console: {e}"))?;
    let mut buf = [0u8; 4096];
    let (_, mut fds) =
        crate::fdpass::recv(conn.as_fd(), &mut buf).map_err(|e| format!("receive console: {e}"))?;
    if fds.is_empty() {
        return Err("the runtime's console message carried no descriptor".into());
    }
    Ok(fds.swap_remove(0))
}

fn read_pid(path: &Path) -> Result<i32, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("read pid file {}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("pid file {}: {text:?} is not a pid", path.display()))
}

/// The `msg` of every error-level JSON line written to `log` after byte `from` (runc's,
/// crun's and runsc's log format), joined; empty if none.
fn errors_in_log(log: &Path, from: u64) -> String {
    let Ok(text) = fs::read(log) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
    errors_in(&text)
}

fn errors_in(text: &str) -> String {
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let level = v["level"].as_str().unwrap_or("");
        if level == "error" || level == "fatal" {
            if let Some(m) = v["msg"].as_str() {
                out.push(m.trim().to_string());
            }
        }
    }
    out.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_errors_are_the_error_lines_of_its_json_log() {
        let log = r#"{"level":"info","msg":"starting","time":"t"}
not json at all
{"level":"error","msg":"exec: \"nope\": executable file not found in $PATH\n","time":"t"}
{"msg":"container init failed","level":"fatal"}
"#;
        assert_eq!(
            errors_in(log),
            "exec: \"nope\": executable file not found in $PATH; container init failed"
        );
        assert_eq!(errors_in(""), "");
    }

    #[test]
    fn a_failing_binary_names_itself_the_operation_and_its_words() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("fake-runc");
        // Writes a JSON error to the --log file it is given (argument 4), then fails.
        fs::write(
            &bin,
            "#!/bin/sh\necho '{\"level\":\"error\",\"msg\":\"no such thing\"}' >> \"$4\"\nexit 1\n",
        )
        .unwrap();
        fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let mut rt = ContainerRuntime::binary(
            bin.clone(),
            Vec::new(),
            dir.path().join("root"),
            dir.path().join("work"),
        );
        let e = rt.start("c1").unwrap_err();
        assert_eq!(
            e,
            format!("container \"c1\": {} start: no such thing", bin.display())
        );
        // A delete of what the runtime does not know is done.
        fs::write(
            &bin,
            "#!/bin/sh\necho '{\"level\":\"error\",\"msg\":\"container does not exist\"}' >> \"$4\"\nexit 1\n",
        )
        .unwrap();
        rt.delete("c1", true).unwrap();
        let e = rt
            .exec_process("c1", &ProcessOverrides::default())
            .unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
    }
}
