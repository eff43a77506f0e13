//! Writing resources to cgroup v1 controllers, the v1 freezer, and the cpuset set-up
//! a new v1 cgroup needs.

use std::fs;
use std::io;
use std::path::Path;
use std::time::Instant;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxNetwork};

use crate::devices::{v1_writes, DeviceRule};
use crate::error::{invalid, CgroupError, Result};
use crate::files::{self, write_in_order_deferring_einval};
use crate::manager::wait_until;
use crate::validate::{non_empty, nonzero_i64, nonzero_u16, nonzero_u64};

const LIMIT: &str = "memory.limit_in_bytes";
const MEMSW: &str = "memory.memsw.limit_in_bytes";

/// Fails with [`CgroupError::MissingFile`] unless `dir/file` exists.
fn need_file(dir: &Path, file: &str, field: &str, hint: &'static str) -> Result<()> {
    if files::exists(dir, file) {
        Ok(())
    } else {
        Err(CgroupError::MissingFile {
            field: field.to_string(),
            path: dir.join(file),
            hint,
        })
    }
}

/// The writes of `memory.limit_in_bytes` and `memory.memsw.limit_in_bytes`, in an order
/// the kernel accepts: it insists that memsw >= limit at every moment, so when the
/// limit goes up memsw is written first, and when it goes down the limit is.
/// `current_limit` is asked only when both are written. A limit of -1 with no swap
/// value means memsw -1 too, as in runc.
pub(crate) fn memory_limit_writes(
    limit: Option<i64>,
    swap: Option<i64>,
    memsw_exists: bool,
    current_limit: impl FnOnce() -> Result<Option<u64>>,
) -> Result<Vec<(&'static str, String)>> {
    let swap = match (limit, swap) {
        (Some(-1), None) => Some(-1),
        (_, swap) => swap,
    };
    // Without swap accounting there is no memsw file; "unlimited" needs no write.
    let swap = swap.filter(|s| memsw_exists || *s != -1);
    Ok(match (limit, swap) {
        (Some(l), Some(s)) => {
            let raising =
                l == -1 || current_limit()?.is_some_and(|current| current < l.unsigned_abs());
            if s == -1 || raising {
                vec![(MEMSW, s.to_string()), (LIMIT, l.to_string())]
            } else {
                vec![(LIMIT, l.to_string()), (MEMSW, s.to_string())]
            }
        }
        (Some(l), None) => vec![(LIMIT, l.to_string())],
        (None, Some(s)) => vec![(MEMSW, s.to_string())],
        (None, None) => Vec::new(),
    })
}

/// Fails if a new memory limit is below what the cgroup uses now
/// (`memory.checkBeforeUpdate`).
pub(crate) fn check_usage(dir: &Path, file: &str, limit: Option<i64>) -> Result<()> {
    if let Some(limit) = limit.filter(|l| *l > 0) {
        if let Some(usage) = files::read_number(dir, file)? {
            if usage > limit.unsigned_abs() {
                return Err(invalid(
                    "memory.limit",
                    format!("{limit} is below the current usage of {usage} bytes"),
                ));
            }
        }
    }
    Ok(())
}

/// Writes a kernel-memory limit if the kernel still has the file; kernels that keep
/// the file but no longer support the limit are ignored, as runc does.
fn write_kernel_limit(dir: &Path, file: &str, value: i64) -> Result<()> {
    if !files::exists(dir, file) {
        return Ok(());
    }
    let text = value.to_string();
    match files::try_write(&dir.join(file), &text) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(524)) => Ok(()),
        Err(e) => Err(files::write_error(dir.join(file), &text, e)),
    }
}

/// The `memory` controller.
#[allow(deprecated)] // `kernel` is deprecated in the spec but still honoured on v1
pub(crate) fn memory(dir: &Path, m: &LinuxMemory) -> Result<()> {
    let limit = nonzero_i64(m.limit());
    if m.check_before_update() == Some(true) {
        check_usage(dir, "memory.usage_in_bytes", limit)?;
    }
    let writes = memory_limit_writes(
        limit,
        nonzero_i64(m.swap()),
        files::exists(dir, MEMSW),
        || files::read_number(dir, LIMIT),
    )?;
    for (file, value) in writes {
        files::write(dir, file, &value)?;
    }
    if let Some(reservation) = nonzero_i64(m.reservation()) {
        files::write(dir, "memory.soft_limit_in_bytes", &reservation.to_string())?;
    }
    if let Some(kernel) = nonzero_i64(m.kernel()) {
        write_kernel_limit(dir, "memory.kmem.limit_in_bytes", kernel)?;
    }
    if let Some(kernel_tcp) = nonzero_i64(m.kernel_tcp()) {
        write_kernel_limit(dir, "memory.kmem.tcp.limit_in_bytes", kernel_tcp)?;
    }
    if let Some(disable) = m.disable_oom_killer() {
        files::write(dir, "memory.oom_control", if disable { "1" } else { "0" })?;
    }
    if let Some(swappiness) = m.swappiness() {
        files::write(dir, "memory.swappiness", &swappiness.to_string())?;
    }
    if let Some(hierarchy) = m.use_hierarchy() {
        files::write(
            dir,
            "memory.use_hierarchy",
            if hierarchy { "1" } else { "0" },
        )?;
    }
    Ok(())
}

/// The `cpu` controller.
pub(crate) fn cpu(dir: &Path, c: &LinuxCpu) -> Result<()> {
    if let Some(shares) = nonzero_u64(c.shares()) {
        files::write(dir, "cpu.shares", &shares.to_string())?;
        let got = files::read_number(dir, "cpu.shares")?;
        if got != Some(shares) {
            return Err(invalid(
                "cpu.shares",
                format!(
                    "the kernel set cpu.shares to {} instead of {shares}",
                    got.map_or_else(|| "max".to_string(), |g| g.to_string())
                ),
            ));
        }
    }
    // Period, burst and quota constrain each other; a write the kernel refuses with
    // EINVAL because of the old value of another is retried after the others.
    let mut bandwidth = Vec::new();
    if let Some(period) = nonzero_u64(c.period()) {
        bandwidth.push(("cpu.cfs_period_us", period.to_string()));
    }
    if let Some(burst) = c.burst() {
        need_file(
            dir,
            "cpu.cfs_burst_us",
            "cpu.burst",
            " (Linux 5.14 or later)",
        )?;
        bandwidth.push(("cpu.cfs_burst_us", burst.to_string()));
    }
    if let Some(quota) = nonzero_i64(c.quota()) {
        bandwidth.push(("cpu.cfs_quota_us", quota.to_string()));
    }
    write_in_order_deferring_einval(&bandwidth, |file, value| files::write(dir, file, value))?;

    let mut realtime = Vec::new();
    if let Some(period) = nonzero_u64(c.realtime_period()) {
        realtime.push(("cpu.rt_period_us", period.to_string()));
    }
    if let Some(runtime) = nonzero_i64(c.realtime_runtime()) {
        realtime.push(("cpu.rt_runtime_us", runtime.to_string()));
    }
    if !realtime.is_empty() {
        need_file(
            dir,
            "cpu.rt_runtime_us",
            "cpu.realtimeRuntime",
            " (kernel built without CONFIG_RT_GROUP_SCHED)",
        )?;
    }
    write_in_order_deferring_einval(&realtime, |file, value| files::write(dir, file, value))?;

    if let Some(idle) = c.idle() {
        need_file(dir, "cpu.idle", "cpu.idle", " (Linux 5.15 or later)")?;
        files::write(dir, "cpu.idle", &idle.to_string())?;
    }
    Ok(())
}

/// The `cpuset` controller (the same files exist in v2).
pub(crate) fn cpuset_writes(c: &LinuxCpu) -> Vec<(&'static str, String)> {
    let mut writes = Vec::new();
    if let Some(cpus) = non_empty(c.cpus()) {
        writes.push(("cpuset.cpus", cpus.to_string()));
    }
    if let Some(mems) = non_empty(c.mems()) {
        writes.push(("cpuset.mems", mems.to_string()));
    }
    writes
}

/// `pids.max` for a spec limit: zero or negative is unlimited.
pub(crate) fn pids_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_string()
    }
}

/// The `blkio` controller. With the bfq scheduler (no cfq), the weights go to the
/// `blkio.bfq.*` files.
pub(crate) fn block_io(dir: &Path, b: &LinuxBlockIo) -> Result<()> {
    let weight_file = |plain: &'static str, bfq: &'static str, field: &str| {
        if files::exists(dir, plain) {
            Ok(plain)
        } else if files::exists(dir, bfq) {
            Ok(bfq)
        } else {
            Err(CgroupError::MissingFile {
                field: field.to_string(),
                path: dir.join(plain),
                hint: "; neither cfq (blkio.weight) nor bfq (blkio.bfq.weight) is in use",
            })
        }
    };
    if let Some(weight) = nonzero_u16(b.weight()) {
        let file = weight_file("blkio.weight", "blkio.bfq.weight", "blockIO.weight")?;
        files::write(dir, file, &weight.to_string())?;
    }
    if let Some(leaf) = nonzero_u16(b.leaf_weight()) {
        need_file(
            dir,
            "blkio.leaf_weight",
            "blockIO.leafWeight",
            " (cfq only)",
        )?;
        files::write(dir, "blkio.leaf_weight", &leaf.to_string())?;
    }
    for wd in b.weight_device().iter().flatten() {
        let device = format!("{}:{}", wd.major(), wd.minor());
        if let Some(weight) = nonzero_u16(wd.weight()) {
            let file = weight_file(
                "blkio.weight_device",
                "blkio.bfq.weight_device",
                "blockIO.weightDevice",
            )?;
            files::write(dir, file, &format!("{device} {weight}"))?;
        }
        if let Some(leaf) = nonzero_u16(wd.leaf_weight()) {
            need_file(
                dir,
                "blkio.leaf_weight_device",
                "blockIO.weightDevice.leafWeight",
                " (cfq only)",
            )?;
            files::write(dir, "blkio.leaf_weight_device", &format!("{device} {leaf}"))?;
        }
    }
    for (file, list) in [
        (
            "blkio.throttle.read_bps_device",
            b.throttle_read_bps_device(),
        ),
        (
            "blkio.throttle.write_bps_device",
            b.throttle_write_bps_device(),
        ),
        (
            "blkio.throttle.read_iops_device",
            b.throttle_read_iops_device(),
        ),
        (
            "blkio.throttle.write_iops_device",
            b.throttle_write_iops_device(),
        ),
    ] {
        for td in list.iter().flatten() {
            let line = format!("{}:{} {}", td.major(), td.minor(), td.rate());
            files::write(dir, file, &line)?;
        }
    }
    Ok(())
}

/// The `hugetlb` controller; reservation limits too where the kernel has them.
pub(crate) fn hugetlb(dir: &Path, limits: &[LinuxHugepageLimit]) -> Result<()> {
    for limit in limits {
        let size = limit.page_size();
        let value = if limit.limit() < 0 {
            "-1".to_string()
        } else {
            limit.limit().to_string()
        };
        files::write(dir, &format!("hugetlb.{size}.limit_in_bytes"), &value)?;
        let reserved = format!("hugetlb.{size}.rsvd.limit_in_bytes");
        if files::exists(dir, &reserved) {
            files::write(dir, &reserved, &value)?;
        }
    }
    Ok(())
}

/// `net_cls.classid`.
pub(crate) fn net_cls(dir: &Path, n: &LinuxNetwork) -> Result<()> {
    match n.class_id() {
        Some(class_id) => files::write(dir, "net_cls.classid", &class_id.to_string()),
        None => Ok(()),
    }
}

/// `net_prio.ifpriomap`, one write per interface.
pub(crate) fn net_prio(dir: &Path, n: &LinuxNetwork) -> Result<()> {
    for p in n.priorities().iter().flatten() {
        files::write(
            dir,
            "net_prio.ifpriomap",
            &format!("{} {}", p.name(), p.priority()),
        )?;
    }
    Ok(())
}

/// The `devices` controller: deny all, then the rules in order.
pub(crate) fn devices(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    for (file, value) in v1_writes(rules) {
        files::write(dir, file, &value)?;
    }
    Ok(())
}

/// Reads `dir/file`, `None` if it does not exist.
fn read_optional(dir: &Path, file: &str) -> Result<Option<String>> {
    let path = dir.join(file);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read { path, source }),
    }
}

/// Gives every cgroup between `mount_point` and `leaf` whose `cpuset.cpus` or
/// `cpuset.mems` is empty its parent's value; the kernel refuses tasks otherwise.
pub(crate) fn copy_cpuset_from_parents(mount_point: &Path, leaf: &Path) -> Result<()> {
    let Ok(relative) = leaf.strip_prefix(mount_point) else {
        return Ok(());
    };
    let mut parent = mount_point.to_path_buf();
    for component in relative.components() {
        let dir = parent.join(component);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if read_optional(&dir, file)?.is_some_and(|v| v.is_empty()) {
                let inherited = files::read(&parent, file)?;
                files::write(&dir, file, &inherited)?;
            }
        }
        parent = dir;
    }
    Ok(())
}

const FREEZER_STATE: &str = "freezer.state";

/// Writes `FROZEN` or `THAWED` and waits until `freezer.state` shows it; the write is
/// repeated while the kernel reports `FREEZING`, which makes it try again. On timeout
/// the cgroup is left as it is (call thaw to undo a partial freeze).
pub(crate) fn set_frozen(dir: &Path, frozen: bool, deadline: Instant) -> Result<()> {
    let wanted = if frozen { "FROZEN" } else { "THAWED" };
    let mut last = String::new();
    let reached = wait_until(deadline, || {
        files::write(dir, FREEZER_STATE, wanted)?;
        last = files::read(dir, FREEZER_STATE)?;
        Ok(last == wanted)
    })?;
    if reached {
        Ok(())
    } else {
        Err(CgroupError::FreezeTimeout {
            path: dir.to_path_buf(),
            wanted: if frozen { "frozen" } else { "thawed" },
            last,
        })
    }
}

/// Whether the cgroup itself is frozen (a frozen parent alone does not count).
pub(crate) fn is_frozen(dir: &Path) -> Result<bool> {
    let state = files::read(dir, FREEZER_STATE)?;
    let self_freezing = read_optional(dir, "freezer.self_freezing")?;
    Ok(state == "FROZEN" && self_freezing.as_deref() != Some("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(
        limit: Option<i64>,
        swap: Option<i64>,
        memsw: bool,
        current: Option<u64>,
    ) -> Vec<(&'static str, String)> {
        memory_limit_writes(limit, swap, memsw, || Ok(current)).unwrap()
    }

    fn pairs<'a>(list: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        list.iter().map(|(f, v)| (*f, v.as_str())).collect()
    }

    #[test]
    fn raising_limit_writes_memsw_first() {
        let got = writes(Some(200), Some(400), true, Some(100));
        assert_eq!(pairs(&got), [(MEMSW, "400"), (LIMIT, "200")]);
    }

    #[test]
    fn lowering_limit_writes_limit_first() {
        let got = writes(Some(100), Some(150), true, Some(200));
        assert_eq!(pairs(&got), [(LIMIT, "100"), (MEMSW, "150")]);
    }

    #[test]
    fn first_limit_on_unlimited_cgroup_writes_limit_first() {
        // A fresh cgroup reads back the "unlimited" page-rounded maximum.
        let got = writes(Some(100), Some(150), true, Some(9_223_372_036_854_771_712));
        assert_eq!(pairs(&got), [(LIMIT, "100"), (MEMSW, "150")]);
    }

    #[test]
    fn unlimited_swap_goes_first() {
        let got = writes(Some(100), Some(-1), true, Some(50));
        assert_eq!(pairs(&got), [(MEMSW, "-1"), (LIMIT, "100")]);
    }

    #[test]
    fn unlimited_limit_implies_unlimited_memsw() {
        let got = writes(Some(-1), None, true, Some(50));
        assert_eq!(pairs(&got), [(MEMSW, "-1"), (LIMIT, "-1")]);
        let without_accounting = writes(Some(-1), None, false, Some(50));
        assert_eq!(pairs(&without_accounting), [(LIMIT, "-1")]);
    }

    #[test]
    fn current_limit_is_read_only_when_both_are_written() {
        let got = memory_limit_writes(Some(100), None, true, || panic!("read")).unwrap();
        assert_eq!(pairs(&got), [(LIMIT, "100")]);
    }

    #[test]
    fn pids_zero_or_negative_is_max() {
        assert_eq!(pids_max(0), "max");
        assert_eq!(pids_max(-1), "max");
        assert_eq!(pids_max(64), "64");
    }

    #[test]
    fn cpuset_is_copied_into_empty_children() {
        let tmp = tempfile::tempdir().unwrap();
        let mount = tmp.path();
        let leaf = mount.join("a/b");
        fs::create_dir_all(&leaf).unwrap();
        fs::write(mount.join("cpuset.cpus"), "0-3\n").unwrap();
        fs::write(mount.join("cpuset.mems"), "0\n").unwrap();
        fs::write(mount.join("a/cpuset.cpus"), "1\n").unwrap();
        fs::write(mount.join("a/cpuset.mems"), "\n").unwrap();
        fs::write(leaf.join("cpuset.cpus"), "").unwrap();
        fs::write(leaf.join("cpuset.mems"), "").unwrap();

        copy_cpuset_from_parents(mount, &leaf).unwrap();

        assert_eq!(
            fs::read_to_string(mount.join("a/cpuset.cpus")).unwrap(),
            "1\n"
        );
        assert_eq!(
            fs::read_to_string(mount.join("a/cpuset.mems")).unwrap(),
            "0"
        );
        assert_eq!(fs::read_to_string(leaf.join("cpuset.cpus")).unwrap(), "1");
        assert_eq!(fs::read_to_string(leaf.join("cpuset.mems")).unwrap(), "0");
    }
}
