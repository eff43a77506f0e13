//! podman (through conmon).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::probe::{
    assert_runtime_forgot, assert_runtime_runs, build_image, check_exec, check_run_probes,
    make_volume, runtime_state, IMAGE,
};
use crate::support::{
    process_cmdline, require_root, require_tools, run_cmd, run_ok, run_quietly, runtime_under_test,
    serial, CmdOut, Harness, TEARDOWN_TIMEOUT,
};

/// Limit for a podman command that must not wait for anything (a stop or
/// kill of an exited container, `stop -t 1`): it fails the test at once.
const QUICK: Duration = Duration::from_secs(15);
/// A stop or rm of a container that has exited takes well under a second;
/// podman's own stop timeout is 10 s.
const QUICK_STOP: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Podman {
    runtime: PathBuf,
    root: PathBuf,
    runroot: PathBuf,
    tmpdir: PathBuf,
    storage_driver: &'static str,
    conf: PathBuf,
    storage_conf: PathBuf,
    registries_conf: PathBuf,
    process_tmp: PathBuf,
    cgroup_parent: String,
}

impl Podman {
    fn new(h: &Harness, runtime: &Path) -> Podman {
        let storage_driver = if h.on_overlayfs() { "vfs" } else { "overlay" };
        let (root, runroot, tmpdir) = (
            h.mkdir("podman/root"),
            h.mkdir("podman/runroot"),
            h.mkdir("podman/tmp"),
        );
        let process_tmp = h.mkdir("podman/process-tmp");
        let network_dir = h.mkdir("podman/networks");
        // CONTAINERS_CONF replaces every system containers.conf. The rlimits
        // matter: podman's default nofile (1048576) is above the hard limit
        // of an environment without CAP_SYS_RESOURCE and the runtime's
        // setrlimit fails.
        let conf = h.write(
            "podman/containers.conf",
            &format!(
                r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
netns = "none"

[network]
network_config_dir = "{network_dir}"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{events}"
tmp_dir = "{tmpdir}"
lock_type = "file"
"#,
                network_dir = network_dir.display(),
                events = h.path("podman/events.log").display(),
                tmpdir = tmpdir.display(),
            ),
        );
        let storage_conf = h.write(
            "podman/storage.conf",
            &format!(
                "[storage]\ndriver = \"{storage_driver}\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                root.display(),
                runroot.display()
            ),
        );
        let registries_conf = h.write(
            "podman/registries.conf",
            "unqualified-search-registries = []\n",
        );
        Podman {
            runtime: runtime.to_path_buf(),
            root,
            runroot,
            tmpdir,
            storage_driver,
            conf,
            storage_conf,
            registries_conf,
            process_tmp,
            cgroup_parent: h.cgroup(None),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf)
            .env("CONTAINERS_STORAGE_CONF", &self.storage_conf)
            .env("CONTAINERS_REGISTRIES_CONF", &self.registries_conf)
            .env("TMPDIR", &self.process_tmp)
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .arg("--tmpdir")
            .arg(&self.tmpdir)
            .args(["--storage-driver", self.storage_driver])
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .arg("--runtime")
            .arg(&self.runtime);
        c
    }

    /// `podman run` with the options every container of the test gets.
    fn run(&self) -> Command {
        let mut c = self.cmd();
        c.args([
            "run",
            "--pull",
            "never",
            "--network",
            "none",
            "--cgroup-parent",
            &self.cgroup_parent,
        ]);
        c
    }
}

pub(crate) fn podman() {
    let _serial = serial();
    require_root();
    require_tools(&["podman", "conmon", "tar", "sha256sum"]);
    let runtime = runtime_under_test();
    let mut h = Harness::new("podman");
    let image = build_image(&h);
    let volume = make_volume(&h);
    let pm = Podman::new(&h, &runtime);
    h.add_log("podman events", h.path("podman/events.log"));
    let teardown = pm.clone();
    h.on_teardown("podman rm --all --force", move || {
        run_cmd(
            teardown
                .cmd()
                .args(["rm", "--all", "--force", "--time", "0"]),
            TEARDOWN_TIMEOUT,
        );
    });

    run_ok(
        pm.cmd()
            .args(["load", "--quiet", "--input"])
            .arg(&image.archive),
    );

    // podman resolved the runtime we gave it.
    let info = run_ok(pm.cmd().args([
        "info",
        "--format",
        "{{.Host.OCIRuntime.Path}}|{{.Host.CgroupManager}}",
    ]));
    assert_eq!(
        info.stdout.trim(),
        format!("{}|cgroupfs", runtime.display()),
        "podman info must show the runtime under test and the cgroupfs manager"
    );

    check_run_probes("podman", || pm.run(), &volume);

    // A detached container: podman, conmon and the runtime itself all agree
    // that the runtime under test runs it. podman does not pass --root, so
    // the runtime uses its default state directory.
    let id = run_ok(
        pm.run()
            .args(["--detach", "--name", "probe", IMAGE, "sleep", "600"]),
    )
    .stdout
    .trim()
    .to_string();
    let inspect = run_ok(pm.cmd().args([
        "inspect",
        "--format",
        "{{.OCIRuntime}}|{{.State.Pid}}|{{.State.ConmonPid}}",
        "probe",
    ]));
    let fields: Vec<&str> = inspect.stdout.trim().split('|').collect();
    assert_eq!(
        fields.len(),
        3,
        "unexpected podman inspect output {:?}",
        inspect.stdout
    );
    assert_eq!(
        fields[0],
        runtime.to_string_lossy(),
        "podman inspect .OCIRuntime"
    );
    let pid: i64 = fields[1].parse().expect("container pid");
    let conmon = process_cmdline(fields[2].parse().expect("conmon pid"));
    assert!(
        conmon.contains(&format!(" -r {} ", runtime.display())),
        "conmon must be told to use the runtime under test: {conmon}"
    );
    assert_runtime_runs("podman", &runtime, None, &id, Some(pid));
    check_exec(
        "podman",
        pm.cmd().args(["exec", "--user", "1000", "probe"]),
        |c| {
            c.args(["exec", "probe"]);
        },
        || pm.cmd(),
    );

    // pause and unpause go through the runtime's pause and resume.
    run_ok(pm.cmd().args(["pause", "probe"]));
    let st = runtime_state(&runtime, None, &id).expect("runtime state of the paused container");
    assert_eq!(st["status"], "paused", "after podman pause: {st}");
    run_ok(pm.cmd().args(["unpause", "probe"]));
    let st = runtime_state(&runtime, None, &id).expect("runtime state after unpause");
    assert_eq!(st["status"], "running", "after podman unpause: {st}");

    run_ok(pm.cmd().args(["rm", "--force", "--time", "0", "probe"]));
    assert_runtime_forgot("podman", &runtime, None, &id);

    check_stop_kill_rm(&pm, &runtime);
    let left = run_ok(pm.cmd().args(["ps", "--all", "--quiet"]));
    assert!(
        left.stdout.trim().is_empty(),
        "podman still lists containers: {}",
        left.stdout
    );

    h.finish();
}

/// podman's stop, kill and rm of containers that have already exited, and a
/// stop that has to fall back to SIGKILL. podman asks the runtime for the
/// container's state and to kill it, and reads its answers: with runc and
/// with berth every step ends quickly, in the same way.
fn check_stop_kill_rm(pm: &Podman, runtime: &Path) {
    // Killed with SIGKILL; a stop right after it (podman may still think it
    // runs, and then has the runtime signal a dead container), a kill of the
    // exited container, and rm.
    let id = run_ok(
        pm.run()
            .args(["--detach", "--name", "killed", IMAGE, "sleep", "600"]),
    )
    .stdout
    .trim()
    .to_string();
    run_ok(pm.cmd().args(["kill", "killed"]));
    assert_quick_success(
        run_cmd(pm.cmd().args(["stop", "killed"]), QUICK),
        QUICK_STOP,
    );
    let code = run_ok(
        pm.cmd()
            .args(["inspect", "--format", "{{.State.ExitCode}}", "killed"]),
    );
    assert_eq!(
        code.stdout.trim(),
        "137",
        "exit code after podman kill (SIGKILL)"
    );
    let kill = run_cmd(pm.cmd().args(["kill", "killed"]), QUICK);
    assert!(
        !kill.timed_out
            && kill.code() == Some(125)
            && kill
                .stderr
                .trim()
                .starts_with("Error: can only kill running containers."),
        "podman kill of an exited container must be podman's own refusal, as with runc: {}",
        kill.summary()
    );
    assert_quick_success(run_cmd(pm.cmd().args(["rm", "killed"]), QUICK), QUICK_STOP);
    assert_runtime_forgot("podman", runtime, None, &id);

    // Exits by itself. Once the runtime no longer reports it running, and
    // before podman looks, stop it (podman asks the runtime's `state`), then
    // rm it.
    let id = run_ok(
        pm.run()
            .args(["--detach", "--name", "quits", IMAGE, "sh", "-c", "exit 3"]),
    )
    .stdout
    .trim()
    .to_string();
    let start = Instant::now();
    while runtime_state_quietly(runtime, &id).as_deref() == Some("running") {
        assert!(
            start.elapsed() < QUICK,
            "container {id} still running after {QUICK:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_quick_success(run_cmd(pm.cmd().args(["stop", "quits"]), QUICK), QUICK_STOP);
    let code = run_ok(
        pm.cmd()
            .args(["inspect", "--format", "{{.State.ExitCode}}", "quits"]),
    );
    assert_eq!(
        code.stdout.trim(),
        "3",
        "exit code of a container that exits 3"
    );
    assert_quick_success(run_cmd(pm.cmd().args(["rm", "quits"]), QUICK), QUICK_STOP);
    assert_runtime_forgot("podman", runtime, None, &id);

    // Ignores SIGTERM: `stop -t 1` waits a second, then SIGKILL.
    run_ok(pm.run().args([
        "--detach",
        "--name",
        "stubborn",
        IMAGE,
        "sh",
        "-c",
        "trap '' TERM; exec sleep 600",
    ]));
    let stop = run_cmd(pm.cmd().args(["stop", "--time", "1", "stubborn"]), QUICK);
    assert!(
        stop.elapsed() >= Duration::from_secs(1),
        "podman stop -t 1 did not wait for the grace period: {}",
        stop.summary()
    );
    assert_quick_success(stop, Duration::from_secs(1) + QUICK_STOP);
    let code = run_ok(
        pm.cmd()
            .args(["inspect", "--format", "{{.State.ExitCode}}", "stubborn"]),
    );
    assert_eq!(
        code.stdout.trim(),
        "137",
        "exit code after podman stop -t 1 of a container that ignores SIGTERM"
    );
    run_ok(pm.cmd().args(["rm", "stubborn"]));
}

/// The command succeeded within `within`: it did not wait out podman's stop
/// timeout (10 s) or hang.
fn assert_quick_success(out: CmdOut, within: Duration) {
    assert!(out.success(), "{}", out.summary());
    assert!(
        out.elapsed() < within,
        "took {:.1}s, more than {within:?}: {}",
        out.elapsed().as_secs_f64(),
        out.summary()
    );
}

/// The runtime's `status` of a container (default root, as podman uses it),
/// or `None` once it does not know it; without the transcript (polling).
fn runtime_state_quietly(runtime: &Path, id: &str) -> Option<String> {
    let out = run_quietly(Command::new(runtime).args(["state", id]), QUICK);
    if !out.success() {
        return None;
    }
    let state: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    state["status"].as_str().map(str::to_string)
}
