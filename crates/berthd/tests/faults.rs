//! berthd under load and under faults: a hundred pods at once, berthd killed in the middle
//! of RunPodSandbox and of an ExecSync, and a real fault at each step of RunPodSandbox,
//! CreateContainer and StartContainer (bad requests, a failing or broken CNI plugin, a shim
//! that cannot start, paths that cannot be made). After each failure the call has its gRPC
//! code and a message naming the object and the cause, nothing of the object is left on the
//! host (records, snapshots, network namespaces, mounts, processes, cgroups), and its name
//! can be used again. Root only; no test hooks in berthd: every fault is a real one.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use futures_util::future::join_all;
use k8s_cri::v1::*;
use tonic::{Code, Status};

/// A cgroup parent of the test's own, so that the containers' cgroups can be counted
/// whatever else runs on the machine; dropped, it removes the (then empty) parent that the
/// runtime made and, like runc, left. Made before the test's berthd, so that it is dropped
/// after berthd's cleanup.
struct CgroupParent(String);

impl std::ops::Deref for CgroupParent {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        remove_cgroup_parent(&self.0);
    }
}

fn cgroup_parent(test: &str) -> CgroupParent {
    CgroupParent(format!("/berthd-faults-{}-{test}", std::process::id()))
}

/// The harness's pod config, with its containers' cgroups under `cgroup_parent`.
fn pod_in(name: &str, logs: &Path, cgroup_parent: &str) -> PodSandboxConfig {
    let mut pc = pod_config(name, logs);
    pc.linux.as_mut().unwrap().cgroup_parent = cgroup_parent.to_string();
    pc
}

/// Whether `msg` names the pod: by its name, or as `pod <id>` (berthd's 64-hex ids).
fn names_pod(msg: &str, name: &str) -> bool {
    msg.contains(&format!("{name:?}"))
        || msg.contains(&format!("pod {name}"))
        || msg.match_indices("pod ").any(|(i, _)| {
            let id = &msg[i + 4..];
            id.len() >= 64 && id[..64].bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// Asserts the code of a failed call and that its message has every one of `words`.
fn assert_failed(what: &str, err: &Status, code: Code, words: &[&str]) {
    eprintln!("{what}: {:?}: {}", err.code(), err.message());
    assert_eq!(err.code(), code, "{what}: {err:?}");
    for w in words {
        assert!(
            err.message().contains(w),
            "{what}: the message should name {w:?}: {:?}",
            err.message()
        );
    }
}

/// What a container may have left: its record (and bundle), its snapshot and the mounts
/// under it, libberth's state, its cgroup under the pod's `cgroup_parent`.
fn container_leftovers(b: &Berthd, cgroup_parent: &str) -> Vec<String> {
    let mut out = Vec::new();
    let snaps = b.root_dir().join("snapshots/containers");
    for (what, dir) in [
        ("container record", b.state_dir().join("containers")),
        ("snapshot", snaps.clone()),
        ("libberth state", b.run_dir().join("runtime")),
    ] {
        for e in entries(&dir) {
            out.push(format!("{what} {}", dir.join(e).display()));
        }
    }
    for m in mounts_under(&snaps) {
        out.push(format!("mount {m}"));
    }
    for d in cgroups_under(cgroup_parent) {
        out.push(format!("cgroup {}", d.display()));
    }
    out
}

/// A network of a bridge with host-local addresses (under `<dir>/ipam`), then the test's
/// own plugin `then`.
fn bridge_then(dir: &Path, name: &str, bridge: &str, subnet: &str, then: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "dataDir": dir.join("ipam"),
                      "ranges": [[{"subnet": subnet}]]}},
            {"type": then}
        ]
    })
    .to_string()
}

/// The addresses host-local holds in its directory for a network.
fn allocated_ips(dir: &Path) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter(|e| e.parse::<std::net::IpAddr>().is_ok())
        .collect()
}

// ---- 1. A hundred pods at once ------------------------------------------------------------

/// 100 RunPodSandbox + CreateContainer + StartContainer at once over one connection; all
/// succeed and run; then 100 StopPodSandbox + RemovePodSandbox at once, and nothing is
/// left. The times are printed, never asserted.
#[test]
fn a_hundred_pods_start_and_go_at_once_and_leave_nothing() {
    if skip_unless_root("a_hundred_pods_start_and_go_at_once_and_leave_nothing") {
        return;
    }
    const N: usize = 100;
    let cg = cgroup_parent("hundred");
    let b = Berthd::start();
    let logs = b.dir.path().join("logs");
    let configs: Vec<PodSandboxConfig> = (0..N)
        .map(|i| pod_in(&format!("many-{i:03}"), &logs, &cg))
        .collect();
    let t0 = Instant::now();
    let made = b.block_on_for(
        "100 pods started at once",
        Duration::from_secs(300),
        join_all(configs.iter().map(|pc| {
            let mut rs = b.rs.clone();
            async move {
                let name = pc.metadata.as_ref().unwrap().name.clone();
                let pod = rs
                    .run_pod_sandbox(RunPodSandboxRequest {
                        config: Some(pc.clone()),
                        runtime_handler: String::new(),
                    })
                    .await
                    .map_err(|e| format!("{name}: RunPodSandbox: {e:?}"))?
                    .into_inner()
                    .pod_sandbox_id;
                let ctr = rs
                    .create_container(CreateContainerRequest {
                        pod_sandbox_id: pod.clone(),
                        config: Some(container_config("sleeper", "exec sleep 1000")),
                        sandbox_config: Some(pc.clone()),
                    })
                    .await
                    .map_err(|e| format!("{name}: CreateContainer: {e:?}"))?
                    .into_inner()
                    .container_id;
                rs.start_container(StartContainerRequest {
                    container_id: ctr.clone(),
                })
                .await
                .map_err(|e| format!("{name}: StartContainer: {e:?}"))?;
                Ok::<_, String>((pod, ctr))
            }
        })),
    );
    let started = t0.elapsed();
    let failed: Vec<&String> = made.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {N} failed: {failed:#?}",
        failed.len()
    );
    let made: Vec<(String, String)> = made.into_iter().map(Result::unwrap).collect();
    eprintln!("{N} pods with a running container each, started at once: {started:?}");

    for (pod, ctr) in &made {
        let ps = b.pod_status(pod).unwrap();
        assert_eq!(ps.state, PodSandboxState::SandboxReady as i32, "{ps:?}");
        let cs = b.status(ctr).unwrap();
        assert_eq!(cs.state, ContainerState::ContainerRunning as i32, "{cs:?}");
    }
    assert_eq!(b.pods().len(), N);
    let running = b.containers(Some(ContainerFilter {
        state: Some(ContainerStateValue {
            state: ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    }));
    assert_eq!(running.len(), N);
    // Each container has its cgroup (so that "none left" below means something).
    let cgroups = cgroups_under(&cg);
    for (_, ctr) in &made {
        assert!(
            cgroups.iter().any(|d| d.ends_with(ctr)),
            "no cgroup of {ctr} under {}",
            &*cg
        );
    }
    assert_eq!(
        processes_with(&b.run_dir().join("pods").to_string_lossy()).len(),
        2 * N,
        "a shim and its pause per pod"
    );

    let t1 = Instant::now();
    let gone = b.block_on_for(
        "100 pods stopped and removed at once",
        Duration::from_secs(300),
        join_all(made.iter().map(|(pod, _)| {
            let mut rs = b.rs.clone();
            async move {
                rs.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                })
                .await
                .map_err(|e| format!("{pod}: StopPodSandbox: {e:?}"))?;
                rs.remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                })
                .await
                .map_err(|e| format!("{pod}: RemovePodSandbox: {e:?}"))?;
                Ok::<_, String>(())
            }
        })),
    );
    let removed = t1.elapsed();
    let failed: Vec<&String> = gone.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {N} failed: {failed:#?}",
        failed.len()
    );
    eprintln!("{N} pods stopped and removed at once: {removed:?}");

    assert!(b.pods().is_empty());
    assert!(b.containers(None).is_empty());
    b.assert_clean("removing 100 pods");
    let left = cgroups_under(&cg);
    assert!(left.is_empty(), "cgroups left: {left:#?}");
}

// ---- 2. berthd killed in the middle of RunPodSandbox ---------------------------------------

/// A CNI plugin for a chain: on ADD, while `<dir>/slow` exists, it first writes its pid to
/// `<dir>/adding` and waits (up to 60 s) for `slow` to go; then it hands its input to
/// Debian's loopback plugin, which passes the previous result on. DEL succeeds.
fn slow_plugin(dir: &Path) -> String {
    format!(
        "#!/bin/sh\n\
         conf=$(cat)\n\
         [ \"$CNI_COMMAND\" = ADD ] || exit 0\n\
         if [ -e {slow} ]; then\n\
           echo $$ > {adding}.tmp && mv {adding}.tmp {adding}\n\
           i=0\n\
           while [ -e {slow} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n\
         fi\n\
         printf '%s' \"$conf\" | exec /usr/lib/cni/loopback\n",
        slow = dir.join("slow").display(),
        adding = dir.join("adding").display(),
    )
}

/// Starts berthd on a bridge network whose second plugin blocks its ADD, SIGKILLs berthd
/// while a RunPodSandbox (of a pod under cgroup parent `cg`) waits on it, and starts berthd
/// again. Gives berthd, the pod's config and the pods listed after the restart, each
/// checked to be NotReady (never Ready without a shim), to have no shim, and to refuse
/// containers.
fn kill_berthd_mid_run_pod_sandbox(cg: &str) -> (Berthd, PodSandboxConfig, Vec<PodSandbox>) {
    let mut b = Berthd::start_private_net(|dir| {
        fs::create_dir_all(dir.join("plugins")).unwrap();
        write_script(&dir.join("plugins/berth-slow"), &slow_plugin(dir));
        bridge_then(
            dir,
            "berth-test-slow",
            "berthbr1",
            "10.88.98.0/24",
            "berth-slow",
        )
    });
    let dir = b.dir.path().to_path_buf();
    fs::write(dir.join("slow"), "").unwrap();
    let pc = pod_in("halfmade", &dir.join("logs"), cg);

    // RunPodSandbox on a thread of its own, with its own client.
    let socket = b.socket.clone();
    let req = pc.clone();
    let call = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut rs = runtime_client(&socket);
            tokio::time::timeout(
                Duration::from_secs(90),
                rs.run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(req),
                    runtime_handler: String::new(),
                }),
            )
            .await
        })
    });
    let plugin_pid: i32 = wait_for("the blocking CNI ADD to begin", || {
        fs::read_to_string(dir.join("adding"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    });
    assert_eq!(
        allocated_ips(&dir.join("ipam/berth-test-slow")).len(),
        1,
        "the bridge's ADD has taken an address"
    );
    b.kill9();
    let r = call.join().unwrap().expect("the call ends with berthd");
    assert!(r.is_err(), "RunPodSandbox cannot have succeeded: {r:?}");
    // The orphaned plugin ends (the crash does not wait for it); later ADDs do not block.
    fs::remove_file(dir.join("slow")).unwrap();
    wait_for("the orphaned plugin to end", || {
        (!Path::new(&format!("/proc/{plugin_pid}")).exists()).then_some(())
    });

    b.spawn();
    let left: Vec<PodSandbox> = b.pods();
    assert!(left.len() <= 1, "{left:?}");
    for p in &left {
        assert_eq!(
            p.state,
            PodSandboxState::SandboxNotready as i32,
            "a pod whose RunPodSandbox never finished is not Ready: {p:?}"
        );
        assert_eq!(p.metadata, pc.metadata);
        assert!(processes_with(&p.id).is_empty(), "no shim runs for it");
        let err = b
            .create(&p.id, &container_config("nope", "true"), &pc)
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    }
    (b, pc, left)
}

/// Runs a container in `pod` and an ExecSync in it.
fn check_pod_runs(b: &Berthd, pod: &str, pc: &PodSandboxConfig) {
    let ps = b.pod_status(pod).unwrap();
    assert_eq!(ps.state, PodSandboxState::SandboxReady as i32, "{ps:?}");
    let ip = ps.network.unwrap().ip;
    assert!(ip.starts_with("10.88.98."), "the pod's address: {ip:?}");
    let ctr = b
        .create(pod, &container_config("app", "exec sleep 1000"), pc)
        .unwrap();
    b.start_ctr(&ctr).unwrap();
    let r = b.exec_sync(&ctr, &["echo", "ok"], 10).unwrap();
    assert_eq!(r.stdout, b"ok\n");
}

/// Removes every pod, then checks that nothing is left, addresses included.
fn remove_all_and_check(b: &Berthd, cg: &str, after: &str) {
    for p in b.pods() {
        b.remove_pod(&p.id).unwrap();
    }
    assert!(b.pods().is_empty());
    b.assert_clean(after);
    let ips = allocated_ips(&b.dir.path().join("ipam/berth-test-slow"));
    assert!(
        ips.is_empty(),
        "after {after}: addresses still allocated: {ips:?}"
    );
    let veths = b.in_net(|| {
        std::process::Command::new("ip")
            .args(["-o", "link", "show", "master", "berthbr1"])
            .output()
            .unwrap()
    });
    assert!(
        veths.stdout.is_empty(),
        "after {after}: links left on the bridge: {}",
        String::from_utf8_lossy(&veths.stdout)
    );
    assert!(cgroups_under(cg).is_empty());
}

/// berthd SIGKILLed while RunPodSandbox waits on a CNI ADD: removing the pod the crash
/// left (the kubelet's way: it sees the NotReady sandbox and removes it) undoes everything
/// the ADD had done (the bridge's address and link), the network namespace, the shm mount
/// and the records; then the same metadata makes a Ready pod.
#[test]
fn berthd_killed_mid_run_pod_sandbox_then_remove_leaves_nothing() {
    if skip_unless_root("berthd_killed_mid_run_pod_sandbox_then_remove_leaves_nothing") {
        return;
    }
    let cg = cgroup_parent("killrm");
    let (b, pc, left) = kill_berthd_mid_run_pod_sandbox(&cg);
    for p in &left {
        b.stop_pod(&p.id).unwrap();
        b.remove_pod(&p.id).unwrap();
        assert_eq!(b.pod_status(&p.id).unwrap_err().code(), Code::NotFound);
    }
    b.assert_clean("removing the pod left by the crash");
    let ips = allocated_ips(&b.dir.path().join("ipam/berth-test-slow"));
    assert!(
        ips.is_empty(),
        "the address the interrupted ADD took is still allocated: {ips:?}"
    );
    let pod = b.run_pod(&pc).unwrap();
    check_pod_runs(&b, &pod, &pc);
    remove_all_and_check(&b, &cg, "removing the retried pod");
}

/// berthd SIGKILLed while RunPodSandbox waits on a CNI ADD: the retry of RunPodSandbox
/// with the same metadata (a kubelet that retries the call it lost) gets a Ready pod, and
/// removing all pods then leaves nothing.
#[test]
fn berthd_killed_mid_run_pod_sandbox_then_a_retry_gets_a_ready_pod() {
    if skip_unless_root("berthd_killed_mid_run_pod_sandbox_then_a_retry_gets_a_ready_pod") {
        return;
    }
    let cg = cgroup_parent("killretry");
    let (b, pc, left) = kill_berthd_mid_run_pod_sandbox(&cg);
    let pod = b
        .run_pod(&pc)
        .unwrap_or_else(|e| panic!("the retried RunPodSandbox failed: {e:?}"));
    check_pod_runs(&b, &pod, &pc);
    for p in left.iter().filter(|p| p.id != pod) {
        b.remove_pod(&p.id).unwrap();
    }
    assert_eq!(
        b.pod_status(&pod).unwrap().state,
        PodSandboxState::SandboxReady as i32,
        "removing what the crash left leaves the retried pod alone"
    );
    remove_all_and_check(&b, &cg, "removing the retried pod and what the crash left");
}

// ---- 3. berthd killed in the middle of an ExecSync -----------------------------------------

/// berthd SIGKILLed while an ExecSync runs: the container, its shim and its log go on, the
/// orphaned exec ends by itself; after the restart the container is Running, ExecSync
/// works, and stopping and removing clean up.
#[test]
fn berthd_killed_mid_exec_sync_leaves_the_container_running() {
    if skip_unless_root("berthd_killed_mid_exec_sync_leaves_the_container_running") {
        return;
    }
    let cg = cgroup_parent("killexec");
    let mut b = Berthd::start();
    let logs = b.dir.path().join("logs");
    let pc = pod_in("execkill", &logs, &cg);
    let pod = b.run_pod(&pc).unwrap();
    let ctr = b
        .create(
            &pod,
            &container_config(
                "ticker",
                "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
            ),
            &pc,
        )
        .unwrap();
    b.start_ctr(&ctr).unwrap();
    let pid = {
        let mut rs = b.rs.clone();
        let r = b
            .call(
                "ContainerStatus",
                rs.container_status(ContainerStatusRequest {
                    container_id: ctr.clone(),
                    verbose: true,
                }),
            )
            .unwrap();
        let info: serde_json::Value = serde_json::from_str(&r.info["info"]).unwrap();
        info["pid"].as_i64().unwrap() as i32
    };
    let shims = processes_with(&pod);
    assert!(!shims.is_empty(), "the pod's shim runs");

    // The exec, on a thread of its own with its own client.
    let marker = format!("sleep 5; echo done {}", std::process::id());
    let socket = b.socket.clone();
    let (id, script) = (ctr.clone(), marker.clone());
    let call = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut rs = runtime_client(&socket);
            tokio::time::timeout(
                Duration::from_secs(60),
                rs.exec_sync(ExecSyncRequest {
                    container_id: id,
                    cmd: vec!["sh".into(), "-c".into(), script],
                    timeout: 30,
                }),
            )
            .await
        })
    });
    wait_for("the exec to run in the container", || {
        (!processes_with(&marker).is_empty()).then_some(())
    });
    b.kill9();
    let r = call.join().unwrap().expect("the call ends with berthd");
    assert!(r.is_err(), "the exec's caller lost berthd: {r:?}");

    // berthd is down: the container, its shim and its log go on.
    let log = logs.join("ticker/0.log");
    let before = log_texts(&log).len();
    wait_for("ticks while berthd is down", || {
        (log_texts(&log).len() > before + 5).then_some(())
    });
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the container runs"
    );
    for s in &shims {
        assert!(Path::new(&format!("/proc/{s}")).exists(), "the shim runs");
    }

    b.spawn();
    assert_eq!(
        b.status(&ctr).unwrap().state,
        ContainerState::ContainerRunning as i32
    );
    let r = b.exec_sync(&ctr, &["echo", "after"], 10).unwrap();
    assert_eq!((r.stdout.as_slice(), r.exit_code), (&b"after\n"[..], 0));
    // The orphaned exec ends by itself and is reaped: nothing of it stays.
    wait_for("the orphaned exec to end", || {
        processes_with(&marker).is_empty().then_some(())
    });
    let r = b
        .exec_sync(&ctr, &["sh", "-c", "echo again; exit 4"], 10)
        .unwrap();
    assert_eq!((r.stdout.as_slice(), r.exit_code), (&b"again\n"[..], 4));
    let after = log_texts(&log).len();
    wait_for("ticks after the restart", || {
        (log_texts(&log).len() > after + 3).then_some(())
    });

    b.stop_ctr(&ctr, 1).unwrap();
    let s = b.wait_state(&ctr, ContainerState::ContainerExited);
    assert_eq!(s.exit_code, 137, "{s:?}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    b.remove_pod(&pod).unwrap();
    assert!(b.pods().is_empty());
    b.assert_clean("removing the pod");
    assert!(cgroups_under(&cg).is_empty());
}

// ---- 4. A fault at each step: RunPodSandbox --------------------------------------------------

/// Runs `pc`, which must fail with one of `codes` and a message naming the pod and every
/// one of `words`; then nothing of the pod may be left, and (with `fixed`, the same
/// metadata and a good config) the name must be free again.
fn pod_fails(
    b: &Berthd,
    what: &str,
    pc: &PodSandboxConfig,
    codes: &[Code],
    words: &[&str],
    fixed: Option<&PodSandboxConfig>,
) {
    let r = b.run_pod(pc);
    let err = match r {
        Err(e) => e,
        Ok(id) => {
            // Say what the accepted pod does with a container, for the diagnosis.
            let ctr = b.create(&id, &container_config("probe", "exec sleep 1000"), pc);
            let started = ctr.as_ref().ok().map(|c| b.start_ctr(c));
            let resolv = match (&ctr, &started) {
                (Ok(c), Some(Ok(()))) => b
                    .exec_sync(c, &["cat", "/etc/resolv.conf"], 10)
                    .map(|r| String::from_utf8_lossy(&r.stdout).into_owned())
                    .ok(),
                _ => None,
            };
            let _ = b.remove_pod(&id);
            panic!(
                "{what}: RunPodSandbox succeeded ({id}); should fail with {codes:?} naming \
                 {words:?}. A container in it: create {ctr:?}, start {started:?}, \
                 its /etc/resolv.conf {resolv:?}"
            );
        }
    };
    assert!(codes.contains(&err.code()), "{what}: {err:?}");
    assert_failed(what, &err, err.code(), words);
    let name = &pc
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    assert!(
        names_pod(err.message(), name),
        "{what}: the message should name the pod: {:?}",
        err.message()
    );
    assert!(b.pods().is_empty(), "{what}: no pod is listed");
    b.assert_clean(what);
    if let Some(good) = fixed {
        let id = b
            .run_pod(good)
            .unwrap_or_else(|e| panic!("{what}: then the good config: {e:?}"));
        b.remove_pod(&id).unwrap();
        b.assert_clean(&format!("{what}, then removing the good pod"));
    }
}

/// Refusals of the pod's own config, before and after its network namespace exists.
#[test]
fn invalid_pod_configs_fail_run_pod_sandbox_and_leave_nothing() {
    if skip_unless_root("invalid_pod_configs_fail_run_pod_sandbox_and_leave_nothing") {
        return;
    }
    let b = Berthd::start();
    let logs = b.dir.path().join("logs");
    let good = pod_config("badpod", &logs);

    let mut pc = good.clone();
    pc.metadata.as_mut().unwrap().namespace.clear();
    pod_fails(
        &b,
        "no namespace",
        &pc,
        &[Code::InvalidArgument],
        &["namespace"],
        Some(&good),
    );

    let mut pc = good.clone();
    pc.hostname = "a/b".into();
    pod_fails(
        &b,
        "a hostname with a slash",
        &pc,
        &[Code::InvalidArgument],
        &["a/b"],
        Some(&good),
    );

    let mut pc = good.clone();
    pc.hostname = "h".repeat(65);
    pod_fails(
        &b,
        "a hostname of 65 characters",
        &pc,
        &[Code::InvalidArgument],
        &["hostname"],
        None,
    );

    // These are found once the network namespace is made: it must go again.
    let mut pc = good.clone();
    pc.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 80,
        host_port: 70000,
        host_ip: String::new(),
    }];
    pod_fails(
        &b,
        "a host port out of range",
        &pc,
        &[Code::InvalidArgument],
        &["70000"],
        Some(&good),
    );

    let mut pc = good.clone();
    pc.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 80,
        host_port: 8080,
        host_ip: "not-an-address".into(),
    }];
    pod_fails(
        &b,
        "a host IP that is not an address",
        &pc,
        &[Code::InvalidArgument],
        &["not-an-address"],
        Some(&good),
    );
}

/// A DNS config that would write a broken or injected resolv.conf is refused.
#[test]
fn a_bad_dns_config_fails_run_pod_sandbox_and_leaves_nothing() {
    if skip_unless_root("a_bad_dns_config_fails_run_pod_sandbox_and_leaves_nothing") {
        return;
    }
    let b = Berthd::start();
    let good = pod_config("baddns", &b.dir.path().join("logs"));
    let mut pc = good.clone();
    pc.dns_config.as_mut().unwrap().searches = vec!["svc.local\nnameserver 6.6.6.6".into()];
    pod_fails(
        &b,
        "a DNS search domain with a newline",
        &pc,
        &[Code::InvalidArgument],
        &["svc.local"],
        Some(&good),
    );
    let mut pc = good.clone();
    pc.dns_config.as_mut().unwrap().servers = vec!["not-an-address".into()];
    pod_fails(
        &b,
        "a DNS server that is not an address",
        &pc,
        &[Code::InvalidArgument],
        &["not-an-address"],
        Some(&good),
    );
}

/// A pod sysctl that cannot be set fails the pod, as the pause's would under containerd
/// (the kubelet then reports the sandbox, not each container, as failing).
#[test]
fn a_bad_sysctl_fails_run_pod_sandbox_and_leaves_nothing() {
    if skip_unless_root("a_bad_sysctl_fails_run_pod_sandbox_and_leaves_nothing") {
        return;
    }
    let b = Berthd::start();
    let good = pod_config("badsysctl", &b.dir.path().join("logs"));
    for (key, value, codes) in [
        // Not isolated by any namespace: it would change the host.
        ("vm.swappiness", "10", &[Code::InvalidArgument][..]),
        // Namespaced by its name, but the kernel has none such: found when it is set.
        (
            "net.ipv4.berth_no_such_sysctl",
            "1",
            &[Code::InvalidArgument, Code::Internal][..],
        ),
    ] {
        let mut pc = good.clone();
        pc.linux
            .as_mut()
            .unwrap()
            .sysctls
            .insert(key.into(), value.into());
        pod_fails(
            &b,
            &format!("sysctl {key}"),
            &pc,
            codes,
            &[key],
            Some(&good),
        );
    }
}

/// Checks that no address is held and no link is on `bridge`, in berthd's network.
fn assert_network_undone(b: &Berthd, network: &str, bridge: &str, after: &str) {
    let ips = allocated_ips(&b.dir.path().join("ipam").join(network));
    assert!(
        ips.is_empty(),
        "after {after}: addresses still allocated: {ips:?}"
    );
    let bridge = bridge.to_string();
    let links = b.in_net(move || {
        std::process::Command::new("ip")
            .args(["-o", "link", "show", "master", &bridge])
            .output()
            .unwrap()
    });
    assert!(
        links.stdout.is_empty(),
        "after {after}: links left on the bridge: {}",
        String::from_utf8_lossy(&links.stdout)
    );
}

/// CNI faults that cri.rs's failing plugin does not cover, each after the bridge's ADD
/// took an address: a plugin that prints no result, one that fails without a word of JSON,
/// one that is not installed. The address and the link must go back each time.
#[test]
fn cni_faults_after_an_address_was_taken_are_undone() {
    if skip_unless_root("cni_faults_after_an_address_was_taken_are_undone") {
        return;
    }
    let b = Berthd::start_private_net(|dir| {
        let plugins = dir.join("plugins");
        fs::create_dir_all(&plugins).unwrap();
        write_script(
            &plugins.join("berth-garbage"),
            "#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] || exit 0\n\
             echo 'this is not JSON'\nexit 0\n",
        );
        write_script(
            &plugins.join("berth-mute"),
            "#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] || exit 0\n\
             echo 'berth-mute: cannot go on' >&2\nexit 1\n",
        );
        bridge_then(
            dir,
            "berth-test-cni",
            "berthbr2",
            "10.88.97.0/24",
            "berth-garbage",
        )
    });
    let conflist = b.dir.path().join("net.d/10-test.conflist");
    let pc = pod_config("cnifault", &b.dir.path().join("logs"));
    let set_second = |plugin: &str| {
        fs::write(
            &conflist,
            bridge_then(
                b.dir.path(),
                "berth-test-cni",
                "berthbr2",
                "10.88.97.0/24",
                plugin,
            ),
        )
        .unwrap();
    };

    for (plugin, codes, words) in [
        (
            "berth-garbage",
            &[Code::Internal][..],
            &["berth-garbage"][..],
        ),
        (
            "berth-mute",
            &[Code::Internal][..],
            &["berth-mute", "cannot go on"][..],
        ),
        (
            "berth-not-installed",
            &[Code::Internal, Code::FailedPrecondition][..],
            &["berth-not-installed"][..],
        ),
    ] {
        set_second(plugin);
        let what = format!("a pod on a network with {plugin}");
        let err = b.run_pod(&pc).unwrap_err();
        assert!(codes.contains(&err.code()), "{what}: {err:?}");
        assert_failed(&what, &err, err.code(), words);
        assert!(names_pod(err.message(), "cnifault"), "{what}: {err:?}");
        assert!(b.pods().is_empty(), "{what}");
        b.assert_clean(&what);
        assert_network_undone(&b, "berth-test-cni", "berthbr2", &what);
    }
    // With a good chain the same pod runs: its name was never kept.
    set_second("loopback");
    let pod = b.run_pod(&pc).unwrap();
    let ip = b.pod_status(&pod).unwrap().network.unwrap().ip;
    assert!(ip.starts_with("10.88.97."), "{ip:?}");
    b.remove_pod(&pod).unwrap();
    b.assert_clean("removing the good pod");
    assert_network_undone(&b, "berth-test-cni", "berthbr2", "removing the good pod");
}

/// The configured shim binary fails (exits 1 with a message, or exits 0 without serving):
/// RunPodSandbox fails with the shim's words, after CNI ADD had given the pod an address,
/// and everything is undone; with the real shim back the same pod runs.
#[test]
fn a_shim_that_cannot_start_fails_the_pod_and_undoes_its_network() {
    if skip_unless_root("a_shim_that_cannot_start_fails_the_pod_and_undoes_its_network") {
        return;
    }
    let mut b = Berthd::start_private_net(|dir| {
        bridge_then(
            dir,
            "berth-test-shim",
            "berthbr3",
            "10.88.96.0/24",
            "loopback",
        )
    });
    let dir = b.dir.path().to_path_buf();
    let pc = pod_config("noshim", &dir.join("logs"));
    let real = shim_binary();
    let use_shim = |text: String, shim: &Path| -> String {
        let line = text
            .lines()
            .find(|l| l.starts_with("shim = "))
            .expect("the harness sets shim")
            .to_string();
        text.replace(&line, &format!("shim = {shim:?}"))
    };
    let failing = dir.join("failing-shim");
    write_script(
        &failing,
        "#!/bin/sh\necho 'berth-shim: error: refusing on purpose' >&2\nexit 1\n",
    );
    let silent = dir.join("silent-shim");
    write_script(&silent, "#!/bin/sh\nexit 0\n");

    for (shim, words) in [
        (&failing, &["refusing on purpose"][..]),
        (&silent, &["shim.sock"][..]),
    ] {
        let what = format!("a pod with the shim {}", shim.display());
        b.restart_with_config(|t| use_shim(t, shim));
        let err = b.run_pod(&pc).unwrap_err();
        assert_failed(&what, &err, Code::Internal, words);
        assert!(names_pod(err.message(), "noshim"), "{what}: {err:?}");
        assert!(b.pods().is_empty(), "{what}");
        b.assert_clean(&what);
        assert_network_undone(&b, "berth-test-shim", "berthbr3", &what);
    }
    b.restart_with_config(|t| use_shim(t, &real));
    let pod = b.run_pod(&pc).unwrap();
    assert_eq!(
        b.pod_status(&pod).unwrap().state,
        PodSandboxState::SandboxReady as i32
    );
    b.remove_pod(&pod).unwrap();
    b.assert_clean("removing the good pod");
    assert_network_undone(&b, "berth-test-shim", "berthbr3", "removing the good pod");
}

// ---- 4. A fault at each step: CreateContainer ------------------------------------------------

/// Creates `cc` in `pod`, which must fail with `code` and a message naming every one of
/// `words`; then nothing of the container may be left, the pod must still be Ready with its
/// shim, and the container's name must be free again. A message that does not name the
/// container (`container "NAME"`) is pushed on `unnamed`, for the caller to assert once
/// every other check has run.
#[allow(clippy::too_many_arguments)]
fn create_fails(
    b: &Berthd,
    pod: &str,
    pc: &PodSandboxConfig,
    cg: &str,
    cc: &ContainerConfig,
    code: Code,
    words: &[&str],
    unnamed: &mut Vec<String>,
) {
    let name = cc.metadata.as_ref().unwrap().name.clone();
    let what = format!("container {name:?}");
    let err = match b.create(pod, cc, pc) {
        Err(e) => e,
        Ok(id) => {
            let started = b.start_ctr(&id);
            let st = b.status(&id);
            panic!(
                "{what}: CreateContainer succeeded ({id}); should fail with {code:?} naming \
                 {words:?}. Then start: {started:?}, status: {st:?}"
            );
        }
    };
    assert_failed(&what, &err, code, words);
    if !err.message().contains(&what) {
        unnamed.push(err.message().to_string());
    }
    let left = container_leftovers(b, cg);
    assert!(left.is_empty(), "{what}: left behind: {left:#?}");
    assert!(
        b.containers(None)
            .iter()
            .all(|c| c.metadata.as_ref().unwrap().name != name),
        "{what}: no container listed"
    );
    assert_eq!(
        b.pod_status(pod).unwrap().state,
        PodSandboxState::SandboxReady as i32,
        "{what}: the pod is unharmed"
    );
    // The name is free: a good container of the same name runs.
    let good = container_config(&name, "exec sleep 1000");
    let id = b
        .create(pod, &good, pc)
        .unwrap_or_else(|e| panic!("{what}: then a good container of that name: {e:?}"));
    b.start_ctr(&id).unwrap();
    b.stop_ctr(&id, 0).unwrap();
    b.remove_ctr(&id).unwrap();
    let left = container_leftovers(b, cg);
    assert!(
        left.is_empty(),
        "{what}: after the good one, left: {left:#?}"
    );
}

/// A container config for `name` running `true`, changed by `f`.
fn ctr_with(name: &str, f: impl FnOnce(&mut ContainerConfig)) -> ContainerConfig {
    let mut cc = container_config(name, "true");
    f(&mut cc);
    cc
}

fn security(cc: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    cc.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

#[test]
fn create_container_faults_leave_nothing_and_free_the_name() {
    if skip_unless_root("create_container_faults_leave_nothing_and_free_the_name") {
        return;
    }
    let cg = cgroup_parent("create");
    let b = Berthd::start();
    let dir = b.dir.path().to_path_buf();
    let logs = dir.join("logs");
    let pc = pod_in("creates", &logs, &cg);
    let pod = b.run_pod(&pc).unwrap();
    let bad_json = dir.join("bad-seccomp.json");
    fs::write(&bad_json, "{\"defaultAction\": ").unwrap();
    let data = dir.join("data");
    fs::create_dir_all(&data).unwrap();

    let cases: Vec<(ContainerConfig, Code, Vec<String>)> = vec![
        (
            ctr_with("noimage", |c| {
                c.image.as_mut().unwrap().image = "localhost/berth-missing:1".into()
            }),
            Code::NotFound,
            vec!["localhost/berth-missing:1".into()],
        ),
        (
            ctr_with("nouser", |c| {
                security(c).run_as_username = "berth-nobody-here".into()
            }),
            Code::InvalidArgument,
            vec!["berth-nobody-here".into()],
        ),
        (
            ctr_with("nodevice", |c| {
                c.devices = vec![Device {
                    container_path: "/dev/xdev".into(),
                    host_path: "/dev/berth-no-such-device".into(),
                    permissions: "rwm".into(),
                }]
            }),
            Code::InvalidArgument,
            vec!["/dev/berth-no-such-device".into()],
        ),
        (
            ctr_with("filedevice", |c| {
                c.devices = vec![Device {
                    container_path: "/dev/xdev".into(),
                    host_path: "/etc/hostname".into(),
                    permissions: "rwm".into(),
                }]
            }),
            Code::InvalidArgument,
            vec![
                "/etc/hostname".into(),
                "not a character or block device".into(),
            ],
        ),
        (
            ctr_with("noprofile", |c| {
                security(c).seccomp = Some(SecurityProfile {
                    profile_type: security_profile::ProfileType::Localhost as i32,
                    localhost_ref: "/berth/no/such/profile.json".into(),
                })
            }),
            Code::InvalidArgument,
            vec!["/berth/no/such/profile.json".into()],
        ),
        (
            ctr_with("badprofile", |c| {
                security(c).seccomp = Some(SecurityProfile {
                    profile_type: security_profile::ProfileType::Localhost as i32,
                    localhost_ref: bad_json.display().to_string(),
                })
            }),
            Code::InvalidArgument,
            vec![bad_json.display().to_string()],
        ),
        // The target's parent is a file in the image: the mount can only fail in the
        // shim, when the container is made.
        (
            ctr_with("badtarget", |c| {
                c.mounts = vec![Mount {
                    container_path: "/bin/busybox/inside".into(),
                    host_path: data.display().to_string(),
                    ..Default::default()
                }]
            }),
            Code::Internal,
            vec!["/bin/busybox/inside".into()],
        ),
    ];
    let mut unnamed = Vec::new();
    for (cc, code, words) in &cases {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        create_fails(&b, &pod, &pc, &cg, cc, *code, &words, &mut unnamed);
    }

    // The container's log file cannot be opened (a directory is in its place): the shim
    // refuses the container.
    fs::create_dir_all(logs.join("logisdir/0.log")).unwrap();
    let cc = container_config("logisdir", "true");
    let err = b.create(&pod, &cc, &pc).unwrap_err();
    assert_failed(
        "a log path that is a directory",
        &err,
        Code::Internal,
        &["logisdir/0.log"],
    );
    if !err.message().contains("container \"logisdir\"") {
        unnamed.push(err.message().to_string());
    }
    let left = container_leftovers(&b, &cg);
    assert!(left.is_empty(), "left: {left:#?}");
    fs::remove_dir(logs.join("logisdir/0.log")).unwrap();
    let id = b.create(&pod, &cc, &pc).unwrap();
    b.remove_ctr(&id).unwrap();

    b.remove_pod(&pod).unwrap();
    b.assert_clean("removing the pod");
    assert!(cgroups_under(&cg).is_empty());
    assert!(
        unnamed.is_empty(),
        "these messages do not name their container (container \"NAME\"): {unnamed:#?}"
    );
}

/// The pod's log directory cannot be made (a file is in the way). The kubelet makes it
/// before RunPodSandbox and berthd does not use it for the pod itself (as containerd), so
/// the pod runs; each CreateContainer fails, naming the directory, and leaves nothing; once
/// the directory can be made, the same name works.
#[test]
fn a_log_directory_that_cannot_be_made_fails_create_container_and_leaves_nothing() {
    if skip_unless_root(
        "a_log_directory_that_cannot_be_made_fails_create_container_and_leaves_nothing",
    ) {
        return;
    }
    let cg = cgroup_parent("logdir");
    let b = Berthd::start();
    let blocker = b.dir.path().join("not-a-dir");
    fs::write(&blocker, "a file where the log directory would be").unwrap();
    let logs = blocker.join("logs");
    let pc = pod_in("nologdir", &logs, &cg);
    let pod = b.run_pod(&pc).unwrap();
    let cc = container_config("app", "exec sleep 1000");
    let err = b.create(&pod, &cc, &pc).unwrap_err();
    assert_failed(
        "a log directory under a file",
        &err,
        Code::Internal,
        &[&blocker.display().to_string()],
    );
    let left = container_leftovers(&b, &cg);
    assert!(left.is_empty(), "left: {left:#?}");
    fs::remove_file(&blocker).unwrap();
    let id = b.create(&pod, &cc, &pc).unwrap();
    b.start_ctr(&id).unwrap();
    b.remove_pod(&pod).unwrap();
    b.assert_clean("removing the pod");
    assert!(cgroups_under(&cg).is_empty());
    assert!(
        err.message().contains("container \"app\""),
        "the message should name the container: {:?}",
        err.message()
    );
}

// ---- 4. A fault at each step: StartContainer -------------------------------------------------

/// A command the image does not have. berthd makes the container (libberth's create, in the
/// shim) at CreateContainer, as CRI-O does, and the init looks the command up before it
/// waits for the start, as runc's does: so CreateContainer fails, with runc's words, which
/// the kubelet shows as CreateContainerError (containerd, which runs `runc create` at
/// StartContainer, reports the same words as a StartError instead). Nothing is left and the
/// name can be used again.
#[test]
fn a_command_the_image_lacks_fails_create_container_with_runcs_words() {
    if skip_unless_root("a_command_the_image_lacks_fails_create_container_with_runcs_words") {
        return;
    }
    let cg = cgroup_parent("nocmd");
    let b = Berthd::start();
    let pc = pod_in("nocmd", &b.dir.path().join("logs"), &cg);
    let pod = b.run_pod(&pc).unwrap();
    let mut unnamed = Vec::new();
    for (name, cmd, words) in [
        (
            "notinpath",
            "berth-no-such-cmd",
            "exec: \"berth-no-such-cmd\": executable file not found in $PATH",
        ),
        (
            "nosuchfile",
            "/no/such/bin",
            "exec: \"/no/such/bin\": no such file or directory",
        ),
        (
            "notexecutable",
            "/etc/passwd",
            "exec: \"/etc/passwd\": permission denied",
        ),
    ] {
        let cc = ctr_with(name, |c| c.command = vec![cmd.into()]);
        create_fails(
            &b,
            &pod,
            &pc,
            &cg,
            &cc,
            Code::Internal,
            &[words],
            &mut unnamed,
        );
    }
    assert!(unnamed.is_empty(), "{unnamed:#?}");
    b.remove_pod(&pod).unwrap();
    b.assert_clean("removing the pod");
    assert!(cgroups_under(&cg).is_empty());
}

/// The fault left at StartContainer once the container is made: its init is gone (killed
/// between CreateContainer and StartContainer). StartContainer fails naming the container
/// and the cause, and the container is CONTAINER_EXITED with exit code 128 and reason
/// StartError, as containerd reports a failed start; it cannot be started again, and
/// RemoveContainer leaves nothing of it.
#[test]
fn a_container_whose_init_died_fails_start_container_and_shows_a_start_error() {
    if skip_unless_root("a_container_whose_init_died_fails_start_container_and_shows_a_start_error")
    {
        return;
    }
    let cg = cgroup_parent("deadinit");
    let b = Berthd::start();
    let pc = pod_in("deadinit", &b.dir.path().join("logs"), &cg);
    let pod = b.run_pod(&pc).unwrap();
    let cc = container_config("app", "exec sleep 1000");
    let ctr = b.create(&pod, &cc, &pc).unwrap();
    let pid = {
        let mut rs = b.rs.clone();
        let r = b
            .call(
                "ContainerStatus",
                rs.container_status(ContainerStatusRequest {
                    container_id: ctr.clone(),
                    verbose: true,
                }),
            )
            .unwrap();
        let info: serde_json::Value = serde_json::from_str(&r.info["info"]).unwrap();
        info["pid"].as_i64().unwrap() as i32
    };
    assert!(pid > 0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the init to be gone", || {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        (stat.is_empty() || zombie).then_some(())
    });
    let err = b.start_ctr(&ctr).unwrap_err();
    assert_failed(
        "starting a container whose init died",
        &err,
        Code::Internal,
        &[&ctr],
    );
    let s = b.status(&ctr).unwrap();
    assert_eq!(s.state, ContainerState::ContainerExited as i32, "{s:?}");
    assert_eq!(
        (s.exit_code, s.reason.as_str()),
        (128, "StartError"),
        "{s:?}"
    );
    assert!(!s.message.is_empty(), "the cause is in the status: {s:?}");
    assert!(s.finished_at > 0, "{s:?}");
    let err = b.start_ctr(&ctr).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let listed = b.containers(None);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, ContainerState::ContainerExited as i32);
    b.remove_ctr(&ctr).unwrap();
    let left = container_leftovers(&b, &cg);
    assert!(left.is_empty(), "left: {left:#?}");
    // The name is free again, and the pod runs a good one.
    let id = b.create(&pod, &cc, &pc).unwrap();
    b.start_ctr(&id).unwrap();
    b.remove_pod(&pod).unwrap();
    b.assert_clean("removing the pod");
    assert!(cgroups_under(&cg).is_empty());
}

/// The machine's view after a reboot (or a shim and its containers killed while berthd was
/// down): no shim, no process. The container is reported exited with code 255, reason
/// Unknown, as containerd reports such an exit, not left "running" or "unknown" forever,
/// and its pod can be removed.
#[test]
fn a_container_whose_shim_and_process_died_unseen_shows_exited_unknown() {
    if skip_unless_root("a_container_whose_shim_and_process_died_unseen_shows_exited_unknown") {
        return;
    }
    let mut b = Berthd::start();
    let logs = b.dir.path().join("logs");
    let pc = pod_config("unseen", &logs);
    let pod = b.run_pod(&pc).unwrap();
    let ctr = b
        .create(&pod, &container_config("app", "exec sleep 1000"), &pc)
        .unwrap();
    b.start_ctr(&ctr).unwrap();
    b.kill9();
    // The shim and the pause first, then the container's processes (its cgroup names
    // them): killed the other way round, the shim may see the container's exit before its
    // own death, and record it.
    let kill_all = |victims: &[i32]| {
        assert!(!victims.is_empty());
        for pid in victims {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        wait_for("the killed processes to go", || {
            victims
                .iter()
                .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
                .then_some(())
        });
    };
    kill_all(&processes_with(&pod));
    let in_cgroup: Vec<i32> = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|t| t.contains(&ctr))
        })
        .collect();
    kill_all(&in_cgroup);
    // The shim's socket file stays behind, as after a crash: nobody answers on it.
    b.spawn();
    let s = b.status(&ctr).unwrap();
    assert_eq!(s.state, ContainerState::ContainerExited as i32, "{s:?}");
    assert_eq!((s.exit_code, s.reason.as_str()), (255, "Unknown"), "{s:?}");
    b.stop_pod(&pod).unwrap();
    b.remove_pod(&pod).unwrap();
    b.assert_clean("removing the pod whose shim died");
}
