//! For bench/vm.sh: boots the guest kernel with the VM settings Berth uses (same backend,
//! accelerator, memory, vCPUs, command line) on a trivial initramfs whose /init (busybox)
//! prints a line and powers off, and prints the seconds from boot() to the VM's exit.
//! That is plain QEMU's boot-to-init, the base Berth's own overhead is measured against.
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
    let qemu = Qemu::probe();
    for _ in 0..runs {
        let mut c = VmConfig::new(kernel.vmlinuz(), dir.path().join("console.log"));
        c.initramfs = Some(initramfs.clone());
        c.memory_mib = mem;
        c.cmdline = "quiet".into();
        let t = Instant::now();
        let mut vm = qemu.boot(&c).expect("boot");
        let exit = vm.wait(Duration::from_secs(300)).expect("the VM ends");
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(exit, VmExit::Poweroff);
        let console = std::fs::read_to_string(dir.path().join("console.log")).unwrap_or_default();
        assert!(console.contains("plainboot: init ran"), "{console}");
        println!("{secs:.3}");
    }
}
