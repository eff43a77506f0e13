//! [`Manager::stats`](crate::Manager::stats) against the interface files of each cgroup
//! version, written into a fake tree as the kernel formats them.

use serde_json::{json, Value};

use super::fake::{touch, FakeHost};
use crate::stats::{BlkioEntry, Hugetlb, MemoryEntry, Pids, PsiData};
use crate::CgroupError;

fn v1_dir(host: &FakeHost, hierarchy: &str) -> std::path::PathBuf {
    host.host_path(&format!("/sys/fs/cgroup/{hierarchy}/berth/ctr"))
}

/// The v1 files of a container that used some CPU, memory, processes and disk.
fn write_v1_files(host: &FakeHost, cpu: &str, cpuacct: &str) {
    touch(
        &v1_dir(host, cpuacct),
        &[
            ("cpuacct.stat", "user 150\nsystem 50\n"),
            ("cpuacct.usage", "2500000000\n"),
            ("cpuacct.usage_percpu", "2000000000 500000000 \n"),
            (
                "cpuacct.usage_all",
                "cpu user system\n0 1500000000 500000000\n1 400000000 100000000\n",
            ),
        ],
    );
    touch(
        &v1_dir(host, cpu),
        &[(
            "cpu.stat",
            "nr_periods 10\nnr_throttled 3\nthrottled_time 7000\nnr_bursts 0\nburst_time 0\n",
        )],
    );
    touch(
        &v1_dir(host, "cpuset"),
        &[
            ("cpuset.cpus", "0-1,3\n"),
            ("cpuset.mems", "0\n"),
            ("cpuset.cpu_exclusive", "0\n"),
            ("cpuset.sched_load_balance", "1\n"),
            ("cpuset.sched_relax_domain_level", "-1\n"),
        ],
    );
    touch(
        &v1_dir(host, "memory"),
        &[
            (
                "memory.stat",
                "cache 24576\nrss 118784\ntotal_cache 24576\nhierarchical_memory_limit 67108864\n",
            ),
            ("memory.usage_in_bytes", "913408\n"),
            ("memory.max_usage_in_bytes", "2510848\n"),
            ("memory.failcnt", "2\n"),
            ("memory.limit_in_bytes", "67108864\n"),
            ("memory.memsw.usage_in_bytes", "913408\n"),
            ("memory.memsw.max_usage_in_bytes", "2510848\n"),
            ("memory.memsw.failcnt", "0\n"),
            ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
            // Kernel memory without a limit file, as on Linux 5.16+.
            ("memory.kmem.usage_in_bytes", "344064\n"),
            ("memory.kmem.max_usage_in_bytes", "593920\n"),
            ("memory.kmem.failcnt", "0\n"),
        ],
    );
    touch(
        &v1_dir(host, "pids"),
        &[("pids.current", "2\n"), ("pids.max", "50\n")],
    );
    touch(
        &v1_dir(host, "blkio"),
        &[
            // CFQ and BFQ files absent: the throttling counters are used.
            (
                "blkio.throttle.io_service_bytes_recursive",
                "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\nTotal 12288\n",
            ),
            (
                "blkio.throttle.io_serviced_recursive",
                "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
            ),
        ],
    );
}

#[test]
fn v1_cpu_memory_pids_and_blkio() {
    let host = FakeHost::legacy();
    let manager = host.created();
    write_v1_files(&host, "cpu,cpuacct", "cpu,cpuacct");

    let stats = manager.stats().unwrap();

    let usage = &stats.cpu.usage;
    assert_eq!(usage.total, 2_500_000_000);
    assert_eq!(usage.percpu, [2_000_000_000, 500_000_000]);
    assert_eq!(usage.percpu_user, [1_500_000_000, 400_000_000]);
    assert_eq!(usage.percpu_kernel, [500_000_000, 100_000_000]);
    let tick_ns = 1_000_000_000 / crate::stats::clock_ticks();
    assert_eq!(usage.user, 150 * tick_ns);
    assert_eq!(usage.kernel, 50 * tick_ns);
    assert_eq!(stats.cpu.throttling.periods, 10);
    assert_eq!(stats.cpu.throttling.throttled_periods, 3);
    assert_eq!(stats.cpu.throttling.throttled_time, 7000);
    assert_eq!(stats.cpu.psi, None);

    assert_eq!(stats.cpuset.cpus, [0, 1, 3]);
    assert_eq!(stats.cpuset.mems, [0]);
    assert_eq!(stats.cpuset.sched_load_balance, 1);
    assert_eq!(stats.cpuset.sched_relax_domain_level, -1);

    let memory = &stats.memory;
    assert_eq!(memory.cache, 24576);
    assert_eq!(
        memory.usage,
        MemoryEntry {
            limit: 67108864,
            usage: 913408,
            max: 2510848,
            failcnt: 2
        }
    );
    assert_eq!(memory.swap.limit, 9223372036854771712);
    assert_eq!(
        memory.kernel,
        MemoryEntry {
            limit: 0,
            usage: 344064,
            max: 593920,
            failcnt: 0
        }
    );
    // No memory.kmem.tcp.* files: nothing to report.
    assert_eq!(memory.kernel_tcp, MemoryEntry::default());
    assert_eq!(memory.raw.get("rss"), Some(&118784));
    assert_eq!(memory.raw.len(), 4);

    assert_eq!(
        stats.pids,
        Pids {
            current: 2,
            limit: 50
        }
    );

    let read = |op: &str, value| BlkioEntry {
        major: 8,
        minor: 0,
        op: op.to_string(),
        value,
    };
    assert_eq!(
        stats.blkio.io_service_bytes_recursive,
        [
            read("Read", 4096),
            read("Write", 8192),
            read("Total", 12288)
        ]
    );
    assert_eq!(stats.blkio.io_serviced_recursive.len(), 3);
    assert!(stats.blkio.sectors_recursive.is_empty());
}

#[test]
fn v1_json_has_runcs_names_and_omissions() {
    let host = FakeHost::legacy();
    let manager = host.created();
    write_v1_files(&host, "cpu,cpuacct", "cpu,cpuacct");

    let v: Value = serde_json::to_value(manager.stats().unwrap()).unwrap();

    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "blkio",
            "cpu",
            "cpuset",
            "hugetlb",
            "intel_rdt",
            "memory",
            "network_interfaces",
            "pids"
        ]
    );
    assert_eq!(
        v["cpu"]["throttling"],
        json!({"periods": 10, "throttledPeriods": 3, "throttledTime": 7000})
    );
    // Kernel memory has no limit file: the limit stays, as runc prints it, at 0.
    assert_eq!(
        v["memory"]["kernel"],
        json!({"limit": 0, "usage": 344064, "max": 593920, "failcnt": 0})
    );
    assert!(v["memory"].get("kernelTCP").is_none(), "{v}");
    assert_eq!(v["pids"], json!({"current": 2, "limit": 50}));
    assert_eq!(
        v["blkio"]["ioServicedRecursive"][0],
        json!({"major": 8, "op": "Read", "value": 1})
    );
    assert_eq!(v["network_interfaces"], Value::Null);
}

#[test]
fn v1_blkio_prefers_cfq_files_and_skips_empty_groups() {
    let host = FakeHost::legacy();
    let manager = host.created();
    let dir = v1_dir(&host, "blkio");
    touch(
        &dir,
        &[
            // Present but empty: BFQ is not in use, go on to CFQ.
            ("blkio.bfq.io_serviced_recursive", ""),
            ("blkio.sectors_recursive", "8:16 100\n"),
            ("blkio.io_service_time_recursive", "8:16 Read 5\nTotal 5\n"),
            ("blkio.io_wait_time_recursive", "8:16 Read 6\n"),
            ("blkio.io_merged_recursive", "8:16 Read 7\n"),
            ("blkio.io_queued_recursive", "8:16 Read 8\n"),
            ("blkio.time_recursive", "8:16 9\n"),
            ("blkio.io_serviced_recursive", "8:16 Read 10\n"),
            ("blkio.io_service_bytes_recursive", "8:16 Read 11\n"),
            ("blkio.throttle.io_service_bytes", "8:16 Read 999\n"),
        ],
    );

    let blkio = manager.stats().unwrap().blkio;

    assert_eq!(
        blkio.sectors_recursive,
        [BlkioEntry {
            major: 8,
            minor: 16,
            op: String::new(),
            value: 100
        }]
    );
    assert_eq!(blkio.io_queued_recursive[0].value, 8);
    assert_eq!(blkio.io_service_bytes_recursive[0].value, 11);
}

#[test]
fn v1_malformed_blkio_line_is_an_error_naming_the_file() {
    let host = FakeHost::legacy();
    let manager = host.created();
    touch(
        &v1_dir(&host, "blkio"),
        &[("blkio.throttle.io_serviced_recursive", "8:0 Read lots\n")],
    );

    let err = manager.stats().unwrap_err();

    match err {
        CgroupError::Parse { path, content } => {
            assert!(path.ends_with("blkio.throttle.io_serviced_recursive"));
            assert_eq!(content, "8:0 Read lots");
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn v1_hugetlb_per_page_size() {
    let host = FakeHost::legacy();
    let manager = host.created();
    touch(
        &v1_dir(&host, "hugetlb"),
        &[
            ("hugetlb.2MB.usage_in_bytes", "4194304\n"),
            ("hugetlb.2MB.max_usage_in_bytes", "8388608\n"),
            ("hugetlb.2MB.failcnt", "1\n"),
            ("hugetlb.1GB.usage_in_bytes", "0\n"),
            ("hugetlb.1GB.max_usage_in_bytes", "0\n"),
            ("hugetlb.1GB.failcnt", "0\n"),
        ],
    );

    let hugetlb = manager.stats().unwrap().hugetlb;

    assert_eq!(
        hugetlb.get("2MB"),
        Some(&Hugetlb {
            usage: 4194304,
            max: 8388608,
            failcnt: 1
        })
    );
    assert_eq!(hugetlb.get("1GB"), Some(&Hugetlb::default()));
    assert_eq!(
        serde_json::to_value(&hugetlb).unwrap(),
        json!({"1GB": {"failcnt": 0}, "2MB": {"usage": 4194304, "max": 8388608, "failcnt": 1}})
    );
}

#[test]
fn v1_unlimited_pids_report_no_limit() {
    let host = FakeHost::legacy();
    let manager = host.created();
    touch(
        &v1_dir(&host, "pids"),
        &[("pids.current", "1\n"), ("pids.max", "max\n")],
    );

    assert_eq!(
        manager.stats().unwrap().pids,
        Pids {
            current: 1,
            limit: 0
        }
    );
}

#[test]
fn a_removed_cgroup_is_an_error() {
    let host = FakeHost::legacy();
    let manager = host.manager_with(Some("/berth/ctr"), false).unwrap();

    let err = manager.stats().unwrap_err();

    assert!(matches!(err, CgroupError::ReadDir { .. }), "{err}");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
}

fn unified_dir(host: &FakeHost) -> std::path::PathBuf {
    host.host_path("/sys/fs/cgroup/berth/ctr")
}

/// The v2 files of a container that used some CPU, memory, processes and disk.
fn write_v2_files(host: &FakeHost) {
    touch(
        &unified_dir(host),
        &[
            (
                "cpu.stat",
                "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 4\n\
                 nr_throttled 1\nthrottled_usec 30\nnr_bursts 0\nburst_usec 0\n",
            ),
            (
                "cpu.pressure",
                "some avg10=1.50 avg60=0.00 avg300=0.00 total=1234\n\
                 full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            ),
            ("memory.stat", "anon 1048576\nfile 4096\nkernel 8192\n"),
            ("memory.current", "1060864\n"),
            ("memory.max", "67108864\n"),
            ("memory.peak", "2097152\n"),
            ("memory.swap.current", "4096\n"),
            ("memory.swap.max", "max\n"),
            ("pids.current", "3\n"),
            ("pids.max", "max\n"),
            (
                "io.stat",
                "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
            ),
            ("hugetlb.2MB.current", "2097152\n"),
            ("hugetlb.2MB.events", "max 4\n"),
        ],
    );
}

#[test]
fn v2_cpu_memory_pids_io_hugetlb_and_pressure() {
    let host = FakeHost::unified();
    let manager = host.created();
    write_v2_files(&host);

    let stats = manager.stats().unwrap();

    assert_eq!(stats.cpu.usage.total, 2_500_000);
    assert_eq!(stats.cpu.usage.user, 2_000_000);
    assert_eq!(stats.cpu.usage.kernel, 500_000);
    assert!(stats.cpu.usage.percpu.is_empty());
    assert_eq!(stats.cpu.throttling.periods, 4);
    assert_eq!(stats.cpu.throttling.throttled_time, 30_000);
    let psi = stats.cpu.psi.as_ref().expect("cpu.pressure read");
    assert_eq!(
        psi.some,
        PsiData {
            avg10: 1.5,
            avg60: 0.0,
            avg300: 0.0,
            total: 1234
        }
    );
    assert_eq!(psi.full, PsiData::default());
    // No memory.pressure or io.pressure: no PSI for them.
    assert_eq!(stats.memory.psi, None);

    let memory = &stats.memory;
    assert_eq!(memory.cache, 4096);
    assert_eq!(
        memory.usage,
        MemoryEntry {
            limit: 67108864,
            usage: 1060864,
            max: 2097152,
            failcnt: 0
        }
    );
    // Memory plus swap, with no swap limit.
    assert_eq!(
        memory.swap,
        MemoryEntry {
            limit: u64::MAX,
            usage: 1060864 + 4096,
            max: 0,
            failcnt: 0
        }
    );
    assert_eq!(memory.raw.get("anon"), Some(&1048576));

    assert_eq!(
        stats.pids,
        Pids {
            current: 3,
            limit: 0
        }
    );
    let io = &stats.blkio;
    assert_eq!(
        io.io_service_bytes_recursive
            .iter()
            .map(|e| (e.op.as_str(), e.value))
            .collect::<Vec<_>>(),
        [("Read", 4096), ("Write", 8192)]
    );
    assert_eq!(io.io_serviced_recursive.len(), 2);
    assert_eq!(
        stats.hugetlb.get("2MB"),
        Some(&Hugetlb {
            usage: 2097152,
            max: 0,
            failcnt: 4
        })
    );
    // No files for 1GB pages: left out.
    assert_eq!(stats.hugetlb.get("1GB"), None);
}

#[test]
fn v2_json_omits_what_the_hierarchy_lacks() {
    let host = FakeHost::unified();
    let manager = host.created();
    write_v2_files(&host);

    let v: Value = serde_json::to_value(manager.stats().unwrap()).unwrap();

    assert_eq!(
        v["cpu"]["usage"],
        json!({"total": 2_500_000, "kernel": 500_000, "user": 2_000_000})
    );
    assert_eq!(
        v["cpu"]["psi"],
        json!({"some": {"avg10": 1.5, "avg60": 0, "avg300": 0, "total": 1234}})
    );
    assert!(v["memory"].get("kernel").is_none(), "{v}");
    assert!(v["memory"].get("kernelTCP").is_none(), "{v}");
    assert_eq!(v["memory"]["swap"]["limit"], json!(u64::MAX));
    assert!(v["memory"]["swap"].get("max").is_none(), "{v}");
    assert_eq!(v["cpuset"]["cpu_exclusive"], 0);
    assert!(v["cpuset"].get("cpus").is_none(), "{v}");
}

#[test]
fn v2_swap_limit_adds_the_memory_limit() {
    let host = FakeHost::unified();
    let manager = host.created();
    touch(
        &unified_dir(&host),
        &[
            ("memory.current", "100\n"),
            ("memory.max", "1000\n"),
            ("memory.swap.current", "0\n"),
            ("memory.swap.max", "500\n"),
        ],
    );

    let swap = manager.stats().unwrap().memory.swap;

    assert_eq!((swap.usage, swap.limit), (100, 1500));
}

#[test]
fn v2_without_pids_controller_counts_processes() {
    let host = FakeHost::unified();
    let manager = host.created();
    touch(&unified_dir(&host), &[("cgroup.procs", "10\n11\n12\n")]);

    let pids = manager.stats().unwrap().pids;

    assert_eq!(
        pids,
        Pids {
            current: 3,
            limit: 0
        }
    );
}

#[test]
fn v2_empty_cgroup_reports_nothing_it_lacks() {
    let host = FakeHost::unified();
    let manager = host.created();

    let v: Value = serde_json::to_value(manager.stats().unwrap()).unwrap();

    assert_eq!(v["cpu"], json!({}));
    assert_eq!(v["memory"], json!({}));
    assert_eq!(v["pids"], json!({}));
    assert_eq!(v["blkio"], json!({}));
    assert_eq!(v["hugetlb"], json!({}));
}

#[test]
fn hybrid_reads_v1_controllers_and_hugetlb_from_cgroup2() {
    let host = FakeHost::hybrid();
    let manager = host.created();
    write_v1_files(&host, "cpu", "cpuacct");
    let unified = host.host_path("/sys/fs/cgroup/unified/berth/ctr");
    touch(
        &unified,
        &[
            ("cpu.stat", "usage_usec 1\nuser_usec 1\nsystem_usec 0\n"),
            (
                "cpu.pressure",
                "some avg10=9.00 avg60=0.00 avg300=0.00 total=1\n",
            ),
            ("hugetlb.2MB.current", "0\n"),
            ("hugetlb.2MB.events", "max 0\n"),
        ],
    );

    let stats = manager.stats().unwrap();

    // v1 cpuacct wins over cgroup2's cpu.stat, and hybrid mode reads no pressure files.
    assert_eq!(stats.cpu.usage.total, 2_500_000_000);
    assert_eq!(stats.cpu.throttling.periods, 10);
    assert_eq!(stats.cpu.psi, None);
    assert_eq!(stats.memory.usage.limit, 67108864);
    assert_eq!(stats.pids.limit, 50);
    assert_eq!(stats.hugetlb.get("2MB"), Some(&Hugetlb::default()));
}
