//! berthd driven over CRI v1 as the kubelet drives it, with real pods and containers of the
//! built-in busybox image (no registry, no network). Root only.

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use k8s_cri::v1::*;
use tonic::Code;

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    berth_testkit::skip(test, "needs root");
    true
}

#[test]
fn version_status_and_runtime_config() {
    if skip_unless_root("version_status_and_runtime_config") {
        return;
    }
    let b = Berthd::start();
    let mut rs = b.rs.clone();
    let v = b
        .call(
            "Version",
            rs.version(VersionRequest {
                version: "v1".into(),
            }),
        )
        .unwrap();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("berth", "v1")
    );
    let s = b
        .call("Status", rs.status(StatusRequest { verbose: true }))
        .unwrap();
    let conds = s.status.unwrap().conditions;
    let ready = conds.iter().find(|c| c.r#type == "RuntimeReady").unwrap();
    assert!(ready.status);
    let net = conds.iter().find(|c| c.r#type == "NetworkReady").unwrap();
    assert!(net.status, "the test network is loaded: {net:?}");
    assert!(s.info.contains_key("config"));
    let rc = b
        .call("RuntimeConfig", rs.runtime_config(RuntimeConfigRequest {}))
        .unwrap();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        CgroupDriver::Cgroupfs as i32
    );
    let err = b
        .call(
            "CheckpointContainer",
            rs.checkpoint_container(CheckpointContainerRequest {
                container_id: "x".into(),
                ..Default::default()
            }),
        )
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

/// Whether CRIU can dump on this kernel (`criu check`).
fn criu_works() -> bool {
    std::process::Command::new("criu")
        .arg("check")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn checkpoint_container_writes_an_archive_or_says_why_criu_cannot() {
    if skip_unless_root("checkpoint_container_writes_an_archive_or_says_why_criu_cannot") {
        return;
    }
    let b = Berthd::start();
    let logs = b.dir.path().join("logs");
    let pc = pod_config("ckpt", &logs);
    let pod = b.run_pod(&pc).unwrap();
    let ctr = b
        .create(&pod, &container_config("app", "exec sleep 1000"), &pc)
        .unwrap();
    let location = b.dir.path().join("ckpt.tar");
    let mut rs = b.rs.clone();
    let mut checkpoint = |id: &str, location: &std::path::Path| {
        b.call(
            "CheckpointContainer",
            rs.checkpoint_container(CheckpointContainerRequest {
                container_id: id.to_string(),
                location: location.display().to_string(),
                timeout: 30,
            }),
        )
    };
    let err = checkpoint(&ctr, &location).unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "created, not running: {err:?}"
    );
    b.start_ctr(&ctr).unwrap();
    let err = checkpoint(&ctr, std::path::Path::new("relative.tar")).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    match checkpoint(&ctr, &location) {
        Ok(_) => {
            let mut names: Vec<String> = tar::Archive::new(fs::File::open(&location).unwrap())
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().display().to_string())
                .collect();
            names.sort();
            assert!(
                names.iter().any(|n| n.starts_with("checkpoint/")),
                "{names:?}"
            );
            assert!(names.contains(&"config.json".to_string()), "{names:?}");
        }
        Err(e) => {
            assert!(!criu_works(), "criu check passes, yet: {e:?}");
            berth_testkit::skip(
                "checkpoint_container_writes_an_archive_or_says_why_criu_cannot",
                "`criu check` fails on this kernel; only the error path was tested",
            );
            assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
            assert!(
                e.message().contains(&ctr[..12]) || e.message().contains(&ctr),
                "{e:?}"
            );
            assert!(e.message().to_lowercase().contains("criu"), "{e:?}");
            assert!(!location.exists(), "no archive on failure");
        }
    }
    // The container runs on either way (a forensic checkpoint leaves it running).
    let r = b.exec_sync(&ctr, &["true"], 10).unwrap();
    assert_eq!(r.exit_code, 0);
    assert!(
        fs::read_dir(b.run_dir().join("checkpoints"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true),
        "no checkpoint work directory left"
    );
    b.remove_pod(&pod).unwrap();
}

#[test]
fn images_of_the_shared_store() {
    if skip_unless_root("images_of_the_shared_store") {
        return;
    }
    let b = Berthd::start();
    let mut is = b.is.clone();
    let spec = ImageSpec {
        image: berth_image::builtin::NAME.into(),
        ..Default::default()
    };
    let st = b
        .call(
            "ImageStatus",
            is.image_status(ImageStatusRequest {
                image: Some(spec.clone()),
                verbose: true,
            }),
        )
        .unwrap();
    let img = st.image.expect("the built-in image");
    assert!(img.id.starts_with("sha256:"));
    assert!(img
        .repo_tags
        .contains(&berth_image::builtin::NAME.to_string()));
    assert!(img.repo_digests.iter().all(|d| d.contains("@sha256:")));
    let missing = b
        .call(
            "ImageStatus",
            is.image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: "localhost/no-such-image:1".into(),
                    ..Default::default()
                }),
                verbose: false,
            }),
        )
        .unwrap();
    assert!(missing.image.is_none(), "absent is not an error");
    let list = b
        .call(
            "ListImages",
            is.list_images(ListImagesRequest { filter: None }),
        )
        .unwrap();
    assert!(list.images.iter().any(|i| i.id == img.id));
    let by_id = b
        .call(
            "ImageStatus",
            is.image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: img.id.clone(),
                    ..Default::default()
                }),
                verbose: false,
            }),
        )
        .unwrap();
    assert_eq!(by_id.image.unwrap().id, img.id, "found by its ID too");
    let fsinfo = b
        .call("ImageFsInfo", is.image_fs_info(ImageFsInfoRequest {}))
        .unwrap();
    let u = &fsinfo.image_filesystems[0];
    assert!(u.used_bytes.as_ref().unwrap().value > 0);
    assert!(u.inodes_used.as_ref().unwrap().value > 0);
    // A registry that is not there fails the pull with a message naming the image.
    let err = b
        .call(
            "PullImage",
            is.pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: "127.0.0.1:1/nothing/here:1".into(),
                    ..Default::default()
                }),
                auth: None,
                sandbox_config: None,
            }),
        )
        .unwrap_err();
    assert!(err.message().contains("127.0.0.1:1"), "{err:?}");
}

#[test]
fn a_pod_runs_logs_execs_stops_and_leaves_nothing() {
    if skip_unless_root("a_pod_runs_logs_execs_stops_and_leaves_nothing") {
        return;
    }
    let b = Berthd::start();
    let logs = b.dir.path().join("logs");
    let pc = pod_config("life", &logs);
    let pod = b.run_pod(&pc).unwrap();
    assert_eq!(
        b.run_pod(&pc).unwrap(),
        pod,
        "a retry gets the same sandbox"
    );
    let ps = b.pod_status(&pod).unwrap();
    assert_eq!(ps.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(ps.annotations["note"], "kept");
    assert!(ps.created_at > 0);

    let cc = container_config(
        "app",
        "echo hello; echo err >&2; echo host=$(hostname); cat /etc/resolv.conf; \
         echo uid=$(id -u); exec sleep 1000",
    );
    let ctr = b.create(&pod, &cc, &pc).unwrap();
    assert_eq!(
        b.status(&ctr).unwrap().state,
        ContainerState::ContainerCreated as i32
    );
    let err = b.create(&pod, &cc, &pc).unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    b.start_ctr(&ctr).unwrap();
    let s = b.status(&ctr).unwrap();
    assert_eq!(s.state, ContainerState::ContainerRunning as i32);
    assert!(s.started_at >= s.created_at);
    let log = logs.join("app/0.log");
    assert_eq!(s.log_path, log.display().to_string());
    let texts = wait_for("the container's output in its log", || {
        let t = log_texts(&log);
        t.iter().any(|l| l == "uid=0").then_some(t)
    });
    for want in [
        "hello",
        "err",
        "host=life-host",
        "nameserver 10.96.0.10",
        "search berth-test.svc.cluster.local",
        "options ndots:5",
    ] {
        assert!(texts.iter().any(|l| l == want), "{want:?} in {texts:?}");
    }
    let raw = fs::read_to_string(&log).unwrap();
    assert!(raw.lines().any(|l| l.contains(" stderr F err")), "{raw}");

    // Lists and filters.
    let by_label = b.containers(Some(ContainerFilter {
        label_selector: [("ctr".to_string(), "app".to_string())].into(),
        ..Default::default()
    }));
    assert_eq!(by_label.len(), 1);
    assert_eq!(by_label[0].id, ctr);
    let none = b.containers(Some(ContainerFilter {
        state: Some(ContainerStateValue {
            state: ContainerState::ContainerExited as i32,
        }),
        ..Default::default()
    }));
    assert!(none.is_empty());
    assert_eq!(
        b.containers(Some(ContainerFilter {
            id: ctr[..12].to_string(),
            ..Default::default()
        }))
        .len(),
        1,
        "a prefix of the id finds it"
    );

    // Statistics from the container's cgroup and its writable layer.
    let mut rs = b.rs.clone();
    let st = b
        .call(
            "ContainerStats",
            rs.container_stats(ContainerStatsRequest {
                container_id: ctr.clone(),
            }),
        )
        .unwrap()
        .stats
        .unwrap();
    assert_eq!(st.attributes.as_ref().unwrap().id, ctr);
    assert!(
        st.cpu
            .as_ref()
            .unwrap()
            .usage_core_nano_seconds
            .as_ref()
            .unwrap()
            .value
            > 0
    );
    assert!(
        st.memory
            .as_ref()
            .unwrap()
            .working_set_bytes
            .as_ref()
            .unwrap()
            .value
            > 0
    );
    assert!(st.writable_layer.is_some());
    let all = b
        .call(
            "ListContainerStats",
            rs.list_container_stats(ListContainerStatsRequest {
                filter: Some(ContainerStatsFilter {
                    pod_sandbox_id: pod.clone(),
                    ..Default::default()
                }),
            }),
        )
        .unwrap()
        .stats;
    assert_eq!(all.len(), 1);
    let ps = b
        .call(
            "PodSandboxStats",
            rs.pod_sandbox_stats(PodSandboxStatsRequest {
                pod_sandbox_id: pod.clone(),
            }),
        )
        .unwrap()
        .stats
        .unwrap();
    let linux = ps.linux.unwrap();
    assert_eq!(linux.containers.len(), 1);
    assert!(linux.process.unwrap().process_count.unwrap().value >= 1);

    // ExecSync: output, exit code, timeout.
    let r = b
        .exec_sync(&ctr, &["sh", "-c", "echo out; echo e >&2; exit 3"], 10)
        .unwrap();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"out\n"[..], &b"e\n"[..], 3)
    );
    let err = b.exec_sync(&ctr, &["sleep", "100"], 1).unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");

    // Stop: sh as pid 1 ignores SIGTERM, so the timeout ends in SIGKILL.
    b.stop_ctr(&ctr, 1).unwrap();
    let s = b.wait_state(&ctr, ContainerState::ContainerExited);
    assert_eq!(s.exit_code, 137, "{s:?}");
    assert_eq!(s.reason, "Error");
    assert!(s.finished_at >= s.started_at);
    let err = b.exec_sync(&ctr, &["true"], 5).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    b.remove_ctr(&ctr).unwrap();
    b.remove_ctr(&ctr).unwrap();
    assert_eq!(b.status(&ctr).unwrap_err().code(), Code::NotFound);
    b.stop_pod(&pod).unwrap();
    assert_eq!(
        b.pod_status(&pod).unwrap().state,
        PodSandboxState::SandboxNotready as i32
    );
    b.remove_pod(&pod).unwrap();
    b.remove_pod(&pod).unwrap();
    b.stop_pod(&pod).unwrap();
    assert!(b.pods().is_empty());
    // Only the netns directory's own mount stays (as /run/netns does for ip netns).
    let netns_dir = b.run_dir().join("netns");
    let left: Vec<_> = mounts_under(b.dir.path())
        .into_iter()
        .filter(|m| std::path::Path::new(m) != netns_dir)
        .collect();
    assert!(left.is_empty(), "mounts left: {left:?}");
    assert!(
        fs::read_dir(&netns_dir).unwrap().next().is_none(),
        "no netns left"
    );
    assert!(processes_with(&pod).is_empty(), "the shim is gone");
    assert!(fs::read_dir(b.run_dir().join("pods"))
        .unwrap()
        .next()
        .is_none());
    assert!(fs::read_dir(b.state_dir().join("containers"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn containers_and_logs_survive_a_killed_berthd_and_exits_while_down_are_reported() {
    if skip_unless_root(
        "containers_and_logs_survive_a_killed_berthd_and_exits_while_down_are_reported",
    ) {
        return;
    }
    let mut b = Berthd::start();
    let logs = b.dir.path().join("logs");
    let pc = pod_config("restart", &logs);
    let pod = b.run_pod(&pc).unwrap();
    let ticker = b
        .create(
            &pod,
            &container_config(
                "ticker",
                "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
            ),
            &pc,
        )
        .unwrap();
    let ender = b
        .create(
            &pod,
            &container_config("ender", "read x < /tmp/fifo 2>/dev/null; sleep 1000"),
            &pc,
        )
        .unwrap();
    b.start_ctr(&ticker).unwrap();
    b.start_ctr(&ender).unwrap();
    let ender_pid = {
        let mut rs = b.rs.clone();
        let r = b
            .call(
                "ContainerStatus",
                rs.container_status(ContainerStatusRequest {
                    container_id: ender.clone(),
                    verbose: true,
                }),
            )
            .unwrap();
        let info: serde_json::Value = serde_json::from_str(&r.info["info"]).unwrap();
        info["pid"].as_i64().unwrap() as i32
    };

    b.kill9();
    // With berthd gone the ticker still logs: its shim writes the log.
    let log = logs.join("ticker/0.log");
    let before = log_texts(&log).len();
    wait_for("ticks while berthd is down", || {
        (log_texts(&log).len() > before + 5).then_some(())
    });
    // An exit while berthd is down.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ender_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    b.spawn();
    let pods = b.pods();
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].id, pod);
    assert_eq!(
        b.status(&ticker).unwrap().state,
        ContainerState::ContainerRunning as i32
    );
    let s = b.wait_state(&ender, ContainerState::ContainerExited);
    assert_eq!(s.exit_code, 137, "{s:?}");
    // Name reservations came back too.
    let err = b
        .create(&pod, &container_config("ticker", "true"), &pc)
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    // And a retried RunPodSandbox still finds the pod.
    assert_eq!(b.run_pod(&pc).unwrap(), pod);
    let r = b.exec_sync(&ticker, &["echo", "still"], 10).unwrap();
    assert_eq!(r.stdout, b"still\n");
    b.remove_pod(&pod).unwrap();
    assert!(processes_with(&pod).is_empty());
}

#[test]
fn bad_requests_get_their_codes_and_leave_nothing() {
    if skip_unless_root("bad_requests_get_their_codes_and_leave_nothing") {
        return;
    }
    let b = Berthd::start();
    let logs = b.dir.path().join("logs");
    let mut pc = pod_config("bad", &logs);
    pc.metadata.as_mut().unwrap().uid.clear();
    let err = b.run_pod(&pc).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("uid"), "{err:?}");

    let pc = pod_config("bad", &logs);
    let mut rs = b.rs.clone();
    let err = b
        .call(
            "RunPodSandbox",
            rs.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pc.clone()),
                runtime_handler: "kata-nope".into(),
            }),
        )
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("kata-nope"), "{err:?}");
    assert!(b.pods().is_empty(), "a refused pod leaves no record");

    let pod = b.run_pod(&pc).unwrap();
    let mut cc = container_config("img", "true");
    cc.image = Some(ImageSpec {
        image: "localhost/not-here:1".into(),
        ..Default::default()
    });
    let err = b.create(&pod, &cc, &pc).unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("localhost/not-here:1"), "{err:?}");

    // A mount whose host path is missing: refused, and nothing of the container stays.
    let mut cc = container_config("mnt", "true");
    cc.mounts = vec![Mount {
        container_path: "/data".into(),
        host_path: "/no/such/berthd/dir".into(),
        ..Default::default()
    }];
    let err = b.create(&pod, &cc, &pc).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("/no/such/berthd/dir"), "{err:?}");
    assert!(fs::read_dir(b.state_dir().join("containers"))
        .unwrap()
        .next()
        .is_none());
    let snaps = b.dir.path().join("root/snapshots/containers");
    assert!(
        fs::read_dir(&snaps).unwrap().next().is_none(),
        "no snapshot left"
    );
    // The name is free again.
    let mut ok = container_config("mnt", "true");
    ok.mounts.clear();
    let id = b.create(&pod, &ok, &pc).unwrap();

    for (what, r) in [
        ("StartContainer", b.start_ctr("nosuch")),
        ("StopContainer", b.stop_ctr("nosuch", 0)),
    ] {
        assert_eq!(r.unwrap_err().code(), Code::NotFound, "{what}");
    }
    assert_eq!(b.pod_status("nosuch").unwrap_err().code(), Code::NotFound);
    b.start_ctr(&id).unwrap();
    b.wait_state(&id, ContainerState::ContainerExited);
    let err = b.start_ctr(&id).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    b.remove_pod(&pod).unwrap();
}

/// An HTTP GET of `/` at `addr`; None while nothing answers.
fn http_get(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn a_pod_on_a_bridge_network_gets_an_ip_and_its_host_port_on_127_0_0_1() {
    if skip_unless_root("a_pod_on_a_bridge_network_gets_an_ip_and_its_host_port_on_127_0_0_1") {
        return;
    }
    if !std::path::Path::new("/usr/lib/cni/bridge").exists() {
        panic!("the test needs Debian's containernetworking-plugins (/usr/lib/cni)");
    }
    let b = Berthd::start_private_net(|dir| {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "berth-test-bridge",
            "plugins": [
                {"type": "bridge", "bridge": "berthbr0", "isGateway": true, "ipMasq": false,
                 "ipam": {"type": "host-local", "dataDir": dir.join("ipam"),
                          "ranges": [[{"subnet": "10.88.99.0/24"}]],
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
                {"type": "loopback"}
            ]
        })
        .to_string()
    });
    let logs = b.dir.path().join("logs");
    let mut pc = pod_config("web", &logs);
    pc.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port: 18080,
        host_ip: String::new(),
    }];
    let pod = b.run_pod(&pc).unwrap();
    let ip = b.pod_status(&pod).unwrap().network.unwrap().ip;
    assert!(ip.starts_with("10.88.99."), "pod IP {ip:?}");
    let ctr = b
        .create(
            &pod,
            &container_config(
                "httpd",
                "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 8080 -h /www",
            ),
            &pc,
        )
        .unwrap();
    b.start_ctr(&ctr).unwrap();
    let r = b
        .exec_sync(&ctr, &["ip", "-4", "addr", "show", "eth0"], 10)
        .unwrap();
    assert!(String::from_utf8_lossy(&r.stdout).contains(&ip), "{r:?}");
    let page = b.in_net(|| wait_for("the hostPort on 127.0.0.1", || http_get("127.0.0.1:18080")));
    assert!(page.contains("hello-from-pod"), "{page}");
    let direct = b.in_net(|| wait_for("the pod's own address", || http_get(&format!("{ip}:8080"))));
    assert!(direct.contains("hello-from-pod"));

    let mut rs = b.rs.clone();
    let ps = b
        .call(
            "PodSandboxStats",
            rs.pod_sandbox_stats(PodSandboxStatsRequest {
                pod_sandbox_id: pod.clone(),
            }),
        )
        .unwrap()
        .stats
        .unwrap();
    let eth0 = ps
        .linux
        .unwrap()
        .network
        .unwrap()
        .default_interface
        .unwrap();
    assert_eq!(eth0.name, "eth0");
    assert!(eth0.rx_bytes.unwrap().value > 0 && eth0.tx_bytes.unwrap().value > 0);

    // StopPodSandbox runs DEL: the address goes back, the namespace goes.
    let allocated = b.dir.path().join("ipam/berth-test-bridge").join(&ip);
    assert!(allocated.exists(), "host-local holds {ip}");
    b.stop_pod(&pod).unwrap();
    assert!(!allocated.exists(), "the address is released");
    assert!(fs::read_dir(b.run_dir().join("netns"))
        .unwrap()
        .next()
        .is_none());
    assert!(
        b.in_net(|| http_get("127.0.0.1:18080")).is_none(),
        "the port is closed"
    );
    b.remove_pod(&pod).unwrap();
}

/// A plugin that fails ADD: RunPodSandbox fails with its message, and nothing of the pod
/// stays (no record, netns, shim, mount; the name is free for the retry).
#[test]
fn a_failing_network_plugin_fails_the_pod_and_leaves_nothing() {
    if skip_unless_root("a_failing_network_plugin_fails_the_pod_and_leaves_nothing") {
        return;
    }
    let b = Berthd::start_private_net(|dir| {
        let plugin = dir.join("plugins/berth-fail");
        fs::create_dir_all(dir.join("plugins")).unwrap();
        fs::write(
            &plugin,
            "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then\n\
             echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"berth-fail refuses\",\"details\":\"on purpose\"}'\n\
             exit 1\nfi\nexit 0\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&plugin, fs::Permissions::from_mode(0o755)).unwrap();
        r#"{"cniVersion": "1.0.0", "name": "berth-test-fail",
            "plugins": [{"type": "loopback"}, {"type": "berth-fail"}]}"#
            .to_string()
    });
    let pc = pod_config("nonet", &b.dir.path().join("logs"));
    let err = b.run_pod(&pc).unwrap_err();
    assert!(
        err.message().contains("berth-fail refuses") && err.message().contains("on purpose"),
        "{err:?}"
    );
    assert!(b.pods().is_empty());
    assert!(fs::read_dir(b.run_dir().join("netns"))
        .unwrap()
        .next()
        .is_none());
    assert!(fs::read_dir(b.run_dir().join("pods"))
        .unwrap()
        .next()
        .is_none());
    assert!(fs::read_dir(b.state_dir().join("pods"))
        .unwrap()
        .next()
        .is_none());
    let netns_dir = b.run_dir().join("netns");
    let left: Vec<_> = mounts_under(b.dir.path())
        .into_iter()
        .filter(|m| std::path::Path::new(m) != netns_dir)
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // The name is not held: the same pod fails again the same way, not "reserved".
    let again = b.run_pod(&pc).unwrap_err();
    assert!(again.message().contains("berth-fail refuses"), "{again:?}");
}

/// A WebSocket client of berthd's streaming server (tungstenite: an implementation of the
/// framing independent of ours), speaking Kubernetes' channel protocol.
mod ws {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    pub type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

    pub async fn connect(url: &str, protocol: &str) -> Ws {
        let ws_url = url.replacen("http://", "ws://", 1);
        let mut req = ws_url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        let host = ws_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let sock = tokio::net::TcpStream::connect(host).await.unwrap();
        let (ws, resp) = tokio_tungstenite::client_async(req, sock).await.unwrap();
        assert_eq!(
            resp.headers()["Sec-WebSocket-Protocol"].to_str().unwrap(),
            protocol
        );
        ws
    }

    pub async fn send(ws: &mut Ws, channel: u8, data: &[u8]) {
        let mut m = vec![channel];
        m.extend_from_slice(data);
        ws.send(Message::Binary(m.into())).await.unwrap();
    }

    /// Reads until the server closes: the bytes of each channel.
    pub async fn collect(ws: &mut Ws) -> std::collections::BTreeMap<u8, Vec<u8>> {
        let mut out = std::collections::BTreeMap::new();
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(b) = m {
                if !b.is_empty() {
                    out.entry(b[0])
                        .or_insert_with(Vec::new)
                        .extend_from_slice(&b[1..]);
                }
            }
        }
        out
    }

    /// Reads until channel `ch` has produced something containing `needle`.
    pub async fn until(ws: &mut Ws, ch: u8, needle: &str) -> String {
        let mut got = Vec::new();
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(b) = m {
                if b.first() == Some(&ch) {
                    got.extend_from_slice(&b[1..]);
                    if String::from_utf8_lossy(&got).contains(needle) {
                        break;
                    }
                }
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }
}

/// The URL of an exec of `cmd` in `ctr`; `io`: tty, stdin, stdout, stderr.
fn exec_url(b: &Berthd, ctr: &str, cmd: Vec<String>, io: [bool; 4]) -> String {
    let mut rs = b.rs.clone();
    b.call(
        "Exec",
        rs.exec(ExecRequest {
            container_id: ctr.to_string(),
            cmd,
            tty: io[0],
            stdin: io[1],
            stdout: io[2],
            stderr: io[3],
        }),
    )
    .unwrap()
    .url
}

#[test]
fn exec_attach_and_port_forward_through_the_streaming_server() {
    if skip_unless_root("exec_attach_and_port_forward_through_the_streaming_server") {
        return;
    }
    let b = Berthd::start();
    let pc = pod_config("streams", &b.dir.path().join("logs"));
    let pod = b.run_pod(&pc).unwrap();
    let mut cc = container_config(
        "app",
        "httpd -p 8080 -h /etc; while read l; do echo got:$l; done",
    );
    cc.stdin = true;
    let ctr = b.create(&pod, &cc, &pc).unwrap();
    b.start_ctr(&ctr).unwrap();
    let mut rs = b.rs.clone();

    // Exec without a terminal: stdin in, both streams out, the exit code in the v5 status.
    let url = exec_url(
        &b,
        &ctr,
        vec![
            "sh".into(),
            "-c".into(),
            "read x; echo out:$x; echo err >&2; exit 3".into(),
        ],
        [false, true, true, true],
    );
    let got = b.block_on("exec", async {
        let mut s = ws::connect(&url, "v5.channel.k8s.io").await;
        ws::send(&mut s, 0, b"hello\n").await;
        ws::send(&mut s, 255, &[0]).await; // v5: stdin is done
        ws::collect(&mut s).await
    });
    assert_eq!(String::from_utf8_lossy(&got[&1]), "out:hello\n");
    assert_eq!(String::from_utf8_lossy(&got[&2]), "err\n");
    let status = String::from_utf8_lossy(&got[&3]).into_owned();
    assert!(
        status.contains("NonZeroExitCode") && status.contains("\"3\""),
        "{status}"
    );

    // With a terminal: the size sent on the resize channel reaches the command's terminal.
    let url = exec_url(
        &b,
        &ctr,
        vec!["sh".into(), "-c".into(), "read x; stty size; exit 0".into()],
        [true, true, true, false],
    );
    let got = b.block_on("exec -t", async {
        let mut s = ws::connect(&url, "v5.channel.k8s.io").await;
        ws::send(&mut s, 4, br#"{"Width":101,"Height":31}"#).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        ws::send(&mut s, 0, b"go\r").await;
        ws::collect(&mut s).await
    });
    let out = String::from_utf8_lossy(&got[&1]).into_owned();
    assert!(out.contains("31 101"), "{out:?}");
    assert!(
        String::from_utf8_lossy(&got[&3]).contains("Success"),
        "{got:?}"
    );

    // A command that leaves a process holding its stdout still ends the session.
    let url = exec_url(
        &b,
        &ctr,
        vec!["sh".into(), "-c".into(), "sleep 4567 & echo bg".into()],
        [false, false, true, false],
    );
    let got = b.block_on("exec with a background process", async {
        let mut s = ws::connect(&url, "v5.channel.k8s.io").await;
        ws::collect(&mut s).await
    });
    assert_eq!(String::from_utf8_lossy(&got[&1]), "bg\n");
    assert!(String::from_utf8_lossy(&got[&3]).contains("Success"));

    // An exec whose client leaves is killed with what it started.
    let url = exec_url(
        &b,
        &ctr,
        vec!["sh".into(), "-c".into(), "sleep 3456 & sleep 3456".into()],
        [false, false, true, false],
    );
    b.block_on("exec, then leave", async {
        let s = ws::connect(&url, "v5.channel.k8s.io").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(s);
    });
    wait_for("the abandoned exec's processes to go", || {
        processes_with("sleep 3456").is_empty().then_some(())
    });

    // Attach: stdin reaches the container's own, its output comes back.
    let url = b
        .call(
            "Attach",
            rs.attach(AttachRequest {
                container_id: ctr.clone(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: false,
            }),
        )
        .unwrap()
        .url;
    let echoed = b.block_on("attach", async {
        let mut s = ws::connect(&url, "v5.channel.k8s.io").await;
        ws::send(&mut s, 0, b"ping\n").await;
        ws::until(&mut s, 1, "got:ping").await
    });
    assert!(echoed.contains("got:ping"), "{echoed:?}");

    // stdin_once: when the first attach closes its stdin, the container reads EOF.
    let mut once = container_config("once", "cat; echo stdin-closed");
    once.stdin = true;
    once.stdin_once = true;
    let once = b.create(&pod, &once, &pc).unwrap();
    b.start_ctr(&once).unwrap();
    let url = b
        .call(
            "Attach",
            rs.attach(AttachRequest {
                container_id: once.clone(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: false,
            }),
        )
        .unwrap()
        .url;
    let out = b.block_on("attach, stdin once", async {
        let mut s = ws::connect(&url, "v5.channel.k8s.io").await;
        ws::send(&mut s, 0, b"ping\n").await;
        ws::send(&mut s, 255, &[0]).await; // v5: stdin is done
        ws::until(&mut s, 1, "stdin-closed").await
    });
    assert!(out.contains("ping\nstdin-closed"), "{out:?}");
    let st = b.wait_state(&once, ContainerState::ContainerExited);
    assert_eq!(st.exit_code, 0, "{st:?}");

    // Port-forward: the pod's own 127.0.0.1:8080, inside its network namespace.
    let url = b
        .call(
            "PortForward",
            rs.port_forward(PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![8080],
            }),
        )
        .unwrap()
        .url;
    let page = b.block_on("port-forward", async {
        let mut s = ws::connect(&format!("{url}?port=8080"), "v4.channel.k8s.io").await;
        ws::send(&mut s, 0, b"GET /hostname HTTP/1.0\r\n\r\n").await;
        ws::until(&mut s, 0, "streams-host").await
    });
    assert!(
        page.contains("200 OK") && page.contains("streams-host"),
        "{page:?}"
    );

    // Exec into what is not running is refused before any URL is made.
    let err = b
        .call(
            "Exec",
            rs.exec(ExecRequest {
                container_id: "nosuch".into(),
                cmd: vec!["true".into()],
                stdout: true,
                ..Default::default()
            }),
        )
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    b.remove_pod(&pod).unwrap();
}

/// A gRPC client of the kind that sends the socket's path as `:authority` (crictl 1.26,
/// grpc-java, grpc-python): written frame by frame here, since every maintained Rust
/// client sends a valid one. h2 alone would answer PROTOCOL_ERROR; berthd answers.
#[test]
fn a_client_sending_the_socket_path_as_authority_is_served() {
    use std::io::{Read, Write};
    if skip_unless_root("a_client_sending_the_socket_path_as_authority_is_served") {
        return;
    }
    let b = Berthd::start();
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let len = (payload.len() as u32).to_be_bytes();
        let s = stream.to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, s[0], s[1], s[2], s[3]];
        f.extend_from_slice(payload);
        f
    };
    let path = b.socket.to_string_lossy().into_owned();
    let headers: Vec<(Vec<u8>, Vec<u8>)> = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/runtime.v1.RuntimeService/Version"),
        (":authority", path.as_str()),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    .iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out.extend(frame(
        0x1,
        0x4,
        1,
        &berthd::authority::encode_literals(&headers),
    ));
    // VersionRequest { version: "v1" } as a gRPC message.
    out.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 4, 0x0a, 2, b'v', b'1']));
    let mut s = std::os::unix::net::UnixStream::connect(&b.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&out).unwrap();
    let mut dec = loona_hpack::Decoder::new();
    let mut seen = Vec::new();
    let mut body = Vec::new();
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).expect("the server's frames");
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut p = vec![0u8; len];
        s.read_exact(&mut p).unwrap();
        match head[3] {
            0x4 if head[4] & 1 == 0 => s.write_all(&frame(0x4, 1, 0, &[])).unwrap(),
            0x3 | 0x7 => panic!("the server reset the request: frame type {}", head[3]),
            0x1 => {
                seen.extend(dec.decode(&p).unwrap());
                if head[4] & 1 != 0 {
                    break;
                }
            }
            0x0 => body.extend_from_slice(&p),
            _ => {}
        }
    }
    let has = |n: &str, v: &str| seen.contains(&(n.as_bytes().to_vec(), v.as_bytes().to_vec()));
    assert!(has(":status", "200") && has("grpc-status", "0"), "{seen:?}");
    assert!(body.windows(5).any(|w| w == b"berth"), "{body:?}");
}

/// The `CapBnd` mask of `/proc/self/status` as ExecSync in `ctr` sees it.
fn cap_bnd(b: &Berthd, ctr: &str) -> u64 {
    let r = b.exec_sync(ctr, &["cat", "/proc/self/status"], 10).unwrap();
    let text = String::from_utf8_lossy(&r.stdout).to_string();
    let hex = text
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap_or_else(|| panic!("no CapBnd in {text}"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

/// This process's own bounding set, as the same mask.
fn own_cap_bnd() -> u64 {
    caps::read(None, caps::CapSet::Bounding)
        .unwrap()
        .into_iter()
        .fold(0, |m, c| m | c.bitmask())
}

#[test]
fn security_contexts_privileged_capabilities_and_seccomp() {
    if skip_unless_root("security_contexts_privileged_capabilities_and_seccomp") {
        return;
    }
    let b = Berthd::start();
    let logs = b.dir.path().join("logs");
    let mut pc = pod_config("secctx", &logs);
    pc.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .privileged = true;
    let pod = b.run_pod(&pc).unwrap();
    let block_hostname = b.dir.path().join("block-hostname.json");
    fs::write(
        &block_hostname,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sethostname"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let localhost = Some(SecurityProfile {
        profile_type: security_profile::ProfileType::Localhost as i32,
        localhost_ref: block_hostname.display().to_string(),
    });
    let unconfined = Some(SecurityProfile {
        profile_type: security_profile::ProfileType::Unconfined as i32,
        localhost_ref: String::new(),
    });
    let run = |name: &str, sc: LinuxContainerSecurityContext| -> String {
        let mut cc = container_config(name, "exec sleep 1000");
        cc.linux = Some(LinuxContainerConfig {
            security_context: Some(sc),
            ..Default::default()
        });
        let id = b.create(&pod, &cc, &pc).unwrap();
        b.start_ctr(&id).unwrap();
        id
    };
    let sethostname = |ctr: &str| b.exec_sync(ctr, &["hostname", "ANewHostName"], 10).unwrap();

    // Privileged: every capability berthd holds (this host lacks CAP_SYS_RESOURCE, so
    // "every capability the kernel knows" would fail capset), and no seccomp at all,
    // even with a profile that blocks sethostname.
    let privileged = run(
        "privileged",
        LinuxContainerSecurityContext {
            privileged: true,
            seccomp: localhost.clone(),
            ..Default::default()
        },
    );
    assert_eq!(cap_bnd(&b, &privileged), own_cap_bnd());
    let r = sethostname(&privileged);
    assert_eq!(r.exit_code, 0, "{r:?}");

    // Adding "ALL" is the same set.
    let all = run(
        "all",
        LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_capabilities: vec!["ALL".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    assert_eq!(cap_bnd(&b, &all), own_cap_bnd());

    // SYS_ADMIN allows sethostname (the pod's own UTS namespace); a profile blocks it.
    let sys_admin = Some(Capability {
        add_capabilities: vec!["SYS_ADMIN".into()],
        ..Default::default()
    });
    let open = run(
        "sysadmin",
        LinuxContainerSecurityContext {
            capabilities: sys_admin.clone(),
            seccomp: unconfined,
            ..Default::default()
        },
    );
    let r = sethostname(&open);
    assert_eq!(r.exit_code, 0, "{r:?}");
    let blocked = run(
        "blocked",
        LinuxContainerSecurityContext {
            capabilities: sys_admin,
            seccomp: localhost,
            ..Default::default()
        },
    );
    let r = sethostname(&blocked);
    assert_ne!(r.exit_code, 0, "{r:?}");
    // The built-in profile grants what a capability allows, as docker's does: with
    // SYS_ADMIN added, sethostname passes it.
    let runtime_default = Some(SecurityProfile {
        profile_type: security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    let default_admin = run(
        "default-admin",
        LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_capabilities: vec!["SYS_ADMIN".into()],
                ..Default::default()
            }),
            seccomp: runtime_default.clone(),
            ..Default::default()
        },
    );
    let r = sethostname(&default_admin);
    assert_eq!(r.exit_code, 0, "{r:?}");
    let default_plain = run(
        "default-plain",
        LinuxContainerSecurityContext {
            seccomp: runtime_default,
            ..Default::default()
        },
    );
    let r = sethostname(&default_plain);
    assert_ne!(r.exit_code, 0, "{r:?}");
    // Default capabilities hold no SYS_ADMIN: the call is refused by the kernel.
    let plain = run("plain", LinuxContainerSecurityContext::default());
    let r = sethostname(&plain);
    assert_ne!(r.exit_code, 0, "{r:?}");
    b.stop_pod(&pod).unwrap();
    b.remove_pod(&pod).unwrap();
}

/// One pod on `handler`: a container that logs, runs ExecSync, stops and goes. Returns
/// the ExecSync output of `probe` in it, or the error that made the pod or container fail.
fn pod_on_handler(b: &Berthd, handler: &str, probe: &[&str]) -> Result<String, tonic::Status> {
    let logs = b.dir.path().join(format!("logs-{handler}"));
    let pc = pod_config(&format!("on-{handler}"), &logs);
    let mut rs = b.rs.clone();
    let pod = b
        .call(
            "RunPodSandbox",
            rs.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pc.clone()),
                runtime_handler: handler.into(),
            }),
        )?
        .pod_sandbox_id;
    let ps = b.pod_status(&pod).unwrap();
    assert_eq!(ps.runtime_handler, handler);
    let r = (|| {
        let ctr = b.create(
            &pod,
            &container_config("app", "echo hello; exec sleep 1000"),
            &pc,
        )?;
        b.start_ctr(&ctr)?;
        let log = logs.join("app/0.log");
        wait_for("the container's output", || {
            log_texts(&log).iter().any(|l| l == "hello").then_some(())
        });
        let r = b.exec_sync(&ctr, probe, 20)?;
        assert_eq!(r.exit_code, 0, "{r:?}");
        let out = String::from_utf8_lossy(&r.stdout).into_owned();
        let r = b.exec_sync(&ctr, &["sh", "-c", "exit 7"], 20)?;
        assert_eq!(r.exit_code, 7);
        // A terminal: the runtime sends the pty master over its console socket.
        let mut tty = container_config("tty", "test -t 1 && echo on-a-tty");
        tty.tty = true;
        let t = b.create(&pod, &tty, &pc)?;
        b.start_ctr(&t)?;
        let log = logs.join("tty/0.log");
        wait_for("the terminal container's output", || {
            log_texts(&log)
                .iter()
                .any(|l| l == "on-a-tty")
                .then_some(())
        });
        let mut rs = b.rs.clone();
        let st = b
            .call(
                "ContainerStats",
                rs.container_stats(ContainerStatsRequest {
                    container_id: ctr.clone(),
                }),
            )?
            .stats
            .unwrap();
        assert!(st.memory.is_some(), "{handler}: memory statistics: {st:?}");
        b.stop_ctr(&ctr, 2)?;
        let s = b.wait_state(&ctr, ContainerState::ContainerExited);
        assert!(matches!(s.exit_code, 137 | 143), "{s:?}");
        b.remove_ctr(&ctr)?;
        Ok(out)
    })();
    b.stop_pod(&pod).unwrap();
    b.remove_pod(&pod).unwrap();
    assert!(
        processes_with(&pod).is_empty(),
        "{handler}: the shim is gone"
    );
    r
}

#[test]
fn oci_runtime_binaries_serve_as_runtime_handlers() {
    const TEST: &str = "oci_runtime_binaries_serve_as_runtime_handlers";
    if skip_unless_root(TEST) {
        return;
    }
    let runc = "/usr/sbin/runc";
    let crun = "/usr/bin/crun";
    let runsc = "/usr/bin/runsc";
    // This runsc's own sandbox network cannot start here: it uses the pod's namespace
    // with its host network mode.
    let b = Berthd::start_with_config(&format!(
        "[runtimes.runc]\npath = {runc:?}\n[runtimes.crun]\npath = {crun:?}\n\
         [runtimes.runsc]\npath = {runsc:?}\noptions = [\"--network=host\"]\n"
    ));
    let mut rs = b.rs.clone();
    let st = b
        .call("Status", rs.status(StatusRequest { verbose: false }))
        .unwrap();
    let names: Vec<_> = st
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(names, ["berth", "crun", "runc", "runsc"]);

    for (handler, path) in [("runc", runc), ("crun", crun), ("runsc", runsc)] {
        if !std::path::Path::new(path).exists() {
            berth_testkit::skip(TEST, &format!("{path} is not installed"));
            continue;
        }
        match pod_on_handler(&b, handler, &["cat", "/proc/version"]) {
            Ok(version) => {
                // gVisor's kernel says so; runc and crun show the host's.
                let host = fs::read_to_string("/proc/version").unwrap();
                if handler == "runsc" {
                    assert_ne!(version, host, "runsc runs its own kernel: {version}");
                } else {
                    assert_eq!(version, host);
                    let root = b.run_dir().join("runtimes").join(handler);
                    assert!(root.is_dir(), "{handler} kept its state under {root:?}");
                }
            }
            // crun 1.8 refuses hosts with both cgroup v1 controllers and a v2 mount.
            Err(e)
                if handler == "crun"
                    && fs::metadata("/sys/fs/cgroup/unified/cgroup.controllers").is_ok() =>
            {
                assert!(e.message().contains("crun"), "{e:?}");
                berth_testkit::skip(
                    TEST,
                    &format!("crun refuses this hybrid cgroup host: {}", e.message()),
                );
            }
            Err(e) => panic!("{handler}: {e:?}"),
        }
    }
    // A handler the config does not name is refused by name.
    let err = b
        .call(
            "RunPodSandbox",
            rs.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_config("nope", b.dir.path())),
                runtime_handler: "kata".into(),
            }),
        )
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("\"kata\""), "{err:?}");
    assert!(b.pods().is_empty());
}

#[test]
fn reopen_container_log_after_a_rename_loses_no_line() {
    if skip_unless_root("reopen_container_log_after_a_rename_loses_no_line") {
        return;
    }
    let b = Berthd::start();
    let logs = b.dir.path().join("logs");
    let pc = pod_config("rotate", &logs);
    let pod = b.run_pod(&pc).unwrap();
    let cc = container_config("count", "i=0; while true; do i=$((i+1)); echo $i; done");
    let ctr = b.create(&pod, &cc, &pc).unwrap();
    b.start_ctr(&ctr).unwrap();
    let log = logs.join("count/0.log");
    wait_for("the first lines", || {
        (log_texts(&log).len() > 10).then_some(())
    });
    // The kubelet's rotation: rename, then ReopenContainerLog.
    let rotated = logs.join("count/0.log.20261207-000000");
    fs::rename(&log, &rotated).unwrap();
    let mut rs = b.rs.clone();
    b.call(
        "ReopenContainerLog",
        rs.reopen_container_log(ReopenContainerLogRequest {
            container_id: ctr.clone(),
        }),
    )
    .unwrap();
    wait_for("lines in the new log", || {
        (log_texts(&log).len() > 1000).then_some(())
    });
    b.stop_ctr(&ctr, 0).unwrap();
    b.wait_state(&ctr, ContainerState::ContainerExited);
    let (old, new) = (log_texts(&rotated), log_texts(&log));
    assert!(!old.is_empty() && !new.is_empty());
    let numbers: Vec<u64> = old
        .into_iter()
        .chain(new)
        .map(|l| l.parse().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert!(
        numbers == expected,
        "a line was lost or repeated across the reopen"
    );
    // A stopped container's log cannot be reopened.
    let err = b
        .call(
            "ReopenContainerLog",
            rs.reopen_container_log(ReopenContainerLogRequest {
                container_id: ctr.clone(),
            }),
        )
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    b.remove_pod(&pod).unwrap();
}

#[test]
fn events_pod_stats_resource_updates_and_runtime_config() {
    const TEST: &str = "events_pod_stats_resource_updates_and_runtime_config";
    if skip_unless_root(TEST) {
        return;
    }
    let b = Berthd::start();
    let mut rs = b.rs.clone();
    b.call(
        "UpdateRuntimeConfig",
        rs.update_runtime_config(UpdateRuntimeConfigRequest {
            runtime_config: Some(RuntimeConfig {
                network_config: Some(NetworkConfig {
                    pod_cidr: "10.244.0.0/24".into(),
                }),
            }),
        }),
    )
    .unwrap();
    let mut events = b
        .call(
            "GetContainerEvents",
            rs.get_container_events(GetEventsRequest {}),
        )
        .unwrap();
    let logs = b.dir.path().join("logs");
    let pc = pod_config("events", &logs);
    let pod = b.run_pod(&pc).unwrap();
    let ctr = b
        .create(&pod, &container_config("app", "exec sleep 1000"), &pc)
        .unwrap();
    b.start_ctr(&ctr).unwrap();

    // Resources change while it runs: the memory limit as the container's cgroup has it.
    let limit = 96 << 20;
    b.call(
        "UpdateContainerResources",
        rs.update_container_resources(UpdateContainerResourcesRequest {
            container_id: ctr.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: limit,
                cpu_period: 100_000,
                cpu_quota: 50_000,
                ..Default::default()
            }),
            ..Default::default()
        }),
    )
    .unwrap();
    let r = b
        .exec_sync(
            &ctr,
            &[
                "sh",
                "-c",
                "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
            ],
            10,
        )
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        limit.to_string(),
        "{r:?}"
    );
    // The update leaves the device rules alone: /dev/null stays writable.
    let r = b
        .exec_sync(&ctr, &["sh", "-c", "echo x > /dev/null"], 10)
        .unwrap();
    assert_eq!(r.exit_code, 0, "{r:?}");

    let stats = b
        .call(
            "ListPodSandboxStats",
            rs.list_pod_sandbox_stats(ListPodSandboxStatsRequest {
                filter: Some(PodSandboxStatsFilter {
                    id: pod.clone(),
                    ..Default::default()
                }),
            }),
        )
        .unwrap()
        .stats;
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].attributes.as_ref().unwrap().id, pod);
    assert_eq!(stats[0].linux.as_ref().unwrap().containers.len(), 1);

    b.stop_ctr(&ctr, 0).unwrap();
    b.remove_ctr(&ctr).unwrap();
    // The kubelet's PLEG stream saw each step, in order.
    let seen = b.block_on("container events", async {
        let mut seen = Vec::new();
        while seen.len() < 4 {
            match tokio::time::timeout(CALL_LIMIT, events.message()).await {
                Ok(Ok(Some(e))) if e.container_id == ctr => seen.push(e.container_event_type),
                Ok(Ok(Some(_))) => {}
                other => panic!("events ended early after {seen:?}: {other:?}"),
            }
        }
        seen
    });
    assert_eq!(
        seen,
        [
            ContainerEventType::ContainerCreatedEvent as i32,
            ContainerEventType::ContainerStartedEvent as i32,
            ContainerEventType::ContainerStoppedEvent as i32,
            ContainerEventType::ContainerDeletedEvent as i32,
        ]
    );
    b.remove_pod(&pod).unwrap();
}

#[test]
fn mount_propagation_both_ways_and_host_to_container() {
    if skip_unless_root("mount_propagation_both_ways_and_host_to_container") {
        return;
    }
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let b = Berthd::start();
    let logs = b.dir.path().join("logs");
    let mut pc = pod_config("propagation", &logs);
    pc.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .privileged = true;
    let pod = b.run_pod(&pc).unwrap();
    let mut cases = Vec::new();
    for (name, flag, prop) in [
        (
            "shared",
            MsFlags::MS_SHARED,
            MountPropagation::PropagationBidirectional,
        ),
        (
            "slave",
            MsFlags::MS_SHARED,
            MountPropagation::PropagationHostToContainer,
        ),
    ] {
        // As the kubelet's volume: a bind of itself with the propagation set.
        let src = b.dir.path().join(format!("vol-{name}"));
        fs::create_dir_all(src.join("from-host")).unwrap();
        mount(
            Some(&src),
            &src,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap();
        mount(
            None::<&str>,
            &src,
            None::<&str>,
            flag | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap();
        let mut cc = container_config(name, "exec sleep 1000");
        cc.mounts = vec![Mount {
            container_path: src.display().to_string(),
            host_path: src.display().to_string(),
            propagation: prop as i32,
            ..Default::default()
        }];
        cc.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        });
        let ctr = b.create(&pod, &cc, &pc).unwrap();
        b.start_ctr(&ctr).unwrap();
        cases.push((name, src, ctr));
    }
    for (name, src, ctr) in &cases {
        // Host to container: a mount made on the host after the start shows inside.
        let tmp = src.join("from-host");
        mount(
            Some("tmpfs"),
            &tmp,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        fs::write(tmp.join("flag"), "host").unwrap();
        let r = b
            .exec_sync(ctr, &["cat", &tmp.join("flag").display().to_string()], 10)
            .unwrap();
        assert_eq!(r.stdout, b"host", "{name}: {r:?}");
        // Container to host: only the bidirectional mount carries it back.
        let inner = src.join("from-container");
        let script = format!("mkdir -p {0} && mount --bind /etc {0}", inner.display());
        let r = b.exec_sync(ctr, &["sh", "-c", &script], 10).unwrap();
        assert_eq!(r.exit_code, 0, "{name}: {r:?}");
        let seen = inner.join("passwd").exists();
        assert_eq!(
            seen,
            *name == "shared",
            "{name}: the container's mount on the host"
        );
        let _ = umount2(&inner, MntFlags::MNT_DETACH);
        let _ = umount2(&tmp, MntFlags::MNT_DETACH);
    }
    b.remove_pod(&pod).unwrap();
    for (_, src, _) in &cases {
        umount2(src, MntFlags::MNT_DETACH).unwrap();
    }
}

#[test]
fn streams_left_open_never_block_stop_container() {
    if skip_unless_root("streams_left_open_never_block_stop_container") {
        return;
    }
    let b = Berthd::start();
    let pc = pod_config("stuck", &b.dir.path().join("logs"));
    let pod = b.run_pod(&pc).unwrap();
    let mut cc = container_config("app", "exec sleep 1000");
    cc.stdin = true;
    let ctr = b.create(&pod, &cc, &pc).unwrap();
    b.start_ctr(&ctr).unwrap();
    let mut rs = b.rs.clone();
    // An exec waiting on its stdin and an attach, both left open by clients that never
    // read nor write again.
    let exec = exec_url(&b, &ctr, vec!["cat".into()], [false, true, true, false]);
    let attach = b
        .call(
            "Attach",
            rs.attach(AttachRequest {
                container_id: ctr.clone(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: true,
            }),
        )
        .unwrap()
        .url;
    let (mut e, mut a) = b.block_on("open the streams", async {
        (
            ws::connect(&exec, "v5.channel.k8s.io").await,
            ws::connect(&attach, "v5.channel.k8s.io").await,
        )
    });
    wait_for("the exec's cat", || {
        (!processes_with("cat").is_empty()).then_some(())
    });
    // sleep as PID 1 ignores SIGTERM: the timeout ends in SIGKILL, streams or not.
    b.stop_ctr(&ctr, 1).unwrap();
    let s = b.wait_state(&ctr, ContainerState::ContainerExited);
    assert_eq!(s.exit_code, 137, "{s:?}");
    // Both streams are ended by the server, not left hanging.
    b.block_on("the streams to close", async {
        let limit = Duration::from_secs(30);
        tokio::time::timeout(limit, ws::collect(&mut e))
            .await
            .expect("the exec stream ends with its container");
        tokio::time::timeout(limit, ws::collect(&mut a))
            .await
            .expect("the attach stream ends with its container");
    });
    b.remove_pod(&pod).unwrap();
}
