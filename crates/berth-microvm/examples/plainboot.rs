//! For bench/vm.sh: boots the guest kernel with the VM settings Berth uses (same backend,
//! accelerator, memory, vCPUs, command line) on a trivial initramfs whose /init (busybox)
//! prints a line and powers off, and prints, per run, the seconds from the start of the
//! Qemu backend's setup to that line on the console (plain QEMU's boot-to-init, the base
//! Berth's overhead is measured against), and to the VM's exit.
//!
//! usage: plainboot MEMORY_MIB RUNS

use std::time::{Duration, Instant};

use berth_vm::initramfs::Initramfs;
use berth_vm::kernel::{self, GuestKernel};
use berth_vm::qemu::Qemu;
use berth_vm::{Hypervisor, VmConfig, VmExit};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mem: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(512);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let kernel = GuestKernel::open(&kernel::dir_from_env()).expect("the guest kernel cache");
    let dir = tempfile::Builder::new()
        .prefix("plainboot.")
        .tempdir_in("/tmp")
        .unwrap();
    let mut i = Initramfs::new();
    i.console_and_null().unwrap();
    i.file("bin/busybox", 0o755, "/bin/busybox").unwrap();
    for a in ["sh", "echo", "poweroff"] {
        i.symlink(&format!("bin/{a}"), "busybox").unwrap();
    }
    i.bytes(
        "init",
        0o755,
        "#!/bin/sh\nexport PATH=/bin\necho plainboot: init ran\npoweroff -f\n",
    )
    .unwrap();
    let initramfs = dir.path().join("initramfs.gz");
    i.write_file(&initramfs).unwrap();
    for _ in 0..runs {
        let t = Instant::now();
        let qemu = Qemu::probe();
        let mut c = VmConfig::new(kernel.vmlinuz(), dir.path().join("console.log"));
        c.initramfs = Some(initramfs.clone());
        c.memory_mib = mem;
        c.cmdline = "quiet".into();
        let mut vm = qemu.boot(&c).expect("boot");
        let log = dir.path().join("console.log");
        let first = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("plainboot: init ran") {
                break t.elapsed().as_secs_f64();
            }
            if let Ok(exit) = vm.wait(Duration::from_millis(1)) {
                panic!("the VM ended ({exit}) before init's line: {text}");
            }
        };
        let exit = vm.wait(Duration::from_secs(300)).expect("the VM ends");
        let total = t.elapsed().as_secs_f64();
        assert_eq!(exit, VmExit::Poweroff);
        println!("{first:.3} {total:.3}");
    }
}
