//! `berth-agent`: the init (PID 1) of a Berth VM guest's initramfs. It mounts /proc, /sys,
//! /dev, /run and the cgroup2 hierarchy, loads the kernel modules listed in /etc/modules
//! (paths under /lib/modules/<release>, in load order), finds the virtio-serial port named
//! `berth.ctl`, serves the host there, and powers the guest off when the host asks or goes
//! away. Any failure is printed on the console and ends init, which the host sees as the
//! guest's panic.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_agent::{serve, Paths};
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
    load_modules()?;
    berth_agent::rootfs::set_volume_modules(read_volume_modules()?);
    leave_initramfs()?;
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
    for (fstype, target, flags) in [
        ("tmpfs", "/run", MsFlags::MS_NOSUID | MsFlags::MS_NODEV),
        (
            "cgroup2",
            "/sys/fs/cgroup",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        ),
    ] {
        fs::create_dir_all(target).map_err(|e| format!("create {target}: {e}"))?;
        mount(Some(fstype), target, Some(fstype), flags, None::<&str>)
            .map_err(|e| format!("mount {fstype} on {target}: {e}"))?;
    }
    enable_controllers()?;
    let port = find_port()?;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&port)
        .map_err(|e| format!("open {}: {e}", port.display()))?;
    eprintln!("berth-agent: serving on {}", port.display());
    let outcome = serve(file, &Paths::guest()).map_err(|e| format!("{}: {e}", port.display()))?;
    eprintln!("berth-agent: {outcome:?}");
    nix::unistd::sync();
    let _ = std::io::stderr().flush();
    nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF)
        .map_err(|e| format!("power off: {e}"))?;
    Ok(())
}

/// Moves the root to a tmpfs, as switch_root does: the initramfs's rootfs cannot be
/// pivot_root(2)ed away from, and libberth pivots each container's root (rather than
/// chroot, which a process with CAP_SYS_CHROOT in the container could leave). What the
/// initramfs held is no longer needed once the modules are loaded: it is deleted first,
/// to give its memory back.
fn leave_initramfs() -> Result<(), String> {
    for p in ["/lib", "/etc"] {
        let _ = fs::remove_dir_all(p);
    }
    let new = "/newroot";
    fs::create_dir_all(new).map_err(|e| format!("create {new}: {e}"))?;
    mount(
        Some("tmpfs"),
        new,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|e| format!("mount tmpfs on {new}: {e}"))?;
    nix::unistd::chdir(new).map_err(|e| format!("chdir {new}: {e}"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("move {new} to /: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot {new}: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

/// Hands every controller the kernel has to the root's children, where libberth makes the
/// containers' cgroups (as systemd does on a cgroup-v2 host).
fn enable_controllers() -> Result<(), String> {
    let root = Path::new("/sys/fs/cgroup");
    let have = fs::read_to_string(root.join("cgroup.controllers"))
        .map_err(|e| format!("read /sys/fs/cgroup/cgroup.controllers: {e}"))?;
    let want: Vec<String> = have.split_whitespace().map(|c| format!("+{c}")).collect();
    if !want.is_empty() {
        fs::write(root.join("cgroup.subtree_control"), want.join(" "))
            .map_err(|e| format!("enable cgroup controllers {}: {e}", want.join(" ")))?;
    }
    Ok(())
}

/// The modules /etc/modules.volumes lists (name and bytes), read before the initramfs goes.
fn read_volume_modules() -> Result<Vec<berth_agent::rootfs::Module>, String> {
    let list = match fs::read_to_string("/etc/modules.volumes") {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("read /etc/modules.volumes: {e}")),
    };
    let dir = modules_dir()?;
    let mut out = Vec::new();
    for rel in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = dir.join(rel);
        let bytes = fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        out.push((rel.to_string(), bytes));
    }
    Ok(out)
}

/// /lib/modules/<release> of the running kernel.
fn modules_dir() -> Result<PathBuf, String> {
    let release = nix::sys::utsname::uname()
        .map_err(|e| format!("uname: {e}"))?
        .release()
        .to_string_lossy()
        .into_owned();
    Ok(Path::new("/lib/modules").join(release))
}

/// Loads each module of /etc/modules, in order, with finit_module(2).
fn load_modules() -> Result<(), String> {
    let list = match fs::read_to_string("/etc/modules") {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("read /etc/modules: {e}")),
    };
    let dir = modules_dir()?;
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
