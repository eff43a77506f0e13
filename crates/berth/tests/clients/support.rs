//! Shared harness of the client tests: preconditions, running commands, host
//! state (mounts, cgroups, processes) and the per-test guard that tears
//! everything down again.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Upper bound for any single client command. A timeout fails the test at
/// once, so a hanging runtime costs about this much per test, not per command.
pub(crate) const CMD_TIMEOUT: Duration = Duration::from_secs(90);
/// Upper bound for each cleanup command run by the guard.
pub(crate) const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for one readiness probe of a daemon.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for a daemon to start answering on its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for a daemon to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Paths some clients create outside their configured directories (hard-coded
/// locations). The guard removes those that did not exist before the test:
/// files, and directories provided they are empty. Children before parents.
const GLOBAL_PATHS: &[&str] = &[
    // `podman load` (containers/image) keeps a blob cache here for root,
    // whatever --root says.
    "/var/lib/containers/cache/blob-info-cache-v1.boltdb",
    "/var/lib/containers/cache",
    "/var/lib/containers",
    "/run/containerd/s",    // containerd 1.6 shim sockets
    "/run/containerd/fifo", // ctr default --fifo-dir (we pass our own)
    "/run/containerd/runc", // default runc root of the shim (we pass our own)
    "/run/containerd",
    "/run/docker/plugins", // dockerd plugin socket directory
    "/run/docker",
    "/run/containers/networks", // podman's network backend state
    "/run/containers",
    "/run/libpod",
    "/run/runc",  // default --root of runc (podman does not pass --root)
    "/run/berth", // same for berth, whatever its default root turns out to be
    "/run/crun",
];

/// Where containerd 1.6 shims put their sockets, whatever containerd's
/// configuration says. A shim the guard kills leaves its socket behind.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// Cgroups a client keeps under the parent by design: podman puts conmon in
/// `<parent>/conmon` with the cgroupfs manager and never removes it.
const EXPECTED_CGROUPS: &[&str] = &["conmon"];

// ---------------------------------------------------------------------------
// Preconditions
// ---------------------------------------------------------------------------

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs the tests one at a time; a test that failed must not block the others.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Absolute, canonical path of the runtime under test.
pub(crate) fn runtime_under_test() -> PathBuf {
    let (path, origin) = match std::env::var_os("BERTH_TEST_RUNTIME") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), "BERTH_TEST_RUNTIME"),
        _ => (
            PathBuf::from(env!("CARGO_BIN_EXE_berth")),
            "CARGO_BIN_EXE_berth",
        ),
    };
    let path = fs::canonicalize(&path)
        .unwrap_or_else(|e| panic!("runtime under test {} (from {origin}): {e}", path.display()));
    eprintln!("runtime under test: {} (from {origin})", path.display());
    path
}

pub(crate) fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the client tests need root (they start containerd/dockerd and run containers)"
    );
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Fails (never skips) when a tool is missing: CI is expected to install them.
pub(crate) fn require_tools(tools: &[&str]) {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "required tools not found in PATH: {missing:?} (CI must install them; see docs/clients.md)"
    );
}

/// The static busybox the test image is made of.
pub(crate) fn busybox() -> PathBuf {
    let path = std::env::var_os("BERTH_TEST_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/bin/busybox".into());
    let bytes = fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (install busybox-static or set BERTH_TEST_BUSYBOX)",
            path.display()
        )
    });
    assert!(
        !elf_has_interpreter(&bytes),
        "{} is dynamically linked; the test image needs a static busybox (Debian: busybox-static)",
        path.display()
    );
    path
}

/// Whether a 64-bit little-endian ELF file has a PT_INTERP program header.
fn elf_has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    if elf.get(0..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return false; // not ELF64 LE: let the container tell
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).any(|i| u32_at(phoff + i * phentsize) == Some(3))
}

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

pub(crate) struct CmdOut {
    pub(crate) shown: String,
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) timed_out: bool,
    elapsed: Duration,
}

impl CmdOut {
    pub(crate) fn success(&self) -> bool {
        self.status.success() && !self.timed_out
    }

    pub(crate) fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.elapsed
    }

    pub(crate) fn summary(&self) -> String {
        format!(
            "`{}` -> {}{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.shown,
            self.status,
            if self.timed_out {
                " (timed out, killed)"
            } else {
                ""
            },
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Human-readable form of a command; long arguments (scripts) are abbreviated.
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        if arg.len() > 120 || arg.contains('\n') {
            s.push_str(&format!(" <{} bytes>", arg.len()));
        } else if arg.is_empty() || arg.contains(char::is_whitespace) {
            s.push_str(&format!(" {arg:?}"));
        } else {
            s.push(' ');
            s.push_str(&arg);
        }
    }
    s
}

fn read_in_background(mut r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// Runs a command to completion with stdin from /dev/null, capturing its
/// output; kills it after `timeout`. Never panics on a non-zero exit status.
pub(crate) fn run_cmd(cmd: &mut Command, timeout: Duration) -> CmdOut {
    let out = run_quietly(cmd, timeout);
    eprintln!(
        "$ {}  [{} in {:.2}s]",
        out.shown,
        out.status,
        out.elapsed.as_secs_f64()
    );
    for (name, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = text.trim_end();
        if !text.is_empty() {
            eprintln!(
                "  {name}: {}",
                abbreviate(text, 4000).replace('\n', "\n    ")
            );
        }
    }
    out
}

/// `run_cmd` without the transcript (readiness polling).
pub(crate) fn run_quietly(cmd: &mut Command, timeout: Duration) -> CmdOut {
    let shown = describe(cmd);
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{shown}`: {e}"));
    let out_rx = read_in_background(child.stdout.take().expect("piped stdout"));
    let err_rx = read_in_background(child.stderr.take().expect("piped stderr"));
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > timeout => {
                timed_out = true;
                let _ = child.kill();
                break child
                    .wait()
                    .unwrap_or_else(|e| panic!("waiting for `{shown}`: {e}"));
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for `{shown}`: {e}"),
        }
    };
    // A process the command left behind may still hold the pipes open.
    let grace = Duration::from_secs(if timed_out { 1 } else { 10 });
    let stdout = out_rx
        .recv_timeout(grace)
        .unwrap_or_else(|_| "<output still open>".into());
    let stderr = err_rx
        .recv_timeout(grace)
        .unwrap_or_else(|_| "<output still open>".into());
    CmdOut {
        shown,
        status,
        stdout,
        stderr,
        timed_out,
        elapsed: start.elapsed(),
    }
}

pub(crate) fn run_ok(cmd: &mut Command) -> CmdOut {
    let out = run_cmd(cmd, CMD_TIMEOUT);
    assert!(out.success(), "command failed: {}", out.summary());
    out
}

fn abbreviate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = text.len() - max;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    format!("[... {cut} bytes cut ...]{}", &text[cut..])
}

fn tail_of_file(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Polls `probe` every 100 ms until it holds or `timeout` passes.
fn wait_until(timeout: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if probe() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// Host state: mounts, cgroups, processes
// ---------------------------------------------------------------------------

struct MountEntry {
    root: String,
    mount_point: PathBuf,
    fstype: String,
}

/// Undoes the octal escapes (`\040` for a space...) of /proc/*/mountinfo.
fn unescape_mount_field(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn host_mounts() -> Vec<MountEntry> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountEntry {
                root: unescape_mount_field(fields.get(3)?),
                mount_point: PathBuf::from(unescape_mount_field(fields.get(4)?)),
                fstype: fields.get(sep + 1)?.to_string(),
            })
        })
        .collect()
}

/// Filesystem type of the mount holding `path`.
fn fs_type_of(path: &Path) -> String {
    host_mounts()
        .into_iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.components().count())
        .map(|m| m.fstype)
        .unwrap_or_default()
}

/// Mount points of every cgroup hierarchy mounted on the host, v1 and v2.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    host_mounts()
        .into_iter()
        .filter(|m| (m.fstype == "cgroup" || m.fstype == "cgroup2") && m.root == "/")
        .map(|m| m.mount_point)
        .collect()
}

/// Sub-directories of `dir`, deepest first, `dir` last.
fn dirs_depth_first(dir: &Path, acc: &mut Vec<PathBuf>) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                dirs_depth_first(&entry.path(), acc);
            }
        }
    }
    acc.push(dir.to_path_buf());
}

/// Pids listed in `cgroup.procs` anywhere under `dir`.
fn pids_in_cgroup_tree(dir: &Path) -> Vec<i32> {
    let mut dirs = Vec::new();
    if dir.is_dir() {
        dirs_depth_first(dir, &mut dirs);
    }
    dirs.iter()
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// Whether a process is gone (or only a zombie waiting for its parent).
fn process_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .map(|rest| rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
    }
}

pub(crate) fn process_cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Entries of a directory (none when it does not exist).
fn dir_entries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Paths of the unix sockets some process has bound (/proc/net/unix).
fn listening_unix_sockets() -> Vec<PathBuf> {
    fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(7))
        .map(PathBuf::from)
        .collect()
}

/// Processes whose command line mentions `needle` (shims, conmon, ...).
fn pids_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|&pid| pid != me && !process_gone(pid) && process_cmdline(pid).contains(needle))
        .collect()
}

// ---------------------------------------------------------------------------
// The per-test guard
// ---------------------------------------------------------------------------

struct Daemon {
    name: String,
    child: Child,
}

impl Daemon {
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL if it does not exit within STOP_TIMEOUT.
    fn stop(&mut self) {
        if !self.running() {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        if !wait_until(STOP_TIMEOUT, || !self.running()) {
            eprintln!(
                "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM; killing it",
                self.name
            );
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

type Teardown = Box<dyn FnMut()>;

/// Owns everything one client test creates and removes it again on drop.
pub(crate) struct Harness {
    client: &'static str,
    started: Instant,
    /// Temporary directory holding all client state; `None` once removed.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    /// Name of the cgroup (in every hierarchy) the containers go under.
    cgroup_parent: String,
    daemons: Vec<Daemon>,
    teardowns: Vec<(String, Teardown)>,
    logs: Vec<(String, PathBuf)>,
    global_paths_before: Vec<(PathBuf, bool)>,
    shim_sockets_before: Vec<PathBuf>,
    ip_forward_before: Option<String>,
    cleaned: bool,
}

impl Harness {
    pub(crate) fn new(client: &'static str) -> Harness {
        let base = std::env::var_os("BERTH_TEST_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-clients-{client}-"))
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("create a temporary directory in {}: {e}", base.display()));
        let root = dir.path().to_path_buf();
        // Unix socket paths are limited to 108 bytes; ours go a few levels deep.
        assert!(
            root.as_os_str().len() < 60,
            "temporary directory {} is too long for unix sockets; set BERTH_TEST_TMPDIR",
            root.display()
        );
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
            .expect("chmod temporary directory");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let cgroup_parent = format!("berth-clients-{client}-{}-{nanos}", std::process::id());
        let global_paths_before = GLOBAL_PATHS
            .iter()
            .map(|d| (PathBuf::from(d), Path::new(d).exists()))
            .collect();
        let shim_sockets_before = dir_entries(Path::new(SHIM_SOCKET_DIR));
        let ip_forward_before = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").ok();
        eprintln!(
            "[{client}] state in {}, cgroup parent /{cgroup_parent}",
            root.display()
        );
        Harness {
            client,
            started: Instant::now(),
            dir: Some(dir),
            root,
            cgroup_parent,
            daemons: Vec::new(),
            teardowns: Vec::new(),
            logs: Vec::new(),
            global_paths_before,
            shim_sockets_before,
            ip_forward_before,
            cleaned: false,
        }
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub(crate) fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }

    pub(crate) fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.path(rel);
        fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// Cgroup path (as given to clients) of a container or of the parent.
    pub(crate) fn cgroup(&self, leaf: Option<&str>) -> String {
        match leaf {
            Some(leaf) => format!("/{}/{leaf}", self.cgroup_parent),
            None => format!("/{}", self.cgroup_parent),
        }
    }

    /// Whether the test directory lives on overlayfs, where overlay-based
    /// storage drivers cannot be stacked.
    pub(crate) fn on_overlayfs(&self) -> bool {
        fs_type_of(&self.root) == "overlay"
    }

    /// Mount points under the test's directory (what the daemons and the
    /// runtime mounted there and have not unmounted).
    pub(crate) fn mounts_under_dir(&self) -> Vec<PathBuf> {
        host_mounts()
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(&self.root))
            .collect()
    }

    /// Live processes whose command line names the test's directory (the
    /// daemons, shims, conmon), with their command lines.
    pub(crate) fn processes_naming_dir(&self) -> Vec<(i32, String)> {
        pids_mentioning(&self.root.to_string_lossy())
            .into_iter()
            .map(|pid| (pid, process_cmdline(pid)))
            .collect()
    }

    /// Registers a log file whose tail is printed when the test fails.
    pub(crate) fn add_log(&mut self, name: &str, path: PathBuf) {
        self.logs.push((name.to_string(), path));
    }

    /// Starts a long-running daemon with its output going to `<name>.log`.
    pub(crate) fn spawn_daemon(&mut self, name: &str, mut cmd: Command) {
        let log = self.path(&format!("{name}.log"));
        let file = File::create(&log).expect("create daemon log");
        let shown = describe(&cmd);
        eprintln!("[{}] starting daemon: {shown}", self.client);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log fd"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{shown}`: {e}"));
        self.add_log(name, log);
        self.daemons.push(Daemon {
            name: name.to_string(),
            child,
        });
    }

    /// Waits until `ready` holds, failing early if the daemon exits.
    pub(crate) fn wait_daemon_ready(&mut self, name: &str, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            let daemon = self
                .daemons
                .iter_mut()
                .find(|d| d.name == name)
                .expect("known daemon");
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("{name} exited during startup: {status}");
            }
            if ready() {
                eprintln!(
                    "[{}] {name} ready after {:.2}s",
                    self.client,
                    start.elapsed().as_secs_f64()
                );
                return;
            }
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "{name} not ready after {READY_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Registers client-side cleanup (remove containers...) that runs while
    /// the daemons are still up, in reverse order of registration.
    pub(crate) fn on_teardown(&mut self, what: &str, f: impl FnMut() + 'static) {
        self.teardowns.push((what.to_string(), Box::new(f)));
    }

    fn dump_logs(&self) {
        for (name, path) in &self.logs {
            eprintln!(
                "===== [{}] last lines of {name} ({}) =====",
                self.client,
                path.display()
            );
            eprintln!("{}", tail_of_file(path, 80));
        }
    }

    /// Processes still in the test's cgroup parent, in any hierarchy.
    fn processes_in_our_cgroups(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = cgroup_hierarchies()
            .iter()
            .flat_map(|h| pids_in_cgroup_tree(&h.join(&self.cgroup_parent)))
            .filter(|&pid| !process_gone(pid))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Runs the registered client-side cleanups; a panic in one of them must
    /// not abort the rest of the cleanup (or the process, inside Drop).
    fn run_teardowns(&mut self) {
        while let Some((what, mut f)) = self.teardowns.pop() {
            eprintln!("[{}] teardown: {what}", self.client);
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut f)).is_err() {
                eprintln!("[{}] teardown step panicked: {what}", self.client);
            }
        }
    }

    /// Tears everything down; returns what could not be cleaned up. Logs are
    /// dumped first when the test is failing (unless `logs_dumped`), or before
    /// the directory goes when cleanup itself has problems.
    fn cleanup(&mut self, logs_dumped: bool) -> Vec<String> {
        let mut problems = Vec::new();
        if self.cleaned {
            return problems;
        }
        self.cleaned = true;
        let mut logs_dumped = logs_dumped;
        if thread::panicking() && !logs_dumped {
            self.dump_logs();
            logs_dumped = true;
        }

        // 1. Client-side removal of containers, while the daemons still run.
        self.run_teardowns();
        // 2. Daemons, last started first.
        while let Some(mut daemon) = self.daemons.pop() {
            daemon.stop();
        }
        // 3. Stray processes: anything in our cgroups, or mentioning our
        //    directory (shims, conmon). They are all ours.
        let root = self.root.to_string_lossy().into_owned();
        let mut strays = self.processes_in_our_cgroups();
        strays.extend(pids_mentioning(&root));
        strays.sort_unstable();
        strays.dedup();
        for &pid in &strays {
            eprintln!(
                "[{}] killing stray process {pid}: {}",
                self.client,
                process_cmdline(pid)
            );
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if !wait_until(Duration::from_secs(10), || {
            strays.iter().all(|&p| process_gone(p))
        }) {
            problems.push(format!("processes survived SIGKILL: {strays:?}"));
        }
        // 4. Mounts the daemons left under our directory, deepest first.
        for _ in 0..5 {
            let mut left: Vec<PathBuf> = host_mounts()
                .into_iter()
                .map(|m| m.mount_point)
                .filter(|p| p.starts_with(&self.root))
                .collect();
            if left.is_empty() {
                break;
            }
            left.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            for p in &left {
                if let Err(e) = umount2(p.as_path(), MntFlags::MNT_DETACH) {
                    eprintln!("[{}] umount {}: {e}", self.client, p.display());
                }
            }
        }
        let mounts_left: Vec<PathBuf> = host_mounts()
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(&self.root))
            .collect();
        if !mounts_left.is_empty() {
            problems.push(format!(
                "mounts left under {}: {mounts_left:?}",
                self.root.display()
            ));
        }
        // 5. Our cgroups, in every hierarchy.
        for hierarchy in cgroup_hierarchies() {
            let top = hierarchy.join(&self.cgroup_parent);
            if !top.exists() {
                continue;
            }
            let mut dirs = Vec::new();
            dirs_depth_first(&top, &mut dirs);
            for d in dirs {
                if d != top {
                    // Informational: clients and runtimes differ in what
                    // they leave behind (podman's conmon cgroup, ...).
                    eprintln!("[{}] removing cgroup {}", self.client, d.display());
                }
                let removed = wait_until(Duration::from_secs(5), || {
                    fs::remove_dir(&d).is_ok() || !d.exists()
                });
                if !removed {
                    problems.push(format!("cannot remove cgroup {}", d.display()));
                }
            }
        }
        // 6. What clients create outside their directories whatever they
        //    are told: the sockets of the shims killed above (new ones that
        //    nothing listens on), then GLOBAL_PATHS.
        let listening = listening_unix_sockets();
        for socket in dir_entries(Path::new(SHIM_SOCKET_DIR)) {
            if self.shim_sockets_before.contains(&socket) || listening.contains(&socket) {
                continue;
            }
            let is_socket = fs::symlink_metadata(&socket)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false);
            if is_socket {
                eprintln!(
                    "[{}] removing dead shim socket {}",
                    self.client,
                    socket.display()
                );
                let _ = fs::remove_file(&socket);
            }
        }
        for (path, existed) in &self.global_paths_before {
            let Ok(meta) = fs::symlink_metadata(path) else {
                continue;
            };
            if *existed {
                continue;
            }
            let removed = if meta.is_dir() {
                fs::remove_dir(path)
            } else {
                fs::remove_file(path)
            };
            if removed.is_err() {
                eprintln!(
                    "[{}] note: {} was created during the test and is not empty",
                    self.client,
                    path.display()
                );
            }
        }
        // 7. Host settings a daemon might have flipped.
        if let Some(before) = &self.ip_forward_before {
            let now = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
            if now != *before {
                eprintln!(
                    "[{}] restoring net.ipv4.ip_forward to {}",
                    self.client,
                    before.trim()
                );
                let _ = fs::write("/proc/sys/net/ipv4/ip_forward", before);
            }
        }
        // 8. The directory itself, unless something is still mounted in it.
        if !problems.is_empty() && !logs_dumped {
            self.dump_logs();
        }
        if let Some(dir) = self.dir.take() {
            if mounts_left.is_empty() {
                if let Err(e) = dir.close() {
                    problems.push(format!("cannot remove {}: {e}", self.root.display()));
                }
            } else {
                let kept = dir.keep();
                eprintln!(
                    "[{}] keeping {} because of the mounts left in it",
                    self.client,
                    kept.display()
                );
            }
        }
        eprintln!(
            "[{}] finished in {:.2}s",
            self.client,
            self.started.elapsed().as_secs_f64()
        );
        problems
    }

    /// Normal end of a test: nothing the runtime ran may still be alive once
    /// the client has removed its containers, and cleanup must be complete.
    pub(crate) fn finish(mut self) {
        self.run_teardowns();
        // conmon and shims exit shortly after their container is removed.
        wait_until(Duration::from_secs(10), || {
            self.processes_in_our_cgroups().is_empty()
        });
        let leaked: Vec<String> = self
            .processes_in_our_cgroups()
            .into_iter()
            .map(|p| format!("{p}: {}", process_cmdline(p)))
            .collect();
        wait_until(Duration::from_secs(5), || self.stale_cgroups().is_empty());
        let stale = self.stale_cgroups();
        let failed = !leaked.is_empty() || !stale.is_empty();
        if failed {
            self.dump_logs();
        }
        let problems = self.cleanup(failed);
        assert!(
            leaked.is_empty(),
            "processes left in the containers' cgroups after removal: {leaked:#?}"
        );
        assert!(
            stale.is_empty(),
            "container cgroups left behind after the client removed every container: {stale:#?}"
        );
        assert!(problems.is_empty(), "incomplete cleanup: {problems:#?}");
    }

    /// Cgroups under the test's parent that outlive their container, other
    /// than those a client keeps by design (EXPECTED_CGROUPS).
    fn stale_cgroups(&self) -> Vec<PathBuf> {
        let mut stale = Vec::new();
        for hierarchy in cgroup_hierarchies() {
            let top = hierarchy.join(&self.cgroup_parent);
            if !top.is_dir() {
                continue;
            }
            let mut dirs = Vec::new();
            dirs_depth_first(&top, &mut dirs);
            stale.extend(dirs.into_iter().filter(|d| {
                *d != top
                    && !d
                        .file_name()
                        .is_some_and(|n| EXPECTED_CGROUPS.iter().any(|e| n == *e))
            }));
        }
        stale
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let problems = self.cleanup(false);
        for p in problems {
            eprintln!("[{}] cleanup problem: {p}", self.client);
        }
    }
}
