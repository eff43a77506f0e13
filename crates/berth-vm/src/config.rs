//! What a VM is made of, and its checks before any VMM starts.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The name of the control channel's virtio-serial port unless the config says otherwise;
/// the guest finds it in `/sys/class/virtio-ports/*/name`.
pub const CONTROL_PORT_NAME: &str = "berth.ctl";

/// The longest path a unix socket address holds (`sun_path` less its NUL).
pub const SOCKET_PATH_MAX: usize = 107;

/// Memory bounds in MiB: below 64 the Debian kernel does not reach /init; the top is a
/// sanity bound against unit mistakes (bytes given as MiB).
pub const MEMORY_MIB_MIN: u32 = 64;
/// See [`MEMORY_MIB_MIN`].
pub const MEMORY_MIB_MAX: u32 = 1 << 20;
/// Most vCPUs a VM may have.
pub const VCPUS_MAX: u16 = 255;

/// The kernel command line's size on x86 (`COMMAND_LINE_SIZE`), NUL included.
pub const CMDLINE_MAX: usize = 2048;

/// Kernel parameters the backend sets itself: the console it logs and the panic behaviour
/// its exit report depends on. A config that sets them is refused.
pub const RESERVED_CMDLINE_PARAMS: &[&str] = &["console", "earlycon", "earlyprintk", "panic"];

/// A VM to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// The guest kernel (a bzImage).
    pub kernel: PathBuf,
    /// The initramfs, if any (a newc cpio, compressed or not).
    pub initramfs: Option<PathBuf>,
    /// Kernel parameters after the backend's own (console, panic, timing hints); none of
    /// [`RESERVED_CMDLINE_PARAMS`]. Words after `--` go to the guest's init.
    pub cmdline: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Number of vCPUs.
    pub vcpus: u16,
    /// Block devices, in order: the guest sees them as virtio-blk disks.
    pub block_devices: Vec<BlockDevice>,
    /// The host-guest byte stream, if any.
    pub control: Option<ControlChannel>,
    /// Host directories served to the guest by a vhost-user-fs daemon (virtiofsd) each.
    pub shared_dirs: Vec<SharedDir>,
    /// Where the guest's serial console is written (created or truncated at boot).
    pub console_log: PathBuf,
}

/// A directory shared with the guest over virtio-fs: `socket` is the vhost-user socket of
/// the daemon that serves it (started by the caller, listening before boot); the guest
/// mounts it by `tag` (`mount -t virtiofs TAG DIR`). Guest memory is then a shared memfd,
/// as vhost-user needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDir {
    pub socket: PathBuf,
    /// 1 to 36 of `[A-Za-z0-9_-]` (virtio-fs tags are at most 36 bytes).
    pub tag: String,
}

/// A raw disk image or block device given to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// The host file or block device.
    pub path: PathBuf,
    /// Whether the guest may only read it (the VMM opens it read-only).
    pub read_only: bool,
    /// What the guest reads in `/sys/block/vdX/serial` (1 to 20 of `[A-Za-z0-9_-]`): the
    /// guest finds a disk by it, since device names follow probe order, not this list's.
    pub serial: Option<String>,
}

/// The longest disk serial virtio-blk carries.
pub const SERIAL_MAX: usize = 20;

/// The control channel: a byte stream between the host and the guest. The host end is a
/// unix socket the VMM listens on (one connection at a time); the guest end, with QEMU, is
/// a virtio-serial port named `port_name` (`/dev/vportNpM`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlChannel {
    /// The unix socket the VMM creates; nothing may exist there at boot.
    pub socket: PathBuf,
    /// The guest-visible port name: 1 to 64 of `[A-Za-z0-9._-]`.
    pub port_name: String,
}

impl ControlChannel {
    /// A channel at `socket` with the port name [`CONTROL_PORT_NAME`].
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            port_name: CONTROL_PORT_NAME.to_string(),
        }
    }
}

impl VmConfig {
    /// A config with the given kernel and console log, 256 MiB, 1 vCPU and nothing else.
    pub fn new(kernel: impl Into<PathBuf>, console_log: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initramfs: None,
            cmdline: String::new(),
            memory_mib: 256,
            vcpus: 1,
            block_devices: Vec::new(),
            control: None,
            shared_dirs: Vec::new(),
            console_log: console_log.into(),
        }
    }

    /// Checks everything that can be checked before a VMM starts: the files exist and are
    /// readable, sizes are in bounds, the command line is one the backend can extend, the
    /// socket path fits and is free. Every error names the file or value at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        readable_file("kernel", &self.kernel)?;
        if let Some(initramfs) = &self.initramfs {
            readable_file("initramfs", initramfs)?;
        }
        if !(MEMORY_MIB_MIN..=MEMORY_MIB_MAX).contains(&self.memory_mib) {
            return Err(ConfigError::Memory {
                mib: self.memory_mib,
            });
        }
        if self.vcpus == 0 || self.vcpus > VCPUS_MAX {
            return Err(ConfigError::Vcpus { vcpus: self.vcpus });
        }
        check_cmdline(&self.cmdline)?;
        for (index, dev) in self.block_devices.iter().enumerate() {
            check_block_device(index, dev)?;
        }
        if let Some(control) = &self.control {
            check_control(control)?;
        }
        for (index, dir) in self.shared_dirs.iter().enumerate() {
            let t = &dir.tag;
            let tag_ok = !t.is_empty()
                && t.len() <= 36
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !tag_ok {
                return Err(ConfigError::SharedDirTag {
                    index,
                    tag: t.clone(),
                });
            }
            let is_socket = std::fs::metadata(&dir.socket)
                .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                .unwrap_or(false);
            if !is_socket {
                return Err(ConfigError::SharedDirSocket {
                    index,
                    path: dir.socket.clone(),
                });
            }
        }
        let parent = parent_dir(&self.console_log);
        if !parent.is_dir() {
            return Err(ConfigError::NoParentDir {
                what: "console log",
                path: self.console_log.clone(),
            });
        }
        Ok(())
    }

    /// Creates or truncates the console log, mode 0600, so that a bad path fails here and
    /// not inside the VMM.
    pub(crate) fn create_console_log(&self) -> Result<std::fs::File, ConfigError> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&self.console_log)
            .map_err(|source| ConfigError::ConsoleLog {
                path: self.console_log.clone(),
                source,
            })
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn readable_file(what: &'static str, path: &Path) -> Result<(), ConfigError> {
    let file = File::open(path).map_err(|source| ConfigError::Unreadable {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let meta = file.metadata().map_err(|source| ConfigError::Unreadable {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn check_block_device(index: usize, dev: &BlockDevice) -> Result<(), ConfigError> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(!dev.read_only);
    let file = opts
        .open(&dev.path)
        .map_err(|source| ConfigError::BlockDevice {
            index,
            path: dev.path.clone(),
            source,
        })?;
    let ty = file
        .metadata()
        .map_err(|source| ConfigError::BlockDevice {
            index,
            path: dev.path.clone(),
            source,
        })?
        .file_type();
    if !(ty.is_file() || ty.is_block_device()) {
        return Err(ConfigError::NotAFile {
            what: "block device",
            path: dev.path.clone(),
        });
    }
    if let Some(serial) = &dev.serial {
        let ok = !serial.is_empty()
            && serial.len() <= SERIAL_MAX
            && serial
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(ConfigError::Serial {
                index,
                serial: serial.clone(),
            });
        }
    }
    Ok(())
}

fn check_control(control: &ControlChannel) -> Result<(), ConfigError> {
    let name = &control.port_name;
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !name_ok {
        return Err(ConfigError::PortName { name: name.clone() });
    }
    let len = control.socket.as_os_str().len();
    if len > SOCKET_PATH_MAX {
        return Err(ConfigError::SocketPathTooLong {
            path: control.socket.clone(),
            len,
        });
    }
    match std::fs::symlink_metadata(&control.socket) {
        Ok(_) => {
            return Err(ConfigError::SocketExists {
                path: control.socket.clone(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ConfigError::Socket {
                path: control.socket.clone(),
                source,
            })
        }
    }
    if !parent_dir(&control.socket).is_dir() {
        return Err(ConfigError::NoParentDir {
            what: "control socket",
            path: control.socket.clone(),
        });
    }
    Ok(())
}

fn check_cmdline(cmdline: &str) -> Result<(), ConfigError> {
    if let Some(c) = cmdline.chars().find(|c| c.is_control() && *c != ' ') {
        return Err(ConfigError::CmdlineChar { c });
    }
    // Only the kernel's own words count: those after `--` belong to init.
    for word in cmdline.split(' ').take_while(|w| *w != "--") {
        let key = word.split('=').next().unwrap_or(word);
        if RESERVED_CMDLINE_PARAMS.contains(&key) {
            return Err(ConfigError::ReservedParam {
                param: key.to_string(),
            });
        }
    }
    Ok(())
}

/// Whether the backend's `own` words plus the config's fit in the kernel's command line.
pub(crate) fn compose_cmdline(own: &[String], config: &str) -> Result<String, ConfigError> {
    let mut words: Vec<&str> = own.iter().map(String::as_str).collect();
    words.extend(config.split(' ').filter(|w| !w.is_empty()));
    let line = words.join(" ");
    if line.len() >= CMDLINE_MAX {
        return Err(ConfigError::CmdlineTooLong {
            len: line.len(),
            max: CMDLINE_MAX - 1,
        });
    }
    Ok(line)
}

/// A [`VmConfig`] the backend cannot boot.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot open the {what} {path}")]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the {what} {path} is not a regular file")]
    NotAFile { what: &'static str, path: PathBuf },
    #[error("cannot open block device {index} ({path})")]
    BlockDevice {
        index: usize,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the serial {serial:?} of block device {index} is not 1 to {SERIAL_MAX} of [A-Za-z0-9_-]"
    )]
    Serial { index: usize, serial: String },
    #[error("the tag {tag:?} of shared directory {index} is not 1 to 36 of [A-Za-z0-9_-]")]
    SharedDirTag { index: usize, tag: String },
    #[error("shared directory {index}: no vhost-user socket at {path}")]
    SharedDirSocket { index: usize, path: PathBuf },
    #[error("memory of {mib} MiB is out of bounds ({MEMORY_MIB_MIN} to {MEMORY_MIB_MAX} MiB)")]
    Memory { mib: u32 },
    #[error("{vcpus} vcpus is out of bounds (1 to {VCPUS_MAX})")]
    Vcpus { vcpus: u16 },
    #[error("the kernel command line has a control character {c:?}")]
    CmdlineChar { c: char },
    #[error("the kernel command line sets {param}=, which the backend sets itself")]
    ReservedParam { param: String },
    #[error("the kernel command line is {len} bytes, more than {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("the control port name {name:?} is not 1 to 64 of [A-Za-z0-9._-]")]
    PortName { name: String },
    #[error("the control socket path {path} is {len} bytes, more than {SOCKET_PATH_MAX}")]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error("something already exists at the control socket path {path}")]
    SocketExists { path: PathBuf },
    #[error("cannot check the control socket path {path}")]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the directory of the {what} {path} does not exist")]
    NoParentDir { what: &'static str, path: PathBuf },
    #[error("cannot create the console log {path}")]
    ConsoleLog {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path) -> VmConfig {
        let kernel = dir.join("vmlinuz");
        std::fs::write(&kernel, b"kernel").unwrap();
        VmConfig::new(kernel, dir.join("console.log"))
    }

    #[test]
    fn a_minimal_config_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        config_in(dir.path()).validate().unwrap();
    }

    #[test]
    fn a_missing_kernel_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config_in(dir.path());
        c.kernel = dir.path().join("nope");
        let e = c.validate().unwrap_err();
        assert!(
            matches!(e, ConfigError::Unreadable { what: "kernel", .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn a_directory_is_no_initramfs() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config_in(dir.path());
        c.initramfs = Some(dir.path().to_path_buf());
        let e = c.validate().unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::NotAFile {
                    what: "initramfs",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn memory_and_vcpus_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config_in(dir.path());
        c.memory_mib = 16;
        assert!(matches!(c.validate(), Err(ConfigError::Memory { mib: 16 })));
        c.memory_mib = 256;
        c.vcpus = 0;
        assert!(matches!(c.validate(), Err(ConfigError::Vcpus { vcpus: 0 })));
    }

    #[test]
    fn the_backends_own_parameters_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config_in(dir.path());
        c.cmdline = "quiet panic=0".into();
        let e = c.validate().unwrap_err();
        assert!(matches!(e, ConfigError::ReservedParam { ref param } if param == "panic"));
        c.cmdline = "quiet -- console=whatever".into();
        c.validate().unwrap();
        c.cmdline = "quiet\nrdinit=/x".into();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::CmdlineChar { c: '\n' })
        ));
    }

    #[test]
    fn a_long_command_line_is_refused() {
        let long = "x".repeat(CMDLINE_MAX);
        let e = compose_cmdline(&["console=ttyS0".into()], &long).unwrap_err();
        assert!(matches!(e, ConfigError::CmdlineTooLong { .. }), "{e:?}");
        let line = compose_cmdline(&["console=ttyS0".into()], " quiet  ro ").unwrap();
        assert_eq!(line, "console=ttyS0 quiet ro");
    }

    #[test]
    fn the_control_socket_must_fit_and_be_free() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config_in(dir.path());
        c.control = Some(ControlChannel::new(dir.path().join("x".repeat(120))));
        assert!(matches!(
            c.validate(),
            Err(ConfigError::SocketPathTooLong { .. })
        ));
        let taken = dir.path().join("ctl.sock");
        std::fs::write(&taken, b"").unwrap();
        c.control = Some(ControlChannel::new(&taken));
        assert!(matches!(
            c.validate(),
            Err(ConfigError::SocketExists { .. })
        ));
        c.control = Some(ControlChannel {
            socket: dir.path().join("free.sock"),
            port_name: "a,b".into(),
        });
        assert!(matches!(c.validate(), Err(ConfigError::PortName { .. })));
    }

    #[test]
    fn a_missing_disk_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config_in(dir.path());
        c.block_devices.push(BlockDevice {
            path: dir.path().join("missing.img"),
            read_only: true,
            serial: None,
        });
        let e = c.validate().unwrap_err();
        assert!(
            matches!(e, ConfigError::BlockDevice { index: 0, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn a_disk_serial_with_option_syntax_or_too_long_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("layer.img");
        std::fs::write(&img, b"").unwrap();
        for bad in ["a,drive=x", "", "abcdefghijklmnopqrstu", "l 0"] {
            let mut c = config_in(dir.path());
            c.block_devices.push(BlockDevice {
                path: img.clone(),
                read_only: true,
                serial: Some(bad.into()),
            });
            let e = c.validate().unwrap_err();
            assert!(
                matches!(e, ConfigError::Serial { index: 0, .. }),
                "{bad}: {e:?}"
            );
            assert!(e.to_string().contains("serial"), "{e}");
        }
        let mut c = config_in(dir.path());
        c.block_devices.push(BlockDevice {
            path: img,
            read_only: true,
            serial: Some("berth-l0_A".into()),
        });
        c.validate().unwrap();
    }
}
