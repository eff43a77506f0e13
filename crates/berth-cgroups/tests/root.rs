//! Root tests against the real cgroup hierarchies of the host (CI runs them as root).
//! They fail when not run as root; `cargo test -p berth-cgroups --lib` runs only the
//! unprivileged unit tests.
//!
//! Every cgroup is named `berth-test-<pid>-<counter>-<what>` and removed by a guard,
//! also when an assertion fails.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_cgroups::mountinfo::{find_cgroup_mounts, parse_mountinfo, parse_proc_cgroup};
use berth_cgroups::{CgroupError, CgroupMode, CgroupSetup, Manager, SystemView};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe, ForkResult};
use oci_spec::runtime::LinuxResources;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique(what: &str) -> String {
    format!(
        "berth-test-{}-{}-{what}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the root tests need root; `cargo test -p berth-cgroups --lib` runs the unit tests"
    );
}

fn resources(json: &str) -> LinuxResources {
    serde_json::from_str(json).unwrap()
}

fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

/// Thaws, kills the child, and removes the cgroup when dropped.
struct Guard {
    manager: Manager,
    child: Option<Child>,
}

impl Guard {
    fn new(manager: Manager) -> Self {
        Self {
            manager,
            child: None,
        }
    }

    fn kill_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = self.manager.thaw();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill_child();
        if let Err(e) = self.manager.remove() {
            eprintln!("cleanup of {:?} failed: {e}", self.manager.cgroup_dirs());
        }
    }
}

fn manager_at(path: &str) -> Manager {
    let path = PathBuf::from(path);
    let setup = CgroupSetup {
        cgroups_path: Some(&path),
        container_id: "unused",
        systemd: false,
    };
    Manager::new(&setup).unwrap()
}

#[test]
fn lifecycle_limits_processes_freeze_and_remove() {
    require_root();
    let name = format!("/{}", unique("lifecycle"));
    let mut guard = Guard::new(manager_at(&name));
    let manager = guard.manager.clone();
    let hugepages = Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists()
        && manager.path_for("hugetlb").is_some();
    let mut json = String::from(
        r#"{"memory": {"limit": 67108864}, "pids": {"limit": 32},
            "cpu": {"quota": 50000, "period": 100000}"#,
    );
    if hugepages {
        json.push_str(r#", "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]"#);
    }
    json.push('}');
    let r = resources(&json);

    manager.validate(&r).unwrap();
    manager.create().unwrap();
    manager.apply_resources(&r).unwrap();

    let memory = manager.path_for("memory").unwrap();
    let pids = manager.path_for("pids").unwrap();
    let cpu = manager.path_for("cpu").unwrap();
    match manager.mode() {
        CgroupMode::Legacy | CgroupMode::Hybrid => {
            assert_eq!(read(&memory, "memory.limit_in_bytes"), "67108864");
            assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
            assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
        }
        CgroupMode::Unified => {
            assert_eq!(read(&memory, "memory.max"), "67108864");
            assert_eq!(read(&cpu, "cpu.max"), "50000 100000");
        }
    }
    assert_eq!(read(&pids, "pids.max"), "32");
    if hugepages {
        let hugetlb = manager.path_for("hugetlb").unwrap();
        let file = if manager.unified_path().as_ref() == Some(&hugetlb) {
            "hugetlb.2MB.max"
        } else {
            "hugetlb.2MB.limit_in_bytes"
        };
        assert_eq!(read(&hugetlb, file), "4194304");
    }

    let child = Command::new("sleep").arg("600").spawn().unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    guard.child = Some(child);
    manager.add_process(pid).unwrap();
    assert_eq!(manager.pids().unwrap(), [pid]);
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(own.contains(&name), "{own}");

    manager.freeze().unwrap();
    assert!(manager.is_frozen().unwrap());
    manager.thaw().unwrap();
    assert!(!manager.is_frozen().unwrap());

    guard.kill_child();
    manager.remove().unwrap();
    for dir in manager.cgroup_dirs() {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}

#[test]
fn default_path_is_below_own_cgroup() {
    require_root();
    let id = unique("default");
    let setup = CgroupSetup {
        cgroups_path: None,
        container_id: &id,
        systemd: false,
    };
    let guard = Guard::new(Manager::new(&setup).unwrap());
    let manager = &guard.manager;

    let host = SystemView::host().unwrap();
    let mounts = find_cgroup_mounts(&parse_mountinfo(&host.mountinfo).unwrap());
    let own = parse_proc_cgroup(&host.proc_self_cgroup).unwrap();
    if let Some(memory) = mounts.v1_for("memory") {
        let own_path = own.v1_path(&memory.controllers).unwrap();
        let relative = own_path.strip_prefix(&memory.root).unwrap();
        assert_eq!(
            manager.path_for("memory").unwrap(),
            memory.mount_point.join(relative).join(&id)
        );
    }
    manager.create().unwrap();
    assert!(manager.cgroup_dirs().iter().all(|d| d.is_dir()));
    manager.remove().unwrap();
    assert!(manager.cgroup_dirs().iter().all(|d| !d.exists()));
}

#[test]
fn remove_takes_sub_cgroups_with_it() {
    require_root();
    let guard = Guard::new(manager_at(&format!("/{}", unique("nested"))));
    let manager = &guard.manager;
    manager.create().unwrap();
    for dir in manager.cgroup_dirs() {
        fs::create_dir_all(dir.join("a/b")).unwrap();
        fs::create_dir(dir.join("c")).unwrap();
    }
    manager.remove().unwrap();
    for dir in manager.cgroup_dirs() {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}

#[test]
fn validation_refuses_what_this_host_cannot_do() {
    require_root();
    let manager = manager_at(&format!("/{}", unique("validate")));
    if manager.mode() != CgroupMode::Unified {
        let err = manager
            .validate(&resources(r#"{"unified": {"memory.high": "1"}}"#))
            .unwrap_err();
        assert!(matches!(err, CgroupError::UnifiedNeedsV2 { .. }), "{err}");
    }
    if manager.path_for("net_cls").is_none() {
        let err = manager
            .validate(&resources(r#"{"network": {"classID": 1}}"#))
            .unwrap_err();
        assert!(err.to_string().contains("net_cls"), "{err}");
    }
    assert!(manager.cgroup_dirs().iter().all(|d| !d.exists()));
}

/// Device nodes for /dev/null (1:3) and /dev/zero (1:5) in a temporary directory on a
/// file system without `nodev`.
struct Nodes {
    _dir: tempfile::TempDir,
    null: CString,
    zero: CString,
}

fn make_nodes() -> Nodes {
    let dir = tempfile::Builder::new()
        .prefix("berth-devices")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let node = |name: &str, minor: u64| {
        let path = dir.path().join(name);
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, minor),
        )
        .unwrap();
        CString::new(path.into_os_string().into_encoded_bytes()).unwrap()
    };
    let null = node("null", 3);
    let zero = node("zero", 5);
    Nodes {
        _dir: dir,
        null,
        zero,
    }
}

/// Forks a child, moves it into the manager's cgroup, lets it open both nodes, and
/// returns the errno of each open (0 for success).
fn open_in_cgroup(manager: &Manager, nodes: &Nodes) -> (i32, i32) {
    let (go_read, go_write): (OwnedFd, OwnedFd) = pipe().unwrap();
    let (result_read, result_write): (OwnedFd, OwnedFd) = pipe().unwrap();
    let paths = [nodes.null.as_ptr(), nodes.zero.as_ptr()];
    let (go, result) = (go_read.as_raw_fd(), result_write.as_raw_fd());
    // SAFETY: the child runs only async-signal-safe calls (read, open, write, _exit) on
    // memory prepared before the fork, so the other threads of the test harness and
    // their locks do not matter to it.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let mut byte = 0u8;
            let mut errnos = [0i32; 2];
            // SAFETY: `go` and `result` are open pipe ends inherited from the parent,
            // the buffers are valid for the lengths given, the paths are NUL-terminated
            // C strings that outlive the child, and `_exit` never returns.
            unsafe {
                libc::read(go, (&mut byte as *mut u8).cast(), 1);
                for (errno, path) in errnos.iter_mut().zip(paths) {
                    if libc::open(path, libc::O_RDONLY | libc::O_CLOEXEC) < 0 {
                        *errno = *libc::__errno_location();
                    }
                }
                libc::write(
                    result,
                    errnos.as_ptr().cast(),
                    std::mem::size_of_val(&errnos),
                );
                libc::_exit(0);
            }
        }
        ForkResult::Parent { child } => {
            drop(go_read);
            drop(result_write);
            let added = manager.add_process(child.as_raw());
            nix::unistd::write(&go_write, &[1]).unwrap();
            let mut buf = [0u8; 8];
            let n = nix::unistd::read(&result_read, &mut buf).unwrap();
            assert!(matches!(
                waitpid(child, None).unwrap(),
                WaitStatus::Exited(_, 0)
            ));
            added.unwrap();
            assert_eq!(n, 8, "child did not report");
            let null = i32::from_ne_bytes(buf[..4].try_into().unwrap());
            let zero = i32::from_ne_bytes(buf[4..].try_into().unwrap());
            (null, zero)
        }
    }
}

const ONLY_NULL: &str = r#"{"devices": [
    {"allow": false, "access": "rwm"},
    {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]}"#;

const NULL_AND_ZERO: &str = r#"{"devices": [
    {"allow": false, "access": "rwm"},
    {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
    {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "r"}]}"#;

#[test]
fn device_rules_are_enforced_through_the_manager() {
    require_root();
    let guard = Guard::new(manager_at(&format!("/{}", unique("devices"))));
    let manager = &guard.manager;
    manager.create().unwrap();
    match manager.apply_resources(&resources(ONLY_NULL)) {
        Err(e @ CgroupError::BpfLoad { .. })
            if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) =>
        {
            println!("SKIPPED: bpf() is not permitted here: {e}");
            return;
        }
        other => other.unwrap(),
    }
    if let Some(devices) = manager.path_for("devices") {
        assert_eq!(read(&devices, "devices.list"), "c 1:3 rwm");
    }
    let nodes = make_nodes();
    assert_eq!(open_in_cgroup(manager, &nodes), (0, libc::EPERM));
}

/// The host's cgroup2 mount alone, so that the manager is in unified mode and filters
/// devices with eBPF even on a hybrid host.
fn cgroup2_only_view() -> Option<SystemView> {
    let host = SystemView::host().unwrap();
    let mountinfo: String = host
        .mountinfo
        .lines()
        .filter(|line| line.contains(" - cgroup2 "))
        .map(|line| format!("{line}\n"))
        .collect();
    let proc_self_cgroup: String = host
        .proc_self_cgroup
        .lines()
        .filter(|line| line.starts_with("0::"))
        .map(|line| format!("{line}\n"))
        .collect();
    (!mountinfo.is_empty()).then_some(SystemView {
        root: host.root,
        mountinfo,
        proc_self_cgroup,
    })
}

#[test]
fn bpf_device_filter_denies_zero_and_is_replaced_on_reapply() {
    require_root();
    let Some(view) = cgroup2_only_view() else {
        println!("SKIPPED: this host has no cgroup2 mount");
        return;
    };
    let path = PathBuf::from(format!("/{}", unique("bpf")));
    let setup = CgroupSetup {
        cgroups_path: Some(&path),
        container_id: "unused",
        systemd: false,
    };
    let guard = Guard::new(Manager::with_system(&setup, view).unwrap());
    let manager = &guard.manager;
    assert_eq!(manager.mode(), CgroupMode::Unified);
    manager.create().unwrap();
    match manager.apply_resources(&resources(ONLY_NULL)) {
        Err(e @ CgroupError::BpfLoad { .. })
            if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) =>
        {
            println!("SKIPPED: bpf() is not permitted here: {e}");
            return;
        }
        other => other.unwrap(),
    }
    let nodes = make_nodes();
    assert_eq!(open_in_cgroup(manager, &nodes), (0, libc::EPERM));

    // Applying again replaces our program instead of stacking a second one, which
    // would keep denying /dev/zero.
    manager.apply_resources(&resources(NULL_AND_ZERO)).unwrap();
    assert_eq!(open_in_cgroup(manager, &nodes), (0, 0));
}

/// A single-threaded child moves itself into every hierarchy with `enter_self`.
#[test]
fn enter_self_moves_the_caller_into_every_hierarchy() {
    require_root();
    let name = format!("/{}", unique("enter-self"));
    let guard = Guard::new(manager_at(&name));
    let manager = guard.manager.clone();
    manager.create().unwrap();
    // One pipe each way: child → parent "moved", parent → child "done looking".
    let (r, w) = pipe().unwrap();
    let (back_r, back_w) = pipe().unwrap();
    // SAFETY: the child only calls enter_self (file writes), writes one byte and _exits.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let ok = manager.enter_self(false).is_ok();
            let _ = nix::unistd::write(&w, if ok { b"1" } else { b"0" });
            let mut b = [0u8; 1];
            // Wait until the parent has looked, then leave.
            let _ = nix::unistd::read(&back_r, &mut b);
            // SAFETY: ending the forked test child without running the harness' destructors.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            let mut b = [0u8; 1];
            nix::unistd::read(&r, &mut b).unwrap();
            assert_eq!(&b, b"1", "enter_self failed in the child");
            let pid = child.as_raw();
            assert_eq!(manager.pids().unwrap(), [pid]);
            for dir in manager.cgroup_dirs() {
                let procs = read(&dir, "cgroup.procs");
                assert_eq!(procs, pid.to_string(), "{} lacks the child", dir.display());
            }
            nix::unistd::write(&back_w, b"x").unwrap();
            assert!(matches!(waitpid(child, None), Ok(WaitStatus::Exited(_, 0))));
        }
    }
    drop(guard);
}

/// signal_all reaches every process in the cgroup and below it, and no other: a process
/// that left the cgroup is not signalled.
#[test]
fn signal_all_signals_the_cgroups_processes_only() {
    require_root();
    let name = format!("/{}", unique("signal"));
    let guard = Guard::new(manager_at(&name));
    let manager = guard.manager.clone();
    manager.create().unwrap();
    let mut inside = Command::new("sleep").arg("600").spawn().unwrap();
    let mut left = Command::new("sleep").arg("600").spawn().unwrap();
    manager.add_process(inside.id() as i32).unwrap();
    manager.add_process(left.id() as i32).unwrap();
    // `left` moves back out to the parent cgroup of every hierarchy.
    for dir in manager.cgroup_dirs() {
        let parent = dir.parent().unwrap();
        let file = if parent.join("cgroup.procs").exists() {
            "cgroup.procs"
        } else {
            "tasks"
        };
        fs::write(parent.join(file), left.id().to_string()).unwrap();
    }
    assert_eq!(manager.pids().unwrap(), [inside.id() as i32]);

    let sent = manager.signal_all(libc::SIGTERM).unwrap();

    assert_eq!(sent, 1);
    let status = inside.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGTERM)
    );
    assert!(
        left.try_wait().unwrap().is_none(),
        "a process outside the cgroup was signalled"
    );
    let _ = left.kill();
    let _ = left.wait();
}
