//! Pure cgroup v2.

use std::fs;
use std::time::{Duration, Instant};

use super::fake::{read, resources, touch, FakeHost};
use crate::{v2, CgroupError, CgroupMode, Manager};

const ALL: &str = "cpuset cpu io memory hugetlb pids rdma";

/// A created manager whose cgroup has every controller enabled and `files` present.
fn created_with(host: &FakeHost, files: &[&str]) -> Manager {
    let manager = host.created();
    let d = manager.unified_path().unwrap();
    touch(&d, &[("cgroup.controllers", ALL)]);
    touch(&d, &files.iter().map(|f| (*f, "")).collect::<Vec<_>>());
    manager
}

#[test]
fn detects_unified_mode() {
    let host = FakeHost::unified();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();
    assert_eq!(manager.mode(), CgroupMode::Unified);
    let d = host.host_path("/sys/fs/cgroup/berth/ctr");
    assert_eq!(manager.unified_path(), Some(d.clone()));
    assert_eq!(manager.path_for("memory"), Some(d));
    assert_eq!(manager.path_for("net_cls"), None);
    assert_eq!(manager.cgroup_dirs().len(), 1);
}

#[test]
fn create_enables_controllers_in_every_ancestor() {
    let host = FakeHost::unified();
    let root = host.host_path("/sys/fs/cgroup");
    fs::create_dir_all(root.join("berth")).unwrap();
    touch(
        &root.join("berth"),
        &[
            ("cgroup.controllers", "cpu memory pids"),
            ("cgroup.subtree_control", "cpu"),
        ],
    );
    host.created();
    assert_eq!(
        read(&root, "cgroup.subtree_control"),
        "+cpuset +cpu +io +memory +hugetlb +pids +rdma"
    );
    // Only what the parent offers and has not enabled yet.
    assert_eq!(
        read(&root.join("berth"), "cgroup.subtree_control"),
        "+memory +pids"
    );
}

#[test]
fn memory_files_and_swap_conversion() {
    let host = FakeHost::unified();
    let manager = created_with(&host, &["memory.max", "memory.low", "memory.swap.max"]);
    let r = resources(
        r#"{"memory": {"limit": 104857600, "reservation": 52428800, "swap": 314572800,
            "disableOOMKiller": true, "kernel": 1000, "kernelTCP": 1000}}"#,
    );
    manager.apply_resources(&r).unwrap();
    let d = manager.unified_path().unwrap();
    assert_eq!(read(&d, "memory.max"), "104857600");
    assert_eq!(read(&d, "memory.low"), "52428800");
    assert_eq!(read(&d, "memory.swap.max"), "209715200");
}

#[test]
fn unlimited_memory_means_unlimited_swap() {
    let host = FakeHost::unified();
    let manager = created_with(&host, &["memory.max", "memory.swap.max"]);
    manager
        .apply_resources(&resources(r#"{"memory": {"limit": -1}}"#))
        .unwrap();
    let d = manager.unified_path().unwrap();
    assert_eq!(read(&d, "memory.max"), "max");
    assert_eq!(read(&d, "memory.swap.max"), "max");
}

#[test]
fn swappiness_is_refused_on_v2() {
    let host = FakeHost::unified();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();
    let err = manager
        .validate(&resources(r#"{"memory": {"swappiness": 10}}"#))
        .unwrap_err();
    assert!(
        matches!(err, CgroupError::Unsupported { ref field, .. } if field == "memory.swappiness")
    );
}

#[test]
fn swap_without_limit_is_refused_on_v2() {
    let host = FakeHost::unified();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();
    let err = manager
        .validate(&resources(r#"{"memory": {"swap": 1000000}}"#))
        .unwrap_err();
    assert!(err.to_string().contains("memory.swap"), "{err}");
}

#[test]
fn cpu_files_and_conversions() {
    let host = FakeHost::unified();
    let manager = created_with(
        &host,
        &["cpu.weight", "cpu.max", "cpu.max.burst", "cpu.idle"],
    );
    let r = resources(
        r#"{"cpu": {"shares": 1024, "quota": 50000, "period": 100000, "burst": 1000,
            "idle": 0}}"#,
    );
    manager.apply_resources(&r).unwrap();
    let d = manager.unified_path().unwrap();
    assert_eq!(read(&d, "cpu.weight"), "39");
    assert_eq!(read(&d, "cpu.max"), "50000 100000");
    assert_eq!(read(&d, "cpu.max.burst"), "1000");
    assert_eq!(read(&d, "cpu.idle"), "0");
}

#[test]
fn period_alone_keeps_the_current_quota() {
    let host = FakeHost::unified();
    let manager = created_with(&host, &[]);
    let d = manager.unified_path().unwrap();
    touch(&d, &[("cpu.max", "30000 100000\n")]);
    manager
        .apply_resources(&resources(r#"{"cpu": {"period": 50000}}"#))
        .unwrap();
    assert_eq!(read(&d, "cpu.max"), "30000 50000");
}

#[test]
fn realtime_is_refused_on_v2() {
    let host = FakeHost::unified();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();
    let err = manager
        .validate(&resources(r#"{"cpu": {"realtimeRuntime": 1000}}"#))
        .unwrap_err();
    assert!(matches!(err, CgroupError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("cgroup v2"), "{err}");
}

#[test]
fn cpuset_and_pids() {
    let host = FakeHost::unified();
    let manager = created_with(&host, &["cpuset.cpus", "cpuset.mems", "pids.max"]);
    let r = resources(r#"{"cpu": {"cpus": "1", "mems": "0"}, "pids": {"limit": -1}}"#);
    manager.apply_resources(&r).unwrap();
    let d = manager.unified_path().unwrap();
    assert_eq!(read(&d, "cpuset.cpus"), "1");
    assert_eq!(read(&d, "cpuset.mems"), "0");
    assert_eq!(read(&d, "pids.max"), "max");
}

#[test]
fn io_weight_is_converted_and_io_max_merged() {
    let host = FakeHost::unified();
    let manager = created_with(&host, &["io.weight", "io.max"]);
    let r = resources(
        r#"{"blockIO": {"weight": 500, "leafWeight": 300,
            "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}],
            "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 20}]}}"#,
    );
    manager.apply_resources(&r).unwrap();
    let d = manager.unified_path().unwrap();
    assert_eq!(read(&d, "io.weight"), "4950");
    assert_eq!(read(&d, "io.max"), "8:0 rbps=1000 wiops=20");
}

#[test]
fn io_weight_device_with_bfq_is_not_converted() {
    let host = FakeHost::unified();
    let manager = created_with(&host, &["io.bfq.weight"]);
    let r =
        resources(r#"{"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "weight": 500}]}}"#);
    manager.apply_resources(&r).unwrap();
    assert_eq!(
        read(&manager.unified_path().unwrap(), "io.bfq.weight"),
        "8:0 500"
    );
}

#[test]
fn hugetlb_max_and_reservation() {
    let host = FakeHost::unified();
    let manager = created_with(&host, &["hugetlb.1GB.max", "hugetlb.1GB.rsvd.max"]);
    manager
        .apply_resources(&resources(
            r#"{"hugepageLimits": [{"pageSize": "1GB", "limit": -1}]}"#,
        ))
        .unwrap();
    let d = manager.unified_path().unwrap();
    assert_eq!(read(&d, "hugetlb.1GB.max"), "max");
    assert_eq!(read(&d, "hugetlb.1GB.rsvd.max"), "max");
}

#[test]
fn rdma_max() {
    let host = FakeHost::unified();
    let manager = created_with(&host, &["rdma.max"]);
    manager
        .apply_resources(&resources(r#"{"rdma": {"mlx5_0": {"hcaHandles": 4}}}"#))
        .unwrap();
    assert_eq!(
        read(&manager.unified_path().unwrap(), "rdma.max"),
        "mlx5_0 hca_handle=4"
    );
}

#[test]
fn network_is_refused_on_v2() {
    let host = FakeHost::unified();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();
    let err = manager
        .validate(&resources(r#"{"network": {"classID": 1}}"#))
        .unwrap_err();
    assert!(
        matches!(err, CgroupError::Unsupported { ref field, .. } if field == "network.classID")
    );
}

#[test]
fn unified_keys_are_written_as_given() {
    let host = FakeHost::unified();
    let manager = created_with(&host, &["memory.high", "cgroup.max.depth"]);
    let r = resources(r#"{"unified": {"memory.high": "500000", "cgroup.max.depth": "3"}}"#);
    manager.apply_resources(&r).unwrap();
    let d = manager.unified_path().unwrap();
    assert_eq!(read(&d, "memory.high"), "500000");
    assert_eq!(read(&d, "cgroup.max.depth"), "3");
}

#[test]
fn unknown_unified_key_is_named() {
    let host = FakeHost::unified();
    let manager = created_with(&host, &[]);
    let err = manager
        .apply_resources(&resources(r#"{"unified": {"memory.nonexistent": "1"}}"#))
        .unwrap_err();
    assert!(
        matches!(err, CgroupError::UnifiedKeyUnknown { ref key, .. } if key == "memory.nonexistent")
    );
}

#[test]
fn unified_key_of_unavailable_controller_is_refused() {
    let host = FakeHost::unified();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();
    let err = manager
        .validate(&resources(r#"{"unified": {"misc.max": "x 1"}}"#))
        .unwrap_err();
    assert!(
        matches!(err, CgroupError::ControllerUnavailable { ref controller, .. } if controller == "misc")
    );
    let err = manager
        .validate(&resources(r#"{"unified": {"../escape.max": "1"}}"#))
        .unwrap_err();
    assert!(matches!(err, CgroupError::InvalidResource { .. }), "{err}");
}

#[test]
fn missing_controller_file_reports_controller_not_enabled() {
    let host = FakeHost::unified();
    let manager = host.created();
    let d = manager.unified_path().unwrap();
    touch(&d, &[("cgroup.controllers", "cpu pids")]);
    let err = manager
        .apply_resources(&resources(r#"{"memory": {"limit": 1000000}}"#))
        .unwrap_err();
    assert!(
        matches!(err, CgroupError::ControllerNotEnabled { ref controller, .. } if controller == "memory"),
        "{err}"
    );
}

#[test]
fn freeze_and_thaw_use_cgroup_freeze() {
    let host = FakeHost::unified();
    let manager = created_with(&host, &["cgroup.freeze"]);
    let d = manager.unified_path().unwrap();
    touch(&d, &[("cgroup.events", "populated 1\nfrozen 1\n")]);
    manager.freeze().unwrap();
    assert_eq!(read(&d, "cgroup.freeze"), "1");
    assert!(manager.is_frozen().unwrap());
    touch(&d, &[("cgroup.events", "populated 1\nfrozen 0\n")]);
    manager.thaw().unwrap();
    assert_eq!(read(&d, "cgroup.freeze"), "0");
    assert!(!manager.is_frozen().unwrap());
}

#[test]
fn freeze_that_never_completes_times_out() {
    let host = FakeHost::unified();
    let manager = created_with(&host, &["cgroup.freeze"]);
    let d = manager.unified_path().unwrap();
    touch(&d, &[("cgroup.events", "populated 1\nfrozen 0\n")]);
    let err = v2::set_frozen(&d, true, Instant::now() + Duration::from_millis(30)).unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::FreezeTimeout {
                wanted: "frozen",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn pids_come_from_the_unified_tree() {
    let host = FakeHost::unified();
    let manager = created_with(&host, &[]);
    let d = manager.unified_path().unwrap();
    fs::create_dir_all(d.join("sub")).unwrap();
    touch(&d, &[("cgroup.procs", "5\n")]);
    touch(&d.join("sub"), &[("cgroup.procs", "6\n")]);
    assert_eq!(manager.pids().unwrap(), [5, 6]);
}

#[test]
fn swap_limit_without_swap_accounting_is_named() {
    let host = FakeHost::unified();
    let manager = created_with(&host, &["memory.max"]);
    let err = manager
        .apply_resources(&resources(r#"{"memory": {"limit": 1000, "swap": 3000}}"#))
        .unwrap_err();
    assert!(
        matches!(err, CgroupError::MissingFile { ref field, .. } if field == "memory.swap"),
        "{err}"
    );
    // No swap at all needs no swap file.
    manager
        .apply_resources(&resources(r#"{"memory": {"limit": 1000, "swap": 1000}}"#))
        .unwrap();
    assert_eq!(read(&manager.unified_path().unwrap(), "memory.max"), "1000");
}
