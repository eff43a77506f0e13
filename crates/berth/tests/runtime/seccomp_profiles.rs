//! Berth's own setup under seccomp profiles it did not write.
//!
//! Once the container's filter is loaded, berth may only make system calls that every
//! allowlist has: profiles written before openat2, close_range, faccessat2 or statx existed
//! (older engines, Kubernetes clusters, the one OCI runtime-tools generates) would otherwise
//! break every container during berth's setup. `fixtures/seccomp-classic-allowlist.json`
//! is such a profile: every x86_64 system call numbered below statx (332, Linux 4.11),
//! without those classic profiles grant only with a capability (mount, setns, unshare,
//! ptrace, keyctl, bpf, ...), and EPERM for everything else.

use serde_json::{json, Value};

use crate::common::*;

fn classic_allowlist() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seccomp-classic-allowlist.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap();
    let names = v["syscalls"][0]["names"].as_array().unwrap();
    for newer in ["openat2", "close_range", "faccessat2", "statx", "clone3"] {
        assert!(
            !names.iter().any(|n| n == newer),
            "the classic allowlist must not allow {newer}"
        );
    }
    v
}

/// A bundle under the classic allowlist that runs as an unprivileged user in a cwd other
/// than /, so every step berth takes after loading the filter is exercised.
fn classic_bundle(no_new_privs: bool, script: &str) -> Bundle {
    Bundle::new()
        .edit(|v| {
            v["linux"]["seccomp"] = classic_allowlist();
            v["process"]["noNewPrivileges"] = json!(no_new_privs);
            v["process"]["cwd"] = json!("/tmp/cwd/made");
            v["process"]["user"] = json!({"uid": 65534, "gid": 65534, "additionalGids": [100]});
            v["process"]["capabilities"] = json!({
                "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "inheritable": ["CAP_KILL"],
                "ambient": ["CAP_KILL"]
            });
        })
        .sh(script)
}

const PROBE: &str =
    "echo ok; id -u; id -G; pwd; grep -E '^(Seccomp|CapEff|NoNewPrivs):' /proc/self/status";

fn assert_probe(out: &str, no_new_privs: bool) {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.get(..4),
        Some(&["ok", "65534", "65534 100", "/tmp/cwd/made"][..]),
        "{out}"
    );
    assert!(lines.contains(&"Seccomp:\t2"), "no filter loaded: {out}");
    // Across execve a non-root user keeps only its ambient set: CAP_KILL (bit 5).
    assert!(lines.contains(&"CapEff:\t0000000000000020"), "{out}");
    let nnp = if no_new_privs { "1" } else { "0" };
    assert!(
        lines.contains(&format!("NoNewPrivs:\t{nnp}").as_str()),
        "{out}"
    );
}

#[test]
fn a_classic_allowlist_without_no_new_privs_runs_the_container() {
    let berth = Berth::new();

    let out = berth.run_to_exit(&classic_bundle(false, PROBE));

    assert_probe(&out.stdout, false);
}

#[test]
fn a_classic_allowlist_with_no_new_privs_runs_the_container() {
    let berth = Berth::new();

    let out = berth.run_to_exit(&classic_bundle(true, PROBE));

    assert_probe(&out.stdout, true);
}

#[test]
fn exec_runs_under_a_classic_allowlist() {
    for no_new_privs in [false, true] {
        let berth = Berth::new();
        let b = classic_bundle(no_new_privs, "echo up; exec sleep 100");
        let id = unique_id("classicexec");
        berth.start_and_wait(&id, &b, "up");

        let out = berth.cmd(&["exec", &id, "sh", "-c", PROBE]);

        out.assert_ok("exec under the classic allowlist");
        assert_probe(&out.stdout, no_new_privs);
        berth.cmd(&["delete", "--force", &id]).assert_ok("delete");
    }
}

/// startContainer hooks run under the container's filter. berth starts them with
/// posix_spawn, which in glibc tries clone3 first and falls back to clone only on ENOSYS:
/// the filter answers calls newer than the profile with ENOSYS, as runc's does.
#[test]
fn a_start_container_hook_runs_under_a_classic_allowlist() {
    for no_new_privs in [false, true] {
        let berth = Berth::new();
        let b = classic_bundle(no_new_privs, "cat /tmp/hook-ran").edit(|v| {
            v["hooks"] = json!({"startContainer": [{
                "path": "/bin/sh",
                "args": ["sh", "-c", "echo hook-ran > /tmp/hook-ran"]
            }]});
        });

        let out = berth.run_to_exit(&b);

        assert_eq!(out.stdout, "hook-ran\n", "stderr: {}", out.stderr);
    }
}
