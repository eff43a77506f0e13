//! Helpers shared by berth's root integration tests.
//!
//! - [`rootfs`]: a busybox root filesystem, built once and shared read-only by every container.
//! - [`Bundle`]: a bundle directory whose config.json starts from `berth spec` and is edited as
//!   JSON.
//! - [`Berth`]: the binary under test with its own fresh `--root`; dropping it force-deletes
//!   every container it created and removes any cgroup berth failed to remove.
//! - [`set_namespace`], [`remove_namespace`], [`add_mount`]: common config.json edits.
//! - [`Output`]: status, stdout and stderr of one berth command.
//! - [`assert_no_leftovers`], [`find_cgroup_dirs`], [`expected_cgroup_dir`],
//!   [`cgroup_procs`], [`processes_mentioning`], [`pid_alive`]: what a container leaves on
//!   the host.
//! - [`wait_for`], [`wait_bounded`]: bounded waits; [`skip`]: report a skipped test.
//!
//! Every wait is bounded: a berth command that hangs is killed and the test fails.
//! Not every test file uses every helper, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::hash_map::DefaultHasher;
use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long one berth command may take before the test fails (debug build, 2 busy cores).
pub const COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// How long a container may take to reach a status or print an expected line.
pub const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// The busybox applets linked into the test rootfs.
const APPLETS: &[&str] = &[
    "sh", "true", "false", "cat", "echo", "id", "hostname", "ls", "stat", "sleep", "uname",
    "readlink", "grep", "mount", "touch", "mkdir", "wc", "head", "env", "pwd", "test", "printf",
    "tty", "kill", "rm", "sed", "tr", "cut", "ionice", "ip", "nproc", "taskset", "ln",
];
/// Directories of the test rootfs; some are mount points so that no test has to create one
/// in the shared rootfs.
const DIRS: &[&str] = &[
    "bin", "etc", "proc", "sys", "dev", "tmp", "root", "data", "mnt", "hooks",
];
/// A file only the test rootfs has, to tell it from the host's root.
pub const ROOTFS_MARKER: &str = "/etc/berth-test-rootfs";
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/tmp:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/:/bin/false\n";
const GROUP: &str = "root:x:0:\ntty:x:5:\nuser:x:1000:\nnogroup:x:65534:\n";

/// The path of the berth binary under test.
pub fn berth_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth"))
}

/// A unique container id: `<prefix>-<pid>-<nnnn>`. The fixed-width counter keeps one id from
/// being a substring of another, so searching the host for an id finds only that container.
pub fn unique_id(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n:04}", std::process::id())
}

/// The shared busybox rootfs, built on first use.
///
/// It lives under the target directory, named by a hash of its contents, and is built in a
/// scratch directory then renamed into place, so test processes never see half of it and a
/// run never leaves a new copy behind. Containers must not write to it: use /tmp (a tmpfs in
/// every [`Bundle`]) or a mount.
pub fn rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(build_rootfs)
}

fn build_rootfs() -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    let meta = fs::metadata(busybox).expect("the tests need busybox-static at /bin/busybox");
    let mut h = DefaultHasher::new();
    (APPLETS, DIRS, PASSWD, GROUP, ROOTFS_MARKER, meta.len()).hash(&mut h);
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = base.join(format!("berth-rootfs-{:016x}", h.finish()));
    if dir.join(".complete").exists() {
        return dir;
    }
    let tmp = base.join(format!("berth-rootfs.building-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    for d in DIRS {
        fs::create_dir_all(tmp.join(d)).expect("create rootfs dir");
    }
    // Copied by a child process: a writable fd held here could be inherited by a child
    // another test thread forks, and containers exec'ing busybox would get ETXTBSY.
    let st = std::process::Command::new("install")
        .args(["-m", "0755"])
        .arg(busybox)
        .arg(tmp.join("bin/busybox"))
        .status()
        .expect("run install");
    assert!(st.success(), "copy busybox");
    for a in APPLETS {
        symlink("busybox", tmp.join("bin").join(a)).expect("applet symlink");
    }
    fs::write(tmp.join("etc/passwd"), PASSWD).expect("passwd");
    fs::write(tmp.join("etc/group"), GROUP).expect("group");
    fs::write(
        tmp.join(ROOTFS_MARKER.trim_start_matches('/')),
        "berth-test-rootfs\n",
    )
    .expect("marker");
    fs::write(tmp.join(".complete"), "").expect("complete marker");
    // A container in a user namespace must traverse and read it as an unmapped user.
    for d in std::iter::once(tmp.clone()).chain(DIRS.iter().map(|d| tmp.join(d))) {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod rootfs dir");
    }
    fs::set_permissions(tmp.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    if fs::rename(&tmp, &dir).is_err() {
        // Another test process finished first; use its copy.
        let _ = fs::remove_dir_all(&tmp);
        assert!(
            dir.join(".complete").exists(),
            "rootfs {} is incomplete",
            dir.display()
        );
    }
    dir
}

/// The config.json that `berth spec` writes, generated once per test process.
pub fn default_spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let berth = Berth::new();
        berth
            .cmd(&["spec", "--bundle", dir.path().to_str().expect("utf-8 path")])
            .assert_ok("berth spec");
        let text = fs::read_to_string(dir.path().join("config.json"))
            .expect("berth spec wrote config.json");
        serde_json::from_str(&text).expect("berth spec wrote valid JSON")
    })
}

/// A bundle directory holding a config.json. Every builder call rewrites config.json.
///
/// `Bundle::new()` takes `berth spec`'s output and changes only what a test container needs:
/// `process.terminal` false, `process.args` `["true"]`, `root.path` the absolute path of
/// [`rootfs`], `root.readonly` false, and a tmpfs at /tmp so containers never write to the
/// shared rootfs. The directory is mode 0755 so that a container in a user namespace can reach
/// bind sources inside it.
pub struct Bundle {
    dir: tempfile::TempDir,
    config: Value,
}

impl Default for Bundle {
    fn default() -> Self {
        Self::new()
    }
}

impl Bundle {
    pub fn new() -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("berth-bundle-")
            .tempdir()
            .expect("bundle tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod bundle");
        let mut config = default_spec().clone();
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(["true"]);
        config["root"] = json!({"path": rootfs(), "readonly": false});
        config["mounts"]
            .as_array_mut()
            .expect("spec has mounts")
            .push(
                json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                         "options": ["nosuid", "nodev", "mode=1777"]}),
            );
        let b = Bundle { dir, config };
        b.save();
        b
    }

    /// Sets `process.args`.
    pub fn args(mut self, args: &[&str]) -> Bundle {
        self.config["process"]["args"] = json!(args);
        self.save();
        self
    }

    /// Sets `process.args` to `["sh", "-c", script]`.
    pub fn sh(self, script: &str) -> Bundle {
        self.args(&["sh", "-c", script])
    }

    /// Edits config.json as JSON.
    pub fn edit(mut self, f: impl FnOnce(&mut Value)) -> Bundle {
        f(&mut self.config);
        self.save();
        self
    }

    /// Replaces config.json with `text`, which need not be valid.
    pub fn write_raw(&self, text: &str) {
        fs::write(self.config_path(), text).expect("write config.json");
    }

    /// The bundle directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The config as last written.
    pub fn config(&self) -> &Value {
        &self.config
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("config.json")
    }

    /// A new directory inside the bundle with the given mode, e.g. a bind-mount source.
    pub fn subdir(&self, name: &str, mode: u32) -> PathBuf {
        let p = self.path().join(name);
        fs::create_dir(&p).expect("create bundle subdir");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod bundle subdir");
        p
    }

    fn save(&self) {
        let text = serde_json::to_string_pretty(&self.config).expect("config serializes");
        fs::write(self.config_path(), text).expect("write config.json");
    }
}

/// Adds a namespace entry (`{"type": ty}` or with a path), replacing any of the same type.
pub fn set_namespace(config: &mut Value, ty: &str, path: Option<&str>) {
    remove_namespace(config, ty);
    let mut ns = json!({"type": ty});
    if let Some(p) = path {
        ns["path"] = json!(p);
    }
    config["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(ns);
}

/// Removes the namespace entry of type `ty`.
pub fn remove_namespace(config: &mut Value, ty: &str) {
    config["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .retain(|n| n["type"] != ty);
}

/// Adds a mount entry.
pub fn add_mount(config: &mut Value, mount: Value) {
    config["mounts"].as_array_mut().expect("mounts").push(mount);
}

/// Exit status and output of one berth command.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The command line, for failure messages.
    pub cmdline: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics, naming `what` and showing stderr, unless the command succeeded.
    pub fn assert_ok(&self, what: &str) -> &Output {
        assert!(
            self.success(),
            "{what}: `{}` failed with {}\nstdout: {}\nstderr: {}",
            self.cmdline,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the command failed as berth reports errors: exit status 1 and one line
    /// on stderr.
    pub fn assert_error(&self, what: &str) -> &Output {
        self.assert_error_status(what, 1)
    }

    /// As [`Output::assert_error`] for `exec`, which fails with 255 as runc's does, its
    /// line starting "exec failed".
    pub fn assert_exec_error(&self, what: &str) -> &Output {
        self.assert_error_status(what, 255)
            .assert_stderr_has(what, &["exec failed: "])
    }

    fn assert_error_status(&self, what: &str, code: i32) -> &Output {
        assert_eq!(
            self.status.code(),
            Some(code),
            "{what}: `{}` should fail with exit status {code}, got {}\nstdout: {}\nstderr: {}",
            self.cmdline,
            self.status,
            self.stdout,
            self.stderr
        );
        assert_eq!(
            self.stderr.trim_end().lines().count(),
            1,
            "{what}: the error should be one line on stderr, got:\n{}",
            self.stderr
        );
        self
    }

    /// Panics unless stderr contains every needle.
    pub fn assert_stderr_has(&self, what: &str, needles: &[&str]) -> &Output {
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "{what}: stderr of `{}` should contain {n:?}, got: {}",
                self.cmdline,
                self.stderr
            );
        }
        self
    }
}

/// Output of a container run to completion by [`Berth::run_to_exit`].
#[derive(Debug)]
pub struct Finished {
    pub stdout: String,
    pub stderr: String,
}

/// The berth binary with its own fresh `--root`. Dropping it force-deletes every container
/// under that root, then kills and removes any cgroup still named for one of them.
pub struct Berth {
    dir: tempfile::TempDir,
}

impl Default for Berth {
    fn default() -> Self {
        Self::new()
    }
}

impl Berth {
    pub fn new() -> Berth {
        // 0711: a container in a user namespace opens the exec fifo below the root by path.
        let dir = tempfile::Builder::new()
            .prefix("berth-root-")
            .tempdir()
            .expect("root tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).expect("chmod root");
        fs::create_dir(dir.path().join("io")).expect("io dir");
        Berth { dir }
    }

    /// The `--root` directory (berth creates it on first use).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A `berth --root <root>` command with stdin from /dev/null, for callers that need to
    /// spawn it themselves.
    pub fn command(&self) -> Command {
        let mut c = Command::new(berth_bin());
        c.arg("--root").arg(self.root()).stdin(Stdio::null());
        c
    }

    /// Runs `berth --root <root> ARGS...` and waits at most [`COMMAND_LIMIT`].
    pub fn cmd(&self, args: &[&str]) -> Output {
        let out = tempfile::tempfile().expect("stdout file");
        let err = tempfile::tempfile().expect("stderr file");
        self.run_with(args, out, err, 0, 0)
    }

    /// `create --bundle BUNDLE EXTRA... ID`. The container's stdout and stderr go to files
    /// that [`Berth::container_stdout`] and [`Berth::container_stderr`] read.
    pub fn create(&self, id: &str, bundle: &Path, extra: &[&str]) -> Output {
        self.with_container_io("create", id, bundle, extra)
    }

    /// Foreground `run --bundle BUNDLE EXTRA... ID`; the container's output is the command's.
    pub fn run(&self, id: &str, bundle: &Path, extra: &[&str]) -> Output {
        self.with_container_io("run", id, bundle, extra)
    }

    fn with_container_io(&self, verb: &str, id: &str, bundle: &Path, extra: &[&str]) -> Output {
        let (out, out_at) = self.io_file(id, "out");
        let (err, err_at) = self.io_file(id, "err");
        let bundle = bundle.to_str().expect("utf-8 bundle path");
        let mut args = vec![verb, "--bundle", bundle];
        args.extend_from_slice(extra);
        args.push(id);
        self.run_with(&args, out, err, out_at, err_at)
    }

    fn io_path(&self, id: &str, kind: &str) -> PathBuf {
        self.dir
            .path()
            .join("io")
            .join(format!("{}.{kind}", id.replace('/', "_")))
    }

    fn io_file(&self, id: &str, kind: &str) -> (File, u64) {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(self.io_path(id, kind))
            .expect("container io file");
        let at = f.metadata().expect("stat io file").len();
        (f, at)
    }

    fn run_with(&self, args: &[&str], out: File, err: File, out_at: u64, err_at: u64) -> Output {
        let cmdline = format!("berth --root {} {}", self.root().display(), args.join(" "));
        let mut out_r = out.try_clone().expect("dup stdout file");
        let mut err_r = err.try_clone().expect("dup stderr file");
        let mut child = self
            .command()
            .args(args)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn berth");
        let status = wait_bounded(&mut child, COMMAND_LIMIT)
            .unwrap_or_else(|| panic!("`{cmdline}` did not finish within {COMMAND_LIMIT:?}"));
        Output {
            status,
            stdout: read_from(&mut out_r, out_at),
            stderr: read_from(&mut err_r, err_at),
            cmdline,
        }
    }

    /// Everything the container `id` (and its create/run command) wrote to stdout so far.
    pub fn container_stdout(&self, id: &str) -> String {
        fs::read_to_string(self.io_path(id, "out")).unwrap_or_default()
    }

    /// Everything the container `id` (and its create/run command) wrote to stderr so far.
    pub fn container_stderr(&self, id: &str) -> String {
        fs::read_to_string(self.io_path(id, "err")).unwrap_or_default()
    }

    /// Waits until the container's stdout contains `needle`; returns the stdout.
    pub fn wait_stdout(&self, id: &str, needle: &str) -> String {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let s = self.container_stdout(id);
            if s.contains(needle) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} did not print {needle:?} within {WAIT_LIMIT:?}; stdout: {s:?}, stderr: {:?}",
                self.container_stderr(id)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `berth state ID`, parsed; panics if it fails.
    pub fn state(&self, id: &str) -> Value {
        let out = self.cmd(&["state", id]);
        out.assert_ok("state");
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("state is not JSON ({e}): {}", out.stdout))
    }

    /// The init's host pid from `berth state`.
    pub fn pid(&self, id: &str) -> i32 {
        let st = self.state(id);
        st["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("state has no pid: {st}")) as i32
    }

    /// Waits until `berth state` reports `status`; returns that state.
    pub fn wait_status(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let st = self.state(id);
            if st["status"] == status {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} did not become {status} within {WAIT_LIMIT:?}; last state {st}\nstdout: {:?}\nstderr: {:?}",
                self.container_stdout(id),
                self.container_stderr(id)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// create, start, wait until stopped, delete; returns what the container printed.
    /// Panics if any step fails.
    pub fn run_to_exit(&self, bundle: &Bundle) -> Finished {
        let id = unique_id("run");
        self.create(&id, bundle.path(), &[]).assert_ok("create");
        self.cmd(&["start", &id]).assert_ok("start");
        self.wait_status(&id, "stopped");
        self.cmd(&["delete", &id]).assert_ok("delete");
        Finished {
            stdout: self.container_stdout(&id),
            stderr: self.container_stderr(&id),
        }
    }

    /// create and start a container, then wait until its stdout contains `ready`.
    pub fn start_and_wait(&self, id: &str, bundle: &Bundle, ready: &str) {
        self.create(id, bundle.path(), &[]).assert_ok("create");
        self.cmd(&["start", id]).assert_ok("start");
        self.wait_stdout(id, ready);
    }

    /// The ids that have a state directory under the root.
    fn ids(&self) -> Vec<String> {
        fs::read_dir(self.root())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let mut ids = self.ids();
        // Ids of containers whose io files exist were at least attempted.
        if let Ok(rd) = fs::read_dir(self.dir.path().join("io")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(".out") {
                    if !ids.iter().any(|i| i == id) {
                        ids.push(id.to_string());
                    }
                }
            }
        }
        for id in &ids {
            if self.root().join(id).exists() {
                if let Ok(mut child) = self
                    .command()
                    .args(["delete", "--force", id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                {
                    if wait_bounded(&mut child, COMMAND_LIMIT).is_none() {
                        eprintln!("cleanup: `berth delete --force {id}` hung");
                    }
                }
            }
            // Whatever berth failed to remove: kill what is in the cgroups, then remove them.
            for dir in find_cgroup_dirs(id) {
                remove_cgroup_tree(&dir);
            }
        }
    }
}

/// Kills every process in a cgroup directory and its children, then removes them.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = fs::write(dir.join("freezer.state"), "THAWED");
    for _ in 0..100 {
        let pids: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for p in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = fs::remove_dir(dir);
}

fn read_from(f: &mut File, at: u64) -> String {
    let mut s = String::new();
    f.seek(SeekFrom::Start(at)).expect("seek output file");
    f.read_to_string(&mut s).expect("read output file");
    s
}

/// Waits for `child` at most `limit`; on timeout kills it and returns `None`.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `f` until it returns `Some`, for at most [`WAIT_LIMIT`]; panics naming `what`.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT_LIMIT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The cgroup hierarchies mounted under /sys/fs/cgroup, by directory name ("memory",
/// "systemd", "unified", ...).
pub fn cgroup_hierarchies() -> Vec<String> {
    let mi = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let mut out: Vec<String> = mi
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            let mp = pre.split_whitespace().nth(4)?;
            let name = mp.strip_prefix("/sys/fs/cgroup/")?;
            (matches!(fstype, "cgroup" | "cgroup2") && !name.contains('/'))
                .then(|| name.to_string())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Where a container's cgroup named `name` belongs in hierarchy `hierarchy` when the spec
/// gives no cgroupsPath: `name` under the caller's own cgroup (from /proc/self/cgroup).
pub fn expected_cgroup_dir(hierarchy: &str, name: &str) -> PathBuf {
    let own = fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    let rel = own
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            let hit = if hierarchy == "unified" {
                ctrls.is_empty()
            } else {
                ctrls
                    .split(',')
                    .any(|c| c == hierarchy || c == format!("name={hierarchy}"))
            };
            hit.then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("no {hierarchy} line in /proc/self/cgroup:\n{own}"));
    Path::new("/sys/fs/cgroup")
        .join(hierarchy)
        .join(rel.trim_start_matches('/'))
        .join(name)
}

/// Every directory named `name` in any cgroup hierarchy under /sys/fs/cgroup.
pub fn find_cgroup_dirs(name: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let p = e.path();
            if e.file_name() == name {
                out.push(p.clone());
            }
            walk(&p, name, out);
        }
    }
    let mut out = Vec::new();
    for h in cgroup_hierarchies() {
        walk(&Path::new("/sys/fs/cgroup").join(h), name, &mut out);
    }
    out
}

/// The pids listed in a cgroup directory's cgroup.procs.
pub fn cgroup_procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Live processes (pid, command line) whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains(needle) {
            out.push((pid, cmd));
        }
    }
    out
}

/// True while `pid` is a live, non-zombie process.
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Asserts that container `id` of bundle `bundle` left nothing on the host: no state
/// directory under the root, no cgroup directory named `id` in any hierarchy, no process
/// whose command line names the id or the bundle, and no mount mentioning the bundle.
pub fn assert_no_leftovers(berth: &Berth, id: &str, bundle: &Path) {
    let mut problems = Vec::new();
    let state_dir = berth.root().join(id);
    if state_dir.exists() {
        problems.push(format!("state directory {} exists", state_dir.display()));
    }
    let leaf = Path::new(id)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for d in find_cgroup_dirs(&leaf) {
        problems.push(format!("cgroup {} exists", d.display()));
    }
    let mut bundle_names = vec![bundle.to_string_lossy().into_owned()];
    if let Ok(c) = fs::canonicalize(bundle) {
        bundle_names.push(c.to_string_lossy().into_owned());
    }
    for (pid, cmd) in processes_mentioning(id) {
        problems.push(format!("process {pid} names the id: {cmd}"));
    }
    for b in &bundle_names {
        for (pid, cmd) in processes_mentioning(b) {
            problems.push(format!("process {pid} names the bundle: {cmd}"));
        }
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    for l in mountinfo.lines() {
        if bundle_names.iter().any(|b| l.contains(b.as_str())) {
            problems.push(format!("mount left: {l}"));
        }
    }
    assert!(
        problems.is_empty(),
        "container {id} left things behind:\n{}",
        problems.join("\n")
    );
}

/// Reports a skipped test with its reason, then the caller returns (berth-testkit says how
/// and when a test may skip).
pub use berth_testkit::skip;

/// A tmpfs mounted on the host below a bind source; unmounted on drop.
pub struct HostSubmount(pub PathBuf);

impl HostSubmount {
    pub fn new(src: &Path) -> HostSubmount {
        use nix::mount::{mount, MsFlags};
        let sub = src.join("sub");
        fs::create_dir(&sub).unwrap();
        mount(
            Some("tmpfs"),
            &sub,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap();
        let m = HostSubmount(sub);
        fs::write(m.0.join("in-submount"), "submount-file").unwrap();
        m
    }
}

impl Drop for HostSubmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A new user namespace mapping container ids 0-65535 to host ids 100000-165535.
pub fn with_user_namespace(v: &mut Value) {
    set_namespace(v, "user", None);
    v["linux"]["uidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    v["linux"]["gidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
}
