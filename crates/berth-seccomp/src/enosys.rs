//! ENOSYS for system calls newer than the profile.
//!
//! A profile can only name the system calls that existed when it was written. A
//! deny-by-default profile from 2018 therefore denies `clone3`, `openat2` or
//! `faccessat2` with its default action, EPERM as a rule, and a C library that tries
//! the new call first and falls back to the old one on ENOSYS (glibc's `clone3` in
//! `posix_spawn` and `pthread_create`, for one) fails outright instead of falling
//! back. runc and crun answer such calls with ENOSYS, "this kernel does not have it",
//! which is what the profile's author would have seen.
//!
//! This module builds that answer as a short BPF prefix put in front of libseccomp's
//! program: for each architecture of the filter whose audit value is known here, a
//! system call numbered above the highest one the profile names returns ENOSYS; all
//! others fall through to the profile's own program unchanged. A profile that allows
//! by default (or only logs) needs no prefix: new calls are allowed anyway.

use std::collections::BTreeMap;

use libseccomp::{ScmpArch, ScmpSyscall};

/// `offsetof(struct seccomp_data, nr)`.
const NR_OFFSET: u32 = 0;
/// `offsetof(struct seccomp_data, arch)`.
const ARCH_OFFSET: u32 = 4;
/// x32 system calls run under the x86_64 audit architecture with this bit set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
const AUDIT_ARCH_ARM: u32 = 0x4000_0028;

/// The audit architecture of `arch`, for those this module knows.
pub(crate) fn audit_arch(arch: ScmpArch) -> Option<u32> {
    match arch {
        ScmpArch::X8664 | ScmpArch::X32 => Some(AUDIT_ARCH_X86_64),
        ScmpArch::X86 => Some(AUDIT_ARCH_I386),
        ScmpArch::Aarch64 => Some(AUDIT_ARCH_AARCH64),
        ScmpArch::Arm => Some(AUDIT_ARCH_ARM),
        _ => None,
    }
}

/// The highest system call number the profile names, per architecture.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Newest {
    /// audit arch → highest native number; for x86_64 the x32 calls are apart.
    native: BTreeMap<u32, u32>,
    /// Highest x32 number (with the x32 bit), when the filter has x32.
    x32: Option<u32>,
}

impl Newest {
    /// The highest number each of `arches` gives any of `names`. Names an
    /// architecture does not have are skipped; an architecture none of the names
    /// resolves on gets no entry (and so no prefix).
    pub(crate) fn of(names: &[&str], arches: &[ScmpArch]) -> Self {
        let mut newest = Newest::default();
        for &arch in arches {
            let Some(audit) = audit_arch(arch) else {
                continue;
            };
            let highest = names
                .iter()
                .filter_map(|name| ScmpSyscall::from_name_by_arch(name, arch).ok())
                .map(ScmpSyscall::as_raw_syscall)
                .filter_map(|nr| u32::try_from(nr).ok())
                .max();
            let Some(highest) = highest else {
                continue;
            };
            if arch == ScmpArch::X32 {
                newest.x32 = Some(highest | X32_SYSCALL_BIT);
            } else {
                newest.native.insert(audit, highest);
            }
        }
        newest
    }
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: usize, jf: usize) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        // Each architecture's block is at most six instructions and there are at most
        // four: every offset fits in the 8 bits BPF has for it.
        jt: u8::try_from(jt).expect("short forward jump"),
        jf: u8::try_from(jf).expect("short forward jump"),
        k,
    }
}

const LD_ABS: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
const JEQ: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
const JGE: u32 = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
const JGT: u32 = libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K;
const JA: u32 = libc::BPF_JMP | libc::BPF_JA;
const RET: u32 = libc::BPF_RET | libc::BPF_K;

/// One architecture's test: `arch == audit && nr > highest` → ENOSYS. The block
/// ends in two jumps whose targets the caller fixes: to the next block ("not this
/// arch") and to the ENOSYS return or past it.
fn block(audit: u32, highest: u32, x32: Option<Option<u32>>) -> Vec<Insn> {
    let mut b = vec![
        Insn::Fixed(stmt(LD_ABS, ARCH_OFFSET)),
        Insn::ArchCheck(audit),
        Insn::Fixed(stmt(LD_ABS, NR_OFFSET)),
    ];
    match x32 {
        // x86_64 with x32 in the filter: x32 numbers against their own highest.
        Some(Some(x32_highest)) => {
            b.push(Insn::Native(JGE, X32_SYSCALL_BIT, 1));
            b.push(Insn::Newer(highest));
            b.push(Insn::Newer(x32_highest));
        }
        // x86_64 without x32: leave x32 numbers to libseccomp's program.
        Some(None) => {
            b.push(Insn::Native(JGE, X32_SYSCALL_BIT, 1));
            b.push(Insn::Newer(highest));
            b.push(Insn::Pass);
        }
        None => b.push(Insn::Newer(highest)),
    }
    b
}

/// An instruction before its jump targets are known.
#[derive(Debug, Clone, Copy)]
enum Insn {
    Fixed(libc::sock_filter),
    /// `jeq audit`: fall through if equal, else to the next block.
    ArchCheck(u32),
    /// A conditional jump `skip` instructions ahead when true, else fall through.
    Native(u32, u32, usize),
    /// `jgt highest`: to ENOSYS when true, else past the prefix.
    Newer(u32),
    /// An unconditional jump past the prefix.
    Pass,
}

/// The BPF prefix for `newest`, or nothing when no architecture needs one.
pub(crate) fn prefix(newest: &Newest) -> Vec<libc::sock_filter> {
    let blocks: Vec<Vec<Insn>> = newest
        .native
        .iter()
        .map(|(&audit, &highest)| {
            let x32 = (audit == AUDIT_ARCH_X86_64).then_some(newest.x32);
            block(audit, highest, x32)
        })
        .collect();
    if blocks.is_empty() {
        return Vec::new();
    }
    let body: usize = blocks.iter().map(Vec::len).sum();
    // Layout: the blocks, then `ja +1` (continue), then `ret ENOSYS`, then
    // libseccomp's program.
    let cont = body;
    let enosys = body + 1;
    let mut out = Vec::with_capacity(body + 2);
    let mut block_start = 0;
    for b in &blocks {
        let next_block = block_start + b.len();
        for (i, insn) in b.iter().enumerate() {
            let at = block_start + i;
            // A jump's offsets count from the instruction after it.
            let ahead = |target: usize| target - at - 1;
            out.push(match *insn {
                Insn::Fixed(f) => f,
                Insn::ArchCheck(audit) => jump(JEQ, audit, 0, ahead(next_block.min(cont))),
                Insn::Native(code, k, skip) => jump(code, k, skip, 0),
                Insn::Newer(highest) => jump(JGT, highest, ahead(enosys), ahead(cont)),
                Insn::Pass => stmt(JA, ahead(cont) as u32),
            });
        }
        block_start = next_block;
    }
    out.push(stmt(JA, 1));
    out.push(stmt(RET, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the prefix decides for `nr` on `arch`: its own ENOSYS, or FELL_THROUGH to
    /// the program after it (here a single `ret FELL_THROUGH`).
    const FELL_THROUGH: u32 = 0x7ff0_0000;

    fn run(prefix: &[libc::sock_filter], arch: u32, nr: u32) -> u32 {
        let mut program = prefix.to_vec();
        program.push(stmt(RET, FELL_THROUGH));
        let call = crate::eval::Call {
            nr,
            arch,
            ..Default::default()
        };
        crate::eval::run(&program, &call)
    }

    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

    #[test]
    fn newest_is_the_highest_number_per_architecture() {
        let names = ["read", "openat", "statx", "no_such_call"];

        let newest = Newest::of(&names, &[ScmpArch::X8664, ScmpArch::X86]);

        assert_eq!(newest.native.get(&AUDIT_ARCH_X86_64), Some(&332));
        assert_eq!(newest.native.get(&AUDIT_ARCH_I386), Some(&383));
        assert_eq!(newest.x32, None);
    }

    #[test]
    fn calls_above_the_newest_get_enosys_and_the_rest_fall_through() {
        let newest = Newest::of(&["read", "statx"], &[ScmpArch::X8664]);

        let p = prefix(&newest);

        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 0), FELL_THROUGH);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 332), FELL_THROUGH);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 333), ENOSYS);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 435), ENOSYS, "clone3");
        // Another architecture, and x32 numbers, are the profile's to judge.
        assert_eq!(run(&p, AUDIT_ARCH_I386, 1000), FELL_THROUGH);
        assert_eq!(
            run(&p, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 1000),
            FELL_THROUGH
        );
    }

    #[test]
    fn each_architecture_has_its_own_newest() {
        let newest = Newest::of(
            &["read", "statx"],
            &[ScmpArch::X8664, ScmpArch::X86, ScmpArch::X32],
        );
        let x32_statx = newest.x32.expect("x32 resolves statx");

        let p = prefix(&newest);

        assert_eq!(run(&p, AUDIT_ARCH_I386, 383), FELL_THROUGH);
        assert_eq!(run(&p, AUDIT_ARCH_I386, 384), ENOSYS);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 333), ENOSYS);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, x32_statx), FELL_THROUGH);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, x32_statx + 1), ENOSYS);
        assert_eq!(run(&p, AUDIT_ARCH_AARCH64, 5000), FELL_THROUGH);
    }

    #[test]
    fn no_known_architecture_means_no_prefix() {
        let newest = Newest::of(&["read"], &[ScmpArch::S390X]);

        assert!(prefix(&newest).is_empty());
    }
}
