//! The few system calls std does not wrap. Each returns a Rust value; errors carry errno.

use std::ffi::CStr;
use std::io;

/// nodename and domainname from uname(2).
pub fn uname() -> io::Result<(String, String)> {
    // SAFETY: utsname is a plain C struct of char arrays; all-zero bytes is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname that outlives the call.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let text = |field: &[libc::c_char]| {
        // SAFETY: the kernel NUL-terminates every utsname field within its array, and `field`
        // borrows that array for the duration of this call.
        unsafe { CStr::from_ptr(field.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    Ok((text(&u.nodename[..]), text(&u.domainname[..])))
}

/// The resource number of `RLIMIT_<NAME>`, for the names the OCI spec allows.
pub fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

/// getrlimit(2): (soft, hard), `None` for RLIM_INFINITY.
pub fn getrlimit(resource: libc::__rlimit_resource_t) -> io::Result<(Option<u64>, Option<u64>)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit that outlives the call.
    if unsafe { libc::getrlimit(resource, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let finite = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
    Ok((finite(r.rlim_cur), finite(r.rlim_max)))
}

/// Calls one of a fixed list of side-effect-free system calls directly (no libc cache, no
/// vDSO), so that a seccomp filter sees it. `Ok(Ok(()))` on success, `Ok(Err(errno))` when it
/// failed, `Err` for a name not on the list.
pub fn harmless_syscall(name: &str) -> Result<Result<(), i32>, String> {
    let ret = match name {
        // SAFETY: getsid(0) only reads the caller's session id; no pointers are passed.
        "getsid" => unsafe { libc::syscall(libc::SYS_getsid, 0) },
        // SAFETY: getpgid(0) only reads the caller's process group; no pointers are passed.
        "getpgid" => unsafe { libc::syscall(libc::SYS_getpgid, 0) },
        // SAFETY: getpriority(PRIO_PROCESS, 0) only reads the caller's nice value; no pointers.
        "getpriority" => unsafe { libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, 0) },
        // SAFETY: getppid takes no arguments and cannot fail.
        "getppid" => unsafe { libc::syscall(libc::SYS_getppid) },
        _ => return Err(format!("syscall {name} is not one the checker may call")),
    };
    if ret == -1 {
        Ok(Err(io::Error::last_os_error().raw_os_error().unwrap_or(0)))
    } else {
        Ok(Ok(()))
    }
}

/// Real and effective user ids.
pub fn uids() -> (u32, u32) {
    // SAFETY: getuid and geteuid take no arguments and cannot fail.
    unsafe { (libc::getuid(), libc::geteuid()) }
}

/// Real and effective group ids.
pub fn gids() -> (u32, u32) {
    // SAFETY: getgid and getegid take no arguments and cannot fail.
    unsafe { (libc::getgid(), libc::getegid()) }
}

/// The supplementary group list.
pub fn groups() -> io::Result<Vec<u32>> {
    // SAFETY: a size of 0 asks only for the count; the null pointer is not dereferenced.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut list = vec![0 as libc::gid_t; n as usize];
    // SAFETY: `list` has room for exactly `n` gids and outlives the call.
    let got = unsafe { libc::getgroups(n, list.as_mut_ptr()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    list.truncate(got as usize);
    Ok(list)
}

/// The umask, read by setting it and putting it back (the checker is single-threaded, and
/// /proc/self/status's `Umask:` is preferred where the kernel has it).
pub fn umask() -> u32 {
    // SAFETY: umask(2) cannot fail; the old mask is restored by the next call.
    let old = unsafe { libc::umask(0o022) };
    // SAFETY: as above; this puts back the mask the process started with.
    unsafe { libc::umask(old) };
    old
}

/// `major:minor` of a device number (the glibc encoding of dev_t).
pub fn dev_major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_decode() {
        assert_eq!(dev_major_minor(0x0103), (1, 3));
        assert_eq!(dev_major_minor(0x0500), (5, 0));
        // 259:65537 uses the high bits of the minor (glibc's makedev layout).
        let (major, minor) = (259u64, 65537u64);
        let dev = ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & !0xff) << 12);
        assert_eq!(dev_major_minor(dev), (major, minor));
    }

    #[test]
    fn unknown_syscalls_and_rlimits_are_refused() {
        assert!(harmless_syscall("reboot").is_err());
        assert!(rlimit_resource("RLIMIT_BOGUS").is_none());
        assert_eq!(rlimit_resource("RLIMIT_NOFILE"), Some(libc::RLIMIT_NOFILE));
    }

    #[test]
    fn listed_syscalls_succeed_without_a_filter() {
        assert_eq!(harmless_syscall("getppid").unwrap(), Ok(()));
        assert_eq!(harmless_syscall("getpgid").unwrap(), Ok(()));
    }
}
