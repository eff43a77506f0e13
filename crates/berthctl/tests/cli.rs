//! berthctl driven as a user drives it: real images, real containers, as root.
//! Hostile input (images, archives, output directories) is in `cli/hostile.rs`; one test
//! per README command not covered here is in `cli/commands.rs`.

#[path = "cli/commands.rs"]
mod commands;
#[path = "cli/hostile.rs"]
mod hostile;
#[path = "../../berth-image/tests/support/layout.rs"]
mod layout;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use layout::Layout;

struct Ctl {
    dir: tempfile::TempDir,
}

impl Ctl {
    fn new() -> Ctl {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        Ctl { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berthctl"));
        c.arg("--root")
            .arg(self.root())
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .arg("--registries-conf")
            .arg(self.dir.path().join("registries.toml"))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn out(&self, args: &[&str]) -> Output {
        let o = self.cmd(args).output().unwrap();
        eprintln!(
            "berthctl {args:?} -> {:?}\nstdout: {}\nstderr: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.out(args);
        assert!(o.status.success(), "berthctl {args:?} failed");
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs and requires failure with `code`; returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let o = self.out(args);
        assert_eq!(o.status.code(), Some(code), "berthctl {args:?}");
        String::from_utf8(o.stderr).unwrap()
    }

    /// Runs berthctl under script(1), which gives it a terminal: `args` are its arguments
    /// as a shell line. stdout is what the terminal showed.
    fn on_terminal(&self, args: &str) -> Output {
        if Command::new("script").arg("--version").output().is_err() {
            panic!("script is not installed (util-linux)");
        }
        let cmdline = format!(
            "{} --root {} --runroot {} {args}",
            env!("CARGO_BIN_EXE_berthctl"),
            self.root().display(),
            self.dir.path().join("run").display()
        );
        Command::new("script")
            .args(["-qec", &cmdline, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The config.json berthctl wrote for container `id`: what the runtime is told.
    fn bundle_config(&self, id: &str) -> serde_json::Value {
        let path = self
            .root()
            .join(format!("containers/{id}/bundle/config.json"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        // Leave nothing behind even when a test fails midway.
        if let Ok(out) = self.cmd(&["ps", "-a", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.cmd(&["rm", "-f", id]).output();
            }
        }
    }
}

fn mounts_under(p: &Path) -> Vec<String> {
    let p = p.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(4)
                .is_some_and(|m| m.starts_with(&p))
        })
        .map(str::to_string)
        .collect()
}

fn assert_clean(ctl: &Ctl) {
    assert_eq!(
        ctl.ok(&["ps", "-a", "-q"]).trim(),
        "",
        "no container is left"
    );
    assert!(
        mounts_under(ctl.dir.path()).is_empty(),
        "no mount is left: {:?}",
        mounts_under(ctl.dir.path())
    );
}

fn cgroup_gone(id: &str) -> bool {
    ["pids", "memory", "cpu,cpuacct", "unified"]
        .iter()
        .all(|c| !Path::new(&format!("/sys/fs/cgroup/{c}/berthctl/{id}")).exists())
}

const BB: &str = "berth-busybox";

#[test]
fn run_the_builtin_image() {
    let ctl = Ctl::new();
    let out = ctl.ok(&["run", "--rm", BB, "echo", "hello from berth"]);
    assert_eq!(out, "hello from berth\n");
    let images = ctl.ok(&["images"]);
    assert!(
        images.contains("localhost/berth-busybox") && images.contains("latest"),
        "{images}"
    );
    // The built-in image is made once: the same ID on a second run.
    let id1 = ctl.ok(&["images", "-q"]);
    ctl.ok(&["run", "--rm", BB, "true"]);
    assert_eq!(ctl.ok(&["images", "-q"]), id1);
    assert_clean(&ctl);
}

#[test]
fn exit_codes_pass_through_and_errors_are_125() {
    let ctl = Ctl::new();
    let o = ctl.out(&["run", "--rm", BB, "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    let e = ctl.fails(
        &["run", "--rm", "--pull", "never", "localhost/nope:1", "true"],
        125,
    );
    assert!(
        e.contains("localhost/nope:1") && e.contains("not known"),
        "{e}"
    );
    let e = ctl.fails(&["run", "--rm", "--network", "bridge", BB, "true"], 125);
    assert!(e.contains("--network") && e.contains("none or host"), "{e}");
    let e = ctl.fails(&["run", "--rm", "-v", "relative:/x", BB, "true"], 125);
    assert!(e.contains("absolute"), "{e}");
    let e = ctl.fails(&["run", "--rm", "--memory", "lots", BB, "true"], 125);
    assert!(e.contains("--memory"), "{e}");
    let e = ctl.fails(&["run", "--rm", BB, "/no/such/binary"], 125);
    assert!(e.contains("/no/such/binary"), "{e}");
    assert_clean(&ctl);
}

#[test]
fn image_config_and_flags_shape_the_process() {
    let ctl = Ctl::new();
    let envfile = ctl.dir.path().join("env");
    std::fs::write(&envfile, "# comment\nFROM_FILE=yes\n\nSHARED=file\n").unwrap();
    let out = ctl.ok(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "-e",
        "SHARED=flag",
        "--env-file",
        envfile.to_str().unwrap(),
        "-w",
        "/tmp",
        "--hostname",
        "boat",
        BB,
        "sh",
        "-c",
        "echo $A $FROM_FILE $SHARED; pwd; hostname; cat /etc/hostname; id -u",
    ]);
    assert_eq!(out, "1 yes flag\n/tmp\nboat\nboat\n0\n");
    // A user by name, from the image's /etc/passwd and /etc/group.
    let out = ctl.ok(&[
        "run",
        "--rm",
        "-u",
        "user",
        BB,
        "sh",
        "-c",
        "id -u; id -g; id -G; echo $HOME",
    ]);
    assert_eq!(out, "1000\n1000\n1000 10\n/home/user\n");
    let e = ctl.fails(&["run", "--rm", "-u", "nosuchuser", BB, "true"], 125);
    assert!(e.contains("nosuchuser") && e.contains("/etc/passwd"), "{e}");
    // --entrypoint replaces the entrypoint; the rest are its arguments.
    let out = ctl.ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/echo",
        BB,
        "via",
        "entrypoint",
    ]);
    assert_eq!(out, "via entrypoint\n");
    // Default capabilities are podman's: no CAP_SYS_ADMIN, so mount is refused.
    let o = ctl.out(&["run", "--rm", BB, "mount", "-t", "tmpfs", "t", "/mnt"]);
    assert_ne!(o.status.code(), Some(0));
    let caps = ctl.ok(&[
        "run",
        "--rm",
        BB,
        "sh",
        "-c",
        "grep CapBnd /proc/self/status",
    ]);
    assert!(caps.contains("00000000800405fb"), "{caps}");
    // The default seccomp profile refuses unshare even with a matching capability set.
    let o = ctl.out(&["run", "--rm", BB, "unshare", "-U", "true"]);
    assert_ne!(o.status.code(), Some(0));
    let o = ctl.out(&["run", "--rm", "--no-seccomp", BB, "unshare", "-U", "true"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "without the profile, unshare -U works"
    );
    assert_clean(&ctl);
}

#[test]
fn volumes_network_and_limits() {
    let ctl = Ctl::new();
    let host = ctl.dir.path().join("shared");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in"), "from host").unwrap();
    let rw = format!("{}:/data", host.display());
    let ro = format!("{}:/data:ro", host.display());
    let out = ctl.ok(&[
        "run",
        "--rm",
        "-v",
        &rw,
        BB,
        "sh",
        "-c",
        "cat /data/in; echo out > /data/out",
    ]);
    assert_eq!(out, "from host");
    assert_eq!(std::fs::read_to_string(host.join("out")).unwrap(), "out\n");
    let o = ctl.out(&[
        "run",
        "--rm",
        "-v",
        &ro,
        BB,
        "sh",
        "-c",
        "echo x > /data/nope",
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(!host.join("nope").exists());
    let links = ctl.ok(&["run", "--rm", BB, "ls", "/sys/class/net"]);
    assert_eq!(links.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    let host_links: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let links = ctl.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        BB,
        "ls",
        "/sys/class/net",
    ]);
    for l in &host_links {
        assert!(links.split_whitespace().any(|x| x == l), "{l} in {links}");
    }
    let limits = ctl.ok(&[
        "run",
        "--rm",
        "--memory",
        "64m",
        "--pids-limit",
        "50",
        "--cpus",
        "0.5",
        BB,
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max \
         /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || \
         cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max",
    ]);
    let l: Vec<&str> = limits.split_whitespace().collect();
    assert_eq!(l[0], (64u64 << 20).to_string());
    assert_eq!(l[1], "50");
    assert_eq!(l[2], "50000");
    assert_clean(&ctl);
}

/// pids.max as the container sees it (cgroup v1 or v2).
const PIDS_MAX: &str =
    "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max";

#[test]
fn a_default_pids_limit_that_the_flag_overrides() {
    let ctl = Ctl::new();
    assert_eq!(
        ctl.ok(&["run", "--rm", BB, "sh", "-c", PIDS_MAX]),
        "2048\n",
        "podman's default"
    );
    assert_eq!(
        ctl.ok(&[
            "run",
            "--rm",
            "--pids-limit",
            "77",
            BB,
            "sh",
            "-c",
            PIDS_MAX
        ]),
        "77\n"
    );
    for unlimited in ["0", "-1"] {
        assert_eq!(
            ctl.ok(&[
                "run",
                "--rm",
                "--pids-limit",
                unlimited,
                BB,
                "sh",
                "-c",
                PIDS_MAX
            ]),
            "max\n",
            "--pids-limit {unlimited} is no limit, as with podman"
        );
    }
    let e = ctl.fails(&["run", "--rm", "--pids-limit", "-2", BB, "true"], 125);
    assert!(e.contains("--pids-limit -2"), "{e}");
    assert_clean(&ctl);
}

#[test]
fn powercap_is_masked() {
    let ctl = Ctl::new();
    // The energy counters under powercap leak what other workloads do (PLATYPUS): docker
    // and podman mask the directory. Seen from inside where the host has it ...
    let inside = ctl.ok(&[
        "run",
        "--rm",
        BB,
        "sh",
        "-c",
        "d=/sys/devices/virtual/powercap; if [ -e $d ]; then ls -A $d | wc -l; \
         grep -c \" $d \" /proc/self/mountinfo; else echo absent; fi",
    ]);
    if Path::new("/sys/devices/virtual/powercap").exists() {
        assert_eq!(inside, "0\n1\n", "an empty mount over it");
    } else {
        assert_eq!(inside, "absent\n");
    }
    // ... and in what the runtime is told, which this host (without powercap) cannot show
    // from inside.
    let id = ctl.ok(&["run", "-d", BB, "true"]).trim().to_string();
    let config = ctl.bundle_config(&id);
    let masked = config["linux"]["maskedPaths"].as_array().unwrap();
    assert!(
        masked.contains(&serde_json::json!("/sys/devices/virtual/powercap")),
        "{masked:?}"
    );
    ctl.ok(&["rm", "-f", &id]);
    assert_clean(&ctl);
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn detached_containers_ps_logs_exec_stop_rm() {
    let ctl = Ctl::new();
    let id = ctl.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        BB,
        "sh",
        "-c",
        "echo started; exec sleep 1000",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let ps = ctl.ok(&["ps"]);
    assert!(
        ps.contains("web") && ps.contains("Up") && ps.contains(&id[..12]),
        "{ps}"
    );
    wait_for("the log", || ctl.ok(&["logs", "web"]).contains("started"));
    assert_eq!(
        ctl.ok(&["exec", "web", "cat", "/etc/hostname"]),
        format!("{}\n", &id[..12])
    );
    let o = ctl.out(&["exec", "web", "sh", "-c", "exit 4"]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(ctl.ok(&["exec", "-u", "user", "web", "id", "-u"]), "1000\n");
    let e = ctl.fails(&["run", "-d", "--name", "web", BB, "true"], 125);
    assert!(e.contains("\"web\"") && e.contains("taken"), "{e}");
    let e = ctl.fails(&["rm", "web"], 125);
    assert!(e.contains("running"), "{e}");
    // sleep as PID 1 ignores SIGTERM: stop waits 1 s, then kills.
    ctl.ok(&["stop", "-t", "1", "web"]);
    let ps = ctl.ok(&["ps", "-a", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&ps).unwrap();
    assert_eq!(v[0]["Names"][0], "web");
    assert_eq!(v[0]["ExitCode"], 137, "{ps}");
    assert!(ctl.ok(&["ps"]).lines().count() == 1, "not running any more");
    ctl.ok(&["rm", "web"]);
    assert!(cgroup_gone(&id));
    assert_clean(&ctl);
}

#[test]
fn kill_and_force_remove() {
    let ctl = Ctl::new();
    let id = ctl.ok(&[
        "run",
        "-d",
        BB,
        "sh",
        "-c",
        "trap 'exit 42' USR1; echo ready; while true; do sleep 0.1; done",
    ]);
    let id = id.trim();
    // The trap is set once it says so.
    wait_for("the trap", || ctl.ok(&["logs", id]).contains("ready"));
    ctl.ok(&["kill", "-s", "USR1", &id[..12]]);
    wait_for("exit 42", || ctl.ok(&["ps", "-a"]).contains("Exited (42)"));
    ctl.ok(&["rm", id]);
    let id2 = ctl.ok(&["run", "-d", "--rm", BB, "sleep", "1000"]);
    ctl.ok(&["rm", "-f", id2.trim()]);
    assert!(cgroup_gone(id2.trim()));
    let e = ctl.fails(&["kill", "nosuch"], 125);
    assert!(e.contains("nosuch"), "{e}");
    assert_clean(&ctl);
}

#[test]
fn detached_rm_removes_itself() {
    let ctl = Ctl::new();
    let id = ctl.ok(&["run", "-d", "--rm", BB, "true"]);
    wait_for("removal", || {
        !ctl.root().join("containers").join(id.trim()).exists()
    });
    assert_clean(&ctl);
}

fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", tree.join("bin/sh")).unwrap();
    std::os::unix::fs::symlink("busybox", tree.join("bin/cat")).unwrap();
    std::fs::write(tree.join("marker"), "imported").unwrap();
    let tar = dir.join("rootfs.tar.gz");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&tar)
        .arg("-C")
        .arg(&tree)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    tar
}

#[test]
fn import_tag_rmi_prune() {
    let ctl = Ctl::new();
    let tar = busybox_rootfs_tar(ctl.dir.path());
    let id = ctl.ok(&["import", tar.to_str().unwrap(), "mine:1"]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(
        ctl.ok(&["run", "--rm", "mine:1", "cat", "/marker"]),
        "imported"
    );
    ctl.ok(&["tag", "mine:1", "other"]);
    let names = ctl.ok(&["images", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&names).unwrap();
    assert_eq!(
        v[0]["Names"],
        serde_json::json!(["localhost/mine:1", "localhost/other:latest"])
    );
    let blobs = |ctl: &Ctl| {
        std::fs::read_dir(ctl.root().join("content/blobs/sha256"))
            .unwrap()
            .count()
    };
    assert_eq!(blobs(&ctl), 3, "manifest, config, one layer");
    // By name, one of two names: untag only.
    assert!(ctl.ok(&["rmi", "mine:1"]).contains("Untagged"));
    assert_eq!(blobs(&ctl), 3);
    // An image a container uses stays.
    ctl.ok(&[
        "run", "-d", "--name", "user", "other", "sh", "-c", "exec cat",
    ]);
    let e = ctl.fails(&["rmi", "other"], 125);
    assert!(e.contains("user"), "{e}");
    ctl.ok(&["rm", "-f", "user"]);
    assert!(ctl.ok(&["rmi", "other"]).contains("Deleted"));
    assert_eq!(blobs(&ctl), 0, "nothing references the blobs any more");
    assert_eq!(
        std::fs::read_dir(ctl.root().join("snapshots/layers"))
            .unwrap()
            .count(),
        0
    );
    // prune: a nameless image goes, a named one stays unless -a. A nameless image made
    // for real: `moving` is imported, then other content is imported under that name,
    // which takes the name away from the first.
    let one_file = |file: &str, data: &[u8]| {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, "m", data).unwrap();
        let p = ctl.dir.path().join(file);
        std::fs::write(&p, b.into_inner().unwrap()).unwrap();
        p
    };
    let (first, second) = (
        one_file("first.tar", b"first"),
        one_file("second.tar", b"second"),
    );
    let keep = ctl.ok(&["import", tar.to_str().unwrap(), "keep"]);
    let old = ctl.ok(&["import", first.to_str().unwrap(), "moving"]);
    let new = ctl.ok(&["import", second.to_str().unwrap(), "moving"]);
    let (keep, old, new) = (keep.trim(), old.trim(), new.trim());
    assert!(keep != old && old != new && keep != new);
    let names = |ctl: &Ctl| -> Vec<(String, serde_json::Value)> {
        let v: serde_json::Value =
            serde_json::from_str(&ctl.ok(&["images", "--format", "json"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| (i["Id"].as_str().unwrap().to_string(), i["Names"].clone()))
            .collect()
    };
    let before = names(&ctl);
    assert!(
        before.contains(&(old.to_string(), serde_json::json!([]))),
        "the first `moving` lost its name: {before:?}"
    );
    let pruned = ctl.ok(&["image", "prune"]);
    assert_eq!(pruned.trim(), old, "prune removes the nameless image only");
    let mut after = names(&ctl);
    after.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want = vec![
        (
            keep.to_string(),
            serde_json::json!(["localhost/keep:latest"]),
        ),
        (
            new.to_string(),
            serde_json::json!(["localhost/moving:latest"]),
        ),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(after, want);
    ctl.ok(&["image", "prune", "-a"]);
    assert_eq!(ctl.ok(&["images", "-q"]), "");
    assert_eq!(blobs(&ctl), 0);
    let e = ctl.fails(&["import", "/etc/hostname"], 125);
    assert!(e.contains("/etc/hostname"), "{e}");
    assert_clean(&ctl);
}

#[test]
fn many_layers_run() {
    // 120 layers: more than mount(2)'s option page could name.
    let ctl = Ctl::new();
    let layout = Layout::new("t");
    busybox_rootfs_tar(ctl.dir.path());
    // A busybox layer, then one file per layer.
    layout.insert("t", &ctl.dir.path().join("tree"), "/");
    for i in 0..119 {
        let f = ctl.dir.path().join(format!("f{i}"));
        std::fs::write(&f, format!("{i}")).unwrap();
        layout.insert("t", &f, &format!("/layers/f{i}"));
    }
    let out = ctl.ok(&["load", "-i", layout.path().to_str().unwrap()]);
    assert!(out.contains("Loaded image"), "{out}");
    let img = ctl.ok(&["images", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&img).unwrap();
    let loaded = v
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["Layers"] == 120)
        .expect("a 120-layer image");
    let id = loaded["Id"].as_str().unwrap().to_string();
    let out = ctl.ok(&[
        "run",
        "--rm",
        &id,
        "sh",
        "-c",
        "ls /layers | wc -l; cat /layers/f118",
    ]);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["119", "118"]);
    assert_clean(&ctl);
}

#[test]
fn copy_driver_runs_the_same_image() {
    let ctl = Ctl::new();
    let out = ctl.ok(&[
        "--storage-driver",
        "copy",
        "run",
        "--rm",
        BB,
        "sh",
        "-c",
        "echo copied > /tmp/x; cat /tmp/x",
    ]);
    assert_eq!(out, "copied\n");
    assert_eq!(
        std::fs::read_dir(ctl.root().join("snapshots/layers"))
            .unwrap()
            .count(),
        0
    );
    assert_clean(&ctl);
}

#[test]
fn save_and_load_round_trip() {
    let ctl = Ctl::new();
    ctl.ok(&["run", "--rm", BB, "true"]);
    for fmt in ["oci-archive", "docker-archive", "oci-dir"] {
        let out = ctl.dir.path().join(format!("saved-{fmt}"));
        ctl.ok(&["save", "--format", fmt, "-o", out.to_str().unwrap(), BB]);
        let other = Ctl::new();
        let loaded = other.ok(&["load", "-i", out.to_str().unwrap()]);
        assert!(
            loaded.contains("localhost/berth-busybox:latest"),
            "{fmt}: {loaded}"
        );
        assert_eq!(
            other.ok(&["run", "--rm", "localhost/berth-busybox", "echo", fmt]),
            format!("{fmt}\n")
        );
    }
    assert_clean(&ctl);
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman").args(args).output().expect("podman")
}

#[test]
fn podman_round_trip() {
    if Command::new("podman").arg("--version").output().is_err() {
        panic!("podman is not installed (scripts/install-deps.sh installs it)");
    }
    let ctl = Ctl::new();
    ctl.ok(&["run", "--rm", BB, "true"]);
    let name = format!("localhost/berth-rt-{}:1", std::process::id());
    ctl.ok(&["tag", BB, &name]);
    for fmt in ["oci-archive", "docker-archive"] {
        let file = ctl.dir.path().join(format!("to-podman-{fmt}.tar"));
        ctl.ok(&["save", "--format", fmt, "-o", file.to_str().unwrap(), &name]);
        let o = podman(&["load", "-i", file.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "podman load {fmt}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = podman(&[
            "run",
            "--rm",
            "--runtime",
            "runc",
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=4096:4096",
            "--network",
            "none",
            &name,
            "echo",
            "in podman",
        ]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "in podman\n",
            "{fmt}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // And back: what podman saves, berth loads and runs.
        let back = ctl.dir.path().join(format!("from-podman-{fmt}.tar"));
        let o = podman(&["save", "--format", fmt, "-o", back.to_str().unwrap(), &name]);
        assert!(
            o.status.success(),
            "podman save: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let other = Ctl::new();
        other.ok(&["load", "-i", back.to_str().unwrap()]);
        assert_eq!(
            other.ok(&["run", "--rm", &name, "echo", "back in berth"]),
            "back in berth\n"
        );
        let _ = podman(&["rmi", "-f", &name]);
    }
    assert_clean(&ctl);
}

#[test]
fn image_stop_signal_volumes_entrypoint_and_user() {
    let ctl = Ctl::new();
    busybox_rootfs_tar(ctl.dir.path());
    let tree = ctl.dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(
        tree.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\napp:x:4242:4343::/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(tree.join("etc/group"), "root:x:0:\napp:x:4343:\n").unwrap();
    // The volume's directory in the image: its content and owner are copied up.
    std::fs::create_dir_all(tree.join("data/sub")).unwrap();
    std::fs::write(tree.join("data/sub/seed"), "seeded\n").unwrap();
    std::os::unix::fs::chown(tree.join("data"), Some(4242), Some(4343)).unwrap();
    std::fs::set_permissions(
        tree.join("data"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    for a in ["id", "grep", "sleep", "echo", "cat", "stat"] {
        let _ = std::os::unix::fs::symlink("busybox", tree.join("bin").join(a));
    }
    let layout = Layout::new("1");
    layout.insert("1", &tree, "/");
    layout.config(
        "1",
        &[
            "--config.entrypoint",
            "/bin/sh",
            "--config.entrypoint",
            "-c",
            "--config.cmd",
            "trap 'echo got usr1; exit 42' USR1; echo ready; while true; do sleep 0.1; done",
            "--config.stopsignal",
            "SIGUSR1",
            "--config.volume",
            "/data",
            "--config.user",
            "app",
            "--config.workingdir",
            "/data",
        ],
    );
    ctl.ok(&["load", "-i", layout.path().to_str().unwrap()]);
    let id = ctl.ok(&["images", "-q"]);
    let id = id.trim();
    let c = ctl.ok(&["run", "-d", "--name", "svc", id]);
    let _ = c;
    wait_for("ready", || ctl.ok(&["logs", "svc"]).contains("ready"));
    assert_eq!(
        ctl.ok(&["exec", "svc", "id", "-u"]),
        "4242\n",
        "the image's User, by name"
    );
    let mounts = ctl.ok(&["exec", "svc", "grep", " /data ", "/proc/self/mounts"]);
    assert_eq!(
        mounts.lines().count(),
        1,
        "the image's volume is a mount: {mounts}"
    );
    assert_eq!(ctl.ok(&["exec", "svc", "sh", "-c", "pwd"]), "/data\n");
    assert_eq!(
        ctl.ok(&["exec", "svc", "stat", "-c", "%u:%g %a", "/data"]),
        "4242:4343 750\n",
        "the volume has the owner and mode of the image's directory"
    );
    assert_eq!(
        ctl.ok(&["exec", "svc", "cat", "/data/sub/seed"]),
        "seeded\n",
        "and its content"
    );
    assert_eq!(
        ctl.ok(&[
            "exec",
            "svc",
            "sh",
            "-c",
            "echo y > /data/mine && cat /data/mine"
        ]),
        "y\n",
        "the image's user can write to its volume"
    );
    assert_eq!(
        ctl.ok(&[
            "exec",
            "-u",
            "0",
            "svc",
            "sh",
            "-c",
            "echo x > /data/w && echo writable"
        ]),
        "writable\n"
    );
    // stop sends the image's StopSignal: the trap exits 42, well before the timeout.
    ctl.ok(&["stop", "-t", "30", "svc"]);
    let ps = ctl.ok(&["ps", "-a", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&ps).unwrap();
    assert_eq!(v[0]["ExitCode"], 42, "{ps}");
    assert!(ctl.ok(&["logs", "svc"]).contains("got usr1"));
    // The entrypoint stays when a command is given; the command replaces Cmd.
    assert_eq!(ctl.ok(&["run", "--rm", id, "echo replaced"]), "replaced\n");
    ctl.ok(&["rm", "svc"]);
    assert_clean(&ctl);
}

#[test]
fn a_terminal_with_it() {
    let ctl = Ctl::new();
    ctl.ok(&["run", "--rm", BB, "true"]);
    let o = ctl.on_terminal(&format!("run --rm -it {BB} sh -c 'tty; echo $TERM'"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("/dev/pts/0") && out.contains("xterm"), "{out}");
    assert_clean(&ctl);
}

#[test]
fn shared_layers_stay_until_no_image_uses_them() {
    let ctl = Ctl::new();
    busybox_rootfs_tar(ctl.dir.path());
    let layout = Layout::new("base");
    layout.insert("base", &ctl.dir.path().join("tree"), "/");
    // `top` is `base` plus one layer: the base layer is shared.
    layout.tag("base", "top");
    let extra = ctl.dir.path().join("extra");
    std::fs::write(&extra, "top only").unwrap();
    layout.insert("top", &extra, "/extra");
    // Name them as podman would, so they load with names.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.path().join("index.json")).unwrap()).unwrap();
    let mut index = index;
    for m in index["manifests"].as_array_mut().unwrap() {
        let tag = m["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap()
            .to_string();
        m["annotations"]["org.opencontainers.image.ref.name"] =
            format!("localhost/shared:{tag}").into();
    }
    std::fs::write(
        layout.path().join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    ctl.ok(&["load", "-i", layout.path().to_str().unwrap()]);
    assert_eq!(
        ctl.ok(&["run", "--rm", "shared:base", "cat", "/marker"]),
        "imported"
    );
    ctl.ok(&["run", "--rm", "shared:top", "cat", "/extra"]);
    let blobs = |ctl: &Ctl| {
        std::fs::read_dir(ctl.root().join("content/blobs/sha256"))
            .unwrap()
            .count()
    };
    let layers = |ctl: &Ctl| {
        std::fs::read_dir(ctl.root().join("snapshots/layers"))
            .unwrap()
            .count()
    };
    // 2 manifests, 2 configs, 2 distinct layers.
    assert_eq!((blobs(&ctl), layers(&ctl)), (6, 2));
    ctl.ok(&["rmi", "shared:base"]);
    assert_eq!(
        (blobs(&ctl), layers(&ctl)),
        (4, 2),
        "the shared layer stays for top"
    );
    assert_eq!(
        ctl.ok(&["run", "--rm", "shared:top", "cat", "/extra"]),
        "top only"
    );
    ctl.ok(&["rmi", "shared:top"]);
    assert_eq!((blobs(&ctl), layers(&ctl)), (0, 0));
    assert_clean(&ctl);
}
