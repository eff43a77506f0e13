//! Rootless mode: berth run by a real unprivileged user, created by the test, with a bundle
//! that `berth spec --rootless` wrote as that user.
//!
//! The user `berth-rootless` gets a home-less account and the subordinate id ranges
//! 300000-365535 in /etc/subuid and /etc/subgid, for the newuidmap/newgidmap tests.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::common::*;

const USER: &str = "berth-rootless";
const SUB_START: u32 = 300000;

/// (uid, gid) of the test user, created once per test process.
fn user() -> (u32, u32) {
    static USER_IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *USER_IDS.get_or_init(|| {
        let lookup = || {
            let out = Command::new("id").args(["-u", USER]).output().ok()?;
            let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
            let out = Command::new("id").args(["-g", USER]).output().ok()?;
            let gid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
            Some((uid, gid))
        };
        if lookup().is_none() {
            let st = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/bin/false",
                    USER,
                ])
                .status()
                .expect("run useradd");
            assert!(st.success() || lookup().is_some(), "useradd {USER} failed");
        }
        for file in ["/etc/subuid", "/etc/subgid"] {
            let text = fs::read_to_string(file).unwrap_or_default();
            if !text.lines().any(|l| l.starts_with(&format!("{USER}:"))) {
                let mut t = text;
                if !t.is_empty() && !t.ends_with('\n') {
                    t.push('\n');
                }
                t.push_str(&format!("{USER}:{SUB_START}:65536\n"));
                fs::write(file, t).unwrap();
            }
        }
        lookup().expect("the test user exists")
    })
}

/// The berth binary, copied where any user may run it.
fn berth_copy() -> &'static Path {
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("rootless-bin-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let p = dir.join("berth");
        // Copied by a child process: a writable fd to the copy opened here could be
        // inherited by a child another test thread forks at that moment, and exec of the
        // copy would then fail with ETXTBSY until that child execs.
        let st = Command::new("install")
            .args(["-m", "0755"])
            .arg(berth_bin())
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success(), "install berth into {}", dir.display());
        p
    })
}

/// A state root and a bundle owned by the test user; the config is what
/// `berth spec --rootless` writes as that user, then `edit`ed.
struct RootlessBundle {
    dir: tempfile::TempDir,
}

impl RootlessBundle {
    fn new(edit: impl FnOnce(&mut Value)) -> RootlessBundle {
        let (uid, gid) = user();
        let dir = tempfile::Builder::new()
            .prefix("berth-rootless-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let st = Command::new("cp")
            .arg("-a")
            .arg(rootfs())
            .arg(dir.path().join("rootfs"))
            .status()
            .unwrap();
        assert!(st.success(), "copy the rootfs");
        let st = Command::new("chown")
            .args(["-R", &format!("{uid}:{gid}")])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "chown the bundle");
        let b = RootlessBundle { dir };
        b.berth(&[
            "spec",
            "--rootless",
            "--bundle",
            b.bundle().to_str().unwrap(),
        ])
        .assert_ok("spec --rootless as the user");
        let mut config: Value =
            serde_json::from_str(&fs::read_to_string(b.bundle().join("config.json")).unwrap())
                .unwrap();
        config["process"]["terminal"] = json!(false);
        edit(&mut config);
        fs::write(b.bundle().join("config.json"), config.to_string()).unwrap();
        b
    }

    fn bundle(&self) -> &Path {
        self.dir.path()
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// berth with `args`, run as the test user with its own --root. Output goes to files,
    /// not pipes: a created container keeps its stdio open.
    fn berth(&self, args: &[&str]) -> Output {
        use std::io::{Read, Seek};
        let (uid, gid) = user();
        let mut out = tempfile::tempfile().unwrap();
        let mut err = tempfile::tempfile().unwrap();
        let mut child = Command::new(berth_copy())
            .arg("--root")
            .arg(self.root())
            .args(args)
            .current_dir(self.bundle())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(err.try_clone().unwrap())
            .spawn()
            .expect("run berth as the test user");
        let cmdline = format!("(as {USER}) berth {}", args.join(" "));
        let status = wait_bounded(&mut child, COMMAND_LIMIT)
            .unwrap_or_else(|| panic!("`{cmdline}` did not finish in time"));
        let read = |f: &mut std::fs::File| {
            let mut s = String::new();
            f.rewind().unwrap();
            f.read_to_string(&mut s).unwrap();
            s
        };
        Output {
            status,
            stdout: read(&mut out),
            stderr: read(&mut err),
            cmdline,
        }
    }

    fn run(&self, id: &str) -> Output {
        let bundle = self.bundle().to_str().unwrap().to_string();
        self.berth(&["run", "--bundle", &bundle, id])
    }
}

fn args(script: &str) -> impl FnOnce(&mut Value) + '_ {
    move |c| c["process"]["args"] = json!(["sh", "-c", script])
}

#[test]
fn rootless_run_maps_the_user_to_root_without_a_cgroup() {
    let (uid, _) = user();
    let b = RootlessBundle::new(args("id -u; cat /proc/self/uid_map; echo pid=$$; hostname"));
    let id = unique_id("rootless");

    let out = b.run(&id);

    out.assert_ok("rootless run");
    let lines: Vec<String> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        ["0", &format!("0 {uid} 1"), "pid=1", "berth"],
        "{}",
        out.stderr
    );
    assert!(
        find_cgroup_dirs(&id).is_empty(),
        "a rootless container without delegation has no cgroup"
    );
    assert!(!b.root().join(&id).exists(), "run left the state directory");
    assert_eq!(
        fs::metadata(b.root()).unwrap().uid(),
        uid,
        "the state root is the user's"
    );
}

#[test]
fn rootless_exit_status_passes_through() {
    let b = RootlessBundle::new(args("exit 3"));

    let out = b.run(&unique_id("rlexit"));

    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
}

#[test]
fn rootless_lifecycle_and_exec() {
    let b = RootlessBundle::new(args("echo started; exec sleep 1000"));
    let id = unique_id("rllife");
    let bundle = b.bundle().to_str().unwrap().to_string();

    b.berth(&["create", "--bundle", &bundle, &id])
        .assert_ok("create");
    let st: Value = serde_json::from_str(&b.berth(&["state", &id]).stdout).unwrap();
    assert_eq!(st["status"], "created");
    b.berth(&["start", &id]).assert_ok("start");
    let exec = b.berth(&["exec", &id, "sh", "-c", "id -u; cat /proc/1/cmdline"]);
    exec.assert_ok("exec");
    assert!(exec.stdout.starts_with("0\nsleep"), "{}", exec.stdout);
    b.berth(&["kill", &id, "KILL"]).assert_ok("kill");
    let deadline = std::time::Instant::now() + WAIT_LIMIT;
    loop {
        let st: Value = serde_json::from_str(&b.berth(&["state", &id]).stdout).unwrap();
        if st["status"] == "stopped" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never stopped: {st}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    b.berth(&["delete", &id]).assert_ok("delete");
    assert!(!b.root().join(&id).exists());
}

#[test]
fn rootless_id_ranges_go_through_newuidmap_and_newgidmap() {
    let (uid, gid) = user();
    let b = RootlessBundle::new(|c| {
        args("cat /proc/self/uid_map /proc/self/gid_map; touch /tmp/f && chown 1000:1000 /tmp/f && stat -c %u:%g /tmp/f")(c);
        c["linux"]["uidMappings"] = json!([
            {"containerID": 0, "hostID": uid, "size": 1},
            {"containerID": 1, "hostID": SUB_START, "size": 65536}
        ]);
        c["linux"]["gidMappings"] = json!([
            {"containerID": 0, "hostID": gid, "size": 1},
            {"containerID": 1, "hostID": SUB_START, "size": 65536}
        ]);
        c["root"]["readonly"] = json!(false);
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set] = json!(["CAP_CHOWN", "CAP_DAC_OVERRIDE"]);
        }
    });

    let out = b.run(&unique_id("rlrange"));

    out.assert_ok("rootless run with id ranges");
    let lines: Vec<String> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let want_uid = [format!("0 {uid} 1"), format!("1 {SUB_START} 65536")];
    let want_gid = [format!("0 {gid} 1"), format!("1 {SUB_START} 65536")];
    assert_eq!(lines[..2], want_uid, "{}", out.stdout);
    assert_eq!(lines[2..4], want_gid, "{}", out.stdout);
    assert_eq!(lines[4], "1000:1000");
    let meta = fs::metadata(b.bundle().join("rootfs/tmp/f")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (SUB_START + 999, SUB_START + 999),
        "container id 1000 is host id {}",
        SUB_START + 999
    );
}

#[test]
fn rootless_ranges_outside_subuid_are_refused() {
    let (uid, _) = user();
    let b = RootlessBundle::new(|c| {
        c["linux"]["uidMappings"] = json!([
            {"containerID": 0, "hostID": uid, "size": 1},
            {"containerID": 1, "hostID": 1, "size": 1000}
        ]);
    });
    let id = unique_id("rlbadrange");

    let out = b.run(&id);

    out.assert_error("rootless run with a range not in /etc/subuid")
        .assert_stderr_has("run", &[&id, "newuidmap", "/etc/subuid"]);
    assert!(!b.root().join(&id).exists(), "state left behind");
}

#[test]
fn rootless_limits_without_a_delegated_cgroup_are_refused() {
    let b = RootlessBundle::new(|c| {
        c["linux"]["resources"] = json!({"memory": {"limit": 67108864}});
    });
    let id = unique_id("rllimit");

    let out = b.run(&id);

    out.assert_error("rootless run with a memory limit")
        .assert_stderr_has(
            "run",
            &[
                &id,
                "linux.resources",
                "rootless",
                "cannot create the cgroup",
            ],
        );
    assert!(!b.root().join(&id).exists(), "state left behind");
    assert!(find_cgroup_dirs(&id).is_empty());
}

#[test]
fn rootless_default_root_is_under_xdg_runtime_dir() {
    let (uid, gid) = user();
    let runtime_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(runtime_dir.path(), Some(uid), Some(gid)).unwrap();
    let run = |env: Option<&Path>| {
        let mut c = Command::new(berth_copy());
        c.arg("list")
            .env_clear()
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null());
        if let Some(d) = env {
            c.env("XDG_RUNTIME_DIR", d);
        }
        c.output().unwrap()
    };

    let out = run(Some(runtime_dir.path()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("XDG_RUNTIME_DIR") && err.contains("--root"),
        "{err}"
    );
}

/// `spec` touches no state, so it needs no state directory: as a user without
/// XDG_RUNTIME_DIR it still writes the config.
#[test]
fn spec_rootless_needs_no_state_directory() {
    let (uid, gid) = user();
    let bundle = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(bundle.path(), Some(uid), Some(gid)).unwrap();

    let out = Command::new(berth_copy())
        .args(["spec", "--rootless", "--bundle"])
        .arg(bundle.path())
        .env_clear()
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .output()
        .unwrap();

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(bundle.path().join("config.json").is_file());
}
