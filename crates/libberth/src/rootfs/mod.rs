//! The container's filesystem: mounts, devices, pivot_root, masked and read-only paths.
//! Runs in the container init, inside its new mount namespace.

pub mod devices;
pub mod hostns;
pub mod idmap;
pub mod options;
pub mod resolve;

use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::{chdir, chroot, pivot_root};
use oci_spec::runtime::{Mount, Spec};

use crate::error::{Context, Error, Result};
use options::MountOptions;

/// One cgroup hierarchy as the container should see it.
#[derive(Debug, Clone)]
pub struct CgroupHierarchy {
    /// Directory name under /sys/fs/cgroup: "memory", "cpu,cpuacct", "systemd", "unified"
    /// (hybrid), or "" for a pure v2 host.
    pub name: String,
    /// Host path of the container's own cgroup in this hierarchy (bind source).
    pub host_path: PathBuf,
    /// fs type and options to mount it afresh inside a cgroup namespace.
    pub fstype: &'static str,
    pub fs_options: String,
    /// Names to symlink to a co-mounted hierarchy ("cpu" → "cpu,cpuacct").
    pub aliases: Vec<String>,
}

/// What the rootfs setup needs to know beside the spec.
#[derive(Debug)]
pub struct RootfsContext<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub cgroups: &'a [CgroupHierarchy],
    pub cgroupns: bool,
    pub userns: bool,
    /// Idmapped trees to attach in place of plain binds.
    pub idmapped: &'a [idmap::Prepared],
    /// The container has no mount namespace of its own: its mounts are made in the
    /// host's (below the rootfs only, and removed by `delete`), and the root is entered
    /// with chroot.
    pub host_mount_ns: bool,
}

fn propagation_flag(p: Option<&str>) -> Result<MsFlags> {
    match p.unwrap_or("") {
        // runc's default: see host mounts come and go, never send ours to the host.
        "" => Ok(MsFlags::MS_SLAVE | MsFlags::MS_REC),
        other => options::propagation(other).ok_or_else(|| {
            Error::Unsupported(format!("linux.rootfsPropagation: unknown mode {other:?}"))
        }),
    }
}

/// Before the prestart hooks: propagation, the rootfs bind, every mount and the devices.
pub fn prepare(c: &RootfsContext<'_>) -> Result<()> {
    let linux = c.spec.linux().as_ref().expect("validated");
    // In the host's mount namespace, the host's propagation and mounts stay as they are;
    // a read-only root gets a bind of its own there, for finish() to make read-only (as
    // runc does), which delete removes with the container's other mounts.
    let readonly_root = c
        .spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    if !c.host_mount_ns {
        let prop = propagation_flag(linux.rootfs_propagation().as_deref())?;
        mount(None::<&str>, "/", None::<&str>, prop, None::<&str>)
            .ctx(|| "set propagation of / in the container's mount namespace".into())?;
        make_parent_private(c.rootfs)?;
    }
    if !c.host_mount_ns || readonly_root {
        mount(
            Some(c.rootfs),
            c.rootfs,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .ctx(|| format!("bind {} onto itself", c.rootfs.display()))?;
    }
    let root = open(
        c.rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open rootfs {}", c.rootfs.display()))?;
    let mounts = c.spec.mounts().as_deref().unwrap_or(&[]);
    for (i, m) in mounts.iter().enumerate() {
        mount_entry(root.as_fd(), c, i, m).map_err(|e| {
            Error::Unsupported(format!(
                "mounts[{i}] ({}): {}",
                m.destination().display(),
                e.chain()
            ))
        })?;
    }
    let dev_is_bind = mounts.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && m.options()
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .any(|o| o == "bind" || o == "rbind")
    });
    if !dev_is_bind {
        devices::create_all(
            root.as_fd(),
            linux.devices().as_deref().unwrap_or(&[]),
            c.userns,
        )?;
        devices::symlinks(root.as_fd())?;
    }
    Ok(())
}

/// pivot_root requires the rootfs' parent mount not to be shared.
fn make_parent_private(rootfs: &Path) -> Result<()> {
    let mut p = rootfs.to_path_buf();
    loop {
        match mount(
            None::<&str>,
            &p,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            Err(Errno::EINVAL) => {
                // Not a mount point: try the parent directory.
                if !p.pop() {
                    return Ok(());
                }
            }
            Err(e) => return Err(Error::sys(format!("make {} private", p.display()), e)),
        }
    }
}

fn mount_entry(root: BorrowedFd<'_>, c: &RootfsContext<'_>, i: usize, m: &Mount) -> Result<()> {
    let opts = options::parse(m.options().as_deref().unwrap_or(&[]));
    let typ = m.typ().as_deref().unwrap_or("");
    let dest = m.destination();
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(root, c, dest, &opts);
    }
    if opts.is_bind() || typ == "bind" {
        let tree = c
            .idmapped
            .iter()
            .find(|p| p.index == i)
            .map(|p| p.tree.as_fd());
        return mount_bind(root, c, m, &opts, dest, tree);
    }
    let target = resolve::mkdir_all(root, dest, Mode::from_bits_truncate(0o755))?;
    check_destination(c.rootfs, typ, false, dest, target.as_fd())?;
    let old = if opts.tmpcopyup {
        Some(
            open(
                &resolve::fd_path(target.as_fd()),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .ctx(|| format!("open {} for tmpcopyup", dest.display()))?,
        )
    } else {
        None
    };
    let source = m
        .source()
        .as_deref()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(typ));
    let data = opts.data_string();
    mount(
        Some(&source),
        &resolve::fd_path(target.as_fd()),
        Some(typ),
        opts.flags,
        data.as_deref(),
    )
    .ctx(|| format!("mount {typ} on {}", dest.display()))?;
    let mounted = resolve::open_in_root(root, dest, OFlag::O_PATH | OFlag::O_DIRECTORY)
        .ctx(|| format!("reopen {}", dest.display()))?;
    if let Some(old) = old {
        copy_up(&old, root, dest)?;
    }
    finish_mount(&mounted, &opts, dest)
}

fn mount_bind(
    root: BorrowedFd<'_>,
    c: &RootfsContext<'_>,
    m: &Mount,
    opts: &MountOptions,
    dest: &Path,
    idmapped: Option<BorrowedFd<'_>>,
) -> Result<()> {
    let src = m
        .source()
        .as_deref()
        .expect("validated: binds have a source");
    let meta = fs::metadata(src).ctx(|| format!("bind source {}", src.display()))?;
    let target = if meta.is_dir() {
        resolve::mkdir_all(root, dest, Mode::from_bits_truncate(0o755))?
    } else {
        resolve::ensure_file(root, dest)?
    };
    check_destination(c.rootfs, "bind", !meta.is_dir(), dest, target.as_fd())?;
    let rec = opts.flags & MsFlags::MS_REC;
    match idmapped {
        Some(tree) => idmap::attach(tree, target.as_fd(), dest)?,
        None => mount(
            Some(src),
            &resolve::fd_path(target.as_fd()),
            None::<&str>,
            MsFlags::MS_BIND | rec,
            None::<&str>,
        )
        .ctx(|| format!("bind {} on {}", src.display(), dest.display()))?,
    }
    let mounted = resolve::open_in_root(root, dest, OFlag::O_PATH)
        .ctx(|| format!("reopen {}", dest.display()))?;
    let extra = opts.bind_remount_flags();
    if !extra.is_empty() {
        remount_bind(&mounted, extra | rec, dest)?;
    }
    finish_mount(&mounted, opts, dest)
}

/// Files under /proc that a bind mount may cover: what lxcfs and similar tools provide.
const PROC_FILES_BINDABLE: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// Where a mount lands once symlinks in the rootfs are resolved (`target`), checked
/// against what the runtime relies on:
/// - procfs and sysfs go exactly where the spec says: a rootfs that makes /proc a symlink
///   could otherwise move procfs where the runtime does not look (CVE-2023-28642);
/// - nothing but procfs lands on /proc, and under /proc only a bind of a file from a short
///   list: anything else could hide /proc/self/attr, where LSM labels are written, and
///   the files masked paths protect (CVE-2019-16884, CVE-2023-27561).
fn check_destination(
    rootfs: &Path,
    typ: &str,
    file_bind: bool,
    dest: &Path,
    target: BorrowedFd<'_>,
) -> Result<()> {
    let actual = resolve::in_root_path(rootfs, target)?;
    let wanted = resolve::lexical(dest);
    if (typ == "proc" || typ == "sysfs") && actual != wanted {
        // runc's words first: conformance suites look for them.
        return Err(Error::Unsupported(format!(
            "filesystem {typ:?} must be mounted on ordinary directory: a symlink in the rootfs \
             leads this mount to {}; {typ} is mounted only on {} itself (CVE-2023-28642)",
            actual.display(),
            wanted.display()
        )));
    }
    let proc = Path::new("/proc");
    if actual == proc && typ != "proc" {
        return Err(Error::Unsupported(format!(
            "only procfs may be mounted on /proc{} (CVE-2019-16884)",
            if actual != wanted {
                format!(" (reached through a symlink from {})", wanted.display())
            } else {
                String::new()
            }
        )));
    }
    if actual.starts_with(proc) && actual != proc {
        let listed = PROC_FILES_BINDABLE.iter().any(|p| Path::new(p) == actual);
        if !(file_bind && listed) {
            return Err(Error::Unsupported(format!(
                "{} is under /proc, where only a bind of a file onto one of {} may be \
                 mounted (CVE-2019-16884, CVE-2023-27561)",
                actual.display(),
                PROC_FILES_BINDABLE.join(", ")
            )));
        }
    }
    Ok(())
}

/// Propagation and recursive attributes, after the mount exists.
fn finish_mount(mounted: &OwnedFd, opts: &MountOptions, dest: &Path) -> Result<()> {
    let path = resolve::fd_path(mounted.as_fd());
    for p in &opts.propagation {
        mount(None::<&str>, &path, None::<&str>, *p, None::<&str>)
            .ctx(|| format!("set propagation of {}", dest.display()))?;
    }
    if opts.rec_set != 0 || opts.rec_clr != 0 {
        set_mount_attr(mounted.as_fd(), true, opts.rec_set, opts.rec_clr)
            .ctx(|| format!("set recursive mount attributes on {}", dest.display()))?;
    }
    Ok(())
}

/// Remounts a bind with `flags`, keeping the flags the kernel locks (nosuid, nodev, noexec,
/// atime modes) so that the remount also works inside a user namespace.
fn remount_bind(mounted: &OwnedFd, flags: MsFlags, dest: &Path) -> Result<()> {
    let path = resolve::fd_path(mounted.as_fd());
    let locked = locked_flags(&path);
    mount(
        None::<&str>,
        &path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | locked,
        None::<&str>,
    )
    .ctx(|| format!("remount {} with {flags:?}", dest.display()))
}

fn locked_flags(path: &Path) -> MsFlags {
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (s, m) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(s) {
            out |= m;
        }
    }
    out
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(2) on the mount an fd refers to (open_tree fds too): sets and clears
/// MOUNT_ATTR_* flags, on the whole subtree when `recursive`.
pub fn set_mount_attr(fd: BorrowedFd<'_>, recursive: bool, set: u64, clr: u64) -> nix::Result<()> {
    mount_setattr(
        fd,
        recursive,
        &MountAttr {
            attr_set: set,
            attr_clr: clr,
            propagation: 0,
            userns_fd: 0,
        },
    )
}

/// MOUNT_ATTR_IDMAP.
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Makes the detached mount `fd` (an open_tree clone) idmapped through the user namespace
/// `userns`, on the whole subtree when `recursive`.
pub fn set_mount_idmap(
    fd: BorrowedFd<'_>,
    recursive: bool,
    userns: BorrowedFd<'_>,
) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    mount_setattr(
        fd,
        recursive,
        &MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        },
    )
}

fn mount_setattr(fd: BorrowedFd<'_>, recursive: bool, attr: &MountAttr) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    let empty = c"";
    // SAFETY: mount_setattr(2) reads `attr` (size given) and the empty path; the fd is open.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 },
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(rc).map(drop)
}

/// open_tree(OPEN_TREE_CLONE): a detached copy of the mount at `path` (with its submounts
/// when `recursive`), close-on-exec, to configure before it is attached anywhere.
pub fn open_tree_clone(path: &Path, recursive: bool) -> nix::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: open_tree reads the NUL-terminated path; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    let fd = Errno::result(fd)?;
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// tmpcopyup: the directory's former contents, copied into the tmpfs now mounted over it,
/// by descriptor and never through a link (the rootfs is the image's: threat model F12).
fn copy_up(old: &OwnedFd, root: BorrowedFd<'_>, dest: &Path) -> Result<()> {
    let new = resolve::open_in_root(root, dest, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
        .ctx(|| format!("open the tmpfs at {} for tmpcopyup", dest.display()))?;
    berth_fs::copy_tree(old, &new, dest)
        .map(drop)
        .map_err(|e| Error::Unsupported(format!("tmpcopyup into {}: {e}", dest.display())))
}

/// The cgroup filesystem inside the container: cgroup2 (or a bind of the container's cgroup)
/// on a v2 host; a tmpfs holding one directory per v1 hierarchy otherwise.
fn mount_cgroup(
    root: BorrowedFd<'_>,
    c: &RootfsContext<'_>,
    dest: &Path,
    opts: &MountOptions,
) -> Result<()> {
    let ro = opts.flags.contains(MsFlags::MS_RDONLY);
    let base_flags = opts.flags
        & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME);
    let target = resolve::mkdir_all(root, dest, Mode::from_bits_truncate(0o755))?;
    let unified_only = c.cgroups.len() == 1 && c.cgroups[0].name.is_empty();
    if unified_only {
        let h = &c.cgroups[0];
        return mount_one_hierarchy(root, c, h, dest, &target, base_flags, ro);
    }
    mount(
        Some("tmpfs"),
        &resolve::fd_path(target.as_fd()),
        Some("tmpfs"),
        base_flags,
        Some("mode=755"),
    )
    .ctx(|| format!("mount tmpfs on {}", dest.display()))?;
    for h in c.cgroups {
        let sub = dest.join(&h.name);
        let t = resolve::mkdir_all(root, &sub, Mode::from_bits_truncate(0o755))?;
        mount_one_hierarchy(root, c, h, &sub, &t, base_flags, ro)?;
        for alias in &h.aliases {
            let dir = resolve::open_in_root(root, dest, OFlag::O_PATH | OFlag::O_DIRECTORY)
                .ctx(|| format!("open {}", dest.display()))?;
            match nix::unistd::symlinkat(h.name.as_str(), dir.as_fd(), alias.as_str()) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => {
                    return Err(Error::sys(
                        format!("symlink {alias} in {}", dest.display()),
                        e,
                    ))
                }
            }
        }
    }
    if ro {
        let mounted = resolve::open_in_root(root, dest, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .ctx(|| format!("reopen {}", dest.display()))?;
        let path = resolve::fd_path(mounted.as_fd());
        mount(
            None::<&str>,
            &path,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | base_flags,
            Some("mode=755"),
        )
        .ctx(|| format!("remount {} read-only", dest.display()))?;
    }
    Ok(())
}

fn mount_one_hierarchy(
    root: BorrowedFd<'_>,
    c: &RootfsContext<'_>,
    h: &CgroupHierarchy,
    dest: &Path,
    target: &OwnedFd,
    flags: MsFlags,
    ro: bool,
) -> Result<()> {
    let tpath = resolve::fd_path(target.as_fd());
    let ro_flag = if ro {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    if c.cgroupns {
        let opts = if h.fs_options.is_empty() {
            None
        } else {
            Some(h.fs_options.as_str())
        };
        match mount(
            Some("cgroup"),
            &tpath,
            Some(h.fstype),
            flags | ro_flag,
            opts,
        ) {
            Ok(()) => return Ok(()),
            // Some hierarchies cannot be mounted from inside (e.g. locked by the host): bind.
            Err(Errno::EPERM) | Err(Errno::EBUSY) => {}
            Err(e) => {
                return Err(Error::sys(
                    format!("mount {} on {}", h.fstype, dest.display()),
                    e,
                ))
            }
        }
    }
    mount(
        Some(&h.host_path),
        &tpath,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("bind {} on {}", h.host_path.display(), dest.display()))?;
    if ro || !flags.is_empty() {
        let mounted = resolve::open_in_root(root, dest, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .ctx(|| format!("reopen {}", dest.display()))?;
        remount_bind(&mounted, flags | ro_flag, dest)?;
    }
    Ok(())
}

/// How the init enters its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSwitch {
    /// pivot_root, then detach the old root.
    Pivot,
    /// `--no-pivot`: MS_MOVE the rootfs onto / and chroot.
    Move,
    /// No mount namespace of its own: chroot alone, the host's mounts untouched.
    Chroot,
}

/// Switches the root.
pub fn switch_root(rootfs: &Path, how: RootSwitch) -> Result<()> {
    if how == RootSwitch::Chroot {
        chdir(rootfs).ctx(|| format!("chdir {}", rootfs.display()))?;
        chroot(".").ctx(|| "chroot into the rootfs".into())?;
    } else if how == RootSwitch::Move {
        chdir(rootfs).ctx(|| format!("chdir {}", rootfs.display()))?;
        mount(
            Some(rootfs),
            "/",
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .ctx(|| format!("move {} to /", rootfs.display()))?;
        chroot(".").ctx(|| "chroot into the rootfs".into())?;
    } else {
        let old = open(
            "/",
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| "open the old root".into())?;
        chdir(rootfs).ctx(|| format!("chdir {}", rootfs.display()))?;
        pivot_root(".", ".").ctx(|| format!("pivot_root into {}", rootfs.display()))?;
        // The old root is now stacked on top of the new one: step onto it, keep its unmount
        // from reaching the host, and detach it.
        nix::unistd::fchdir(&old).ctx(|| "chdir to the old root".into())?;
        mount(
            None::<&str>,
            ".",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )
        .ctx(|| "make the old root a slave".into())?;
        umount2(".", MntFlags::MNT_DETACH).ctx(|| "detach the old root".into())?;
    }
    chdir("/").ctx(|| "chdir / in the new root".into())
}

/// The container's /dev/null, after the root switch, opened once and checked to be the null
/// device (1:3): masking binds it by fd, so an image that ships /dev/null as a link to
/// something else (a /proc/sys file, say) is refused instead of bound everywhere.
fn open_null() -> Result<OwnedFd> {
    let fd = open("/dev/null", OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .ctx(|| "open /dev/null in the container".into())?;
    let st = fstat(&fd).ctx(|| "stat /dev/null in the container".into())?;
    let is_chr = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    if !is_chr || st.st_rdev != nix::sys::stat::makedev(1, 3) {
        return Err(Error::Unsupported(
            "/dev/null in the container is not the device 1:3, so it cannot mask paths".into(),
        ));
    }
    Ok(fd)
}

/// After the root switch: sysctls, then masked and read-only paths, then the root's own mode.
pub fn finish(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref().expect("validated");
    if let Some(sysctl) = linux.sysctl() {
        let mut keys: Vec<_> = sysctl.keys().collect();
        keys.sort();
        for k in keys {
            let path = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
            fs::write(&path, &sysctl[k])
                .ctx(|| format!("set sysctl {k}={} via {}", sysctl[k], path.display()))?;
        }
    }
    let root = open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "open /".into())?;
    let masked = linux.masked_paths().as_deref().unwrap_or(&[]);
    if !masked.is_empty() {
        let null = open_null()?;
        for p in masked {
            mask_path(root.as_fd(), Path::new(p), null.as_fd())?;
        }
    }
    for p in linux.readonly_paths().as_deref().unwrap_or(&[]) {
        readonly_path(root.as_fd(), Path::new(p))?;
    }
    if let Some(prop) = linux
        .rootfs_propagation()
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            propagation_flag(Some(prop))?,
            None::<&str>,
        )
        .ctx(|| format!("set rootfsPropagation {prop}"))?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        let fd = open(
            "/",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| "open /".into())?;
        remount_bind(&fd, MsFlags::MS_RDONLY, Path::new("/"))?;
    }
    Ok(())
}

/// Hides a path: `null` (an fd of the null device) over a file, an empty read-only tmpfs
/// over a directory.
pub fn mask_path(root: BorrowedFd<'_>, p: &Path, null: BorrowedFd<'_>) -> Result<()> {
    let fd = match resolve::open_in_root(root, p, OFlag::O_PATH) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(Error::sys(format!("open masked path {}", p.display()), e)),
    };
    let st = fstat(&fd).ctx(|| format!("stat masked path {}", p.display()))?;
    let target = resolve::fd_path(fd.as_fd());
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
        mount(
            Some("tmpfs"),
            &target,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0"),
        )
        .ctx(|| format!("mask {} with a read-only tmpfs", p.display()))
    } else {
        mount(
            Some(&resolve::fd_path(null)),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .ctx(|| format!("mask {} with /dev/null", p.display()))
    }
}

/// Makes a path read-only: bind it onto itself, then remount the bind read-only.
pub fn readonly_path(root: BorrowedFd<'_>, p: &Path) -> Result<()> {
    let fd = match resolve::open_in_root(root, p, OFlag::O_PATH) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => {
            return Err(Error::sys(
                format!("open read-only path {}", p.display()),
                e,
            ))
        }
    };
    let path = resolve::fd_path(fd.as_fd());
    mount(
        Some(&path),
        &path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("bind read-only path {}", p.display()))?;
    let mounted =
        resolve::open_in_root(root, p, OFlag::O_PATH).ctx(|| format!("reopen {}", p.display()))?;
    remount_bind(&mounted, MsFlags::MS_RDONLY | MsFlags::MS_REC, p)
}
