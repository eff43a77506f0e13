//! Resource usage of a container's cgroup, as `runc events` reports it.
//!
//! The types follow runc's `types/events.go` field for field: the same JSON names, and the
//! same rules for leaving a field out (`omitempty` on numbers, lists and maps, `omitzero`
//! on nested structs, as runc 1.4 has them), so that whatever reads `runc events` reads
//! `berth events` unchanged. [`Manager::stats`] fills them from whichever hierarchy carries
//! each controller: the cgroup v1 files in legacy and hybrid mode, the cgroup v2 files
//! otherwise. A controller the host lacks, or a file this kernel does not provide, leaves
//! its part at zero, and the serialisation then omits it wherever runc omits it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize, Serializer};

use crate::error::{CgroupError, Result};
use crate::files::{self, read_if_present, PROCS};
use crate::manager::{Manager, Target};
use crate::validate::supported_page_sizes;
use crate::CgroupMode;

/// Whether `value` is its type's zero: Go's `omitempty` on numbers, strings, lists and maps,
/// and `omitzero` on structs.
fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// One sample of a container's resource usage: the `data` of a `stats` event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    pub cpu: Cpu,
    pub cpuset: CpuSet,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    /// Usage per huge page size, keyed as the kernel names sizes (`2MB`, `1GB`).
    pub hugetlb: BTreeMap<String, Hugetlb>,
    /// Berth does not manage Intel RDT; always empty, kept for runc's layout.
    pub intel_rdt: IntelRdt,
    /// runc fills this only for interfaces it set up itself, which an OCI bundle never
    /// asks for; `null`, as runc prints it.
    pub network_interfaces: Option<Vec<NetworkInterface>>,
}

/// CPU time and throttling.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cpu {
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: CpuUsage,
    #[serde(skip_serializing_if = "is_zero")]
    pub throttling: Throttling,
    /// Pressure stall information (`cpu.pressure`, cgroup v2 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<PsiStats>,
}

/// CPU time consumed, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuUsage {
    #[serde(skip_serializing_if = "is_zero")]
    pub total: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub percpu: Vec<u64>,
    #[serde(skip_serializing_if = "is_zero")]
    pub percpu_kernel: Vec<u64>,
    #[serde(skip_serializing_if = "is_zero")]
    pub percpu_user: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

/// CFS bandwidth throttling.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Throttling {
    #[serde(skip_serializing_if = "is_zero")]
    pub periods: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    /// Nanoseconds.
    #[serde(skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

/// The cpuset (cgroup v1 only; all zero elsewhere, as runc prints it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuSet {
    #[serde(skip_serializing_if = "is_zero")]
    pub cpus: Vec<u16>,
    pub cpu_exclusive: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub mems: Vec<u16>,
    pub mem_hardwall: u64,
    pub mem_exclusive: u64,
    pub memory_migrate: u64,
    pub memory_spread_page: u64,
    pub memory_spread_slab: u64,
    pub memory_pressure: u64,
    pub sched_load_balance: u64,
    pub sched_relax_domain_level: i64,
}

/// One memory counter with its limit, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    /// The highest usage seen.
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

/// Memory use. `swap` is memory plus swap, as cgroup v1 counts it, on both versions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Memory {
    #[serde(skip_serializing_if = "is_zero")]
    pub cache: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: MemoryEntry,
    #[serde(skip_serializing_if = "is_zero")]
    pub swap: MemoryEntry,
    #[serde(skip_serializing_if = "is_zero")]
    pub kernel: MemoryEntry,
    #[serde(rename = "kernelTCP", skip_serializing_if = "is_zero")]
    pub kernel_tcp: MemoryEntry,
    /// Every counter of `memory.stat`.
    #[serde(skip_serializing_if = "is_zero")]
    pub raw: BTreeMap<String, u64>,
    /// Pressure stall information (`memory.pressure`, cgroup v2 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<PsiStats>,
}

/// Process count. A `limit` of 0 means none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pids {
    #[serde(skip_serializing_if = "is_zero")]
    pub current: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub limit: u64,
}

/// One line of a block IO table: a device, an operation (`Read`, `Write`, ...) and a value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlkioEntry {
    #[serde(skip_serializing_if = "is_zero")]
    pub major: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub minor: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub op: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub value: u64,
}

/// Block IO, in cgroup v1's tables; cgroup v2's `io.stat` fills the first two.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Blkio {
    #[serde(skip_serializing_if = "is_zero")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "is_zero")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioQueueRecursive", skip_serializing_if = "is_zero")]
    pub io_queued_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "is_zero")]
    pub io_service_time_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "is_zero")]
    pub io_wait_time_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "is_zero")]
    pub io_merged_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "is_zero")]
    pub io_time_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "is_zero")]
    pub sectors_recursive: Vec<BlkioEntry>,
    /// Pressure stall information (`io.pressure`, cgroup v2 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<PsiStats>,
}

/// Huge pages of one size, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hugetlb {
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

/// Intel RDT statistics; Berth reports none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntelRdt {}

/// Counters of one network interface, named as runc's Go struct names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct NetworkInterface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Pressure stall information of one resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PsiStats {
    #[serde(skip_serializing_if = "is_zero")]
    pub some: PsiData,
    #[serde(skip_serializing_if = "is_zero")]
    pub full: PsiData,
}

/// Stall averages over 10, 60 and 300 seconds (percent) and the total (microseconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PsiData {
    #[serde(serialize_with = "go_float")]
    pub avg10: f64,
    #[serde(serialize_with = "go_float")]
    pub avg60: f64,
    #[serde(serialize_with = "go_float")]
    pub avg300: f64,
    pub total: u64,
}

/// Writes a float as Go's encoding/json does in the range PSI uses: a whole number without
/// a fraction (`0`, not `0.0`).
fn go_float<S: Serializer>(value: &f64, serializer: S) -> std::result::Result<S::Ok, S::Error> {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        // Exact: a whole number below 2^53 converts without loss.
        serializer.serialize_i64(*value as i64)
    } else {
        serializer.serialize_f64(*value)
    }
}

/// A parse error naming `dir/file` and the offending text.
fn parse_error(dir: &Path, file: &str, content: &str) -> CgroupError {
    CgroupError::Parse {
        path: dir.join(file),
        content: content.to_string(),
    }
}

/// A value as cgroup files write it: `max` is `u64::MAX`, and a negative number (cgroup
/// v1's "no limit", -1) is 0.
fn parse_value(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return Some(u64::MAX);
    }
    text.parse()
        .ok()
        .or_else(|| text.parse::<i64>().ok().filter(|v| *v < 0).map(|_| 0))
}

/// `dir/file` as one value; `None` if the file does not exist.
fn read_value(dir: &Path, file: &str) -> Result<Option<u64>> {
    match read_if_present(dir, file)? {
        Some(text) => parse_value(&text)
            .map(Some)
            .ok_or_else(|| parse_error(dir, file, text.trim())),
        None => Ok(None),
    }
}

/// The `key value` lines of `dir/file`, in order; `None` if the file does not exist.
fn read_keyed(dir: &Path, file: &str) -> Result<Option<Vec<(String, u64)>>> {
    let Some(text) = read_if_present(dir, file)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let pair = match (words.next(), words.next(), words.next()) {
            (Some(key), Some(value), None) => value.parse().ok().map(|v| (key.to_string(), v)),
            _ => None,
        };
        out.push(pair.ok_or_else(|| parse_error(dir, file, line))?);
    }
    Ok(Some(out))
}

/// The value of `key` in a keyed file's lines, 0 if absent.
fn keyed(lines: &[(String, u64)], key: &str) -> u64 {
    lines.iter().find(|(k, _)| k == key).map_or(0, |(_, v)| *v)
}

/// A list of CPUs or memory nodes as the kernel writes it (`0-3,8`).
fn parse_id_list(text: &str) -> Option<Vec<u16>> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to): (u16, u16) = (from.parse().ok()?, to.parse().ok()?);
                if from > to {
                    return None;
                }
                out.extend(from..=to);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

/// Clock ticks per second, the unit of `cpuacct.stat`.
pub(crate) fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// `ticks` clock ticks in nanoseconds.
fn ticks_to_ns(ticks: u64, per_second: u64) -> u64 {
    let ns = u128::from(ticks) * 1_000_000_000 / u128::from(per_second);
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// cgroup v1 `cpuacct`: total, per-CPU and user/kernel time.
fn v1_cpu_usage(dir: &Path) -> Result<CpuUsage> {
    let mut usage = CpuUsage::default();
    if let Some(lines) = read_keyed(dir, "cpuacct.stat")? {
        let ticks = clock_ticks();
        usage.user = ticks_to_ns(keyed(&lines, "user"), ticks);
        usage.kernel = ticks_to_ns(keyed(&lines, "system"), ticks);
    }
    usage.total = read_value(dir, "cpuacct.usage")?.unwrap_or(0);
    if let Some(text) = read_if_present(dir, "cpuacct.usage_percpu")? {
        usage.percpu = text
            .split_whitespace()
            .map(|v| {
                v.parse()
                    .map_err(|_| parse_error(dir, "cpuacct.usage_percpu", v))
            })
            .collect::<Result<_>>()?;
    }
    if let Some(text) = read_if_present(dir, "cpuacct.usage_all")? {
        let (kernel, user) = parse_usage_all(dir, &text)?;
        usage.percpu_kernel = kernel;
        usage.percpu_user = user;
    }
    Ok(usage)
}

/// `cpuacct.usage_all`: a `cpu user system` header, then one line per CPU. Returns the
/// kernel and the user column.
fn parse_usage_all(dir: &Path, text: &str) -> Result<(Vec<u64>, Vec<u64>)> {
    const FILE: &str = "cpuacct.usage_all";
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    if !header.starts_with("cpu user system") {
        return Err(parse_error(dir, FILE, header));
    }
    let (mut kernel, mut user) = (Vec::new(), Vec::new());
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let value = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        match (value(1), value(2)) {
            (Some(u), Some(k)) => {
                user.push(u);
                kernel.push(k);
            }
            _ => return Err(parse_error(dir, FILE, line)),
        }
    }
    Ok((kernel, user))
}

/// cgroup v1 `cpu.stat`: CFS throttling, times in nanoseconds.
fn v1_throttling(dir: &Path) -> Result<Throttling> {
    let lines = read_keyed(dir, "cpu.stat")?.unwrap_or_default();
    Ok(Throttling {
        periods: keyed(&lines, "nr_periods"),
        throttled_periods: keyed(&lines, "nr_throttled"),
        throttled_time: keyed(&lines, "throttled_time"),
    })
}

/// cgroup v2 `cpu.stat`: usage and throttling, converted from microseconds.
fn v2_cpu(dir: &Path) -> Result<(CpuUsage, Throttling)> {
    let lines = read_keyed(dir, "cpu.stat")?.unwrap_or_default();
    let usec = |key| keyed(&lines, key).saturating_mul(1000);
    let usage = CpuUsage {
        total: usec("usage_usec"),
        user: usec("user_usec"),
        kernel: usec("system_usec"),
        ..CpuUsage::default()
    };
    let throttling = Throttling {
        periods: keyed(&lines, "nr_periods"),
        throttled_periods: keyed(&lines, "nr_throttled"),
        throttled_time: usec("throttled_usec"),
    };
    Ok((usage, throttling))
}

/// cgroup v1 `cpuset`.
fn v1_cpuset(dir: &Path) -> Result<CpuSet> {
    let list = |file: &str| -> Result<Vec<u16>> {
        match read_if_present(dir, file)? {
            Some(text) => parse_id_list(&text).ok_or_else(|| parse_error(dir, file, text.trim())),
            None => Ok(Vec::new()),
        }
    };
    let flag = |file: &str| -> Result<u64> { Ok(read_value(dir, file)?.unwrap_or(0)) };
    let level = match read_if_present(dir, "cpuset.sched_relax_domain_level")? {
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| parse_error(dir, "cpuset.sched_relax_domain_level", text.trim()))?,
        None => 0,
    };
    Ok(CpuSet {
        cpus: list("cpuset.cpus")?,
        cpu_exclusive: flag("cpuset.cpu_exclusive")?,
        mems: list("cpuset.mems")?,
        mem_hardwall: flag("cpuset.mem_hardwall")?,
        mem_exclusive: flag("cpuset.mem_exclusive")?,
        memory_migrate: flag("cpuset.memory_migrate")?,
        memory_spread_page: flag("cpuset.memory_spread_page")?,
        memory_spread_slab: flag("cpuset.memory_spread_slab")?,
        memory_pressure: flag("cpuset.memory_pressure")?,
        sched_load_balance: flag("cpuset.sched_load_balance")?,
        sched_relax_domain_level: level,
    })
}

/// One cgroup v1 memory counter: `<prefix>.usage_in_bytes` and its siblings. Zero if the
/// kernel lacks it (no swap accounting, no kmem).
fn v1_memory_entry(dir: &Path, prefix: &str) -> Result<MemoryEntry> {
    let Some(usage) = read_value(dir, &format!("{prefix}.usage_in_bytes"))? else {
        return Ok(MemoryEntry::default());
    };
    let value = |suffix: &str| -> Result<u64> {
        Ok(read_value(dir, &format!("{prefix}.{suffix}"))?.unwrap_or(0))
    };
    Ok(MemoryEntry {
        usage,
        max: value("max_usage_in_bytes")?,
        failcnt: value("failcnt")?,
        limit: value("limit_in_bytes")?,
    })
}

/// cgroup v1 `memory`.
fn v1_memory(dir: &Path) -> Result<Memory> {
    let raw: BTreeMap<String, u64> = read_keyed(dir, "memory.stat")?
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(Memory {
        cache: raw.get("cache").copied().unwrap_or(0),
        usage: v1_memory_entry(dir, "memory")?,
        swap: v1_memory_entry(dir, "memory.memsw")?,
        kernel: v1_memory_entry(dir, "memory.kmem")?,
        kernel_tcp: v1_memory_entry(dir, "memory.kmem.tcp")?,
        raw,
        psi: None,
    })
}

/// One cgroup v2 memory counter: `<prefix>.current`, `.max` and `.peak`; `None` if the
/// kernel lacks it.
fn v2_memory_entry(dir: &Path, prefix: &str) -> Result<Option<MemoryEntry>> {
    let Some(usage) = read_value(dir, &format!("{prefix}.current"))? else {
        return Ok(None);
    };
    Ok(Some(MemoryEntry {
        usage,
        limit: read_value(dir, &format!("{prefix}.max"))?.unwrap_or(u64::MAX),
        // memory.peak since Linux 5.19, memory.swap.peak since 6.5.
        max: read_value(dir, &format!("{prefix}.peak"))?.unwrap_or(0),
        failcnt: 0,
    }))
}

/// cgroup v2 `memory`. Swap is reported as memory plus swap, as cgroup v1 counts it.
fn v2_memory(dir: &Path) -> Result<Memory> {
    let raw: BTreeMap<String, u64> = read_keyed(dir, "memory.stat")?
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut memory = Memory {
        cache: raw.get("file").copied().unwrap_or(0),
        raw,
        ..Memory::default()
    };
    let Some(usage) = v2_memory_entry(dir, "memory")? else {
        return Ok(memory);
    };
    let swap_only = v2_memory_entry(dir, "memory.swap")?.unwrap_or_default();
    memory.swap = MemoryEntry {
        usage: swap_only.usage.saturating_add(usage.usage),
        limit: if swap_only.limit == u64::MAX {
            u64::MAX
        } else {
            swap_only.limit.saturating_add(usage.limit)
        },
        // The peak of memory plus swap cannot be derived from the two peaks.
        max: 0,
        failcnt: 0,
    };
    memory.usage = usage;
    Ok(memory)
}

/// `pids.current` and `pids.max` (either version); `None` without the controller. No
/// limit reads as 0, as runc reports it.
fn read_pids(dir: &Path) -> Result<Option<Pids>> {
    let Some(current) = read_value(dir, "pids.current")? else {
        return Ok(None);
    };
    let limit = match read_value(dir, "pids.max")? {
        Some(u64::MAX) | None => 0,
        Some(limit) => limit,
    };
    Ok(Some(Pids { current, limit }))
}

/// The number of processes listed in `dir/cgroup.procs`.
fn count_procs(dir: &Path) -> Result<u64> {
    let text = read_if_present(dir, PROCS)?.unwrap_or_default();
    Ok(text.lines().filter(|l| !l.trim().is_empty()).count() as u64)
}

/// A cgroup v1 blkio table: `MAJOR:MINOR [OP] VALUE` lines, and a `Total` line that is
/// skipped. Empty if the file is absent.
fn v1_blkio_table(dir: &Path, file: &str) -> Result<Vec<BlkioEntry>> {
    let Some(text) = read_if_present(dir, file)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split([' ', ':']).filter(|f| !f.is_empty()).collect();
        if fields.len() == 2 && fields[0] == "Total" {
            continue;
        }
        let number = |s: &str| s.parse::<u64>().ok();
        let entry = match fields.as_slice() {
            [major, minor, value] => Some((major, minor, "", value)),
            [major, minor, op, value] => Some((major, minor, *op, value)),
            _ => None,
        }
        .and_then(|(major, minor, op, value)| {
            Some(BlkioEntry {
                major: number(major)?,
                minor: number(minor)?,
                op: op.to_string(),
                value: number(value)?,
            })
        });
        out.push(entry.ok_or_else(|| parse_error(dir, file, line))?);
    }
    Ok(out)
}

/// Which field of [`Blkio`] a v1 file fills.
type BlkioField = fn(&mut Blkio) -> &mut Vec<BlkioEntry>;

/// The v1 blkio file groups, in the order runc tries them: BFQ with debug statistics,
/// BFQ, CFQ, then the throttling counters (recursive, then not).
const V1_BLKIO_GROUPS: &[&[(&str, BlkioField)]] = &[
    &[
        ("blkio.bfq.sectors_recursive", |b| &mut b.sectors_recursive),
        ("blkio.bfq.io_service_time_recursive", |b| {
            &mut b.io_service_time_recursive
        }),
        ("blkio.bfq.io_wait_time_recursive", |b| {
            &mut b.io_wait_time_recursive
        }),
        ("blkio.bfq.io_merged_recursive", |b| {
            &mut b.io_merged_recursive
        }),
        ("blkio.bfq.io_queued_recursive", |b| {
            &mut b.io_queued_recursive
        }),
        ("blkio.bfq.time_recursive", |b| &mut b.io_time_recursive),
        ("blkio.bfq.io_serviced_recursive", |b| {
            &mut b.io_serviced_recursive
        }),
        ("blkio.bfq.io_service_bytes_recursive", |b| {
            &mut b.io_service_bytes_recursive
        }),
    ],
    &[
        ("blkio.bfq.io_serviced_recursive", |b| {
            &mut b.io_serviced_recursive
        }),
        ("blkio.bfq.io_service_bytes_recursive", |b| {
            &mut b.io_service_bytes_recursive
        }),
    ],
    &[
        ("blkio.sectors_recursive", |b| &mut b.sectors_recursive),
        ("blkio.io_service_time_recursive", |b| {
            &mut b.io_service_time_recursive
        }),
        ("blkio.io_wait_time_recursive", |b| {
            &mut b.io_wait_time_recursive
        }),
        ("blkio.io_merged_recursive", |b| &mut b.io_merged_recursive),
        ("blkio.io_queued_recursive", |b| &mut b.io_queued_recursive),
        ("blkio.time_recursive", |b| &mut b.io_time_recursive),
        ("blkio.io_serviced_recursive", |b| {
            &mut b.io_serviced_recursive
        }),
        ("blkio.io_service_bytes_recursive", |b| {
            &mut b.io_service_bytes_recursive
        }),
    ],
    &[
        ("blkio.throttle.io_serviced_recursive", |b| {
            &mut b.io_serviced_recursive
        }),
        ("blkio.throttle.io_service_bytes_recursive", |b| {
            &mut b.io_service_bytes_recursive
        }),
    ],
    &[
        ("blkio.throttle.io_serviced", |b| {
            &mut b.io_serviced_recursive
        }),
        ("blkio.throttle.io_service_bytes", |b| {
            &mut b.io_service_bytes_recursive
        }),
    ],
];

/// cgroup v1 `blkio`: the first group of files whose first file has entries; within it,
/// files are read until one has none.
fn v1_blkio(dir: &Path) -> Result<Blkio> {
    let mut blkio = Blkio::default();
    for group in V1_BLKIO_GROUPS {
        for (i, (file, field)) in group.iter().enumerate() {
            let entries = v1_blkio_table(dir, file)?;
            if entries.is_empty() {
                if i == 0 {
                    break;
                }
                return Ok(blkio);
            }
            *field(&mut blkio) = entries;
            if i == group.len() - 1 {
                return Ok(blkio);
            }
        }
    }
    Ok(blkio)
}

/// cgroup v2 `io.stat`: `MAJOR:MINOR key=value ...` lines; bytes and operations read and
/// written go to cgroup v1's service-bytes and serviced tables.
fn v2_io(dir: &Path) -> Result<Blkio> {
    const FILE: &str = "io.stat";
    let mut blkio = Blkio::default();
    let Some(text) = read_if_present(dir, FILE)? else {
        return Ok(blkio);
    };
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(device) = words.next() else {
            continue;
        };
        let (major, minor) = device
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            .ok_or_else(|| parse_error(dir, FILE, line))?;
        for word in words {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            let (table, op) = match key {
                "rbytes" => (&mut blkio.io_service_bytes_recursive, "Read"),
                "wbytes" => (&mut blkio.io_service_bytes_recursive, "Write"),
                "rios" => (&mut blkio.io_serviced_recursive, "Read"),
                "wios" => (&mut blkio.io_serviced_recursive, "Write"),
                _ => continue,
            };
            let value = value.parse().map_err(|_| parse_error(dir, FILE, line))?;
            table.push(BlkioEntry {
                major,
                minor,
                op: op.to_string(),
                value,
            });
        }
    }
    Ok(blkio)
}

/// `hugetlb` of either version for each page size the host has. A size whose files are
/// absent is left out.
fn read_hugetlb(target: Target<'_>, sizes: &[String]) -> Result<BTreeMap<String, Hugetlb>> {
    let mut out = BTreeMap::new();
    for size in sizes {
        let prefix = format!("hugetlb.{size}");
        let entry = match target {
            Target::V1(dir) => {
                // The reservation counters (Linux 5.7) include pages reserved but not
                // yet faulted in, as runc reports them.
                let base = if files::exists(dir, &format!("{prefix}.rsvd.usage_in_bytes")) {
                    format!("{prefix}.rsvd")
                } else {
                    prefix.clone()
                };
                let Some(usage) = read_value(dir, &format!("{base}.usage_in_bytes"))? else {
                    continue;
                };
                Hugetlb {
                    usage,
                    max: read_value(dir, &format!("{base}.max_usage_in_bytes"))?.unwrap_or(0),
                    failcnt: read_value(dir, &format!("{base}.failcnt"))?.unwrap_or(0),
                }
            }
            Target::V2(dir) => {
                let usage = match read_value(dir, &format!("{prefix}.rsvd.current"))? {
                    Some(usage) => usage,
                    None => match read_value(dir, &format!("{prefix}.current"))? {
                        Some(usage) => usage,
                        None => continue,
                    },
                };
                let events = read_keyed(dir, &format!("{prefix}.events"))?.unwrap_or_default();
                Hugetlb {
                    usage,
                    max: 0,
                    failcnt: keyed(&events, "max"),
                }
            }
        };
        out.insert(size.clone(), entry);
    }
    Ok(out)
}

/// Parses one line of a pressure file after its `some`/`full` word.
fn parse_psi_line<'a>(words: impl Iterator<Item = &'a str>) -> Option<PsiData> {
    let mut data = PsiData::default();
    for word in words {
        let (key, value) = word.split_once('=')?;
        match key {
            "avg10" => data.avg10 = value.parse().ok()?,
            "avg60" => data.avg60 = value.parse().ok()?,
            "avg300" => data.avg300 = value.parse().ok()?,
            "total" => data.total = value.parse().ok()?,
            _ => {}
        }
    }
    Some(data)
}

/// A cgroup v2 pressure file (`cpu.pressure`); `None` where the kernel has no PSI.
fn read_psi(dir: &Path, file: &str) -> Result<Option<PsiStats>> {
    let text = match read_if_present(dir, file) {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(None),
        // PSI compiled in but switched off (psi=0) reads as EOPNOTSUPP.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut stats = PsiStats::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let slot = match words.next() {
            Some("some") => &mut stats.some,
            Some("full") => &mut stats.full,
            _ => continue,
        };
        *slot = parse_psi_line(words).ok_or_else(|| parse_error(dir, file, line))?;
    }
    Ok(Some(stats))
}

impl Manager {
    /// One sample of the container's resource usage, read from every hierarchy that
    /// carries a controller for it. Files the kernel does not provide are skipped; a file
    /// that cannot be read or parsed is an error naming it. Fails if the container's
    /// cgroup no longer exists.
    pub fn stats(&self) -> Result<Stats> {
        let Some(main) = self.procs_dir() else {
            return Err(CgroupError::NoCgroupMounts);
        };
        if let Err(source) = std::fs::metadata(main) {
            return Err(CgroupError::ReadDir {
                path: main.to_path_buf(),
                source,
            });
        }
        let unified = self.unified.as_ref().map(|u| u.path.as_path());
        // In pure cgroup v2 mode, as runc does then: pressure files, and a process count
        // even without the pids controller.
        let v2_only = unified.filter(|_| self.mode == CgroupMode::Unified);
        let mut stats = Stats::default();

        let (cpuacct, cpu) = (self.v1_dir("cpuacct"), self.v1_dir("cpu"));
        if let Some(dir) = cpuacct {
            stats.cpu.usage = v1_cpu_usage(dir)?;
        }
        if let Some(dir) = cpu {
            stats.cpu.throttling = v1_throttling(dir)?;
        }
        // cgroup2's cpu.stat has the usage even where the cpu controller is not enabled.
        if let (Some(dir), true) = (unified, cpuacct.is_none() || cpu.is_none()) {
            let (usage, throttling) = v2_cpu(dir)?;
            if cpuacct.is_none() {
                stats.cpu.usage = usage;
            }
            if cpu.is_none() {
                stats.cpu.throttling = throttling;
            }
        }
        if let Some(dir) = self.v1_dir("cpuset") {
            stats.cpuset = v1_cpuset(dir)?;
        }

        match self.target("memory", Some("memory")) {
            Some(Target::V1(dir)) => stats.memory = v1_memory(dir)?,
            Some(Target::V2(dir)) => stats.memory = v2_memory(dir)?,
            None => {}
        }

        match self.target("pids", Some("pids")) {
            Some(Target::V1(dir) | Target::V2(dir)) => {
                stats.pids = read_pids(dir)?.unwrap_or_default();
            }
            None => {}
        }
        if let Some(dir) = v2_only.filter(|d| !files::exists(d, "pids.current")) {
            stats.pids.current = count_procs(dir)?;
        }

        match self.target("blkio", Some("io")) {
            Some(Target::V1(dir)) => stats.blkio = v1_blkio(dir)?,
            Some(Target::V2(dir)) => stats.blkio = v2_io(dir)?,
            None => {}
        }

        if let Some(target) = self.target("hugetlb", Some("hugetlb")) {
            let sizes = supported_page_sizes(&self.host_path("/sys/kernel/mm/hugepages"))
                .unwrap_or_default();
            stats.hugetlb = read_hugetlb(target, &sizes)?;
        }

        if let Some(dir) = v2_only {
            stats.cpu.psi = read_psi(dir, "cpu.pressure")?;
            stats.memory.psi = read_psi(dir, "memory.pressure")?;
            stats.blkio.psi = read_psi(dir, "io.pressure")?;
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_as_cgroup_files_write_them() {
        assert_eq!(parse_value("42\n"), Some(42));
        assert_eq!(parse_value("max"), Some(u64::MAX));
        assert_eq!(parse_value("-1"), Some(0));
        assert_eq!(parse_value("x"), None);
    }

    #[test]
    fn id_lists_expand_ranges() {
        assert_eq!(parse_id_list("0-2,5\n"), Some(vec![0, 1, 2, 5]));
        assert_eq!(parse_id_list(""), Some(vec![]));
        assert_eq!(parse_id_list("3-1"), None);
    }

    #[test]
    fn ticks_convert_to_nanoseconds() {
        assert_eq!(ticks_to_ns(150, 100), 1_500_000_000);
        assert_eq!(ticks_to_ns(u64::MAX, 1), u64::MAX);
    }

    #[test]
    fn whole_floats_are_written_as_go_writes_them() {
        let data = PsiData {
            avg10: 0.0,
            avg60: 1.25,
            avg300: 3.0,
            total: 7,
        };
        assert_eq!(
            serde_json::to_string(&data).unwrap(),
            r#"{"avg10":0,"avg60":1.25,"avg300":3,"total":7}"#
        );
    }

    #[test]
    fn empty_stats_have_runcs_layout() {
        let json = serde_json::to_string(&Stats::default()).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"cpu":{},"cpuset":{"cpu_exclusive":0,"mem_hardwall":0,"mem_exclusive":0,"#,
                r#""memory_migrate":0,"memory_spread_page":0,"memory_spread_slab":0,"#,
                r#""memory_pressure":0,"sched_load_balance":0,"sched_relax_domain_level":0},"#,
                r#""memory":{},"pids":{},"blkio":{},"hugetlb":{},"intel_rdt":{},"#,
                r#""network_interfaces":null}"#
            )
        );
    }

    #[test]
    fn stats_read_back_from_json() {
        let mut stats = Stats::default();
        stats.memory.kernel_tcp.limit = 5;
        stats.blkio.io_queued_recursive.push(BlkioEntry {
            major: 8,
            op: "Read".into(),
            ..BlkioEntry::default()
        });
        let json = serde_json::to_string(&stats).unwrap();
        assert!(
            json.contains(r#""kernelTCP":{"limit":5,"failcnt":0}"#),
            "{json}"
        );
        assert!(
            json.contains(r#""ioQueueRecursive":[{"major":8,"op":"Read"}]"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Stats>(&json).unwrap(), stats);
    }

    #[test]
    fn malformed_keyed_line_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("cpu.stat"), "usage_usec 1\nbogus\n").unwrap();
        let err = v2_cpu(tmp.path()).unwrap_err();
        assert!(
            matches!(&err, CgroupError::Parse { path, content }
                if path.ends_with("cpu.stat") && content == "bogus"),
            "{err}"
        );
    }

    #[test]
    fn unreadable_file_is_an_error_not_a_zero() {
        let tmp = tempfile::tempdir().unwrap();
        // A directory where a file is expected: read fails with EISDIR.
        std::fs::create_dir(tmp.path().join("memory.stat")).unwrap();
        let err = v1_memory(tmp.path()).unwrap_err();
        assert!(matches!(err, CgroupError::Read { .. }), "{err}");
        assert_eq!(err.raw_os_error(), Some(libc::EISDIR));
    }
}
