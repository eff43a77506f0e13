//! The namespaces of a container: which are new, which are joined by path.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sched::{setns, CloneFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use crate::error::{Context, Result};

/// Every namespace type, in the order they are joined: user first (it grants the rights to
/// join the others), mount last (joining it changes how later paths resolve).
pub const ORDER: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Mount,
];

pub fn type_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "network",
        LinuxNamespaceType::Time => "time",
    }
}

pub fn clone_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The namespace section of a spec, checked for duplicates.
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    entries: Vec<(LinuxNamespaceType, Option<PathBuf>)>,
}

impl Namespaces {
    pub fn from_spec(list: &[LinuxNamespace]) -> std::result::Result<Self, String> {
        let mut entries: Vec<(LinuxNamespaceType, Option<PathBuf>)> = Vec::new();
        for ns in list {
            if entries.iter().any(|(t, _)| *t == ns.typ()) {
                return Err(format!("{} namespace listed twice", type_name(ns.typ())));
            }
            let path = ns.path().clone().filter(|p| !p.as_os_str().is_empty());
            entries.push((ns.typ(), path));
        }
        Ok(Namespaces { entries })
    }

    /// Listed at all (new or joined): the container does not share the host's.
    pub fn has(&self, t: LinuxNamespaceType) -> bool {
        self.entries.iter().any(|(x, _)| *x == t)
    }

    /// Listed without a path: a new namespace is made.
    pub fn creates(&self, t: LinuxNamespaceType) -> bool {
        self.entries.iter().any(|(x, p)| *x == t && p.is_none())
    }

    pub fn path(&self, t: LinuxNamespaceType) -> Option<&Path> {
        self.entries
            .iter()
            .find(|(x, _)| *x == t)
            .and_then(|(_, p)| p.as_deref())
    }

    /// Namespaces joined by path, in join order.
    pub fn joined(&self) -> impl Iterator<Item = (LinuxNamespaceType, &Path)> {
        ORDER
            .iter()
            .filter_map(move |t| self.path(*t).map(|p| (*t, p)))
    }

    /// Clone flags for the new namespaces, user excluded (it is made on its own first).
    pub fn new_flags_except_user(&self) -> CloneFlags {
        let mut f = CloneFlags::empty();
        for (t, p) in &self.entries {
            if p.is_none() && *t != LinuxNamespaceType::User {
                f |= clone_flag(*t);
            }
        }
        f
    }
}

/// An opened namespace file, ready for setns.
#[derive(Debug)]
pub struct NsFile {
    pub typ: LinuxNamespaceType,
    pub path: PathBuf,
    fd: OwnedFd,
}

/// Opens every namespace to join before joining any (a joined mount namespace would change
/// how the later paths resolve).
pub fn open_joined(ns: &Namespaces) -> Result<Vec<NsFile>> {
    ns.joined()
        .map(|(typ, path)| {
            let fd = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
                .ctx(|| format!("open {} namespace {}", type_name(typ), path.display()))?;
            Ok(NsFile {
                typ,
                path: path.to_path_buf(),
                fd,
            })
        })
        .collect()
}

impl NsFile {
    /// An already opened namespace file.
    pub fn from_fd(typ: LinuxNamespaceType, path: PathBuf, fd: OwnedFd) -> NsFile {
        NsFile { typ, path, fd }
    }

    pub fn raw_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }

    pub fn typ(&self) -> LinuxNamespaceType {
        self.typ
    }
}

pub fn join(f: &NsFile) -> Result<()> {
    setns(&f.fd, clone_flag(f.typ))
        .ctx(|| format!("join {} namespace {}", type_name(f.typ), f.path.display()))
}

/// Writes the uid and gid maps of the user namespace of `pid`.
pub fn write_id_maps(
    pid: nix::unistd::Pid,
    uids: &[oci_spec::runtime::LinuxIdMapping],
    gids: &[oci_spec::runtime::LinuxIdMapping],
) -> Result<()> {
    write_id_map(pid, "uid_map", uids)?;
    write_id_map(pid, "gid_map", gids)
}

/// Writes one map file (`uid_map` or `gid_map`) of the user namespace of `pid`.
pub fn write_id_map(
    pid: nix::unistd::Pid,
    file: &str,
    maps: &[oci_spec::runtime::LinuxIdMapping],
) -> Result<()> {
    let text: String = maps
        .iter()
        .map(|e| format!("{} {} {}\n", e.container_id(), e.host_id(), e.size()))
        .collect();
    let p = format!("/proc/{pid}/{file}");
    std::fs::write(&p, &text).ctx(|| format!("write {p} ({})", text.trim().replace('\n', "; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(t: LinuxNamespaceType, p: Option<&str>) -> LinuxNamespace {
        let mut n = LinuxNamespace::default();
        n.set_typ(t);
        n.set_path(p.map(PathBuf::from));
        n
    }

    #[test]
    fn duplicates_are_refused() {
        let e = Namespaces::from_spec(&[
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Pid, Some("/proc/1/ns/pid")),
        ])
        .unwrap_err();
        assert!(e.contains("pid namespace listed twice"));
    }

    #[test]
    fn new_and_joined() {
        let n = Namespaces::from_spec(&[
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Network, Some("/var/run/netns/x")),
            ns(LinuxNamespaceType::User, None),
        ])
        .unwrap();
        assert!(n.creates(LinuxNamespaceType::Mount));
        assert!(!n.creates(LinuxNamespaceType::Network));
        assert!(n.has(LinuxNamespaceType::Network));
        assert!(!n.has(LinuxNamespaceType::Pid));
        assert_eq!(n.new_flags_except_user(), CloneFlags::CLONE_NEWNS);
        let j: Vec<_> = n.joined().collect();
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].0, LinuxNamespaceType::Network);
    }

    #[test]
    fn join_order_puts_user_first_and_mount_last() {
        assert_eq!(ORDER[0], LinuxNamespaceType::User);
        assert_eq!(ORDER[ORDER.len() - 1], LinuxNamespaceType::Mount);
    }
}
