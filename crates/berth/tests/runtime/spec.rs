//! config.json, part by part: each test sets one part and observes its effect from inside the
//! container (what the process sees) or from the host (cgroup files, file ownership).

use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use crate::common::*;

/// The value of `field` in /proc/<pid>/status text, whitespace-normalised.
fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in:\n{status}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `bundle` to completion and returns its /proc/self/status.
fn proc_status(bundle: Bundle) -> String {
    Berth::new()
        .run_to_exit(&bundle.args(&["cat", "/proc/self/status"]))
        .stdout
}

/// Runs `script` in a container built from `bundle` and returns its stdout and stderr, merged.
fn sh_output(bundle: Bundle, script: &str) -> String {
    let out = Berth::new().run_to_exit(&bundle.sh(&format!("exec 2>&1; {script}")));
    out.stdout + &out.stderr
}

// ---------------------------------------------------------------------------------------------
// process: args, env, cwd, user, umask
// ---------------------------------------------------------------------------------------------

#[test]
fn args_reach_the_process_verbatim() {
    let b = Bundle::new().args(&[
        "sh",
        "-c",
        "printf '[%s]' \"$0\" \"$1\"",
        "zero",
        "one  two",
    ]);

    let out = Berth::new().run_to_exit(&b);

    assert_eq!(out.stdout, "[zero][one  two]");
}

#[test]
fn env_is_process_env() {
    let env = ["PATH=/bin", "GREETING=hello world"];
    let b = Bundle::new()
        .args(&["env"])
        .edit(|v| v["process"]["env"] = json!(env));

    let out = Berth::new().run_to_exit(&b);

    let lines: Vec<&str> = out.stdout.lines().collect();
    for e in env {
        assert!(lines.contains(&e), "{e:?} missing from {lines:?}");
    }
    // Nothing of berth's own environment leaks in; runc adds HOME only.
    for l in &lines {
        assert!(
            env.contains(l) || l.starts_with("HOME="),
            "unexpected variable {l:?}"
        );
    }
}

#[test]
fn cwd_is_process_cwd() {
    let b = Bundle::new()
        .args(&["pwd"])
        .edit(|v| v["process"]["cwd"] = json!("/etc"));

    let out = Berth::new().run_to_exit(&b);

    assert_eq!(out.stdout.trim(), "/etc");
}

#[test]
fn missing_cwd_is_created() {
    let b = Bundle::new()
        .args(&["pwd"])
        .edit(|v| v["process"]["cwd"] = json!("/tmp/made/here"));

    let out = Berth::new().run_to_exit(&b);

    assert_eq!(out.stdout.trim(), "/tmp/made/here");
}

#[test]
fn user_ids_and_additional_gids_are_set() {
    let b = Bundle::new().edit(|v| {
        v["process"]["user"] = json!({"uid": 1000, "gid": 1001, "additionalGids": [2000, 3000]})
    });

    let status = proc_status(b);

    assert_eq!(status_field(&status, "Uid"), "1000 1000 1000 1000");
    assert_eq!(status_field(&status, "Gid"), "1001 1001 1001 1001");
    assert_eq!(status_field(&status, "Groups"), "2000 3000");
}

#[test]
fn umask_is_applied() {
    let b =
        Bundle::new().edit(|v| v["process"]["user"] = json!({"uid": 0, "gid": 0, "umask": 0o027}));

    let out = Berth::new().run_to_exit(&b.sh("umask"));

    assert_eq!(out.stdout.trim(), "0027");
}

// ---------------------------------------------------------------------------------------------
// process: rlimits, noNewPrivileges, oomScoreAdj, capabilities
// ---------------------------------------------------------------------------------------------

#[test]
fn rlimits_are_applied() {
    let b = Bundle::new().edit(|v| {
        v["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654}])
    });

    let out = Berth::new().run_to_exit(&b.args(&["cat", "/proc/self/limits"]));

    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open files limit in:\n{}", out.stdout));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3..5], ["321", "654"], "{line}");
}

#[test]
fn no_new_privileges_sets_the_flag() {
    let b = Bundle::new().edit(|v| v["process"]["noNewPrivileges"] = json!(true));

    assert_eq!(status_field(&proc_status(b), "NoNewPrivs"), "1");
}

#[test]
fn without_no_new_privileges_the_flag_is_clear() {
    let b = Bundle::new().edit(|v| v["process"]["noNewPrivileges"] = json!(false));

    assert_eq!(status_field(&proc_status(b), "NoNewPrivs"), "0");
}

#[test]
fn oom_score_adj_is_applied() {
    let b = Bundle::new().edit(|v| v["process"]["oomScoreAdj"] = json!(423));

    let out = Berth::new().run_to_exit(&b.args(&["cat", "/proc/self/oom_score_adj"]));

    assert_eq!(out.stdout.trim(), "423");
}

const CAP_BITS: &[(&str, u32)] = &[
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_RAW", 13),
    ("CAP_SYS_CHROOT", 18),
];

/// The /proc/<pid>/status hex mask of a set of capability names.
fn cap_mask(names: &[&str]) -> String {
    let m = names.iter().fold(0u64, |m, n| {
        let bit = CAP_BITS.iter().find(|(c, _)| c == n).expect("known cap").1;
        m | 1 << bit
    });
    format!("{m:016x}")
}

/// As uid 0, exec grants the bounding set (which here equals effective and permitted) and
/// keeps inheritable and ambient: all five sets show as given.
#[test]
fn capabilities_of_a_root_process_match_the_sets() {
    let full = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
    ];
    let some = ["CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let b = Bundle::new().edit(|v| {
        v["process"]["capabilities"] = json!({
            "bounding": full, "effective": full, "permitted": full,
            "inheritable": some, "ambient": some,
        })
    });

    let status = proc_status(b);

    assert_eq!(status_field(&status, "CapBnd"), cap_mask(&full));
    assert_eq!(status_field(&status, "CapEff"), cap_mask(&full));
    assert_eq!(status_field(&status, "CapPrm"), cap_mask(&full));
    assert_eq!(status_field(&status, "CapInh"), cap_mask(&some));
    assert_eq!(status_field(&status, "CapAmb"), cap_mask(&some));
}

/// A non-root process keeps across exec only what is ambient; the bounding set stays whole.
#[test]
fn capabilities_of_a_non_root_process_are_its_ambient_set() {
    let full = [
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_NET_RAW",
    ];
    let some = ["CAP_KILL", "CAP_NET_RAW"];
    let b = Bundle::new().edit(|v| {
        v["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        v["process"]["capabilities"] = json!({
            "bounding": full, "effective": some, "permitted": some,
            "inheritable": some, "ambient": some,
        })
    });

    let status = proc_status(b);

    assert_eq!(status_field(&status, "CapBnd"), cap_mask(&full));
    assert_eq!(status_field(&status, "CapInh"), cap_mask(&some));
    assert_eq!(status_field(&status, "CapAmb"), cap_mask(&some));
    assert_eq!(status_field(&status, "CapPrm"), cap_mask(&some));
    assert_eq!(status_field(&status, "CapEff"), cap_mask(&some));
}

// ---------------------------------------------------------------------------------------------
// terminal
// ---------------------------------------------------------------------------------------------

/// Accepts berth's connection on the console socket and takes the pty master it sends.
fn receive_pty_master(listener: &UnixListener) -> OwnedFd {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;

    listener.set_nonblocking(true).unwrap();
    let stream = wait_for("berth to connect to the console socket", || {
        listener.accept().ok()
    })
    .0;
    stream.set_nonblocking(false).unwrap();
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .expect("recvmsg on the console socket");
    let fds: Vec<i32> = msg
        .cmsgs()
        .expect("control messages")
        .filter_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => Some(fds),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        fds.len(),
        1,
        "the console socket should carry one fd, got {fds:?}"
    );
    // SAFETY: the kernel installed this fd in our table with SCM_RIGHTS; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fds[0]) }
}

/// Reads the pty master until the slave side closes (EIO) or the deadline passes.
fn read_pty(master: &OwnedFd) -> String {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;

    let deadline = Instant::now() + WAIT_LIMIT;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(200u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => panic!("poll the pty master: {e}"),
        }
        let mut buf = [0u8; 4096];
        match nix::unistd::read(master, &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => panic!("read the pty master: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn terminal_pty_master_is_sent_to_the_console_socket() {
    let berth = Berth::new();
    let b = Bundle::new()
        .sh("tty; test -t 0 && test -t 1 && echo all-on-tty")
        .edit(|v| v["process"]["terminal"] = json!(true));
    let sock = b.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let id = unique_id("tty");
    berth
        .create(&id, b.path(), &["--console-socket", sock.to_str().unwrap()])
        .assert_ok("create --console-socket");
    let master = receive_pty_master(&listener);

    berth.cmd(&["start", &id]).assert_ok("start");

    let out = read_pty(&master);
    assert!(out.contains("/dev/pts/"), "tty printed no pty: {out:?}");
    assert!(
        out.contains("all-on-tty"),
        "stdin/stdout are not the terminal: {out:?}"
    );
    berth.wait_status(&id, "stopped");
}

// ---------------------------------------------------------------------------------------------
// seccomp
// ---------------------------------------------------------------------------------------------

/// busybox `uname` ignores the failure of uname(2) and prints what it got: nothing.
#[test]
fn seccomp_errno_rule_fails_the_syscall() {
    let b = Bundle::new().edit(|v| {
        v["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_ERRNO"}]
        })
    });

    let out = sh_output(b, "uname -s; grep Seccomp: /proc/self/status");

    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&""),
        "uname(2) was not blocked: {out:?}"
    );
    assert!(lines.contains(&"Seccomp:\t2"), "no seccomp filter: {out:?}");
}

#[test]
fn seccomp_errno_ret_is_the_errno_the_syscall_returns() {
    let b = Bundle::new().edit(|v| {
        v["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EACCES}]
        })
    });

    let out = sh_output(b, "mkdir /tmp/blocked; echo rc=$?");

    assert!(out.contains("rc=1"), "mkdir was not blocked: {out:?}");
    assert!(
        out.contains("Permission denied"),
        "mkdir failed without EACCES: {out:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// namespaces
// ---------------------------------------------------------------------------------------------

fn host_ns(kind: &str) -> PathBuf {
    fs::read_link(format!("/proc/self/ns/{kind}")).unwrap()
}

/// `readlink /proc/self/ns/<kind>` inside the container, for each kind, as "kind link" lines.
fn ns_script(kinds: &[&str]) -> String {
    format!(
        "for n in {}; do echo \"$n $(readlink /proc/self/ns/$n)\"; done",
        kinds.join(" ")
    )
}

#[test]
fn each_listed_namespace_is_new() {
    let kinds = ["pid", "net", "ipc", "uts", "mnt", "cgroup"];
    let b = Bundle::new();
    let listed: Vec<String> = b.config()["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap().to_string())
        .collect();
    for t in ["pid", "network", "ipc", "uts", "mount", "cgroup"] {
        assert!(
            listed.iter().any(|l| l == t),
            "the default spec does not list {t}"
        );
    }

    let out = sh_output(b, &ns_script(&kinds));

    for line in out.lines() {
        let (kind, link) = line.split_once(' ').unwrap();
        assert_ne!(
            Path::new(link),
            host_ns(kind),
            "{kind} namespace is the host's"
        );
    }
    assert_eq!(out.lines().count(), kinds.len(), "{out}");
}

#[test]
fn unlisted_namespace_is_the_hosts() {
    let b = Bundle::new().edit(|v| remove_namespace(v, "ipc"));

    let out = sh_output(b, "readlink /proc/self/ns/ipc");

    assert_eq!(Path::new(out.trim()), host_ns("ipc"));
}

#[test]
fn namespace_path_joins_another_containers_namespace() {
    let berth = Berth::new();
    let first = Bundle::new().sh("echo ready; exec sleep 1000");
    let first_id = unique_id("nsowner");
    berth.start_and_wait(&first_id, &first, "ready");
    let pid = berth.pid(&first_id);
    let first_net = fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_ne!(
        first_net,
        host_ns("net"),
        "the first container has no network namespace of its own"
    );
    let second =
        Bundle::new().edit(|v| set_namespace(v, "network", Some(&format!("/proc/{pid}/ns/net"))));

    let out = berth.run_to_exit(&second.args(&["readlink", "/proc/self/ns/net"]));

    assert_eq!(Path::new(out.stdout.trim()), first_net);
}

/// A copy of the test rootfs in the bundle, for containers whose mounts the host sees.
fn private_rootfs(b: &Bundle) -> PathBuf {
    let dst = b.path().join("rootfs");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(rootfs())
        .arg(&dst)
        .status()
        .unwrap();
    assert!(st.success(), "copy the rootfs");
    dst
}

/// The mount points below `dir` in the host's mount namespace.
fn host_mounts_below(dir: &Path) -> Vec<String> {
    let dir = fs::canonicalize(dir).unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| Path::new(m).starts_with(&dir) && Path::new(m) != dir)
        .collect()
}

/// The optional fields (shared:N, master:N) of the host's / mount.
fn root_propagation() -> String {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = text
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap()
        .to_string();
    let fields: Vec<&str> = line.split(' ').collect();
    let end = fields.iter().position(|f| *f == "-").unwrap();
    fields[6..end].join(" ")
}

/// Without a mount namespace (runc runs these too) the container lives in the host's: its
/// mounts are made below its rootfs only, it is entered with chroot, exec enters the same
/// root, and delete leaves no mount behind and the host's / as it was.
/// A bundle without a mount namespace, on a copy of the rootfs of its own (its mounts are
/// the host's to see), without the masked and read-only paths that need a namespace.
fn host_mount_ns_bundle(readonly_root: bool) -> (Bundle, PathBuf) {
    let b = Bundle::new();
    let rootfs = private_rootfs(&b);
    let b = b.edit(|v| {
        remove_namespace(v, "mount");
        v["root"] = json!({"path": rootfs, "readonly": readonly_root});
        v["linux"]
            .as_object_mut()
            .unwrap()
            .retain(|k, _| k != "maskedPaths" && k != "readonlyPaths");
    });
    (b, rootfs)
}

#[test]
fn a_container_without_a_mount_namespace_shares_the_hosts_and_leaves_no_mount() {
    let berth = Berth::new();
    let (b, rootfs) = host_mount_ns_bundle(false);
    let b = b.sh("echo ready; exec sleep 1000");
    let propagation = root_propagation();
    let id = unique_id("nomntns");

    berth.start_and_wait(&id, &b, "ready");

    let pid = berth.pid(&id);
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap(),
        host_ns("mnt")
    );
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/root")).unwrap(),
        fs::canonicalize(&rootfs).unwrap()
    );
    let mounted = host_mounts_below(&rootfs);
    assert!(
        mounted.iter().any(|m| m.ends_with("/proc")),
        "proc is mounted below the rootfs: {mounted:?}"
    );
    let out = berth.cmd(&["exec", &id, "cat", ROOTFS_MARKER]);
    out.assert_ok("exec");
    assert_eq!(
        out.stdout, "berth-test-rootfs\n",
        "exec is in the container's root"
    );
    berth.cmd(&["delete", "--force", &id]).assert_ok("delete");
    assert_eq!(host_mounts_below(&rootfs), Vec::<String>::new());
    assert_eq!(root_propagation(), propagation, "the host's / changed");
}

#[test]
fn a_container_without_a_mount_namespace_refuses_masked_paths() {
    let b = Bundle::new().edit(|v| {
        remove_namespace(v, "mount");
        v["linux"]["maskedPaths"] = json!(["/proc/kcore"]);
    });

    Berth::new()
        .create(&unique_id("nomntmask"), b.path(), &[])
        .assert_error("masked paths without a mount namespace")
        .assert_stderr_has(
            "masked paths",
            &["linux.maskedPaths", "needs a private mount namespace"],
        );
}

/// A read-only root without a mount namespace: a read-only bind of the rootfs onto itself
/// (as runc makes), gone after delete with the rest (youki's contest ns_itype).
#[test]
fn a_container_without_a_mount_namespace_can_have_a_read_only_root() {
    let berth = Berth::new();
    let (b, rootfs) = host_mount_ns_bundle(true);
    let b = b.sh("touch /in-root 2>/dev/null && echo writable; echo done");

    let out = berth.run_to_exit(&b);

    assert_eq!(out.stdout, "done\n", "stderr: {}", out.stderr);
    assert!(!rootfs.join("in-root").exists());
    assert_eq!(host_mounts_below(&rootfs), Vec::<String>::new());
    let root = fs::canonicalize(&rootfs).unwrap();
    assert!(
        !fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(root.to_str().unwrap())),
        "the rootfs bind stayed mounted"
    );
}

/// A mount namespace joined by path (`unshare --mount`'s, as runtime-tools' suite does):
/// the container's root is set up inside it.
#[test]
fn a_mount_namespace_is_joined_by_path() {
    let mut holder = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sleep", "1000"])
        .spawn()
        .unwrap();
    let path = format!("/proc/{}/ns/mnt", holder.id());
    let target = wait_for("unshare's mount namespace", || {
        fs::read_link(&path).ok().filter(|l| *l != host_ns("mnt"))
    });
    let b = Bundle::new()
        .edit(|v| set_namespace(v, "mount", Some(&path)))
        .sh(&format!("readlink /proc/self/ns/mnt; cat {ROOTFS_MARKER}"));

    let out = Berth::new().run_to_exit(&b);

    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(
        out.stdout,
        format!("{}\nberth-test-rootfs\n", target.display()),
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn user_namespace_has_the_configured_id_maps() {
    let b = Bundle::new().edit(with_user_namespace);

    let out = sh_output(b, "cat /proc/self/uid_map /proc/self/gid_map");

    let maps: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(maps, ["0 100000 65536", "0 100000 65536"], "{out}");
}

#[test]
fn user_namespace_files_are_owned_by_the_mapped_host_ids() {
    let shared = host_dir(0o777);
    let b = Bundle::new().edit(|v| {
        with_user_namespace(v);
        add_mount(v, json!({"destination": "/data", "type": "bind", "source": shared.path(), "options": ["rbind", "rw"]}))
    });

    let out = sh_output(b, "touch /data/made-inside; echo rc=$?");

    assert!(out.contains("rc=0"), "{out}");
    let meta = fs::metadata(shared.path().join("made-inside")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (100000, 100000));
}

/// /proc/uptime shows CLOCK_BOOTTIME, which a time namespace offsets.
#[test]
fn time_namespace_applies_the_boottime_offset() {
    if !Path::new("/proc/self/ns/time").exists() {
        return skip(
            "time_namespace_applies_the_boottime_offset",
            "this kernel has no time namespaces",
        );
    }
    let offset = 1_000_000.0;
    let b = Bundle::new().args(&["cat", "/proc/uptime"]).edit(|v| {
        set_namespace(v, "time", None);
        v["linux"]["timeOffsets"] = json!({"boottime": {"secs": 1_000_000, "nanosecs": 0}});
    });
    let uptime = |s: &str| -> f64 { s.split_whitespace().next().unwrap().parse().unwrap() };
    let before = uptime(&fs::read_to_string("/proc/uptime").unwrap());

    let out = Berth::new().run_to_exit(&b);

    let after = uptime(&fs::read_to_string("/proc/uptime").unwrap());
    let inside = uptime(&out.stdout);
    assert!(
        inside >= before + offset && inside <= after + offset + 1.0,
        "uptime inside {inside} is not the host's ({before}..{after}) plus {offset}"
    );
}

/// The same inside a user namespace, where the offsets are written by a root that the
/// user namespace maps (youki's contest time_ns does this).
#[test]
fn time_namespace_offsets_are_written_in_a_user_namespace() {
    if !Path::new("/proc/self/ns/time").exists() {
        return skip(
            "time_namespace_offsets_are_written_in_a_user_namespace",
            "this kernel has no time namespaces",
        );
    }
    let b = Bundle::new().args(&["cat", "/proc/uptime"]).edit(|v| {
        with_user_namespace(v);
        set_namespace(v, "time", None);
        v["linux"]["timeOffsets"] = json!({"boottime": {"secs": 2_000_000, "nanosecs": 0}});
    });
    let before: f64 = fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let out = Berth::new().run_to_exit(&b);

    let inside: f64 = out
        .stdout
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        inside >= before + 2_000_000.0,
        "uptime inside {inside}, host {before}"
    );
}

#[test]
fn hostname_is_set() {
    let b = Bundle::new()
        .args(&["hostname"])
        .edit(|v| v["hostname"] = json!("berth-test-host"));

    assert_eq!(
        Berth::new().run_to_exit(&b).stdout.trim(),
        "berth-test-host"
    );
}

#[test]
fn domainname_is_set() {
    let b = Bundle::new()
        .args(&["cat", "/proc/sys/kernel/domainname"])
        .edit(|v| v["domainname"] = json!("example.test"));

    assert_eq!(Berth::new().run_to_exit(&b).stdout.trim(), "example.test");
}

#[test]
fn namespaced_sysctls_are_set_in_the_container_only() {
    let read = |k: &str| fs::read_to_string(format!("/proc/sys/net/ipv4/{k}")).unwrap();
    let (forward, ttl) = (read("ip_forward"), read("ip_default_ttl"));
    let b = Bundle::new().edit(|v| {
        v["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "net.ipv4.ip_default_ttl": "77"})
    });

    let out = sh_output(
        b,
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/ip_default_ttl",
    );

    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["1", "77"],
        "{out}"
    );
    assert_eq!(
        (read("ip_forward"), read("ip_default_ttl")),
        (forward, ttl),
        "the host changed"
    );
}

// ---------------------------------------------------------------------------------------------
// root and mounts
// ---------------------------------------------------------------------------------------------

#[test]
fn readonly_root_refuses_writes() {
    let probe = format!("ro-probe-{}", unique_id("x"));
    let b = Bundle::new().edit(|v| v["root"]["readonly"] = json!(true));

    let out = sh_output(b, &format!("touch /{probe}; echo rc=$?"));

    // Keep the shared rootfs clean even when berth wrote to it.
    let written = rootfs().join(&probe);
    let leaked = written.exists();
    let _ = fs::remove_file(&written);
    assert!(!leaked, "the container wrote {}", written.display());
    assert!(
        out.contains("Read-only file system") && out.contains("rc=1"),
        "{out}"
    );
}

#[test]
fn tmpfs_mount_gets_its_size_and_mode() {
    let b = Bundle::new().edit(|v| {
        add_mount(
            v,
            json!({"destination": "/mnt", "type": "tmpfs", "source": "tmpfs",
                            "options": ["nosuid", "size=1m", "mode=700"]}),
        )
    });

    let out = sh_output(b, "stat -c %a /mnt; grep ' /mnt ' /proc/self/mountinfo");

    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("700"), "{out}");
    let mi = lines
        .next()
        .unwrap_or_else(|| panic!("/mnt is not a mount: {out}"));
    assert!(
        mi.contains(" - tmpfs ") && mi.contains("size=1024k"),
        "{mi}"
    );
    assert!(mi.contains("nosuid"), "{mi}");
}

/// A host directory with the given mode, outside any bundle, so that it outlives the bundle
/// that [`sh_output`] consumes.
fn host_dir(mode: u32) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("berth-host-")
        .tempdir()
        .unwrap();
    // Set after creation: the umask would mask bits of a mode given to mkdir.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).unwrap();
    dir
}

/// A bind source holding `file` with "from-host".
fn bind_source() -> tempfile::TempDir {
    let src = host_dir(0o755);
    fs::write(src.path().join("file"), "from-host").unwrap();
    src
}

#[test]
fn read_only_bind_mount_is_readable_but_not_writable() {
    let src = bind_source();
    let b = Bundle::new().edit(|v| {
        add_mount(v, json!({"destination": "/data", "type": "bind", "source": src.path(), "options": ["rbind", "ro"]}))
    });

    let out = sh_output(b, "cat /data/file; echo; touch /data/new; echo rc=$?");

    assert!(out.starts_with("from-host\n"), "{out}");
    assert!(
        out.contains("Read-only file system") && out.contains("rc=1"),
        "{out}"
    );
    assert!(!src.path().join("new").exists());
}

#[test]
fn read_write_bind_mount_writes_through_to_the_host() {
    let src = bind_source();
    let b = Bundle::new().edit(|v| {
        add_mount(v, json!({"destination": "/data", "type": "bind", "source": src.path(), "options": ["rbind", "rw"]}))
    });

    sh_output(b, "echo from-container > /data/new");

    assert_eq!(
        fs::read_to_string(src.path().join("new")).unwrap(),
        "from-container\n"
    );
}

#[test]
fn rbind_carries_submounts() {
    let src = bind_source();
    let _sub = HostSubmount::new(src.path());
    let b = Bundle::new().edit(|v| {
        add_mount(
            v,
            json!({"destination": "/data", "type": "bind", "source": src.path(), "options": ["rbind"]}),
        )
    });

    let out = sh_output(b, "cat /data/sub/in-submount");

    assert_eq!(out, "submount-file");
}

#[test]
fn bind_does_not_carry_submounts() {
    let src = bind_source();
    let _sub = HostSubmount::new(src.path());
    let b = Bundle::new().edit(|v| {
        add_mount(
            v,
            json!({"destination": "/data", "type": "bind", "source": src.path(), "options": ["bind"]}),
        )
    });

    let out = sh_output(b, "cat /data/file; echo; ls -A /data/sub | wc -l");

    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["from-host", "0"],
        "{out}"
    );
}

#[test]
fn recursive_read_only_reaches_submounts() {
    let src = bind_source();
    let _sub = HostSubmount::new(src.path());
    let b = Bundle::new().edit(|v| {
        add_mount(
            v,
            json!({"destination": "/data", "type": "bind", "source": src.path(), "options": ["rbind", "rro"]}),
        )
    });

    let out = sh_output(
        b,
        "touch /data/x 2>/dev/null && echo top-rw || echo top-ro; \
         touch /data/sub/x 2>/dev/null && echo sub-rw || echo sub-ro",
    );

    // Plain "ro" on an rbind leaves the submount writable; "rro" (mount_setattr) does not.
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["top-ro", "sub-ro"],
        "{out}"
    );
}

#[test]
fn rootfs_propagation_is_applied_to_the_root() {
    let b = Bundle::new().edit(|v| v["linux"]["rootfsPropagation"] = json!("rshared"));

    // Field 7 on: optional fields such as "shared:N" until the " - " separator.
    let out = sh_output(
        b,
        "grep -E '^[0-9]+ [0-9]+ [^ ]+ [^ ]+ / ' /proc/self/mountinfo",
    );

    assert!(
        out.contains(" shared:"),
        "the root mount is not shared: {out}"
    );
}

#[test]
fn default_rootfs_propagation_is_slave_of_the_host() {
    let b = Bundle::new();

    let out = sh_output(
        b,
        "grep -E '^[0-9]+ [0-9]+ [^ ]+ [^ ]+ / ' /proc/self/mountinfo",
    );

    assert!(
        !out.contains(" shared:"),
        "the root mount propagates back to the host: {out}"
    );
}

/// The first file under /proc that the default spec masks and this host has (/proc/kcore is
/// not built into every kernel).
#[test]
fn masked_file_is_an_empty_null_device() {
    let masked = default_spec()["linux"]["maskedPaths"]
        .as_array()
        .unwrap()
        .iter();
    let Some(path) = masked
        .filter_map(|p| p.as_str())
        .find(|p| p.starts_with("/proc/") && Path::new(p).is_file())
    else {
        return skip(
            "masked_file_is_an_empty_null_device",
            "this host has none of the /proc files the default spec masks",
        );
    };
    let b = Bundle::new();

    let out = sh_output(b, &format!("stat -c '%F %t:%T' {path}; wc -c < {path}"));

    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["character special file 1:3", "0"],
        "{path}: {out}"
    );
}

#[test]
fn masked_directory_is_empty() {
    let host_entries = fs::read_dir("/sys/firmware")
        .map(|d| d.count())
        .unwrap_or(0);
    if host_entries == 0 {
        return skip(
            "masked_directory_is_empty",
            "this host's /sys/firmware is empty",
        );
    }
    let b = Bundle::new().edit(|v| v["linux"]["maskedPaths"] = json!(["/sys/firmware"]));

    let out = sh_output(b, "ls -A /sys/firmware | wc -l");

    assert_eq!(out.trim(), "0");
}

#[test]
fn readonly_path_refuses_writes() {
    let b = Bundle::new().edit(|v| v["linux"]["readonlyPaths"] = json!(["/proc/sys"]));

    let out = sh_output(b, "echo changed > /proc/sys/kernel/hostname; echo rc=$?");

    assert!(
        out.contains("Read-only file system") && out.contains("rc=1"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// devices
// ---------------------------------------------------------------------------------------------

#[test]
fn default_devices_exist_with_their_numbers() {
    let b = Bundle::new();

    let out = sh_output(
        b,
        "stat -c '%n %F %t:%T' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty",
    );

    let want = [
        "/dev/null character special file 1:3",
        "/dev/zero character special file 1:5",
        "/dev/full character special file 1:7",
        "/dev/random character special file 1:8",
        "/dev/urandom character special file 1:9",
        "/dev/tty character special file 5:0",
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), want, "{out}");
}

/// The default spec denies every device in the cgroup; the default devices stay usable.
#[test]
fn default_devices_are_usable_under_a_deny_all_rule() {
    let b = Bundle::new();
    assert_eq!(
        default_spec()["linux"]["resources"]["devices"],
        json!([{"allow": false, "access": "rwm"}]),
        "the default spec changed"
    );

    let out = sh_output(b, "head -c 4 /dev/zero | wc -c; head -c 4 /dev/urandom | wc -c; echo x > /dev/null && echo null-ok");

    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["4", "4", "null-ok"],
        "{out}"
    );
}

#[test]
fn dev_has_the_standard_symlinks() {
    let b = Bundle::new();

    let out = sh_output(
        b,
        "for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done",
    );

    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "/proc/self/fd",
            "/proc/self/fd/0",
            "/proc/self/fd/1",
            "/proc/self/fd/2",
            "pts/ptmx"
        ],
        "{out}"
    );
}

#[test]
fn spec_device_is_created() {
    let b = Bundle::new().edit(|v| {
        v["linux"]["devices"] = json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                                         "fileMode": 0o666, "uid": 0, "gid": 0}])
    });

    let out = sh_output(b, "stat -c '%F %t:%T %a' /dev/fuse");

    assert_eq!(out.trim(), "character special file a:e5 666");
}

/// tmpcopyup: the tmpfs mounted over a directory starts with what the directory held, owners,
/// modes and links as they were (links copied, never followed).
#[test]
fn tmpcopyup_fills_the_tmpfs_with_the_directorys_content() {
    let b = Bundle::new();
    let rootfs = private_rootfs(&b);
    let data = rootfs.join("srv/data");
    fs::create_dir_all(data.join("sub")).unwrap();
    fs::write(data.join("sub/seed"), "seeded\n").unwrap();
    std::os::unix::fs::chown(data.join("sub/seed"), Some(4242), Some(4343)).unwrap();
    fs::set_permissions(data.join("sub/seed"), fs::Permissions::from_mode(0o604)).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", data.join("link")).unwrap();
    let b = b.edit(|v| {
        v["root"]["path"] = json!(rootfs);
        add_mount(
            v,
            json!({"destination": "/srv/data", "type": "tmpfs", "source": "tmpfs",
                   "options": ["tmpcopyup"]}),
        );
    });

    let out = sh_output(
        b,
        "stat -f -c %T /srv/data; cat /srv/data/sub/seed; \
         stat -c '%u:%g %a' /srv/data/sub/seed; readlink /srv/data/link",
    );

    assert_eq!(out, "tmpfs\nseeded\n4242:4343 604\n/etc/hostname\n");
}

/// A fifo in linux.devices (runtime-tools' suite has one, with a major and minor) is made;
/// the devices cgroup, which knows only block and character devices, gets no rule for it.
#[test]
fn a_fifo_device_is_made_without_a_cgroup_rule() {
    let b = Bundle::new().edit(|v| {
        v["linux"]["devices"] = json!([{"path": "/dev/fifo", "type": "p", "major": 8, "minor": 666,
                                         "fileMode": 0o640}])
    });

    let out = sh_output(b, "stat -c '%F %a' /dev/fifo");

    assert_eq!(out.trim(), "fifo 640");
}

/// runc accepts relative masked and read-only paths, resolved against the container's root.
#[test]
fn relative_masked_and_readonly_paths_are_resolved_in_the_root() {
    let b = Bundle::new().edit(|v| {
        v["linux"]["readonlyPaths"] = json!(["tmp/ro"]);
        v["linux"]["maskedPaths"] = json!(["tmp/masked"]);
        add_mount(
            v,
            json!({"destination": "/tmp/ro", "type": "tmpfs", "source": "tmpfs"}),
        );
        add_mount(
            v,
            json!({"destination": "/tmp/masked", "type": "tmpfs", "source": "tmpfs"}),
        );
    });

    let out = sh_output(
        b,
        "touch /tmp/ro/x 2>/dev/null && echo ro-writable; touch /tmp/masked/x 2>/dev/null && echo masked-writable; echo done",
    );

    assert_eq!(out.trim(), "done");
}

// ---------------------------------------------------------------------------------------------
// cgroup resources
// ---------------------------------------------------------------------------------------------

const MEMORY_LIMIT: u64 = 64 << 20;

fn with_memory_limit(v: &mut Value) {
    v["linux"]["resources"]["memory"] = json!({"limit": MEMORY_LIMIT});
}

/// Creates the container and returns the trimmed content of `file` in its `hierarchy` cgroup.
fn created_cgroup_file(b: &Bundle, hierarchy: &str, file: &str) -> String {
    let berth = Berth::new();
    let id = unique_id("res");
    berth.create(&id, b.path(), &[]).assert_ok("create");
    let p = expected_cgroup_dir(hierarchy, &id).join(file);
    fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn memory_limit_is_written_to_the_containers_memory_cgroup() {
    let b = Bundle::new().edit(with_memory_limit);

    assert_eq!(
        created_cgroup_file(&b, "memory", "memory.limit_in_bytes"),
        MEMORY_LIMIT.to_string()
    );
}

#[test]
fn memory_limit_is_visible_inside_with_a_cgroup_namespace() {
    let b = Bundle::new().edit(with_memory_limit);

    let out = sh_output(b, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes");

    assert_eq!(out.trim(), MEMORY_LIMIT.to_string());
}

#[test]
fn memory_limit_is_visible_inside_without_a_cgroup_namespace() {
    let b = Bundle::new().edit(|v| {
        with_memory_limit(v);
        remove_namespace(v, "cgroup");
    });

    let out = sh_output(b, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes");

    assert_eq!(out.trim(), MEMORY_LIMIT.to_string());
}

/// The default spec's `cgroup` mount, with and without a cgroup namespace: one directory per
/// host hierarchy.
fn cgroup_mount_lists(b: Bundle) {
    let out = sh_output(b, "ls /sys/fs/cgroup");

    let inside: Vec<&str> = out.split_whitespace().collect();
    for h in cgroup_hierarchies() {
        assert!(
            inside.contains(&h.as_str()),
            "{h} missing from /sys/fs/cgroup: {inside:?}"
        );
    }
}

#[test]
fn cgroup_mount_shows_every_hierarchy_with_a_cgroup_namespace() {
    cgroup_mount_lists(Bundle::new());
}

#[test]
fn cgroup_mount_shows_every_hierarchy_without_a_cgroup_namespace() {
    cgroup_mount_lists(Bundle::new().edit(|v| remove_namespace(v, "cgroup")));
}

#[test]
fn pids_limit_is_written_to_the_pids_cgroup() {
    let b = Bundle::new().edit(|v| v["linux"]["resources"]["pids"] = json!({"limit": 20}));

    assert_eq!(created_cgroup_file(&b, "pids", "pids.max"), "20");
}

#[test]
fn cpu_quota_and_period_are_written_to_the_cpu_cgroup() {
    let b = Bundle::new()
        .edit(|v| v["linux"]["resources"]["cpu"] = json!({"quota": 50000, "period": 200000}));

    assert_eq!(
        created_cgroup_file(&b, "cpu", "cpu.cfs_period_us"),
        "200000"
    );
    assert_eq!(created_cgroup_file(&b, "cpu", "cpu.cfs_quota_us"), "50000");
}

// ---------------------------------------------------------------------------------------------
// hooks
// ---------------------------------------------------------------------------------------------

const HOOK_KINDS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// Every hook kind appends its name to `order` and saves its stdin (the state) as
/// `<kind>.json`, in a host directory that the container sees at /hooks. startContainer runs
/// in the container after the root switch, so it writes through /hooks.
///
/// The spec orders startContainer before the user process's exec and poststart after it, so
/// poststart must wait for startContainer. The startContainer hook takes a second, so that a
/// runtime that runs poststart without waiting for the exec fails here every time rather than
/// now and then; a runtime that waits passes however long the hook takes.
/// A failing poststart or poststop hook is a warning: the hooks after it still run, start
/// and delete succeed, and the container runs on (runtime-spec; runtime-tools'
/// poststart_fail and poststop_fail).
#[test]
fn a_failing_poststart_or_poststop_hook_is_a_warning_and_the_rest_run() {
    let berth = Berth::new();
    let b = Bundle::new().sh("echo ready; exec sleep 1000");
    let marks = b.subdir("marks", 0o777);
    let hook = |script: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", script]});
    let mark = |name: &str| format!("echo {name} >> {}/ran", marks.display());
    let b = b.edit(|v| {
        v["hooks"] = json!({
            "poststart": [hook("exit 3"), hook(&mark("poststart-2"))],
            "poststop": [hook("exit 4"), hook(&mark("poststop-2"))],
        });
    });
    let id = unique_id("hookwarn");

    berth.create(&id, b.path(), &[]).assert_ok("create");
    let start = berth.cmd(&["start", &id]);
    start.assert_ok("start with a failing poststart hook");
    berth.wait_stdout(&id, "ready");
    assert_eq!(berth.state(&id)["status"], "running");
    let delete = berth.cmd(&["delete", "--force", &id]);
    delete.assert_ok("delete with a failing poststop hook");

    assert!(start.stderr.contains("warning"), "{}", start.stderr);
    assert!(delete.stderr.contains("warning"), "{}", delete.stderr);
    assert_eq!(
        fs::read_to_string(marks.join("ran")).unwrap_or_default(),
        "poststart-2\npoststop-2\n"
    );
}

#[test]
fn hooks_run_in_order_with_the_state_on_stdin() {
    let berth = Berth::new();
    let b = Bundle::new().args(&["true"]);
    let marks = b.subdir("marks", 0o777);
    let hook = |kind: &str| {
        let (dir, delay) = if kind == "startContainer" {
            (Path::new("/hooks"), "sleep 1; ")
        } else {
            (marks.as_path(), "")
        };
        json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("{delay}cat > {d}/{kind}.json; echo {kind} >> {d}/order", d = dir.display())],
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        })
    };
    let hooks: serde_json::Map<String, Value> = HOOK_KINDS
        .iter()
        .map(|k| (k.to_string(), json!([hook(k)])))
        .collect();
    let b = b.edit(|v| {
        v["hooks"] = Value::Object(hooks);
        add_mount(v, json!({"destination": "/hooks", "type": "bind", "source": marks, "options": ["rbind", "rw"]}));
    });
    let id = unique_id("hooks");

    berth.create(&id, b.path(), &[]).assert_ok("create");
    let pid = berth.pid(&id);
    berth.cmd(&["start", &id]).assert_ok("start");
    berth.wait_status(&id, "stopped");
    berth.cmd(&["delete", &id]).assert_ok("delete");

    let order = fs::read_to_string(marks.join("order")).unwrap_or_default();
    assert_eq!(
        order.lines().collect::<Vec<_>>(),
        HOOK_KINDS,
        "hooks ran out of order"
    );
    for kind in HOOK_KINDS {
        let p = marks.join(format!("{kind}.json"));
        let text = fs::read_to_string(&p).unwrap_or_default();
        let st: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{kind} got no state ({e}): {text:?}"));
        assert_eq!(st["id"], id.as_str(), "{kind}: {st}");
        // The create-time hooks run after the environment is built: "created" (runtime-spec
        // lifecycle; OCI runtime-tools' hooks_stdin).
        let status = match kind {
            "poststart" => "running",
            "poststop" => "stopped",
            _ => "created",
        };
        assert_eq!(st["status"], status, "{kind}: {st}");
        if kind == "poststop" {
            assert_eq!(st["status"], "stopped", "{kind}: {st}");
        } else {
            assert!(st["pid"].as_i64().unwrap_or(0) > 0, "{kind}: {st}");
        }
        if kind != "poststop" {
            // The state's pid is the init's pid in the runtime's namespace, also for the
            // hooks that run inside the container (berth passes it in; runc sends 1).
            assert_eq!(
                st["pid"], pid,
                "{kind} must get the host pid of the init: {st}"
            );
        }
    }
}

/// A new network namespace gets its loopback up, as runc does.
#[test]
fn loopback_is_up_in_a_new_network_namespace() {
    let out = sh_output(Bundle::new(), "cat /sys/class/net/lo/flags");

    let flags = u32::from_str_radix(out.trim().trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("not hex flags: {out:?}"));
    assert_eq!(
        flags & libc::IFF_UP as u32,
        libc::IFF_UP as u32,
        "lo is down: {out}"
    );
}
