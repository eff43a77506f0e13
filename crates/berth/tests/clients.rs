//! End-to-end tests that drive the runtime under test through real container
//! clients: podman (through conmon), ctr (containerd + containerd-shim-runc-v2)
//! and docker (dockerd + containerd).
//!
//! The runtime under test is `$BERTH_TEST_RUNTIME` when it is set (for example
//! `/usr/sbin/runc`, to validate this harness against the reference runtime),
//! otherwise the `berth` binary cargo built for this package.
//!
//! Each test is self-contained:
//! * it builds a tiny image from the host's static busybox (no registry, no
//!   network);
//! * every daemon it needs is started by the test, with all of its state in a
//!   fresh temporary directory and its own socket, so no system daemon or
//!   system state is used or touched;
//! * containers are placed under a cgroup parent that belongs to the test;
//! * a guard tears everything down again, even when an assertion fails:
//!   containers, daemons, stray processes, mounts, cgroups and the directories
//!   the clients insist on creating under /run.
//!
//! The tests need root and the client binaries. A missing binary is a failure,
//! not a skip: CI is expected to install them. See docs/clients.md.
//!
//! The tests hold a process-wide lock so that they run one at a time even when
//! the test harness runs them on several threads: each one starts daemons and
//! the machines they run on are small.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// Reference of the image every test builds and loads into its client.
const IMAGE: &str = "localhost/berth-clients:test";
/// Hostname the clients are asked to give the container.
const HOSTNAME: &str = "berthtest";
/// `--memory 64m`, as the container must read it back.
const MEMORY_LIMIT: u64 = 64 * 1024 * 1024;
/// `--pids-limit 50`.
const PIDS_LIMIT: u64 = 50;
/// Uid and gid of the unprivileged run (`--user 1000:1000`).
const TEST_UID: u32 = 1000;
/// Content of the file the host puts in the read-only volume.
const HOST_FILE_CONTENT: &str = "written-by-the-host";
/// Exit status the exit-code probe container ends with.
const EXIT_CODE: i32 = 7;
/// Upper bound for any single client command. A timeout fails the test at
/// once, so a hanging runtime costs about this much per test, not per command.
const CMD_TIMEOUT: Duration = Duration::from_secs(90);
/// Upper bound for each cleanup command run by the guard.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for one readiness probe of a daemon.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
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

/// Cgroups a client keeps under the parent by design: podman puts conmon in
/// `<parent>/conmon` with the cgroupfs manager and never removes it.
const EXPECTED_CGROUPS: &[&str] = &["conmon"];

/// Shell script run inside the probe containers. It prints `key=value` lines
/// that the tests assert on. It only needs busybox.
const PROBE_SCRIPT: &str = r#"
say() { printf '%s=%s\n' "$1" "$2"; }
say hostname "$(hostname)"
say proc_fstype "$(awk '$2 == "/proc" { t = $3 } END { print t }' /proc/mounts)"
if [ -d /data ]; then
  say data_read "$(cat /data/hello.txt 2>&1)"
  if err=$( (echo x > /data/from-container) 2>&1 ); then
    say data_write allowed
  else
    say data_write "refused: $err"
  fi
  say data_opts "$(awk '$5 == "/data" { o = $6 } END { print o }' /proc/self/mountinfo)"
fi
say uid "$(id -u)"
say gid "$(id -g)"
# cg_file CONTROLLER V1_FILE V2_FILE: the file of this process's cgroup for
# CONTROLLER, found from /proc/self/cgroup and /proc/self/mountinfo; cgroup v1
# when the controller has a v1 hierarchy, the unified hierarchy otherwise.
cg_file() {
  rel=$(awk -F: -v c="$1" '{ n = split($2, a, ","); for (i = 1; i <= n; i++) if (a[i] == c) { print $3; exit } }' /proc/self/cgroup)
  if [ -n "$rel" ]; then
    fs=cgroup; opt=$1; file=$2
  else
    rel=$(awk -F: '$1 == "0" && $2 == "" { print $3; exit }' /proc/self/cgroup)
    fs=cgroup2; opt=; file=$3
  fi
  awk -v fs="$fs" -v opt="$opt" -v rel="$rel" -v file="$file" '{
    for (i = 7; i <= NF && $i != "-"; i++) ;
    if ($(i + 1) != fs) next
    if (opt != "") {
      n = split($(i + 3), o, ","); hit = 0
      for (j = 1; j <= n; j++) if (o[j] == opt) hit = 1
      if (!hit) next
    }
    root = $4; p = rel
    if (root != "/") { if (index(p, root) == 1) p = substr(p, length(root) + 1); else p = "" }
    if (p == "/") p = ""
    print $5 p "/" file; exit
  }' /proc/self/mountinfo
}
report_cg() {
  f=$(cg_file "$2" "$3" "$4")
  say "$1_file" "$f"
  if [ -n "$f" ] && [ -r "$f" ]; then say "$1_limit" "$(cat "$f")"; else say "$1_limit" "<unreadable>"; fi
}
report_cg mem memory memory.limit_in_bytes memory.max
report_cg pids pids pids.max pids.max
"#;

// ---------------------------------------------------------------------------
// Preconditions
// ---------------------------------------------------------------------------

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs the tests one at a time; a test that failed must not block the others.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Absolute, canonical path of the runtime under test.
fn runtime_under_test() -> PathBuf {
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

fn require_root() {
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
fn require_tools(tools: &[&str]) {
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
fn busybox() -> PathBuf {
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

struct CmdOut {
    shown: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
    timed_out: bool,
    elapsed: Duration,
}

impl CmdOut {
    fn success(&self) -> bool {
        self.status.success() && !self.timed_out
    }

    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn summary(&self) -> String {
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
fn run_cmd(cmd: &mut Command, timeout: Duration) -> CmdOut {
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
fn run_quietly(cmd: &mut Command, timeout: Duration) -> CmdOut {
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

fn run_ok(cmd: &mut Command) -> CmdOut {
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

fn process_cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
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
struct Harness {
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
    ip_forward_before: Option<String>,
    cleaned: bool,
}

impl Harness {
    fn new(client: &'static str) -> Harness {
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
            ip_forward_before,
            cleaned: false,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }

    fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.path(rel);
        fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// Cgroup path (as given to clients) of a container or of the parent.
    fn cgroup(&self, leaf: Option<&str>) -> String {
        match leaf {
            Some(leaf) => format!("/{}/{leaf}", self.cgroup_parent),
            None => format!("/{}", self.cgroup_parent),
        }
    }

    /// Whether the test directory lives on overlayfs, where overlay-based
    /// storage drivers cannot be stacked.
    fn on_overlayfs(&self) -> bool {
        fs_type_of(&self.root) == "overlay"
    }

    /// Registers a log file whose tail is printed when the test fails.
    fn add_log(&mut self, name: &str, path: PathBuf) {
        self.logs.push((name.to_string(), path));
    }

    /// Starts a long-running daemon with its output going to `<name>.log`.
    fn spawn_daemon(&mut self, name: &str, mut cmd: Command) {
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
    fn wait_daemon_ready(&mut self, name: &str, mut ready: impl FnMut() -> bool) {
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
    fn on_teardown(&mut self, what: &str, f: impl FnMut() + 'static) {
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
        //    are told (GLOBAL_PATHS).
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
    fn finish(mut self) {
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

// ---------------------------------------------------------------------------
// Test image and probe expectations
// ---------------------------------------------------------------------------

struct TestImage {
    /// Unpacked root filesystem (also used directly by the ctr spec run).
    rootfs: PathBuf,
    /// docker-archive (`docker save` format) tarball: podman load, docker
    /// load and ctr images import all read it.
    archive: PathBuf,
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn sha256_hex(path: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(path));
    let hex = out
        .stdout
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(hex.len(), 64, "unexpected sha256sum output: {}", out.stdout);
    hex
}

/// Builds a one-layer busybox image without any registry or build tool.
fn build_image(h: &Harness) -> TestImage {
    let busybox = busybox();
    let rootfs = h.mkdir("image/rootfs");
    for d in ["bin", "dev", "proc", "sys", "etc", "tmp", "data", "run"] {
        fs::create_dir_all(rootfs.join(d)).expect("mkdir in rootfs");
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))
        .expect("chmod /tmp");
    fs::copy(&busybox, rootfs.join("bin/busybox")).expect("copy busybox");
    let applets = run_ok(Command::new(&busybox).arg("--list")).stdout;
    for applet in applets
        .split_whitespace()
        .filter(|a| *a != "busybox" && !a.contains('/'))
    {
        symlink("busybox", rootfs.join("bin").join(applet)).expect("applet symlink");
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").expect("passwd");
    fs::write(rootfs.join("etc/group"), "root:x:0:\n").expect("group");

    let layout = h.mkdir("image/archive");
    let layer = layout.join("layer.tar");
    run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&layer)
            .arg("."),
    );
    let config = serde_json::json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&layer))] },
    });
    let config_tmp = layout.join("config.json");
    fs::write(&config_tmp, serde_json::to_vec(&config).unwrap()).expect("write image config");
    let config_name = format!("{}.json", sha256_hex(&config_tmp));
    fs::rename(&config_tmp, layout.join(&config_name)).expect("rename image config");
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [IMAGE],
        "Layers": ["layer.tar"],
    }]);
    fs::write(
        layout.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .expect("write manifest");
    let archive = h.path("image/image.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&archive)
            .args(["manifest.json", &config_name, "layer.tar"]),
    );
    TestImage { rootfs, archive }
}

/// Host directory mounted read-only at /data, with a file the host wrote.
fn make_volume(h: &Harness) -> PathBuf {
    let vol = h.mkdir("volume");
    fs::write(vol.join("hello.txt"), format!("{HOST_FILE_CONTENT}\n")).expect("write volume file");
    fs::set_permissions(vol.join("hello.txt"), fs::Permissions::from_mode(0o644)).expect("chmod");
    vol
}

/// What a probe container is expected to report.
#[derive(Default, Clone, Copy)]
struct Expect {
    hostname: bool,
    data: bool,
    user: bool,
    memory: bool,
    pids: bool,
}

fn parse_report(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn check_probe(client: &str, what: &str, out: &CmdOut, expect: Expect, volume: &Path) {
    assert!(
        out.success(),
        "{client}: {what}: probe container failed: {}",
        out.summary()
    );
    let report = parse_report(&out.stdout);
    let get = |key: &str| report.get(key).map(String::as_str).unwrap_or("<missing>");
    let ctx = || format!("{client}: {what}: report {report:#?}\n{}", out.summary());

    assert_eq!(get("proc_fstype"), "proc", "/proc is not procfs; {}", ctx());
    if expect.hostname {
        assert_eq!(get("hostname"), HOSTNAME, "hostname; {}", ctx());
    }
    if expect.data {
        assert_eq!(
            get("data_read"),
            HOST_FILE_CONTENT,
            "file written by the host in the volume; {}",
            ctx()
        );
        let write = get("data_write");
        assert!(
            write.starts_with("refused") && write.contains("Read-only file system"),
            "a write to the :ro volume must fail with EROFS, got {write:?}; {}",
            ctx()
        );
        assert!(
            get("data_opts").split(',').any(|o| o == "ro"),
            "/data mount options; {}",
            ctx()
        );
        assert!(
            !volume.join("from-container").exists(),
            "the container wrote into the read-only volume"
        );
    }
    let (uid, gid) = if expect.user {
        (TEST_UID, TEST_UID)
    } else {
        (0, 0)
    };
    assert_eq!(get("uid"), uid.to_string(), "id -u; {}", ctx());
    assert_eq!(get("gid"), gid.to_string(), "id -g; {}", ctx());
    if expect.memory {
        assert_eq!(
            get("mem_limit"),
            MEMORY_LIMIT.to_string(),
            "memory limit read from {}; {}",
            get("mem_file"),
            ctx()
        );
    }
    if expect.pids {
        assert_eq!(
            get("pids_limit"),
            PIDS_LIMIT.to_string(),
            "pids limit read from {}; {}",
            get("pids_file"),
            ctx()
        );
    }
}

/// `<client> exec` into a running `sleep 600` container: the process runs as the given user,
/// sees the container's pid 1, and its exit status comes back. `as_user` is the exec command
/// with `--user 1000` and the container already named; `plain` adds `exec <container>` to a
/// fresh client command made by `client_cmd`.
fn check_exec(
    client: &str,
    as_user: &mut Command,
    plain: impl Fn(&mut Command),
    client_cmd: impl Fn() -> Command,
) {
    let out = run_cmd(
        as_user.args(["sh", "-c", "id -u; cat /proc/1/cmdline | tr '\\0' ' '"]),
        CMD_TIMEOUT,
    );
    assert!(
        out.success(),
        "{client} exec failed: {}\n{}",
        out.shown,
        out.stderr
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("1000"),
        "{client} exec --user: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains("sleep 600"),
        "{client} exec did not join the container's pid namespace: {}",
        out.stdout
    );
    let mut cmd = client_cmd();
    plain(&mut cmd);
    let out = run_cmd(cmd.args(["sh", "-c", "exit 9"]), CMD_TIMEOUT);
    assert_eq!(
        out.status.code(),
        Some(9),
        "{client} exec exit status: {}",
        out.shown
    );
}

fn check_exit_code(client: &str, out: &CmdOut) {
    assert!(
        !out.timed_out,
        "{client}: exit-code container timed out: {}",
        out.summary()
    );
    assert_eq!(
        out.code(),
        Some(EXIT_CODE),
        "{client} must report the container's exit status: {}",
        out.summary()
    );
}

/// `<runtime> [--root ROOT] state ID` as JSON, or `None` when it fails.
fn runtime_state(runtime: &Path, root: Option<&Path>, id: &str) -> Option<Value> {
    let mut cmd = Command::new(runtime);
    if let Some(root) = root {
        cmd.arg("--root").arg(root);
    }
    let out = run_cmd(cmd.args(["state", id]), CMD_TIMEOUT);
    if !out.success() {
        return None;
    }
    Some(
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("`{}` printed invalid JSON: {e}", out.shown)),
    )
}

/// The runtime under test knows the container and reports it running with
/// the pid the client reports.
fn assert_runtime_runs(
    client: &str,
    runtime: &Path,
    root: Option<&Path>,
    id: &str,
    client_pid: Option<i64>,
) {
    let state = runtime_state(runtime, root, id).unwrap_or_else(|| {
        panic!(
            "{client}: `{} state {id}` does not know the container: either the client did not use the runtime \
             under test, or its `state` command is broken",
            runtime.display()
        )
    });
    assert_eq!(
        state["id"].as_str(),
        Some(id),
        "{client}: runtime state: {state}"
    );
    assert_eq!(
        state["status"].as_str(),
        Some("running"),
        "{client}: runtime state: {state}"
    );
    if let Some(pid) = client_pid {
        assert_eq!(
            state["pid"].as_i64(),
            Some(pid),
            "{client}: runtime and client disagree on the pid: {state}"
        );
    }
}

fn assert_runtime_forgot(client: &str, runtime: &Path, root: Option<&Path>, id: &str) {
    assert!(
        runtime_state(runtime, root, id).is_none(),
        "{client}: the runtime still knows container {id} after the client removed it"
    );
}

/// `options.json` the containerd shim keeps in the bundle: which binary and
/// root it runs the runtime with.
fn shim_runtime_options(containerd_state: &Path, namespace: &str, id: &str) -> Value {
    let path = containerd_state
        .join("io.containerd.runtime.v2.task")
        .join(namespace)
        .join(id)
        .join("options.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// containerd (used by the ctr and docker tests)
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Containerd {
    socket: PathBuf,
    state: PathBuf,
}

/// Starts a private containerd: its own root, state, socket and config; CRI
/// (and with it any CNI) is disabled.
fn start_containerd(h: &mut Harness, name: &str) -> Containerd {
    let base = h.mkdir(name);
    let socket = base.join("containerd.sock");
    let state = base.join("state");
    let config = format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{socket}"

[debug]
  level = "debug"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{opt}"
"#,
        root = base.join("root").display(),
        state = state.display(),
        socket = socket.display(),
        opt = base.join("opt").display(),
    );
    let config_path = base.join("config.toml");
    fs::write(&config_path, config).expect("write containerd config");
    let mut cmd = Command::new("containerd");
    cmd.arg("--config").arg(&config_path);
    h.spawn_daemon(name, cmd);
    let probe_socket = socket.clone();
    h.wait_daemon_ready(name, || {
        probe_socket.exists()
            && run_quietly(
                Command::new("ctr")
                    .arg("--address")
                    .arg(&probe_socket)
                    .arg("version"),
                PROBE_TIMEOUT,
            )
            .success()
    });
    Containerd { socket, state }
}

// ---------------------------------------------------------------------------
// podman
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Podman {
    runtime: PathBuf,
    root: PathBuf,
    runroot: PathBuf,
    tmpdir: PathBuf,
    storage_driver: &'static str,
    conf: PathBuf,
    storage_conf: PathBuf,
    registries_conf: PathBuf,
    process_tmp: PathBuf,
    cgroup_parent: String,
}

impl Podman {
    fn new(h: &Harness, runtime: &Path) -> Podman {
        let storage_driver = if h.on_overlayfs() { "vfs" } else { "overlay" };
        let (root, runroot, tmpdir) = (
            h.mkdir("podman/root"),
            h.mkdir("podman/runroot"),
            h.mkdir("podman/tmp"),
        );
        let process_tmp = h.mkdir("podman/process-tmp");
        let network_dir = h.mkdir("podman/networks");
        // CONTAINERS_CONF replaces every system containers.conf. The rlimits
        // matter: podman's default nofile (1048576) is above the hard limit
        // of an environment without CAP_SYS_RESOURCE and the runtime's
        // setrlimit fails.
        let conf = h.write(
            "podman/containers.conf",
            &format!(
                r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
netns = "none"

[network]
network_config_dir = "{network_dir}"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{events}"
tmp_dir = "{tmpdir}"
lock_type = "file"
"#,
                network_dir = network_dir.display(),
                events = h.path("podman/events.log").display(),
                tmpdir = tmpdir.display(),
            ),
        );
        let storage_conf = h.write(
            "podman/storage.conf",
            &format!(
                "[storage]\ndriver = \"{storage_driver}\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                root.display(),
                runroot.display()
            ),
        );
        let registries_conf = h.write(
            "podman/registries.conf",
            "unqualified-search-registries = []\n",
        );
        Podman {
            runtime: runtime.to_path_buf(),
            root,
            runroot,
            tmpdir,
            storage_driver,
            conf,
            storage_conf,
            registries_conf,
            process_tmp,
            cgroup_parent: h.cgroup(None),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf)
            .env("CONTAINERS_STORAGE_CONF", &self.storage_conf)
            .env("CONTAINERS_REGISTRIES_CONF", &self.registries_conf)
            .env("TMPDIR", &self.process_tmp)
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .arg("--tmpdir")
            .arg(&self.tmpdir)
            .args(["--storage-driver", self.storage_driver])
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .arg("--runtime")
            .arg(&self.runtime);
        c
    }

    /// `podman run` with the options every container of the test gets.
    fn run(&self) -> Command {
        let mut c = self.cmd();
        c.args([
            "run",
            "--pull",
            "never",
            "--network",
            "none",
            "--cgroup-parent",
            &self.cgroup_parent,
        ]);
        c
    }
}

#[test]
fn podman() {
    let _serial = serial();
    require_root();
    require_tools(&["podman", "conmon", "tar", "sha256sum"]);
    let runtime = runtime_under_test();
    let mut h = Harness::new("podman");
    let image = build_image(&h);
    let volume = make_volume(&h);
    let pm = Podman::new(&h, &runtime);
    h.add_log("podman events", h.path("podman/events.log"));
    let teardown = pm.clone();
    h.on_teardown("podman rm --all --force", move || {
        run_cmd(
            teardown
                .cmd()
                .args(["rm", "--all", "--force", "--time", "0"]),
            TEARDOWN_TIMEOUT,
        );
    });

    run_ok(
        pm.cmd()
            .args(["load", "--quiet", "--input"])
            .arg(&image.archive),
    );

    // podman resolved the runtime we gave it.
    let info = run_ok(pm.cmd().args([
        "info",
        "--format",
        "{{.Host.OCIRuntime.Path}}|{{.Host.CgroupManager}}",
    ]));
    assert_eq!(
        info.stdout.trim(),
        format!("{}|cgroupfs", runtime.display()),
        "podman info must show the runtime under test and the cgroupfs manager"
    );

    let out = run_cmd(
        pm.run()
            .args([
                "--rm",
                "--hostname",
                HOSTNAME,
                "--memory",
                "64m",
                "--pids-limit",
                &PIDS_LIMIT.to_string(),
            ])
            .arg("--volume")
            .arg(format!("{}:/data:ro", volume.display()))
            .args([IMAGE, "sh", "-c", PROBE_SCRIPT]),
        CMD_TIMEOUT,
    );
    let all = Expect {
        hostname: true,
        data: true,
        memory: true,
        pids: true,
        ..Expect::default()
    };
    check_probe("podman", "hostname/volume/limits", &out, all, &volume);

    let out = run_cmd(
        pm.run().args([
            "--rm",
            "--user",
            "1000:1000",
            IMAGE,
            "sh",
            "-c",
            PROBE_SCRIPT,
        ]),
        CMD_TIMEOUT,
    );
    check_probe(
        "podman",
        "--user 1000:1000",
        &out,
        Expect {
            user: true,
            ..Expect::default()
        },
        &volume,
    );

    let out = run_cmd(
        pm.run().args(["--rm", IMAGE, "sh", "-c", "exit 7"]),
        CMD_TIMEOUT,
    );
    check_exit_code("podman", &out);

    // A detached container: podman, conmon and the runtime itself all agree
    // that the runtime under test runs it. podman does not pass --root, so
    // the runtime uses its default state directory.
    let id = run_ok(
        pm.run()
            .args(["--detach", "--name", "probe", IMAGE, "sleep", "600"]),
    )
    .stdout
    .trim()
    .to_string();
    let inspect = run_ok(pm.cmd().args([
        "inspect",
        "--format",
        "{{.OCIRuntime}}|{{.State.Pid}}|{{.State.ConmonPid}}",
        "probe",
    ]));
    let fields: Vec<&str> = inspect.stdout.trim().split('|').collect();
    assert_eq!(
        fields.len(),
        3,
        "unexpected podman inspect output {:?}",
        inspect.stdout
    );
    assert_eq!(
        fields[0],
        runtime.to_string_lossy(),
        "podman inspect .OCIRuntime"
    );
    let pid: i64 = fields[1].parse().expect("container pid");
    let conmon = process_cmdline(fields[2].parse().expect("conmon pid"));
    assert!(
        conmon.contains(&format!(" -r {} ", runtime.display())),
        "conmon must be told to use the runtime under test: {conmon}"
    );
    assert_runtime_runs("podman", &runtime, None, &id, Some(pid));
    check_exec(
        "podman",
        pm.cmd().args(["exec", "--user", "1000", "probe"]),
        |c| {
            c.args(["exec", "probe"]);
        },
        || pm.cmd(),
    );

    // pause and unpause go through the runtime's pause and resume.
    run_ok(pm.cmd().args(["pause", "probe"]));
    let st = runtime_state(&runtime, None, &id).expect("runtime state of the paused container");
    assert_eq!(st["status"], "paused", "after podman pause: {st}");
    run_ok(pm.cmd().args(["unpause", "probe"]));
    let st = runtime_state(&runtime, None, &id).expect("runtime state after unpause");
    assert_eq!(st["status"], "running", "after podman unpause: {st}");

    run_ok(pm.cmd().args(["rm", "--force", "--time", "0", "probe"]));
    assert_runtime_forgot("podman", &runtime, None, &id);
    let left = run_ok(pm.cmd().args(["ps", "--all", "--quiet"]));
    assert!(
        left.stdout.trim().is_empty(),
        "podman still lists containers: {}",
        left.stdout
    );

    h.finish();
}

// ---------------------------------------------------------------------------
// ctr (containerd)
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Ctr {
    runtime: PathBuf,
    containerd: Containerd,
    namespace: String,
    runc_root: PathBuf,
    fifo_dir: PathBuf,
    snapshotter: &'static str,
}

impl Ctr {
    fn cmd(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.containerd.socket)
            .args(["--namespace", &self.namespace]);
        c.env("CONTAINERD_SNAPSHOTTER", self.snapshotter);
        c
    }

    /// `ctr run` pointed at the runtime under test, with private state.
    fn run(&self) -> Command {
        let mut c = self.cmd();
        c.arg("run")
            .arg("--runc-binary")
            .arg(&self.runtime)
            .arg("--runc-root")
            .arg(&self.runc_root)
            .arg("--fifo-dir")
            .arg(&self.fifo_dir);
        c
    }

    /// The --root the shim hands the runtime: `--runc-root` plus namespace.
    fn runtime_root(&self) -> PathBuf {
        self.runc_root.join(&self.namespace)
    }

    fn remove_everything(&self) {
        let list = run_cmd(
            self.cmd().args(["containers", "list", "--quiet"]),
            TEARDOWN_TIMEOUT,
        );
        for id in list.stdout.split_whitespace() {
            run_cmd(
                self.cmd().args(["tasks", "delete", "--force", id]),
                TEARDOWN_TIMEOUT,
            );
            run_cmd(
                self.cmd().args(["containers", "delete", id]),
                TEARDOWN_TIMEOUT,
            );
        }
    }
}

#[test]
fn ctr() {
    let _serial = serial();
    require_root();
    require_tools(&[
        "ctr",
        "containerd",
        "containerd-shim-runc-v2",
        "tar",
        "sha256sum",
    ]);
    let runtime = runtime_under_test();
    let mut h = Harness::new("ctr");
    let image = build_image(&h);
    let volume = make_volume(&h);
    let containerd = start_containerd(&mut h, "containerd");
    let ctr = Ctr {
        runtime: runtime.clone(),
        containerd,
        namespace: "berth-clients".into(),
        runc_root: h.mkdir("runtime-root"),
        fifo_dir: h.mkdir("fifo"),
        snapshotter: if h.on_overlayfs() {
            "native"
        } else {
            "overlayfs"
        },
    };
    let teardown = ctr.clone();
    h.on_teardown("ctr: delete all tasks and containers", move || {
        teardown.remove_everything()
    });

    run_ok(ctr.cmd().args(["images", "import"]).arg(&image.archive));

    // ctr 1.6 has flags for the memory limit, mounts and the cgroup path. The
    // default spec of ctr mounts no cgroupfs, so ask for one to read the
    // limit from inside.
    let out = run_cmd(
        ctr.run()
            .args(["--rm", "--cgroup", &h.cgroup(Some("flags"))])
            .args(["--memory-limit", &MEMORY_LIMIT.to_string()])
            .arg("--mount")
            .arg(format!(
                "type=bind,src={},dst=/data,options=rbind:ro",
                volume.display()
            ))
            .args([
                "--mount",
                "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro:nosuid:noexec:nodev",
            ])
            .args([IMAGE, "flags", "sh", "-c", PROBE_SCRIPT]),
        CMD_TIMEOUT,
    );
    check_probe(
        "ctr",
        "--memory-limit/--mount",
        &out,
        Expect {
            data: true,
            memory: true,
            ..Expect::default()
        },
        &volume,
    );

    // ctr has no --hostname, --user or pids flag: hand it a full spec instead,
    // derived from ctr's own default spec (`ctr oci spec`).
    let mut spec: Value = serde_json::from_str(&run_ok(ctr.cmd().args(["oci", "spec"])).stdout)
        .expect("ctr oci spec prints JSON");
    spec["hostname"] = HOSTNAME.into();
    spec["root"] = serde_json::json!({ "path": image.rootfs, "readonly": true });
    spec["process"]["terminal"] = false.into();
    spec["process"]["cwd"] = "/".into();
    spec["process"]["args"] = serde_json::json!(["sh", "-c", PROBE_SCRIPT]);
    spec["process"]["env"] = serde_json::json!(["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]);
    spec["process"]["user"] = serde_json::json!({ "uid": TEST_UID, "gid": TEST_UID });
    spec["linux"]["cgroupsPath"] = h.cgroup(Some("spec")).into();
    spec["linux"]["resources"]["memory"] = serde_json::json!({ "limit": MEMORY_LIMIT });
    spec["linux"]["resources"]["pids"] = serde_json::json!({ "limit": PIDS_LIMIT });
    let mounts = spec["mounts"].as_array_mut().expect("spec mounts");
    mounts.push(serde_json::json!({
        "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
        "options": ["ro", "nosuid", "noexec", "nodev"],
    }));
    mounts.push(serde_json::json!({
        "destination": "/data", "type": "bind", "source": volume, "options": ["rbind", "ro"],
    }));
    let spec_path = h.path("spec.json");
    fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).expect("write spec");
    let out = run_cmd(
        ctr.run()
            .arg("--rm")
            .arg("--config")
            .arg(&spec_path)
            .arg("spec"),
        CMD_TIMEOUT,
    );
    let all = Expect {
        hostname: true,
        data: true,
        user: true,
        memory: true,
        pids: true,
    };
    check_probe(
        "ctr",
        "--config spec (hostname/user/pids)",
        &out,
        all,
        &volume,
    );

    let out = run_cmd(
        ctr.run().args([
            "--rm",
            "--cgroup",
            &h.cgroup(Some("exit")),
            IMAGE,
            "exit",
            "sh",
            "-c",
            "exit 7",
        ]),
        CMD_TIMEOUT,
    );
    check_exit_code("ctr", &out);

    // A detached container: the shim was told to use the runtime under test,
    // and that runtime's own state has the container, running.
    run_ok(ctr.run().args([
        "--detach",
        "--null-io",
        "--cgroup",
        &h.cgroup(Some("probe")),
        IMAGE,
        "probe",
        "sleep",
        "600",
    ]));
    let options = shim_runtime_options(&ctr.containerd.state, &ctr.namespace, "probe");
    assert_eq!(
        options["binary_name"].as_str(),
        Some(&*runtime.to_string_lossy()),
        "shim options: {options}"
    );
    let tasks = run_ok(ctr.cmd().args(["tasks", "list"]));
    let pid = tasks.stdout.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["probe", pid, ..] => pid.parse::<i64>().ok(),
            _ => None,
        }
    });
    assert!(
        pid.is_some(),
        "ctr tasks list does not show the probe task: {}",
        tasks.stdout
    );
    assert_runtime_runs("ctr", &runtime, Some(&ctr.runtime_root()), "probe", pid);
    run_ok(ctr.cmd().args(["tasks", "delete", "--force", "probe"]));
    run_ok(ctr.cmd().args(["containers", "delete", "probe"]));
    assert_runtime_forgot("ctr", &runtime, Some(&ctr.runtime_root()), "probe");
    let left = run_ok(ctr.cmd().args(["containers", "list", "--quiet"]));
    assert!(
        left.stdout.trim().is_empty(),
        "ctr still lists containers: {}",
        left.stdout
    );

    h.finish();
}

// ---------------------------------------------------------------------------
// docker (dockerd + containerd)
// ---------------------------------------------------------------------------

/// Major version of dockerd ("Docker version 20.10.24+dfsg1, build ...").
fn dockerd_major_version() -> Option<u32> {
    let out = run_cmd(Command::new("dockerd").arg("--version"), CMD_TIMEOUT);
    let version = out.stdout.split_whitespace().nth(2)?;
    version.split('.').next()?.parse().ok()
}

#[derive(Clone)]
struct Docker {
    host: String,
    config_dir: PathBuf,
}

impl Docker {
    fn cmd(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", &self.config_dir);
        c
    }

    /// `docker run` on the runtime under test, without networking.
    fn run(&self) -> Command {
        let mut c = self.cmd();
        c.args(["run", "--runtime", "berth", "--network", "none"]);
        c
    }

    fn remove_everything(&self) {
        let list = run_cmd(
            self.cmd().args(["ps", "--all", "--quiet", "--no-trunc"]),
            TEARDOWN_TIMEOUT,
        );
        let ids: Vec<&str> = list.stdout.split_whitespace().collect();
        if !ids.is_empty() {
            run_cmd(
                self.cmd().args(["rm", "--force"]).args(&ids),
                TEARDOWN_TIMEOUT,
            );
        }
    }
}

#[test]
fn docker() {
    let _serial = serial();
    require_root();
    require_tools(&[
        "docker",
        "dockerd",
        "containerd",
        "containerd-shim-runc-v2",
        "ctr",
        "tar",
        "sha256sum",
    ]);
    let runtime = runtime_under_test();
    let mut h = Harness::new("docker");
    let image = build_image(&h);
    let volume = make_volume(&h);
    // Our own containerd: left alone, dockerd would use a system containerd
    // at /run/containerd/containerd.sock if one answers there.
    let containerd = start_containerd(&mut h, "containerd");
    let data_root = h.mkdir("docker/data");
    let exec_root = h.mkdir("docker/exec");
    let socket = h.path("docker/docker.sock");
    // The config file keeps dockerd away from /etc/docker/daemon.json. Before
    // 23.0, dockerd also writes an identity key to /etc/docker/key.json unless
    // told otherwise; later versions reject that (removed) option.
    let daemon_json = if dockerd_major_version().is_some_and(|v| v < 23) {
        serde_json::json!({ "deprecated-key-path": h.path("docker/key.json") })
    } else {
        serde_json::json!({})
    };
    let daemon_json_path = h.write("docker/daemon.json", &daemon_json.to_string());
    let mut cmd = Command::new("dockerd");
    cmd.arg("--config-file")
        .arg(&daemon_json_path)
        .arg("--data-root")
        .arg(&data_root)
        .arg("--exec-root")
        .arg(&exec_root)
        .arg("--pidfile")
        .arg(h.path("docker/docker.pid"))
        .arg("--host")
        .arg(format!("unix://{}", socket.display()))
        .arg("--containerd")
        .arg(&containerd.socket)
        .args(["--containerd-namespace", "moby"])
        .args([
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--bridge=none",
        ])
        .args([
            "--exec-opt",
            "native.cgroupdriver=cgroupfs",
            "--cgroup-parent",
            &h.cgroup(None),
        ])
        .args([
            "--storage-driver",
            if h.on_overlayfs() { "vfs" } else { "overlay2" },
        ])
        .arg("--add-runtime")
        .arg(format!("berth={}", runtime.display()));
    h.spawn_daemon("dockerd", cmd);
    let docker = Docker {
        host: format!("unix://{}", socket.display()),
        config_dir: h.mkdir("docker/client"),
    };
    let probe = docker.clone();
    h.wait_daemon_ready("dockerd", move || {
        run_quietly(probe.cmd().arg("version"), PROBE_TIMEOUT).success()
    });
    let teardown = docker.clone();
    h.on_teardown("docker rm --force (all)", move || {
        teardown.remove_everything()
    });

    run_ok(
        docker
            .cmd()
            .args(["load", "--quiet", "--input"])
            .arg(&image.archive),
    );

    // dockerd registered the runtime under test as "berth".
    let runtimes = run_ok(
        docker
            .cmd()
            .args(["info", "--format", "{{json .Runtimes}}"]),
    );
    let runtimes: Value =
        serde_json::from_str(runtimes.stdout.trim()).expect("docker info .Runtimes is JSON");
    assert_eq!(
        runtimes["berth"]["path"].as_str(),
        Some(&*runtime.to_string_lossy()),
        "docker info must list runtime berth with the path under test: {runtimes}"
    );

    let out = run_cmd(
        docker
            .run()
            .args([
                "--rm",
                "--hostname",
                HOSTNAME,
                "--memory",
                "64m",
                "--pids-limit",
                &PIDS_LIMIT.to_string(),
            ])
            .arg("--volume")
            .arg(format!("{}:/data:ro", volume.display()))
            .args([IMAGE, "sh", "-c", PROBE_SCRIPT]),
        CMD_TIMEOUT,
    );
    let all = Expect {
        hostname: true,
        data: true,
        memory: true,
        pids: true,
        ..Expect::default()
    };
    check_probe("docker", "hostname/volume/limits", &out, all, &volume);

    let out = run_cmd(
        docker.run().args([
            "--rm",
            "--user",
            "1000:1000",
            IMAGE,
            "sh",
            "-c",
            PROBE_SCRIPT,
        ]),
        CMD_TIMEOUT,
    );
    check_probe(
        "docker",
        "--user 1000:1000",
        &out,
        Expect {
            user: true,
            ..Expect::default()
        },
        &volume,
    );

    let out = run_cmd(
        docker.run().args(["--rm", IMAGE, "sh", "-c", "exit 7"]),
        CMD_TIMEOUT,
    );
    check_exit_code("docker", &out);

    // A detached container: docker, the containerd shim and the runtime
    // itself all agree that the runtime under test runs it.
    let id = run_ok(docker.run().args(["--detach", IMAGE, "sleep", "600"]))
        .stdout
        .trim()
        .to_string();
    let inspect = run_ok(docker.cmd().args([
        "inspect",
        "--format",
        "{{.HostConfig.Runtime}}|{{.State.Pid}}",
        &id,
    ]));
    let (name, pid) = inspect.stdout.trim().split_once('|').expect("runtime|pid");
    assert_eq!(name, "berth", "docker inspect .HostConfig.Runtime");
    let pid: i64 = pid.parse().expect("container pid");
    let options = shim_runtime_options(&containerd.state, "moby", &id);
    assert_eq!(
        options["binary_name"].as_str(),
        Some(&*runtime.to_string_lossy()),
        "shim options: {options}"
    );
    let runtime_root = options["root"].as_str().map(|r| Path::new(r).join("moby"));
    assert_runtime_runs("docker", &runtime, runtime_root.as_deref(), &id, Some(pid));
    check_exec(
        "docker",
        docker.cmd().args(["exec", "--user", "1000", &id]),
        |c| {
            c.args(["exec", &id]);
        },
        || docker.cmd(),
    );
    run_ok(docker.cmd().args(["rm", "--force", &id]));
    assert_runtime_forgot("docker", &runtime, runtime_root.as_deref(), &id);
    let left = run_ok(docker.cmd().args(["ps", "--all", "--quiet"]));
    assert!(
        left.stdout.trim().is_empty(),
        "docker still lists containers: {}",
        left.stdout
    );

    h.finish();
}
