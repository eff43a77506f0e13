//! Validation of the `linux.seccomp` section and its compilation, with
//! libseccomp, into a BPF program.
//!
//! Compilation happens in two steps. [`Plan::from_spec`] checks every field
//! and resolves names (syscalls, actions, argument conditions) without
//! building a filter; [`Plan::build`] then feeds the plan to a libseccomp
//! context and exports the generated BPF program. Both run in the runtime's
//! parent process, so every error surfaces before a container process exists.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};

use crate::enosys;
use crate::features::{self, api_level, version_string};
use crate::filter::{self, Filter, KernelFlags};
use crate::names::{action_name, arch_name, flag_name, scmp_arch};
use crate::SeccompError;

/// A syscall has at most six arguments.
pub(crate) const ARG_COUNT: usize = 6;

/// The largest errno for `SCMP_ACT_ERRNO`: libseccomp accepts values below
/// its `MAX_ERRNO` (4095) only.
pub const MAX_ERRNO_RET: u32 = 4094;

/// The largest message value for `SCMP_ACT_TRACE` (16 bits in the kernel's
/// return value).
pub const MAX_TRACE_RET: u32 = u16::MAX as u32;

/// libseccomp's binary-tree optimisation is switched on above this many rules
/// (runc's threshold: libseccomp <= 2.5.4 misbehaves with the tree and no
/// rules, and builds the tree from nodes of four syscalls).
const OPTIMIZE_ABOVE_RULES: usize = 32;

/// `EPERM`, the errno used when `errnoRet`/`defaultErrnoRet` is absent.
const DEFAULT_ERRNO_RET: u32 = libc::EPERM as u32;

/// Validates and compiles an OCI seccomp section.
///
/// Call this in the runtime's parent process before any namespace or process
/// is created: every configuration error, every feature the linked libseccomp
/// or the running kernel lacks, and BPF generation itself are dealt with here.
/// What remains for [`Filter::load`] is one seccomp(2) call.
///
/// Where the runtime spec is silent this follows runc, with two deliberate
/// differences: an unknown syscall name is an error (runc skips it), and an
/// `errnoRet`/`defaultErrnoRet` given with an action that returns no errno is
/// an error (the spec says MUST fail; runc ignores it).
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    Plan::from_spec(seccomp)?.build()
}

/// One `syscalls[]` entry, validated and resolved.
#[derive(Debug)]
struct Rule<'a> {
    /// `linux.seccomp.syscalls[i]`, for error messages.
    field: String,
    action: ScmpAction,
    syscalls: Vec<(&'a str, ScmpSyscall)>,
    /// Every inner list becomes one libseccomp rule per syscall; libseccomp
    /// ANDs the conditions of one rule, the rules themselves are ORed.
    condition_sets: Vec<Vec<ScmpArgCompare>>,
}

/// A validated seccomp section, ready to be handed to libseccomp.
#[derive(Debug)]
struct Plan<'a> {
    default_action: ScmpAction,
    architectures: &'a [Arch],
    /// `None` when `flags` is absent from the configuration, which is not
    /// the same as an empty list (see [`Plan::set_flags`]).
    flags: Option<&'a [LinuxSeccompFilterFlag]>,
    rules: Vec<Rule<'a>>,
    uses_notify: bool,
}

impl<'a> Plan<'a> {
    fn from_spec(seccomp: &'a LinuxSeccomp) -> Result<Self, SeccompError> {
        if seccomp.listener_metadata().is_some() && seccomp.listener_path().is_none() {
            return Err(SeccompError::MetadataWithoutListener);
        }

        let default = seccomp.default_action();
        if default == LinuxSeccompAction::ScmpActNotify {
            return Err(SeccompError::NotifyAsDefaultAction);
        }
        let default_action = scmp_action(default, seccomp.default_errno_ret(), || {
            "linux.seccomp.defaultErrnoRet".to_owned()
        })?;
        let mut checked = ActionCheck::default();
        checked.ensure_supported(default, || "linux.seccomp.defaultAction".to_owned())?;

        let syscalls = seccomp.syscalls().as_deref().unwrap_or_default();
        let mut rules = Vec::with_capacity(syscalls.len());
        let mut first_notify = None;
        for (i, syscall) in syscalls.iter().enumerate() {
            let field = format!("linux.seccomp.syscalls[{i}]");
            let rule = Rule::from_spec(field, syscall)?;
            checked.ensure_supported(syscall.action(), || format!("{}.action", rule.field))?;
            if syscall.action() == LinuxSeccompAction::ScmpActNotify {
                if rule.syscalls.iter().any(|(name, _)| *name == "write") {
                    return Err(SeccompError::NotifyOnWrite { field: rule.field });
                }
                first_notify.get_or_insert_with(|| rule.field.clone());
            }
            rules.push(rule);
        }

        let flags = seccomp.flags().as_deref();
        if let Some(field) = first_notify.as_ref() {
            if seccomp.listener_path().is_none() {
                return Err(SeccompError::NotifyWithoutListener {
                    field: field.clone(),
                });
            }
            let tsync = flags
                .into_iter()
                .flatten()
                .position(|f| *f == LinuxSeccompFilterFlag::SeccompFilterFlagTsync);
            // The kernel refuses TSYNC together with NEW_LISTENER unless it
            // also knows TSYNC_ESRCH, which is what API level 6 reports.
            if let Some(j) = tsync {
                let api_level = api_level();
                if api_level < 6 {
                    return Err(SeccompError::TsyncWithNotify {
                        field: format!("linux.seccomp.flags[{j}]"),
                        api_level,
                    });
                }
            }
        }

        Ok(Self {
            default_action,
            architectures: seccomp.architectures().as_deref().unwrap_or_default(),
            flags,
            rules,
            uses_notify: first_notify.is_some(),
        })
    }

    fn build(&self) -> Result<Filter, SeccompError> {
        let mut ctx = ScmpFilterContext::new(self.default_action).map_err(|source| {
            SeccompError::Libseccomp {
                action: "create a filter context".to_owned(),
                source,
            }
        })?;
        self.add_architectures(&mut ctx)?;
        let kernel_flags = self.set_flags(&mut ctx)?;

        let active: Vec<&Rule<'_>> = self
            .rules
            .iter()
            .filter(|rule| rule.action != self.default_action)
            .collect();
        let rule_count: usize = active
            .iter()
            .map(|rule| rule.syscalls.len() * rule.condition_sets.len())
            .sum();
        if rule_count > OPTIMIZE_ABOVE_RULES {
            ctx.set_ctl_optimize(2)
                .map_err(|source| SeccompError::Libseccomp {
                    action: "enable binary tree optimisation".to_owned(),
                    source,
                })?;
        }

        // A rule with the default action is redundant, and libseccomp refuses
        // it (EACCES); like runc, drop it silently.
        for rule in active {
            rule.add_to(&mut ctx)?;
        }

        let mut program = self.enosys_prefix();
        program.extend(filter::export(&ctx)?);
        filter::check_length(&program)?;
        Ok(Filter::new(program, kernel_flags))
    }

    /// ENOSYS for system calls newer than any the profile names (see `enosys`), unless
    /// the default action lets them run anyway.
    fn enosys_prefix(&self) -> Vec<libc::sock_filter> {
        if matches!(self.default_action, ScmpAction::Allow | ScmpAction::Log) {
            return Vec::new();
        }
        let names: Vec<&str> = self
            .rules
            .iter()
            .flat_map(|rule| rule.syscalls.iter().map(|(name, _)| *name))
            .collect();
        let mut arches = vec![ScmpArch::native()];
        for arch in self.architectures {
            let arch = match scmp_arch(*arch) {
                ScmpArch::Native => ScmpArch::native(),
                a => a,
            };
            if !arches.contains(&arch) {
                arches.push(arch);
            }
        }
        enosys::prefix(&enosys::Newest::of(&names, &arches))
    }

    fn add_architectures(&self, ctx: &mut ScmpFilterContext) -> Result<(), SeccompError> {
        for (i, arch) in self.architectures.iter().enumerate() {
            let field = || format!("linux.seccomp.architectures[{i}]");
            // The native architecture is always part of a new context;
            // libseccomp answers EEXIST for it, which the binding treats as Ok.
            ctx.add_arch(scmp_arch(*arch))
                .map_err(|source| match source.errno() {
                    Some(libseccomp::error::SeccompErrno::EINVAL) => {
                        SeccompError::UnsupportedArch {
                            field: field(),
                            arch: arch_name(*arch),
                            version: version_string(),
                        }
                    }
                    Some(libseccomp::error::SeccompErrno::EDOM) => SeccompError::IncompatibleArch {
                        field: field(),
                        arch: arch_name(*arch),
                    },
                    _ => SeccompError::Libseccomp {
                        action: format!("add architecture {} from {}", arch_name(*arch), field()),
                        source,
                    },
                })?;
        }
        Ok(())
    }

    /// Sets the filter flags on the context, which is how libseccomp tells
    /// whether it and the kernel support them, and returns them for the load.
    ///
    /// An absent `flags` list means `SECCOMP_FILTER_FLAG_SPEC_ALLOW` where
    /// supported, as runc does: seccomp otherwise turns on the speculative
    /// store bypass mitigation for the whole container. An empty list means
    /// no flags.
    fn set_flags(&self, ctx: &mut ScmpFilterContext) -> Result<KernelFlags, SeccompError> {
        let mut kernel_flags = KernelFlags {
            new_listener: self.uses_notify,
            ..Default::default()
        };
        let Some(flags) = self.flags else {
            kernel_flags.spec_allow = ctx.set_ctl_ssb(true).is_ok();
            return Ok(kernel_flags);
        };
        for (i, flag) in flags.iter().enumerate() {
            features::set_flag(ctx, *flag, &mut kernel_flags).map_err(|source| {
                SeccompError::UnsupportedFlag {
                    field: format!("linux.seccomp.flags[{i}]"),
                    flag: flag_name(*flag),
                    source,
                }
            })?;
        }
        Ok(kernel_flags)
    }
}

impl<'a> Rule<'a> {
    fn from_spec(field: String, syscall: &'a LinuxSyscall) -> Result<Self, SeccompError> {
        if syscall.names().is_empty() {
            return Err(SeccompError::EmptyNames {
                field: format!("{field}.names"),
            });
        }
        let action = scmp_action(syscall.action(), syscall.errno_ret(), || {
            format!("{field}.errnoRet")
        })?;
        let args = syscall.args().as_deref().unwrap_or_default();
        let condition_sets = condition_sets(&field, args)?;
        let mut syscalls = Vec::with_capacity(syscall.names().len());
        for name in syscall.names() {
            // Resolving on the native architecture finds every name that
            // libseccomp knows on any architecture: one that does not exist
            // natively resolves to a negative pseudo-number, which libseccomp
            // translates per architecture when the rule is added (and leaves
            // out where the syscall does not exist).
            let nr = ScmpSyscall::from_name(name).map_err(|_| SeccompError::UnknownSyscall {
                field: field.clone(),
                name: name.clone(),
            })?;
            syscalls.push((name.as_str(), nr));
        }
        Ok(Self {
            field,
            action,
            syscalls,
            condition_sets,
        })
    }

    fn add_to(&self, ctx: &mut ScmpFilterContext) -> Result<(), SeccompError> {
        for (name, nr) in &self.syscalls {
            for conditions in &self.condition_sets {
                // Not the `_exact` variant: that one fails for a syscall that
                // one of the filter's architectures lacks; this one skips it
                // there.
                ctx.add_rule_conditional(self.action, *nr, conditions)
                    .map_err(|source| SeccompError::Libseccomp {
                        action: format!("add the rule for {name:?} from {}", self.field),
                        source,
                    })?;
            }
        }
        Ok(())
    }
}

/// The libseccomp action for an OCI action and its optional errno.
///
/// `errno_field` names the errno field for error messages; it is only called
/// on error.
pub(crate) fn scmp_action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    errno_field: impl FnOnce() -> String,
) -> Result<ScmpAction, SeccompError> {
    let errno_max = match action {
        LinuxSeccompAction::ScmpActErrno => Some(MAX_ERRNO_RET),
        LinuxSeccompAction::ScmpActTrace => Some(MAX_TRACE_RET),
        _ => None,
    };
    let value = match (errno_max, errno_ret) {
        (Some(max), Some(value)) if value > max => {
            return Err(SeccompError::ErrnoRetOutOfRange {
                field: errno_field(),
                action: action_name(action),
                value,
                max,
            });
        }
        (Some(_), value) => value.unwrap_or(DEFAULT_ERRNO_RET),
        (None, Some(_)) => {
            return Err(SeccompError::ErrnoRetNotAllowed {
                field: errno_field(),
                action: action_name(action),
            });
        }
        (None, None) => 0,
    };
    // `value` is within MAX_ERRNO_RET or MAX_TRACE_RET here, so the
    // conversions below cannot clamp.
    Ok(match action {
        LinuxSeccompAction::ScmpActErrno => {
            ScmpAction::Errno(i32::try_from(value).unwrap_or(i32::MAX))
        }
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(u16::try_from(value).unwrap_or(u16::MAX))
        }
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    })
}

/// Remembers which actions have been checked against libseccomp and the
/// kernel, so that a long profile probes each action once.
#[derive(Debug, Default)]
struct ActionCheck {
    supported: Vec<LinuxSeccompAction>,
}

impl ActionCheck {
    fn ensure_supported(
        &mut self,
        action: LinuxSeccompAction,
        field: impl FnOnce() -> String,
    ) -> Result<(), SeccompError> {
        if self.supported.contains(&action) {
            return Ok(());
        }
        if !features::action_supported(action) {
            return Err(SeccompError::UnsupportedAction {
                field: field(),
                action: action_name(action),
                version: version_string(),
                api_level: api_level(),
            });
        }
        self.supported.push(action);
        Ok(())
    }
}

/// Splits the argument conditions of one `syscalls[]` entry into the
/// condition sets of the libseccomp rules to add.
///
/// libseccomp ANDs the conditions of a rule and refuses two conditions on the
/// same argument. As runc does: when no argument index repeats, all
/// conditions form one rule; when one does, every condition becomes a rule
/// of its own (so the conditions are ORed). Without conditions there is one
/// unconditional rule.
fn condition_sets(
    field: &str,
    args: &[LinuxSeccompArg],
) -> Result<Vec<Vec<ScmpArgCompare>>, SeccompError> {
    let mut per_index = [0_usize; ARG_COUNT];
    let mut conditions = Vec::with_capacity(args.len());
    for (j, arg) in args.iter().enumerate() {
        let index = arg.index();
        let Some(count) = per_index.get_mut(index) else {
            return Err(SeccompError::ArgIndexOutOfRange {
                field: format!("{field}.args[{j}].index"),
                index,
            });
        };
        *count += 1;
        conditions.push(arg_compare(arg));
    }
    if per_index.iter().any(|count| *count > 1) {
        Ok(conditions
            .into_iter()
            .map(|condition| vec![condition])
            .collect())
    } else {
        Ok(vec![conditions])
    }
}

/// One argument condition. The index must already be checked.
///
/// For `SCMP_CMP_MASKED_EQ`, `value` is the mask and `valueTwo` the value the
/// masked argument must equal (`(arg & value) == valueTwo`), as in runc and
/// Docker's profiles. Other operators compare with `value`; their
/// `valueTwo` is ignored, as runc does (Docker's profiles set it to 0).
fn arg_compare(arg: &LinuxSeccompArg) -> ScmpArgCompare {
    let (op, datum) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    // Below ARG_COUNT, so it fits.
    let index = u32::try_from(arg.index()).unwrap_or(u32::MAX);
    ScmpArgCompare::new(index, op, datum)
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder};

    use super::*;
    use crate::eval::{errno, Call, ALLOW};
    use crate::supported_flags;

    fn rule(names: &[&str], action: LinuxSeccompAction) -> LinuxSyscall {
        LinuxSyscallBuilder::default()
            .names(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .action(action)
            .build()
            .unwrap()
    }

    fn arg(index: usize, op: LinuxSeccompOperator, value: u64) -> LinuxSeccompArg {
        LinuxSeccompArgBuilder::default()
            .index(index)
            .op(op)
            .value(value)
            .build()
            .unwrap()
    }

    fn profile(default: LinuxSeccompAction, syscalls: Vec<LinuxSyscall>) -> LinuxSeccomp {
        LinuxSeccompBuilder::default()
            .default_action(default)
            .syscalls(syscalls)
            .build()
            .unwrap()
    }

    fn allow_with(syscalls: Vec<LinuxSyscall>) -> LinuxSeccomp {
        profile(LinuxSeccompAction::ScmpActAllow, syscalls)
    }

    fn compile_err(seccomp: &LinuxSeccomp) -> SeccompError {
        match compile(seccomp) {
            Ok(filter) => panic!("expected an error, got {filter:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn valid_profile_compiles_to_a_program() {
        let seccomp = allow_with(vec![rule(
            &["uname", "getcwd"],
            LinuxSeccompAction::ScmpActErrno,
        )]);

        let filter = compile(&seccomp).unwrap();

        assert!(!filter.uses_notify());
        assert_eq!(
            filter.decide(&Call::native("uname", &[])),
            errno(libc::EPERM)
        );
        assert_eq!(
            filter.decide(&Call::native("getcwd", &[])),
            errno(libc::EPERM)
        );
        assert_eq!(filter.decide(&Call::native("getpid", &[])), ALLOW);
    }

    #[test]
    fn unknown_syscall_names_its_entry() {
        let seccomp = allow_with(vec![
            rule(&["uname"], LinuxSeccompAction::ScmpActErrno),
            rule(&["getcwd"], LinuxSeccompAction::ScmpActErrno),
            rule(&["getpid"], LinuxSeccompAction::ScmpActErrno),
            rule(&["getppid", "foo"], LinuxSeccompAction::ScmpActErrno),
        ]);

        let err = compile_err(&seccomp);

        assert!(matches!(&err, SeccompError::UnknownSyscall { field, name }
            if field == "linux.seccomp.syscalls[3]" && name == "foo"));
        assert_eq!(
            err.to_string(),
            r#"unknown syscall "foo" in linux.seccomp.syscalls[3]"#
        );
    }

    #[test]
    fn unknown_syscall_is_an_error_even_in_a_redundant_rule() {
        let seccomp = allow_with(vec![rule(
            &["nosuchcall"],
            LinuxSeccompAction::ScmpActAllow,
        )]);

        assert!(matches!(
            compile_err(&seccomp),
            SeccompError::UnknownSyscall { .. }
        ));
    }

    #[test]
    fn empty_syscall_name_is_unknown() {
        let seccomp = allow_with(vec![rule(&[""], LinuxSeccompAction::ScmpActErrno)]);

        assert!(
            matches!(compile_err(&seccomp), SeccompError::UnknownSyscall { name, .. }
            if name.is_empty())
        );
    }

    #[test]
    fn syscall_of_another_architecture_is_known() {
        // Exists on ARM only; on any other host it is a pseudo-syscall that
        // libseccomp leaves out of the native part of the filter.
        let seccomp = allow_with(vec![rule(
            &[
                "arm_fadvise64_64",
                "s390_pci_mmio_read",
                "riscv_flush_icache",
                "socketcall",
            ],
            LinuxSeccompAction::ScmpActErrno,
        )]);

        let filter = compile(&seccomp).unwrap();

        // socketcall is i386's, not the host's: nothing native is denied.
        for nr in 0..460 {
            assert_eq!(filter.decide(&Call::number(nr)), ALLOW, "syscall {nr}");
        }
    }

    #[test]
    fn empty_names_is_rejected() {
        let seccomp = allow_with(vec![
            rule(&["uname"], LinuxSeccompAction::ScmpActErrno),
            rule(&[], LinuxSeccompAction::ScmpActErrno),
        ]);

        let err = compile_err(&seccomp);

        assert!(matches!(&err, SeccompError::EmptyNames { field }
            if field == "linux.seccomp.syscalls[1].names"));
    }

    #[test]
    fn errno_ret_with_allow_is_rejected() {
        let mut entry = rule(&["uname"], LinuxSeccompAction::ScmpActAllow);
        entry.set_errno_ret(Some(1));
        let seccomp = profile(LinuxSeccompAction::ScmpActErrno, vec![entry]);

        let err = compile_err(&seccomp);

        assert!(
            matches!(&err, SeccompError::ErrnoRetNotAllowed { field, action }
            if field == "linux.seccomp.syscalls[0].errnoRet" && *action == "SCMP_ACT_ALLOW")
        );
    }

    #[test]
    fn default_errno_ret_with_kill_is_rejected() {
        let mut seccomp = profile(LinuxSeccompAction::ScmpActKillProcess, vec![]);
        seccomp.set_default_errno_ret(Some(38));

        let err = compile_err(&seccomp);

        assert!(
            matches!(&err, SeccompError::ErrnoRetNotAllowed { field, action }
            if field == "linux.seccomp.defaultErrnoRet" && *action == "SCMP_ACT_KILL_PROCESS")
        );
    }

    #[test]
    fn errno_ret_above_libseccomp_limit_is_rejected() {
        let mut entry = rule(&["uname"], LinuxSeccompAction::ScmpActErrno);
        entry.set_errno_ret(Some(MAX_ERRNO_RET + 1));
        let seccomp = allow_with(vec![entry]);

        let err = compile_err(&seccomp);

        assert!(
            matches!(&err, SeccompError::ErrnoRetOutOfRange { value, max, .. }
            if *value == MAX_ERRNO_RET + 1 && *max == MAX_ERRNO_RET)
        );
    }

    #[test]
    fn largest_errno_ret_is_accepted() {
        let mut entry = rule(&["uname"], LinuxSeccompAction::ScmpActErrno);
        entry.set_errno_ret(Some(MAX_ERRNO_RET));

        let filter = compile(&allow_with(vec![entry])).unwrap();

        assert_eq!(
            filter.decide(&Call::native("uname", &[])),
            errno(MAX_ERRNO_RET as i32)
        );
    }

    #[test]
    fn trace_takes_a_sixteen_bit_errno_ret() {
        let mut entry = rule(&["uname"], LinuxSeccompAction::ScmpActTrace);
        entry.set_errno_ret(Some(MAX_TRACE_RET));
        let filter = compile(&allow_with(vec![entry.clone()])).unwrap();
        assert_eq!(
            filter.decide(&Call::native("uname", &[])),
            libc::SECCOMP_RET_TRACE | MAX_TRACE_RET
        );

        entry.set_errno_ret(Some(MAX_TRACE_RET + 1));
        assert!(matches!(
            compile_err(&allow_with(vec![entry])),
            SeccompError::ErrnoRetOutOfRange { .. }
        ));
    }

    #[test]
    fn errno_ret_defaults_to_eperm() {
        let action = scmp_action(LinuxSeccompAction::ScmpActErrno, None, String::new).unwrap();

        assert_eq!(action, ScmpAction::Errno(libc::EPERM));
    }

    #[test]
    fn arg_index_above_five_is_rejected() {
        let mut entry = rule(&["uname"], LinuxSeccompAction::ScmpActErrno);
        entry.set_args(Some(vec![
            arg(0, LinuxSeccompOperator::ScmpCmpEq, 1),
            arg(6, LinuxSeccompOperator::ScmpCmpEq, 1),
        ]));
        let seccomp = allow_with(vec![
            rule(&["getpid"], LinuxSeccompAction::ScmpActErrno),
            entry,
        ]);

        let err = compile_err(&seccomp);

        assert!(
            matches!(&err, SeccompError::ArgIndexOutOfRange { field, index }
            if field == "linux.seccomp.syscalls[1].args[1].index" && *index == 6)
        );
    }

    #[test]
    fn rule_with_the_default_action_is_skipped() {
        // libseccomp itself refuses such a rule with EACCES.
        let seccomp = allow_with(vec![rule(&["uname"], LinuxSeccompAction::ScmpActAllow)]);

        let filter = compile(&seccomp).unwrap();

        assert_eq!(filter.decide(&Call::native("uname", &[])), ALLOW);
    }

    #[test]
    fn errno_rule_with_another_errno_than_the_default_is_kept() {
        let mut entry = rule(&["uname"], LinuxSeccompAction::ScmpActErrno);
        entry.set_errno_ret(Some(38));
        let seccomp = profile(LinuxSeccompAction::ScmpActErrno, vec![entry.clone()]);
        let plan = Plan::from_spec(&seccomp).unwrap();

        assert_eq!(plan.default_action, ScmpAction::Errno(libc::EPERM));
        assert_eq!(plan.rules[0].action, ScmpAction::Errno(38));
        let filter = compile(&seccomp).unwrap();
        assert_eq!(filter.decide(&Call::native("uname", &[])), errno(38));
        // Older than uname, unlisted: the default; newer than any listed: ENOSYS.
        assert_eq!(
            filter.decide(&Call::native("getpid", &[])),
            errno(libc::EPERM)
        );
        assert_eq!(
            filter.decide(&Call::native("close_range", &[])),
            errno(libc::ENOSYS)
        );
    }

    #[test]
    fn distinct_indexes_make_one_rule_with_all_conditions() {
        let args = [
            arg(0, LinuxSeccompOperator::ScmpCmpEq, 1),
            arg(2, LinuxSeccompOperator::ScmpCmpNe, 3),
        ];

        let sets = condition_sets("f", &args).unwrap();

        assert_eq!(
            sets,
            vec![vec![
                ScmpArgCompare::new(0, ScmpCompareOp::Equal, 1),
                ScmpArgCompare::new(2, ScmpCompareOp::NotEqual, 3),
            ]]
        );
    }

    #[test]
    fn repeated_index_makes_one_rule_per_condition() {
        let args = [
            arg(0, LinuxSeccompOperator::ScmpCmpEq, 0),
            arg(0, LinuxSeccompOperator::ScmpCmpEq, 8),
            arg(1, LinuxSeccompOperator::ScmpCmpGt, 2),
        ];

        let sets = condition_sets("f", &args).unwrap();

        assert_eq!(
            sets,
            vec![
                vec![ScmpArgCompare::new(0, ScmpCompareOp::Equal, 0)],
                vec![ScmpArgCompare::new(0, ScmpCompareOp::Equal, 8)],
                vec![ScmpArgCompare::new(1, ScmpCompareOp::Greater, 2)],
            ]
        );
    }

    #[test]
    fn no_args_make_one_unconditional_rule() {
        assert_eq!(
            condition_sets("f", &[]).unwrap(),
            vec![Vec::<ScmpArgCompare>::new()]
        );
    }

    #[test]
    fn masked_eq_takes_the_mask_from_value_and_the_datum_from_value_two() {
        let masked = LinuxSeccompArgBuilder::default()
            .index(1_usize)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .value(0xff00_u64)
            .value_two(0x1200_u64)
            .build()
            .unwrap();

        assert_eq!(
            arg_compare(&masked),
            ScmpArgCompare::new(1, ScmpCompareOp::MaskedEqual(0xff00), 0x1200)
        );
    }

    #[test]
    fn value_two_is_ignored_for_other_operators() {
        let eq = LinuxSeccompArgBuilder::default()
            .index(0_usize)
            .op(LinuxSeccompOperator::ScmpCmpEq)
            .value(5_u64)
            .value_two(0_u64)
            .build()
            .unwrap();

        assert_eq!(
            arg_compare(&eq),
            ScmpArgCompare::new(0, ScmpCompareOp::Equal, 5)
        );
    }

    #[test]
    fn repeated_index_compiles() {
        let mut entry = rule(&["personality"], LinuxSeccompAction::ScmpActAllow);
        entry.set_args(Some(vec![
            arg(0, LinuxSeccompOperator::ScmpCmpEq, 0),
            arg(0, LinuxSeccompOperator::ScmpCmpEq, 8),
        ]));

        let filter = compile(&profile(LinuxSeccompAction::ScmpActErrno, vec![entry])).unwrap();

        // Conditions on one index are alternatives.
        for (persona, verdict) in [(0, ALLOW), (8, ALLOW), (4, errno(libc::EPERM))] {
            assert_eq!(
                filter.decide(&Call::native("personality", &[persona])),
                verdict,
                "personality({persona})"
            );
        }
    }

    #[test]
    fn notify_as_default_action_is_rejected() {
        let seccomp = profile(LinuxSeccompAction::ScmpActNotify, vec![]);

        assert!(matches!(
            compile_err(&seccomp),
            SeccompError::NotifyAsDefaultAction
        ));
    }

    #[test]
    fn notify_on_write_is_rejected() {
        let mut seccomp = allow_with(vec![rule(
            &["read", "write"],
            LinuxSeccompAction::ScmpActNotify,
        )]);
        seccomp.set_listener_path(Some("/run/agent.sock".into()));

        assert!(
            matches!(compile_err(&seccomp), SeccompError::NotifyOnWrite { field }
            if field == "linux.seccomp.syscalls[0]")
        );
    }

    #[test]
    fn notify_without_listener_path_is_rejected() {
        let seccomp = allow_with(vec![
            rule(&["uname"], LinuxSeccompAction::ScmpActErrno),
            rule(&["getcwd"], LinuxSeccompAction::ScmpActNotify),
        ]);

        assert!(
            matches!(compile_err(&seccomp), SeccompError::NotifyWithoutListener { field }
            if field == "linux.seccomp.syscalls[1]")
        );
    }

    #[test]
    fn listener_metadata_without_listener_path_is_rejected() {
        let mut seccomp = allow_with(vec![]);
        seccomp.set_listener_metadata(Some("agent data".to_owned()));

        assert!(matches!(
            compile_err(&seccomp),
            SeccompError::MetadataWithoutListener
        ));
    }

    #[test]
    fn notify_rule_marks_the_filter() {
        let mut seccomp = allow_with(vec![rule(&["getcwd"], LinuxSeccompAction::ScmpActNotify)]);
        seccomp.set_listener_path(Some("/run/agent.sock".into()));

        let filter = compile(&seccomp).unwrap();

        assert!(filter.uses_notify());
        assert!(filter.kernel_flags().new_listener);
    }

    #[test]
    fn every_supported_arch_compiles_and_no_other() {
        let supported = crate::supported_archs();
        for arch in crate::names::ALL_ARCHES {
            let mut seccomp = allow_with(vec![rule(&["uname"], LinuxSeccompAction::ScmpActErrno)]);
            seccomp.set_architectures(Some(vec![arch]));

            let result = compile(&seccomp);

            let name = arch_name(arch);
            if arch == Arch::ScmpArchNative || supported.contains(&name) {
                let filter = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                // The native part is always there, and it denies uname.
                assert_eq!(
                    filter.decide(&Call::native("uname", &[])),
                    errno(libc::EPERM),
                    "{name}"
                );
            } else {
                assert!(
                    matches!(
                        result,
                        Err(SeccompError::UnsupportedArch { .. }
                            | SeccompError::IncompatibleArch { .. })
                    ),
                    "{name}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn arch_that_cannot_join_the_filter_is_rejected_with_its_field() {
        // SuperH arrived in libseccomp 2.6; with an older library this is the
        // unsupported case, with a newer one SuperH is big/little-endian
        // specific and SHEB cannot join a little-endian host (or vice versa).
        let version = crate::libseccomp_version();
        let foreign_endian = if cfg!(target_endian = "little") {
            Arch::ScmpArchSheb
        } else {
            Arch::ScmpArchSh
        };
        let mut seccomp = allow_with(vec![]);
        seccomp.set_architectures(Some(vec![Arch::ScmpArchNative, foreign_endian]));

        let err = compile_err(&seccomp);

        if version < (2, 6, 0) {
            assert!(
                matches!(&err, SeccompError::UnsupportedArch { field, .. }
                if field == "linux.seccomp.architectures[1]"),
                "{err:?}"
            );
        } else {
            assert!(
                matches!(&err, SeccompError::IncompatibleArch { field, .. }
                if field == "linux.seccomp.architectures[1]"),
                "{err:?}"
            );
        }
    }

    #[test]
    fn every_flag_compiles_exactly_when_supported() {
        let supported = supported_flags();
        for flag in crate::names::ALL_FLAGS {
            let mut seccomp = allow_with(vec![rule(&["uname"], LinuxSeccompAction::ScmpActErrno)]);
            seccomp.set_flags(Some(vec![flag]));

            let result = compile(&seccomp);

            let name = flag_name(flag);
            if supported.contains(&name) {
                assert!(result.is_ok(), "{name}: {result:?}");
            } else {
                let err = result.unwrap_err();
                assert!(
                    matches!(&err, SeccompError::UnsupportedFlag { field, flag, .. }
                    if field == "linux.seccomp.flags[0]" && *flag == name),
                    "{err:?}"
                );
                assert!(err.to_string().contains(name));
            }
        }
    }

    #[test]
    fn absent_flags_mean_spec_allow_where_supported_and_empty_flags_mean_none() {
        let spec_allow_supported = supported_flags().contains(&"SECCOMP_FILTER_FLAG_SPEC_ALLOW");
        let mut seccomp = allow_with(vec![]);

        let absent = compile(&seccomp).unwrap();
        seccomp.set_flags(Some(vec![]));
        let empty = compile(&seccomp).unwrap();

        assert_eq!(absent.kernel_flags().spec_allow, spec_allow_supported);
        assert_eq!(empty.kernel_flags(), KernelFlags::default());
    }

    #[test]
    fn requested_flags_reach_the_kernel_flags() {
        let supported = supported_flags();
        let mut seccomp = allow_with(vec![]);
        let wanted: Vec<_> = [
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog,
        ]
        .into_iter()
        .filter(|f| supported.contains(&flag_name(*f)))
        .collect();
        seccomp.set_flags(Some(wanted.clone()));

        let flags = compile(&seccomp).unwrap().kernel_flags();

        assert_eq!(
            flags.tsync,
            wanted.contains(&LinuxSeccompFilterFlag::SeccompFilterFlagTsync)
        );
        assert_eq!(
            flags.log,
            wanted.contains(&LinuxSeccompFilterFlag::SeccompFilterFlagLog)
        );
        assert!(!flags.spec_allow);
    }

    #[test]
    fn long_profile_compiles_with_tree_optimisation() {
        let names = [
            "uname",
            "getcwd",
            "getpid",
            "getppid",
            "getuid",
            "geteuid",
            "getgid",
            "getegid",
            "gettid",
            "getpgrp",
            "getsid",
            "getpgid",
            "getresuid",
            "getresgid",
            "getgroups",
            "setuid",
            "setgid",
            "setsid",
            "setpgid",
            "setreuid",
            "setregid",
            "setresuid",
            "setresgid",
            "setgroups",
            "chdir",
            "fchdir",
            "chroot",
            "mkdir",
            "rmdir",
            "unlink",
            "link",
            "symlink",
            "rename",
            "chmod",
        ];
        assert!(names.len() > OPTIMIZE_ABOVE_RULES);
        let seccomp = allow_with(vec![rule(&names, LinuxSeccompAction::ScmpActErrno)]);

        let filter = compile(&seccomp).unwrap();

        for name in names {
            assert_eq!(
                filter.decide(&Call::native(name, &[])),
                errno(libc::EPERM),
                "{name}"
            );
        }
        for name in ["read", "write", "getpriority", "openat", "close_range"] {
            assert_eq!(filter.decide(&Call::native(name, &[])), ALLOW, "{name}");
        }
    }
}
