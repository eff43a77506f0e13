//! CVE-2019-5736: a container process can come to run the runtime's own image (an
//! entrypoint `#!/proc/self/exe`, or /proc/<pid>/exe of a runtime process in its pid
//! namespace) and then open that image for writing once the runtime exits, replacing the
//! host's binary. Commands that put processes into a container therefore re-exec berth so
//! that /proc/self/exe cannot be written:
//!
//! - first choice: through a detached, read-only bind mount of the binary (open_tree with
//!   OPEN_TREE_CLONE, mount_setattr MOUNT_ATTR_RDONLY, execveat). Reopening the image for
//!   writing then fails with EROFS. Nothing is copied: it costs two syscalls and an exec.
//! - fallback (no CAP_SYS_ADMIN, old kernel): a sealed memfd copy (F_SEAL_WRITE), which costs
//!   a copy of the binary and ~6 ms.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

const F_ADD_SEALS: libc::c_int = 1033;
const F_GET_SEALS: libc::c_int = 1034;
const F_SEAL_SEAL: libc::c_int = 0x1;
const F_SEAL_SHRINK: libc::c_int = 0x2;
const F_SEAL_GROW: libc::c_int = 0x4;
const F_SEAL_WRITE: libc::c_int = 0x8;
const ALL_SEALS: libc::c_int = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;

/// True when this process's image cannot be written: a sealed copy, or a read-only mount.
fn protected(exe: &File) -> bool {
    // SAFETY: F_GET_SEALS on an open fd reads flags; no memory is passed.
    let seals = unsafe { libc::fcntl(exe.as_raw_fd(), F_GET_SEALS) };
    if seals >= 0 && seals & F_SEAL_WRITE != 0 {
        return true;
    }
    nix::sys::statvfs::fstatvfs(exe)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

/// Re-executes from a read-only bind mount of berth, or else a sealed memfd copy, unless
/// the image is protected already. Returns only on error (or when already protected).
pub fn ensure() -> Result<(), String> {
    let mut exe = File::open("/proc/self/exe").map_err(|e| format!("open /proc/self/exe: {e}"))?;
    if protected(&exe) {
        return Ok(());
    }
    let (args, env) = argv_envp()?;
    if let Some(ro) = read_only_bind() {
        exec_fd(ro.as_raw_fd(), &args, &env);
        // An exec that failed through the bind falls through to the copy.
    }
    let name = c"berth";
    // SAFETY: memfd_create reads the NUL-terminated name; returns a new fd or -1.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut copy = File::from(memfd);
    std::io::copy(&mut exe, &mut copy).map_err(|e| format!("copy berth into a memfd: {e}"))?;
    // SAFETY: F_ADD_SEALS with a flag set on our own memfd; no memory is passed.
    if unsafe { libc::fcntl(copy.as_raw_fd(), F_ADD_SEALS, ALL_SEALS) } < 0 {
        return Err(format!(
            "seal the memfd copy: {}",
            std::io::Error::last_os_error()
        ));
    }
    exec_fd(copy.as_raw_fd(), &args, &env);
    Err(format!(
        "re-exec from the sealed copy: {}",
        std::io::Error::last_os_error()
    ))
}

/// A detached read-only bind mount of /proc/self/exe, or None where that is not allowed.
fn read_only_bind() -> Option<OwnedFd> {
    use std::os::fd::AsFd;
    let tree =
        crate::rootfs::open_tree_clone(std::path::Path::new("/proc/self/exe"), false).ok()?;
    let ro = crate::rootfs::options::MOUNT_ATTR_RDONLY;
    let rc = crate::rootfs::set_mount_attr(tree.as_fd(), false, ro, 0);
    rc.is_ok().then_some(tree)
}

fn argv_envp() -> Result<(Vec<CString>, Vec<CString>), String> {
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| "an argument holds a NUL byte".to_string()))
        .collect::<Result<_, _>>()?;
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).map_err(|_| "an environment variable holds a NUL byte".to_string())
        })
        .collect::<Result<_, _>>()?;
    Ok((args, env))
}

/// execveat(fd, "", AT_EMPTY_PATH); returns only if the exec failed.
fn exec_fd(fd: i32, args: &[CString], env: &[CString]) {
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: execveat with an open fd, an empty path and AT_EMPTY_PATH; argv and envp are
    // NUL-terminated arrays of NUL-terminated strings that outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd,
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
}
