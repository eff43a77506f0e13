//! A hostile or failing guest, seen from the host's `Sandbox`: real VMs under QEMU (TCG
//! here) whose /init is a busybox script playing a broken agent. It says a valid Hello,
//! then breaks the protocol, dies, or panics the kernel. Each must end the connection with
//! a message that names the fault, say how the VM ended, and leave nothing on the host.
//! Skips (and says so) without the guest kernel cache scripts/vm-kernel.sh makes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_agent_proto::Request;
use berth_microvm::{Incoming, Sandbox, SandboxConfig};
use berth_vm::initramfs::Initramfs;
use berth_vm::kernel::GuestKernel;
use berth_vm::qemu::Qemu;

const APPLETS: &[&str] = &[
    "sh", "mount", "insmod", "uname", "cat", "sleep", "seq", "printf",
];

/// Loads the modules, finds the control port and says a valid Hello on it
/// (`{"version":1,"peer":"fake"}`: 27 bytes of JSON, so the length word is 32).
const PRELUDE: &str = r#"#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/modules); do insmod "/lib/modules/$(uname -r)/$m"; done
port=""
for i in $(seq 1 400); do
  for p in /sys/class/virtio-ports/*; do
    if [ -f "$p/name" ] && [ "$(cat "$p/name")" = berth.ctl ]; then port="/dev/${p##*/}"; fi
  done
  if [ -n "$port" ] && [ -c "$port" ]; then break; fi
  sleep 0.05
done
exec 3<>"$port"
printf '\000\000\000\040\001\000\000\000\000{"version":1,"peer":"fake"}' >&3
sleep 1
"#;

fn initramfs(dir: &Path, kernel: &GuestKernel, fault: &str) -> PathBuf {
    let mut i = Initramfs::new();
    i.console_and_null().unwrap();
    i.dir("proc", 0o555).unwrap().dir("sys", 0o555).unwrap();
    i.file("bin/busybox", 0o755, "/bin/busybox").unwrap();
    for a in APPLETS {
        i.symlink(&format!("bin/{a}"), "busybox").unwrap();
    }
    let order = kernel.module_load_order().unwrap();
    for rel in &order {
        i.file(
            &format!("lib/modules/{}/{}", kernel.version(), rel.display()),
            0o644,
            kernel.modules_dir().join(rel),
        )
        .unwrap();
    }
    let list: Vec<String> = order.iter().map(|p| p.display().to_string()).collect();
    i.bytes("etc/modules", 0o644, list.join("\n")).unwrap();
    i.bytes("init", 0o755, format!("{PRELUDE}{fault}\n"))
        .unwrap();
    let p = dir.join("initramfs.gz");
    i.write_file(&p).unwrap();
    p
}

/// Boots a guest whose fake agent does `fault` after its Hello, asks it to start a
/// container, and returns the call's error, why the connection ended, and how the VM ended.
fn run_fault(test: &str, fault: &str) -> Option<(String, String, String)> {
    let kdir = berth_testkit::vm_kernel_or_skip(test)?;
    let kernel = GuestKernel::open(&kdir).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("bmv.")
        .tempdir_in("/tmp")
        .unwrap();
    let cfg = SandboxConfig {
        name: "container f1".into(),
        run_dir: dir.path().to_path_buf(),
        console_log: dir.path().join("console.log"),
        initramfs: initramfs(dir.path(), &kernel, fault),
        kernel,
        memory_mib: 256,
        vcpus: 1,
        layers: Vec::new(),
        volumes: Vec::new(),
        boot_timeout: Duration::from_secs(180),
    };
    let sb = Sandbox::boot(&Qemu::probe(), &cfg).expect("the fake agent's Hello");
    assert_eq!(sb.agent.peer, "fake");
    let socket = sb.socket().to_path_buf();
    let call = sb
        .call(Request::Start { id: "c1".into() }, Duration::from_secs(120))
        .expect_err("a broken agent cannot answer");
    let ended = loop {
        match sb.recv(Some(Duration::from_secs(120))) {
            Some(Incoming::Ended(why)) => break why,
            Some(_) => {}
            None => panic!("the connection did not end"),
        }
    };
    let vm = sb.ended(Duration::from_secs(60));
    let pid = sb.vmm_pid().unwrap();
    drop(sb);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the VMM {pid} is left"
    );
    assert!(!socket.exists(), "the control socket is left");
    eprintln!("{test}: call: {call}\nended: {ended}\nvm: {vm}");
    Some((call.to_string(), ended, vm))
}

#[test]
fn an_oversized_frame_from_the_guest_ends_the_connection() {
    let Some((call, ended, vm)) = run_fault(
        "an_oversized_frame_from_the_guest_ends_the_connection",
        r"printf '\377\377\377\377\003' >&3; sleep 600",
    ) else {
        return;
    };
    assert!(call.starts_with("container f1: "), "{call}");
    assert!(ended.contains("the agent broke the protocol"), "{ended}");
    assert!(ended.contains("longer than the 1048576 allowed"), "{ended}");
    // The guest that broke the protocol was killed, not waited for.
    assert!(vm.contains("vmm killed by SIGKILL (as asked)"), "{vm}");
}

#[test]
fn malformed_json_from_the_guest_ends_the_connection() {
    // A Response (kind 3) to request 1 whose payload is not JSON.
    let Some((_, ended, _)) = run_fault(
        "malformed_json_from_the_guest_ends_the_connection",
        r"printf '\000\000\000\010\003\000\000\000\001{{{' >&3; sleep 600",
    ) else {
        return;
    };
    assert!(ended.contains("the agent broke the protocol"), "{ended}");
    assert!(ended.contains("Response frame on channel 1"), "{ended}");
}

#[test]
fn a_request_from_the_guest_is_refused() {
    let Some((_, ended, _)) = run_fault(
        "a_request_from_the_guest_is_refused",
        r#"printf '\000\000\000\017\002\000\000\000\001{"op":"x"}' >&3; sleep 600"#,
    ) else {
        return;
    };
    assert!(ended.contains("may not come from the agent"), "{ended}");
}

#[test]
fn an_agent_that_dies_is_reported_with_the_guest_panic() {
    // init exiting panics the kernel ("Attempted to kill init").
    let Some((call, ended, vm)) = run_fault(
        "an_agent_that_dies_is_reported_with_the_guest_panic",
        "exit 0",
    ) else {
        return;
    };
    assert!(call.contains("ended before its answer"), "{call}");
    assert!(ended.contains("the agent closed the connection"), "{ended}");
    assert!(vm.contains("guest kernel panic"), "{vm}");
    assert!(vm.contains("Attempted to kill init"), "{vm}");
}

#[test]
fn a_guest_kernel_panic_is_reported() {
    let Some((_, _, vm)) = run_fault(
        "a_guest_kernel_panic_is_reported",
        "echo c > /proc/sysrq-trigger; sleep 600",
    ) else {
        return;
    };
    assert!(vm.contains("guest kernel panic"), "{vm}");
    assert!(vm.contains("sysrq"), "{vm}");
}
