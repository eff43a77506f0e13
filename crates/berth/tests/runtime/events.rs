//! `berth events`: runc's JSON lines for statistics and OOM kills, read from the
//! container's real cgroup, and the end of the stream when the container stops.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::common::*;

const MEMORY_LIMIT: u64 = 64 * 1024 * 1024;
const PIDS_LIMIT: u64 = 50;

/// A container that prints `ready`, then idles, with a memory and a pids limit.
fn limited_idler() -> Bundle {
    Bundle::new()
        .sh("echo ready; while :; do sleep 1; done")
        .edit(|c| {
            c["linux"]["resources"] = json!({
                "memory": {"limit": MEMORY_LIMIT},
                "pids": {"limit": PIDS_LIMIT}
            });
        })
}

/// The JSON lines of `text`; panics on a line that is not JSON.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `berth events ARGS... ID` in the background, its stdout going to a file.
fn spawn_events(berth: &Berth, args: &[&str], id: &str, out: &Path) -> Child {
    berth
        .command()
        .arg("events")
        .args(args)
        .arg(id)
        .stdout(fs::File::create(out).expect("events stdout file"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth events")
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut text);
    }
    text
}

#[test]
fn stats_reports_the_limits_processes_and_cpu_time() {
    let berth = Berth::new();
    let b = limited_idler();
    let id = unique_id("evstats");
    berth.start_and_wait(&id, &b, "ready");

    let out = berth.cmd(&["events", "--stats", &id]);

    out.assert_ok("events --stats");
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 1, "one event expected: {}", out.stdout);
    let event = &lines[0];
    assert_eq!(event["type"], "stats", "{event}");
    assert_eq!(event["id"], id.as_str(), "{event}");
    let data = &event["data"];
    assert_eq!(data["memory"]["usage"]["limit"], MEMORY_LIMIT, "{data}");
    assert!(
        data["memory"]["usage"]["usage"].as_u64() > Some(0),
        "{data}"
    );
    assert_eq!(data["pids"]["limit"], PIDS_LIMIT, "{data}");
    // The shell, and its sleep now and then.
    assert!(data["pids"]["current"].as_u64() >= Some(1), "{data}");
    assert!(data["cpu"]["usage"]["total"].as_u64() > Some(0), "{data}");
    berth.cmd(&["delete", "--force", &id]).assert_ok("delete");
}

#[test]
fn stats_has_the_top_level_layout_of_runc() {
    let keys = [
        "blkio",
        "cpu",
        "cpuset",
        "hugetlb",
        "intel_rdt",
        "memory",
        "network_interfaces",
        "pids",
    ];
    let berth = Berth::new();
    let b = limited_idler();
    let id = unique_id("evkeys");
    berth.start_and_wait(&id, &b, "ready");

    let out = berth.cmd(&["events", "--stats", &id]);

    out.assert_ok("events --stats");
    let event = &json_lines(&out.stdout)[0];
    let mut top: Vec<&str> = event
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    top.sort_unstable();
    assert_eq!(top, ["data", "id", "type"]);
    let data: Vec<&str> = event["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(data, keys, "{event}");
    assert_eq!(event["data"]["network_interfaces"], Value::Null);
    assert_eq!(event["data"]["intel_rdt"], json!({}));
    berth.cmd(&["delete", "--force", &id]).assert_ok("delete");
}

#[test]
fn stats_match_runcs_keys_on_the_same_bundle() {
    let runc = Path::new("/usr/sbin/runc");
    if !runc.exists() {
        skip(
            "stats_match_runcs_keys_on_the_same_bundle",
            "runc is not installed at /usr/sbin/runc",
        );
        return;
    }
    let berth = Berth::new();
    let b = limited_idler();
    let id = unique_id("evrunc");
    berth.start_and_wait(&id, &b, "ready");
    let berth_out = berth.cmd(&["events", "--stats", &id]);
    berth_out.assert_ok("berth events --stats");
    berth.cmd(&["delete", "--force", &id]).assert_ok("delete");

    let runc_root = tempfile::tempdir().expect("runc root");
    let runc_cmd = |args: &[&str]| {
        let mut c = Command::new(runc);
        c.arg("--root").arg(runc_root.path()).args(args);
        c.stdin(Stdio::null()).stderr(Stdio::null());
        c
    };
    let bundle = b.path().to_str().unwrap();
    // The detached container keeps the stdout it is given: not a pipe to wait on.
    let started = runc_cmd(&["run", "-d", "--bundle", bundle, &id])
        .stdout(Stdio::null())
        .status()
        .expect("run runc run");
    let runc_out = runc_cmd(&["events", "--stats", &id])
        .output()
        .expect("run runc events");
    let _ = runc_cmd(&["delete", "--force", &id]).status();
    assert!(started.success(), "runc run -d failed");
    assert!(runc_out.status.success(), "runc events --stats failed");

    let runc_event = &json_lines(&String::from_utf8_lossy(&runc_out.stdout))[0];
    let berth_event = &json_lines(&berth_out.stdout)[0];
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(berth_event), keys(runc_event));
    assert_eq!(keys(&berth_event["data"]), keys(&runc_event["data"]));
    for (part, field) in [("memory", "usage"), ("pids", "limit"), ("cpuset", "cpus")] {
        assert_eq!(
            berth_event["data"][part].get(field).is_some(),
            runc_event["data"][part].get(field).is_some(),
            "{part}.{field}: berth {} runc {}",
            berth_event["data"][part],
            runc_event["data"][part]
        );
    }
    assert_eq!(
        keys(&berth_event["data"]["memory"]["raw"]),
        keys(&runc_event["data"]["memory"]["raw"])
    );
}

#[test]
fn interval_prints_stats_until_the_container_is_killed() {
    let berth = Berth::new();
    let b = limited_idler();
    let id = unique_id("evtick");
    berth.start_and_wait(&id, &b, "ready");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.out");
    let mut events = spawn_events(&berth, &["--interval", "200ms"], &id, &out);

    let printed = wait_for("three stats lines", || {
        let text = fs::read_to_string(&out).unwrap_or_default();
        (text.lines().count() >= 3).then_some(text)
    });
    berth.cmd(&["kill", &id, "KILL"]).assert_ok("kill");
    let status = wait_bounded(&mut events, COMMAND_LIMIT);

    let stderr = stderr_of(&mut events);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "events should end with 0 once the container is killed; stderr: {stderr}"
    );
    for event in json_lines(&printed) {
        assert_eq!(event["type"], "stats", "{event}");
        assert_eq!(event["id"], id.as_str(), "{event}");
        assert_eq!(event["data"]["pids"]["limit"], PIDS_LIMIT, "{event}");
    }
    berth.cmd(&["delete", &id]).assert_ok("delete");
}

#[test]
fn sigterm_ends_events_cleanly() {
    let berth = Berth::new();
    let b = limited_idler();
    let id = unique_id("evterm");
    berth.start_and_wait(&id, &b, "ready");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.out");
    let mut events = spawn_events(&berth, &["--interval", "100ms"], &id, &out);
    wait_for("a stats line", || {
        fs::read_to_string(&out)
            .ok()
            .filter(|t| t.contains("\"stats\""))
    });

    kill(Pid::from_raw(events.id() as i32), Signal::SIGTERM).expect("signal events");
    let status = wait_bounded(&mut events, COMMAND_LIMIT);

    let stderr = stderr_of(&mut events);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "stderr: {stderr}");
    assert_eq!(
        berth.state(&id)["status"],
        "running",
        "the container is left alone"
    );
    // Every line is whole: the signal did not cut one.
    json_lines(&fs::read_to_string(&out).unwrap());
    berth.cmd(&["delete", "--force", &id]).assert_ok("delete");
}

/// Whether the container's memory limit is enforced by a memory controller on this host.
fn has_memory_controller() -> bool {
    cgroup_hierarchies().iter().any(|h| h == "memory")
        || fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"))
}

/// The OOM kills the kernel counted in container `id`'s memory cgroup, if it has one.
fn oom_kills(id: &str) -> Option<u64> {
    find_cgroup_dirs(id).iter().find_map(|dir| {
        // cgroup v1 counts them in memory.oom_control, cgroup v2 in memory.events.
        let text = fs::read_to_string(dir.join("memory.oom_control"))
            .or_else(|_| fs::read_to_string(dir.join("memory.events")))
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
    })
}

/// The memory limit of container `id` as the kernel holds it (v1 memory.limit_in_bytes,
/// v2 memory.max).
fn memory_limit(id: &str) -> Option<u64> {
    find_cgroup_dirs(id).iter().find_map(|dir| {
        fs::read_to_string(dir.join("memory.limit_in_bytes"))
            .or_else(|_| fs::read_to_string(dir.join("memory.max")))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
}

/// Each allocation in the container is OOM-killed and the next one starts, so notices
/// keep coming whenever events' watch is in place: no sleep to wait for it. Once one has
/// come the container is killed, and events ends with it.
#[test]
fn an_oom_kill_is_reported_then_events_ends() {
    const TEST: &str = "an_oom_kill_is_reported_then_events_ends";
    if !has_memory_controller() {
        skip(TEST, "this host has no memory cgroup controller");
        return;
    }
    const LIMIT: u64 = 8 * 1024 * 1024;
    let berth = Berth::new();
    let b = Bundle::new()
        .sh("echo ready; while :; do sh -c 'x=0123456789abcdef; while :; do x=$x$x; done'; done")
        .edit(|c| {
            c["linux"]["resources"] = json!({"memory": {"limit": LIMIT, "swap": LIMIT}});
        });
    let id = unique_id("evoom");
    berth.start_and_wait(&id, &b, "ready");
    assert_eq!(memory_limit(&id), Some(LIMIT), "the limit is not in force");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.out");
    // A long interval: the only lines expected are OOM notices.
    let mut events = spawn_events(&berth, &["--interval", "1h"], &id, &out);

    wait_for("an OOM notice from events", || {
        let text = fs::read_to_string(&out).ok()?;
        text.ends_with('\n').then_some(())
    });
    berth.cmd(&["kill", &id, "KILL"]).assert_ok("kill");
    let status = wait_bounded(&mut events, COMMAND_LIMIT);

    let stderr = stderr_of(&mut events);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "stderr: {stderr}");
    let text = fs::read_to_string(&out).unwrap();
    let lines = json_lines(&text);
    assert!(!lines.is_empty(), "no OOM notice; stderr: {stderr}");
    for line in &lines {
        assert_eq!(line, &json!({"type": "oom", "id": id}), "stderr: {stderr}");
    }
    assert!(
        oom_kills(&id).is_some_and(|n| n >= lines.len() as u64),
        "the kernel counted fewer OOM kills than events reported"
    );
    berth.wait_status(&id, "stopped");
    berth.cmd(&["delete", &id]).assert_ok("delete");
}

#[test]
fn events_on_an_unknown_container_fails_naming_it() {
    let berth = Berth::new();
    let id = unique_id("evnone");

    let out = berth.cmd(&["events", "--stats", &id]);

    out.assert_error("events on an unknown id")
        .assert_stderr_has(
            "events on an unknown id",
            &[&id, "container does not exist"],
        );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

#[test]
fn events_on_a_stopped_container_fails_naming_it() {
    let berth = Berth::new();
    let b = Bundle::new().args(&["true"]);
    let id = unique_id("evstopped");
    berth.create(&id, b.path(), &[]).assert_ok("create");
    berth.cmd(&["start", &id]).assert_ok("start");
    berth.wait_status(&id, "stopped");

    for args in [
        &["events", "--stats"][..],
        &["events", "--interval", "1s"][..],
    ] {
        let mut args = args.to_vec();
        args.push(&id);
        let out = berth.cmd(&args);

        out.assert_error("events on a stopped container")
            .assert_stderr_has("events on a stopped container", &[&id, "stopped"]);
        assert!(out.stdout.is_empty(), "{}", out.stdout);
    }
    berth.cmd(&["delete", &id]).assert_ok("delete");
}

#[test]
fn a_zero_interval_is_refused_as_runc_refuses_it() {
    let berth = Berth::new();
    let b = limited_idler();
    let id = unique_id("evzero");
    berth.start_and_wait(&id, &b, "ready");

    let out = berth.cmd(&["events", "--interval", "0s", &id]);

    out.assert_error("events --interval 0s")
        .assert_stderr_has("events --interval 0s", &["interval must be greater than 0"]);
    berth.cmd(&["delete", "--force", &id]).assert_ok("delete");
}

/// On a pure cgroup v2 host (a private mount namespace in which /sys/fs/cgroup is the
/// cgroup2 hierarchy alone; this machine is hybrid), `events --stats` reads cgroup2's
/// `cpu.stat` and, without a pids controller there, counts the processes as runc does.
#[test]
fn stats_on_a_cgroup_v2_host() {
    const TEST: &str = "stats_on_a_cgroup_v2_host";
    let has_cgroup2 = fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|mi| mi.lines().any(|l| l.contains(" - cgroup2 ")));
    if !has_cgroup2 {
        skip(TEST, "this kernel has no cgroup2 hierarchy mounted");
        return;
    }
    let berth = Berth::new();
    let b = Bundle::new().sh("while :; do sleep 1; done");
    let id = unique_id("evv2");
    let berth_cmd = format!(
        "{} --root {}",
        berth_bin().display(),
        berth.root().display()
    );
    let script = format!(
        "set -e; for m in $(awk '$5 ~ \"^/sys/fs/cgroup/\" {{print $5}}' /proc/self/mountinfo); do umount -l $m; done; \
         umount -l /sys/fs/cgroup; mount -t cgroup2 cgroup2 /sys/fs/cgroup; \
         {berth_cmd} run -d --bundle {} {id} </dev/null >/dev/null 2>&1; \
         rc=0; {berth_cmd} events --stats {id} || rc=$?; \
         {berth_cmd} delete --force {id}; exit $rc",
        b.path().display()
    );

    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");

    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout {stdout:?} stderr {stderr:?}");
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), 1, "{stdout}");
    let data = &lines[0]["data"];
    assert!(data["cpu"]["usage"]["total"].as_u64() > Some(0), "{data}");
    assert!(data["pids"]["current"].as_u64() >= Some(1), "{data}");
    // No v1 cpuset on a v2 host: runc's all-zero cpuset without lists.
    assert!(data["cpuset"].get("cpus").is_none(), "{data}");
    assert_no_leftovers(&berth, &id, b.path());
}
