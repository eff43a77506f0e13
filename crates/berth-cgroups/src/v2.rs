//! Writing resources to cgroup v2, enabling controllers along the path, and the v2
//! freezer. Also the v1-to-v2 conversions runc and crun use.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::time::Instant;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxHugepageLimit, LinuxMemory};

use crate::devices::{compile, DeviceRule};
use crate::error::{CgroupError, Result};
use crate::files::{self, write_in_order_deferring_einval};
use crate::manager::{read_controllers, wait_until};
use crate::v1::check_usage;
use crate::validate::{nonzero_i64, nonzero_u16, nonzero_u64};

/// Converts v1 `cpu.shares` (2..=262144, default 1024) to v2 `cpu.weight`
/// (1..=10000, default 100): `1 + ((shares - 2) * 9999) / 262142`, so that 2 maps to 1
/// and 262144 to 10000. Zero (unset) stays zero.
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

/// Converts a v1 blkio weight (10..=1000) to v2 `io.weight` (1..=10000):
/// `1 + (weight - 10) * 9999 / 990`, so that 10 maps to 1 and 1000 to 10000. Zero
/// (unset) stays zero.
pub fn io_weight_from_blkio(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    1 + u64::from(weight).saturating_sub(10) * 9999 / 990
}

/// A v2 limit: negative is `max`.
fn max_or(value: i64) -> String {
    if value < 0 {
        "max".to_string()
    } else {
        value.to_string()
    }
}

/// `memory.swap.max` from the spec's memory+swap value, as runc converts it: v2 limits
/// swap alone, so the value is `swap - limit`; `-1` is `max`; a limit of `-1` with no
/// swap value means unlimited swap too.
pub(crate) fn swap_max(limit: Option<i64>, swap: Option<i64>) -> Option<String> {
    match (limit, swap) {
        (Some(-1), None) => Some("max".to_string()),
        (_, None) => None,
        (_, Some(s)) if s < 0 => Some("max".to_string()),
        (Some(l), Some(s)) if l > 0 => Some(s.saturating_sub(l).max(0).to_string()),
        (_, Some(s)) => Some(s.to_string()),
    }
}

/// The error for a failed write of `value` to `dir/file`: if the file is missing
/// because `controller` is not enabled for the cgroup, says so.
fn write_failure(
    dir: &Path,
    controller: &str,
    file: &str,
    value: &str,
    e: io::Error,
) -> CgroupError {
    if e.kind() == io::ErrorKind::NotFound && dir.is_dir() && !controller_enabled(dir, controller) {
        return CgroupError::ControllerNotEnabled {
            controller: controller.to_string(),
            path: dir.to_path_buf(),
        };
    }
    files::write_error(dir.join(file), value, e)
}

fn controller_enabled(dir: &Path, controller: &str) -> bool {
    read_controllers(dir).iter().any(|c| c == controller)
}

/// Writes `dir/file`, a file of `controller`.
pub(crate) fn write(dir: &Path, controller: &str, file: &str, value: &str) -> Result<()> {
    files::try_write(&dir.join(file), value)
        .map_err(|e| write_failure(dir, controller, file, value, e))
}

/// Enables `controllers` in `cgroup.subtree_control` of every cgroup from `mount_point`
/// down to the parent of `leaf`, skipping those an ancestor does not offer or already
/// enables. A controller the kernel refuses (for example because the ancestor holds
/// processes itself) is left out; writes that need it fail later with
/// [`CgroupError::ControllerNotEnabled`].
pub(crate) fn enable_controllers(
    mount_point: &Path,
    leaf: &Path,
    controllers: &[String],
) -> Result<()> {
    let Ok(relative) = leaf.strip_prefix(mount_point) else {
        return Ok(());
    };
    let mut dir = mount_point.to_path_buf();
    for component in relative.components() {
        let available = read_controllers(&dir);
        let enabled: Vec<String> = files::read(&dir, "cgroup.subtree_control")
            .map(|t| t.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let wanted: Vec<&String> = controllers
            .iter()
            .filter(|c| available.contains(c) && !enabled.contains(c))
            .collect();
        if !wanted.is_empty() {
            let path = dir.join("cgroup.subtree_control");
            let all: Vec<String> = wanted.iter().map(|c| format!("+{c}")).collect();
            if files::try_write(&path, &all.join(" ")).is_err() {
                for one in &all {
                    // Deliberately ignored: see the function's documentation.
                    let _refused = files::try_write(&path, one);
                }
            }
        }
        dir.push(component);
    }
    Ok(())
}

/// The `memory` controller. Swappiness cannot be set (refused by validation);
/// `disableOOMKiller`, the kernel-memory limits and `useHierarchy` have no v2
/// counterpart and are ignored, as in runc.
pub(crate) fn memory(dir: &Path, m: &LinuxMemory) -> Result<()> {
    let limit = nonzero_i64(m.limit());
    if m.check_before_update() == Some(true) {
        check_usage(dir, "memory.current", limit)?;
    }
    if let Some(value) = swap_max(limit, nonzero_i64(m.swap())) {
        let file = "memory.swap.max";
        match files::try_write(&dir.join(file), &value) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && controller_enabled(dir, "memory") => {
                // Swap accounting is off: "no limit" and "no swap" need no file.
                if value != "max" && value != "0" {
                    return Err(CgroupError::MissingFile {
                        field: "memory.swap".to_string(),
                        path: dir.join(file),
                        hint: "; swap accounting is off (boot with swapaccount=1)",
                    });
                }
            }
            Err(e) => return Err(write_failure(dir, "memory", file, &value, e)),
        }
    }
    if let Some(limit) = limit {
        write(dir, "memory", "memory.max", &max_or(limit))?;
    }
    if let Some(reservation) = nonzero_i64(m.reservation()) {
        write(dir, "memory", "memory.low", &max_or(reservation))?;
    }
    Ok(())
}

/// The value for `cpu.max`, or `None` if neither quota nor period is set. When only
/// the period is given, the current quota is kept (`current_quota` is read then).
pub(crate) fn cpu_max(
    quota: Option<i64>,
    period: Option<u64>,
    current_quota: impl FnOnce() -> String,
) -> Option<String> {
    let quota = match (quota, period) {
        (None, None) => return None,
        (Some(q), _) if q > 0 => q.to_string(),
        (Some(_), _) => "max".to_string(),
        (None, Some(_)) => current_quota(),
    };
    Some(match period {
        Some(p) => format!("{quota} {p}"),
        None => quota,
    })
}

/// The `cpu` controller. Real-time settings are refused by validation.
pub(crate) fn cpu(dir: &Path, c: &LinuxCpu) -> Result<()> {
    if let Some(shares) = nonzero_u64(c.shares()) {
        write(
            dir,
            "cpu",
            "cpu.weight",
            &cpu_shares_to_weight(shares).to_string(),
        )?;
    }
    // The kernel wants burst <= quota at every moment: burst first, and a write refused
    // because of the other's old value is retried after it.
    let mut bandwidth = Vec::new();
    if let Some(burst) = c.burst() {
        bandwidth.push(("cpu.max.burst", burst.to_string()));
    }
    let current_quota = || {
        files::read(dir, "cpu.max")
            .ok()
            .and_then(|t| t.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| "max".to_string())
    };
    if let Some(value) = cpu_max(
        nonzero_i64(c.quota()),
        nonzero_u64(c.period()),
        current_quota,
    ) {
        bandwidth.push(("cpu.max", value));
    }
    write_in_order_deferring_einval(&bandwidth, |file, value| write(dir, "cpu", file, value))?;
    if let Some(idle) = c.idle() {
        write(dir, "cpu", "cpu.idle", &idle.to_string())?;
    }
    Ok(())
}

/// The `io.max` lines: one per device, with the keys the spec sets (`0` is `max`).
pub(crate) fn io_max_lines(b: &LinuxBlockIo) -> Vec<String> {
    let mut devices: Vec<((i64, i64), Vec<String>)> = Vec::new();
    for (key, list) in [
        ("rbps", b.throttle_read_bps_device()),
        ("wbps", b.throttle_write_bps_device()),
        ("riops", b.throttle_read_iops_device()),
        ("wiops", b.throttle_write_iops_device()),
    ] {
        for td in list.iter().flatten() {
            let rate = match td.rate() {
                0 => "max".to_string(),
                rate => rate.to_string(),
            };
            let device = (td.major(), td.minor());
            let pair = format!("{key}={rate}");
            match devices.iter_mut().find(|(d, _)| *d == device) {
                Some((_, pairs)) => pairs.push(pair),
                None => devices.push((device, vec![pair])),
            }
        }
    }
    devices
        .into_iter()
        .map(|((major, minor), pairs)| format!("{major}:{minor} {}", pairs.join(" ")))
        .collect()
}

/// The `io` controller. With bfq (`io.bfq.weight` exists) weights are written as given
/// (1..=1000); otherwise to `io.weight`, converted. `leafWeight` has no v2 counterpart
/// and is ignored, as in runc.
pub(crate) fn io(dir: &Path, b: &LinuxBlockIo) -> Result<()> {
    let bfq = files::exists(dir, "io.bfq.weight");
    let (file, convert): (&str, fn(u16) -> u64) = if bfq {
        ("io.bfq.weight", u64::from)
    } else {
        ("io.weight", io_weight_from_blkio)
    };
    if let Some(weight) = nonzero_u16(b.weight()) {
        write(dir, "io", file, &convert(weight).to_string())?;
    }
    for wd in b.weight_device().iter().flatten() {
        if let Some(weight) = nonzero_u16(wd.weight()) {
            let line = format!("{}:{} {}", wd.major(), wd.minor(), convert(weight));
            write(dir, "io", file, &line)?;
        }
    }
    for line in io_max_lines(b) {
        write(dir, "io", "io.max", &line)?;
    }
    Ok(())
}

/// The `hugetlb` controller; reservation limits too where the kernel has them.
pub(crate) fn hugetlb(dir: &Path, limits: &[LinuxHugepageLimit]) -> Result<()> {
    for limit in limits {
        let size = limit.page_size();
        let value = max_or(limit.limit());
        write(dir, "hugetlb", &format!("hugetlb.{size}.max"), &value)?;
        let reserved = format!("hugetlb.{size}.rsvd.max");
        if files::exists(dir, &reserved) {
            write(dir, "hugetlb", &reserved, &value)?;
        }
    }
    Ok(())
}

/// Devices: compile the rules to eBPF and attach the program to the cgroup.
pub(crate) fn devices(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    let program = compile(rules)?;
    crate::bpf::install_device_filter(dir, &program)
}

/// `linux.resources.unified`: each key is a file of the cgroup, written as given, in
/// key order.
pub(crate) fn unified(dir: &Path, values: &HashMap<String, String>) -> Result<()> {
    let mut keys: Vec<&String> = values.keys().collect();
    keys.sort();
    for key in keys {
        let value = &values[key];
        let path = dir.join(key);
        if !path.exists() {
            return Err(CgroupError::UnifiedKeyUnknown {
                key: key.clone(),
                path,
            });
        }
        files::try_write(&path, value).map_err(|source| CgroupError::UnifiedWrite {
            key: key.clone(),
            value: value.clone(),
            path,
            source,
        })?;
    }
    Ok(())
}

/// Whether `cgroup.events` reports the cgroup frozen.
fn events_frozen(dir: &Path) -> Result<bool> {
    let events = files::read(dir, "cgroup.events")?;
    let frozen = events
        .lines()
        .find_map(|line| line.strip_prefix("frozen "))
        .ok_or_else(|| CgroupError::Parse {
            path: dir.join("cgroup.events"),
            content: events.clone(),
        })?;
    Ok(frozen.trim() == "1")
}

/// Writes `cgroup.freeze` and waits until `cgroup.events` shows the new state. On
/// timeout the cgroup is left as it is (call thaw to undo a partial freeze).
pub(crate) fn set_frozen(dir: &Path, frozen: bool, deadline: Instant) -> Result<()> {
    files::write(dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
    let reached = wait_until(deadline, || Ok(events_frozen(dir)? == frozen))?;
    if reached {
        return Ok(());
    }
    Err(CgroupError::FreezeTimeout {
        path: dir.to_path_buf(),
        wanted: if frozen { "frozen" } else { "thawed" },
        last: files::read(dir, "cgroup.events").unwrap_or_default(),
    })
}

/// Whether the cgroup was asked to freeze and is frozen.
pub(crate) fn is_frozen(dir: &Path) -> Result<bool> {
    Ok(files::read(dir, "cgroup.freeze")? == "1" && events_frozen(dir)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_to_weight_matches_runc() {
        assert_eq!(cpu_shares_to_weight(0), 0);
        assert_eq!(cpu_shares_to_weight(2), 1);
        assert_eq!(cpu_shares_to_weight(1024), 39);
        assert_eq!(cpu_shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn blkio_weight_to_io_weight_matches_runc() {
        assert_eq!(io_weight_from_blkio(0), 0);
        assert_eq!(io_weight_from_blkio(10), 1);
        assert_eq!(io_weight_from_blkio(500), 4950);
        assert_eq!(io_weight_from_blkio(1000), 10_000);
    }

    #[test]
    fn swap_conversion() {
        assert_eq!(swap_max(Some(100), Some(300)).as_deref(), Some("200"));
        assert_eq!(swap_max(Some(100), Some(100)).as_deref(), Some("0"));
        assert_eq!(swap_max(Some(100), Some(-1)).as_deref(), Some("max"));
        assert_eq!(swap_max(Some(-1), None).as_deref(), Some("max"));
        assert_eq!(swap_max(Some(100), None), None);
        assert_eq!(swap_max(None, None), None);
    }

    #[test]
    fn cpu_max_values() {
        let keep = || "50000".to_string();
        assert_eq!(
            cpu_max(Some(20000), Some(100_000), keep).as_deref(),
            Some("20000 100000")
        );
        assert_eq!(
            cpu_max(Some(-1), Some(100_000), keep).as_deref(),
            Some("max 100000")
        );
        assert_eq!(cpu_max(Some(20000), None, keep).as_deref(), Some("20000"));
        assert_eq!(
            cpu_max(None, Some(10_000), keep).as_deref(),
            Some("50000 10000")
        );
        assert_eq!(cpu_max(None, None, keep), None);
    }

    #[test]
    fn io_max_merges_keys_per_device() {
        let b: LinuxBlockIo = serde_json::from_str(
            r#"{"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}],
                "throttleWriteBpsDevice": [{"major": 8, "minor": 16, "rate": 5}],
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 0}]}"#,
        )
        .unwrap();
        assert_eq!(io_max_lines(&b), ["8:0 rbps=1000 wiops=max", "8:16 wbps=5"]);
    }
}
