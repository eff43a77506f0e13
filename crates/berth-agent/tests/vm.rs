//! berth-agent as a real guest's init: Debian's cloud kernel under QEMU (TCG here) boots an
//! initramfs whose /init is the agent, built static; the host speaks berth-agent-proto over
//! the VM's control socket. Skips (and says so) without the guest kernel cache that
//! scripts/vm-kernel.sh makes.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use berth_agent_proto::{Conn, Request, Response};
use berth_vm::kernel::GuestKernel;
use berth_vm::qemu::Qemu;
use berth_vm::{ControlChannel, Hypervisor, VmConfig, VmExit};

/// TCG on a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn the_agent_boots_as_init_shakes_hands_answers_and_powers_off() {
    const TEST: &str = "the_agent_boots_as_init_shakes_hands_answers_and_powers_off";
    let Some(cache) = berth_testkit::vm_kernel_or_skip(TEST) else {
        return;
    };
    let kernel = GuestKernel::open(&cache).expect("the guest kernel cache");
    let agent = berth_testkit::static_agent();
    let dir = tempfile::Builder::new()
        .prefix("berth-agent.")
        .tempdir_in("/tmp")
        .unwrap();
    let initramfs = berth_microvm::assets::initramfs(dir.path(), &kernel, &agent).unwrap();

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
        Response::Error { message } => assert_eq!(message, "start: no container c1"),
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
