//! The QEMU backend: Debian's `qemu-system-x86_64` with the `microvm` machine.
//!
//! The machine has no PCI, no firmware beyond qboot and no default devices
//! (`-nodefaults -no-user-config`); devices are virtio-mmio, which QEMU describes to the
//! guest in ACPI (Debian's kernel cannot take them from its command line). QEMU runs with
//! its seccomp sandbox on, stdin and stdout on `/dev/null`, its stderr into a bounded memory
//! file (the cause of a failed start), the guest's serial console into the config's log file.
//! Kernel parameters it adds in front of the config's:
//!
//! - `console=ttyS0`: the console log;
//! - `panic=-1`: a panicking guest reboots at once, and `-no-reboot` turns that into QEMU's
//!   exit, so a panic ends the VM instead of hanging it;
//! - under TCG, `tsc_early_khz=N` with the host's TSC frequency: TCG's TSC runs at the
//!   host's rate, and the kernel's calibration against the emulated PIT fails when the host
//!   is busy, after which the guest stalls with no clock (seen on this machine under load).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

use crate::accel::{Accel, AccelProbe};
use crate::config::{compose_cmdline, ConfigError, VmConfig};
use crate::console;
use crate::process::{ProcessExit, VmmProcess};
use crate::{Hypervisor, Vm, VmError, VmExit};

/// Debian's QEMU for x86-64 guests.
pub const DEFAULT_BINARY: &str = "/usr/bin/qemu-system-x86_64";

/// How long QEMU may take to create its control socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a killed QEMU may take to be reaped.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// QEMU's stderr is kept in a memory file of this size; writes past it fail (the guest can
/// make QEMU report device errors, so it is bounded like everything the guest can trigger).
const STDERR_MAX: usize = 64 * 1024;

/// How much of QEMU's stderr an error message carries.
const STDERR_SHOWN: usize = 2048;

/// The QEMU backend.
#[derive(Debug, Clone)]
pub struct Qemu {
    binary: PathBuf,
    accel: AccelProbe,
    tsc_khz: Option<u64>,
}

impl Qemu {
    /// A backend running `binary` with `accel` (from [`crate::accel::probe`], or forced).
    /// Under TCG it needs the host's TSC frequency: measured once per host boot (about
    /// 50 ms) and kept in [`TSC_CACHE`] for the processes that come after.
    pub fn new(binary: impl Into<PathBuf>, accel: AccelProbe) -> Self {
        let tsc_khz = match accel.accel {
            Accel::Tcg => cached_tsc_khz(Path::new(TSC_CACHE)),
            Accel::Kvm => None,
        };
        Self {
            binary: binary.into(),
            accel,
            tsc_khz,
        }
    }

    /// [`DEFAULT_BINARY`] with the accelerator this host's probe chooses.
    pub fn probe() -> Self {
        Self::new(DEFAULT_BINARY, crate::accel::probe())
    }

    /// The QEMU binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The kernel parameters this backend puts in front of the config's.
    pub fn own_cmdline(&self) -> Vec<String> {
        let mut words = vec!["console=ttyS0".to_string(), "panic=-1".to_string()];
        if let Some(khz) = self.tsc_khz {
            words.push(format!("tsc_early_khz={khz}"));
        }
        words
    }

    /// QEMU's arguments for `config`, which must have passed [`VmConfig::validate`].
    pub fn args(&self, config: &VmConfig) -> Result<Vec<OsString>, ConfigError> {
        let mut a = Args::default();
        a.push("-M").push("microvm,auto-kernel-cmdline=off");
        a.push("-nodefaults").push("-no-user-config");
        a.push("-nographic").push("-no-reboot");
        // Modern (version 2) virtio-mmio rather than microvm's legacy default: vhost-user
        // devices (virtio-fs) refuse legacy virtio, and the guest drives both alike.
        a.push("-global").push("virtio-mmio.force-legacy=false");
        a.push("-sandbox")
            .push("on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
        a.push("-accel").push(self.accel.accel.as_str());
        a.push("-cpu").push(match self.accel.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        });
        a.push("-m").push(format!("{}M", config.memory_mib));
        if !config.shared_dirs.is_empty() {
            // vhost-user daemons map guest memory: it must be a shared file, not anonymous.
            a.push("-object").push(format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                config.memory_mib
            ));
            a.push("-machine").push("memory-backend=mem");
        }
        a.push("-smp").push(config.vcpus.to_string());
        // -kernel, -initrd and -append are taken whole, without option parsing.
        a.push("-kernel").push(config.kernel.as_os_str());
        if let Some(initramfs) = &config.initramfs {
            a.push("-initrd").push(initramfs.as_os_str());
        }
        let cmdline = compose_cmdline(&self.own_cmdline(), &config.cmdline)?;
        a.push("-append").push(cmdline);
        a.push("-chardev")
            // The serial console goes to QEMU's stdout, a pipe that berth-vm drains into the
            // log with a size cap (console::Drain): the guest cannot fill the disk.
            .push("file,id=console,path=/dev/stdout");
        a.push("-serial").push("chardev:console");
        if let Some(control) = &config.control {
            a.push("-chardev").push(opts(
                "socket,id=control,server=on,wait=off,path=",
                &control.socket,
            ));
            a.push("-device").push("virtio-serial-device");
            a.push("-device").push(format!(
                "virtserialport,chardev=control,name={}",
                control.port_name
            ));
        }
        for (i, dir) in config.shared_dirs.iter().enumerate() {
            a.push("-chardev")
                .push(opts(&format!("socket,id=fs{i},path="), &dir.socket));
            // The tag is checked to be plain ([A-Za-z0-9_-]).
            a.push("-device").push(format!(
                "vhost-user-fs-device,chardev=fs{i},tag={}",
                dir.tag
            ));
        }
        for (i, dev) in config.block_devices.iter().enumerate() {
            let driver = match std::fs::metadata(&dev.path) {
                Ok(m) if m.file_type().is_block_device() => "host_device",
                _ => "file",
            };
            let ro = if dev.read_only { "on" } else { "off" };
            // -blockdev with an explicit protocol driver: no format probing and no
            // "protocol:" prefixes read from the file name.
            let mut spec = OsString::from(format!(
                "driver={driver},node-name=disk{i},read-only={ro},filename="
            ));
            spec.push(escape_commas(dev.path.as_os_str()));
            a.push("-blockdev").push(spec);
            // The serial is checked to be plain ([A-Za-z0-9_-]): no option syntax in it.
            let serial = dev
                .serial
                .as_deref()
                .map(|s| format!(",serial={s}"))
                .unwrap_or_default();
            a.push("-device")
                .push(format!("virtio-blk-device,drive=disk{i}{serial}"));
        }
        Ok(a.0)
    }
}

impl Hypervisor for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn accel(&self) -> &AccelProbe {
        &self.accel
    }

    fn boot(&self, config: &VmConfig) -> Result<Box<dyn Vm>, VmError> {
        config.validate()?;
        let args = self.args(config)?;
        let log = config.create_console_log()?;
        let (console_rd, console_wr) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| VmError::Spawn {
                binary: self.binary.clone(),
                source: e.into(),
            })?;
        let drain = console::Drain::start(console_rd, log).map_err(|source| VmError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        let stderr = stderr_buffer().map_err(VmError::StderrBuffer)?;
        let child_stderr = stderr.try_clone().map_err(|source| VmError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(&args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::from(console_wr))
            .stderr(Stdio::from(child_stderr));
        let process = VmmProcess::spawn(cmd).map_err(|source| VmError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        let mut vm = QemuVm {
            binary: self.binary.clone(),
            process,
            stderr: File::from(stderr),
            console_log: config.console_log.clone(),
            console: drain,
            control_socket: config.control.as_ref().map(|c| c.socket.clone()),
            exit: None,
        };
        vm.wait_for_control_socket(START_TIMEOUT)?;
        Ok(Box::new(vm))
    }
}

/// A VM run by QEMU.
pub struct QemuVm {
    binary: PathBuf,
    process: VmmProcess,
    stderr: File,
    console_log: PathBuf,
    console: console::Drain,
    control_socket: Option<PathBuf>,
    exit: Option<VmExit>,
}

impl QemuVm {
    /// Returns once QEMU listens on the control socket, so that a client may connect; a QEMU
    /// that exits first (a bad argument, a device it cannot open) is an error with its stderr.
    fn wait_for_control_socket(&mut self, timeout: Duration) -> Result<(), VmError> {
        let Some(socket) = self.control_socket.clone() else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.process.try_exit().map_err(|source| VmError::Wait {
                pid: self.process.pid(),
                source,
            })? {
                self.remove_control_socket();
                return Err(VmError::StartFailed {
                    binary: self.binary.clone(),
                    exit: exit.to_string(),
                    stderr: self.stderr_tail(),
                });
            }
            if listening(&socket) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                // Drop kills and reaps it.
                return Err(VmError::StartTimeout {
                    binary: self.binary.clone(),
                    pid: self.process.pid(),
                    socket,
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The console log this VM writes.
    pub fn console_log(&self) -> &Path {
        &self.console_log
    }

    fn stderr_tail(&self) -> String {
        let mut buf = vec![0u8; STDERR_MAX];
        let n = self.stderr.read_at(&mut buf, 0).unwrap_or(0);
        buf.truncate(n);
        // The memory file is zero-filled past what QEMU wrote.
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let text = &buf[..end];
        let start = text.len().saturating_sub(STDERR_SHOWN);
        let lines: Vec<String> = text[start..]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| console::printable(l, STDERR_SHOWN))
            .collect();
        lines.join("; ")
    }

    fn exit_of(&mut self, exit: ProcessExit) -> Result<VmExit, VmError> {
        Ok(match exit {
            ProcessExit::Exited(0) => console::guest_exit(&self.console.finish()),
            ProcessExit::Exited(code) => VmExit::VmmFailed {
                code,
                stderr: self.stderr_tail(),
            },
            ProcessExit::Signaled(signal) => VmExit::Killed {
                signal,
                by_caller: self.process.killed()
                    && signal == nix::sys::signal::Signal::SIGKILL as i32,
            },
        })
    }

    /// QEMU removes its socket when it exits cleanly, not when it is killed.
    fn remove_control_socket(&self) {
        if let Some(socket) = &self.control_socket {
            if let Ok(meta) = std::fs::symlink_metadata(socket) {
                if meta.file_type().is_socket() {
                    let _ = std::fs::remove_file(socket);
                }
            }
        }
    }
}

impl Vm for QemuVm {
    fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn wait(&mut self, timeout: Duration) -> Result<VmExit, VmError> {
        if let Some(exit) = &self.exit {
            return Ok(exit.clone());
        }
        let pid = self.process.pid();
        let exit = self
            .process
            .wait(timeout)
            .map_err(|source| VmError::Wait { pid, source })?
            .ok_or(VmError::WaitTimeout { pid, timeout })?;
        self.remove_control_socket();
        let exit = self.exit_of(exit)?;
        self.exit = Some(exit.clone());
        Ok(exit)
    }

    fn kill(&mut self) -> Result<(), VmError> {
        let pid = self.process.pid();
        self.process
            .kill()
            .map_err(|source| VmError::Signal { pid, source })?;
        match self.process.wait(KILL_TIMEOUT) {
            Ok(Some(_)) => {
                self.remove_control_socket();
                Ok(())
            }
            Ok(None) => Err(VmError::KillTimeout {
                pid,
                timeout: KILL_TIMEOUT,
            }),
            Err(source) => Err(VmError::Wait { pid, source }),
        }
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait(KILL_TIMEOUT);
        self.remove_control_socket();
    }
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.0.push(arg.as_ref().to_os_string());
        self
    }
}

/// `prefix` followed by `path` as a QEMU option value (commas doubled).
fn opts(prefix: &str, path: &Path) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(escape_commas(path.as_os_str()));
    s
}

/// QEMU's option syntax ends a value at a comma; a doubled comma is a literal one.
fn escape_commas(s: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(s.len());
    for &b in s.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// Whether a unix socket at `path` is listening, from `/proc/net/unix` (connecting to find
/// out would take QEMU's one client slot and show the guest a connection).
fn listening(path: &Path) -> bool {
    const ACCEPTCON: &str = "00010000";
    let Ok(table) = std::fs::read(Path::new("/proc/net/unix")) else {
        return false;
    };
    let want = path.as_os_str().as_bytes();
    table.split(|&b| b == b'\n').skip(1).any(|line| {
        // Num RefCount Protocol Flags Type St Inode Path
        let fields: Vec<&[u8]> = line
            .split(|&b| b == b' ')
            .filter(|f| !f.is_empty())
            .collect();
        fields.len() > 7
            && fields[3] == ACCEPTCON.as_bytes()
            && fields[7..].join(&b' ').as_slice() == want
    })
}

/// A memory file of [`STDERR_MAX`] bytes that can neither grow nor shrink.
fn stderr_buffer() -> nix::Result<OwnedFd> {
    let fd = memfd_create(
        "berth-vmm-stderr",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    nix::unistd::ftruncate(&fd, STDERR_MAX as i64)?;
    fcntl(
        &fd,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    Ok(fd)
}

/// The host's TSC frequency in kHz, measured against the monotonic clock; `None` where it
/// cannot be measured (not x86-64, or a clock that makes no sense).
/// Where the measured TSC frequency is kept, with the host's boot ID (a tmpfs: it goes with
/// the boot, and a new boot measures again).
pub const TSC_CACHE: &str = "/run/berth-vm/tsc-khz";

/// The TSC frequency from `cache` when it was measured in this host boot, else measured
/// now and written there (best effort: a cache that cannot be written is measured again
/// next time).
fn cached_tsc_khz(cache: &Path) -> Option<u64> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let boot_id = boot_id.trim();
    if let Ok(text) = std::fs::read_to_string(cache) {
        if let Some((id, khz)) = text.trim().split_once(' ') {
            if let Ok(khz) = khz.parse::<u64>() {
                if id == boot_id && (100_000..=10_000_000).contains(&khz) {
                    return Some(khz);
                }
            }
        }
    }
    let khz = host_tsc_khz()?;
    if let Some(dir) = cache.parent() {
        let _ = std::fs::create_dir_all(dir);
        let tmp = dir.join(format!(".tsc-khz.{}", std::process::id()));
        if std::fs::write(&tmp, format!("{boot_id} {khz}\n")).is_ok() {
            let _ = std::fs::rename(&tmp, cache);
        }
        let _ = std::fs::remove_file(&tmp);
    }
    Some(khz)
}

fn host_tsc_khz() -> Option<u64> {
    let mut samples = Vec::new();
    for _ in 0..5 {
        let (t0, c0) = clock_pair()?;
        std::thread::sleep(Duration::from_millis(10));
        let (t1, c1) = clock_pair()?;
        let ns = t1.duration_since(t0).as_nanos();
        let cycles = u128::from(c1.checked_sub(c0)?);
        if let Some(khz) = (cycles * 1_000_000).checked_div(ns) {
            samples.push(u64::try_from(khz).ok()?);
        }
    }
    samples.sort_unstable();
    let khz = *samples.get(samples.len() / 2)?;
    // 100 MHz to 10 GHz: anything else is a broken measurement.
    (100_000..=10_000_000).contains(&khz).then_some(khz)
}

/// A monotonic instant and a TSC reading taken together (within 20 µs), or `None`.
fn clock_pair() -> Option<(Instant, u64)> {
    for _ in 0..10 {
        let before = Instant::now();
        let tsc = rdtsc()?;
        let after = Instant::now();
        let gap = after.duration_since(before);
        if gap < Duration::from_micros(20) {
            return Some((before + gap / 2, tsc));
        }
    }
    None
}

#[cfg(target_arch = "x86_64")]
fn rdtsc() -> Option<u64> {
    // SAFETY: RDTSC reads the time-stamp counter; it has no operands and no memory effects,
    // and every x86-64 CPU has it (CR4.TSD, which would fault it in user mode, is not set
    // by Linux).
    Some(unsafe { core::arch::x86_64::_rdtsc() })
}

#[cfg(not(target_arch = "x86_64"))]
fn rdtsc() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BlockDevice, ControlChannel};

    fn tcg() -> Qemu {
        Qemu {
            binary: PathBuf::from(DEFAULT_BINARY),
            accel: AccelProbe {
                accel: Accel::Tcg,
                reason: "test".into(),
            },
            tsc_khz: Some(2_000_000),
        }
    }

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn value_of<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn a_tcg_microvm_without_defaults() {
        let mut c = VmConfig::new("/k/vmlinuz", "/run/vm/console.log");
        c.initramfs = Some("/k/initrd".into());
        c.cmdline = "quiet".into();
        c.memory_mib = 512;
        c.vcpus = 2;
        let args = strings(&tcg().args(&c).unwrap());
        assert_eq!(value_of(&args, "-M"), ["microvm,auto-kernel-cmdline=off"]);
        for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
            assert!(args.iter().any(|a| a == flag), "{flag} missing: {args:?}");
        }
        assert_eq!(value_of(&args, "-accel"), ["tcg"]);
        assert_eq!(value_of(&args, "-cpu"), ["max"]);
        assert_eq!(value_of(&args, "-m"), ["512M"]);
        assert_eq!(value_of(&args, "-smp"), ["2"]);
        assert_eq!(value_of(&args, "-initrd"), ["/k/initrd"]);
        assert_eq!(
            value_of(&args, "-append"),
            ["console=ttyS0 panic=-1 tsc_early_khz=2000000 quiet"]
        );
        assert_eq!(
            value_of(&args, "-chardev"),
            ["file,id=console,path=/dev/stdout"]
        );
    }

    #[test]
    fn kvm_uses_the_host_cpu_and_no_tsc_hint() {
        let q = Qemu {
            accel: AccelProbe {
                accel: Accel::Kvm,
                reason: "test".into(),
            },
            tsc_khz: None,
            ..tcg()
        };
        let args = strings(&q.args(&VmConfig::new("/k", "/c")).unwrap());
        assert_eq!(value_of(&args, "-accel"), ["kvm"]);
        assert_eq!(value_of(&args, "-cpu"), ["host"]);
        assert_eq!(value_of(&args, "-append"), ["console=ttyS0 panic=-1"]);
    }

    #[test]
    fn the_control_channel_is_a_named_virtio_serial_port() {
        let mut c = VmConfig::new("/k", "/c");
        c.control = Some(ControlChannel::new("/run/vm/ctl.sock"));
        let args = strings(&tcg().args(&c).unwrap());
        assert!(value_of(&args, "-chardev")
            .contains(&"socket,id=control,server=on,wait=off,path=/run/vm/ctl.sock"));
        assert_eq!(
            value_of(&args, "-device"),
            [
                "virtio-serial-device",
                "virtserialport,chardev=control,name=berth.ctl"
            ]
        );
    }

    #[test]
    fn a_shared_dir_is_a_vhost_user_fs_device_over_shared_memory() {
        let mut c = VmConfig::new("/k", "/c");
        c.memory_mib = 384;
        c.shared_dirs = vec![crate::SharedDir {
            socket: "/run/vm/fs,0.sock".into(),
            tag: "berth-v0".into(),
        }];
        let args = strings(&tcg().args(&c).unwrap());
        assert_eq!(
            value_of(&args, "-object"),
            ["memory-backend-memfd,id=mem,size=384M,share=on"]
        );
        assert_eq!(value_of(&args, "-machine"), ["memory-backend=mem"]);
        assert!(value_of(&args, "-chardev").contains(&"socket,id=fs0,path=/run/vm/fs,,0.sock"));
        assert!(
            value_of(&args, "-device").contains(&"vhost-user-fs-device,chardev=fs0,tag=berth-v0")
        );
        // Without shared directories guest memory stays anonymous.
        let plain = strings(&tcg().args(&VmConfig::new("/k", "/c")).unwrap());
        assert!(value_of(&plain, "-object").is_empty());
    }

    #[test]
    fn disks_are_blockdevs_and_commas_in_paths_are_escaped() {
        let mut c = VmConfig::new("/k", "/c,1");
        c.block_devices = vec![
            BlockDevice {
                path: "/img/a,b.erofs".into(),
                read_only: true,
                serial: Some("berth-l0".into()),
            },
            BlockDevice {
                path: "/img/rw.img".into(),
                read_only: false,
                serial: None,
            },
        ];
        let args = strings(&tcg().args(&c).unwrap());
        assert_eq!(
            value_of(&args, "-blockdev"),
            [
                "driver=file,node-name=disk0,read-only=on,filename=/img/a,,b.erofs",
                "driver=file,node-name=disk1,read-only=off,filename=/img/rw.img"
            ]
        );
        assert_eq!(
            value_of(&args, "-device"),
            [
                "virtio-blk-device,drive=disk0,serial=berth-l0",
                "virtio-blk-device,drive=disk1"
            ]
        );
        assert_eq!(
            value_of(&args, "-chardev"),
            ["file,id=console,path=/dev/stdout"]
        );
    }

    /// A config whose files exist, for backends that never read them.
    fn config_in(dir: &Path) -> VmConfig {
        let kernel = dir.join("vmlinuz");
        std::fs::write(&kernel, b"not a kernel").unwrap();
        let mut c = VmConfig::new(kernel, dir.join("console.log"));
        c.control = Some(ControlChannel::new(dir.join("ctl.sock")));
        c
    }

    #[test]
    fn a_missing_vmm_binary_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let q = Qemu {
            binary: dir.path().join("no-qemu"),
            ..tcg()
        };
        let e = q.boot(&config_in(dir.path())).err().unwrap();
        assert!(matches!(e, VmError::Spawn { .. }), "{e:?}");
        assert!(e.to_string().contains("no-qemu"), "{e}");
    }

    #[test]
    fn a_vmm_that_fails_to_start_reports_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-qemu");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'fake-qemu: -blockdev: Could not open x' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let q = Qemu {
            binary: fake,
            ..tcg()
        };
        // Another test thread's fork may hold the script open for writing for a moment.
        let mut e = q.boot(&config_in(dir.path())).err().unwrap();
        for _ in 0..100 {
            match &e {
                VmError::Spawn { source, .. }
                    if source.raw_os_error() == Some(nix::libc::ETXTBSY) =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                    e = q.boot(&config_in(dir.path())).err().unwrap();
                }
                _ => break,
            }
        }
        let VmError::StartFailed { exit, stderr, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(exit, "exit status 1");
        assert_eq!(stderr, "fake-qemu: -blockdev: Could not open x");
        assert!(!dir.path().join("ctl.sock").exists());
    }

    #[test]
    fn the_stderr_buffer_cannot_grow() {
        let fd = stderr_buffer().unwrap();
        let f = File::from(fd);
        f.write_at(b"qemu: error\n", 0).unwrap();
        let e = f.write_at(b"x", STDERR_MAX as u64).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::EPERM));
        assert_eq!(f.metadata().unwrap().len(), STDERR_MAX as u64);
    }

    #[test]
    fn a_listening_socket_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sock");
        assert!(!listening(&path));
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(listening(&path));
    }

    #[test]
    fn the_tsc_frequency_is_measured_once_per_boot() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("sub/tsc-khz");
        let khz = cached_tsc_khz(&cache).expect("a measurement");
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        assert_eq!(
            std::fs::read_to_string(&cache).unwrap(),
            format!("{} {khz}\n", boot_id.trim())
        );
        // A value of this boot is taken as it is; one of another boot, or nonsense, is not.
        std::fs::write(&cache, format!("{} 1234567\n", boot_id.trim())).unwrap();
        assert_eq!(cached_tsc_khz(&cache), Some(1_234_567));
        std::fs::write(&cache, "other-boot 1234567\n").unwrap();
        assert_ne!(cached_tsc_khz(&cache), Some(1_234_567));
        std::fs::write(&cache, format!("{} 5\n", boot_id.trim())).unwrap();
        assert_ne!(cached_tsc_khz(&cache), Some(5));
    }

    #[test]
    fn the_tsc_frequency_is_plausible() {
        if cfg!(target_arch = "x86_64") {
            let khz = host_tsc_khz().expect("no TSC measurement");
            assert!((100_000..=10_000_000).contains(&khz), "{khz}");
        }
    }
}
