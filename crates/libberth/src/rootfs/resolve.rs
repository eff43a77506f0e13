//! Paths inside the container's rootfs, resolved by the kernel as if the rootfs were `/`
//! (openat2 RESOLVE_IN_ROOT): a symlink planted in the rootfs, absolute or full of `..`, can
//! never lead outside it. Callers mount onto the returned fd through /proc/self/fd/N, so a
//! path swapped after resolution (CVE-2021-30465) changes nothing.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};

use crate::error::{Error, Result};

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Opens `path` (taken relative to the root whatever its leading `/`) inside `root`.
pub fn open_in_root(root: BorrowedFd<'_>, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let rel = relative(path);
    loop {
        match openat2(root, &rel, how(flags)) {
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

/// The path with its root and `.` components dropped ("." for the root itself).
pub fn relative(path: &Path) -> PathBuf {
    let p: PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect();
    if p.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        p
    }
}

/// Where `fd` lies inside the rootfs at `rootfs` (a host path), as an absolute path seen
/// from the container: what a planted symlink made of a mount destination.
pub fn in_root_path(rootfs: &Path, fd: BorrowedFd<'_>) -> Result<PathBuf> {
    let host = std::fs::read_link(fd_path(fd))
        .map_err(|e| Error::io(format!("read the path of {}", fd_path(fd).display()), e))?;
    let inside = host.strip_prefix(rootfs).map_err(|_| {
        Error::Unsupported(format!(
            "{} resolved outside the rootfs {}",
            host.display(),
            rootfs.display()
        ))
    })?;
    Ok(Path::new("/").join(inside))
}

/// `path` made absolute with `.` and `..` applied by name (never above `/`), as the
/// container would spell it with no symlink involved.
pub fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// `/proc/self/fd/N`: the handle to mount onto.
pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Makes every missing directory of `path` inside `root`; returns an O_PATH fd of the last.
///
/// A dangling symlink on the way is followed as the kernel would follow it with `root` as
/// `/`, and its target is made (inside `root`, whatever the link says), up to 40 links.
pub fn mkdir_all(root: BorrowedFd<'_>, path: &Path, mode: Mode) -> Result<OwnedFd> {
    let mut want = relative(path);
    for _ in 0..40 {
        match mkdir_walk(root, &want, mode)? {
            Walk::Done(fd) => return Ok(fd),
            Walk::Link(next) => want = next,
        }
    }
    Err(Error::sys(
        format!(
            "mkdir {} in the container's rootfs: too many symlinks",
            path.display()
        ),
        Errno::ELOOP,
    ))
}

enum Walk {
    Done(OwnedFd),
    /// A dangling symlink: the path to make instead.
    Link(PathBuf),
}

fn mkdir_walk(root: BorrowedFd<'_>, rel: &Path, mode: Mode) -> Result<Walk> {
    let shown = |p: &Path| Path::new("/").join(p).display().to_string();
    let comps: Vec<_> = rel.components().collect();
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    let mut parent: OwnedFd = open_in_root(root, Path::new("."), flags)
        .map_err(|e| Error::sys("open the container's root", e))?;
    let mut prefix = PathBuf::new();
    for (i, c) in comps.iter().enumerate() {
        prefix.push(c);
        match open_in_root(root, &prefix, flags) {
            Ok(fd) => parent = fd,
            Err(Errno::ENOENT) => {
                let name = c.as_os_str();
                match mkdirat(parent.as_fd(), name, mode) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => {
                        // Something is there but does not resolve: a dangling symlink.
                        let target = nix::fcntl::readlinkat(parent.as_fd(), name).map_err(|e| {
                            Error::sys(
                                format!("open {} in the container's rootfs", shown(&prefix)),
                                e,
                            )
                        })?;
                        let target = PathBuf::from(target);
                        let mut next = if target.is_absolute() {
                            relative(&target)
                        } else {
                            let mut p = prefix.clone();
                            p.pop();
                            p.join(target)
                        };
                        for rest in &comps[i + 1..] {
                            next.push(rest);
                        }
                        return Ok(Walk::Link(next));
                    }
                    Err(e) => {
                        return Err(Error::sys(
                            format!("mkdir {} in the container's rootfs", shown(&prefix)),
                            e,
                        ))
                    }
                }
                parent = open_in_root(root, &prefix, flags).map_err(|e| {
                    Error::sys(
                        format!("open {} in the container's rootfs", shown(&prefix)),
                        e,
                    )
                })?;
            }
            Err(e) => {
                return Err(Error::sys(
                    format!("open {} in the container's rootfs", shown(&prefix)),
                    e,
                ))
            }
        }
    }
    Ok(Walk::Done(parent))
}

/// Makes `path` an existing regular file inside `root` (creating parents); O_PATH fd of it.
pub fn ensure_file(root: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd> {
    if let Ok(fd) = open_in_root(root, path, OFlag::O_PATH) {
        return Ok(fd);
    }
    let rel = relative(path);
    let name = rel
        .file_name()
        .ok_or_else(|| Error::Unsupported(format!("{} names no file", path.display())))?;
    let dir = mkdir_all(
        root,
        rel.parent().unwrap_or(Path::new(".")),
        Mode::from_bits_truncate(0o755),
    )?;
    match openat(
        dir.as_fd(),
        name,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    ) {
        Ok(_) | Err(Errno::EEXIST) => {}
        Err(e) => {
            return Err(Error::sys(
                format!("create {} in the container's rootfs", path.display()),
                e,
            ))
        }
    }
    open_in_root(root, path, OFlag::O_PATH).map_err(|e| {
        Error::sys(
            format!("open {} in the container's rootfs", path.display()),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root() -> (tempfile::TempDir, OwnedFd) {
        let d = tempfile::tempdir().unwrap();
        let fd =
            nix::fcntl::open(d.path(), OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        (d, fd)
    }

    fn real(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(fd_path(fd.as_fd())).unwrap()
    }

    #[test]
    fn absolute_symlink_stays_inside() {
        let (d, fd) = root();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        symlink("/etc", d.path().join("link")).unwrap();
        let got = open_in_root(fd.as_fd(), Path::new("/link"), OFlag::O_PATH).unwrap();
        assert_eq!(real(&got), d.path().join("etc"));
    }

    #[test]
    fn dotdot_symlink_stays_inside() {
        let (d, fd) = root();
        std::fs::create_dir(d.path().join("tmp")).unwrap();
        symlink("../../../../../../tmp", d.path().join("up")).unwrap();
        let got = mkdir_all(
            fd.as_fd(),
            Path::new("/up/x"),
            Mode::from_bits_truncate(0o755),
        )
        .unwrap();
        assert_eq!(real(&got), d.path().join("tmp/x"));
        assert!(d.path().join("tmp/x").is_dir());
    }

    #[test]
    fn dangling_symlink_target_is_made_inside_the_root() {
        let (d, fd) = root();
        let outside = format!("/tmp/berth-resolve-test-{}", std::process::id());
        symlink(format!("/../../../..{outside}"), d.path().join("dangling")).unwrap();
        let got = mkdir_all(
            fd.as_fd(),
            Path::new("/dangling/x"),
            Mode::from_bits_truncate(0o755),
        )
        .unwrap();
        assert!(
            !Path::new(&outside).exists(),
            "followed the link out of the root"
        );
        let inside = d.path().join(outside.trim_start_matches('/')).join("x");
        assert_eq!(real(&got), inside);
    }

    #[test]
    fn relative_dangling_symlink_is_made_beside_it() {
        let (d, fd) = root();
        std::fs::create_dir(d.path().join("var")).unwrap();
        symlink("../run/lock", d.path().join("var/lock")).unwrap();
        let got = mkdir_all(
            fd.as_fd(),
            Path::new("/var/lock"),
            Mode::from_bits_truncate(0o755),
        )
        .unwrap();
        assert_eq!(real(&got), d.path().join("run/lock"));
    }

    #[test]
    fn symlink_loop_is_an_error() {
        let (d, fd) = root();
        symlink("b", d.path().join("a")).unwrap();
        symlink("a", d.path().join("b")).unwrap();
        assert!(mkdir_all(
            fd.as_fd(),
            Path::new("/a/x"),
            Mode::from_bits_truncate(0o755)
        )
        .is_err());
    }

    #[test]
    fn magic_links_refused() {
        let (d, fd) = root();
        symlink("/proc/self/root", d.path().join("escape")).unwrap();
        // Resolved inside the root, /proc/self/root does not exist there.
        assert!(open_in_root(fd.as_fd(), Path::new("/escape/etc/passwd"), OFlag::O_PATH).is_err());
    }

    #[test]
    fn ensure_file_creates_parents() {
        let (d, fd) = root();
        let f = ensure_file(fd.as_fd(), Path::new("/a/b/c")).unwrap();
        assert_eq!(real(&f), d.path().join("a/b/c"));
        assert!(d.path().join("a/b/c").is_file());
        // Existing file: same answer.
        ensure_file(fd.as_fd(), Path::new("/a/b/c")).unwrap();
    }

    #[test]
    fn relative_forms() {
        assert_eq!(relative(Path::new("/")), PathBuf::from("."));
        assert_eq!(relative(Path::new("/a/./b")), PathBuf::from("a/b"));
    }
}
