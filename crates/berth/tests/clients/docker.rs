//! docker (dockerd + containerd).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::containerd::start_containerd;
use crate::probe::{
    assert_runtime_forgot, assert_runtime_runs, build_image, check_exec, check_run_probes,
    make_volume, shim_runtime_options, IMAGE,
};
use crate::support::{
    require_root, require_tools, run_cmd, run_ok, run_quietly, runtime_under_test, serial, Harness,
    CMD_TIMEOUT, PROBE_TIMEOUT, TEARDOWN_TIMEOUT,
};

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

pub(crate) fn docker() {
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

    check_run_probes("docker", || docker.run(), &volume);

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
