//! A pod through containerd's CRI (containerd + containerd-shim-runc-v2), as a
//! kubelet drives it: run the pod, create, start, exec into, stop and remove
//! containers, stop and remove the pod.
//!
//! The CRI reads the runtime's error words: the shim takes "container not
//! running" from `kill` as "already stopped". A runtime that says other words
//! there makes every StopPodSandbox hang until its deadline (berth did before
//! it printed runc's words, docs/runtime-errors.md), so StopPodSandbox must
//! succeed within STOP_POD_DEADLINE once the pod's containers have exited.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatus, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PodSandboxState,
};
use serde_json::Value;

use crate::containerd::{start_containerd_cri, CriConfig};
use crate::cri_client::{image_spec, ok, short, CriClient};
use crate::probe::{
    assert_runtime_forgot, assert_runtime_runs, build_image, sha256_hex, shim_runtime_options,
    TestImage, IMAGE,
};
use crate::support::{
    require_root, require_tools, run_cmd, run_ok, runtime_under_test, serial, Harness,
    TEARDOWN_TIMEOUT,
};

/// The containerd namespace of everything the CRI does.
const NAMESPACE: &str = "k8s.io";
/// The pods' sandbox image: the test image's layer, with a pause-like
/// entrypoint. Imported, never pulled.
const PAUSE_IMAGE: &str = "localhost/berth-clients-pause:test";
/// Sleeps until SIGTERM or SIGINT, then exits 0; as pid 1 of the pod's pid
/// namespace, its shell reaps whatever is reparented to it.
const PAUSE_COMMAND: &[&str] = &[
    "/bin/sh",
    "-c",
    "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done",
];
/// Deadline of each CRI call (and of the waits for a state).
const CALL_DEADLINE: Duration = Duration::from_secs(20);
/// StopPodSandbox of a pod whose containers have all exited: a handful of
/// runtime calls, well under a second with runc. The berth that refused to
/// kill a stopped container hung here until the deadline.
const STOP_POD_DEADLINE: Duration = Duration::from_secs(20);
/// Deadline of each call that polls for readiness.
const PROBE_DEADLINE: Duration = Duration::from_secs(5);
/// Deadline of each CRI call of the teardown.
const TEARDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// What the first container prints before it sleeps.
const HELLO: &str = "cri-ok";
/// Exit status of the container that exits by itself.
const SELF_EXIT_CODE: i32 = 3;
/// Exit status of the failing ExecSync.
const EXEC_EXIT_CODE: i32 = 5;

pub(crate) fn cri() {
    let _serial = serial();
    require_root();
    require_tools(&[
        "containerd",
        "containerd-shim-runc-v2",
        "ctr",
        "tar",
        "sha256sum",
    ]);
    let runtime = runtime_under_test();
    let mut h = Harness::new("cri");
    let image = build_image(&h);
    let archive = add_pause_image(&h, &image);
    let runtime_root = h.mkdir("runtime-root");
    // The shim hands the runtime `--root <Root>/<namespace>`.
    let state_root = runtime_root.join(NAMESPACE);
    let snapshotter = if h.on_overlayfs() {
        "native"
    } else {
        "overlayfs"
    };
    let containerd = start_containerd_cri(
        &mut h,
        "containerd",
        &CriConfig {
            sandbox_image: PAUSE_IMAGE,
            runtime: &runtime,
            runtime_root: &runtime_root,
            snapshotter,
        },
    );
    {
        let socket = containerd.socket.clone();
        let runtime = runtime.clone();
        let state_root = state_root.clone();
        h.on_teardown(
            "cri: remove every pod, then the runtime's leftovers",
            move || remove_everything(&socket, &runtime, &state_root),
        );
    }

    run_ok(
        Command::new("ctr")
            .arg("--address")
            .arg(&containerd.socket)
            .args(["--namespace", NAMESPACE, "images", "import"])
            .arg(&archive)
            .env("CONTAINERD_SNAPSHOTTER", snapshotter),
    );

    let cri = CriClient::new(&containerd.socket);
    // The CRI answers "server is not initialized yet" for a moment after
    // containerd's own API is up.
    let mut last_error = String::new();
    let version = poll(CALL_DEADLINE, || {
        cri.version(PROBE_DEADLINE)
            .map_err(|e| last_error = e.to_string())
            .ok()
    })
    .unwrap_or_else(|| panic!("the CRI did not answer within {CALL_DEADLINE:?}: {last_error}"));
    assert_eq!(version.runtime_name, "containerd", "Version: {version:?}");
    assert_eq!(version.runtime_api_version, "v1", "Version: {version:?}");
    // The CRI learns of imported images from containerd's events.
    for name in [IMAGE, PAUSE_IMAGE] {
        poll(CALL_DEADLINE, || {
            ok(cri.image_present(name, PROBE_DEADLINE)).then_some(())
        })
        .unwrap_or_else(|| panic!("the CRI does not know the imported image {name}"));
    }

    let logs = h.mkdir("pod-logs");
    let pod_config = pod_config(&h, &logs);
    let pod = ok(cri.run_pod_sandbox(&pod_config, CALL_DEADLINE));
    // The shim was told to run the runtime under test, and that runtime runs
    // the sandbox.
    let options = shim_runtime_options(&containerd.state, NAMESPACE, &pod);
    assert_eq!(
        options["binary_name"].as_str(),
        Some(&*runtime.to_string_lossy()),
        "the shim's options for the sandbox: {options}"
    );
    assert_runtime_runs("cri", &runtime, Some(&state_root), &pod, None);

    // A long-running container: status, log, exec, and the runtime's view.
    let main = ok(cri.create_container(
        &pod,
        container_config(
            "main",
            &["sh", "-c", &format!("echo {HELLO}; exec sleep 600")],
        ),
        &pod_config,
        CALL_DEADLINE,
    ));
    ok(cri.start_container(&main, CALL_DEADLINE));
    let (status, pid) = ok(cri.container_status(&main, CALL_DEADLINE));
    assert_eq!(
        state_of(&status),
        ContainerState::ContainerRunning,
        "ContainerStatus after StartContainer: {status:?}"
    );
    assert!(
        pid.is_some(),
        "containerd reports no pid for {main}: {status:?}"
    );
    assert_runtime_runs("cri", &runtime, Some(&state_root), &main, pid);
    let log = logs.join("main.log");
    poll(CALL_DEADLINE, || {
        fs::read_to_string(&log).ok().filter(|text| {
            text.lines()
                .any(|l| l.ends_with(&format!(" stdout F {HELLO}")))
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "no {HELLO:?} on stdout in the CRI log {}: {:?}",
            log.display(),
            fs::read_to_string(&log)
        )
    });
    let exec = ok(cri.exec_sync(&main, &["id", "-u"], CALL_DEADLINE));
    assert_eq!(
        (exec.exit_code, String::from_utf8_lossy(&exec.stdout).trim()),
        (0, "0"),
        "ExecSync id -u: {exec:?}"
    );
    let exec = ok(cri.exec_sync(
        &main,
        &["sh", "-c", &format!("exit {EXEC_EXIT_CODE}")],
        CALL_DEADLINE,
    ));
    assert_eq!(
        exec.exit_code, EXEC_EXIT_CODE,
        "ExecSync exit status: {exec:?}"
    );

    // StopContainer: SIGTERM ends `sleep` (not pid 1: the pod shares one pid
    // namespace). A second stop of the exited container is a success.
    ok(cri.stop_container(&main, Duration::from_secs(2), CALL_DEADLINE));
    let (status, _) = ok(cri.container_status(&main, CALL_DEADLINE));
    assert_eq!(
        (state_of(&status), status.exit_code),
        (ContainerState::ContainerExited, 128 + 15),
        "ContainerStatus after StopContainer: {status:?}"
    );
    ok(cri.stop_container(&main, Duration::from_secs(2), CALL_DEADLINE));
    assert_runtime_forgot("cri", &runtime, Some(&state_root), &main);

    // A container that exits by itself; stopping it afterwards succeeds.
    let quits = ok(cri.create_container(
        &pod,
        container_config("quits", &["sh", "-c", &format!("exit {SELF_EXIT_CODE}")]),
        &pod_config,
        CALL_DEADLINE,
    ));
    ok(cri.start_container(&quits, CALL_DEADLINE));
    let status = wait_for_exit(&cri, &quits);
    assert_eq!(
        status.exit_code, SELF_EXIT_CODE,
        "exit status of the container that exits by itself: {status:?}"
    );
    ok(cri.stop_container(&quits, Duration::from_secs(2), CALL_DEADLINE));

    for id in [&main, &quits] {
        ok(cri.remove_container(id, CALL_DEADLINE));
    }
    let left = ok(cri.list_containers(Some(&pod), CALL_DEADLINE));
    assert!(
        left.is_empty(),
        "containers left in the pod after RemoveContainer: {left:?}"
    );

    // Only the sandbox is left, running. Stopping it kills it and then has
    // the shim `kill --all` the stopped sandbox: a runtime that refuses that
    // in words the shim does not know makes this hang.
    let start = Instant::now();
    if let Err(e) = cri.stop_pod_sandbox(&pod, STOP_POD_DEADLINE) {
        panic!(
            "{e}\nStopPodSandbox of a pod whose containers have all exited must succeed within \
             {STOP_POD_DEADLINE:?}. A runtime that refuses `kill` of a stopped container in other \
             words than runc's \"container not running\" (docs/runtime-errors.md) makes containerd \
             retry the sandbox's exit until the deadline. containerd's last word on it:\n{}",
            last_kill_error(&h.path("containerd.log"))
        );
    }
    eprintln!(
        "[cri] StopPodSandbox took {:.2}s (deadline {STOP_POD_DEADLINE:?})",
        start.elapsed().as_secs_f64()
    );
    let pods = ok(cri.list_pod_sandboxes(Some(&pod), CALL_DEADLINE));
    assert!(
        pods.len() == 1 && pods[0].state == PodSandboxState::SandboxNotready as i32,
        "ListPodSandbox after StopPodSandbox: {pods:?}"
    );
    assert_runtime_forgot("cri", &runtime, Some(&state_root), &pod);
    ok(cri.remove_pod_sandbox(&pod, CALL_DEADLINE));
    let pods = ok(cri.list_pod_sandboxes(None, CALL_DEADLINE));
    assert!(
        pods.is_empty(),
        "ListPodSandbox after RemovePodSandbox: {pods:?}"
    );

    // Nothing of the pod is left: no container in the runtime's state, no
    // shim, no mount under the test's directory (the rootfs, the sandbox's
    // /dev/shm). h.finish() checks processes and cgroups.
    let list = run_ok(
        Command::new(&runtime)
            .arg("--root")
            .arg(&state_root)
            .args(["list", "--quiet"]),
    );
    assert!(
        list.stdout.trim().is_empty(),
        "the runtime still lists containers: {}",
        list.stdout
    );
    let shims = wait_for_none(|| {
        h.processes_naming_dir()
            .into_iter()
            .filter(|(_, cmdline)| cmdline.contains("containerd-shim"))
            .collect()
    });
    assert!(
        shims.is_empty(),
        "shims left after RemovePodSandbox: {shims:#?}"
    );
    let mounts = wait_for_none(|| h.mounts_under_dir());
    assert!(
        mounts.is_empty(),
        "mounts left after RemovePodSandbox: {mounts:#?}"
    );

    drop(cri);
    h.finish();
}

/// A pod on the host network (no CNI), under the test's cgroup parent, with
/// its container logs in `logs`.
fn pod_config(h: &Harness, logs: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "berth-pod".into(),
            uid: "berth-pod-uid".into(),
            namespace: "berth-clients".into(),
            attempt: 0,
        }),
        log_directory: logs.to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: h.cgroup(None),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options()),
                ..LinuxSandboxSecurityContext::default()
            }),
            ..LinuxPodSandboxConfig::default()
        }),
        ..PodSandboxConfig::default()
    }
}

/// Host network, one pid namespace for the pod (the CRI's default).
fn namespace_options() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Pod as i32,
        ipc: NamespaceMode::Pod as i32,
        ..NamespaceOption::default()
    }
}

/// A container of the test image running `command`, logging to `<name>.log`.
fn container_config(name: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(image_spec(IMAGE)),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespace_options()),
                ..LinuxContainerSecurityContext::default()
            }),
            ..LinuxContainerConfig::default()
        }),
        ..ContainerConfig::default()
    }
}

fn state_of(status: &ContainerStatus) -> ContainerState {
    ContainerState::try_from(status.state).unwrap_or(ContainerState::ContainerUnknown)
}

/// Polls `probe` every 100 ms until it gives a value, for `within` at most.
fn poll<T>(within: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if start.elapsed() > within {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// What `left` still finds after up to 10 s (empty once it finds nothing).
fn wait_for_none<T>(mut left: impl FnMut() -> Vec<T>) -> Vec<T> {
    let start = Instant::now();
    loop {
        let found = left();
        if found.is_empty() || start.elapsed() > Duration::from_secs(10) {
            return found;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the CRI reports the container exited, and returns its status.
fn wait_for_exit(cri: &CriClient, id: &str) -> ContainerStatus {
    let mut last = None;
    let start = Instant::now();
    loop {
        let (status, _) = ok(cri.container_status(id, CALL_DEADLINE));
        if state_of(&status) == ContainerState::ContainerExited {
            return status;
        }
        assert!(
            start.elapsed() < CALL_DEADLINE,
            "container {} did not show as exited within {CALL_DEADLINE:?}; last status {:?}",
            short(id),
            last.unwrap_or(status)
        );
        last = Some(status);
        thread::sleep(Duration::from_millis(100));
    }
}

/// The test image's archive plus PAUSE_IMAGE, the same layer with a pause
/// entrypoint: one docker-archive for `ctr images import`.
fn add_pause_image(h: &Harness, image: &TestImage) -> PathBuf {
    let dir = h.mkdir("image/pod-archive");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .arg("-xf")
            .arg(&image.archive),
    );
    let manifest_path = dir.join("manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&fs::read(&manifest_path).expect("read manifest.json"))
            .expect("manifest.json of the test image");
    let entry = manifest[0].clone();
    let config_name = entry["Config"].as_str().expect("Config in manifest.json");
    let mut config: Value =
        serde_json::from_slice(&fs::read(dir.join(config_name)).expect("read image config"))
            .expect("image config");
    config["config"]["Entrypoint"] = serde_json::json!(PAUSE_COMMAND);
    config["config"]["Cmd"] = Value::Null;
    let pause_config = dir.join("pause-config.json");
    fs::write(&pause_config, serde_json::to_vec(&config).unwrap()).expect("write pause config");
    let pause_config_name = format!("{}.json", sha256_hex(&pause_config));
    fs::rename(&pause_config, dir.join(&pause_config_name)).expect("rename pause config");
    let mut pause_entry = entry.clone();
    pause_entry["Config"] = pause_config_name.clone().into();
    pause_entry["RepoTags"] = serde_json::json!([PAUSE_IMAGE]);
    manifest
        .as_array_mut()
        .expect("manifest.json is a list")
        .push(pause_entry);
    fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).expect("write manifest");
    let layers: Vec<String> = entry["Layers"]
        .as_array()
        .expect("Layers in manifest.json")
        .iter()
        .map(|l| l.as_str().expect("layer name").to_string())
        .collect();
    let archive = h.path("image/pod-images.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .arg("-cf")
            .arg(&archive)
            .args(["manifest.json", config_name, &pause_config_name])
            .args(&layers),
    );
    archive
}

/// The last error containerd logged about a runtime's `kill`, if any.
fn last_kill_error(log: &Path) -> String {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|line| line.contains("level=error") && line.contains("after kill"))
        .unwrap_or("<none logged>")
        .to_string()
}

/// The teardown: every pod removed through the CRI (RemovePodSandbox stops
/// it first), then whatever the runtime still has in its state (a runtime
/// that broke StopPodSandbox leaves its containers there).
fn remove_everything(socket: &Path, runtime: &Path, state_root: &Path) {
    let cri = CriClient::new(socket);
    for pod in cri
        .list_pod_sandboxes(None, TEARDOWN_DEADLINE)
        .unwrap_or_default()
    {
        if let Err(e) = cri.remove_pod_sandbox(&pod.id, TEARDOWN_DEADLINE) {
            eprintln!("[cri] teardown: {e}");
        }
    }
    let runtime_cmd = || {
        let mut c = Command::new(runtime);
        c.arg("--root").arg(state_root);
        c
    };
    let left = run_cmd(runtime_cmd().args(["list", "--quiet"]), TEARDOWN_TIMEOUT);
    for id in left.stdout.split_whitespace() {
        run_cmd(
            runtime_cmd().args(["kill", "--all", id, "KILL"]),
            TEARDOWN_TIMEOUT,
        );
        run_cmd(
            runtime_cmd().args(["delete", "--force", id]),
            TEARDOWN_TIMEOUT,
        );
    }
}
