//! Idmapped bind mounts (`idmap`/`ridmap` options, `uidMappings`/`gidMappings` of a mount).
//!
//! The kernel lets only a process with CAP_SYS_ADMIN over the source filesystem's user
//! namespace idmap a mount: the host, not the container's init, which may live in a user
//! namespace of its own. So `create` makes each idmapped tree before it forks: a detached
//! clone of the source (open_tree), idmapped (mount_setattr MOUNT_ATTR_IDMAP) through a
//! user namespace that holds the mount's mappings. The init inherits the fd and attaches
//! the tree (move_mount) where a plain bind would have gone.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe, read, write, ForkResult};
use oci_spec::runtime::{LinuxIdMapping, Mount, Spec};

use crate::error::{Context, Error, Result};

/// One mount's idmapped tree, ready to attach.
#[derive(Debug)]
pub struct Prepared {
    /// Index of the mount in the spec's `mounts`.
    pub index: usize,
    pub tree: OwnedFd,
}

/// True if the mount asks for an idmap (by option or by mappings).
pub fn wanted(m: &Mount) -> bool {
    let opts = super::options::parse(m.options().as_deref().unwrap_or(&[]));
    opts.idmap || m.uid_mappings().is_some() || m.gid_mappings().is_some()
}

/// The mappings a mount uses: its own, else (option only) the container's user namespace
/// mappings. Spec validation guarantees one or the other exists.
fn mappings<'a>(spec: &'a Spec, m: &'a Mount) -> (&'a [LinuxIdMapping], &'a [LinuxIdMapping]) {
    match (m.uid_mappings(), m.gid_mappings()) {
        (Some(u), Some(g)) => (u, g),
        _ => {
            let linux = spec.linux().as_ref().expect("validated");
            (
                linux.uid_mappings().as_deref().unwrap_or(&[]),
                linux.gid_mappings().as_deref().unwrap_or(&[]),
            )
        }
    }
}

/// In `create`, before the fork: every idmapped tree of the spec.
pub fn prepare_all(spec: &Spec) -> Result<Vec<Prepared>> {
    let mut out = Vec::new();
    for (index, m) in spec.mounts().as_deref().unwrap_or(&[]).iter().enumerate() {
        if !wanted(m) {
            continue;
        }
        let opts = super::options::parse(m.options().as_deref().unwrap_or(&[]));
        let src = m
            .source()
            .as_deref()
            .expect("validated: binds have a source");
        let (uids, gids) = mappings(spec, m);
        let what = || {
            format!(
                "mounts[{index}] ({}): idmap {}",
                m.destination().display(),
                src.display()
            )
        };
        let userns = mapping_userns(uids, gids)
            .map_err(|e| Error::Unsupported(format!("{}: {}", what(), e.chain())))?;
        let tree = super::open_tree_clone(src, opts.flags.contains(MsFlags::MS_REC))
            .ctx(|| format!("{}: clone the source mount", what()))?;
        super::set_mount_idmap(tree.as_fd(), opts.ridmap, userns.as_fd()).map_err(|e| {
            let hint = match e {
                Errno::EINVAL => " (the source filesystem may not support idmapped mounts)",
                _ => "",
            };
            Error::Unsupported(format!(
                "{}: mount_setattr MOUNT_ATTR_IDMAP: {}{hint}",
                what(),
                e.desc()
            ))
        })?;
        out.push(Prepared { index, tree });
    }
    Ok(out)
}

/// In the init: attaches an idmapped tree onto `target` (an O_PATH fd in the rootfs).
pub fn attach(tree: BorrowedFd<'_>, target: BorrowedFd<'_>, dest: &Path) -> Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    let empty = c"";
    // SAFETY: move_mount(2) takes two open fds and two empty NUL-terminated paths.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    Errno::result(rc)
        .map(drop)
        .ctx(|| format!("attach the idmapped mount on {}", dest.display()))
}

/// A user namespace holding `uids` and `gids`, as an fd: a child unshares it and waits
/// while this process writes its maps and opens it; then the child is killed.
fn mapping_userns(uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<OwnedFd> {
    let (ready_r, ready_w) = pipe().ctx(|| "pipe".into())?;
    let (hold_r, hold_w) = pipe().ctx(|| "pipe".into())?;
    // SAFETY: berth is single-threaded during create; the child only makes syscalls.
    match unsafe { fork() }.ctx(|| "fork a process for the mount's user namespace".into())? {
        ForkResult::Child => {
            drop(ready_r);
            drop(hold_w);
            let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = write(&ready_w, if ok { b"1" } else { b"0" });
            let mut b = [0u8; 1];
            // Blocks until the parent is done (it kills us, or closes its end).
            let _ = read(hold_r.as_fd(), &mut b);
            // SAFETY: leaving the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(hold_r);
            let res = (|| {
                let mut b = [0u8; 1];
                let n =
                    read(ready_r.as_fd(), &mut b).ctx(|| "wait for the user namespace".into())?;
                if n != 1 || b[0] != b'1' {
                    return Err(Error::Unsupported(
                        "could not make a user namespace for the mount's mappings".into(),
                    ));
                }
                crate::namespace::write_id_maps(child, uids, gids)?;
                let p = format!("/proc/{child}/ns/user");
                nix::fcntl::open(
                    p.as_str(),
                    nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .ctx(|| format!("open {p}"))
            })();
            let _ = kill(child, Signal::SIGKILL);
            drop(hold_w);
            let _ = waitpid(child, None);
            res
        }
    }
}
