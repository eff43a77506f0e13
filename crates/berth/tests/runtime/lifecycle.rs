//! The lifecycle: create, start, state, kill, delete, list, run.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Barrier;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::common::*;

/// Prints "ready", then sleeps as the container's init.
fn sleeper() -> Bundle {
    Bundle::new().sh("echo ready; exec sleep 1000")
}

/// Reports which of USR1, USR2 and TERM reached it, then exits. `wait` returns as soon as a
/// trapped signal arrives.
fn trapper() -> Bundle {
    Bundle::new().sh(
        "trap 'echo got-usr1; exit 0' USR1; trap 'echo got-usr2; exit 0' USR2; \
         trap 'echo got-term; exit 0' TERM; sleep 1000 & echo ready; wait",
    )
}

// ---------------------------------------------------------------------------------------------
// create, start, state
// ---------------------------------------------------------------------------------------------

#[test]
fn create_leaves_the_init_waiting_on_the_exec_fifo() {
    let berth = Berth::new();
    let b = Bundle::new().sh("echo user-process-ran");
    let id = unique_id("created");

    berth.create(&id, b.path(), &[]).assert_ok("create");

    let st = berth.state(&id);
    assert_eq!(st["status"], "created", "{st}");
    let pid = st["pid"].as_i64().unwrap_or(0) as i32;
    assert!(pid > 0, "{st}");
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "init {pid} is not running"
    );
    assert!(
        berth.root().join(&id).join("state.json").is_file(),
        "no state.json"
    );
    let fifo = berth.root().join(&id).join("exec.fifo");
    let meta = fs::metadata(&fifo).unwrap_or_else(|e| panic!("{}: {e}", fifo.display()));
    assert!(
        meta.file_type().is_fifo(),
        "{} is not a fifo",
        fifo.display()
    );
    assert!(
        !berth.container_stdout(&id).contains("user-process-ran"),
        "the user process ran before start"
    );
}

#[test]
fn state_reports_the_runtime_spec_fields() {
    let berth = Berth::new();
    let b = sleeper();
    let id = unique_id("state");

    berth.create(&id, b.path(), &[]).assert_ok("create");
    let out = berth.cmd(&["state", &id]);

    out.assert_ok("state");
    assert!(
        out.stdout.trim_end().lines().count() > 1,
        "state is not pretty-printed: {}",
        out.stdout
    );
    let st: Value = serde_json::from_str(&out.stdout).expect("state prints JSON");
    assert_eq!(st["ociVersion"], default_spec()["ociVersion"], "{st}");
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["status"], "created");
    assert!(st["pid"].as_i64().unwrap_or(0) > 0, "{st}");
    assert_eq!(st["bundle"], json!(fs::canonicalize(b.path()).unwrap()));
    assert_eq!(st["rootfs"], json!(fs::canonicalize(rootfs()).unwrap()));
    let created = st["created"].as_str().unwrap_or("");
    assert!(
        created.len() >= 20 && created.as_bytes()[10] == b'T' && created.ends_with('Z'),
        "created {created:?} is not an RFC 3339 UTC time"
    );
    assert_eq!(st["owner"], "root");
    assert!(
        st.get("annotations").is_none(),
        "annotations shown though none set: {st}"
    );
}

#[test]
fn state_shows_the_annotations() {
    let berth = Berth::new();
    let b = sleeper().edit(|v| v["annotations"] = json!({"org.example.key": "some value"}));
    let id = unique_id("annot");

    berth.create(&id, b.path(), &[]).assert_ok("create");

    assert_eq!(
        berth.state(&id)["annotations"],
        json!({"org.example.key": "some value"})
    );
}

#[test]
fn start_runs_the_user_process() {
    let berth = Berth::new();
    let b = Bundle::new().sh("echo hello-from-container");
    let id = unique_id("start");
    berth.create(&id, b.path(), &[]).assert_ok("create");

    berth.cmd(&["start", &id]).assert_ok("start");

    berth.wait_stdout(&id, "hello-from-container");
}

#[test]
fn started_container_is_running_with_the_created_pid() {
    let berth = Berth::new();
    let b = sleeper();
    let id = unique_id("running");
    berth.create(&id, b.path(), &[]).assert_ok("create");
    let pid = berth.pid(&id);

    berth.cmd(&["start", &id]).assert_ok("start");

    let st = berth.state(&id);
    assert_eq!(st["status"], "running", "{st}");
    assert_eq!(st["pid"], pid);
}

#[test]
fn exited_container_is_stopped_with_pid_0() {
    let berth = Berth::new();
    let b = Bundle::new().args(&["true"]);
    let id = unique_id("stopped");
    berth.create(&id, b.path(), &[]).assert_ok("create");

    berth.cmd(&["start", &id]).assert_ok("start");

    let st = berth.wait_status(&id, "stopped");
    assert_eq!(st["pid"], 0, "{st}");
}

#[test]
fn no_berth_process_remains_once_the_container_runs() {
    let berth = Berth::new();
    let b = sleeper();
    let id = unique_id("detached");

    berth.start_and_wait(&id, &b, "ready");

    let root = berth.root().to_string_lossy().into_owned();
    let left: Vec<_> = processes_mentioning(&id)
        .into_iter()
        .chain(processes_mentioning(&root))
        .collect();
    assert!(left.is_empty(), "berth processes remain: {left:?}");
    // The container's only process is busybox (its /proc/pid/exe names the path inside).
    let busybox = fs::metadata(rootfs().join("bin/busybox")).unwrap();
    let procs = cgroup_procs(&expected_cgroup_dir("pids", &id));
    assert!(!procs.is_empty(), "the container has no process");
    for pid in procs {
        let exe = fs::metadata(format!("/proc/{pid}/exe")).unwrap();
        assert!(
            exe.dev() == busybox.dev() && exe.ino() == busybox.ino(),
            "process {pid} in the container is not the user's busybox"
        );
    }
}

#[test]
fn container_cgroup_is_its_id_under_the_callers_cgroup_in_every_hierarchy() {
    let berth = Berth::new();
    let b = sleeper();
    let id = unique_id("cgplace");

    berth.create(&id, b.path(), &[]).assert_ok("create");

    let pid = berth.pid(&id);
    let hierarchies = cgroup_hierarchies();
    assert!(
        !hierarchies.is_empty(),
        "no cgroup hierarchy under /sys/fs/cgroup"
    );
    for h in hierarchies {
        let dir = expected_cgroup_dir(&h, &id);
        assert!(dir.is_dir(), "{} does not exist", dir.display());
        let procs = cgroup_procs(&dir);
        assert!(
            procs.contains(&pid),
            "init {pid} is not in {} ({procs:?})",
            dir.display()
        );
    }
}

#[test]
fn absolute_cgroups_path_is_below_each_hierarchy_root_and_removed_by_delete() {
    let berth = Berth::new();
    let id = unique_id("cgabs");
    let b = sleeper().edit(|v| v["linux"]["cgroupsPath"] = json!(format!("/{id}")));
    berth.create(&id, b.path(), &[]).assert_ok("create");
    for h in cgroup_hierarchies() {
        let dir = Path::new("/sys/fs/cgroup").join(&h).join(&id);
        assert!(dir.is_dir(), "{} does not exist", dir.display());
    }

    berth
        .cmd(&["delete", "--force", &id])
        .assert_ok("delete --force");

    assert_no_leftovers(&berth, &id, b.path());
}

#[test]
fn pid_file_holds_the_init_pid() {
    let berth = Berth::new();
    let b = sleeper();
    let id = unique_id("pidfile");
    let pid_file = b.path().join("init.pid");

    berth
        .create(&id, b.path(), &["--pid-file", pid_file.to_str().unwrap()])
        .assert_ok("create --pid-file");

    let written = fs::read_to_string(&pid_file).expect("pid file written");
    assert_eq!(written.trim(), berth.pid(&id).to_string());
}

/// The caller's fd 3 reaches the container as fd 3; berth's own fds do not, so the state
/// directory stays unlocked and `state` answers.
#[test]
fn preserve_fds_passes_the_callers_fds_to_the_container() {
    let berth = Berth::new();
    let b = Bundle::new().sh("cat <&3; echo; ls /proc/self/fd | wc -l");
    let id = unique_id("fds");
    let passed = b.path().join("passed");
    fs::write(&passed, "through-fd-3").unwrap();
    let out = b.path().join("container.out");
    // The shell opens fd 3 for berth, which Command cannot do without unsafe code.
    let mut create = std::process::Command::new("/bin/sh")
        .args([
            "-c",
            "exec \"$0\" --root \"$1\" create --preserve-fds 1 --bundle \"$2\" \"$3\" 3<\"$4\" >\"$5\" 2>&1",
        ])
        .arg(berth_bin())
        .arg(berth.root())
        .arg(b.path())
        .arg(&id)
        .arg(&passed)
        .arg(&out)
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut create, COMMAND_LIMIT).expect("create finished");
    assert!(
        status.success(),
        "create --preserve-fds failed: {}",
        fs::read_to_string(&out).unwrap_or_default()
    );

    berth.cmd(&["start", &id]).assert_ok("start");

    berth.wait_status(&id, "stopped");
    let lines: Vec<String> = fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines.first().map(String::as_str),
        Some("through-fd-3"),
        "{lines:?}"
    );
    // 0, 1, 2, 3 and the fd `ls` opens to read /proc/self/fd.
    assert_eq!(
        lines.get(1).map(String::as_str),
        Some("5"),
        "extra fds reached the container: {lines:?}"
    );
}

/// `--preserve-fds 5` with only stdio open: berth's own descriptors (its lock on the
/// state directory, the exec fifo, the setup channel) must not land in 3..7, where the
/// init would keep the lock until exec and `run` would wait for it forever. The
/// container gets /dev/null at the numbers the caller left closed.
#[test]
fn preserve_fds_beyond_the_open_ones_neither_hangs_nor_leaks() {
    let berth = Berth::new();
    let b = Bundle::new()
        .sh("for fd in 3 4 5 6 7 8; do echo \"$fd $(readlink /proc/self/fd/$fd)\"; done");

    let out = berth.run(&unique_id("fdsrun"), b.path(), &["--preserve-fds", "5"]);

    out.assert_ok("run --preserve-fds 5");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "3 /dev/null",
            "4 /dev/null",
            "5 /dev/null",
            "6 /dev/null",
            "7 /dev/null",
            "8 "
        ],
        "stderr: {}",
        out.stderr
    );
}

/// `exec --preserve-fds 1`: the caller's fd 3 reaches the exec'd process, and nothing
/// of berth's follows it.
#[test]
fn exec_preserve_fds_passes_the_callers_fd() {
    let berth = Berth::new();
    let b = Bundle::new().sh("echo up; exec sleep 100");
    let id = unique_id("fdsexec");
    berth.start_and_wait(&id, &b, "up");
    let passed = b.path().join("passed");
    fs::write(&passed, "exec-fd-3").unwrap();
    let out = b.path().join("exec.out");

    let mut exec = std::process::Command::new("/bin/sh")
        .args([
            "-c",
            "exec \"$0\" --root \"$1\" exec --preserve-fds 1 \"$2\" sh -c 'cat <&3; echo; ls /proc/self/fd | wc -l' 3<\"$3\" >\"$4\" 2>&1",
        ])
        .arg(berth_bin())
        .arg(berth.root())
        .arg(&id)
        .arg(&passed)
        .arg(&out)
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut exec, COMMAND_LIMIT).expect("exec finished");

    let text = fs::read_to_string(&out).unwrap_or_default();
    assert!(status.success(), "exec --preserve-fds failed: {text}");
    // 0, 1, 2, 3 and the fd `ls` opens to read /proc/self/fd.
    assert_eq!(text, "exec-fd-3\n5\n");
}

/// The signal mask and SIGPIPE of the container's processes are as a program expects:
/// berth is a Rust program, whose runtime ignores SIGPIPE, and an ignored signal would stay
/// ignored across execve (then `yes | head` in a container fails with "Broken pipe").
#[test]
fn container_processes_get_sigpipe_default_and_nothing_blocked() {
    fn check(what: &str, text: &str) {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex mask"))
                .unwrap_or_else(|| panic!("{what}: no {name} in {text:?}"))
        };
        assert_eq!(field("SigBlk:"), 0, "{what}: blocked signals");
        let sigpipe = 1u64 << (libc::SIGPIPE - 1);
        assert_eq!(field("SigIgn:") & sigpipe, 0, "{what}: SIGPIPE ignored");
    }
    let berth = Berth::new();
    let b = Bundle::new().sh("grep -E '^Sig(Blk|Ign)' /proc/self/status; echo up; exec sleep 100");
    let id = unique_id("sigpipe");
    berth.start_and_wait(&id, &b, "up");
    check("init", &berth.container_stdout(&id));
    let out = berth.cmd(&[
        "exec",
        &id,
        "grep",
        "-E",
        "^Sig(Blk|Ign)",
        "/proc/self/status",
    ]);
    out.assert_ok("exec");
    check("exec", &out.stdout);
}

#[test]
fn no_pivot_runs_the_process_in_the_rootfs() {
    let berth = Berth::new();
    let b = Bundle::new().args(&["cat", ROOTFS_MARKER]);
    let id = unique_id("nopivot");
    berth
        .create(&id, b.path(), &["--no-pivot"])
        .assert_ok("create --no-pivot");

    berth.cmd(&["start", &id]).assert_ok("start");

    berth.wait_status(&id, "stopped");
    assert_eq!(berth.container_stdout(&id).trim(), "berth-test-rootfs");
}

#[test]
fn concurrent_starts_run_the_container_once() {
    let berth = Berth::new();
    let b = Bundle::new().sh("echo ran");
    let id = unique_id("race");
    berth.create(&id, b.path(), &[]).assert_ok("create");
    let barrier = Barrier::new(2);

    let outs: Vec<Output> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    berth.cmd(&["start", &id])
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let ok = outs.iter().filter(|o| o.success()).count();
    assert_eq!(ok, 1, "exactly one start must succeed: {outs:#?}");
    let loser = outs.iter().find(|o| !o.success()).unwrap();
    loser
        .assert_error("losing start")
        .assert_stderr_has("losing start", &[&id]);
    berth.wait_status(&id, "stopped");
    assert_eq!(berth.container_stdout(&id).matches("ran").count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Illegal transitions
// ---------------------------------------------------------------------------------------------

#[test]
fn second_start_fails_and_the_container_runs_on() {
    let berth = Berth::new();
    let b = sleeper();
    let id = unique_id("start2");
    berth.start_and_wait(&id, &b, "ready");
    let pid = berth.pid(&id);

    let out = berth.cmd(&["start", &id]);

    out.assert_error("second start")
        .assert_stderr_has("second start", &[&id, "running"]);
    let st = berth.state(&id);
    assert_eq!(st["status"], "running");
    assert_eq!(st["pid"], pid);
    assert_eq!(berth.container_stdout(&id).matches("ready").count(), 1);
}

#[test]
fn delete_of_a_running_container_without_force_fails() {
    let berth = Berth::new();
    let b = sleeper();
    let id = unique_id("delrun");
    berth.start_and_wait(&id, &b, "ready");
    let pid = berth.pid(&id);

    let out = berth.cmd(&["delete", &id]);

    out.assert_error("delete of a running container")
        .assert_stderr_has(
            "delete",
            &[&id, "cannot delete container that is not stopped: running"],
        );
    assert!(pid_alive(pid), "the init died");
    assert_eq!(berth.state(&id)["status"], "running");
}

#[test]
fn kill_of_a_stopped_container_fails() {
    let berth = Berth::new();
    let b = Bundle::new().args(&["true"]);
    let id = unique_id("killstopped");
    berth.create(&id, b.path(), &[]).assert_ok("create");
    berth.cmd(&["start", &id]).assert_ok("start");
    berth.wait_status(&id, "stopped");

    let out = berth.cmd(&["kill", &id, "KILL"]);

    out.assert_error("kill of a stopped container")
        .assert_stderr_has("kill", &[&id, "container not running"]);
    // With --all there is nothing left to signal, and that is no error (runc's too).
    berth
        .cmd(&["kill", "--all", &id, "KILL"])
        .assert_ok("kill --all of a stopped container");
}

// ---------------------------------------------------------------------------------------------
// delete
// ---------------------------------------------------------------------------------------------

#[test]
fn delete_removes_a_stopped_container() {
    let berth = Berth::new();
    let b = Bundle::new().args(&["true"]);
    let id = unique_id("delete");
    berth.create(&id, b.path(), &[]).assert_ok("create");
    berth.cmd(&["start", &id]).assert_ok("start");
    berth.wait_status(&id, "stopped");

    berth.cmd(&["delete", &id]).assert_ok("delete");

    berth
        .cmd(&["state", &id])
        .assert_error("state after delete")
        .assert_stderr_has("state after delete", &[&id, "container does not exist"]);
    assert_no_leftovers(&berth, &id, b.path());
}

#[test]
fn force_delete_removes_a_running_container_and_its_cgroups() {
    let berth = Berth::new();
    let b = sleeper();
    let id = unique_id("delforce");
    berth.start_and_wait(&id, &b, "ready");
    let pid = berth.pid(&id);
    assert!(
        !find_cgroup_dirs(&id).is_empty(),
        "the container has no cgroup to remove"
    );

    berth
        .cmd(&["delete", "--force", &id])
        .assert_ok("delete --force");

    assert!(!pid_alive(pid), "init {pid} survived delete --force");
    assert_no_leftovers(&berth, &id, b.path());
}

#[test]
fn delete_of_a_created_container_kills_its_init() {
    let berth = Berth::new();
    let b = sleeper();
    let id = unique_id("delcreated");
    berth.create(&id, b.path(), &[]).assert_ok("create");
    let pid = berth.pid(&id);

    berth
        .cmd(&["delete", &id])
        .assert_ok("delete of a created container");

    assert!(!pid_alive(pid), "init {pid} survived delete");
    assert!(
        !berth.container_stdout(&id).contains("ready"),
        "the user process ran"
    );
    assert_no_leftovers(&berth, &id, b.path());
}

#[test]
fn init_killed_from_the_host_leaves_a_stopped_container_that_delete_cleans() {
    let berth = Berth::new();
    let b = sleeper();
    let id = unique_id("hostkill");
    berth.start_and_wait(&id, &b, "ready");
    let pid = berth.pid(&id);

    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();

    let st = berth.wait_status(&id, "stopped");
    assert_eq!(st["pid"], 0, "{st}");
    berth.cmd(&["delete", &id]).assert_ok("delete");
    assert_no_leftovers(&berth, &id, b.path());
}

// ---------------------------------------------------------------------------------------------
// kill
// ---------------------------------------------------------------------------------------------

#[test]
fn kill_defaults_to_sigterm() {
    let berth = Berth::new();
    let b = trapper();
    let id = unique_id("killterm");
    berth.start_and_wait(&id, &b, "ready");

    berth.cmd(&["kill", &id]).assert_ok("kill");

    berth.wait_stdout(&id, "got-term");
    berth.wait_status(&id, "stopped");
}

#[test]
fn kill_takes_a_signal_name() {
    let berth = Berth::new();
    let b = trapper();
    let id = unique_id("killname");
    berth.start_and_wait(&id, &b, "ready");

    berth
        .cmd(&["kill", &id, "SIGUSR1"])
        .assert_ok("kill SIGUSR1");

    berth.wait_stdout(&id, "got-usr1");
}

#[test]
fn kill_takes_a_signal_name_without_the_sig_prefix() {
    let berth = Berth::new();
    let b = sleeper();
    let id = unique_id("killKILL");
    berth.start_and_wait(&id, &b, "ready");

    berth.cmd(&["kill", &id, "KILL"]).assert_ok("kill KILL");

    berth.wait_status(&id, "stopped");
}

#[test]
fn kill_takes_a_signal_number() {
    let berth = Berth::new();
    let b = trapper();
    let id = unique_id("killnum");
    berth.start_and_wait(&id, &b, "ready");

    berth
        .cmd(&["kill", &id, &libc::SIGUSR2.to_string()])
        .assert_ok("kill <USR2 number>");

    berth.wait_stdout(&id, "got-usr2");
}

/// SIGTERM cannot stop the container's init (pid 1 of its namespace, no handler), so the
/// container stops only if the signal reaches the other processes and the init's `wait` ends.
#[test]
fn kill_all_signals_every_process_in_the_container() {
    let berth = Berth::new();
    let b = Bundle::new().sh("sleep 1000 & sleep 1000 & echo ready; wait");
    let id = unique_id("killall");
    berth.start_and_wait(&id, &b, "ready");
    let cg = expected_cgroup_dir("pids", &id);
    assert!(cgroup_procs(&cg).len() >= 3, "{:?}", cgroup_procs(&cg));

    berth
        .cmd(&["kill", "--all", &id, "TERM"])
        .assert_ok("kill --all");

    berth.wait_status(&id, "stopped");
    wait_for("the container's cgroup to empty", || {
        cgroup_procs(&cg).is_empty().then_some(())
    });
}

// ---------------------------------------------------------------------------------------------
// list
// ---------------------------------------------------------------------------------------------

#[test]
fn list_json_is_null_without_containers() {
    let berth = Berth::new();

    let out = berth.cmd(&["list", "--format", "json"]);

    out.assert_ok("list");
    assert_eq!(out.stdout.trim(), "null");
}

#[test]
fn list_json_reports_every_container() {
    let berth = Berth::new();
    let (b1, b2) = (sleeper(), sleeper());
    let (id1, id2) = (unique_id("list"), unique_id("list"));
    berth.create(&id1, b1.path(), &[]).assert_ok("create 1");
    berth.create(&id2, b2.path(), &[]).assert_ok("create 2");
    berth.cmd(&["start", &id2]).assert_ok("start 2");

    let out = berth.cmd(&["list", "-f", "json"]);

    out.assert_ok("list");
    let v: Value = serde_json::from_str(&out.stdout).expect("list prints JSON");
    let arr = v.as_array().unwrap_or_else(|| panic!("not an array: {v}"));
    assert_eq!(arr.len(), 2, "{v}");
    let find = |id: &str| {
        arr.iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing: {v}"))
    };
    assert_eq!(find(&id1)["status"], "created");
    assert_eq!(find(&id2)["status"], "running");
    assert_eq!(find(&id1)["pid"], berth.pid(&id1));
}

#[test]
fn list_quiet_prints_only_the_ids() {
    let berth = Berth::new();
    let (b1, b2) = (sleeper(), sleeper());
    let (id1, id2) = (unique_id("listq"), unique_id("listq"));
    berth.create(&id1, b1.path(), &[]).assert_ok("create 1");
    berth.create(&id2, b2.path(), &[]).assert_ok("create 2");

    let out = berth.cmd(&["list", "-q"]);

    out.assert_ok("list -q");
    let mut ids: Vec<&str> = out.stdout.lines().collect();
    ids.sort();
    let mut want = vec![id1.as_str(), id2.as_str()];
    want.sort();
    assert_eq!(ids, want);
}

#[test]
fn list_table_has_a_header_and_a_row_per_container() {
    let berth = Berth::new();
    let b = sleeper();
    let id = unique_id("listtable");
    berth.create(&id, b.path(), &[]).assert_ok("create");

    let out = berth.cmd(&["list"]);

    out.assert_ok("list");
    let mut lines = out.stdout.lines();
    let header = lines.next().unwrap_or("");
    assert!(
        header.starts_with("ID") && header.contains("STATUS"),
        "{}",
        out.stdout
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    assert_eq!(rows[0][0], id);
    assert!(rows[0].contains(&"created"), "{}", out.stdout);
}

// ---------------------------------------------------------------------------------------------
// run
// ---------------------------------------------------------------------------------------------

#[test]
fn run_exits_with_the_containers_exit_status() {
    let berth = Berth::new();
    let b = Bundle::new().sh("echo out-of-run; exit 3");
    let id = unique_id("runexit");

    let out = berth.run(&id, b.path(), &[]);

    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(out.stdout.trim(), "out-of-run");
}

#[test]
fn run_reports_death_by_signal_n_as_128_plus_n() {
    let berth = Berth::new();
    // Without a pid namespace the shell is not an init, so its own SIGUSR1 kills it.
    let b = Bundle::new()
        .sh("kill -USR1 $$; sleep 1000")
        .edit(|v| remove_namespace(v, "pid"));
    let id = unique_id("runsig");

    let out = berth.run(&id, b.path(), &[]);

    assert_eq!(out.status.code(), Some(128 + libc::SIGUSR1), "{out:?}");
}

#[test]
fn run_deletes_the_container_afterwards() {
    let berth = Berth::new();
    let b = Bundle::new().args(&["true"]);
    let id = unique_id("rundel");

    berth.run(&id, b.path(), &[]).assert_ok("run");

    berth
        .cmd(&["state", &id])
        .assert_error("state after run")
        .assert_stderr_has("state after run", &["container does not exist"]);
    assert_no_leftovers(&berth, &id, b.path());
}

#[test]
fn run_keep_leaves_the_stopped_container() {
    let berth = Berth::new();
    let b = Bundle::new().args(&["true"]);
    let id = unique_id("runkeep");

    berth
        .run(&id, b.path(), &["--keep"])
        .assert_ok("run --keep");

    assert_eq!(berth.state(&id)["status"], "stopped");
}

#[test]
fn run_detach_returns_while_the_container_runs() {
    let berth = Berth::new();
    let b = sleeper();
    let id = unique_id("rundetach");

    berth
        .run(&id, b.path(), &["--detach"])
        .assert_ok("run --detach");

    assert_eq!(berth.state(&id)["status"], "running");
    berth.wait_stdout(&id, "ready");
}

// ---------------------------------------------------------------------------------------------
// run forwards signals; a create that died half way
// ---------------------------------------------------------------------------------------------

#[test]
fn run_forwards_signals_to_the_container() {
    let berth = Berth::new();
    let b = trapper();
    let id = unique_id("fwd");
    let out = tempfile::NamedTempFile::new().expect("stdout file");
    let mut child = berth
        .command()
        .args(["run", "--bundle", b.path().to_str().unwrap(), &id])
        .stdout(out.reopen().expect("reopen"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn berth run");
    wait_for("the container to print ready", || {
        fs::read_to_string(out.path())
            .ok()
            .filter(|s| s.contains("ready"))
    });

    kill(Pid::from_raw(child.id() as i32), Signal::SIGUSR1).expect("signal berth run");

    let status = wait_bounded(&mut child, COMMAND_LIMIT).expect("berth run did not exit");
    let text = fs::read_to_string(out.path()).unwrap_or_default();
    assert!(
        text.contains("got-usr1"),
        "USR1 did not reach the container: {text:?}"
    );
    assert_eq!(status.code(), Some(0), "{text:?}");
    assert_no_leftovers(&berth, &id, b.path());
}

#[test]
fn force_delete_cleans_a_create_that_died_half_way() {
    let berth = Berth::new();
    let marks = tempfile::tempdir().expect("marker dir");
    let mark = marks.path().join("hook-running");
    // The prestart hook runs while the init waits, with the cgroup and state made; kill
    // `create` there.
    let b = Bundle::new().sh("echo never").edit(|c| {
        c["hooks"] = json!({"prestart": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("touch {}; sleep 3", mark.display())]
        }]});
    });
    let id = unique_id("halfway");
    let mut create = berth
        .command()
        .args(["create", "--bundle", b.path().to_str().unwrap(), &id])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn create");
    wait_for("the prestart hook to run", || mark.exists().then_some(()));
    create.kill().expect("kill create");
    let _ = create.wait();
    assert!(
        berth.root().join(&id).exists(),
        "create left no state to clean up"
    );
    assert!(
        !find_cgroup_dirs(&id).is_empty(),
        "create had not made the cgroup yet"
    );

    berth
        .cmd(&["delete", "--force", &id])
        .assert_ok("delete --force");

    assert_no_leftovers(&berth, &id, b.path());
}

#[test]
fn foreground_run_with_a_terminal_proxies_the_pty() {
    let berth = Berth::new();
    let b = Bundle::new()
        .sh("tty; echo via-pty; exit 4")
        .edit(|c| c["process"]["terminal"] = json!(true));
    let id = unique_id("tty");

    // No --console-socket: `run` makes the pty itself and copies it to its stdout.
    let out = berth.run(&id, b.path(), &[]);

    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let text = berth.container_stdout(&id);
    assert!(
        text.contains("/dev/pts/"),
        "the process has no pty: {text:?}"
    );
    assert!(text.contains("via-pty"), "{text:?}");
    assert_no_leftovers(&berth, &id, b.path());
}

#[test]
fn detached_run_with_a_terminal_needs_a_console_socket() {
    let berth = Berth::new();
    let b = Bundle::new()
        .sh("true")
        .edit(|c| c["process"]["terminal"] = json!(true));
    let id = unique_id("ttyd");

    let out = berth.run(&id, b.path(), &["--detach"]);

    out.assert_error("detached terminal run")
        .assert_stderr_has("detached terminal run", &[&id, "console-socket"]);
    assert_no_leftovers(&berth, &id, b.path());
}

// ---------------------------------------------------------------------------------------------
// pause, resume, ps
// ---------------------------------------------------------------------------------------------

/// A container that counts up in /data/count (a host directory) every 20 ms.
fn counter(dir: &Path) -> Bundle {
    Bundle::new()
        .sh("i=0; echo ready; while :; do i=$((i+1)); echo $i > /data/count.tmp; mv /data/count.tmp /data/count; sleep 0.02; done")
        .edit(|v| {
            add_mount(
                v,
                json!({"destination": "/data", "type": "bind", "source": dir, "options": ["rbind", "rw"]}),
            )
        })
}

fn count(dir: &Path) -> u64 {
    fs::read_to_string(dir.join("count"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn pause_freezes_every_process_and_resume_thaws_them() {
    let berth = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let b = counter(dir.path());
    let id = unique_id("pause");
    berth.start_and_wait(&id, &b, "ready");
    wait_for("the counter to tick", || {
        (count(dir.path()) > 2).then_some(())
    });

    berth.cmd(&["pause", &id]).assert_ok("pause");

    assert_eq!(berth.state(&id)["status"], "paused");
    let frozen_at = count(dir.path());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        count(dir.path()),
        frozen_at,
        "a paused container kept running"
    );

    berth.cmd(&["resume", &id]).assert_ok("resume");

    assert_eq!(berth.state(&id)["status"], "running");
    wait_for("the counter to tick again", || {
        (count(dir.path()) > frozen_at).then_some(())
    });
}

#[test]
fn pause_of_a_created_container_and_resume_of_a_running_one_fail() {
    let berth = Berth::new();
    let b = sleeper();
    let id = unique_id("pausebad");
    berth.create(&id, b.path(), &[]).assert_ok("create");

    berth
        .cmd(&["pause", &id])
        .assert_error("pause created")
        .assert_stderr_has("pause created", &[&id, "container not running"]);

    berth.cmd(&["start", &id]).assert_ok("start");
    berth.wait_stdout(&id, "ready");
    berth
        .cmd(&["resume", &id])
        .assert_error("resume running")
        .assert_stderr_has("resume running", &[&id, "container not paused"]);
}

#[test]
fn force_delete_removes_a_paused_container() {
    let berth = Berth::new();
    let b = sleeper();
    let id = unique_id("pausedel");
    berth.start_and_wait(&id, &b, "ready");
    berth.cmd(&["pause", &id]).assert_ok("pause");

    berth
        .cmd(&["delete", "--force", &id])
        .assert_ok("delete --force");

    assert_no_leftovers(&berth, &id, b.path());
}

#[test]
fn ps_lists_the_containers_processes() {
    let berth = Berth::new();
    let b = Bundle::new().sh("sleep 1001 & echo ready; exec sleep 1002");
    let id = unique_id("ps");
    berth.start_and_wait(&id, &b, "ready");
    let init = berth.pid(&id);

    let json_out = berth.cmd(&["ps", "--format", "json", &id]);
    json_out.assert_ok("ps --format json");
    let pids: Vec<i32> =
        serde_json::from_str(json_out.stdout.trim()).expect("a JSON array of pids");
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(pids.contains(&init), "{pids:?} lacks the init {init}");

    let table = berth.cmd(&["ps", &id]);
    table.assert_ok("ps");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].contains("PID"), "{}", table.stdout);
    assert_eq!(lines.len(), 3, "{}", table.stdout);
    assert!(
        table.stdout.contains("sleep 1001") && table.stdout.contains("sleep 1002"),
        "{}",
        table.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// update
// ---------------------------------------------------------------------------------------------

fn cgroup_value(id: &str, hierarchy: &str, file: &str) -> String {
    let p = expected_cgroup_dir(hierarchy, id).join(file);
    fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn update_flags_change_the_running_containers_limits() {
    let berth = Berth::new();
    let b = sleeper();
    let id = unique_id("update");
    berth.start_and_wait(&id, &b, "ready");

    berth
        .cmd(&[
            "update",
            "--memory",
            "48m",
            "--pids-limit",
            "20",
            "--cpu-quota",
            "20000",
            "--cpu-period",
            "100000",
            &id,
        ])
        .assert_ok("update");

    assert_eq!(
        cgroup_value(&id, "memory", "memory.limit_in_bytes"),
        (48u64 << 20).to_string()
    );
    assert_eq!(cgroup_value(&id, "pids", "pids.max"), "20");
    assert_eq!(cgroup_value(&id, "cpu", "cpu.cfs_quota_us"), "20000");
}

#[test]
fn update_takes_a_resources_json_file() {
    let berth = Berth::new();
    let b = sleeper();
    let id = unique_id("updjson");
    berth.start_and_wait(&id, &b, "ready");
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("r.json");
    fs::write(
        &r,
        json!({"pids": {"limit": 33}, "memory": {"limit": 40_000_000i64}}).to_string(),
    )
    .unwrap();

    berth
        .cmd(&["update", "-r", r.to_str().unwrap(), &id])
        .assert_ok("update -r");

    assert_eq!(cgroup_value(&id, "pids", "pids.max"), "33");
    // The kernel rounds down to whole pages.
    assert_eq!(
        cgroup_value(&id, "memory", "memory.limit_in_bytes"),
        (40_000_000u64 / 4096 * 4096).to_string()
    );
}

#[test]
fn update_refuses_a_stopped_container_and_a_bad_size() {
    let berth = Berth::new();
    let b = sleeper();
    let id = unique_id("updbad");
    berth.start_and_wait(&id, &b, "ready");

    berth
        .cmd(&["update", "--memory", "lots", &id])
        .assert_error("bad size")
        .assert_stderr_has("bad size", &[&id, "--memory", "lots"]);

    berth.cmd(&["kill", &id, "KILL"]).assert_ok("kill");
    berth.wait_status(&id, "stopped");
    berth
        .cmd(&["update", "--pids-limit", "5", &id])
        .assert_error("update stopped")
        .assert_stderr_has("update stopped", &[&id, "container not running"]);
}
