//! Rootless mode: berth run by an unprivileged user (or as root inside a user namespace
//! it does not own the host from).
//!
//! - The user namespace maps are written as an unprivileged process may: a single
//!   mapping of the caller's own uid/gid directly (with setgroups denied, as the kernel
//!   requires for gid_map), anything else through the setuid helpers newuidmap and
//!   newgidmap, which check the ranges against /etc/subuid and /etc/subgid.
//! - Cgroups are used only where the caller may create them (a tree delegated to the
//!   user). Otherwise the container runs without one, as runc does; a spec that asks for
//!   resource limits then fails with an error saying so, rather than running unlimited.
//! - The state root defaults to `$XDG_RUNTIME_DIR/berth`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::{access, AccessFlags, Pid};
use oci_spec::runtime::{Linux, LinuxIdMapping, LinuxResources};

use crate::error::{Context, Error, Result};

/// `--rootless true|false|auto`; auto (or no flag) means rootless when not root or when
/// in a user namespace that does not map all ids.
pub fn detect(flag: Option<&str>) -> std::result::Result<bool, String> {
    match flag {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        None | Some("auto") => Ok(!nix::unistd::geteuid().is_root() || in_user_namespace()),
        Some(other) => Err(format!(
            "--rootless: {other:?} is not one of true, false, auto"
        )),
    }
}

fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| {
            let f: Vec<&str> = m.split_whitespace().collect();
            f != ["0", "0", "4294967295"]
        })
        .unwrap_or(false)
}

/// The state root when --root is not given: /run/berth for root, else
/// `$XDG_RUNTIME_DIR/berth`.
pub fn default_root() -> std::result::Result<PathBuf, String> {
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/run/berth"));
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => Ok(Path::new(&d).join("berth")),
        None => Err(
            "berth runs rootless and XDG_RUNTIME_DIR is not set: give --root (or \
                     BERTH_ROOT) a directory this user owns"
                .into(),
        ),
    }
}

/// True if `r` asks for any limit a cgroup would enforce (device rules aside: an
/// unprivileged user cannot restrict devices, and cannot create them either).
fn asks_for_limits(r: &LinuxResources) -> bool {
    r.memory().is_some()
        || r.cpu().is_some()
        || r.pids().is_some()
        || r.block_io().is_some()
        || r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty())
        || r.network().is_some()
        || r.rdma().as_ref().is_some_and(|h| !h.is_empty())
        || r.unified().as_ref().is_some_and(|h| !h.is_empty())
}

/// The cgroup a rootless container gets: `cg` if the caller may create every directory of
/// it, else none; an error if the spec asks for limits that would then be lost.
pub fn usable_cgroup(
    cg: berth_cgroups::Manager,
    linux: &Linux,
) -> std::result::Result<Option<berth_cgroups::Manager>, String> {
    let blocked = cg.cgroup_dirs().into_iter().find(|d| !may_create(d));
    let Some(dir) = blocked else {
        return Ok(Some(cg));
    };
    match linux.resources().as_ref().filter(|r| asks_for_limits(r)) {
        None => Ok(None),
        Some(_) => Err(format!(
            "berth runs rootless and cannot create the cgroup {}: the limits asked for \
             cannot be enforced. Delegate a cgroup to this user and point linux.cgroupsPath \
             into it, or drop the limits",
            dir.display()
        )),
    }
}

/// True if `dir` exists and is writable, or its nearest existing ancestor is.
fn may_create(dir: &Path) -> bool {
    let mut p = dir;
    loop {
        if p.exists() {
            return access(p, AccessFlags::W_OK | AccessFlags::X_OK).is_ok();
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return false,
        }
    }
}

/// Writes the id maps of the user namespace of `pid` without privilege.
pub fn write_id_maps(pid: Pid, uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<()> {
    let own = |maps: &[LinuxIdMapping], id: u32| matches!(maps, [m] if m.host_id() == id && m.size() == 1);
    if own(uids, nix::unistd::geteuid().as_raw()) {
        crate::namespace::write_id_map(pid, "uid_map", uids)?;
    } else {
        helper("newuidmap", "/etc/subuid", pid, uids)?;
    }
    if own(gids, nix::unistd::getegid().as_raw()) {
        // An unprivileged process may write gid_map only once setgroups is denied.
        let p = format!("/proc/{pid}/setgroups");
        std::fs::write(&p, "deny").ctx(|| format!("write deny to {p}"))?;
        crate::namespace::write_id_map(pid, "gid_map", gids)?;
    } else {
        helper("newgidmap", "/etc/subgid", pid, gids)?;
    }
    Ok(())
}

/// newuidmap/newgidmap PID ID HOSTID SIZE...: the setuid helpers of shadow's uidmap
/// package, allowed the ranges of the caller's /etc/subuid and /etc/subgid entries.
fn helper(name: &str, file: &str, pid: Pid, maps: &[LinuxIdMapping]) -> Result<()> {
    let mut cmd = Command::new(name);
    cmd.arg(pid.to_string());
    for m in maps {
        cmd.args([
            m.container_id().to_string(),
            m.host_id().to_string(),
            m.size().to_string(),
        ]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Unsupported(format!(
                "rootless: mappings other than the caller's own id need {name} (Debian \
                 package uidmap), which is not on PATH"
            )),
            _ => Error::io(format!("run {name}"), e),
        })?;
    if !out.status.success() {
        return Err(Error::Unsupported(format!(
            "rootless: {name} {} failed: {} (the host ranges must be this user's in {file})",
            maps.iter()
                .map(|m| format!("{} {} {}", m.container_id(), m.host_id(), m.size()))
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
