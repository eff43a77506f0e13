//! Hybrid: v1 controllers beside a cgroup2 mount that offers only `hugetlb`, as on the
//! development machine.

use super::fake::{read, resources, touch, FakeHost};
use crate::{available_controllers, CgroupError, CgroupMode};

#[test]
fn detects_hybrid_mode_and_unified_path() {
    let host = FakeHost::hybrid();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();
    assert_eq!(manager.mode(), CgroupMode::Hybrid);
    let unified = host.host_path("/sys/fs/cgroup/unified/berth/ctr");
    assert_eq!(manager.unified_path(), Some(unified.clone()));
    assert_eq!(
        manager.path_for("cpu"),
        Some(host.host_path("/sys/fs/cgroup/cpu/berth/ctr"))
    );
    assert_eq!(
        manager.path_for("cpuacct"),
        Some(host.host_path("/sys/fs/cgroup/cpuacct/berth/ctr"))
    );
    // hugetlb is not a v1 hierarchy here, but cgroup2 offers it.
    assert_eq!(manager.path_for("hugetlb"), Some(unified));
    assert_eq!(manager.path_for("net_cls"), None);
}

#[test]
fn relative_unified_path_uses_the_0_line() {
    let host = FakeHost::hybrid();
    let manager = host.manager_with(None, false).unwrap();
    assert_eq!(
        manager.unified_path(),
        Some(host.host_path("/sys/fs/cgroup/unified/runtime/ctr"))
    );
}

#[test]
fn create_makes_unified_dir_and_enables_hugetlb_along_the_path() {
    let host = FakeHost::hybrid();
    let unified_root = host.host_path("/sys/fs/cgroup/unified");
    std::fs::create_dir_all(unified_root.join("berth")).unwrap();
    touch(
        &unified_root.join("berth"),
        &[
            ("cgroup.controllers", "hugetlb\n"),
            ("cgroup.subtree_control", ""),
        ],
    );
    let manager = host.created();
    assert!(manager.unified_path().unwrap().is_dir());
    assert_eq!(read(&unified_root, "cgroup.subtree_control"), "+hugetlb");
    assert_eq!(
        read(&unified_root.join("berth"), "cgroup.subtree_control"),
        "+hugetlb"
    );
    // Nothing is written into the container's own cgroup.
    assert!(!manager
        .unified_path()
        .unwrap()
        .join("cgroup.subtree_control")
        .exists());
}

#[test]
fn already_enabled_controllers_are_not_written_again() {
    let host = FakeHost::hybrid();
    let unified_root = host.host_path("/sys/fs/cgroup/unified");
    touch(&unified_root, &[("cgroup.subtree_control", "hugetlb\n")]);
    host.created();
    assert_eq!(read(&unified_root, "cgroup.subtree_control"), "hugetlb\n");
}

#[test]
fn hugetlb_goes_to_the_unified_hierarchy() {
    let host = FakeHost::hybrid();
    let manager = host.created();
    let d = manager.unified_path().unwrap();
    touch(
        &d,
        &[
            ("cgroup.controllers", "hugetlb\n"),
            ("hugetlb.2MB.max", "max\n"),
        ],
    );
    let r = resources(r#"{"hugepageLimits": [{"pageSize": "2MB", "limit": 8388608}]}"#);
    manager.apply_resources(&r).unwrap();
    assert_eq!(read(&d, "hugetlb.2MB.max"), "8388608");
}

#[test]
fn memory_goes_to_v1() {
    let host = FakeHost::hybrid();
    let manager = host.created();
    let d = manager.path_for("memory").unwrap();
    touch(&d, &[("memory.limit_in_bytes", "")]);
    manager
        .apply_resources(&resources(r#"{"memory": {"limit": 1048576}}"#))
        .unwrap();
    assert_eq!(read(&d, "memory.limit_in_bytes"), "1048576");
}

#[test]
fn controllers_in_neither_version_are_refused() {
    let host = FakeHost::hybrid();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();
    for (json, controller) in [
        (r#"{"network": {"classID": 1}}"#, "net_cls"),
        (
            r#"{"network": {"priorities": [{"name": "eth0", "priority": 1}]}}"#,
            "net_prio",
        ),
        (r#"{"rdma": {"mlx4_0": {"hcaHandles": 1}}}"#, "rdma"),
    ] {
        let err = manager.validate(&resources(json)).unwrap_err();
        assert!(
            matches!(&err, CgroupError::ControllerUnavailable { controller: c, .. } if c == controller),
            "{json}: {err}"
        );
    }
}

#[test]
fn unified_is_refused_on_hybrid() {
    let host = FakeHost::hybrid();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();
    let err = manager
        .validate(&resources(r#"{"unified": {"hugetlb.2MB.max": "1"}}"#))
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("unified resources need cgroup v2"),
        "{err}"
    );
}

#[test]
fn add_process_includes_unified_and_systemd() {
    let host = FakeHost::hybrid();
    let manager = host.created();
    for d in manager.cgroup_dirs() {
        touch(&d, &[("cgroup.procs", "")]);
    }
    manager.add_process(77).unwrap();
    assert_eq!(read(&manager.unified_path().unwrap(), "cgroup.procs"), "77");
    assert_eq!(
        read(&manager.path_for("name=systemd").unwrap(), "cgroup.procs"),
        "77"
    );
    assert_eq!(manager.cgroup_dirs().len(), 10);
}

#[test]
fn freezer_is_the_v1_one() {
    let host = FakeHost::hybrid();
    let manager = host.created();
    let d = manager.path_for("freezer").unwrap();
    touch(&d, &[("freezer.state", "THAWED\n")]);
    manager.freeze().unwrap();
    assert_eq!(read(&d, "freezer.state"), "FROZEN");
}

#[test]
fn remove_includes_the_unified_dir() {
    let host = FakeHost::hybrid();
    let manager = host.created();
    std::fs::create_dir_all(manager.unified_path().unwrap().join("sub")).unwrap();
    manager.remove().unwrap();
    assert!(manager.cgroup_dirs().iter().all(|d| !d.exists()));
}

#[test]
fn available_controllers_lists_both_versions() {
    let host = FakeHost::hybrid();
    let controllers = available_controllers(&host.system()).unwrap();
    assert_eq!(controllers.mode, CgroupMode::Hybrid);
    assert_eq!(
        controllers.v1,
        ["blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids"]
    );
    assert_eq!(controllers.v2, ["hugetlb"]);
}

#[test]
fn self_entry_files_are_tasks_then_cgroup_procs_then_the_freezer_last() {
    let host = FakeHost::hybrid();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();

    let files = manager.self_entry_files(false);

    let freezer = host.host_path("/sys/fs/cgroup/freezer/berth/ctr/tasks");
    assert_eq!(files.last(), Some(&freezer), "{files:?}");
    assert!(files.contains(&host.host_path("/sys/fs/cgroup/unified/berth/ctr/cgroup.procs")));
    assert!(files.contains(&host.host_path("/sys/fs/cgroup/cpu/berth/ctr/tasks")));
    assert_eq!(
        files.iter().filter(|f| f.ends_with("tasks")).count(),
        files.len() - 1
    );
    // Born in the cgroup2 directory: nothing to write there.
    assert!(!manager
        .self_entry_files(true)
        .iter()
        .any(|f| f.ends_with("cgroup.procs")));
}
