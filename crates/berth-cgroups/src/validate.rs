//! Checking `linux.resources` against the host before anything is created.
//!
//! As in runc, a zero in a numeric field that the runtime-spec leaves optional
//! (`memory.limit`, `cpu.shares`, `cpu.quota`, `blockIO.weight`, ...) means "not set".

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxNetwork, LinuxRdma,
    LinuxResources,
};

use crate::devices::parse_rules;
use crate::error::{invalid, CgroupError, Result};
use crate::manager::{Manager, Target};
use crate::CgroupMode;

/// `Some(v)` unless absent or zero.
pub(crate) fn nonzero_i64(value: Option<i64>) -> Option<i64> {
    value.filter(|v| *v != 0)
}

/// `Some(v)` unless absent or zero.
pub(crate) fn nonzero_u64(value: Option<u64>) -> Option<u64> {
    value.filter(|v| *v != 0)
}

/// `Some(v)` unless absent or zero.
pub(crate) fn nonzero_u16(value: Option<u16>) -> Option<u16> {
    value.filter(|v| *v != 0)
}

/// `Some(s)` unless absent or empty.
pub(crate) fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The first memory field that asks for something, if any.
#[allow(deprecated)] // `kernel` is deprecated in the spec but still honoured on v1
pub(crate) fn memory_field(m: &LinuxMemory) -> Option<&'static str> {
    [
        ("memory.limit", nonzero_i64(m.limit()).is_some()),
        ("memory.reservation", nonzero_i64(m.reservation()).is_some()),
        ("memory.swap", nonzero_i64(m.swap()).is_some()),
        ("memory.swappiness", m.swappiness().is_some()),
        ("memory.disableOOMKiller", m.disable_oom_killer().is_some()),
        ("memory.kernel", nonzero_i64(m.kernel()).is_some()),
        ("memory.kernelTCP", nonzero_i64(m.kernel_tcp()).is_some()),
        ("memory.useHierarchy", m.use_hierarchy().is_some()),
    ]
    .into_iter()
    .find_map(|(name, set)| set.then_some(name))
}

/// The first field handled by the `cpu` controller that asks for something.
pub(crate) fn cpu_field(c: &LinuxCpu) -> Option<&'static str> {
    [
        ("cpu.shares", nonzero_u64(c.shares()).is_some()),
        ("cpu.quota", nonzero_i64(c.quota()).is_some()),
        ("cpu.period", nonzero_u64(c.period()).is_some()),
        ("cpu.burst", c.burst().is_some()),
        ("cpu.idle", c.idle().is_some()),
        ("cpu.realtimeRuntime", realtime_set(c)),
        ("cpu.realtimePeriod", realtime_set(c)),
    ]
    .into_iter()
    .find_map(|(name, set)| set.then_some(name))
}

fn realtime_set(c: &LinuxCpu) -> bool {
    nonzero_i64(c.realtime_runtime()).is_some() || nonzero_u64(c.realtime_period()).is_some()
}

/// The first field handled by the `cpuset` controller that asks for something.
pub(crate) fn cpuset_field(c: &LinuxCpu) -> Option<&'static str> {
    if non_empty(c.cpus()).is_some() {
        Some("cpu.cpus")
    } else if non_empty(c.mems()).is_some() {
        Some("cpu.mems")
    } else {
        None
    }
}

fn listed<T>(list: &Option<Vec<T>>) -> bool {
    list.as_ref().is_some_and(|l| !l.is_empty())
}

/// The first block I/O field that asks for something.
pub(crate) fn block_io_field(b: &LinuxBlockIo) -> Option<&'static str> {
    [
        ("blockIO.weight", nonzero_u16(b.weight()).is_some()),
        ("blockIO.leafWeight", nonzero_u16(b.leaf_weight()).is_some()),
        ("blockIO.weightDevice", listed(b.weight_device())),
        (
            "blockIO.throttleReadBpsDevice",
            listed(b.throttle_read_bps_device()),
        ),
        (
            "blockIO.throttleWriteBpsDevice",
            listed(b.throttle_write_bps_device()),
        ),
        (
            "blockIO.throttleReadIOPSDevice",
            listed(b.throttle_read_iops_device()),
        ),
        (
            "blockIO.throttleWriteIOPSDevice",
            listed(b.throttle_write_iops_device()),
        ),
    ]
    .into_iter()
    .find_map(|(name, set)| set.then_some(name))
}

/// `linux.resources.<field>`, for [`CgroupError::ControllerUnavailable`].
fn spec_field(field: &str) -> String {
    format!("linux.resources.{field}")
}

/// A byte count or -1.
fn check_limit(field: &str, value: Option<i64>) -> Result<()> {
    match value {
        Some(v) if v < -1 => Err(invalid(
            field,
            format!("{v} is neither a byte count nor -1 (unlimited)"),
        )),
        _ => Ok(()),
    }
}

/// A blkio weight, which the runtime-spec and cfq bound to 10..=1000.
fn check_weight(field: &str, value: Option<u16>) -> Result<()> {
    match nonzero_u16(value) {
        Some(w) if !(10..=1000).contains(&w) => Err(invalid(
            field,
            format!("{w} is outside the range 10..=1000"),
        )),
        _ => Ok(()),
    }
}

fn check_device_numbers(field: &str, major: i64, minor: i64) -> Result<()> {
    if major < 0 || minor < 0 {
        return Err(invalid(
            field,
            format!("{major}:{minor} is not a device number"),
        ));
    }
    Ok(())
}

/// A kernel CPU or memory-node list: `0-3,8,10-11`, optionally with `:used/group`
/// strides.
pub(crate) fn check_cpu_list(field: &str, list: &str) -> Result<()> {
    let bad = |why: &str| invalid(field, format!("{list:?} is not a CPU/node list: {why}"));
    for item in list.trim().split(',') {
        let range = item.split(':').next().unwrap_or("");
        let mut ends = range.splitn(2, '-');
        let first = ends.next().unwrap_or("");
        let parse = |n: &str| n.trim().parse::<u32>().map_err(|_| bad("expected numbers"));
        let low = parse(first)?;
        if let Some(last) = ends.next() {
            if parse(last)? < low {
                return Err(bad("a range ends before it starts"));
            }
        }
        if let Some(stride) = item.split_once(':').map(|(_, s)| s) {
            let (used, group) = stride
                .split_once('/')
                .ok_or_else(|| bad("a stride is used/group"))?;
            parse(used)?;
            parse(group)?;
        }
    }
    Ok(())
}

/// The kernel's name for a huge page size given in kB (as the hugetlb controller
/// names its files): `2048` is `2MB`.
fn page_size_name(kib: u64) -> String {
    if kib >= 1024 * 1024 {
        format!("{}GB", kib / (1024 * 1024))
    } else if kib >= 1024 {
        format!("{}MB", kib / 1024)
    } else {
        format!("{kib}KB")
    }
}

/// Huge page sizes the host supports, from `/sys/kernel/mm/hugepages`; `None` if that
/// directory cannot be read.
pub(crate) fn supported_page_sizes(dir: &Path) -> Option<Vec<String>> {
    let entries = fs::read_dir(dir).ok()?;
    let mut sizes: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kib = name.strip_prefix("hugepages-")?.strip_suffix("kB")?;
            kib.parse().ok().map(page_size_name)
        })
        .collect();
    sizes.sort();
    Some(sizes)
}

/// A page size in the kernel's naming: digits then `KB`, `MB` or `GB`.
fn page_size_is_well_formed(size: &str) -> bool {
    ["KB", "MB", "GB"].iter().any(|unit| {
        size.strip_suffix(unit)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// A word that can stand in a space-separated cgroup file line.
fn check_word(field: &str, word: &str) -> Result<()> {
    if word.is_empty() || word.chars().any(char::is_whitespace) {
        return Err(invalid(
            field,
            format!("{word:?} is empty or contains white space"),
        ));
    }
    Ok(())
}

impl Manager {
    /// Checks `resources` against this host before anything is created: values in
    /// range and consistent, each needed controller available (in v1, or in v2 for
    /// hybrid hosts), nothing that this cgroup version cannot express. Each error names
    /// the field.
    pub fn validate(&self, resources: &LinuxResources) -> Result<()> {
        if let Some(memory) = resources.memory() {
            self.validate_memory(memory)?;
        }
        if let Some(cpu) = resources.cpu() {
            self.validate_cpu(cpu)?;
        }
        if resources.pids().is_some() {
            self.require("pids.limit", "pids", Some("pids"))?;
        }
        if let Some(block_io) = resources.block_io() {
            self.validate_block_io(block_io)?;
        }
        if let Some(limits) = resources.hugepage_limits() {
            self.validate_hugepages(limits)?;
        }
        if let Some(network) = resources.network() {
            self.validate_network(network)?;
        }
        if let Some(rdma) = resources.rdma() {
            self.validate_rdma(rdma)?;
        }
        if let Some(devices) = resources.devices() {
            parse_rules(devices)?;
            if self.v1_dir("devices").is_none() && self.unified.is_none() {
                return Err(CgroupError::ControllerUnavailable {
                    what: spec_field("devices"),
                    controller: "devices".to_string(),
                });
            }
        }
        if let Some(unified) = resources.unified() {
            self.validate_unified(unified)?;
        }
        Ok(())
    }

    #[allow(deprecated)] // `kernel` is deprecated in the spec but still checked
    fn validate_memory(&self, m: &LinuxMemory) -> Result<()> {
        let limit = nonzero_i64(m.limit());
        let swap = nonzero_i64(m.swap());
        check_limit("memory.limit", limit)?;
        check_limit("memory.reservation", nonzero_i64(m.reservation()))?;
        check_limit("memory.swap", swap)?;
        check_limit("memory.kernel", nonzero_i64(m.kernel()))?;
        check_limit("memory.kernelTCP", nonzero_i64(m.kernel_tcp()))?;
        if let Some(s) = m.swappiness().filter(|s| *s > 100) {
            return Err(invalid(
                "memory.swappiness",
                format!("{s} is outside the range 0..=100"),
            ));
        }
        match (limit, swap) {
            (Some(l), Some(s)) if l > 0 && s > 0 && s < l => {
                return Err(invalid(
                    "memory.swap",
                    format!("the memory+swap limit {s} is below memory.limit {l}"),
                ))
            }
            (Some(-1), Some(s)) if s > 0 => {
                return Err(invalid(
                    "memory.swap",
                    "a memory+swap limit needs a memory limit, but memory.limit is -1",
                ))
            }
            _ => {}
        }
        let Some(field) = memory_field(m) else {
            return Ok(());
        };
        match self.require(field, "memory", Some("memory"))? {
            Target::V1(_) => {
                let memsw = "memory.memsw.limit_in_bytes";
                let root = self.v1_mount("memory").map(|mount| mount.join(memsw));
                if let Some(path) = root.filter(|p| swap.is_some_and(|s| s > 0) && !p.exists()) {
                    return Err(CgroupError::MissingFile {
                        field: "memory.swap".to_string(),
                        path,
                        hint: "; swap accounting is off (boot with swapaccount=1)",
                    });
                }
            }
            Target::V2(_) => {
                if m.swappiness().is_some() {
                    return Err(self.unsupported(
                        "memory.swappiness",
                        "cgroup v2 has no per-cgroup swappiness",
                    ));
                }
                if swap.is_some_and(|s| s > 0) && limit.is_none() {
                    return Err(invalid(
                        "memory.swap",
                        "on cgroup v2 a swap limit needs memory.limit too",
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_cpu(&self, c: &LinuxCpu) -> Result<()> {
        if let Some(s) = nonzero_u64(c.shares()) {
            if !(2..=262_144).contains(&s) {
                return Err(invalid(
                    "cpu.shares",
                    format!("{s} is outside the range 2..=262144"),
                ));
            }
        }
        let quota = nonzero_i64(c.quota());
        match quota {
            Some(q) if q < -1 => {
                return Err(invalid(
                    "cpu.quota",
                    format!("{q} is neither microseconds nor -1 (unlimited)"),
                ))
            }
            Some(q) if (1..1000).contains(&q) => {
                return Err(invalid(
                    "cpu.quota",
                    format!("{q}us is below the kernel's minimum of 1000us"),
                ))
            }
            _ => {}
        }
        if let Some(p) = nonzero_u64(c.period()) {
            if !(1000..=1_000_000).contains(&p) {
                return Err(invalid(
                    "cpu.period",
                    format!("{p}us is outside the range 1000..=1000000"),
                ));
            }
        }
        if let (Some(burst), Some(q)) = (c.burst(), quota.filter(|q| *q > 0)) {
            if burst > q.unsigned_abs() {
                return Err(invalid(
                    "cpu.burst",
                    format!("{burst}us exceeds cpu.quota {q}us"),
                ));
            }
        }
        if let Some(idle) = c.idle().filter(|i| *i != 0 && *i != 1) {
            return Err(invalid("cpu.idle", format!("{idle} is neither 0 nor 1")));
        }
        if let Some(r) = nonzero_i64(c.realtime_runtime()).filter(|r| *r < -1) {
            return Err(invalid(
                "cpu.realtimeRuntime",
                format!("{r} is neither microseconds nor -1"),
            ));
        }
        if let Some(field) = cpu_field(c) {
            let target = self.require(field, "cpu", Some("cpu"))?;
            if matches!(target, Target::V2(_)) && realtime_set(c) {
                return Err(self.unsupported(
                    "cpu.realtimeRuntime",
                    "real-time group scheduling exists only in cgroup v1 (cpu.rt_runtime_us)",
                ));
            }
        }
        if let Some(cpus) = non_empty(c.cpus()) {
            check_cpu_list("cpu.cpus", cpus)?;
        }
        if let Some(mems) = non_empty(c.mems()) {
            check_cpu_list("cpu.mems", mems)?;
        }
        if let Some(field) = cpuset_field(c) {
            self.require(field, "cpuset", Some("cpuset"))?;
        }
        Ok(())
    }

    fn validate_block_io(&self, b: &LinuxBlockIo) -> Result<()> {
        check_weight("blockIO.weight", b.weight())?;
        check_weight("blockIO.leafWeight", b.leaf_weight())?;
        for (i, wd) in b.weight_device().iter().flatten().enumerate() {
            let field = format!("blockIO.weightDevice[{i}]");
            check_device_numbers(&field, wd.major(), wd.minor())?;
            check_weight(&format!("{field}.weight"), wd.weight())?;
            check_weight(&format!("{field}.leafWeight"), wd.leaf_weight())?;
        }
        for (name, list) in [
            ("throttleReadBpsDevice", b.throttle_read_bps_device()),
            ("throttleWriteBpsDevice", b.throttle_write_bps_device()),
            ("throttleReadIOPSDevice", b.throttle_read_iops_device()),
            ("throttleWriteIOPSDevice", b.throttle_write_iops_device()),
        ] {
            for (i, td) in list.iter().flatten().enumerate() {
                check_device_numbers(&format!("blockIO.{name}[{i}]"), td.major(), td.minor())?;
            }
        }
        if let Some(field) = block_io_field(b) {
            self.require(field, "blkio", Some("io"))?;
        }
        Ok(())
    }

    fn validate_hugepages(&self, limits: &[LinuxHugepageLimit]) -> Result<()> {
        let supported = supported_page_sizes(&self.host_path("/sys/kernel/mm/hugepages"));
        for (i, limit) in limits.iter().enumerate() {
            let size = limit.page_size();
            let field = format!("hugepageLimits[{i}].pageSize");
            if !page_size_is_well_formed(size) {
                return Err(invalid(
                    field,
                    format!("{size:?} is not a size like 2MB or 1GB"),
                ));
            }
            if let Some(sizes) = supported.as_ref().filter(|s| !s.contains(size)) {
                return Err(invalid(
                    field,
                    format!(
                        "{size} is not a huge page size of this host (it has: {})",
                        sizes.join(", ")
                    ),
                ));
            }
            check_limit(&format!("hugepageLimits[{i}].limit"), Some(limit.limit()))?;
        }
        if !limits.is_empty() {
            self.require("hugepageLimits", "hugetlb", Some("hugetlb"))?;
        }
        Ok(())
    }

    fn validate_network(&self, n: &LinuxNetwork) -> Result<()> {
        let priorities = n.priorities().as_deref().unwrap_or_default();
        for (i, p) in priorities.iter().enumerate() {
            check_word(&format!("network.priorities[{i}].name"), p.name())?;
        }
        for (field, set, controller) in [
            ("network.classID", n.class_id().is_some(), "net_cls"),
            ("network.priorities", !priorities.is_empty(), "net_prio"),
        ] {
            if !set {
                continue;
            }
            if self.mode == CgroupMode::Unified {
                return Err(self.unsupported(
                    field,
                    "net_cls and net_prio exist only in cgroup v1; use eBPF for traffic classes",
                ));
            }
            self.require(field, controller, None)?;
        }
        Ok(())
    }

    fn validate_rdma(&self, rdma: &HashMap<String, LinuxRdma>) -> Result<()> {
        for device in rdma.keys() {
            check_word(&format!("rdma[{device:?}]"), device)?;
        }
        if !rdma.is_empty() {
            self.require("rdma", "rdma", Some("rdma"))?;
        }
        Ok(())
    }

    fn validate_unified(&self, unified: &HashMap<String, String>) -> Result<()> {
        if unified.is_empty() {
            return Ok(());
        }
        if self.mode != CgroupMode::Unified {
            return Err(CgroupError::UnifiedNeedsV2 {
                mode: self.mode.describe(),
            });
        }
        let mut keys: Vec<&String> = unified.keys().collect();
        keys.sort();
        for key in keys {
            let Some((controller, _)) = key.split_once('.') else {
                return Err(invalid(
                    "unified",
                    format!("{key:?} is not a cgroup interface file name"),
                ));
            };
            if controller.is_empty() || key.contains('/') || key.contains('\0') {
                return Err(invalid(
                    "unified",
                    format!("{key:?} is not a cgroup interface file name"),
                ));
            }
            let core = controller == "cgroup" || key.ends_with(".pressure");
            if !core && self.v2_dir(controller).is_none() {
                return Err(CgroupError::ControllerUnavailable {
                    what: format!("linux.resources.unified key {key:?}"),
                    controller: controller.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The mount point of the v1 hierarchy carrying `controller`.
    fn v1_mount(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.mount_point.as_path())
    }

    fn unsupported(&self, field: &str, reason: &'static str) -> CgroupError {
        CgroupError::Unsupported {
            field: field.to_string(),
            mode: self.mode.describe(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        for good in ["0", "0-3", "0-3,8,10-11", " 1,2 ", "0-15:2/4"] {
            check_cpu_list("cpu.cpus", good).unwrap();
        }
        for bad in ["", "a", "3-1", "1,,2", "0-3:2"] {
            assert!(check_cpu_list("cpu.cpus", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn page_size_names() {
        assert_eq!(page_size_name(2048), "2MB");
        assert_eq!(page_size_name(1_048_576), "1GB");
        assert_eq!(page_size_name(64), "64KB");
        assert!(page_size_is_well_formed("2MB"));
        assert!(!page_size_is_well_formed("2M"));
        assert!(!page_size_is_well_formed("MB"));
    }
}
