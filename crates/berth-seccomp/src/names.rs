//! The names the runtime spec uses for seccomp actions, architectures, filter
//! flags and comparison operators, and their libseccomp counterparts.
//!
//! `oci-spec` already rejects unknown names when `config.json` is parsed; the
//! `parse_*` functions here are for callers that hold the raw strings (and give
//! an error of this crate's type). Every mapping is an exhaustive `match`, so a
//! new variant in `oci-spec` fails to build here instead of being ignored.

use libseccomp::ScmpArch;
use oci_spec::runtime::{Arch, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator};

use crate::SeccompError;

/// Every action of the runtime spec, in the spec's order.
pub const ALL_ACTIONS: [LinuxSeccompAction; 9] = [
    LinuxSeccompAction::ScmpActKill,
    LinuxSeccompAction::ScmpActKillProcess,
    LinuxSeccompAction::ScmpActKillThread,
    LinuxSeccompAction::ScmpActTrap,
    LinuxSeccompAction::ScmpActErrno,
    LinuxSeccompAction::ScmpActTrace,
    LinuxSeccompAction::ScmpActAllow,
    LinuxSeccompAction::ScmpActLog,
    LinuxSeccompAction::ScmpActNotify,
];

/// Every architecture of the runtime spec, in the spec's order, followed by
/// `SCMP_ARCH_NATIVE`, which `oci-spec` accepts as well.
pub const ALL_ARCHES: [Arch; 24] = [
    Arch::ScmpArchX86,
    Arch::ScmpArchX86_64,
    Arch::ScmpArchX32,
    Arch::ScmpArchArm,
    Arch::ScmpArchAarch64,
    Arch::ScmpArchMips,
    Arch::ScmpArchMips64,
    Arch::ScmpArchMips64n32,
    Arch::ScmpArchMipsel,
    Arch::ScmpArchMipsel64,
    Arch::ScmpArchMipsel64n32,
    Arch::ScmpArchPpc,
    Arch::ScmpArchPpc64,
    Arch::ScmpArchPpc64le,
    Arch::ScmpArchS390,
    Arch::ScmpArchS390x,
    Arch::ScmpArchParisc,
    Arch::ScmpArchParisc64,
    Arch::ScmpArchRiscv64,
    Arch::ScmpArchLoongarch64,
    Arch::ScmpArchM68k,
    Arch::ScmpArchSh,
    Arch::ScmpArchSheb,
    Arch::ScmpArchNative,
];

/// Every filter flag of the runtime spec, in the spec's order.
pub const ALL_FLAGS: [LinuxSeccompFilterFlag; 4] = [
    LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
    LinuxSeccompFilterFlag::SeccompFilterFlagLog,
    LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
    LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv,
];

/// Every comparison operator of the runtime spec, in the spec's order.
pub const ALL_OPERATORS: [LinuxSeccompOperator; 7] = [
    LinuxSeccompOperator::ScmpCmpNe,
    LinuxSeccompOperator::ScmpCmpLt,
    LinuxSeccompOperator::ScmpCmpLe,
    LinuxSeccompOperator::ScmpCmpEq,
    LinuxSeccompOperator::ScmpCmpGe,
    LinuxSeccompOperator::ScmpCmpGt,
    LinuxSeccompOperator::ScmpCmpMaskedEq,
];

/// The spec's name of an action, e.g. `SCMP_ACT_ERRNO`.
pub fn action_name(action: LinuxSeccompAction) -> &'static str {
    match action {
        LinuxSeccompAction::ScmpActKill => "SCMP_ACT_KILL",
        LinuxSeccompAction::ScmpActKillProcess => "SCMP_ACT_KILL_PROCESS",
        LinuxSeccompAction::ScmpActKillThread => "SCMP_ACT_KILL_THREAD",
        LinuxSeccompAction::ScmpActTrap => "SCMP_ACT_TRAP",
        LinuxSeccompAction::ScmpActErrno => "SCMP_ACT_ERRNO",
        LinuxSeccompAction::ScmpActTrace => "SCMP_ACT_TRACE",
        LinuxSeccompAction::ScmpActAllow => "SCMP_ACT_ALLOW",
        LinuxSeccompAction::ScmpActLog => "SCMP_ACT_LOG",
        LinuxSeccompAction::ScmpActNotify => "SCMP_ACT_NOTIFY",
    }
}

/// The spec's name of an architecture, e.g. `SCMP_ARCH_X86_64`.
pub fn arch_name(arch: Arch) -> &'static str {
    match arch {
        Arch::ScmpArchNative => "SCMP_ARCH_NATIVE",
        Arch::ScmpArchX86 => "SCMP_ARCH_X86",
        Arch::ScmpArchX86_64 => "SCMP_ARCH_X86_64",
        Arch::ScmpArchX32 => "SCMP_ARCH_X32",
        Arch::ScmpArchArm => "SCMP_ARCH_ARM",
        Arch::ScmpArchAarch64 => "SCMP_ARCH_AARCH64",
        Arch::ScmpArchMips => "SCMP_ARCH_MIPS",
        Arch::ScmpArchMips64 => "SCMP_ARCH_MIPS64",
        Arch::ScmpArchMips64n32 => "SCMP_ARCH_MIPS64N32",
        Arch::ScmpArchMipsel => "SCMP_ARCH_MIPSEL",
        Arch::ScmpArchMipsel64 => "SCMP_ARCH_MIPSEL64",
        Arch::ScmpArchMipsel64n32 => "SCMP_ARCH_MIPSEL64N32",
        Arch::ScmpArchPpc => "SCMP_ARCH_PPC",
        Arch::ScmpArchPpc64 => "SCMP_ARCH_PPC64",
        Arch::ScmpArchPpc64le => "SCMP_ARCH_PPC64LE",
        Arch::ScmpArchS390 => "SCMP_ARCH_S390",
        Arch::ScmpArchS390x => "SCMP_ARCH_S390X",
        Arch::ScmpArchParisc => "SCMP_ARCH_PARISC",
        Arch::ScmpArchParisc64 => "SCMP_ARCH_PARISC64",
        Arch::ScmpArchRiscv64 => "SCMP_ARCH_RISCV64",
        Arch::ScmpArchLoongarch64 => "SCMP_ARCH_LOONGARCH64",
        Arch::ScmpArchM68k => "SCMP_ARCH_M68K",
        Arch::ScmpArchSh => "SCMP_ARCH_SH",
        Arch::ScmpArchSheb => "SCMP_ARCH_SHEB",
    }
}

/// The spec's name of a filter flag, e.g. `SECCOMP_FILTER_FLAG_LOG`.
pub fn flag_name(flag: LinuxSeccompFilterFlag) -> &'static str {
    match flag {
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => "SECCOMP_FILTER_FLAG_TSYNC",
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => "SECCOMP_FILTER_FLAG_LOG",
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"
        }
    }
}

/// The spec's name of a comparison operator, e.g. `SCMP_CMP_MASKED_EQ`.
pub fn operator_name(op: LinuxSeccompOperator) -> &'static str {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => "SCMP_CMP_NE",
        LinuxSeccompOperator::ScmpCmpLt => "SCMP_CMP_LT",
        LinuxSeccompOperator::ScmpCmpLe => "SCMP_CMP_LE",
        LinuxSeccompOperator::ScmpCmpEq => "SCMP_CMP_EQ",
        LinuxSeccompOperator::ScmpCmpGe => "SCMP_CMP_GE",
        LinuxSeccompOperator::ScmpCmpGt => "SCMP_CMP_GT",
        LinuxSeccompOperator::ScmpCmpMaskedEq => "SCMP_CMP_MASKED_EQ",
    }
}

/// Parses an action name such as `SCMP_ACT_ERRNO`.
pub fn parse_action(name: &str) -> Result<LinuxSeccompAction, SeccompError> {
    ALL_ACTIONS
        .into_iter()
        .find(|a| action_name(*a) == name)
        .ok_or_else(|| SeccompError::UnknownAction {
            name: name.to_owned(),
        })
}

/// Parses an architecture name such as `SCMP_ARCH_X86_64`.
pub fn parse_arch(name: &str) -> Result<Arch, SeccompError> {
    ALL_ARCHES
        .into_iter()
        .find(|a| arch_name(*a) == name)
        .ok_or_else(|| SeccompError::UnknownArch {
            name: name.to_owned(),
        })
}

/// Parses a filter flag name such as `SECCOMP_FILTER_FLAG_LOG`.
pub fn parse_flag(name: &str) -> Result<LinuxSeccompFilterFlag, SeccompError> {
    ALL_FLAGS
        .into_iter()
        .find(|f| flag_name(*f) == name)
        .ok_or_else(|| SeccompError::UnknownFlag {
            name: name.to_owned(),
        })
}

/// Parses a comparison operator name such as `SCMP_CMP_EQ`.
pub fn parse_operator(name: &str) -> Result<LinuxSeccompOperator, SeccompError> {
    ALL_OPERATORS
        .into_iter()
        .find(|o| operator_name(*o) == name)
        .ok_or_else(|| SeccompError::UnknownOperator {
            name: name.to_owned(),
        })
}

/// The libseccomp token for an architecture.
pub(crate) fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_match_the_spellings_oci_spec_parses() {
        for action in ALL_ACTIONS {
            let parsed: LinuxSeccompAction = action_name(action).parse().unwrap();
            assert_eq!(parsed, action, "{}", action_name(action));
        }
    }

    #[test]
    fn arch_names_match_the_spellings_oci_spec_parses() {
        for arch in ALL_ARCHES {
            let parsed: Arch = arch_name(arch).parse().unwrap();
            assert_eq!(parsed, arch, "{}", arch_name(arch));
        }
    }

    #[test]
    fn flag_names_match_the_spellings_oci_spec_parses() {
        for flag in ALL_FLAGS {
            let parsed: LinuxSeccompFilterFlag = flag_name(flag).parse().unwrap();
            assert_eq!(parsed, flag, "{}", flag_name(flag));
        }
    }

    #[test]
    fn operator_names_match_the_spellings_oci_spec_parses() {
        for op in ALL_OPERATORS {
            let parsed: LinuxSeccompOperator = operator_name(op).parse().unwrap();
            assert_eq!(parsed, op, "{}", operator_name(op));
        }
    }

    #[test]
    fn every_name_parses_back_to_its_value() {
        for action in ALL_ACTIONS {
            assert_eq!(parse_action(action_name(action)).unwrap(), action);
        }
        for arch in ALL_ARCHES {
            assert_eq!(parse_arch(arch_name(arch)).unwrap(), arch);
        }
        for flag in ALL_FLAGS {
            assert_eq!(parse_flag(flag_name(flag)).unwrap(), flag);
        }
        for op in ALL_OPERATORS {
            assert_eq!(parse_operator(operator_name(op)).unwrap(), op);
        }
    }

    #[test]
    fn unknown_action_is_rejected_with_its_name() {
        let err = parse_action("SCMP_ACT_FOO").unwrap_err();
        assert!(matches!(&err, SeccompError::UnknownAction { name } if name == "SCMP_ACT_FOO"));
        assert_eq!(err.to_string(), r#"unknown seccomp action "SCMP_ACT_FOO""#);
    }

    #[test]
    fn unknown_arch_is_rejected_with_its_name() {
        let err = parse_arch("SCMP_ARCH_VAX").unwrap_err();
        assert!(matches!(&err, SeccompError::UnknownArch { name } if name == "SCMP_ARCH_VAX"));
        assert_eq!(
            err.to_string(),
            r#"unknown seccomp architecture "SCMP_ARCH_VAX""#
        );
    }

    #[test]
    fn unknown_flag_is_rejected_with_its_name() {
        let err = parse_flag("SECCOMP_FILTER_FLAG_FOO").unwrap_err();
        assert!(
            matches!(&err, SeccompError::UnknownFlag { name } if name == "SECCOMP_FILTER_FLAG_FOO")
        );
        assert_eq!(
            err.to_string(),
            r#"unknown seccomp flag "SECCOMP_FILTER_FLAG_FOO""#
        );
    }

    #[test]
    fn unknown_operator_is_rejected_with_its_name() {
        let err = parse_operator("SCMP_CMP_APPROX").unwrap_err();
        assert!(
            matches!(&err, SeccompError::UnknownOperator { name } if name == "SCMP_CMP_APPROX")
        );
    }

    #[test]
    fn names_are_case_sensitive_like_the_spec() {
        assert!(parse_action("scmp_act_allow").is_err());
    }
}
