//! Persistent network namespaces: a pod's network namespace exists before its first process
//! (the plugins need it) and outlives them all (DEL needs it), so it is pinned by a bind
//! mount of its nsfs file onto a file under a directory, `/run/berth/netns` by default.
//!
//! **Making one.** A short-lived thread unshares CLONE_NEWNET (which a thread may do alone;
//! the process and the caller's thread stay where they were), sets `lo` up in the new
//! namespace over rtnetlink, bind-mounts its own `/proc/self/task/<tid>/ns/net` onto the
//! file, and exits: the thread never goes back to serve anything else in the wrong
//! namespace, which is the hazard containerd works around by setns-ing a locked Go thread
//! back. The mount is made in the process's mount namespace, which all threads share.
//!
//! **The directory's propagation.** The directory is made a mount point of its own (bound
//! onto itself where it is not one already) with shared propagation, as `ip netns add`
//! does for `/run/netns`. The reason is the mount namespaces made after a pod's netns
//! mount: every one of them (a container's, a systemd service's with PrivateTmp, ...) gets
//! a copy of the mount, and a copy pins the namespace (its veth and its address) as long
//! as it exists. Under a shared mount those copies are peers or slaves of ours, and the
//! unmount at removal propagates to them; under a private one they would stay. Shared also
//! means that a namespace made later shows up in mount namespaces that were copied from
//! ours as slaves. containerd's netns package does neither (the file sits in whatever mount
//! `/run` is, shared under systemd, private elsewhere); `private` would be the choice only
//! if the copies were wanted, and they never are. Since Linux 3.18 the unlink that follows
//! the unmount also detaches leftover copies in other mount namespaces of the same
//! filesystem, so both measures together leave nothing pinned.
//!
//! **Removing one** is an unmount with MNT_DETACH (the plugins' DEL may still hold the
//! namespace open: the namespace goes when the last user does) and an unlink; what is
//! already gone is not an error.

use std::fs::{self, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::Mode;
use nix::sys::statfs::{statfs, NSFS_MAGIC};
use nix::unistd::gettid;

use crate::error::NetnsError;

/// Where pods' network namespaces are pinned by default.
pub const DEFAULT_NETNS_DIR: &str = "/run/berth/netns";

/// Serializes the directory's mount setup within the process, so that two first creations
/// do not bind the directory onto itself twice.
static DIR_SETUP: Mutex<()> = Mutex::new(());

/// A directory of pinned network namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsDir {
    dir: PathBuf,
}

impl Default for NetnsDir {
    fn default() -> Self {
        NetnsDir::new(DEFAULT_NETNS_DIR)
    }
}

/// A pinned network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNs {
    path: PathBuf,
}

impl NetnsDir {
    pub fn new(dir: impl Into<PathBuf>) -> NetnsDir {
        NetnsDir { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the namespace `name`; the name must be a plain file name.
    pub fn path(&self, name: &str) -> Result<PathBuf, NetnsError> {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(NetnsError::BadName {
                name: name.to_string(),
            });
        }
        Ok(self.dir.join(name))
    }

    /// Makes a new network namespace with `lo` up, pinned at `<dir>/<name>`. The
    /// caller's network namespace does not change. Fails if the name is taken; on failure
    /// nothing is left.
    pub fn create(&self, name: &str) -> Result<NetNs, NetnsError> {
        let path = self.path(name)?;
        self.prepare()?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AlreadyExists => NetnsError::Exists { path: path.clone() },
                _ => NetnsError::Io {
                    path: path.clone(),
                    op: "create the mount point",
                    source,
                },
            })?;
        let target = path.clone();
        let made = std::thread::Builder::new()
            .name("berth-netns".into())
            .spawn(move || pin_new_netns(&target))
            .map_err(|source| NetnsError::Io {
                path: path.clone(),
                op: "start the thread that makes it",
                source,
            })
            .and_then(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(NetnsError::ThreadPanicked { path: path.clone() }))
            });
        match made {
            Ok(()) => Ok(NetNs { path }),
            Err(e) => match remove_netns(&path) {
                Ok(()) => Err(e),
                Err(cleanup) => Err(NetnsError::CleanupFailed {
                    path,
                    source: Box::new(e),
                    cleanup: Box::new(cleanup),
                }),
            },
        }
    }

    /// Removes the namespace `name`; see [`remove_netns`].
    pub fn remove(&self, name: &str) -> Result<(), NetnsError> {
        remove_netns(&self.path(name)?)
    }

    /// The directory exists, is a mount point and has shared propagation (module docs).
    fn prepare(&self) -> Result<(), NetnsError> {
        let sys = |op| {
            let path = self.dir.clone();
            move |source| NetnsError::Sys { path, op, source }
        };
        fs::create_dir_all(&self.dir).map_err(|source| NetnsError::Io {
            path: self.dir.clone(),
            op: "create the directory",
            source,
        })?;
        let _one = DIR_SETUP.lock().unwrap_or_else(|p| p.into_inner());
        let make_shared = || {
            mount(
                None::<&str>,
                &self.dir,
                None::<&str>,
                MsFlags::MS_SHARED | MsFlags::MS_REC,
                None::<&str>,
            )
        };
        match make_shared() {
            Ok(()) => Ok(()),
            // Not a mount point: make it one.
            Err(Errno::EINVAL) => {
                mount(
                    Some(&self.dir),
                    &self.dir,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(sys("bind-mount the directory onto itself"))?;
                make_shared().map_err(sys("make the directory's mount shared"))
            }
            Err(e) => Err(sys("make the directory's mount shared")(e)),
        }
    }
}

/// Runs on a thread of its own, which ends after: unshares the network namespace, sets
/// `lo` up and pins the namespace at `path` (an existing empty file).
fn pin_new_netns(path: &Path) -> Result<(), NetnsError> {
    let sys = |op| {
        let path = path.to_path_buf();
        move |source| NetnsError::Sys { path, op, source }
    };
    unshare(CloneFlags::CLONE_NEWNET).map_err(sys("unshare(CLONE_NEWNET)"))?;
    crate::rtnl::set_link_up("lo").map_err(|source| NetnsError::Io {
        path: path.to_path_buf(),
        op: "set lo up",
        source,
    })?;
    let own = format!("/proc/self/task/{}/ns/net", gettid());
    mount(
        Some(own.as_str()),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys("bind-mount the new namespace"))
}

impl NetNs {
    /// A namespace pinned at `path` by someone (berthd after a restart, for one).
    pub fn from_path(path: impl Into<PathBuf>) -> NetNs {
        NetNs { path: path.into() }
    }

    /// The path plugins get as `CNI_NETNS`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the namespace (close-on-exec), for setns(2).
    pub fn open(&self) -> Result<OwnedFd, NetnsError> {
        open(
            &self.path,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| NetnsError::Sys {
            path: self.path.clone(),
            op: "open",
            source,
        })
    }

    /// Unpins the namespace; see [`remove_netns`].
    pub fn remove(&self) -> Result<(), NetnsError> {
        remove_netns(&self.path)
    }
}

/// Unpins the namespace at `path`: unmounts it (MNT_DETACH, repeated while a namespace is
/// still mounted there; never following a link) and removes the file. Either being gone
/// already is fine, so it can be called again after a crash or a partial removal.
pub fn remove_netns(path: &Path) -> Result<(), NetnsError> {
    // Only what is mounted is unmounted: umount2 of a plain file is EINVAL for root but
    // EPERM for anyone else. A bound: each round takes one mount off.
    let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    for _ in 0..16 {
        if is_link || !is_namespace(path) {
            break;
        }
        match umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => continue,
            // Not a mount point (a link, say), or gone meanwhile.
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => break,
            Err(source) => {
                return Err(NetnsError::Sys {
                    path: path.to_path_buf(),
                    op: "unmount",
                    source,
                })
            }
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Io {
            path: path.to_path_buf(),
            op: "remove the mount point",
            source,
        }),
    }
}

/// Whether `path` is a network namespace (or any namespace: an nsfs file), rather than a
/// leftover file or nothing.
pub fn is_namespace(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_plain_file_names() {
        let d = NetnsDir::new("/run/x");
        assert_eq!(d.path("pod-1").unwrap(), Path::new("/run/x/pod-1"));
        for bad in ["", ".", "..", "a/b", "../x", "a\0b"] {
            assert!(
                matches!(d.path(bad), Err(NetnsError::BadName { .. })),
                "{bad:?}"
            );
            assert!(d.remove(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn removing_what_is_not_there_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let d = NetnsDir::new(dir.path());
        d.remove("absent").unwrap();
        // A leftover plain file (a crash between unmount and unlink) goes too.
        fs::write(dir.path().join("left"), "").unwrap();
        d.remove("left").unwrap();
        assert!(!dir.path().join("left").exists());
        // A link is removed, never followed.
        std::os::unix::fs::symlink("/proc/self/ns/net", dir.path().join("link")).unwrap();
        d.remove("link").unwrap();
        assert!(fs::symlink_metadata(dir.path().join("link")).is_err());
    }

    #[test]
    fn our_own_namespace_is_a_namespace_and_a_file_is_not() {
        assert!(is_namespace(Path::new("/proc/self/ns/net")));
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(!is_namespace(f.path()));
        assert!(!is_namespace(Path::new("/nonexistent/netns")));
    }
}
