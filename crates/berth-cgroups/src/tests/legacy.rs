//! Pure cgroup v1.

use std::fs;
use std::path::Path;

use super::fake::{read, resources, touch, FakeHost};
use crate::{CgroupError, CgroupMode, Manager};

fn dir(host: &FakeHost, hierarchy: &str) -> std::path::PathBuf {
    host.host_path(&format!("/sys/fs/cgroup/{hierarchy}/berth/ctr"))
}

#[test]
fn detects_legacy_mode_and_places_absolute_path_in_every_hierarchy() {
    let host = FakeHost::legacy();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();
    assert_eq!(manager.mode(), CgroupMode::Legacy);
    assert_eq!(manager.path_for("cpu"), Some(dir(&host, "cpu,cpuacct")));
    assert_eq!(manager.path_for("cpuacct"), Some(dir(&host, "cpu,cpuacct")));
    assert_eq!(
        manager.path_for("name=systemd"),
        Some(dir(&host, "systemd"))
    );
    assert_eq!(
        manager.path_for("net_prio"),
        Some(dir(&host, "net_cls,net_prio"))
    );
    assert_eq!(manager.unified_path(), None);
    assert_eq!(manager.cgroup_dirs().len(), 11);
}

#[test]
fn relative_path_is_below_own_cgroup() {
    let host = FakeHost::legacy();
    let manager = host.manager_with(Some("pod/ctr"), false).unwrap();
    assert_eq!(
        manager.path_for("memory"),
        Some(host.host_path("/sys/fs/cgroup/memory/runtime/pod/ctr"))
    );
}

#[test]
fn absent_path_is_container_id_below_own_cgroup() {
    let host = FakeHost::legacy();
    let manager = host.manager_with(None, false).unwrap();
    assert_eq!(
        manager.path_for("pids"),
        Some(host.host_path("/sys/fs/cgroup/pids/runtime/ctr"))
    );
}

#[test]
fn escaping_path_is_refused() {
    let host = FakeHost::legacy();
    let err = host.manager_with(Some("../../escape"), false).unwrap_err();
    assert!(
        matches!(err, CgroupError::InvalidCgroupsPath { .. }),
        "{err}"
    );
}

#[test]
fn systemd_path_is_used_when_systemd_runs() {
    let host = FakeHost::legacy();
    fs::create_dir_all(host.host_path("/run/systemd/system")).unwrap();
    let manager = host
        .manager_with(Some("pod-a.slice:berth:ctr"), true)
        .unwrap();
    assert_eq!(
        manager.path_for("memory"),
        Some(host.host_path("/sys/fs/cgroup/memory/pod.slice/pod-a.slice/berth-ctr.scope"))
    );
}

#[test]
fn systemd_is_refused_without_systemd() {
    let host = FakeHost::legacy();
    let err = host
        .manager_with(Some("a.slice:berth:ctr"), true)
        .unwrap_err();
    assert!(matches!(err, CgroupError::SystemdNotRunning));
}

#[test]
fn no_cgroup_mounts_is_an_error() {
    let host = FakeHost::legacy();
    let mut system = host.system();
    system.mountinfo = "22 1 0:21 / /proc rw - proc proc rw\n".to_string();
    let setup = crate::CgroupSetup {
        cgroups_path: None,
        container_id: "ctr",
        systemd: false,
    };
    let err = Manager::with_system(&setup, system).unwrap_err();
    assert!(matches!(err, CgroupError::NoCgroupMounts));
}

#[test]
fn new_creates_nothing_and_create_makes_every_directory() {
    let host = FakeHost::legacy();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();
    assert!(manager.cgroup_dirs().iter().all(|d| !d.exists()));
    manager.create().unwrap();
    for d in manager.cgroup_dirs() {
        assert!(d.is_dir(), "{}", d.display());
    }
}

#[test]
fn create_copies_cpuset_from_parent() {
    let host = FakeHost::legacy();
    let mount = host.host_path("/sys/fs/cgroup/cpuset");
    touch(
        &mount,
        &[("cpuset.cpus", "0-7\n"), ("cpuset.mems", "0-1\n")],
    );
    // What mkdir would give on a real cpuset hierarchy: empty values.
    for d in [mount.join("berth"), mount.join("berth/ctr")] {
        fs::create_dir_all(&d).unwrap();
        touch(&d, &[("cpuset.cpus", "\n"), ("cpuset.mems", "\n")]);
    }
    host.created();
    let leaf = dir(&host, "cpuset");
    assert_eq!(read(&leaf, "cpuset.cpus"), "0-7");
    assert_eq!(read(&leaf, "cpuset.mems"), "0-1");
    assert_eq!(read(&mount.join("berth"), "cpuset.cpus"), "0-7");
}

#[test]
fn memory_files_and_values() {
    let host = FakeHost::legacy();
    let manager = host.created();
    let d = dir(&host, "memory");
    touch(
        &d,
        &[
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
            ("memory.soft_limit_in_bytes", ""),
            ("memory.swappiness", ""),
            ("memory.oom_control", ""),
            ("memory.kmem.tcp.limit_in_bytes", ""),
        ],
    );
    touch(
        &host.host_path("/sys/fs/cgroup/memory"),
        &[("memory.memsw.limit_in_bytes", "")],
    );
    let r = resources(
        r#"{"memory": {"limit": 104857600, "reservation": 52428800, "swap": 209715200,
            "swappiness": 10, "disableOOMKiller": true, "kernel": 1000000,
            "kernelTCP": 2000000}}"#,
    );
    manager.apply_resources(&r).unwrap();
    assert_eq!(read(&d, "memory.limit_in_bytes"), "104857600");
    assert_eq!(read(&d, "memory.memsw.limit_in_bytes"), "209715200");
    assert_eq!(read(&d, "memory.soft_limit_in_bytes"), "52428800");
    assert_eq!(read(&d, "memory.swappiness"), "10");
    assert_eq!(read(&d, "memory.oom_control"), "1");
    assert_eq!(read(&d, "memory.kmem.tcp.limit_in_bytes"), "2000000");
    // The kernel-memory file does not exist on this fake kernel: ignored, not created.
    assert!(!d.join("memory.kmem.limit_in_bytes").exists());
}

#[test]
fn swap_without_swap_accounting_is_refused_before_create() {
    let host = FakeHost::legacy();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();
    let r = resources(r#"{"memory": {"limit": 100000000, "swap": 200000000}}"#);
    let err = manager.validate(&r).unwrap_err();
    assert!(matches!(err, CgroupError::MissingFile { ref field, .. } if field == "memory.swap"));
    assert!(err.to_string().contains("swapaccount=1"), "{err}");
}

#[test]
fn check_before_update_refuses_limit_below_usage() {
    let host = FakeHost::legacy();
    let manager = host.created();
    let d = dir(&host, "memory");
    touch(
        &d,
        &[
            ("memory.limit_in_bytes", ""),
            ("memory.usage_in_bytes", "5000000\n"),
        ],
    );
    let r = resources(r#"{"memory": {"limit": 1000000, "checkBeforeUpdate": true}}"#);
    let err = manager.apply_resources(&r).unwrap_err();
    assert!(err.to_string().contains("below the current usage"), "{err}");
    assert_eq!(read(&d, "memory.limit_in_bytes"), "");
}

#[test]
fn cpu_files_and_values() {
    let host = FakeHost::legacy();
    let manager = host.created();
    let d = dir(&host, "cpu,cpuacct");
    touch(
        &d,
        &[
            ("cpu.shares", ""),
            ("cpu.cfs_quota_us", ""),
            ("cpu.cfs_period_us", ""),
            ("cpu.cfs_burst_us", ""),
            ("cpu.rt_runtime_us", ""),
            ("cpu.rt_period_us", ""),
            ("cpu.idle", ""),
        ],
    );
    let r = resources(
        r#"{"cpu": {"shares": 512, "quota": 50000, "period": 100000, "burst": 10000,
            "realtimeRuntime": 5000, "realtimePeriod": 10000, "idle": 1}}"#,
    );
    manager.apply_resources(&r).unwrap();
    assert_eq!(read(&d, "cpu.shares"), "512");
    assert_eq!(read(&d, "cpu.cfs_quota_us"), "50000");
    assert_eq!(read(&d, "cpu.cfs_period_us"), "100000");
    assert_eq!(read(&d, "cpu.cfs_burst_us"), "10000");
    assert_eq!(read(&d, "cpu.rt_runtime_us"), "5000");
    assert_eq!(read(&d, "cpu.rt_period_us"), "10000");
    assert_eq!(read(&d, "cpu.idle"), "1");
}

#[test]
fn cpuset_files_and_values() {
    let host = FakeHost::legacy();
    let manager = host.created();
    let d = dir(&host, "cpuset");
    touch(&d, &[("cpuset.cpus", ""), ("cpuset.mems", "")]);
    manager
        .apply_resources(&resources(r#"{"cpu": {"cpus": "0-1,3", "mems": "0"}}"#))
        .unwrap();
    assert_eq!(read(&d, "cpuset.cpus"), "0-1,3");
    assert_eq!(read(&d, "cpuset.mems"), "0");
}

#[test]
fn pids_limit_and_unlimited() {
    let host = FakeHost::legacy();
    let manager = host.created();
    let d = dir(&host, "pids");
    touch(&d, &[("pids.max", "")]);
    manager
        .apply_resources(&resources(r#"{"pids": {"limit": 100}}"#))
        .unwrap();
    assert_eq!(read(&d, "pids.max"), "100");
    manager
        .apply_resources(&resources(r#"{"pids": {"limit": 0}}"#))
        .unwrap();
    assert_eq!(read(&d, "pids.max"), "max");
}

#[test]
fn blkio_with_cfq_files() {
    let host = FakeHost::legacy();
    let manager = host.created();
    let d = dir(&host, "blkio");
    let names = [
        "blkio.weight",
        "blkio.leaf_weight",
        "blkio.weight_device",
        "blkio.leaf_weight_device",
        "blkio.throttle.read_bps_device",
        "blkio.throttle.write_bps_device",
        "blkio.throttle.read_iops_device",
        "blkio.throttle.write_iops_device",
    ];
    touch(&d, &names.map(|n| (n, "")));
    let r = resources(
        r#"{"blockIO": {"weight": 300, "leafWeight": 200,
            "weightDevice": [{"major": 8, "minor": 0, "weight": 500, "leafWeight": 400}],
            "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
            "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 2097152}],
            "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}],
            "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 200}]}}"#,
    );
    manager.apply_resources(&r).unwrap();
    assert_eq!(read(&d, "blkio.weight"), "300");
    assert_eq!(read(&d, "blkio.leaf_weight"), "200");
    assert_eq!(read(&d, "blkio.weight_device"), "8:0 500");
    assert_eq!(read(&d, "blkio.leaf_weight_device"), "8:0 400");
    assert_eq!(read(&d, "blkio.throttle.read_bps_device"), "8:0 1048576");
    assert_eq!(read(&d, "blkio.throttle.write_bps_device"), "8:0 2097152");
    assert_eq!(read(&d, "blkio.throttle.read_iops_device"), "8:0 100");
    assert_eq!(read(&d, "blkio.throttle.write_iops_device"), "8:0 200");
}

#[test]
fn blkio_weight_falls_back_to_bfq() {
    let host = FakeHost::legacy();
    let manager = host.created();
    let d = dir(&host, "blkio");
    touch(
        &d,
        &[("blkio.bfq.weight", ""), ("blkio.bfq.weight_device", "")],
    );
    let r = resources(
        r#"{"blockIO": {"weight": 300,
            "weightDevice": [{"major": 8, "minor": 16, "weight": 700}]}}"#,
    );
    manager.apply_resources(&r).unwrap();
    assert_eq!(read(&d, "blkio.bfq.weight"), "300");
    assert_eq!(read(&d, "blkio.bfq.weight_device"), "8:16 700");
}

#[test]
fn blkio_weight_without_any_weight_file_is_an_error() {
    let host = FakeHost::legacy();
    let manager = host.created();
    let err = manager
        .apply_resources(&resources(r#"{"blockIO": {"weight": 300}}"#))
        .unwrap_err();
    assert!(matches!(err, CgroupError::MissingFile { ref field, .. } if field == "blockIO.weight"));
}

#[test]
fn blkio_throttle_only_needs_no_weight_file() {
    let host = FakeHost::legacy();
    let manager = host.created();
    let d = dir(&host, "blkio");
    touch(&d, &[("blkio.throttle.read_bps_device", "")]);
    let r = resources(
        r#"{"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 10}]}}"#,
    );
    manager.apply_resources(&r).unwrap();
    assert_eq!(read(&d, "blkio.throttle.read_bps_device"), "8:0 10");
}

#[test]
fn hugetlb_limit_and_reservation() {
    let host = FakeHost::legacy();
    let manager = host.created();
    let d = dir(&host, "hugetlb");
    touch(
        &d,
        &[
            ("hugetlb.2MB.limit_in_bytes", ""),
            ("hugetlb.2MB.rsvd.limit_in_bytes", ""),
            ("hugetlb.1GB.limit_in_bytes", ""),
        ],
    );
    let r = resources(
        r#"{"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304},
                               {"pageSize": "1GB", "limit": -1}]}"#,
    );
    manager.apply_resources(&r).unwrap();
    assert_eq!(read(&d, "hugetlb.2MB.limit_in_bytes"), "4194304");
    assert_eq!(read(&d, "hugetlb.2MB.rsvd.limit_in_bytes"), "4194304");
    assert_eq!(read(&d, "hugetlb.1GB.limit_in_bytes"), "-1");
}

#[test]
fn hugetlb_unknown_page_size_is_refused() {
    let host = FakeHost::legacy();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();
    let err = manager
        .validate(&resources(
            r#"{"hugepageLimits": [{"pageSize": "4MB", "limit": 1}]}"#,
        ))
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("hugepageLimits[0].pageSize"), "{text}");
    assert!(text.contains("1GB, 2MB"), "{text}");
}

#[test]
fn network_classid_and_priorities() {
    let host = FakeHost::legacy();
    let manager = host.created();
    let d = dir(&host, "net_cls,net_prio");
    touch(&d, &[("net_cls.classid", ""), ("net_prio.ifpriomap", "")]);
    let r = resources(
        r#"{"network": {"classID": 1048577,
            "priorities": [{"name": "lo", "priority": 2}, {"name": "eth0", "priority": 5}]}}"#,
    );
    manager.apply_resources(&r).unwrap();
    assert_eq!(read(&d, "net_cls.classid"), "1048577");
    assert_eq!(read(&d, "net_prio.ifpriomap"), "eth0 5");
}

#[test]
fn rdma_limits() {
    let host = FakeHost::legacy();
    let manager = host.created();
    let d = dir(&host, "rdma");
    touch(&d, &[("rdma.max", "")]);
    let r = resources(r#"{"rdma": {"mlx4_0": {"hcaHandles": 3, "hcaObjects": 100}}}"#);
    manager.apply_resources(&r).unwrap();
    assert_eq!(read(&d, "rdma.max"), "mlx4_0 hca_handle=3 hca_object=100");
}

#[test]
fn devices_deny_all_then_rules() {
    let host = FakeHost::legacy();
    let manager = host.created();
    let d = dir(&host, "devices");
    touch(&d, &[("devices.allow", ""), ("devices.deny", "")]);
    let r = resources(
        r#"{"devices": [{"allow": false, "access": "rwm"},
                        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                        {"allow": true, "type": "c", "major": 136, "access": "rw"}]}"#,
    );
    manager.apply_resources(&r).unwrap();
    // Each write replaces the fake file; the order itself is tested in `devices`.
    assert_eq!(read(&d, "devices.deny"), "a *:* rwm");
    assert_eq!(read(&d, "devices.allow"), "c 136:* rw");
}

#[test]
fn unified_is_refused_on_v1() {
    let host = FakeHost::legacy();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();
    let err = manager
        .validate(&resources(r#"{"unified": {"memory.high": "100000"}}"#))
        .unwrap_err();
    assert!(matches!(err, CgroupError::UnifiedNeedsV2 { .. }));
    assert_eq!(
        err.to_string(),
        "unified resources need cgroup v2 (this host uses cgroup v1)"
    );
}

#[test]
fn validation_errors_name_the_field() {
    let host = FakeHost::legacy();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();
    for (json, field) in [
        (r#"{"memory": {"limit": 200, "swap": 100}}"#, "memory.swap"),
        (r#"{"memory": {"limit": -1, "swap": 100}}"#, "memory.swap"),
        (r#"{"memory": {"limit": -5}}"#, "memory.limit"),
        (r#"{"memory": {"swappiness": 101}}"#, "memory.swappiness"),
        (r#"{"cpu": {"shares": 1}}"#, "cpu.shares"),
        (r#"{"cpu": {"shares": 300000}}"#, "cpu.shares"),
        (r#"{"cpu": {"quota": 500}}"#, "cpu.quota"),
        (r#"{"cpu": {"quota": -2}}"#, "cpu.quota"),
        (r#"{"cpu": {"period": 100}}"#, "cpu.period"),
        (r#"{"cpu": {"quota": 10000, "burst": 20000}}"#, "cpu.burst"),
        (r#"{"cpu": {"idle": 2}}"#, "cpu.idle"),
        (r#"{"cpu": {"cpus": "0-x"}}"#, "cpu.cpus"),
        (r#"{"blockIO": {"weight": 5}}"#, "blockIO.weight"),
        (r#"{"blockIO": {"leafWeight": 2000}}"#, "blockIO.leafWeight"),
        (
            r#"{"blockIO": {"weightDevice": [{"major": -1, "minor": 0, "weight": 100}]}}"#,
            "blockIO.weightDevice[0]",
        ),
        (
            r#"{"hugepageLimits": [{"pageSize": "2M", "limit": 1}]}"#,
            "hugepageLimits[0].pageSize",
        ),
        (
            r#"{"devices": [{"allow": true, "access": "x"}]}"#,
            "devices[0].access",
        ),
    ] {
        let err = manager.validate(&resources(json)).unwrap_err();
        assert!(
            matches!(&err, CgroupError::InvalidResource { field: f, .. } if f.starts_with(field)),
            "{json}: {err}"
        );
    }
}

#[test]
fn valid_resources_pass() {
    let host = FakeHost::legacy();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();
    let r = resources(
        r#"{"memory": {"limit": 0, "swap": 0},
            "cpu": {"shares": 1024, "quota": -1, "period": 100000,
                    "realtimeRuntime": 1000, "cpus": "0"},
            "pids": {"limit": -1},
            "blockIO": {"weight": 10},
            "network": {"classID": 1}}"#,
    );
    manager.validate(&r).unwrap();
}

#[test]
fn missing_controller_is_named() {
    let host = FakeHost::legacy();
    let mut system = host.system();
    system.mountinfo = system
        .mountinfo
        .lines()
        .filter(|l| !l.contains("net_cls") && !l.contains("pids"))
        .map(|l| format!("{l}\n"))
        .collect();
    let setup = crate::CgroupSetup {
        cgroups_path: Some(Path::new("/c")),
        container_id: "ctr",
        systemd: false,
    };
    let manager = Manager::with_system(&setup, system).unwrap();
    let err = manager
        .validate(&resources(r#"{"network": {"classID": 7}}"#))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "linux.resources.network.classID needs the net_cls cgroup controller, \
         which is not available on this host"
    );
    let err = manager
        .validate(&resources(r#"{"pids": {"limit": 7}}"#))
        .unwrap_err();
    assert!(
        matches!(err, CgroupError::ControllerUnavailable { ref controller, .. } if controller == "pids")
    );
}

#[test]
fn add_process_writes_every_hierarchy() {
    let host = FakeHost::legacy();
    let manager = host.created();
    for d in manager.cgroup_dirs() {
        touch(&d, &[("cgroup.procs", "")]);
    }
    manager.add_process(4242).unwrap();
    for d in manager.cgroup_dirs() {
        assert_eq!(read(&d, "cgroup.procs"), "4242", "{}", d.display());
    }
}

#[test]
fn add_process_before_create_names_the_file() {
    let host = FakeHost::legacy();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();
    let err = manager.add_process(1).unwrap_err();
    assert!(
        err.to_string().starts_with("failed to write \"1\" to "),
        "{err}"
    );
    assert!(
        err.to_string().ends_with("/berth/ctr/cgroup.procs"),
        "{err}"
    );
}

#[test]
fn pids_include_sub_cgroups() {
    let host = FakeHost::legacy();
    let manager = host.created();
    let d = dir(&host, "pids");
    fs::create_dir_all(d.join("inner")).unwrap();
    touch(&d, &[("cgroup.procs", "20\n10\n")]);
    touch(&d.join("inner"), &[("cgroup.procs", "30\n")]);
    assert_eq!(manager.pids().unwrap(), [10, 20, 30]);
}

#[test]
fn freeze_and_thaw_use_freezer_state() {
    let host = FakeHost::legacy();
    let manager = host.created();
    let d = dir(&host, "freezer");
    touch(&d, &[("freezer.state", "THAWED\n")]);
    manager.freeze().unwrap();
    assert_eq!(read(&d, "freezer.state"), "FROZEN");
    assert!(manager.is_frozen().unwrap());
    manager.thaw().unwrap();
    assert_eq!(read(&d, "freezer.state"), "THAWED");
    assert!(!manager.is_frozen().unwrap());
}

#[test]
fn frozen_parent_alone_is_not_frozen() {
    let host = FakeHost::legacy();
    let manager = host.created();
    let d = dir(&host, "freezer");
    touch(
        &d,
        &[
            ("freezer.state", "FROZEN\n"),
            ("freezer.self_freezing", "0\n"),
        ],
    );
    assert!(!manager.is_frozen().unwrap());
}

#[test]
fn remove_deletes_nested_cgroups_everywhere() {
    let host = FakeHost::legacy();
    let manager = host.created();
    for d in manager.cgroup_dirs() {
        fs::create_dir_all(d.join("a/b")).unwrap();
        fs::create_dir_all(d.join("c")).unwrap();
    }
    manager.remove().unwrap();
    for d in manager.cgroup_dirs() {
        assert!(!d.exists(), "{}", d.display());
        assert!(d.parent().unwrap().exists(), "the parent must stay");
    }
    manager.remove().unwrap();
}

#[test]
fn manager_survives_serde_round_trip() {
    let host = FakeHost::legacy();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();
    let json = serde_json::to_string(&manager).unwrap();
    let back: Manager = serde_json::from_str(&json).unwrap();
    assert_eq!(back, manager);
    assert!(json.contains("\"mode\":\"legacy\""), "{json}");
}
