//! `berth checkpoint` and `berth restore` with CRIU.
//!
//! Where `criu check` passes, a real round trip: a counting container is checkpointed
//! (and so stopped), restored, and counts on from where it was. That test is `#[ignore]`d,
//! as it cannot run on the CI machine (its kernel: criu cannot read the vDSO);
//! `scripts/test.sh` runs it wherever `criu check` passes. Everything else runs everywhere: refused flags and states, missing images and
//! binaries, and — through a stand-in for criu passed with `--criu` — what berth does around a
//! criu that fails or succeeds: the arguments it passes, the state it records, what it
//! cleans up.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::*;

/// Counts in /tmp/counter every 0.1 s. Its stdio goes to the container's own /dev/null
/// first: CRIU cannot dump a descriptor of a file outside the container's mounts, which is
/// what the test harness gives a container as stdout and stderr.
const COUNTER: &str = "exec </dev/null >/dev/null 2>&1; \
                       i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done";

/// `criu check`'s complaint on one line, or None when CRIU works on this kernel.
fn criu_unusable() -> Option<String> {
    match Command::new("criu").arg("check").output() {
        Err(e) => Some(format!("cannot run criu: {e}")),
        Ok(o) if o.status.success() => None,
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            Some(lines.join("; "))
        }
    }
}

/// The value in the container's /tmp/counter, seen through its init's root.
fn counter(pid: i32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/root/tmp/counter"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A running counting container whose counter has reached `at_least`.
fn counting(berth: &Berth, prefix: &str, at_least: u64) -> (String, Bundle, i32) {
    let b = Bundle::new().sh(COUNTER);
    let id = unique_id(prefix);
    berth.create(&id, b.path(), &[]).assert_ok("create");
    berth.cmd(&["start", &id]).assert_ok("start");
    let pid = berth.pid(&id);
    wait_for(&format!("counter of {id} to reach {at_least}"), || {
        counter(pid).filter(|v| *v >= at_least)
    });
    (id, b, pid)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs berth with `env` added to its environment, bounded like [`Berth::cmd`].
fn cmd_with_env(berth: &Berth, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut c = berth.command();
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .args(args)
        .stdout(Stdio::from(out.reopen().unwrap()))
        .stderr(Stdio::from(err.reopen().unwrap()))
        .spawn()
        .expect("spawn berth");
    let status = wait_bounded(&mut child, COMMAND_LIMIT).expect("berth finished in time");
    Output {
        status,
        stdout: fs::read_to_string(out.path()).unwrap(),
        stderr: fs::read_to_string(err.path()).unwrap(),
        cmdline: format!("berth {}", args.join(" ")),
    }
}

/// A stand-in for criu: it appends its arguments to `args`, then on "fail" writes an error
/// line to its `-o` log (in `-W`, else `-D`) and exits 1; on "ok" a dump just succeeds and a
/// restore starts `sleep` as the "restored" init and writes its pid to `--pidfile`.
struct FakeCriu {
    dir: tempfile::TempDir,
}

impl FakeCriu {
    fn new(mode: &str) -> FakeCriu {
        let dir = tempfile::tempdir().unwrap();
        let args = dir.path().join("args");
        let script = format!(
            r#"#!/bin/sh
echo "$@" >> '{args}'
action=$1; dir=; work=; log=; pidfile=
while [ $# -gt 0 ]; do
  case "$1" in
    -D) dir=$2; shift;;
    -W) work=$2; shift;;
    -o) log=$2; shift;;
    --pidfile) pidfile=$2; shift;;
  esac
  shift
done
[ -n "$work" ] || work=$dir
case "$action:{mode}" in
  *:fail) echo "(00.000042) Error (fake-criu): injected $action failure" >> "$work/$log"; exit 1;;
  dump:ok) exit 0;;
  restore:ok) sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > "$pidfile"; exit 0;;
esac
exit 3
"#,
            args = args.display()
        );
        let path = dir.path().join("criu");
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        FakeCriu { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("criu")
    }

    /// Every command line it was run with, one per line.
    fn calls(&self) -> String {
        fs::read_to_string(self.dir.path().join("args")).unwrap_or_default()
    }
}

/// A checkpoint image made by a succeeding fake criu (--leave-running): the descriptors
/// berth writes after a dump, and no criu images.
fn fake_image(berth: &Berth, id: &str) -> tempfile::TempDir {
    let img = tempfile::tempdir().unwrap();
    let criu = FakeCriu::new("ok");
    berth
        .cmd(&[
            "--criu",
            path_str(&criu.path()),
            "checkpoint",
            "--leave-running",
            "--image-path",
            path_str(img.path()),
            id,
        ])
        .assert_ok("checkpoint with a succeeding fake criu");
    img
}

// ---------------------------------------------------------------------------------------------
// The real round trip
// ---------------------------------------------------------------------------------------------

/// Needs a kernel where `criu check` passes (not the CI machine's: criu cannot read its
/// vDSO). `scripts/test.sh` runs it where criu works and says so where it does not.
#[test]
#[ignore = "needs a kernel where `criu check` passes"]
fn restored_container_counts_on_from_where_it_was_checkpointed() {
    if let Some(why) = criu_unusable() {
        panic!("criu cannot checkpoint on this kernel: {why}");
    }
    let berth = Berth::new();
    let (id, b, pid) = counting(&berth, "cproundtrip", 20);
    let img = tempfile::tempdir().unwrap();
    let before = counter(pid).unwrap();

    berth
        .cmd(&["checkpoint", "--image-path", path_str(img.path()), &id])
        .assert_ok("checkpoint");
    assert_eq!(berth.state(&id)["status"], "stopped");
    berth
        .cmd(&["delete", &id])
        .assert_ok("delete after checkpoint");
    berth
        .cmd(&[
            "restore",
            "--detach",
            "--image-path",
            path_str(img.path()),
            "--bundle",
            path_str(b.path()),
            &id,
        ])
        .assert_ok("restore");

    assert_eq!(berth.state(&id)["status"], "running");
    let restored = berth.pid(&id);
    let first = wait_for("the restored counter", || counter(restored));
    assert!(
        first >= before,
        "counter restarted: {first} after restore, {before} before the checkpoint"
    );
    wait_for("the restored counter to move on", || {
        counter(restored).filter(|v| *v > first)
    });
    berth.cmd(&["kill", &id, "KILL"]).assert_ok("kill");
    berth.wait_status(&id, "stopped");
    berth.cmd(&["delete", &id]).assert_ok("delete");
    assert_no_leftovers(&berth, &id, b.path());
}

// ---------------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------------

#[test]
fn checkpoint_refuses_bad_flags_and_leaves_the_container_running() {
    let berth = Berth::new();
    let (id, _b, pid) = counting(&berth, "cpflags", 1);
    let img = tempfile::tempdir().unwrap();
    let image = img.path().join("never");
    let image = path_str(&image);

    for (flags, needle) in [
        (
            &["--manage-cgroups-mode", "props"][..],
            "--manage-cgroups-mode",
        ),
        (&["--empty-ns", "ipc"][..], "--empty-ns"),
        (&["--page-server", "no-port"][..], "--page-server"),
        (&["--parent-path", "/absolute"][..], "--parent-path"),
        (&["--status-fd", "1"][..], "--status-fd"),
    ] {
        let mut args = vec!["checkpoint", "--image-path", image];
        args.extend_from_slice(flags);
        args.push(&id);

        let out = berth.cmd(&args);

        let what = format!("checkpoint {flags:?}");
        out.assert_error(&what)
            .assert_stderr_has(&what, &[&id, needle]);
    }
    assert_eq!(berth.state(&id)["status"], "running");
    assert_eq!(berth.pid(&id), pid);
    assert!(
        !Path::new(image).exists(),
        "a refused checkpoint made {image}"
    );
}

#[test]
fn restore_refuses_flags_that_criu_cannot_honour() {
    let berth = Berth::new();
    let b = Bundle::new().sh(COUNTER);
    let img = tempfile::tempdir().unwrap();

    for (flags, needle) in [
        (
            &["--console-socket", "/tmp/no-such.sock"][..],
            "--console-socket",
        ),
        (&["--no-pivot"][..], "--no-pivot"),
        (
            &["--manage-cgroups-mode", "bogus"][..],
            "--manage-cgroups-mode",
        ),
        (&["--empty-ns", "pid"][..], "--empty-ns"),
    ] {
        let id = unique_id("rsflags");
        let mut args = vec![
            "restore",
            "-d",
            "--image-path",
            path_str(img.path()),
            "--bundle",
            path_str(b.path()),
        ];
        args.extend_from_slice(flags);
        args.push(&id);

        let out = berth.cmd(&args);

        let what = format!("restore {flags:?}");
        out.assert_error(&what)
            .assert_stderr_has(&what, &[&id, needle]);
        assert_no_leftovers(&berth, &id, b.path());
    }
}

// ---------------------------------------------------------------------------------------------
// Containers that cannot be checkpointed
// ---------------------------------------------------------------------------------------------

#[test]
fn checkpoint_of_a_created_container_is_refused() {
    let berth = Berth::new();
    let b = Bundle::new().sh(COUNTER);
    let id = unique_id("cpcreated");
    berth.create(&id, b.path(), &[]).assert_ok("create");
    let img = tempfile::tempdir().unwrap();
    let image = img.path().join("img");

    let out = berth.cmd(&["checkpoint", "--image-path", path_str(&image), &id]);

    out.assert_error("checkpoint of a created container")
        .assert_stderr_has(
            "checkpoint of a created container",
            &[&id, "cannot be checkpointed in created state"],
        );
    assert_eq!(berth.state(&id)["status"], "created");
    assert!(
        !image.exists(),
        "a refused checkpoint made {}",
        image.display()
    );
}

#[test]
fn checkpoint_of_a_stopped_container_is_refused() {
    let berth = Berth::new();
    let b = Bundle::new().args(&["true"]);
    let id = unique_id("cpstopped");
    berth.create(&id, b.path(), &[]).assert_ok("create");
    berth.cmd(&["start", &id]).assert_ok("start");
    berth.wait_status(&id, "stopped");
    let img = tempfile::tempdir().unwrap();

    let out = berth.cmd(&["checkpoint", "--image-path", path_str(img.path()), &id]);

    out.assert_error("checkpoint of a stopped container")
        .assert_stderr_has(
            "checkpoint of a stopped container",
            &[&id, "cannot be checkpointed in stopped state"],
        );
    assert_eq!(berth.state(&id)["status"], "stopped");
}

#[test]
fn checkpoint_of_an_unknown_container_is_refused() {
    let berth = Berth::new();
    let id = unique_id("cpunknown");
    let img = tempfile::tempdir().unwrap();

    let out = berth.cmd(&["checkpoint", "--image-path", path_str(img.path()), &id]);

    out.assert_error("checkpoint of an unknown container")
        .assert_stderr_has(
            "checkpoint of an unknown container",
            &[&id, "container does not exist"],
        );
}

// ---------------------------------------------------------------------------------------------
// A criu that fails
// ---------------------------------------------------------------------------------------------

#[test]
fn failing_criu_dump_leaves_the_container_running_and_names_the_log() {
    let berth = Berth::new();
    let (id, _b, pid) = counting(&berth, "cpfail", 1);
    let state_before: Value = berth.state(&id);
    let criu = FakeCriu::new("fail");
    let img = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("dump.log");

    let out = berth.cmd(&[
        "--criu",
        path_str(&criu.path()),
        "checkpoint",
        "--image-path",
        path_str(img.path()),
        "--work-path",
        path_str(work.path()),
        &id,
    ]);

    out.assert_error("checkpoint with a failing criu")
        .assert_stderr_has(
            "checkpoint with a failing criu",
            &[
                &id,
                "criu dump failed",
                path_str(&log),
                "Error (fake-criu): injected dump failure",
            ],
        );
    assert_eq!(berth.state(&id), state_before);
    assert!(pid_alive(pid));
    let now = counter(pid).unwrap();
    wait_for("the counter to move on after the failed dump", || {
        counter(pid).filter(|v| *v > now)
    });
    assert!(
        !img.path().join("descriptors.json").exists(),
        "a failed dump left a restorable image"
    );
    let calls = criu.calls();
    assert!(
        calls.starts_with(&format!("dump -t {pid} ")),
        "criu was run as: {calls}"
    );
}

/// The same through the real criu, on a kernel where it cannot work.
#[test]
fn real_criu_dump_failure_leaves_the_container_running() {
    let Some(why) = criu_unusable() else {
        skip(
            "real_criu_dump_failure_leaves_the_container_running",
            "criu works on this kernel; the failure path is tested with a fake criu",
        );
        return;
    };
    let berth = Berth::new();
    let (id, _b, pid) = counting(&berth, "cprealfail", 1);
    let img = tempfile::tempdir().unwrap();
    let log = img.path().join("dump.log");

    let out = berth.cmd(&["checkpoint", "--image-path", path_str(img.path()), &id]);

    out.assert_error(&format!("checkpoint where criu check says: {why}"))
        .assert_stderr_has(
            "checkpoint",
            &[&id, "criu dump failed", path_str(&log), "Error ("],
        );
    assert_eq!(berth.state(&id)["status"], "running");
    assert_eq!(berth.pid(&id), pid);
}

#[test]
fn failing_criu_restore_leaves_nothing_and_names_the_log() {
    let berth = Berth::new();
    let (id, b, _) = counting(&berth, "rsfailsrc", 1);
    let img = fake_image(&berth, &id);
    berth.cmd(&["delete", "--force", &id]).assert_ok("delete");
    let criu = FakeCriu::new("fail");
    let new_id = unique_id("rsfail");

    let out = berth.cmd(&[
        "--criu",
        path_str(&criu.path()),
        "restore",
        "-d",
        "--image-path",
        path_str(img.path()),
        "--bundle",
        path_str(b.path()),
        &new_id,
    ]);

    out.assert_error("restore with a failing criu")
        .assert_stderr_has(
            "restore with a failing criu",
            &[
                &new_id,
                "criu restore failed",
                path_str(&img.path().join("restore.log")),
                "Error (fake-criu): injected restore failure",
            ],
        );
    assert_no_leftovers(&berth, &new_id, b.path());
    assert!(criu.calls().starts_with("restore "), "{}", criu.calls());
}

// ---------------------------------------------------------------------------------------------
// What restore records, and what it refuses before it makes anything
// ---------------------------------------------------------------------------------------------

#[test]
fn restored_container_is_known_to_state_kill_and_delete() {
    let berth = Berth::new();
    let (id, b, _) = counting(&berth, "rsokdsrc", 1);
    let img = fake_image(&berth, &id);
    berth.cmd(&["delete", "--force", &id]).assert_ok("delete");
    let criu = FakeCriu::new("ok");
    let new_id = unique_id("rsok");
    let pid_file = img.path().join("restored.pid");

    berth
        .cmd(&[
            "--criu",
            path_str(&criu.path()),
            "restore",
            "--detach",
            "--image-path",
            path_str(img.path()),
            "--bundle",
            path_str(b.path()),
            "--pid-file",
            path_str(&pid_file),
            &new_id,
        ])
        .assert_ok("restore with a succeeding fake criu");

    let st = berth.state(&new_id);
    assert_eq!(st["status"], "running", "{st}");
    let pid = st["pid"].as_i64().unwrap() as i32;
    let written: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(written, pid);
    assert!(pid_alive(pid));
    let ps = berth.cmd(&["ps", "--format", "json", &new_id]);
    ps.assert_ok("ps");
    let in_cgroup: Vec<i32> = serde_json::from_str(ps.stdout.trim()).unwrap();
    assert!(
        in_cgroup.contains(&pid),
        "restored pid {pid} is not in the container's cgroup: {in_cgroup:?}"
    );
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains("criu-root"),
        "criu's root reached the host's mounts:\n{mountinfo}"
    );
    let calls = criu.calls();
    let restore = calls.lines().last().unwrap_or_default();
    for needle in [
        "restore ",
        "--restore-detached",
        "--restore-sibling",
        &format!("-D {}", img.path().display()),
        &format!("/{new_id}/criu-root"),
        "--cgroup-root",
        "--empty-ns net",
    ] {
        assert!(restore.contains(needle), "{needle} not in: {restore}");
    }
    berth.cmd(&["kill", &new_id, "KILL"]).assert_ok("kill");
    berth.wait_status(&new_id, "stopped");
    berth.cmd(&["delete", &new_id]).assert_ok("delete");
    assert_no_leftovers(&berth, &new_id, b.path());
}

#[test]
fn restore_with_a_missing_image_path_is_refused() {
    let berth = Berth::new();
    let b = Bundle::new().sh(COUNTER);
    let id = unique_id("rsnoimg");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-image");

    let out = berth.cmd(&[
        "restore",
        "-d",
        "--image-path",
        path_str(&missing),
        "--bundle",
        path_str(b.path()),
        &id,
    ]);

    out.assert_error("restore from a missing image path")
        .assert_stderr_has(
            "restore from a missing image path",
            &[&id, path_str(&missing)],
        );
    assert_no_leftovers(&berth, &id, b.path());
}

#[test]
fn restore_over_an_existing_container_is_refused() {
    let berth = Berth::new();
    let (id, b, pid) = counting(&berth, "rsexists", 1);
    let img = fake_image(&berth, &id);

    let out = berth.cmd(&[
        "restore",
        "-d",
        "--image-path",
        path_str(img.path()),
        "--bundle",
        path_str(b.path()),
        &id,
    ]);

    out.assert_error("restore over an existing container")
        .assert_stderr_has(
            "restore over an existing container",
            &[&id, "container with given ID already exists"],
        );
    assert_eq!(berth.state(&id)["status"], "running");
    assert_eq!(berth.pid(&id), pid);
}

#[test]
fn restore_without_criu_on_path_is_refused() {
    let berth = Berth::new();
    let b = Bundle::new().sh(COUNTER);
    let id = unique_id("rsnocriu");
    let empty = tempfile::tempdir().unwrap();
    let img = tempfile::tempdir().unwrap();

    let out = cmd_with_env(
        &berth,
        &[("PATH", empty.path())],
        &[
            "restore",
            "-d",
            "--image-path",
            path_str(img.path()),
            "--bundle",
            path_str(b.path()),
            &id,
        ],
    );

    out.assert_error("restore without criu")
        .assert_stderr_has("restore without criu", &[&id, "criu is not on PATH"]);
    assert_no_leftovers(&berth, &id, b.path());
}
