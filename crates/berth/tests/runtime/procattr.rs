//! Spec 1.1–1.3 process attributes: process.scheduler, process.ioPriority,
//! process.execCPUAffinity, linux.personality and linux.memoryPolicy, each observed from
//! inside the container, and each bad value refused before anything is made.

use std::fs;

use serde_json::{json, Value};

use crate::common::*;

/// Runs `script` in a container with `edit` applied; returns stdout, failing on a non-empty
/// stderr.
fn run_sh(edit: impl FnOnce(&mut Value), script: &str) -> String {
    let out = Berth::new().run_to_exit(&Bundle::new().sh(script).edit(edit));
    assert!(out.stderr.is_empty(), "stderr: {}", out.stderr);
    out.stdout
}

/// Fields of /proc/<pid>/stat after the command name (field 3 is index 0).
fn stat_fields(stat: &str) -> Vec<String> {
    let rest = &stat[stat.rfind(')').expect("stat has a comm") + 2..];
    rest.split_whitespace().map(str::to_string).collect()
}

/// `berth create` with `edit` applied must fail naming `field`, leaving nothing behind.
fn refused(edit: impl FnOnce(&mut Value), field: &str, reason: &str) {
    let berth = Berth::new();
    let b = Bundle::new().edit(edit);
    let id = unique_id("bad");
    berth
        .create(&id, b.path(), &[])
        .assert_error("create with a bad value")
        .assert_stderr_has("create", &[field, reason, "config.json"]);
    assert_no_leftovers(&berth, &id, b.path());
}

#[test]
fn scheduler_policy_and_nice_are_applied() {
    let out = run_sh(
        |c| c["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 7}),
        "cat /proc/self/stat",
    );
    let f = stat_fields(&out);
    // stat(5): field 19 is nice, field 41 the policy (SCHED_BATCH = 3).
    assert_eq!(f[19 - 3], "7", "nice in {out}");
    assert_eq!(f[41 - 3], "3", "policy in {out}");
}

#[test]
fn scheduler_idle_policy_is_applied() {
    let out = run_sh(
        |c| c["process"]["scheduler"] = json!({"policy": "SCHED_IDLE"}),
        "cat /proc/self/stat",
    );
    assert_eq!(stat_fields(&out)[41 - 3], "5", "policy in {out}");
}

#[test]
fn bad_scheduler_is_refused() {
    refused(
        |c| c["process"]["scheduler"] = json!({"policy": "SCHED_FIFO", "priority": 0}),
        "process.scheduler",
        "1 to 99",
    );
    refused(
        |c| c["process"]["scheduler"] = json!({"policy": "SCHED_OTHER", "nice": 40}),
        "process.scheduler",
        "nice 40",
    );
}

#[test]
fn io_priority_is_applied() {
    let out = run_sh(
        |c| c["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0}),
        "ionice",
    );
    assert_eq!(out.trim(), "idle", "ionice said {out:?}");
    let out = run_sh(
        |c| c["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 6}),
        "ionice",
    );
    assert_eq!(out.trim(), "best-effort: prio 6", "ionice said {out:?}");
}

#[test]
fn bad_io_priority_is_refused() {
    refused(
        |c| c["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 9}),
        "process.ioPriority",
        "0 (highest) to 7",
    );
}

#[test]
fn personality_linux32_makes_uname_report_a_32_bit_machine() {
    let native = run_sh(|_| {}, "uname -m");
    let out = run_sh(
        |c| c["linux"]["personality"] = json!({"domain": "LINUX32"}),
        "uname -m",
    );
    if native.trim() != "x86_64" {
        skip(
            "personality LINUX32",
            "the check knows only x86_64's 32-bit name",
        );
        return;
    }
    assert_eq!(out.trim(), "i686");
    let out = run_sh(
        |c| c["linux"]["personality"] = json!({"domain": "LINUX"}),
        "uname -m",
    );
    assert_eq!(out.trim(), "x86_64");
}

#[test]
fn personality_flags_are_refused() {
    refused(
        |c| c["linux"]["personality"] = json!({"domain": "LINUX", "flags": ["ADDR_NO_RANDOMIZE"]}),
        "linux.personality",
        "no personality flags",
    );
}

/// The policy column of /proc/self/numa_maps for the stack mapping.
fn stack_policy(numa_maps: &str) -> String {
    numa_maps
        .lines()
        .find(|l| l.contains("stack"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no stack line in numa_maps:\n{numa_maps}"))
        .to_string()
}

#[test]
fn memory_policy_is_applied() {
    if !std::path::Path::new("/proc/self/numa_maps").exists() {
        skip(
            "linux.memoryPolicy",
            "this kernel has no NUMA support (no /proc/self/numa_maps)",
        );
        return;
    }
    let out = run_sh(
        |c| c["linux"]["memoryPolicy"] = json!({"mode": "MPOL_BIND", "nodes": "0"}),
        "cat /proc/self/numa_maps",
    );
    assert_eq!(stack_policy(&out), "bind:0", "{out}");
    let out = run_sh(
        |c| {
            c["linux"]["memoryPolicy"] =
                json!({"mode": "MPOL_INTERLEAVE", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]})
        },
        "cat /proc/self/numa_maps",
    );
    assert_eq!(stack_policy(&out), "interleave=static:0", "{out}");
    let out = run_sh(|_| {}, "cat /proc/self/numa_maps");
    assert_eq!(stack_policy(&out), "default", "{out}");
}

#[test]
fn bad_memory_policy_is_refused() {
    refused(
        |c| c["linux"]["memoryPolicy"] = json!({"mode": "MPOL_BIND"}),
        "linux.memoryPolicy",
        "at least one node",
    );
    refused(
        |c| c["linux"]["memoryPolicy"] = json!({"mode": "MPOL_LOCAL", "nodes": "0-x"}),
        "linux.memoryPolicy",
        "not a list",
    );
}

#[test]
fn exec_cpu_affinity_final_pins_the_exec_process() {
    if nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .unwrap_or(1)
        < 2
    {
        skip(
            "execCPUAffinity",
            "this host has one CPU, so pinning cannot be told apart",
        );
        return;
    }
    let berth = Berth::new();
    let b = Bundle::new().sh("echo ready; exec sleep 1000");
    let id = unique_id("affinity");
    berth.start_and_wait(&id, &b, "ready");
    let mut process = b.config()["process"].clone();
    process["args"] = json!(["sh", "-c", "grep Cpus_allowed_list /proc/self/status"]);
    process["execCPUAffinity"] = json!({"initial": "0", "final": "1"});
    let pfile = b.path().join("process.json");
    fs::write(&pfile, process.to_string()).unwrap();

    let out = berth.cmd(&["exec", "--process", pfile.to_str().unwrap(), &id]);

    out.assert_ok("exec with execCPUAffinity");
    assert_eq!(
        out.stdout.split_whitespace().last(),
        Some("1"),
        "{}",
        out.stdout
    );
    // The container's init is untouched: the field is for exec only.
    let init = berth.pid(&id);
    let status = fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    assert!(
        !status.contains("Cpus_allowed_list:\t1\n"),
        "the init was pinned too:\n{status}"
    );
}

#[test]
fn bad_exec_cpu_affinity_is_refused() {
    refused(
        |c| c["process"]["execCPUAffinity"] = json!({"final": "3-1"}),
        "process.execCPUAffinity.final",
        "ends before it starts",
    );
}
