//! Bad input: each is refused by `create` with exit status 1 and one line on stderr that names
//! the container id and the offending field or file, and leaves nothing on the host.

use std::fs;
use std::path::Path;

use serde_json::{json, Value};

use crate::common::*;

/// `create` of `bundle` as `id` must fail naming `id` and every needle, leaving nothing.
fn assert_create_refused(bundle: &Path, id: &str, needles: &[&str]) {
    let berth = Berth::new();

    let out = berth.create(id, bundle, &[]);

    let what = format!("create of a bad bundle, expecting {needles:?}");
    out.assert_error(&what)
        .assert_stderr_has(&what, &[id])
        .assert_stderr_has(&what, needles);
    assert_no_leftovers(&berth, id, bundle);
}

// ---------------------------------------------------------------------------------------------
// The bundle and config.json as a file
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_bundle_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-bundle");

    assert_create_refused(
        &missing,
        &unique_id("nobundle"),
        &["no-such-bundle", "No such file or directory"],
    );
}

#[test]
fn missing_config_json_is_refused() {
    let dir = tempfile::tempdir().unwrap();

    assert_create_refused(
        dir.path(),
        &unique_id("noconfig"),
        &["config.json", "No such file or directory"],
    );
}

#[test]
fn malformed_json_is_refused() {
    let b = Bundle::new();
    b.write_raw("{\"ociVersion\": \"1.2.0\", \"process\": ");

    assert_create_refused(
        b.path(),
        &unique_id("badjson"),
        &["config.json: not a valid runtime spec", "EOF while parsing"],
    );
}

#[test]
fn config_that_breaks_the_schema_is_refused() {
    let b = Bundle::new().edit(|v| v["process"]["args"] = json!(5));

    assert_create_refused(
        b.path(),
        &unique_id("schema"),
        &[
            "config.json: not a valid runtime spec",
            "invalid type: integer `5`",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Fields the runtime spec constrains
// ---------------------------------------------------------------------------------------------

#[test]
fn unsupported_oci_version_is_refused() {
    let b = Bundle::new().edit(|v| v["ociVersion"] = json!("2.0.0"));

    assert_create_refused(b.path(), &unique_id("ociver"), &["ociVersion", "2.0.0"]);
}

#[test]
fn relative_cwd_is_refused() {
    let b = Bundle::new().edit(|v| v["process"]["cwd"] = json!("relative/dir"));

    assert_create_refused(b.path(), &unique_id("relcwd"), &["process.cwd", "absolute"]);
}

#[test]
fn empty_args_are_refused() {
    let b = Bundle::new().args(&[]);

    assert_create_refused(
        b.path(),
        &unique_id("noargs"),
        &["process.args", "must not be empty"],
    );
}

#[test]
fn executable_missing_from_the_rootfs_is_refused_at_create() {
    let b = Bundle::new().args(&["no-such-binary-xyz"]);

    assert_create_refused(
        b.path(),
        &unique_id("noexe"),
        &["no-such-binary-xyz", "executable file not found in $PATH"],
    );
}

#[test]
fn unknown_capability_is_refused() {
    let b = Bundle::new()
        .edit(|v| v["process"]["capabilities"]["bounding"] = json!(["CAP_KILL", "CAP_BOGUS"]));

    assert_create_refused(
        b.path(),
        &unique_id("badcap"),
        &["not a valid runtime spec", "no variant for CAP_BOGUS"],
    );
}

#[test]
fn apparmor_profile_without_apparmor_is_refused() {
    if fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y")
    {
        skip(
            "apparmor_profile_without_apparmor_is_refused",
            "AppArmor is enabled on this host",
        );
        return;
    }
    let b = Bundle::new().edit(|v| v["process"]["apparmorProfile"] = json!("berth-test-profile"));

    assert_create_refused(
        b.path(),
        &unique_id("apparmor"),
        &["apparmorProfile", "AppArmor"],
    );
}

#[test]
fn unsupported_spec_field_is_refused_not_ignored() {
    let b = Bundle::new().edit(|v| v["linux"]["intelRdt"] = json!({"closID": "berth-test"}));

    assert_create_refused(b.path(), &unique_id("rdt"), &["linux.intelRdt", "resctrl"]);
}

#[test]
fn unknown_seccomp_syscall_is_refused() {
    let b = Bundle::new().edit(|v| {
        v["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["no_such_syscall_xyz"], "action": "SCMP_ACT_ERRNO"}]
        })
    });

    assert_create_refused(
        b.path(),
        &unique_id("badsyscall"),
        &["linux.seccomp.syscalls[0]", "no_such_syscall_xyz"],
    );
}

#[test]
fn sysctl_that_is_not_namespaced_is_refused() {
    let b = Bundle::new().edit(|v| v["linux"]["sysctl"] = json!({"vm.swappiness": "10"}));

    assert_create_refused(
        b.path(),
        &unique_id("hostsysctl"),
        &["linux.sysctl", "vm.swappiness", "namespace"],
    );
}

#[test]
fn hostname_without_a_uts_namespace_is_refused() {
    let b = Bundle::new().edit(|v| {
        remove_namespace(v, "uts");
        v["hostname"] = json!("not-allowed");
    });

    assert_create_refused(
        b.path(),
        &unique_id("nouts"),
        &["hostname", "needs a private uts namespace"],
    );
}

#[test]
fn missing_namespace_path_is_refused() {
    let b = Bundle::new().edit(|v| set_namespace(v, "network", Some("/nonexistent/ns/net")));

    assert_create_refused(
        b.path(),
        &unique_id("nsmissing"),
        &["linux.namespaces", "/nonexistent/ns/net does not exist"],
    );
}

// ---------------------------------------------------------------------------------------------
// Limits of this host
// ---------------------------------------------------------------------------------------------

/// Raising a hard limit above the caller's needs CAP_SYS_RESOURCE, which this host withholds.
#[test]
fn rlimit_above_the_hosts_hard_limit_is_refused() {
    const TEST: &str = "rlimit_above_the_hosts_hard_limit_is_refused";
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap();
    const CAP_SYS_RESOURCE: u32 = 24;
    if cap_eff & (1 << CAP_SYS_RESOURCE) != 0 {
        return skip(
            TEST,
            "the tests run with CAP_SYS_RESOURCE, which may raise any hard limit",
        );
    }
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    if hard == libc::RLIM_INFINITY {
        return skip(TEST, "this host's RLIMIT_NOFILE hard limit is unlimited");
    }
    let above = (hard + 1).max(1_048_576);
    let b = Bundle::new().edit(|v| {
        v["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": above}])
    });

    assert_create_refused(
        b.path(),
        &unique_id("rlimit"),
        &["RLIMIT_NOFILE", "hard limit"],
    );
}

// ---------------------------------------------------------------------------------------------
// Failures after create has started building the container
// ---------------------------------------------------------------------------------------------

#[test]
fn failing_prestart_hook_aborts_create() {
    let b = Bundle::new()
        .edit(|v| v["hooks"] = json!({"prestart": [{"path": "/bin/false", "args": ["false"]}]}));

    assert_create_refused(
        b.path(),
        &unique_id("badhook"),
        &["prestart hook", "exit status: 1"],
    );
}

#[test]
fn missing_bind_source_is_refused() {
    let b = Bundle::new();
    let missing = b.path().join("no-such-source");
    let b = b.edit(|v| {
        add_mount(v, json!({"destination": "/data", "type": "bind", "source": missing, "options": ["rbind"]}))
    });

    assert_create_refused(
        b.path(),
        &unique_id("nosource"),
        &["mounts[", "/data", "No such file or directory"],
    );
}

// ---------------------------------------------------------------------------------------------
// Container ids
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_id_is_refused() {
    let berth = Berth::new();
    let part = unique_id("slash");
    let id = format!("{part}/{part}");
    let b = Bundle::new();

    let out = berth.create(&id, b.path(), &[]);

    out.assert_error("create with a malformed id")
        .assert_stderr_has(
            "create with a malformed id",
            &[&id, "invalid container ID format"],
        );
    assert!(
        !berth.root().join(&part).exists(),
        "a state directory was made for {part}"
    );
    assert_no_leftovers(&berth, &id, b.path());
}

#[test]
fn duplicate_id_is_refused_and_the_first_container_is_untouched() {
    let berth = Berth::new();
    let first = Bundle::new().sh("echo first-ran");
    let second = Bundle::new().sh("echo second-ran");
    let id = unique_id("dup");
    berth
        .create(&id, first.path(), &[])
        .assert_ok("first create");
    let state = berth.state(&id);
    let cgroups = find_cgroup_dirs(&id);

    let out = berth.create(&id, second.path(), &[]);

    out.assert_error("second create").assert_stderr_has(
        "second create",
        &[&id, "container with given ID already exists"],
    );
    assert_eq!(
        berth.state(&id),
        state,
        "the first container's state changed"
    );
    assert!(pid_alive(berth.pid(&id)), "the first container's init died");
    assert_eq!(
        find_cgroup_dirs(&id),
        cgroups,
        "the first container's cgroups changed"
    );
    let second_path = second.path().to_string_lossy().into_owned();
    let procs = processes_mentioning(&second_path);
    assert!(
        procs.is_empty(),
        "processes of the second create remain: {procs:?}"
    );
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(&second_path),
        "the second create left a mount"
    );
    berth
        .cmd(&["start", &id])
        .assert_ok("start of the first container");
    berth.wait_status(&id, "stopped");
    let stdout = berth.container_stdout(&id);
    assert!(
        stdout.contains("first-ran") && !stdout.contains("second-ran"),
        "{stdout}"
    );
}

// ---------------------------------------------------------------------------------------------
// --log
// ---------------------------------------------------------------------------------------------

#[test]
fn error_is_also_written_to_the_json_log() {
    let berth = Berth::new();
    let b = Bundle::new().edit(|v| v["ociVersion"] = json!("2.0.0"));
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("berth.log");
    let id = unique_id("jsonlog");

    let out = berth.cmd(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);

    out.assert_error("create")
        .assert_stderr_has("create", &[&id]);
    let text = fs::read_to_string(&log).expect("the log file was written");
    let entries: Vec<Value> = text
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
        })
        .collect();
    let err = entries
        .iter()
        .find(|e| e["level"] == "error")
        .unwrap_or_else(|| panic!("no error entry in {text}"));
    let msg = err["msg"].as_str().unwrap_or("");
    assert!(msg.contains(&id) && msg.contains("ociVersion"), "{err}");
    assert!(!err["time"].as_str().unwrap_or("").is_empty(), "{err}");
}

#[test]
fn systemd_cgroup_without_systemd_is_a_clear_error() {
    if Path::new("/run/systemd/system").exists() {
        skip(
            "systemd_cgroup_without_systemd_is_a_clear_error",
            "systemd runs on this host",
        );
        return;
    }
    let berth = Berth::new();
    let b = Bundle::new().args(&["true"]);
    let id = unique_id("systemd");
    let mut c = berth.command();
    c.args([
        "--systemd-cgroup",
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        &id,
    ]);
    let out = c.output().expect("run berth");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&id) && err.contains("systemd"), "{err}");
    assert_no_leftovers(&berth, &id, b.path());
}

/// A state root others can write is not trusted: it decides the hooks delete runs and the
/// bundle exec reads.
#[test]
fn a_state_root_writable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let berth = Berth::new();
    fs::create_dir_all(berth.root()).unwrap();
    fs::set_permissions(berth.root(), fs::Permissions::from_mode(0o777)).unwrap();
    let b = Bundle::new();
    let id = unique_id("badroot");

    berth
        .create(&id, b.path(), &[])
        .assert_error("create under a world-writable root")
        .assert_stderr_has("create", &["state root", "writable by group or others"]);
    berth
        .cmd(&["list"])
        .assert_error("list of a world-writable root")
        .assert_stderr_has("list", &["writable by group or others"]);
    fs::set_permissions(berth.root(), fs::Permissions::from_mode(0o711)).unwrap();
    assert!(!berth.root().join(&id).exists());
}

/// A memory limit too small for berth's own setup: the OOM killer ends the init before it
/// can report, and the error says so and names the limit, not only that it exited.
#[test]
fn a_memory_limit_too_small_for_the_init_is_named() {
    let b = Bundle::new().edit(|v| {
        v["linux"]["resources"]["memory"] = serde_json::json!({"limit": 4096});
    });

    assert_create_refused(
        b.path(),
        &unique_id("tinymem"),
        &[
            "killed by the OOM killer during setup",
            "linux.resources.memory.limit is 4096 bytes",
        ],
    );
}

/// A network namespace "joined" by a path that is the host's own: a net.* sysctl would change
/// the host (threat model F14; runc refuses it too).
#[test]
fn a_net_sysctl_in_the_hosts_network_namespace_is_refused() {
    let b = Bundle::new().edit(|v| {
        set_namespace(v, "network", Some("/proc/self/ns/net"));
        v["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    });

    assert_create_refused(
        b.path(),
        &unique_id("hostnetsysctl"),
        &["net.ipv4.ip_forward", "joined by path is the host's"],
    );
}
