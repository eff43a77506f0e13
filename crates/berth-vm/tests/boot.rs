//! Real boots: Debian's cloud kernel under QEMU (TCG on the CI machine, whose /dev/kvm is
//! PVM) with a busybox initramfs built by `berth_vm::initramfs`. The guest kernel cache comes
//! from `scripts/vm-kernel.sh` (CI runs it); without the cache the tests skip, and say so.
//! Nothing here needs more than file access, but the suite runs as root with the other
//! integration tests.
//!
//! Boot-to-init is printed (never asserted): expect about 4 s under TCG.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth_vm::initramfs::Initramfs;
use berth_vm::kernel::{self, GuestKernel};
use berth_vm::qemu::Qemu;
use berth_vm::{BlockDevice, ControlChannel, Hypervisor, Vm, VmConfig, VmError, VmExit};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// One VM at a time: the suite shares two cores, and a boot timed beside another says little.
static ONE_VM: Mutex<()> = Mutex::new(());

/// Generous: TCG on a loaded CI machine. A hung guest fails here, not at CI's deadline.
const TIMEOUT: Duration = Duration::from_secs(180);

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "mount", "insmod", "uname", "cat", "sleep", "poweroff", "seq",
];

/// What every test's /init does first; the marker line is when init started.
const PRELUDE: &str = r#"#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "berth-test: init started"
"#;
const INIT_STARTED: &str = "berth-test: init started";

struct Guest {
    kernel: GuestKernel,
    qemu: Qemu,
    dir: tempfile::TempDir,
    _one: MutexGuard<'static, ()>,
}

impl Guest {
    /// The guest kernel, a QEMU backend and a fresh directory; `None` (a reported skip) if
    /// there is no kernel cache. A cache that exists but cannot be read fails the test.
    fn new(test: &str) -> Option<Guest> {
        let cache = kernel::dir_from_env();
        if !cache.exists() {
            berth_testkit::skip(
                test,
                &format!(
                    "no guest kernel cache at {} (scripts/vm-kernel.sh makes it)",
                    cache.display()
                ),
            );
            return None;
        }
        let kernel = GuestKernel::open(&cache).expect("the guest kernel cache");
        let one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
        let qemu = Qemu::probe();
        // Short: the control socket's path must fit in a sockaddr_un.
        let dir = tempfile::Builder::new()
            .prefix("berth-vm.")
            .tempdir_in("/tmp")
            .unwrap();
        Some(Guest {
            kernel,
            qemu,
            dir,
            _one: one,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An initramfs with busybox, the cached modules, a module list in load order at
    /// /etc/modules and `init` as /init.
    fn initramfs(&self, init: &str) -> PathBuf {
        let mut i = Initramfs::new();
        i.console_and_null().unwrap();
        i.dir("proc", 0o555).unwrap().dir("sys", 0o555).unwrap();
        i.file("bin/busybox", 0o755, BUSYBOX).unwrap();
        for applet in APPLETS {
            i.symlink(&format!("bin/{applet}"), "busybox").unwrap();
        }
        let order = self.kernel.module_load_order().unwrap();
        let mods = format!("lib/modules/{}", self.kernel.version());
        for rel in &order {
            let host = self.kernel.modules_dir().join(rel);
            i.file(&format!("{mods}/{}", rel.display()), 0o644, host)
                .unwrap();
        }
        let list: Vec<String> = order.iter().map(|p| p.display().to_string()).collect();
        i.bytes("etc/modules", 0o644, list.join("\n")).unwrap();
        i.bytes("init", 0o755, init).unwrap();
        let path = self.path("initramfs.gz");
        i.write_file(&path).unwrap();
        path
    }

    fn config(&self, init: &str) -> VmConfig {
        let mut c = VmConfig::new(self.kernel.vmlinuz(), self.path("console.log"));
        c.initramfs = Some(self.initramfs(init));
        c.control = Some(ControlChannel::new(self.path("ctl.sock")));
        c
    }

    fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.path("console.log")).unwrap_or_default())
            .into_owned()
    }

    /// Waits until the console shows `marker`; fails if the VM ends first.
    fn wait_for_console(&self, vm: &mut Box<dyn Vm>, marker: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.console().contains(marker) {
            match vm.wait(Duration::from_millis(10)) {
                Err(VmError::WaitTimeout { .. }) => {}
                other => panic!(
                    "the vm ended before {marker:?}: {other:?}\n{}",
                    self.console()
                ),
            }
            assert!(
                Instant::now() < deadline,
                "no {marker:?} within {TIMEOUT:?}:\n{}",
                self.console()
            );
        }
    }

    /// Nothing of this VM is left: no process runs with this test's directory in its
    /// command line, and no control socket exists.
    fn assert_nothing_left(&self) {
        let dir = self.dir.path().to_string_lossy().into_owned();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            assert!(
                !cmdline.contains(&dir),
                "process {:?} left behind: {cmdline}",
                entry.file_name()
            );
        }
        assert!(
            !self.path("ctl.sock").exists(),
            "the control socket was left behind"
        );
    }
}

/// The kernel's own timestamp of "Run /init", if it printed one.
fn kernel_run_init(console: &str) -> Option<&str> {
    let line = console
        .lines()
        .find(|l| l.contains("Run /init as init process"))?;
    let stamp = line.strip_prefix('[')?.split(']').next()?;
    Some(stamp.trim())
}

/// One line from the control channel: at most 4 KiB, up to its newline.
fn read_line(stream: &mut UnixStream) -> String {
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 4096 {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => panic!("reading the control channel: {e}"),
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

const CLEAN_INIT: &str = r#"
for m in $(cat /etc/modules); do
  insmod "/lib/modules/$(uname -r)/$m" || echo "berth-test: insmod $m failed"
done
echo "berth-test: uname $(uname -r)"
port=""
for i in $(seq 1 200); do
  for p in /sys/class/virtio-ports/*; do
    if [ -f "$p/name" ] && [ "$(cat "$p/name")" = berth.ctl ]; then port="/dev/${p##*/}"; fi
  done
  if [ -n "$port" ] && [ -c "$port" ] && [ -f /sys/block/vda/ro ]; then break; fi
  sleep 0.05
done
echo "berth-test: control port $port"
echo "hello from $(uname -r) vda-ro=$(cat /sys/block/vda/ro) serial=$(cat /sys/block/vda/serial)" > "$port"
echo "berth-test: done"
poweroff -f
"#;

#[test]
fn a_guest_boots_talks_over_the_control_channel_and_powers_off() {
    let Some(g) = Guest::new("a_guest_boots_talks_over_the_control_channel_and_powers_off") else {
        return;
    };
    let disk = g.path("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let mut config = g.config(&format!("{PRELUDE}{CLEAN_INIT}"));
    config.block_devices.push(BlockDevice {
        path: disk,
        read_only: true,
        serial: Some("berth-test".into()),
    });

    let started = Instant::now();
    let mut vm = g.qemu.boot(&config).expect("boot");
    let mut control =
        UnixStream::connect(g.path("ctl.sock")).expect("connect to the control socket");
    g.wait_for_console(&mut vm, INIT_STARTED);
    let boot_to_init = started.elapsed();
    let line = read_line(&mut control);
    let exit = vm.wait(TIMEOUT).expect("wait");
    let total = started.elapsed();

    let console = g.console();
    assert_eq!(exit, VmExit::Poweroff, "console:\n{console}");
    let version = g.kernel.version();
    assert!(
        console.contains(&format!("berth-test: uname {version}")),
        "the guest's uname -r is not {version}:\n{console}"
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(host.trim(), version, "the guest ran the host's kernel");
    assert_eq!(
        line,
        format!("hello from {version} vda-ro=1 serial=berth-test"),
        "console:\n{console}"
    );
    drop(vm);
    g.assert_nothing_left();

    eprintln!(
        "boot-to-init: {:.2} s (kernel's own 'Run /init' stamp: {} s), to power-off: {:.2} s; \
         accel {} ({}); kernel {version}",
        boot_to_init.as_secs_f64(),
        kernel_run_init(&console).unwrap_or("none"),
        total.as_secs_f64(),
        g.qemu.accel().accel,
        g.qemu.accel().reason,
    );
}

#[test]
fn a_guest_panic_is_reported_with_its_line() {
    let Some(g) = Guest::new("a_guest_panic_is_reported_with_its_line") else {
        return;
    };
    // PID 1 exiting panics the kernel; panic=-1 and -no-reboot end QEMU.
    let config = g.config(&format!("{PRELUDE}echo 'berth-test: init exits'\nexit 3\n"));
    let mut vm = g.qemu.boot(&config).expect("boot");
    let exit = vm.wait(TIMEOUT).expect("wait");
    let VmExit::Panic { line } = &exit else {
        panic!("not a panic: {exit:?}\n{}", g.console());
    };
    assert!(line.starts_with("Kernel panic - not syncing"), "{line}");
    assert!(line.contains("Attempted to kill init"), "{line}");
    assert!(line.contains("exitcode=0x00000300"), "{line}");
    assert!(
        exit.to_string().contains("Attempted to kill init"),
        "{exit}"
    );
    assert!(!exit.is_clean());
    drop(vm);
    g.assert_nothing_left();
}

#[test]
fn a_guest_that_floods_its_console_cannot_grow_the_log_past_its_cap() {
    let Some(g) = Guest::new("a_guest_that_floods_its_console_cannot_grow_the_log_past_its_cap")
    else {
        return;
    };
    // About 1.9 MB of lines, then init exits (a panic): the panic is still reported from
    // the console's end, which the capped file no longer holds.
    let config = g.config(&format!(
        "{PRELUDE}seq 1000000 1270000\necho 'berth-test: init exits'\nexit 3\n"
    ));
    let mut vm = g.qemu.boot(&config).expect("boot");
    let exit = vm.wait(TIMEOUT).expect("wait");
    let VmExit::Panic { line } = &exit else {
        panic!("not a panic: {exit:?}");
    };
    assert!(line.contains("Attempted to kill init"), "{line}");
    let size = std::fs::metadata(g.path("console.log")).unwrap().len();
    assert!(
        (berth_vm::CONSOLE_LOG_MAX..berth_vm::CONSOLE_LOG_MAX + 200).contains(&size),
        "console log of {size} bytes"
    );
    assert!(g.console().contains("the console log is cut at 1 MiB"));
    drop(vm);
    g.assert_nothing_left();
}

const IDLE_INIT: &str = "while :; do sleep 1; done\n";

#[test]
fn a_vmm_killed_from_outside_is_reported_as_killed() {
    let Some(g) = Guest::new("a_vmm_killed_from_outside_is_reported_as_killed") else {
        return;
    };
    let config = g.config(&format!("{PRELUDE}{IDLE_INIT}"));
    let mut vm = g.qemu.boot(&config).expect("boot");
    g.wait_for_console(&mut vm, INIT_STARTED);
    kill(Pid::from_raw(vm.pid() as i32), Signal::SIGKILL).unwrap();
    let exit = vm.wait(TIMEOUT).expect("wait");
    assert_eq!(
        exit,
        VmExit::Killed {
            signal: Signal::SIGKILL as i32,
            by_caller: false
        }
    );
    assert!(exit.to_string().contains("SIGKILL"), "{exit}");
    // QEMU could not remove its socket; the handle did, once QEMU was reaped.
    g.assert_nothing_left();
    drop(vm);
}

#[test]
fn a_vm_killed_through_its_handle_is_reported_as_asked() {
    let Some(g) = Guest::new("a_vm_killed_through_its_handle_is_reported_as_asked") else {
        return;
    };
    let config = g.config(&format!("{PRELUDE}{IDLE_INIT}"));
    let mut vm = g.qemu.boot(&config).expect("boot");
    vm.kill().expect("kill");
    let exit = vm.wait(Duration::ZERO).expect("wait after kill");
    assert_eq!(
        exit,
        VmExit::Killed {
            signal: Signal::SIGKILL as i32,
            by_caller: true
        }
    );
    g.assert_nothing_left();
}

#[test]
fn dropping_a_running_vm_leaves_nothing_behind() {
    let Some(g) = Guest::new("dropping_a_running_vm_leaves_nothing_behind") else {
        return;
    };
    let config = g.config(&format!("{PRELUDE}{IDLE_INIT}"));
    let vm = g.qemu.boot(&config).expect("boot");
    let pid = vm.pid();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(vm);
    g.assert_nothing_left();
}

#[test]
fn a_kernel_qemu_cannot_load_is_a_vmm_failure_with_its_stderr() {
    let Some(g) = Guest::new("a_kernel_qemu_cannot_load_is_a_vmm_failure_with_its_stderr") else {
        return;
    };
    let bogus = g.path("bogus-vmlinuz");
    std::fs::write(&bogus, vec![0x90u8; 4096]).unwrap();
    let mut config = g.config(IDLE_INIT);
    config.kernel = bogus;
    // QEMU listens on the control socket before it loads the kernel: boot usually returns
    // and wait reports the failure; if QEMU is faster than the poll, boot reports it.
    let (code, stderr) = match g.qemu.boot(&config) {
        Ok(mut vm) => match vm.wait(TIMEOUT).expect("wait") {
            VmExit::VmmFailed { code, stderr } => (code.to_string(), stderr),
            other => panic!("not a vmm failure: {other:?}"),
        },
        Err(VmError::StartFailed { exit, stderr, .. }) => (exit, stderr),
        Err(e) => panic!("not a start failure: {e:?}"),
    };
    assert!(code == "1" || code == "exit status 1", "{code}");
    assert!(
        stderr.contains("kernel"),
        "QEMU's complaint is not in {stderr:?}"
    );
    g.assert_nothing_left();
}
