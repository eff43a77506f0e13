//! Beside the built-in runtime: OCI runtime binaries (runc, crun, runsc) as RuntimeClass
//! handlers, and CheckpointContainer through CRIU. Root only.

mod common;

use std::fs;

use common::*;
use k8s_cri::v1::*;
use tonic::Code;

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
