//! `berth-agent`: the init (PID 1) of a Berth VM guest's initramfs. It mounts /proc, /sys
//! and /dev, loads the kernel modules listed in /etc/modules (paths under
//! /lib/modules/<release>, in load order), finds the virtio-serial port named `berth.ctl`,
//! serves the host there, and powers the guest off when the host asks. Any failure is
//! printed on the console and ends init, which the host sees as the guest's panic.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_agent::{serve, Outcome};
use berth_agent_proto::Conn;
use nix::mount::{mount, MsFlags};

/// The port's name, as the host's VMM gives it (berth_vm::CONTROL_PORT_NAME).
const PORT_NAME: &str = "berth.ctl";

/// How long the port may take to appear once its module is loaded.
const PORT_WAIT: Duration = Duration::from_secs(30);

fn main() {
    if let Err(e) = run() {
        // The console is init's stderr: the host reads it when the guest ends.
        eprintln!("berth-agent: error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    if std::process::id() != 1 {
        return Err("berth-agent is a VM guest's init: it must run as PID 1".into());
    }
    for (fstype, target) in [("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev")] {
        fs::create_dir_all(target).map_err(|e| format!("create {target}: {e}"))?;
        mount(
            Some(fstype),
            target,
            Some(fstype),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| format!("mount {fstype} on {target}: {e}"))?;
    }
    load_modules()?;
    let port = find_port()?;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&port)
        .map_err(|e| format!("open {}: {e}", port.display()))?;
    eprintln!("berth-agent: serving on {}", port.display());
    let mut conn = Conn::agent(file);
    match serve(&mut conn).map_err(|e| format!("{}: {e}", port.display()))? {
        Outcome::PowerOff => {
            nix::unistd::sync();
            let _ = std::io::stderr().flush();
            nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF)
                .map_err(|e| format!("power off: {e}"))?;
            Ok(())
        }
    }
}

/// Loads each module of /etc/modules, in order, with finit_module(2).
fn load_modules() -> Result<(), String> {
    let list = match fs::read_to_string("/etc/modules") {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("read /etc/modules: {e}")),
    };
    let release = nix::sys::utsname::uname()
        .map_err(|e| format!("uname: {e}"))?
        .release()
        .to_string_lossy()
        .into_owned();
    let dir = Path::new("/lib/modules").join(release);
    for rel in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = dir.join(rel);
        let f = fs::File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
        // SAFETY: finit_module takes a descriptor this process owns (open for the call),
        // an empty NUL-terminated parameter string and no flags; it reads no other memory.
        let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), 0) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            // Built into this kernel, or loaded already: fine.
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!("load module {}: {e}", path.display()));
            }
        }
    }
    Ok(())
}

/// The device of the virtio-serial port named [`PORT_NAME`], once the kernel has made it.
fn find_port() -> Result<PathBuf, String> {
    let deadline = Instant::now() + PORT_WAIT;
    loop {
        if let Ok(entries) = fs::read_dir("/sys/class/virtio-ports") {
            for e in entries.flatten() {
                let name = fs::read_to_string(e.path().join("name")).unwrap_or_default();
                let dev = Path::new("/dev").join(e.file_name());
                if name.trim_end() == PORT_NAME && dev.exists() {
                    return Ok(dev);
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no virtio-serial port named {PORT_NAME} within {PORT_WAIT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
