//! AppArmor and SELinux: detected, and labels applied for the next exec.

use std::fs;
use std::io::Write;

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
    write_proc_attr(attr, format!("exec {profile}").as_bytes())
        .ctx(|| format!("set AppArmor profile {profile:?} via {attr}"))
}

/// Sets the SELinux label of the next exec.
pub fn selinux_exec(label: &str) -> Result<()> {
    write_proc_attr("/proc/self/attr/exec", label.as_bytes())
        .ctx(|| format!("set SELinux exec label {label:?}"))
}

/// Writes an LSM attribute file, refusing one that is not on procfs: a container that got
/// something else mounted over /proc would otherwise swallow the label silently
/// (CVE-2019-16884).
fn write_proc_attr(path: &str, value: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    let st = nix::sys::statfs::fstatfs(&f)?;
    if st.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(std::io::Error::other(format!(
            "{path} is not on procfs (something is mounted over /proc)"
        )));
    }
    f.write_all(value)
}
