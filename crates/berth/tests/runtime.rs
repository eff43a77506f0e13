//! Root integration tests of the `berth` binary: real containers from a busybox rootfs.
//!
//! Run as root: `cargo test -p berth --test runtime -- --test-threads=2`.
//! Each test has its own `--root` and bundle, so tests never see each other's containers.
//!
//! - this file: commands that need no container (`--version`, `spec`, `features`)
//! - `runtime/lifecycle.rs`: create, start, state, kill, delete, list, run
//! - `runtime/spec.rs`: each part of config.json, observed from inside and outside
//! - `runtime/errors.rs`: bad input, each refused with a clear error and nothing left behind

mod common;

#[path = "runtime/cgroup_v2.rs"]
mod cgroup_v2;
#[path = "runtime/checkpoint.rs"]
mod checkpoint;
#[path = "runtime/cves.rs"]
mod cves;
#[path = "runtime/errors.rs"]
mod errors;
#[path = "runtime/events.rs"]
mod events;
#[path = "runtime/exec.rs"]
mod exec;
#[path = "runtime/idmap.rs"]
mod idmap;
#[path = "runtime/lifecycle.rs"]
mod lifecycle;
#[path = "runtime/netdev.rs"]
mod netdev;
#[path = "runtime/procattr.rs"]
mod procattr;
#[path = "runtime/rootless.rs"]
mod rootless;
#[path = "runtime/seccomp_notify.rs"]
mod seccomp_notify;
#[path = "runtime/seccomp_profiles.rs"]
mod seccomp_profiles;
#[path = "runtime/spec.rs"]
mod spec;

use std::fs;

use common::{Berth, Bundle};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// --version, spec, features
// ---------------------------------------------------------------------------------------------

#[test]
fn version_names_the_package_and_spec_versions() {
    let berth = Berth::new();

    let out = berth.cmd(&["--version"]);

    out.assert_ok("--version");
    assert!(
        out.stdout
            .contains(&format!("berth version {}", env!("CARGO_PKG_VERSION"))),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("spec: 1."), "{}", out.stdout);
}

fn read_json(path: &std::path::Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

#[test]
fn spec_writes_a_runnable_default_config() {
    let berth = Berth::new();
    let dir = tempfile::tempdir().unwrap();

    berth
        .cmd(&["spec", "--bundle", dir.path().to_str().unwrap()])
        .assert_ok("spec");

    let v = read_json(&dir.path().join("config.json"));
    assert!(
        v["ociVersion"].as_str().unwrap_or("").starts_with("1."),
        "{v}"
    );
    assert_eq!(v["root"]["path"], "rootfs");
    assert_eq!(v["process"]["args"], serde_json::json!(["sh"]));
    assert_eq!(v["process"]["cwd"], "/");
    let ns: Vec<&str> = v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["type"].as_str())
        .collect();
    for t in ["pid", "network", "ipc", "uts", "mount"] {
        assert!(ns.contains(&t), "default namespaces {ns:?} lack {t}");
    }
}

#[test]
fn spec_refuses_to_overwrite_an_existing_config() {
    let berth = Berth::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    fs::write(&config, "keep me").unwrap();

    let out = berth.cmd(&["spec", "--bundle", dir.path().to_str().unwrap()]);

    out.assert_error("spec over an existing config")
        .assert_stderr_has("spec", &["config.json"]);
    assert_eq!(fs::read_to_string(&config).unwrap(), "keep me");
}

#[test]
fn spec_rootless_maps_the_caller_in_a_user_namespace() {
    let berth = Berth::new();
    let dir = tempfile::tempdir().unwrap();

    berth
        .cmd(&[
            "spec",
            "--rootless",
            "--bundle",
            dir.path().to_str().unwrap(),
        ])
        .assert_ok("spec --rootless");

    let v = read_json(&dir.path().join("config.json"));
    let ns: Vec<&str> = v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["type"].as_str())
        .collect();
    assert!(ns.contains(&"user"), "{ns:?}");
    let uid = nix::unistd::getuid().as_raw();
    assert_eq!(v["linux"]["uidMappings"][0]["hostID"], uid);
    assert_eq!(v["linux"]["uidMappings"][0]["containerID"], 0);
}

#[test]
fn features_describes_what_this_build_supports() {
    let berth = Berth::new();

    let out = berth.cmd(&["features"]);

    out.assert_ok("features");
    let v: Value = serde_json::from_str(&out.stdout).expect("features prints JSON");
    assert_eq!(v["ociVersionMin"], "1.0.0");
    assert!(
        v["ociVersionMax"].as_str().unwrap_or("").starts_with("1."),
        "{v}"
    );
    let strings = |p: &Value| -> Vec<String> {
        p.as_array()
            .unwrap_or_else(|| panic!("not an array: {p}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let hooks = strings(&v["hooks"]);
    for h in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        assert!(hooks.iter().any(|x| x == h), "hooks {hooks:?} lack {h}");
    }
    let opts = strings(&v["mountOptions"]);
    for o in ["ro", "rbind", "nosuid"] {
        assert!(
            opts.iter().any(|x| x == o),
            "mountOptions {opts:?} lack {o}"
        );
    }
    let ns = strings(&v["linux"]["namespaces"]);
    for n in ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"] {
        assert!(ns.iter().any(|x| x == n), "namespaces {ns:?} lack {n}");
    }
    assert!(strings(&v["linux"]["capabilities"])
        .iter()
        .any(|c| c == "CAP_SYS_ADMIN"));
    assert_eq!(v["linux"]["cgroup"]["v1"], true);
    assert_eq!(v["linux"]["seccomp"]["enabled"], true);
    assert!(strings(&v["linux"]["seccomp"]["actions"])
        .iter()
        .any(|a| a == "SCMP_ACT_ERRNO"));
}

/// The bundle helper itself: `Bundle::new()` must give a container that runs, or every other
/// test would fail for a reason unrelated to what it checks.
#[test]
fn default_test_bundle_runs() {
    let berth = Berth::new();
    let b = Bundle::new().sh("echo bundle-ok");

    let out = berth.run_to_exit(&b);

    assert_eq!(out.stdout.trim(), "bundle-ok", "stderr: {}", out.stderr);
}

/// A command line clap cannot take is one line naming what it could not take, and exit
/// status 1, as runc's usage errors (not clap's seven lines and 2).
#[test]
fn a_usage_error_is_one_line_naming_the_argument() {
    let berth = Berth::new();

    let out = berth.cmd(&["state", "-x"]);

    out.assert_error("state -x")
        .assert_stderr_has("state -x", &["'-x'", "error"]);
    let out = berth.cmd(&["kill"]);
    out.assert_error("kill without an id")
        .assert_stderr_has("kill", &["<CONTAINER_ID>"]);
}

/// An id that looks like a flag is a valid id after `--` (runc's id rules allow it).
#[test]
fn an_id_that_looks_like_a_flag_runs_after_a_double_dash() {
    let berth = Berth::new();
    let b = Bundle::new().sh("echo ran");

    let out = berth.run("-x", b.path(), &["--"]);

    out.assert_ok("run -- -x");
    assert_eq!(berth.container_stdout("-x"), "ran\n");
}
