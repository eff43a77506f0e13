//! berth-shim driven as berthd drives it: spawned, asked over its socket, and checked on
//! the host (its log files, exit records, pinned namespaces, processes, mounts). Root only.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_shim::protocol::EXEC_OUTPUT_LIMIT;
use berth_shim::{Client, CreateSpec, ExecSyncSpec, Reply, Request, SandboxSpec, Status};
use serde_json::{json, Value};

const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "hostname", "printf", "yes", "head", "readlink", "true",
];

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn shim_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth-shim"))
}

/// A pod under test: its directories, rootfs and shim. Dropping it shuts the shim down
/// and force-deletes what is left, so a failed test leaves nothing behind.
struct Pod {
    tmp: tempfile::TempDir,
    id: String,
    client: Client,
}

impl Pod {
    fn new(name: &str) -> Pod {
        let tmp = tempfile::Builder::new()
            .prefix("berth-shim-test-")
            .tempdir()
            .expect("tempdir");
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let rootfs = tmp.path().join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        let st = std::process::Command::new("install")
            .args(["-m", "0755", "/bin/busybox"])
            .arg(rootfs.join("bin/busybox"))
            .status()
            .expect("run install");
        assert!(st.success(), "copy busybox (the tests need busybox-static)");
        for a in APPLETS {
            symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        let id = format!("{name}-{}", std::process::id());
        let client = berth_shim::spawn(
            shim_bin(),
            &id,
            &tmp.path().join("pod"),
            &tmp.path().join("runtime"),
            None,
        )
        .expect("spawn the shim");
        Pod { tmp, id, client }
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("pod")
    }

    fn call(&self, req: Request) -> Reply {
        self.client
            .call(&req)
            .unwrap_or_else(|e| panic!("{req:?}: {e}"))
    }

    /// A bundle running `script` in the pod: it joins the namespaces the sandbox pinned.
    fn bundle(&self, name: &str, script: &str, pinned: &[&str]) -> PathBuf {
        let dir = self.tmp.path().join("bundles").join(name);
        fs::create_dir_all(&dir).unwrap();
        let mut spec = libberth::default_spec::default_spec(None);
        spec["process"]["terminal"] = json!(false);
        spec["process"]["args"] = json!(["sh", "-c", script]);
        spec["root"] = json!({"path": self.tmp.path().join("rootfs"), "readonly": true});
        spec.as_object_mut().unwrap().remove("hostname");
        let ns: Vec<Value> = ["mount", "cgroup", "network", "pid", "ipc", "uts"]
            .iter()
            .filter(|kind| **kind != "network" || pinned.contains(kind))
            .map(|kind| {
                if pinned.contains(kind) {
                    let file = if *kind == "network" { "net" } else { kind };
                    json!({"type": kind, "path": self.dir().join("ns").join(file)})
                } else {
                    json!({ "type": kind })
                }
            })
            .collect();
        spec["linux"]["namespaces"] = Value::Array(ns);
        spec["linux"]["cgroupsPath"] = json!(format!("/berth-shim-test/{}-{name}", self.id));
        fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        dir
    }

    fn create(&self, name: &str, script: &str, log: Option<&Path>) -> i32 {
        self.create_with(name, script, log, false, false)
    }

    fn create_with(
        &self,
        name: &str,
        script: &str,
        log: Option<&Path>,
        tty: bool,
        stdin: bool,
    ) -> i32 {
        let bundle = self.bundle(name, script, &["network", "pid", "ipc", "uts"]);
        if tty {
            let cfg = bundle.join("config.json");
            let mut v: Value = serde_json::from_slice(&fs::read(&cfg).unwrap()).unwrap();
            v["process"]["terminal"] = json!(true);
            fs::write(&cfg, serde_json::to_vec(&v).unwrap()).unwrap();
        }
        match self.call(Request::Create(CreateSpec {
            id: name.into(),
            bundle,
            log_path: log.map(Path::to_path_buf),
            tty,
            stdin,
            stdin_once: false,
        })) {
            Reply::Created { pid } => pid,
            other => panic!("create {name}: {other:?}"),
        }
    }

    fn state(&self, id: &str) -> berth_shim::ContainerState {
        match self.call(Request::State { id: id.into() }) {
            Reply::State(s) => s,
            other => panic!("state {id}: {other:?}"),
        }
    }

    fn wait_exited(&self, id: &str) -> berth_shim::ContainerState {
        let start = Instant::now();
        loop {
            let s = self.state(id);
            if s.status == Status::Exited {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "container {id} did not exit: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn exec(&self, id: &str, cmd: &[&str], timeout_ms: u64) -> berth_shim::ExecSyncReply {
        match self.call(Request::ExecSync(ExecSyncSpec {
            id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout_ms,
        })) {
            Reply::ExecSync(r) => r,
            other => panic!("exec {cmd:?}: {other:?}"),
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.client.call(&Request::Shutdown);
        // Anything a failed test left: force-deleted through the shim (which then exits),
        // then through a fresh runtime for what the shim no longer knew.
        if let Ok(rd) = fs::read_dir(self.tmp.path().join("runtime")) {
            for e in rd.flatten() {
                let _ = self.client.call(&Request::Delete {
                    id: e.file_name().to_string_lossy().into_owned(),
                    force: true,
                });
            }
        }
        let rt = libberth::Runtime {
            root: self.tmp.path().join("runtime"),
            systemd_cgroup: false,
            rootless: false,
        };
        if let Ok(rd) = fs::read_dir(&rt.root) {
            for e in rd.flatten() {
                let _ = rt.delete(&e.file_name().to_string_lossy(), true);
            }
        }
        pause_unpin(&self.dir());
    }
}

fn pause_unpin(dir: &Path) {
    for kind in ["ipc", "uts", "pid"] {
        let _ = nix::mount::umount2(
            dir.join("ns").join(kind).as_path(),
            nix::mount::MntFlags::MNT_DETACH,
        );
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mounts_under(p: &Path) -> Vec<String> {
    let p = p.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&p)))
        .map(str::to_string)
        .collect()
}

fn alive(pid: i32) -> bool {
    // A zombie counts as gone: the shim reaps its children.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        })
        .unwrap_or(false)
}

/// How many live processes run `cmd` with first argument `arg`.
fn processes_running(cmd: &str, arg: &str) -> usize {
    let want = format!("{cmd}\0{arg}\0");
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<i32>().is_ok())
        })
        .filter(|e| fs::read(e.path().join("cmdline")).is_ok_and(|c| c.ends_with(want.as_bytes())))
        .filter(|e| {
            let pid: i32 = e.file_name().to_str().unwrap().parse().unwrap();
            alive(pid)
        })
        .count()
}

/// The shim process: the one whose descriptors include its listening socket.
fn shim_pid(pod: &Pod) -> i32 {
    let path = pod.dir().join(berth_shim::SOCKET);
    let path = path.to_string_lossy().into_owned();
    let unix = fs::read_to_string("/proc/net/unix").unwrap();
    // The listening socket (flag __SO_ACCEPTCON); accepted ones show the same path.
    let ino = unix
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() == 8 && f[7] == path && f[3] == "00010000")
        .map(|f| f[6].to_string())
        .unwrap();
    let needle = format!("socket:[{ino}]");
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|fds| {
                    fds.flatten().any(|f| {
                        fs::read_link(f.path()).is_ok_and(|l| l.to_string_lossy() == needle)
                    })
                })
                .unwrap_or(false)
        })
        .expect("the shim process")
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

/// The CRI log lines of `path` as (stream, tag, text), timestamps checked and dropped.
fn log_lines(path: &Path) -> Vec<(String, String, String)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let ts = parts.next().unwrap();
            assert!(
                ts.len() >= 20 && ts.contains('T') && (ts.ends_with('Z') || ts.contains('+')),
                "RFC 3339 timestamp in {l:?}"
            );
            (
                parts.next().unwrap().to_string(),
                parts.next().unwrap().to_string(),
                parts.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_pod_runs_logs_execs_and_ends_clean() {
    if !is_root() {
        berth_testkit::skip("a_pod_runs_logs_execs_and_ends_clean", "needs root");
        return;
    }
    let pod = Pod::new("pod-life");
    let dir = pod.dir();

    // The sandbox: a pause in new ipc, uts and pid namespaces, pinned under DIR/ns.
    let pause = match pod.call(Request::Sandbox(SandboxSpec {
        netns: None,
        net: true,
        ipc: true,
        hostname: Some("podhost".into()),
        pid: true,
    })) {
        Reply::Sandbox { pid } => pid,
        other => panic!("sandbox: {other:?}"),
    };
    assert!(alive(pause), "the pause {pause} runs");
    for kind in ["net", "ipc", "uts", "pid"] {
        let pinned = fs::metadata(dir.join("ns").join(kind)).unwrap().ino();
        let live = fs::metadata(format!("/proc/{pause}/ns/{kind}"))
            .unwrap()
            .ino();
        assert_eq!(pinned, live, "{kind} namespace pinned");
        let host = fs::metadata(format!("/proc/self/ns/{kind}")).unwrap().ino();
        assert_ne!(pinned, host, "{kind} namespace is the pod's own");
    }
    // The pins' directory propagates their unmounting to later mount namespaces.
    let ns_dir = dir.join("ns").display().to_string();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(ns_dir.as_str()))
        .unwrap_or_else(|| panic!("{ns_dir} is a mount point"));
    assert!(line.contains(" shared:"), "{line}");
    assert!(
        matches!(pod.client.call(&Request::Sandbox(SandboxSpec::default())), Err(e) if e.to_string().contains("exists already")),
        "a second sandbox is refused"
    );

    // A container that writes both streams, an unended last line, and exits 3; its log is CRI's.
    let log = pod.tmp.path().join("logs/first.log");
    fs::create_dir_all(log.parent().unwrap()).unwrap();
    pod.create(
        "first",
        "echo hello; echo oops >&2; echo host=$(hostname) pid=$$; echo lo=$(cat /sys/class/net/lo/flags); printf partial; exit 3",
        Some(&log),
    );
    assert_eq!(pod.state("first").status, Status::Created);
    pod.call(Request::Start { id: "first".into() });
    let s = pod.wait_exited("first");
    assert_eq!(s.exit_code, 3, "{s:?}");
    assert!(!s.oom_killed);
    assert!(s.started_at > 0 && s.finished_at >= s.started_at, "{s:?}");
    let record: Value =
        serde_json::from_slice(&fs::read(dir.join("exits/first.json")).unwrap()).unwrap();
    assert_eq!(record["exit_code"], 3, "exit record {record}");
    assert_eq!(record["status"], "exited");
    wait_for("the partial line in the log", || {
        log_lines(&log).iter().any(|l| l.2 == "partial")
    });
    let lines = log_lines(&log);
    let has = |stream: &str, tag: &str, text: &str| {
        lines
            .iter()
            .any(|l| l.0 == stream && l.1 == tag && l.2 == text)
    };
    assert!(has("stdout", "F", "hello"), "{lines:?}");
    assert!(has("stderr", "F", "oops"), "{lines:?}");
    // The last line, unended at EOF, is whole (as containerd writes it).
    assert!(has("stdout", "F", "partial"), "{lines:?}");
    // The pod's uts namespace, and the pause is init of its pid namespace.
    let line = lines.iter().find(|l| l.2.starts_with("host=")).unwrap();
    assert!(line.2.starts_with("host=podhost pid="), "{line:?}");
    assert_ne!(line.2, "host=podhost pid=1", "the pause is the pod's pid 1");
    // The pod's own network namespace, its loopback up (IFF_UP | IFF_LOOPBACK).
    assert!(has("stdout", "F", "lo=0x9"), "{lines:?}");

    // Running without force cannot be deleted; an exited one can, with its record.
    let busy_log = pod.tmp.path().join("logs/busy.log");
    pod.create(
        "busy",
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
        Some(&busy_log),
    );
    pod.call(Request::Start { id: "busy".into() });
    let err = pod
        .client
        .call(&Request::Delete {
            id: "busy".into(),
            force: false,
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("busy") && err.contains("not stopped"), "{err}");
    pod.call(Request::Delete {
        id: "first".into(),
        force: false,
    });
    assert!(!dir.join("exits/first.json").exists());
    let err = pod
        .client
        .call(&Request::State { id: "first".into() })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"first\"") && err.contains("does not exist"),
        "{err}"
    );

    // The kubelet rotates the log: rename, then ask for a reopen; new lines go to the new file.
    wait_for("ticks in the log", || !log_lines(&busy_log).is_empty());
    let rotated = busy_log.with_extension("log.1");
    fs::rename(&busy_log, &rotated).unwrap();
    pod.call(Request::ReopenLog { id: "busy".into() });
    wait_for("ticks in the reopened log", || {
        log_lines(&busy_log).iter().any(|l| l.2.starts_with("tick"))
    });
    assert!(log_lines(&rotated).iter().all(|l| l.2.starts_with("tick")));

    // ExecSync: exit code and both streams; in the container's namespaces.
    let r = pod.exec(
        "busy",
        &["sh", "-c", "echo out $(hostname); echo err >&2; exit 7"],
        10_000,
    );
    assert_eq!(r.exit_code, 7);
    assert!(!r.timed_out);
    assert_eq!(b64(&r.stdout), b"out podhost\n");
    assert_eq!(b64(&r.stderr), b"err\n");
    // Past its timeout it is killed, with what it started, and the reply says so.
    let r = pod.exec("busy", &["sh", "-c", "sleep 1234 & sleep 1234"], 300);
    assert!(r.timed_out, "{r:?}");
    wait_for("the exec's children to die", || {
        processes_running("sleep", "1234") == 0
    });
    // Wait: at its deadline it answers with the state so far.
    match pod.call(Request::Wait {
        id: "busy".into(),
        timeout_ms: 100,
    }) {
        Reply::State(s) => assert_eq!(s.status, Status::Running),
        other => panic!("wait: {other:?}"),
    }
    // Output past the cap is read and dropped, not held (CVE-2022-1708).
    let r = pod.exec(
        "busy",
        &["sh", "-c", "yes | head -c 20000000; echo done >&2"],
        60_000,
    );
    assert_eq!(r.exit_code, 0);
    assert_eq!(b64(&r.stdout).len(), EXEC_OUTPUT_LIMIT);
    assert_eq!(b64(&r.stderr), b"done\n");
    let err = pod
        .client
        .call(&Request::ExecSync(ExecSyncSpec {
            id: "nosuch".into(),
            cmd: vec!["true".into()],
            timeout_ms: 0,
        }))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nosuch"), "{err}");

    // Kill: the exit is 128 + SIGKILL, recorded; a Wait under way hears of it.
    let busy_pid = pod.state("busy").pid;
    let waiter = {
        let client = pod.client.clone();
        std::thread::spawn(move || {
            client.call(&Request::Wait {
                id: "busy".into(),
                timeout_ms: 0,
            })
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    pod.call(Request::Kill {
        id: "busy".into(),
        signal: 9,
        all: false,
    });
    match waiter.join().unwrap().unwrap() {
        Reply::State(s) => assert_eq!((s.status, s.exit_code), (Status::Exited, 137)),
        other => panic!("wait: {other:?}"),
    }
    let s = pod.wait_exited("busy");
    assert_eq!(s.exit_code, 137, "{s:?}");
    assert!(!alive(busy_pid));
    let record: Value =
        serde_json::from_slice(&fs::read(dir.join("exits/busy.json")).unwrap()).unwrap();
    assert_eq!(record["exit_code"], 137);

    // Shutdown ends the pause; the shim exits once its last container is deleted.
    pod.call(Request::Shutdown);
    wait_for("the pause to end", || !alive(pause));
    assert!(dir.join(berth_shim::SOCKET).exists(), "serves until empty");
    pod.call(Request::Delete {
        id: "busy".into(),
        force: false,
    });
    wait_for("the shim to exit", || {
        !dir.join(berth_shim::SOCKET).exists()
    });
    assert!(
        mounts_under(pod.tmp.path()).is_empty(),
        "{:?}",
        mounts_under(pod.tmp.path())
    );
    assert!(!dir.join("ns").exists());
    let left: Vec<_> = fs::read_dir(pod.tmp.path().join("runtime"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "libberth state left: {left:?}");
    let shim_log = fs::read_to_string(dir.join("shim.log")).unwrap();
    assert!(shim_log.contains("done"), "{shim_log}");
}

#[test]
fn the_shim_outlives_its_caller_and_holds_no_caller_fds() {
    if !is_root() {
        berth_testkit::skip(
            "the_shim_outlives_its_caller_and_holds_no_caller_fds",
            "needs root",
        );
        return;
    }
    let pod = Pod::new("pod-detach");
    let sock = pod.dir().join(berth_shim::SOCKET);
    let shim = shim_pid(&pod);
    let stat = fs::read_to_string(format!("/proc/{shim}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let (ppid, sid): (i32, i32) = (fields[1].parse().unwrap(), fields[3].parse().unwrap());
    assert_ne!(ppid, std::process::id() as i32, "the shim is not our child");
    assert_ne!(
        sid,
        nix::unistd::getsid(None).unwrap().as_raw(),
        "its own session"
    );
    // Its stdio is /dev/null and its log; nothing else of ours.
    for fd in 0..2 {
        let l = fs::read_link(format!("/proc/{shim}/fd/{fd}")).unwrap();
        assert_eq!(l, Path::new("/dev/null"), "fd {fd}");
    }
    let l = fs::read_link(format!("/proc/{shim}/fd/2")).unwrap();
    assert_eq!(l, pod.dir().join("shim.log"));
    // A request that is not JSON gets an error, and the shim still serves.
    {
        use std::io::{BufRead, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.write_all(b"not json\n").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&s).read_line(&mut line).unwrap();
        assert!(line.contains("malformed request"), "{line}");
    }
    pod.call(Request::Shutdown);
    wait_for("the shim to exit", || !alive(shim));
}

#[test]
fn bad_arguments_and_bad_bundles_are_named() {
    if !is_root() {
        berth_testkit::skip("bad_arguments_and_bad_bundles_are_named", "needs root");
        return;
    }
    let out = std::process::Command::new(shim_bin())
        .args(["--pod", "p"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dir is required"));

    let pod = Pod::new("pod-bad");
    let bundle = pod.tmp.path().join("nobundle");
    let err = pod
        .client
        .call(&Request::Create(CreateSpec {
            id: "ghost".into(),
            bundle: bundle.clone(),
            log_path: None,
            tty: false,
            stdin: false,
            stdin_once: false,
        }))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ghost") && err.contains(&*bundle.to_string_lossy()),
        "{err}"
    );
    // A log path that cannot be opened is refused before anything is made.
    let b = pod.bundle("c", "true", &[]);
    let err = pod
        .client
        .call(&Request::Create(CreateSpec {
            id: "c".into(),
            bundle: b,
            log_path: Some(pod.tmp.path().join("no/such/dir/c.log")),
            tty: false,
            stdin: false,
            stdin_once: false,
        }))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"c\"") && err.contains("c.log"), "{err}");
    assert!(!pod.tmp.path().join("runtime/c").exists());
}

#[test]
fn sigterm_ends_the_pod_with_its_containers() {
    if !is_root() {
        berth_testkit::skip("sigterm_ends_the_pod_with_its_containers", "needs root");
        return;
    }
    let pod = Pod::new("pod-term");
    pod.call(Request::Sandbox(SandboxSpec {
        netns: None,
        net: true,
        ipc: true,
        hostname: Some("termhost".into()),
        pid: true,
    }));
    let pid = pod.create("sleeper", "exec sleep 4321", None);
    pod.call(Request::Start {
        id: "sleeper".into(),
    });
    let shim = shim_pid(&pod);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for("the shim to exit", || !alive(shim));
    assert!(!alive(pid), "the container went with it");
    let left: Vec<_> = fs::read_dir(pod.tmp.path().join("runtime"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "libberth state left: {left:?}");
    assert!(mounts_under(pod.tmp.path()).is_empty());
}

/// Reads attach frames from `s` (after `leftover`) until the shim closes the connection.
fn read_frames(mut s: &std::os::unix::net::UnixStream, leftover: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    use std::io::Read;
    let mut data = leftover;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.read_to_end(&mut data).expect("frames until the end");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut rest = data.as_slice();
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let body = &rest[5..5 + len];
        match rest[0] {
            1 => out.extend_from_slice(body),
            2 => err.extend_from_slice(body),
            other => panic!("stream {other}"),
        }
        rest = &rest[5 + len..];
    }
    assert!(rest.is_empty(), "a partial frame: {rest:?}");
    (out, err)
}

#[test]
fn interactive_exec_and_attach_pass_descriptors_and_frames() {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    if !is_root() {
        berth_testkit::skip(
            "interactive_exec_and_attach_pass_descriptors_and_frames",
            "needs root",
        );
        return;
    }
    let pod = Pod::new("pod-stream");
    pod.call(Request::Sandbox(SandboxSpec {
        netns: None,
        net: true,
        ipc: true,
        hostname: Some("streamhost".into()),
        pid: true,
    }));
    // A container that echoes its stdin, line by line, on stdout and stderr.
    pod.create_with(
        "echo",
        "while read l; do echo out:$l; echo err:$l >&2; done; echo bye",
        None,
        false,
        true,
    );
    pod.call(Request::Start { id: "echo".into() });

    // Exec without a terminal: our pipes are its stdio; the exit code comes at the end.
    let (in_r, in_w) = nix::unistd::pipe().unwrap();
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let (err_r, err_w) = nix::unistd::pipe().unwrap();
    let sess = pod
        .client
        .open(
            &Request::Exec(berth_shim::ExecSpec {
                id: "echo".into(),
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "read x; echo got:$x; echo e >&2; exit 5".into(),
                ],
                tty: false,
                stdin: true,
                stdout: true,
                stderr: true,
            }),
            &[in_r.as_fd(), out_w.as_fd(), err_w.as_fd()],
        )
        .unwrap();
    drop((in_r, out_w, err_w));
    assert!(
        matches!(sess.reply, Reply::ExecStarted { pid } if pid > 0),
        "{:?}",
        sess.reply
    );
    fs::File::from(in_w).write_all(b"hi\n").unwrap();
    let mut out = String::new();
    fs::File::from(out_r).read_to_string(&mut out).unwrap();
    let mut err = String::new();
    fs::File::from(err_r).read_to_string(&mut err).unwrap();
    assert_eq!((out.as_str(), err.as_str()), ("got:hi\n", "e\n"));
    let mut rest = String::from_utf8(sess.leftover).unwrap();
    let mut s = &sess.stream;
    s.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("\"exec_exited\"") && rest.contains("\"exit_code\":5"),
        "{rest}"
    );

    // With a terminal the master comes back; closing the connection kills the command.
    let sess = pod
        .client
        .open(
            &Request::Exec(berth_shim::ExecSpec {
                id: "echo".into(),
                cmd: vec!["sh".into(), "-c".into(), "tty; sleep 2345".into()],
                tty: true,
                stdin: true,
                stdout: true,
                stderr: false,
            }),
            &[],
        )
        .unwrap();
    assert_eq!(sess.fds.len(), 1, "the pty master");
    let mut master = fs::File::from(sess.fds.into_iter().next().unwrap());
    let mut line = [0u8; 64];
    let n = master.read(&mut line).unwrap();
    assert!(
        String::from_utf8_lossy(&line[..n]).contains("/dev/pts/"),
        "{:?}",
        &line[..n]
    );
    wait_for("the exec's sleep", || {
        processes_running("sleep", "2345") == 1
    });
    drop(sess.stream);
    wait_for("the abandoned exec to be killed", || {
        processes_running("sleep", "2345") == 0
    });
    // Too few descriptors are refused by name.
    let err = pod
        .client
        .open(
            &Request::Exec(berth_shim::ExecSpec {
                id: "echo".into(),
                cmd: vec!["true".into()],
                tty: false,
                stdin: true,
                stdout: true,
                stderr: false,
            }),
            &[],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("descriptors"), "{err}");

    // Attach: the container's stdin comes back; its output arrives as frames, both
    // streams, until it exits and the shim closes the connection.
    let att = pod
        .client
        .open(
            &Request::Attach {
                id: "echo".into(),
                stdin: true,
                stdout: true,
                stderr: true,
            },
            &[],
        )
        .unwrap();
    assert_eq!(att.reply, Reply::Attached { tty: false });
    assert_eq!(att.fds.len(), 1, "the container's stdin");
    let mut stdin = fs::File::from(att.fds.into_iter().next().unwrap());
    stdin.write_all(b"one\ntwo\n").unwrap();
    drop(stdin);
    // The shim still holds the container's stdin: end it by killing the reader instead.
    std::thread::sleep(Duration::from_millis(300));
    pod.call(Request::Kill {
        id: "echo".into(),
        signal: 9,
        all: true,
    });
    let (out, err) = read_frames(&att.stream, att.leftover);
    assert_eq!(String::from_utf8_lossy(&out), "out:one\nout:two\n");
    assert_eq!(String::from_utf8_lossy(&err), "err:one\nerr:two\n");
}
