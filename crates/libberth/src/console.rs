//! process.terminal: the init opens a pty from the container's devpts, keeps the slave as its
//! stdio and controlling terminal, and hands the master to `create`, which passes it on to
//! the --console-socket by SCM_RIGHTS.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::Box as ConsoleSize;

use crate::channel::{Channel, Msg};
use crate::error::{Context, Result};

/// In the init, after the root switch: a new pty; the master goes to `create`, the slave
/// is bind-mounted on /dev/console and returned.
pub fn setup_in_container(chan: &Channel, size: Option<&ConsoleSize>) -> Result<OwnedFd> {
    let (slave, slave_path) = new_pty(chan, size)?;
    // /dev/console is resolved inside the root and mounted onto through its fd: where /dev
    // comes from the image, a link planted there must not take the bind elsewhere.
    let root = open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "open /".into())?;
    let console = crate::rootfs::resolve::ensure_file(root.as_fd(), Path::new("/dev/console"))?;
    // Nor may it lead into procfs or sysfs, where a bind would hide a file the masks and
    // read-only paths protect (the class of CVE-2025-52565).
    let fs = nix::sys::statfs::fstatfs(&console).ctx(|| "statfs /dev/console".into())?;
    let kind = fs.filesystem_type();
    if kind == nix::sys::statfs::PROC_SUPER_MAGIC || kind == nix::sys::statfs::SYSFS_MAGIC {
        return Err(crate::error::Error::Unsupported(
            "/dev/console in the container leads into procfs or sysfs: refused".into(),
        ));
    }
    mount(
        Some(slave_path.as_str()),
        &crate::rootfs::resolve::fd_path(console.as_fd()),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .ctx(|| format!("bind {slave_path} on /dev/console"))?;
    Ok(slave)
}

/// For `exec`: a new pty from the container's devpts; the master goes to the parent.
pub fn open_pty(chan: &Channel, size: Option<&ConsoleSize>) -> Result<OwnedFd> {
    new_pty(chan, size).map(|(slave, _)| slave)
}

fn new_pty(chan: &Channel, size: Option<&ConsoleSize>) -> Result<(OwnedFd, String)> {
    let master = open(
        "/dev/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "open /dev/ptmx in the container (is /dev/pts mounted?)".into())?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to an int that stays valid for the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) };
    nix::errno::Errno::result(rc).ctx(|| "unlock the pty".into())?;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes the pty number into `n`, valid for the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) };
    nix::errno::Errno::result(rc).ctx(|| "get the pty number".into())?;
    let slave_path = format!("/dev/pts/{n}");
    let slave = open(
        slave_path.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open {slave_path}"))?;
    if let Some(sz) = size {
        set_size(slave.as_fd(), sz.height() as u16, sz.width() as u16)?;
    }
    chan.send_with_fd(&Msg::Console, Some(master.as_fd()))?;
    Ok((slave, slave_path))
}

pub fn set_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that is valid for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    nix::errno::Errno::result(rc)
        .map(drop)
        .ctx(|| "set the console size".into())
}

/// Right before Ready: the slave becomes stdio and the controlling terminal.
pub fn become_controlling(slave: &OwnedFd) -> Result<()> {
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors of this process; both fds are valid.
        let rc = unsafe { libc::dup2(slave.as_raw_fd(), target) };
        nix::errno::Errno::result(rc).ctx(|| format!("dup the pty onto fd {target}"))?;
    }
    // SAFETY: TIOCSCTTY with arg 0 on our session's new terminal; no memory is passed.
    let rc = unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    nix::errno::Errno::result(rc)
        .map(drop)
        .ctx(|| "make the pty the controlling terminal".into())
}

/// In `create`: send the pty master to the console socket, as runc does (the payload names
/// the pty; the fd rides as SCM_RIGHTS).
pub fn send_to_socket(socket: &Path, master: BorrowedFd<'_>) -> Result<()> {
    crate::channel::send_to_unix_socket(socket, "console socket", b"/dev/ptmx", master)
}
