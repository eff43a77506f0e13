//! Per-process attributes of spec 1.1–1.3 that the kernel keeps across fork and exec:
//! `process.scheduler` (sched_setattr), `process.ioPriority` (ioprio_set),
//! `process.execCPUAffinity` (sched_setaffinity), `linux.personality` and
//! `linux.memoryPolicy` (set_mempolicy).
//!
//! Each has a `check_*` run by spec validation before anything is created, so a bad value
//! fails `create` with the field's name, and an `apply_*` run in the process about to exec.

use nix::errno::Errno;
use nix::sched::CpuSet;
use nix::unistd::Pid;
use oci_spec::runtime::{
    IOPriorityClass, LinuxIOPriority, LinuxMemoryPolicy, LinuxPersonality, LinuxPersonalityDomain,
    LinuxSchedulerFlag, LinuxSchedulerPolicy, MemoryPolicyFlagType, MemoryPolicyModeType, Process,
    Scheduler,
};

use crate::error::{Context, Result};

/// Applies the attributes of `process` and the container's personality and memory policy
/// to the calling process, which is about to exec. `execCPUAffinity` is not among them: it
/// is for `exec` only and applied around the cgroup move.
pub fn apply_all(
    process: &Process,
    personality: &Option<LinuxPersonality>,
    memory_policy: &Option<LinuxMemoryPolicy>,
) -> Result<()> {
    if let Some(s) = process.scheduler() {
        apply_scheduler(s)?;
    }
    if let Some(p) = process.io_priority() {
        apply_io_priority(p)?;
    }
    if let Some(p) = personality {
        apply_personality(p)?;
    }
    if let Some(m) = memory_policy {
        apply_memory_policy(m)?;
    }
    Ok(())
}

/// The highest number a list may name: far above any kernel's CPU count or MAX_NUMNODES (the
/// callers check their own, lower limits), and low enough that a range such as
/// `0-99999999999` in a config cannot make the list exhaust memory.
const LIST_MAX: usize = u16::MAX as usize;

/// A list such as `0-3,7`: CPUs or memory nodes, ascending and without repeats.
pub fn parse_list(list: &str) -> std::result::Result<Vec<usize>, String> {
    let mut ranges = Vec::new();
    if list.trim().is_empty() {
        return Ok(Vec::new());
    }
    for item in list.split(',') {
        let item = item.trim();
        let num = |s: &str| {
            s.trim().parse::<usize>().map_err(|_| {
                format!("{list:?} is not a list such as 0-3,7 ({s:?} is not a number)")
            })
        };
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(item)?;
                (n, n)
            }
        };
        if hi < lo {
            return Err(format!(
                "{list:?}: the range {item:?} ends before it starts"
            ));
        }
        if hi > LIST_MAX {
            return Err(format!(
                "{list:?}: {hi} is above {LIST_MAX}, more CPUs or nodes than Linux supports"
            ));
        }
        ranges.push((lo, hi));
    }
    // Each number is added once however the ranges overlap, so the list stays within
    // LIST_MAX + 1 entries.
    ranges.sort_unstable();
    let mut out: Vec<usize> = Vec::new();
    for (lo, hi) in ranges {
        let from = out.last().map_or(lo, |&last| lo.max(last + 1));
        out.extend(from..=hi);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// process.scheduler
// ---------------------------------------------------------------------------------------------

/// The kernel's `struct sched_attr` (SCHED_ATTR_SIZE_VER1, include/uapi/linux/sched/types.h).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

fn policy_number(p: LinuxSchedulerPolicy) -> u32 {
    use LinuxSchedulerPolicy::*;
    match p {
        SchedOther => 0,
        SchedFifo => 1,
        SchedRr => 2,
        SchedBatch => 3,
        SchedIso => 4,
        SchedIdle => 5,
        SchedDeadline => 6,
    }
}

fn flag_bit(f: LinuxSchedulerFlag) -> u64 {
    use LinuxSchedulerFlag::*;
    match f {
        SchedResetOnFork => 0x01,
        SchedFlagReclaim => 0x02,
        SchedFlagDLOverrun => 0x04,
        SchedFlagKeepPolicy => 0x08,
        SchedFlagKeepParams => 0x10,
        SchedFlagUtilClampMin => 0x20,
        SchedFlagUtilClampMax => 0x40,
    }
}

/// The rules of sched_setattr(2), checked before create so the error names the field.
pub fn check_scheduler(s: &Scheduler) -> std::result::Result<(), String> {
    use LinuxSchedulerPolicy::*;
    let policy = *s.policy();
    let prio = s.priority().unwrap_or(0);
    let nice = s.nice().unwrap_or(0);
    let realtime = matches!(policy, SchedFifo | SchedRr);
    if policy == SchedIso {
        return Err("SCHED_ISO is reserved and not implemented by Linux".into());
    }
    if realtime && !(1..=99).contains(&prio) {
        return Err(format!(
            "priority {prio} is out of range for {policy:?}: it must be 1 to 99"
        ));
    }
    if !realtime && prio != 0 {
        return Err(format!(
            "priority must be 0 for {policy:?} (a static priority is for SCHED_FIFO and SCHED_RR)"
        ));
    }
    if !(-20..=19).contains(&nice) {
        return Err(format!("nice {nice} is out of range -20 to 19"));
    }
    let dl = [s.runtime(), s.deadline(), s.period()];
    if policy == SchedDeadline {
        let runtime = s.runtime().unwrap_or(0);
        let deadline = s.deadline().unwrap_or(0);
        let period = s.period().unwrap_or(0);
        if runtime == 0 || deadline == 0 {
            return Err("SCHED_DEADLINE needs a runtime and a deadline".into());
        }
        if runtime > deadline || (period != 0 && deadline > period) {
            return Err(format!(
                "SCHED_DEADLINE needs runtime <= deadline <= period, got {runtime}, {deadline}, {period}"
            ));
        }
    } else if dl.iter().any(|v| v.unwrap_or(0) != 0) {
        return Err(format!(
            "runtime, deadline and period are for SCHED_DEADLINE, not {policy:?}"
        ));
    }
    Ok(())
}

/// Sets the calling process's scheduling policy and parameters; children inherit them.
pub fn apply_scheduler(s: &Scheduler) -> Result<()> {
    let mut attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: policy_number(*s.policy()),
        nice: s.nice().unwrap_or(0),
        priority: s.priority().unwrap_or(0) as u32,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
        ..Default::default()
    };
    for f in s.flags().as_deref().unwrap_or(&[]) {
        attr.flags |= flag_bit(*f);
    }
    // SAFETY: sched_setattr(pid 0 = this thread, attr, flags 0) reads `attr`, a valid and
    // fully initialised struct whose `size` field tells the kernel how much to read.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &mut attr as *mut SchedAttr, 0) };
    Errno::result(rc).map(drop).ctx(|| {
        format!(
            "set process.scheduler (policy {:?}, nice {}, priority {})",
            s.policy(),
            attr.nice,
            attr.priority
        )
    })
}

// ---------------------------------------------------------------------------------------------
// process.ioPriority
// ---------------------------------------------------------------------------------------------

const IOPRIO_WHO_PROCESS: libc::c_int = 1;
const IOPRIO_CLASS_SHIFT: u32 = 13;

pub fn check_io_priority(p: &LinuxIOPriority) -> std::result::Result<(), String> {
    if !(0..=7).contains(&p.priority()) {
        return Err(format!(
            "priority {} is out of range: it must be 0 (highest) to 7 (lowest)",
            p.priority()
        ));
    }
    Ok(())
}

/// The I/O priority of the calling process; children inherit it.
pub fn apply_io_priority(p: &LinuxIOPriority) -> Result<()> {
    let class: u32 = match p.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    let value = (class << IOPRIO_CLASS_SHIFT) | p.priority() as u32;
    // SAFETY: ioprio_set(IOPRIO_WHO_PROCESS, 0 = self, value) takes only integers.
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) };
    Errno::result(rc).map(drop).ctx(|| {
        format!(
            "set process.ioPriority (class {:?}, priority {})",
            p.class(),
            p.priority()
        )
    })
}

// ---------------------------------------------------------------------------------------------
// process.execCPUAffinity
// ---------------------------------------------------------------------------------------------

pub fn check_cpu_affinity(list: &str) -> std::result::Result<(), String> {
    let cpus = parse_list(list)?;
    if let Some(&c) = cpus.iter().find(|&&c| c >= CpuSet::count()) {
        return Err(format!(
            "CPU {c} is beyond the {} CPUs an affinity mask can hold",
            CpuSet::count()
        ));
    }
    Ok(())
}

/// Pins the calling process to `list` (an empty list leaves it as it is).
pub fn apply_cpu_affinity(what: &str, list: &str) -> Result<()> {
    let cpus = parse_list(list).map_err(|e| crate::Error::Unsupported(format!("{what}: {e}")))?;
    if cpus.is_empty() {
        return Ok(());
    }
    let mut set = CpuSet::new();
    for c in cpus {
        set.set(c)
            .ctx(|| format!("{what}: CPU {c} is out of range"))?;
    }
    nix::sched::sched_setaffinity(Pid::from_raw(0), &set)
        .ctx(|| format!("set {what} to CPUs {list:?}"))
}

// ---------------------------------------------------------------------------------------------
// linux.personality
// ---------------------------------------------------------------------------------------------

pub fn check_personality(p: &LinuxPersonality) -> std::result::Result<(), String> {
    match p.flags().as_deref() {
        None | Some([]) => Ok(()),
        Some(f) => Err(format!(
            "flags {f:?}: the runtime spec defines no personality flags, so none are accepted"
        )),
    }
}

/// Sets the execution domain; it survives exec.
pub fn apply_personality(p: &LinuxPersonality) -> Result<()> {
    let domain: libc::c_ulong = match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    };
    // SAFETY: personality(2) takes one integer and changes only this process's persona.
    let rc = unsafe { libc::personality(domain) };
    Errno::result(rc)
        .map(drop)
        .ctx(|| format!("set linux.personality domain {:?}", p.domain()))
}

// ---------------------------------------------------------------------------------------------
// linux.memoryPolicy
// ---------------------------------------------------------------------------------------------

fn mode_number(m: MemoryPolicyModeType) -> libc::c_int {
    use MemoryPolicyModeType::*;
    match m {
        MpolDefault => 0,
        MpolPreferred => 1,
        MpolBind => 2,
        MpolInterleave => 3,
        MpolLocal => 4,
        MpolPreferredMany => 5,
        MpolWeightedInterleave => 6,
    }
}

fn mode_flag(f: MemoryPolicyFlagType) -> libc::c_int {
    use MemoryPolicyFlagType::*;
    match f {
        MpolFNumaBalancing => 1 << 13,
        MpolFRelativeNodes => 1 << 14,
        MpolFStaticNodes => 1 << 15,
    }
}

/// The most memory nodes a policy may name (the kernel's MAX_NUMNODES is at most 1024).
const MAX_NODES: usize = 1024;

pub fn check_memory_policy(p: &LinuxMemoryPolicy) -> std::result::Result<(), String> {
    use MemoryPolicyModeType::*;
    let nodes = parse_list(p.nodes().as_deref().unwrap_or(""))?;
    if let Some(&n) = nodes.iter().find(|&&n| n >= MAX_NODES) {
        return Err(format!(
            "node {n} is beyond the {MAX_NODES} nodes Linux supports"
        ));
    }
    let flags = p.flags().as_deref().unwrap_or(&[]);
    match p.mode() {
        MpolDefault | MpolLocal => {
            if !nodes.is_empty() {
                return Err(format!("{:?} takes no nodes", p.mode()));
            }
            if !flags.is_empty() {
                return Err(format!("{:?} takes no flags", p.mode()));
            }
        }
        MpolBind | MpolInterleave | MpolWeightedInterleave | MpolPreferredMany => {
            if nodes.is_empty() {
                return Err(format!("{:?} needs at least one node", p.mode()));
            }
        }
        MpolPreferred => {}
    }
    let static_ = flags.contains(&MemoryPolicyFlagType::MpolFStaticNodes);
    let relative = flags.contains(&MemoryPolicyFlagType::MpolFRelativeNodes);
    if static_ && relative {
        return Err("MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES exclude each other".into());
    }
    Ok(())
}

/// Sets the NUMA memory policy of the calling process; it survives fork and exec.
pub fn apply_memory_policy(p: &LinuxMemoryPolicy) -> Result<()> {
    let nodes = parse_list(p.nodes().as_deref().unwrap_or(""))
        .map_err(|e| crate::Error::Unsupported(format!("linux.memoryPolicy.nodes: {e}")))?;
    let bits = usize::BITS as usize;
    let mut mask = vec![0usize; MAX_NODES / bits];
    for n in &nodes {
        mask[n / bits] |= 1 << (n % bits);
    }
    let mut mode = mode_number(p.mode());
    for f in p.flags().as_deref().unwrap_or(&[]) {
        mode |= mode_flag(*f);
    }
    let (ptr, maxnode) = if nodes.is_empty() {
        (std::ptr::null(), 0)
    } else {
        // The kernel reads maxnode - 1 bits: pass one more than the mask holds.
        (mask.as_ptr(), MAX_NODES + 1)
    };
    // SAFETY: set_mempolicy(mode, nodemask, maxnode) reads at most maxnode - 1 bits from
    // `mask`, which holds MAX_NODES bits and lives past the call; a null mask has maxnode 0.
    let rc = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, ptr, maxnode) };
    Errno::result(rc).map(drop).ctx(|| {
        format!(
            "set linux.memoryPolicy {:?} on nodes {:?}",
            p.mode(),
            p.nodes().as_deref().unwrap_or("")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_ranges_and_singles() {
        assert_eq!(parse_list("0-3,7").unwrap(), vec![0, 1, 2, 3, 7]);
        assert_eq!(parse_list(" 2 , 1,1").unwrap(), vec![1, 2]);
        assert_eq!(parse_list("").unwrap(), Vec::<usize>::new());
        for bad in ["a", "3-1", "1,,2", "-1", "1-"] {
            assert!(parse_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lists_refuse_numbers_past_any_cpu_or_node_count() {
        let err = parse_list("0-99999999999").unwrap_err();
        assert!(err.contains("99999999999 is above 65535"), "{err}");
        assert_eq!(parse_list("0-65535,0-65535").unwrap().len(), 65536);
    }

    fn sched(v: serde_json::Value) -> Scheduler {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn scheduler_rules_follow_sched_setattr() {
        assert!(check_scheduler(&sched(
            serde_json::json!({"policy": "SCHED_OTHER", "nice": 5})
        ))
        .is_ok());
        assert!(check_scheduler(&sched(
            serde_json::json!({"policy": "SCHED_FIFO", "priority": 10})
        ))
        .is_ok());
        let bad = [
            serde_json::json!({"policy": "SCHED_FIFO"}),
            serde_json::json!({"policy": "SCHED_RR", "priority": 100}),
            serde_json::json!({"policy": "SCHED_OTHER", "priority": 1}),
            serde_json::json!({"policy": "SCHED_BATCH", "nice": 20}),
            serde_json::json!({"policy": "SCHED_ISO"}),
            serde_json::json!({"policy": "SCHED_DEADLINE"}),
            serde_json::json!({"policy": "SCHED_DEADLINE", "runtime": 10, "deadline": 5}),
            serde_json::json!({"policy": "SCHED_OTHER", "runtime": 10}),
        ];
        for b in bad {
            assert!(check_scheduler(&sched(b.clone())).is_err(), "{b}");
        }
        let dl = sched(
            serde_json::json!({"policy": "SCHED_DEADLINE", "runtime": 10000000,
            "deadline": 20000000, "period": 30000000}),
        );
        assert!(check_scheduler(&dl).is_ok());
    }

    #[test]
    fn memory_policy_modes_need_or_refuse_nodes() {
        let mp = |v: serde_json::Value| -> LinuxMemoryPolicy { serde_json::from_value(v).unwrap() };
        assert!(
            check_memory_policy(&mp(serde_json::json!({"mode": "MPOL_BIND", "nodes": "0"})))
                .is_ok()
        );
        assert!(check_memory_policy(&mp(serde_json::json!({"mode": "MPOL_LOCAL"}))).is_ok());
        assert!(check_memory_policy(&mp(serde_json::json!({"mode": "MPOL_BIND"}))).is_err());
        assert!(check_memory_policy(&mp(
            serde_json::json!({"mode": "MPOL_DEFAULT", "nodes": "0"})
        ))
        .is_err());
        assert!(check_memory_policy(&mp(
            serde_json::json!({"mode": "MPOL_INTERLEAVE", "nodes": "0",
            "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]})
        ))
        .is_err());
        assert!(check_memory_policy(&mp(
            serde_json::json!({"mode": "MPOL_BIND", "nodes": "5000"})
        ))
        .is_err());
    }

    #[test]
    fn io_priority_and_personality_are_checked() {
        let io = |v: serde_json::Value| -> LinuxIOPriority { serde_json::from_value(v).unwrap() };
        assert!(check_io_priority(&io(
            serde_json::json!({"class": "IOPRIO_CLASS_BE", "priority": 7})
        ))
        .is_ok());
        assert!(check_io_priority(&io(
            serde_json::json!({"class": "IOPRIO_CLASS_BE", "priority": 8})
        ))
        .is_err());
        let pers =
            |v: serde_json::Value| -> LinuxPersonality { serde_json::from_value(v).unwrap() };
        assert!(check_personality(&pers(serde_json::json!({"domain": "LINUX32"}))).is_ok());
        assert!(check_personality(&pers(
            serde_json::json!({"domain": "LINUX", "flags": ["X"]})
        ))
        .is_err());
        assert!(check_cpu_affinity("0-1").is_ok());
        assert!(check_cpu_affinity("0-99999").is_err());
    }
}
