//! Host directories shared with a guest (`-v`): one virtiofsd (a vhost-user-fs daemon) per
//! directory, serving it to QEMU's `vhost-user-fs-device`; the agent mounts it by tag.
//!
//! virtiofsd confines itself (its own mount, pid and network namespaces, pivot_root into
//! the directory, seccomp). A read-only share is read-only on the host's side too: the
//! daemon starts in a mount namespace of its own where the directory is bind-mounted
//! read-only over itself, so a guest that ignores its own read-only mount still cannot
//! write. Nothing is mounted in the host's namespace, so nothing can be left there.

use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// Where virtiofsd is looked for when `BERTH_VIRTIOFSD` is not set: Debian 12's (QEMU's C
/// daemon, in qemu-system-common), then the Rust one of later releases.
pub const VIRTIOFSD_PATHS: &[&str] = &["/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd"];

/// A host directory for the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub host: PathBuf,
    pub read_only: bool,
}

/// The tag of share `i`, as the agent mounts it.
pub fn tag(i: usize) -> String {
    format!("berth-v{i}")
}

fn virtiofsd() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os("BERTH_VIRTIOFSD") {
        return Ok(PathBuf::from(p));
    }
    VIRTIOFSD_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            Error::new(format!(
                "no virtiofsd in {} (Debian's qemu-system-common has it): volumes need it",
                VIRTIOFSD_PATHS.join(" or ")
            ))
        })
}

/// A running virtiofsd; killed, reaped and its socket removed on drop.
pub struct Share {
    pub tag: String,
    pub socket: PathBuf,
    child: Child,
}

impl Share {
    /// Starts virtiofsd for share `index` with its socket in `run_dir`, and waits until it
    /// listens.
    pub fn start(run_dir: &Path, index: usize, v: &Volume) -> Result<Share, Error> {
        let what = format!("volume {}", v.host.display());
        let meta = std::fs::metadata(&v.host).map_err(|e| Error::new(format!("{what}: {e}")))?;
        if !meta.is_dir() {
            return Err(Error::new(format!(
                "{what}: only directories can be shared with a VM"
            )));
        }
        let bin = virtiofsd()?;
        let tag = tag(index);
        let socket = run_dir.join(format!("{tag}.sock"));
        let log_path = run_dir.join(format!("{tag}.log"));
        let log = File::create(&log_path)
            .map_err(|e| Error::new(format!("create {}: {e}", log_path.display())))?;
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("--socket-path={}", socket.display()))
            .arg("-o")
            .arg(format!("source={}", v.host.display()))
            .args(["-o", "cache=auto", "-o", "sandbox=namespace"])
            // Errors only: the log is a file the guest's requests could otherwise grow.
            .args(["-o", "log_level=err"])
            // Raising RLIMIT_NOFILE needs CAP_SYS_RESOURCE, which a host may not give.
            .arg("--rlimit-nofile=0")
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let src = CString::new(v.host.as_os_str().as_bytes())
            .map_err(|_| Error::new(format!("{what}: a NUL in the path")))?;
        let read_only = v.read_only;
        // SAFETY: the closure runs in the forked child before exec and makes only system
        // calls (prctl, unshare, mount) on memory prepared before the fork; it allocates
        // nothing and takes no lock.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if read_only {
                    let slash = c"/";
                    let none: *const libc::c_char = std::ptr::null();
                    if libc::unshare(libc::CLONE_NEWNS) != 0
                        || libc::mount(
                            none,
                            slash.as_ptr(),
                            none,
                            libc::MS_REC | libc::MS_PRIVATE,
                            std::ptr::null(),
                        ) != 0
                        || libc::mount(
                            src.as_ptr(),
                            src.as_ptr(),
                            none,
                            libc::MS_BIND | libc::MS_REC,
                            std::ptr::null(),
                        ) != 0
                        || libc::mount(
                            none,
                            src.as_ptr(),
                            none,
                            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                            std::ptr::null(),
                        ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::new(format!("{what}: start {}: {e}", bin.display())))?;
        let mut share = Share { tag, socket, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = share.child.try_wait() {
                let said = std::fs::read_to_string(&log_path).unwrap_or_default();
                let said = &said[said.len().saturating_sub(512)..];
                return Err(Error::new(format!(
                    "{what}: virtiofsd exited ({st}): {}",
                    said.trim()
                )));
            }
            let listening = std::fs::metadata(&share.socket)
                .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                .unwrap_or(false);
            if listening {
                return Ok(share);
            }
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "{what}: virtiofsd made no socket {} within 10 s",
                    share.socket.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}
