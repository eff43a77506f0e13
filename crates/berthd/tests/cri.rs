//! berthd driven over CRI v1 as the kubelet drives it, with real pods and containers of the
//! built-in busybox image (no registry, no network). Root only.

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use k8s_cri::v1::*;
use tonic::Code;

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
