//! Mount options as runc accepts them: flags set or cleared, propagation changes, recursive
//! attributes (mount_setattr), runtime extensions, and everything else passed as fs data.

use nix::mount::MsFlags;

/// Recursive mount attributes, applied with mount_setattr(AT_RECURSIVE).
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR__ATIME: u64 = 0x70;
pub const MOUNT_ATTR_RELATIME: u64 = 0x0;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
pub const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

/// A parsed options list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Flags explicitly cleared ("rw", "suid"...): matter on a bind remount.
    pub cleared: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub rec_set: u64,
    pub rec_clr: u64,
    pub tmpcopyup: bool,
    /// `idmap` or `ridmap`: the bind is idmapped (not a mount(2) option).
    pub idmap: bool,
    /// `ridmap`: the idmap reaches submounts too.
    pub ridmap: bool,
    pub data: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            cleared: MsFlags::empty(),
            propagation: Vec::new(),
            rec_set: 0,
            rec_clr: 0,
            tmpcopyup: false,
            idmap: false,
            ridmap: false,
            data: Vec::new(),
        }
    }
}

const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

fn flag(o: &str) -> Option<(bool, MsFlags)> {
    use MsFlags as F;
    Some(match o {
        "acl" => (false, F::MS_POSIXACL),
        "async" => (true, F::MS_SYNCHRONOUS),
        "atime" => (true, F::MS_NOATIME),
        "bind" => (false, F::MS_BIND),
        "defaults" => (false, F::empty()),
        "dev" => (true, F::MS_NODEV),
        "diratime" => (true, F::MS_NODIRATIME),
        "dirsync" => (false, F::MS_DIRSYNC),
        "exec" => (true, F::MS_NOEXEC),
        "iversion" => (false, F::MS_I_VERSION),
        "lazytime" => (false, F::MS_LAZYTIME),
        "loud" => (true, F::MS_SILENT),
        "mand" => (false, F::MS_MANDLOCK),
        "noacl" => (true, F::MS_POSIXACL),
        "noatime" => (false, F::MS_NOATIME),
        "nodev" => (false, F::MS_NODEV),
        "nodiratime" => (false, F::MS_NODIRATIME),
        "noexec" => (false, F::MS_NOEXEC),
        "noiversion" => (true, F::MS_I_VERSION),
        "nolazytime" => (true, F::MS_LAZYTIME),
        "nomand" => (true, F::MS_MANDLOCK),
        "norelatime" => (true, F::MS_RELATIME),
        "nostrictatime" => (true, F::MS_STRICTATIME),
        "nosuid" => (false, F::MS_NOSUID),
        "nosymfollow" => (false, MS_NOSYMFOLLOW),
        "rbind" => (false, F::MS_BIND.union(F::MS_REC)),
        "relatime" => (false, F::MS_RELATIME),
        "remount" => (false, F::MS_REMOUNT),
        "ro" => (false, F::MS_RDONLY),
        "rw" => (true, F::MS_RDONLY),
        "silent" => (false, F::MS_SILENT),
        "strictatime" => (false, F::MS_STRICTATIME),
        "suid" => (true, F::MS_NOSUID),
        "sync" => (false, F::MS_SYNCHRONOUS),
        "symfollow" => (true, MS_NOSYMFOLLOW),
        _ => return None,
    })
}

/// A propagation mode by name ("rslave" → MS_SLAVE|MS_REC); also used for
/// linux.rootfsPropagation.
pub fn propagation(o: &str) -> Option<MsFlags> {
    use MsFlags as F;
    Some(match o {
        "private" => F::MS_PRIVATE,
        "rprivate" => F::MS_PRIVATE | F::MS_REC,
        "shared" => F::MS_SHARED,
        "rshared" => F::MS_SHARED | F::MS_REC,
        "slave" => F::MS_SLAVE,
        "rslave" => F::MS_SLAVE | F::MS_REC,
        "unbindable" => F::MS_UNBINDABLE,
        "runbindable" => F::MS_UNBINDABLE | F::MS_REC,
        _ => return None,
    })
}

/// (clear?, attribute) for the recursive forms.
fn recursive(o: &str) -> Option<(bool, u64)> {
    Some(match o {
        "rro" => (false, MOUNT_ATTR_RDONLY),
        "rrw" => (true, MOUNT_ATTR_RDONLY),
        "rnosuid" => (false, MOUNT_ATTR_NOSUID),
        "rsuid" => (true, MOUNT_ATTR_NOSUID),
        "rnodev" => (false, MOUNT_ATTR_NODEV),
        "rdev" => (true, MOUNT_ATTR_NODEV),
        "rnoexec" => (false, MOUNT_ATTR_NOEXEC),
        "rexec" => (true, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (false, MOUNT_ATTR_NODIRATIME),
        "rdiratime" => (true, MOUNT_ATTR_NODIRATIME),
        "rrelatime" => (false, MOUNT_ATTR_RELATIME),
        "rnorelatime" => (true, MOUNT_ATTR_RELATIME),
        "rnoatime" => (false, MOUNT_ATTR_NOATIME),
        "ratime" => (true, MOUNT_ATTR_NOATIME),
        "rstrictatime" => (false, MOUNT_ATTR_STRICTATIME),
        "rnostrictatime" => (true, MOUNT_ATTR_STRICTATIME),
        "rnosymfollow" => (false, MOUNT_ATTR_NOSYMFOLLOW),
        "rsymfollow" => (true, MOUNT_ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

/// Options this build knows but cannot honour yet (refused at validation).
pub fn is_unsupported(o: &str) -> bool {
    o.starts_with("idmap=") || o.starts_with("ridmap=")
}

/// Every option name this build understands, for `berth features`.
pub fn known() -> Vec<&'static str> {
    const ALL: &[&str] = &[
        "acl",
        "async",
        "atime",
        "bind",
        "defaults",
        "dev",
        "diratime",
        "dirsync",
        "exec",
        "iversion",
        "lazytime",
        "loud",
        "mand",
        "noacl",
        "noatime",
        "nodev",
        "nodiratime",
        "noexec",
        "noiversion",
        "nolazytime",
        "nomand",
        "norelatime",
        "nostrictatime",
        "nosuid",
        "nosymfollow",
        "private",
        "ratime",
        "rbind",
        "rdev",
        "rdiratime",
        "relatime",
        "remount",
        "rexec",
        "rnoatime",
        "rnodev",
        "rnodiratime",
        "rnoexec",
        "rnorelatime",
        "rnostrictatime",
        "rnosuid",
        "rnosymfollow",
        "ro",
        "rprivate",
        "rrelatime",
        "rro",
        "rrw",
        "rshared",
        "rslave",
        "rstrictatime",
        "rsuid",
        "rsymfollow",
        "runbindable",
        "rw",
        "shared",
        "silent",
        "slave",
        "strictatime",
        "suid",
        "symfollow",
        "sync",
        "tmpcopyup",
        "unbindable",
        "idmap",
        "ridmap",
    ];
    ALL.to_vec()
}

pub fn parse(opts: &[String]) -> MountOptions {
    let mut m = MountOptions::default();
    for o in opts {
        if let Some((clear, f)) = flag(o) {
            if clear {
                m.flags.remove(f);
                m.cleared.insert(f);
            } else {
                m.flags.insert(f);
                m.cleared.remove(f);
            }
        } else if let Some(p) = propagation(o) {
            m.propagation.push(p);
        } else if let Some((clear, a)) = recursive(o) {
            if clear {
                m.rec_clr |= a;
                m.rec_set &= !a;
            } else {
                m.rec_set |= a;
                m.rec_clr &= !a;
            }
            // Any atime mode replaces the others.
            if a & MOUNT_ATTR__ATIME != 0 || a == MOUNT_ATTR_RELATIME {
                m.rec_clr |= MOUNT_ATTR__ATIME;
                if !clear {
                    m.rec_set = (m.rec_set & !MOUNT_ATTR__ATIME) | a;
                }
            }
        } else if o == "tmpcopyup" {
            m.tmpcopyup = true;
        } else if o == "idmap" {
            m.idmap = true;
        } else if o == "ridmap" {
            m.idmap = true;
            m.ridmap = true;
        } else {
            m.data.push(o.clone());
        }
    }
    m
}

impl MountOptions {
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    pub fn data_string(&self) -> Option<String> {
        if self.data.is_empty() {
            None
        } else {
            Some(self.data.join(","))
        }
    }

    /// Flags that need a second, remount pass after a bind.
    pub fn bind_remount_flags(&self) -> MsFlags {
        self.flags
            .difference(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> MountOptions {
        parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn flags_and_data() {
        let m = p(&["nosuid", "noexec", "mode=755", "size=65536k", "strictatime"]);
        assert_eq!(
            m.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_STRICTATIME
        );
        assert_eq!(m.data_string().as_deref(), Some("mode=755,size=65536k"));
    }

    #[test]
    fn later_option_wins() {
        assert!(p(&["ro", "rw"]).flags.is_empty());
        assert_eq!(p(&["rw", "ro"]).flags, MsFlags::MS_RDONLY);
        assert!(p(&["ro", "rw"]).cleared.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn bind_and_propagation() {
        let m = p(&["rbind", "rprivate", "ro"]);
        assert!(m.is_bind());
        assert!(m.flags.contains(MsFlags::MS_REC));
        assert_eq!(m.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(m.bind_remount_flags(), MsFlags::MS_RDONLY);
    }

    #[test]
    fn recursive_attrs() {
        let m = p(&["rro", "rnosuid", "rnoatime"]);
        assert_eq!(
            m.rec_set,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOATIME
        );
        assert_ne!(m.rec_clr & MOUNT_ATTR__ATIME, 0);
        assert!(m.data.is_empty());
    }

    #[test]
    fn later_atime_mode_replaces_the_earlier_one() {
        let m = p(&["rstrictatime", "rnoatime"]);
        assert_eq!(m.rec_set & MOUNT_ATTR__ATIME, MOUNT_ATTR_NOATIME);
        let m = p(&["rnoatime", "rrelatime"]);
        assert_eq!(m.rec_set & MOUNT_ATTR__ATIME, MOUNT_ATTR_RELATIME);
        assert_ne!(m.rec_clr & MOUNT_ATTR__ATIME, 0);
    }

    #[test]
    fn extensions() {
        assert!(p(&["tmpcopyup"]).tmpcopyup);
        assert!(p(&["idmap"]).idmap);
        assert!(p(&["ridmap"]).ridmap && p(&["ridmap"]).idmap);
        assert!(!is_unsupported("idmap"));
        assert!(is_unsupported("idmap=uids=0-1000-10"));
        assert!(!is_unsupported("ro"));
    }
}
