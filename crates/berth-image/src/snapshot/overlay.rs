//! Mounting an overlay with any number of lower directories.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
/// mount(2) copies at most one page of options.
const PAGE: usize = 4096;

fn cstr(s: &[u8]) -> Result<CString, String> {
    CString::new(s).map_err(|_| "a path holds a NUL byte".to_string())
}

/// Mounts an overlay of `lowers` (top first), `upper` and `work` at `target`.
pub fn mount(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<(), String> {
    match mount_fsconfig(lowers, upper, work, target) {
        Ok(()) => Ok(()),
        // No new mount API, or no `lowerdir+` (before Linux 6.8): the option string.
        Err(Fallback::Legacy(why)) => mount_legacy(lowers, upper, work, target)
            .map_err(|e| format!("{e} (after the new mount API failed: {why})")),
        Err(Fallback::Fail(e)) => Err(e),
    }
}

enum Fallback {
    Legacy(String),
    Fail(String),
}

fn mount_fsconfig(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), Fallback> {
    let fstype = c"overlay";
    // SAFETY: fsopen reads a NUL-terminated name; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
    if fd < 0 {
        return Err(Fallback::Legacy(format!(
            "fsopen: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    let fs = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let set = |key: &std::ffi::CStr, value: &Path| -> Result<(), io::Error> {
        let v = cstr(value.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: fsconfig reads the two NUL-terminated strings; fs is a valid fs context.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                v.as_ptr(),
                0,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    for (i, l) in lowers.iter().enumerate() {
        if let Err(e) = set(c"lowerdir+", l) {
            let msg = format!("lowerdir+ {}: {e}{}", l.display(), kernel_log(&fs));
            return Err(if i == 0 && e.raw_os_error() == Some(libc::EINVAL) {
                Fallback::Legacy(msg)
            } else {
                Fallback::Fail(msg)
            });
        }
    }
    for (key, value) in [(c"upperdir", upper), (c"workdir", work)] {
        set(key, value).map_err(|e| {
            Fallback::Fail(format!(
                "{} {}: {e}{}",
                key.to_string_lossy(),
                value.display(),
                kernel_log(&fs)
            ))
        })?;
    }
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(Fallback::Fail(format!(
            "create overlay: {e}{}",
            kernel_log(&fs)
        )));
    }
    // SAFETY: fsmount on a created context; returns a new mount fd or -1.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    if m < 0 {
        return Err(Fallback::Fail(format!(
            "fsmount overlay: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    let mnt = unsafe { OwnedFd::from_raw_fd(m as i32) };
    let t = cstr(target.as_os_str().as_bytes()).map_err(Fallback::Fail)?;
    // SAFETY: move_mount reads the empty string and the NUL-terminated target path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(Fallback::Fail(format!(
            "attach overlay at {}: {}",
            target.display(),
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// What the kernel logged into the fs context ("overlayfs: ..."), as a suffix.
fn kernel_log(fs: &OwnedFd) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 1024];
    loop {
        // SAFETY: read into a buffer we own, of the length passed.
        let n = unsafe { libc::read(fs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf[..n as usize]);
        out.push_str(" (");
        out.push_str(line.trim());
        out.push(')');
    }
    out
}

fn mount_legacy(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), String> {
    let lower = lowers
        .iter()
        .map(|p| {
            p.to_string_lossy()
                .replace('\\', "\\\\")
                .replace(':', "\\:")
        })
        .collect::<Vec<_>>()
        .join(":");
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    if opts.len() >= PAGE {
        return Err(format!(
            "{} layers need {} bytes of mount options, over the {PAGE}-byte limit of mount(2), \
             and this kernel lacks fsconfig lowerdir+ (Linux 6.8); use the copy driver",
            lowers.len(),
            opts.len()
        ));
    }
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| format!("mount overlay at {}: {e}", target.display()))
}

/// Unmounts `target` if something is mounted there, detaching lazily if it is busy.
pub fn unmount(target: &Path) -> io::Result<()> {
    if !is_mount_point(target) {
        return Ok(());
    }
    match nix::mount::umount2(target, nix::mount::MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => {
            nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH).map_err(io::Error::from)
        }
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// True when `p` is the root of a mount: its mount ID differs from its parent's.
pub fn is_mount_point(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Some(parent)) = (std::fs::symlink_metadata(p), p.parent()) else {
        return false;
    };
    let Ok(up) = std::fs::metadata(parent) else {
        return false;
    };
    me.dev() != up.dev() || me.ino() == up.ino()
}
