//! `berth exec`: a new process joins the running container's namespaces and cgroup, with
//! the container's process as the default and the flags on top.

use std::fs;

use serde_json::json;

use crate::common::*;

/// A running container with an extra capability in its bounding set, for --cap.
fn running(berth: &Berth, prefix: &str) -> (String, Bundle) {
    let b = Bundle::new().sh("echo ready; exec sleep 1000").edit(|c| {
        c["hostname"] = json!("exec-host");
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!("FROM_CONFIG=yes"));
    });
    let id = unique_id(prefix);
    berth.start_and_wait(&id, &b, "ready");
    (id, b)
}

fn exec(berth: &Berth, args: &[&str]) -> Output {
    let mut a = vec!["exec"];
    a.extend_from_slice(args);
    berth.cmd(&a)
}

fn read_pid(path: &std::path::Path) -> i32 {
    fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

/// `berth ps --format json`: the pids in the container's cgroup.
fn container_pids(berth: &Berth, id: &str) -> Vec<i32> {
    let ps = berth.cmd(&["ps", "--format", "json", id]);
    ps.assert_ok("ps --format json");
    serde_json::from_str(ps.stdout.trim()).unwrap()
}

fn ns(pid: i32, kind: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn exec_joins_every_namespace_and_the_cgroup_of_the_container() {
    let berth = Berth::new();
    let (id, _b) = running(&berth, "exns");
    let init = berth.pid(&id);

    let out = exec(
        &berth,
        &[&id, "sh", "-c", "hostname; for n in mnt net ipc uts pid cgroup; do readlink /proc/self/ns/$n; done; cat /proc/self/cgroup"],
    );

    out.assert_ok("exec");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "exec-host", "{}", out.stdout);
    for (i, kind) in ["mnt", "net", "ipc", "uts", "pid", "cgroup"]
        .iter()
        .enumerate()
    {
        assert_eq!(
            lines[1 + i],
            ns(init, kind),
            "{kind} namespace differs from the init's"
        );
    }
    let init_cgroups = fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    let exec_cgroups: Vec<&str> = lines[7..].to_vec();
    assert_eq!(
        exec_cgroups.len(),
        init_cgroups.lines().count(),
        "{}",
        out.stdout
    );
    assert!(
        exec_cgroups.iter().all(|l| l.ends_with(":/")),
        "the exec'd process is not at the root of the container's cgroup namespace: {exec_cgroups:?}"
    );
}

#[test]
fn exec_passes_the_exit_status_through() {
    let berth = Berth::new();
    let (id, _b) = running(&berth, "exstatus");

    let out = exec(&berth, &[&id, "sh", "-c", "exit 23"]);

    assert_eq!(out.status.code(), Some(23), "{out:?}");
}

#[test]
fn exec_applies_user_env_and_cwd_over_the_containers_process() {
    let berth = Berth::new();
    let (id, _b) = running(&berth, "exflags");

    let out = exec(
        &berth,
        &[
            "-u",
            "1000:1000",
            "-g",
            "5",
            "-e",
            "EXTRA=1",
            "--cwd",
            "/tmp",
            &id,
            "sh",
            "-c",
            "id -u; id -g; id -G; pwd; echo $EXTRA $FROM_CONFIG",
        ],
    );

    out.assert_ok("exec");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        ["1000", "1000", "1000 5", "/tmp", "1 yes"],
        "{}",
        out.stdout
    );
}

#[test]
fn exec_cap_adds_a_capability_but_never_an_inheritable_one() {
    let berth = Berth::new();
    let (id, _b) = running(&berth, "excap");

    let out = exec(
        &berth,
        &[
            "--cap",
            "CAP_SYS_TIME",
            &id,
            "sh",
            "-c",
            "grep -E 'CapEff|CapInh' /proc/self/status",
        ],
    );

    out.assert_ok("exec --cap");
    let field = |name: &str| {
        let l = out.stdout.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(l.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_ne!(
        field("CapEff") & (1 << 25),
        0,
        "CAP_SYS_TIME not effective: {}",
        out.stdout
    );
    assert_eq!(
        field("CapInh"),
        0,
        "exec granted inheritable capabilities (CVE-2022-29162)"
    );
}

#[test]
fn exec_of_a_missing_command_is_an_error_naming_it() {
    let berth = Berth::new();
    let (id, _b) = running(&berth, "exmissing");

    let out = exec(&berth, &[&id, "no-such-command"]);

    out.assert_exec_error("exec of a missing command")
        .assert_stderr_has("exec", &[&id, "no-such-command", "not found"]);
}

#[test]
fn exec_in_a_stopped_container_fails() {
    let berth = Berth::new();
    let b = Bundle::new().sh("true");
    let id = unique_id("exstopped");
    berth.create(&id, b.path(), &[]).assert_ok("create");
    berth.cmd(&["start", &id]).assert_ok("start");
    berth.wait_status(&id, "stopped");

    let out = exec(&berth, &[&id, "true"]);

    out.assert_exec_error("exec in stopped").assert_stderr_has(
        "exec in stopped",
        &[&id, "cannot exec in a stopped container"],
    );
}

#[test]
fn exec_in_a_paused_container_needs_ignore_paused() {
    let berth = Berth::new();
    let (id, _b) = running(&berth, "expaused");
    berth.cmd(&["pause", &id]).assert_ok("pause");

    exec(&berth, &[&id, "true"])
        .assert_exec_error("exec in paused")
        .assert_stderr_has(
            "exec in paused",
            &[
                &id,
                "cannot exec in a paused container (use --ignore-paused",
            ],
        );
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    exec(
        &berth,
        &[
            "--ignore-paused",
            "-d",
            "--pid-file",
            pid_file.to_str().unwrap(),
            &id,
            "sleep",
            "998",
        ],
    )
    .assert_ok("exec --ignore-paused");

    // The new process waits, frozen, in the container's cgroup until resume.
    let pid = read_pid(&pid_file);
    let pids = container_pids(&berth, &id);
    assert!(
        pids.contains(&pid),
        "{pid} not in the paused container's cgroup: {pids:?}"
    );
    berth.cmd(&["resume", &id]).assert_ok("resume");
    wait_for("the exec'd process to exec sleep", || {
        fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .ok()
            .filter(|c| c.starts_with("sleep"))
    });
}

#[test]
fn detached_exec_writes_its_pid_and_the_process_is_in_the_container() {
    let berth = Berth::new();
    let (id, _b) = running(&berth, "exdetach");
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");

    exec(
        &berth,
        &[
            "-d",
            "--pid-file",
            pid_file.to_str().unwrap(),
            &id,
            "sleep",
            "999",
        ],
    )
    .assert_ok("exec -d");

    let pid = read_pid(&pid_file);
    let pids = container_pids(&berth, &id);
    assert!(
        pids.contains(&pid),
        "exec'd pid {pid} is not among the container's {pids:?}"
    );
    assert_eq!(ns(pid, "pid"), ns(berth.pid(&id), "pid"));
}

#[test]
fn exec_process_json_is_run_as_given() {
    let berth = Berth::new();
    let (id, _b) = running(&berth, "exjson");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("process.json");
    fs::write(
        &p,
        json!({"args": ["sh", "-c", "echo $ONLY; id -u"], "env": ["ONLY=from-json", "PATH=/bin"], "cwd": "/", "user": {"uid": 65534, "gid": 65534}})
            .to_string(),
    )
    .unwrap();

    let out = exec(&berth, &["--process", p.to_str().unwrap(), &id]);

    out.assert_ok("exec --process");
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["from-json", "65534"],
        "{}",
        out.stdout
    );
}

#[test]
fn exec_with_a_tty_in_the_foreground_gets_a_pty() {
    let berth = Berth::new();
    let (id, _b) = running(&berth, "extty");

    let out = exec(&berth, &["-t", &id, "sh", "-c", "tty; exit 3"]);

    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(out.stdout.contains("/dev/pts/"), "{}", out.stdout);
}

#[test]
fn exec_joins_the_user_namespace_first() {
    let berth = Berth::new();
    let b = Bundle::new().sh("echo ready; exec sleep 1000").edit(|c| {
        set_namespace(c, "user", None);
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    });
    let id = unique_id("exuserns");
    berth.start_and_wait(&id, &b, "ready");

    let out = exec(
        &berth,
        &[
            &id,
            "sh",
            "-c",
            "cat /proc/self/uid_map; readlink /proc/self/ns/user",
        ],
    );

    out.assert_ok("exec in a user namespace");
    assert!(
        out.stdout
            .split_whitespace()
            .take(3)
            .eq(["0", "100000", "65536"]),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&ns(berth.pid(&id), "user")),
        "{}",
        out.stdout
    );
}

/// `--cgroup PATH`: the exec process runs in an existing sub-cgroup of the container's,
/// in every hierarchy; `--cgroup CONTROLLER:PATH` in that hierarchy only.
#[test]
fn exec_cgroup_runs_the_process_in_a_sub_cgroup() {
    let berth = Berth::new();
    let (id, _b) = running(&berth, "excg");
    // Make "sub" in every hierarchy of the container.
    let dirs: Vec<_> = find_cgroup_dirs(&id)
        .into_iter()
        .map(|d| d.join("sub"))
        .collect();
    assert!(!dirs.is_empty(), "no cgroup dirs for {id}");
    for d in &dirs {
        fs::create_dir(d).unwrap();
        // A v1 cpuset cgroup takes no task until it has CPUs and memory nodes.
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(v) = fs::read_to_string(d.parent().unwrap().join(f)) {
                if d.join(f).exists() && !d.join("cgroup.type").exists() {
                    fs::write(d.join(f), v.trim()).unwrap();
                }
            }
        }
    }
    let _cleanup = RemoveDirs(dirs);

    let out = exec(
        &berth,
        &["--cgroup", "sub", &id, "cat", "/proc/self/cgroup"],
    );
    out.assert_ok("exec --cgroup sub");
    for line in out.stdout.lines() {
        assert!(
            line.ends_with("/sub"),
            "not in the sub-cgroup: {line}\n{}",
            out.stdout
        );
    }

    let out = exec(
        &berth,
        &["--cgroup", "pids:sub", &id, "cat", "/proc/self/cgroup"],
    );
    out.assert_ok("exec --cgroup pids:sub");
    for line in out.stdout.lines() {
        let in_sub = line.ends_with("/sub");
        assert_eq!(in_sub, line.contains(":pids:"), "{line}\n{}", out.stdout);
    }
}

#[test]
fn exec_cgroup_refuses_a_missing_or_escaping_sub_cgroup() {
    let berth = Berth::new();
    let (id, _b) = running(&berth, "excgbad");

    exec(&berth, &["--cgroup", "nosuch", &id, "true"])
        .assert_exec_error("exec --cgroup nosuch")
        .assert_stderr_has("exec", &["--cgroup", "nosuch", "does not exist"]);
    exec(&berth, &["--cgroup", "../..", &id, "true"])
        .assert_exec_error("exec --cgroup ../..")
        .assert_stderr_has("exec", &["--cgroup", "without . or .."]);
    exec(&berth, &["--cgroup", "nosuchctl:sub", &id, "true"])
        .assert_exec_error("exec --cgroup nosuchctl:sub")
        .assert_stderr_has("exec", &["no nosuchctl cgroup"]);
    // "/" is the container's cgroup itself, as runc reads it.
    exec(&berth, &["--cgroup", "/", &id, "true"]).assert_ok("exec --cgroup /");
}

/// Removes the directories (sub-cgroups) on drop, deepest first.
struct RemoveDirs(Vec<std::path::PathBuf>);

impl Drop for RemoveDirs {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}

/// exec obeys the config the container was created with, and the kernel's view of the
/// init's namespaces: a config.json replaced in the bundle afterwards (no namespaces, no
/// seccomp, other env) changes nothing (threat model F5).
#[test]
fn exec_ignores_a_config_edited_after_create() {
    let berth = Berth::new();
    let b = Bundle::new().sh("echo ready; exec sleep 1000").edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
        });
        c["process"]["env"] = json!(["PATH=/bin", "FROM=create"]);
    });
    let id = unique_id("exf5");
    berth.start_and_wait(&id, &b, "ready");
    let pid = berth.pid(&id);
    let init_ns: Vec<String> = ["net", "pid", "mnt", "uts", "ipc"]
        .iter()
        .map(|n| {
            fs::read_link(format!("/proc/{pid}/ns/{n}"))
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    let b = b.edit(|c| {
        c["linux"]["namespaces"] = json!([]);
        c["linux"]
            .as_object_mut()
            .unwrap()
            .retain(|k, _| k != "seccomp");
        c["process"]["env"] = json!(["PATH=/bin", "FROM=edited"]);
    });
    assert!(b.config()["linux"]["seccomp"].is_null());

    let out = exec(
        &berth,
        &[
            &id,
            "sh",
            "-c",
            "for n in net pid mnt uts ipc; do readlink /proc/self/ns/$n; done; \
             echo $FROM; mkdir /tmp/x 2>/dev/null && echo mkdir-allowed; grep Seccomp: /proc/self/status",
        ],
    );

    out.assert_ok("exec after the config changed");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[..5], init_ns[..], "{}", out.stdout);
    assert_eq!(lines[5..], ["create", "Seccomp:\t2"], "{}", out.stdout);
}
