//! ctr (containerd + containerd-shim-runc-v2).

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::containerd::{start_containerd, Containerd};
use crate::probe::{
    assert_runtime_forgot, assert_runtime_runs, build_image, check_exit_code, check_probe,
    make_volume, shim_runtime_options, Expect, HOSTNAME, IMAGE, MEMORY_LIMIT, PIDS_LIMIT,
    PROBE_SCRIPT, TEST_UID,
};
use crate::support::{
    require_root, require_tools, run_cmd, run_ok, runtime_under_test, serial, Harness, CMD_TIMEOUT,
    TEARDOWN_TIMEOUT,
};

#[derive(Clone)]
struct Ctr {
    runtime: PathBuf,
    containerd: Containerd,
    namespace: String,
    runc_root: PathBuf,
    fifo_dir: PathBuf,
    snapshotter: &'static str,
}

impl Ctr {
    fn cmd(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.containerd.socket)
            .args(["--namespace", &self.namespace]);
        c.env("CONTAINERD_SNAPSHOTTER", self.snapshotter);
        c
    }

    /// `ctr run` pointed at the runtime under test, with private state.
    fn run(&self) -> Command {
        let mut c = self.cmd();
        c.arg("run")
            .arg("--runc-binary")
            .arg(&self.runtime)
            .arg("--runc-root")
            .arg(&self.runc_root)
            .arg("--fifo-dir")
            .arg(&self.fifo_dir);
        c
    }

    /// The --root the shim hands the runtime: `--runc-root` plus namespace.
    fn runtime_root(&self) -> PathBuf {
        self.runc_root.join(&self.namespace)
    }

    fn remove_everything(&self) {
        let list = run_cmd(
            self.cmd().args(["containers", "list", "--quiet"]),
            TEARDOWN_TIMEOUT,
        );
        for id in list.stdout.split_whitespace() {
            run_cmd(
                self.cmd().args(["tasks", "delete", "--force", id]),
                TEARDOWN_TIMEOUT,
            );
            run_cmd(
                self.cmd().args(["containers", "delete", id]),
                TEARDOWN_TIMEOUT,
            );
        }
    }
}

pub(crate) fn ctr() {
    let _serial = serial();
    require_root();
    require_tools(&[
        "ctr",
        "containerd",
        "containerd-shim-runc-v2",
        "tar",
        "sha256sum",
    ]);
    let runtime = runtime_under_test();
    let mut h = Harness::new("ctr");
    let image = build_image(&h);
    let volume = make_volume(&h);
    let containerd = start_containerd(&mut h, "containerd");
    let ctr = Ctr {
        runtime: runtime.clone(),
        containerd,
        namespace: "berth-clients".into(),
        runc_root: h.mkdir("runtime-root"),
        fifo_dir: h.mkdir("fifo"),
        snapshotter: if h.on_overlayfs() {
            "native"
        } else {
            "overlayfs"
        },
    };
    let teardown = ctr.clone();
    h.on_teardown("ctr: delete all tasks and containers", move || {
        teardown.remove_everything()
    });

    run_ok(ctr.cmd().args(["images", "import"]).arg(&image.archive));

    // ctr 1.6 has flags for the memory limit, mounts and the cgroup path. The
    // default spec of ctr mounts no cgroupfs, so ask for one to read the
    // limit from inside.
    // --seccomp: containerd's default profile; ctr sets no_new_privs unless told not to.
    let out = run_cmd(
        ctr.run()
            .args(["--rm", "--seccomp", "--cgroup", &h.cgroup(Some("flags"))])
            .args(["--memory-limit", &MEMORY_LIMIT.to_string()])
            .arg("--mount")
            .arg(format!(
                "type=bind,src={},dst=/data,options=rbind:ro",
                volume.display()
            ))
            .args([
                "--mount",
                "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro:nosuid:noexec:nodev",
            ])
            .args([IMAGE, "flags", "sh", "-c", PROBE_SCRIPT]),
        CMD_TIMEOUT,
    );
    check_probe(
        "ctr",
        "--memory-limit/--mount",
        &out,
        Expect {
            data: true,
            memory: true,
            seccomp: true,
            nnp: Some(true),
            ..Expect::default()
        },
        &volume,
    );
    let out = run_cmd(
        ctr.run()
            .args(["--rm", "--seccomp", "--allow-new-privs"])
            .args(["--cgroup", &h.cgroup(Some("privs"))])
            .args([IMAGE, "privs", "sh", "-c", PROBE_SCRIPT]),
        CMD_TIMEOUT,
    );
    check_probe(
        "ctr",
        "--seccomp --allow-new-privs",
        &out,
        Expect {
            seccomp: true,
            nnp: Some(false),
            ..Expect::default()
        },
        &volume,
    );

    // ctr has no --hostname, --user or pids flag: hand it a full spec instead,
    // derived from ctr's own default spec (`ctr oci spec`).
    let mut spec: Value = serde_json::from_str(&run_ok(ctr.cmd().args(["oci", "spec"])).stdout)
        .expect("ctr oci spec prints JSON");
    spec["hostname"] = HOSTNAME.into();
    spec["root"] = serde_json::json!({ "path": image.rootfs, "readonly": true });
    spec["process"]["terminal"] = false.into();
    spec["process"]["cwd"] = "/".into();
    spec["process"]["args"] = serde_json::json!(["sh", "-c", PROBE_SCRIPT]);
    spec["process"]["env"] = serde_json::json!(["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]);
    spec["process"]["user"] = serde_json::json!({ "uid": TEST_UID, "gid": TEST_UID });
    spec["linux"]["cgroupsPath"] = h.cgroup(Some("spec")).into();
    spec["linux"]["resources"]["memory"] = serde_json::json!({ "limit": MEMORY_LIMIT });
    spec["linux"]["resources"]["pids"] = serde_json::json!({ "limit": PIDS_LIMIT });
    let mounts = spec["mounts"].as_array_mut().expect("spec mounts");
    mounts.push(serde_json::json!({
        "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
        "options": ["ro", "nosuid", "noexec", "nodev"],
    }));
    mounts.push(serde_json::json!({
        "destination": "/data", "type": "bind", "source": volume, "options": ["rbind", "ro"],
    }));
    let spec_path = h.path("spec.json");
    fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).expect("write spec");
    let out = run_cmd(
        ctr.run()
            .arg("--rm")
            .arg("--config")
            .arg(&spec_path)
            .arg("spec"),
        CMD_TIMEOUT,
    );
    let all = Expect {
        hostname: true,
        data: true,
        user: true,
        memory: true,
        pids: true,
        ..Expect::default()
    };
    check_probe(
        "ctr",
        "--config spec (hostname/user/pids)",
        &out,
        all,
        &volume,
    );

    let out = run_cmd(
        ctr.run().args([
            "--rm",
            "--cgroup",
            &h.cgroup(Some("exit")),
            IMAGE,
            "exit",
            "sh",
            "-c",
            "exit 7",
        ]),
        CMD_TIMEOUT,
    );
    check_exit_code("ctr", &out);

    // A detached container: the shim was told to use the runtime under test,
    // and that runtime's own state has the container, running.
    run_ok(ctr.run().args([
        "--detach",
        "--null-io",
        "--cgroup",
        &h.cgroup(Some("probe")),
        IMAGE,
        "probe",
        "sleep",
        "600",
    ]));
    let options = shim_runtime_options(&ctr.containerd.state, &ctr.namespace, "probe");
    assert_eq!(
        options["binary_name"].as_str(),
        Some(&*runtime.to_string_lossy()),
        "shim options: {options}"
    );
    let tasks = run_ok(ctr.cmd().args(["tasks", "list"]));
    let pid = tasks.stdout.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["probe", pid, ..] => pid.parse::<i64>().ok(),
            _ => None,
        }
    });
    assert!(
        pid.is_some(),
        "ctr tasks list does not show the probe task: {}",
        tasks.stdout
    );
    assert_runtime_runs("ctr", &runtime, Some(&ctr.runtime_root()), "probe", pid);
    run_ok(ctr.cmd().args(["tasks", "delete", "--force", "probe"]));
    run_ok(ctr.cmd().args(["containers", "delete", "probe"]));
    assert_runtime_forgot("ctr", &runtime, Some(&ctr.runtime_root()), "probe");
    let left = run_ok(ctr.cmd().args(["containers", "list", "--quiet"]));
    assert!(
        left.stdout.trim().is_empty(),
        "ctr still lists containers: {}",
        left.stdout
    );

    h.finish();
}
