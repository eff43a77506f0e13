//! AppArmor and SELinux: detected, and labels applied for the next exec.

use std::fs;

use crate::error::{Context, Result};

pub fn apparmor_enabled() -> bool {
    fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim() == "Y")
        .unwrap_or(false)
}

pub fn selinux_enabled() -> bool {
    std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

/// Asks AppArmor to confine the next exec with `profile`.
pub fn apparmor_exec(profile: &str) -> Result<()> {
    let attr = if std::path::Path::new("/proc/self/attr/apparmor/exec").exists() {
        "/proc/self/attr/apparmor/exec"
    } else {
        "/proc/self/attr/exec"
    };
    fs::write(attr, format!("exec {profile}"))
        .ctx(|| format!("set AppArmor profile {profile:?} via {attr}"))
}

/// Sets the SELinux label of the next exec.
pub fn selinux_exec(label: &str) -> Result<()> {
    fs::write("/proc/self/attr/exec", label).ctx(|| format!("set SELinux exec label {label:?}"))
}
