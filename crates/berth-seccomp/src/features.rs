//! What this build, the linked libseccomp and the running kernel support,
//! for `berth features` and for compile-time checks.
//!
//! Each answer comes from asking libseccomp the same question `compile`
//! asks (create a context with the action, add the architecture, set the
//! flag), so the two cannot disagree. libseccomp caches its kernel probes
//! itself; nothing is cached here.

use libseccomp::{ScmpAction, ScmpFilterContext, ScmpVersion};
use oci_spec::runtime::{Arch, LinuxSeccompAction, LinuxSeccompFilterFlag};

use crate::compile::scmp_action;
use crate::filter::KernelFlags;
use crate::names::{
    action_name, arch_name, flag_name, operator_name, scmp_arch, ALL_ACTIONS, ALL_ARCHES,
    ALL_FLAGS, ALL_OPERATORS,
};

/// The actions that filters can use here, by their spec names.
///
/// libseccomp refuses to create a filter context whose default action it or
/// the kernel cannot apply, which is the probe used.
pub fn supported_actions() -> Vec<&'static str> {
    ALL_ACTIONS
        .into_iter()
        .filter(|a| action_supported(*a))
        .map(action_name)
        .collect()
}

/// The architectures that can be listed in `linux.seccomp.architectures`
/// here, by their spec names: known to the linked libseccomp and able to
/// share a filter with the native architecture (same byte order).
pub fn supported_archs() -> Vec<&'static str> {
    ALL_ARCHES
        .into_iter()
        .filter(|arch| *arch != Arch::ScmpArchNative && arch_supported(*arch))
        .map(arch_name)
        .collect()
}

/// The filter flags that can be set here, by their spec names.
pub fn supported_flags() -> Vec<&'static str> {
    ALL_FLAGS
        .into_iter()
        .filter(|flag| flag_supported(*flag))
        .map(flag_name)
        .collect()
}

/// The argument comparison operators, by their spec names (libseccomp has
/// supported all of them since before any version this crate builds with).
pub fn supported_operators() -> Vec<&'static str> {
    ALL_OPERATORS.into_iter().map(operator_name).collect()
}

/// The version of the libseccomp this process runs with (not the one it was
/// built against), as `(major, minor, micro)`.
pub fn libseccomp_version() -> (u32, u32, u32) {
    // libseccomp returns a pointer to a static; the binding only fails on a
    // null pointer, which no libseccomp release returns.
    ScmpVersion::current().map_or((0, 0, 0), |v| (v.major, v.minor, v.micro))
}

pub(crate) fn version_string() -> String {
    let (major, minor, micro) = libseccomp_version();
    format!("{major}.{minor}.{micro}")
}

/// libseccomp's API level for the running kernel: 5 and up has
/// `SCMP_ACT_NOTIFY`, 6 adds TSYNC together with notify, 7 adds
/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (libseccomp 2.6).
pub(crate) fn api_level() -> u32 {
    libseccomp::get_api()
}

pub(crate) fn action_supported(action: LinuxSeccompAction) -> bool {
    scmp_action(action, None, String::new).is_ok_and(|scmp| ScmpFilterContext::new(scmp).is_ok())
}

fn arch_supported(arch: Arch) -> bool {
    ScmpFilterContext::new(ScmpAction::Allow)
        .and_then(|mut ctx| ctx.add_arch(scmp_arch(arch)).map(|_| ()))
        .is_ok()
}

fn flag_supported(flag: LinuxSeccompFilterFlag) -> bool {
    ScmpFilterContext::new(ScmpAction::Allow)
        .and_then(|mut ctx| set_flag(&mut ctx, flag, &mut KernelFlags::default()))
        .is_ok()
}

/// Sets a flag on a context, which fails where libseccomp or the kernel
/// lacks it, and records it for the seccomp(2) call.
pub(crate) fn set_flag(
    ctx: &mut ScmpFilterContext,
    flag: LinuxSeccompFilterFlag,
    kernel_flags: &mut KernelFlags,
) -> Result<(), libseccomp::error::SeccompError> {
    match flag {
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => {
            ctx.set_ctl_tsync(true)?;
            kernel_flags.tsync = true;
        }
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => {
            ctx.set_ctl_log(true)?;
            kernel_flags.log = true;
        }
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
            ctx.set_ctl_ssb(true)?;
            kernel_flags.spec_allow = true;
        }
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
            ctx.set_ctl_waitkill(true)?;
            kernel_flags.wait_killable_recv = true;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_actions_are_always_supported() {
        let actions = supported_actions();

        for name in [
            "SCMP_ACT_KILL",
            "SCMP_ACT_KILL_THREAD",
            "SCMP_ACT_TRAP",
            "SCMP_ACT_ERRNO",
            "SCMP_ACT_TRACE",
            "SCMP_ACT_ALLOW",
        ] {
            assert!(actions.contains(&name), "{name} missing from {actions:?}");
        }
    }

    #[test]
    fn notify_is_supported_exactly_from_api_level_five() {
        assert_eq!(
            supported_actions().contains(&"SCMP_ACT_NOTIFY"),
            api_level() >= 5
        );
    }

    #[test]
    fn native_arch_is_supported_and_native_token_is_not_listed() {
        let archs = supported_archs();
        let native = if cfg!(target_arch = "x86_64") {
            "SCMP_ARCH_X86_64"
        } else if cfg!(target_arch = "aarch64") {
            "SCMP_ARCH_AARCH64"
        } else if cfg!(target_arch = "riscv64") {
            "SCMP_ARCH_RISCV64"
        } else if cfg!(target_arch = "s390x") {
            "SCMP_ARCH_S390X"
        } else {
            "SCMP_ARCH_PPC64LE"
        };

        assert!(archs.contains(&native), "{archs:?}");
        assert!(!archs.contains(&"SCMP_ARCH_NATIVE"));
    }

    #[test]
    fn wait_killable_recv_needs_libseccomp_2_6() {
        let supported = supported_flags().contains(&"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV");

        if libseccomp_version() < (2, 6, 0) {
            assert!(!supported);
        } else {
            assert_eq!(supported, api_level() >= 7);
        }
    }

    #[test]
    fn all_operators_are_listed() {
        assert_eq!(supported_operators().len(), ALL_OPERATORS.len());
    }

    #[test]
    fn version_is_that_of_a_real_libseccomp() {
        assert!(
            libseccomp_version() >= (2, 5, 0),
            "{:?}",
            libseccomp_version()
        );
    }
}
