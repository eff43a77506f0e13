//! berth-agent as a real guest's init: Debian's cloud kernel under QEMU (TCG here) boots an
//! initramfs whose /init is the agent, built static; the host speaks berth-agent-proto over
//! the VM's control socket. Skips (and says so) without the guest kernel cache that
//! scripts/vm-kernel.sh makes.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_agent_proto::{Conn, Request, Response};
use berth_vm::initramfs::Initramfs;
use berth_vm::kernel::{self, GuestKernel};
use berth_vm::qemu::Qemu;
use berth_vm::{ControlChannel, Hypervisor, VmConfig, VmExit};

/// TCG on a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(180);

/// The agent linked statically (an initramfs has no libc), built on demand into a target
/// directory of its own: the flags differ from the workspace's build.
fn static_agent() -> PathBuf {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("agent-static");
    let triple = "x86_64-unknown-linux-gnu";
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args([
            "build",
            "-p",
            "berth-agent",
            "--bin",
            "berth-agent",
            "--target",
            triple,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        // With --target, RUSTFLAGS reach the target's crates only, not build scripts.
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo to build the static agent");
    assert!(st.success(), "building the static berth-agent failed");
    let bin = target_dir.join(triple).join("debug/berth-agent");
    let ldd = Command::new("ldd").arg(&bin).output().unwrap();
    let said =
        String::from_utf8_lossy(&ldd.stdout).to_string() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(
        said.contains("not a dynamic executable") || said.contains("statically linked"),
        "{said}"
    );
    bin
}

#[test]
fn the_agent_boots_as_init_shakes_hands_refuses_what_it_cannot_do_and_powers_off() {
    const TEST: &str =
        "the_agent_boots_as_init_shakes_hands_refuses_what_it_cannot_do_and_powers_off";
    let cache = kernel::dir_from_env();
    if !cache.exists() {
        berth_testkit::skip(
            TEST,
            &format!(
                "no guest kernel cache at {} (scripts/vm-kernel.sh makes it)",
                cache.display()
            ),
        );
        return;
    }
    let kernel = GuestKernel::open(&cache).expect("the guest kernel cache");
    let agent = static_agent();
    let dir = tempfile::Builder::new()
        .prefix("berth-agent.")
        .tempdir_in("/tmp")
        .unwrap();
    let mut i = Initramfs::new();
    i.console_and_null().unwrap();
    i.file("init", 0o755, &agent).unwrap();
    let order = kernel.module_load_order().unwrap();
    let mods = format!("lib/modules/{}", kernel.version());
    for rel in &order {
        i.file(
            &format!("{mods}/{}", rel.display()),
            0o644,
            kernel.modules_dir().join(rel),
        )
        .unwrap();
    }
    let list: Vec<String> = order.iter().map(|p| p.display().to_string()).collect();
    i.bytes("etc/modules", 0o644, list.join("\n")).unwrap();
    let initramfs = dir.path().join("initramfs.gz");
    i.write_file(&initramfs).unwrap();

    let console = dir.path().join("console.log");
    let socket = dir.path().join("ctl.sock");
    let mut config = VmConfig::new(kernel.vmlinuz(), &console);
    config.initramfs = Some(initramfs);
    config.control = Some(ControlChannel::new(&socket));
    let started = Instant::now();
    let mut vm = Qemu::probe().boot(&config).expect("boot");
    let stream = UnixStream::connect(&socket).expect("the control socket");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut host = Conn::host(stream);
    let console_text =
        || String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()).into_owned();
    let hello = host
        .handshake("berth test host")
        .unwrap_or_else(|e| panic!("no Hello from the agent: {e}\n{}", console_text()));
    println!(
        "agent {} answered {:?} after boot()",
        hello.peer,
        started.elapsed()
    );
    assert!(hello.peer.starts_with("berth-agent "), "{hello:?}");
    match host.call(Request::Start { id: "c1".into() }).unwrap() {
        Response::Error { message } => assert!(message.starts_with("start: "), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(host.call(Request::Shutdown {}).unwrap(), Response::Done {});
    let exit = vm.wait(TIMEOUT).expect("the guest ends");
    assert_eq!(exit, VmExit::Poweroff, "{}", console_text());
    assert!(
        console_text().contains("berth-agent: serving on /dev/vport"),
        "{}",
        console_text()
    );
    drop(vm);
    assert!(!socket.exists(), "the control socket was left behind");
}
