//! The test image (built from the host's static busybox), the probe script run
//! in the containers and the checks on what it reports and on the runtime's
//! own view of the containers.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{busybox, run_cmd, run_ok, CmdOut, Harness, CMD_TIMEOUT};

/// Reference of the image every test builds and loads into its client.
pub(crate) const IMAGE: &str = "localhost/berth-clients:test";
/// Hostname the clients are asked to give the container.
pub(crate) const HOSTNAME: &str = "berthtest";
/// `--memory 64m`, as the container must read it back.
pub(crate) const MEMORY_LIMIT: u64 = 64 * 1024 * 1024;
/// `--pids-limit 50`.
pub(crate) const PIDS_LIMIT: u64 = 50;
/// Uid and gid of the unprivileged run (`--user 1000:1000`).
pub(crate) const TEST_UID: u32 = 1000;
/// Content of the file the host puts in the read-only volume.
const HOST_FILE_CONTENT: &str = "written-by-the-host";
/// Exit status the exit-code probe container ends with.
const EXIT_CODE: i32 = 7;

/// Shell script run inside the probe containers. It prints `key=value` lines
/// that the tests assert on. It only needs busybox.
pub(crate) const PROBE_SCRIPT: &str = r#"
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
say seccomp "$(awk '$1 == "Seccomp:" { print $2 }' /proc/self/status)"
say nnp "$(awk '$1 == "NoNewPrivs:" { print $2 }' /proc/self/status)"
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
// Test image and probe expectations
// ---------------------------------------------------------------------------

pub(crate) struct TestImage {
    /// Unpacked root filesystem (also used directly by the ctr spec run).
    pub(crate) rootfs: PathBuf,
    /// docker-archive (`docker save` format) tarball: podman load, docker
    /// load and ctr images import all read it.
    pub(crate) archive: PathBuf,
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

pub(crate) fn sha256_hex(path: &Path) -> String {
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
pub(crate) fn build_image(h: &Harness) -> TestImage {
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
pub(crate) fn make_volume(h: &Harness) -> PathBuf {
    let vol = h.mkdir("volume");
    fs::write(vol.join("hello.txt"), format!("{HOST_FILE_CONTENT}\n")).expect("write volume file");
    fs::set_permissions(vol.join("hello.txt"), fs::Permissions::from_mode(0o644)).expect("chmod");
    vol
}

/// What a probe container is expected to report.
#[derive(Default, Clone, Copy)]
pub(crate) struct Expect {
    pub(crate) hostname: bool,
    pub(crate) data: bool,
    pub(crate) user: bool,
    pub(crate) memory: bool,
    pub(crate) pids: bool,
    /// The engine's default seccomp profile is in force (filter mode 2).
    pub(crate) seccomp: bool,
    /// no_new_privs as the engine was asked to set it.
    pub(crate) nnp: Option<bool>,
}

fn parse_report(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

pub(crate) fn check_probe(client: &str, what: &str, out: &CmdOut, expect: Expect, volume: &Path) {
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
    if expect.seccomp {
        assert_eq!(
            get("seccomp"),
            "2",
            "the engine's default seccomp profile; {}",
            ctx()
        );
    }
    if let Some(nnp) = expect.nnp {
        assert_eq!(
            get("nnp"),
            if nnp { "1" } else { "0" },
            "no_new_privs; {}",
            ctx()
        );
    }
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
pub(crate) fn check_exec(
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

/// The `run` probes podman and docker share (their flags are the same): hostname, a
/// read-only volume and memory and pids limits; `--user 1000:1000`; the exit status.
/// `run` makes a fresh `<client> run` command.
pub(crate) fn check_run_probes(client: &str, run: impl Fn() -> Command, volume: &Path) {
    let out = run_cmd(
        run()
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
    // Under the engine's own default seccomp profile throughout: berth's setup after the
    // filter loads must not need what such a profile leaves out.
    let all = Expect {
        hostname: true,
        data: true,
        memory: true,
        pids: true,
        seccomp: true,
        nnp: Some(false),
        ..Expect::default()
    };
    check_probe(client, "hostname/volume/limits", &out, all, volume);

    // The probe as TEST_UID, with `extra` client options.
    let as_user = |extra: &[&str]| {
        run_cmd(
            run().arg("--rm").args(extra).args([
                "--user",
                "1000:1000",
                IMAGE,
                "sh",
                "-c",
                PROBE_SCRIPT,
            ]),
            CMD_TIMEOUT,
        )
    };
    let out = as_user(&[]);
    let user = Expect {
        user: true,
        seccomp: true,
        nnp: Some(false),
        ..Expect::default()
    };
    check_probe(client, "--user 1000:1000", &out, user, volume);

    // no_new_privs moves the filter to just before exec, after the user switch.
    let out = as_user(&["--security-opt", "no-new-privileges"]);
    let nnp = Expect {
        user: true,
        seccomp: true,
        nnp: Some(true),
        ..Expect::default()
    };
    check_probe(
        client,
        "no-new-privileges --user 1000:1000",
        &out,
        nnp,
        volume,
    );

    let out = run_cmd(
        run().args(["--rm", IMAGE, "sh", "-c", "exit 7"]),
        CMD_TIMEOUT,
    );
    check_exit_code(client, &out);
}

pub(crate) fn check_exit_code(client: &str, out: &CmdOut) {
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
pub(crate) fn runtime_state(runtime: &Path, root: Option<&Path>, id: &str) -> Option<Value> {
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
pub(crate) fn assert_runtime_runs(
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

pub(crate) fn assert_runtime_forgot(client: &str, runtime: &Path, root: Option<&Path>, id: &str) {
    assert!(
        runtime_state(runtime, root, id).is_none(),
        "{client}: the runtime still knows container {id} after the client removed it"
    );
}

/// `options.json` the containerd shim keeps in the bundle: which binary and
/// root it runs the runtime with.
pub(crate) fn shim_runtime_options(containerd_state: &Path, namespace: &str, id: &str) -> Value {
    let path = containerd_state
        .join("io.containerd.runtime.v2.task")
        .join(namespace)
        .join(id)
        .join("options.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
