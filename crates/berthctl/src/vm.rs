//! `berthctl run --isolation vm`: the container in a microVM of its own (docs/vm.md). The
//! bundle is made as for a process container; then the image's layers become read-only
//! erofs disks, the guest boots with berth-agent as its init, and the agent makes the
//! container in the guest with libberth. berthctl stays in the foreground as the VM's
//! monitor: it carries stdio, forwards signals and the terminal size, and reports the
//! container's exit status as its own.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_agent_proto::{Event, Request, Rootfs, Stdio};
use berth_engine::{Record, Store};
use berth_microvm::shares::{self, Volume};
use berth_microvm::{assets, layers::LayerImages, sandbox, sizing, Incoming, Sandbox};
use berth_vm::kernel::{self, GuestKernel};
use berth_vm::qemu::Qemu;

use crate::cli;
use crate::vmexec::{self, Execs};

const STDIN: u32 = 1;
const STDOUT: u32 = 2;
const STDERR: u32 = 3;

/// Boot to the agent's Hello under TCG on a loaded machine takes seconds; this is the
/// bound past which the VM is declared failed.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// For one request of the agent (create mounts and starts processes).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a VM container's run needs of the command line: kept in the container's directory
/// (`vm.json`) for the monitor of a detached one.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct VmOptions {
    /// `-v` as given.
    pub volumes: Vec<String>,
    pub cpus: Option<f64>,
    pub interactive: bool,
    pub tty: bool,
}

impl VmOptions {
    pub fn from_cli(a: &cli::Run) -> VmOptions {
        VmOptions {
            volumes: a.volume.clone(),
            cpus: a.cpus,
            interactive: a.interactive,
            tty: a.tty,
        }
    }

    /// Keeps them for the monitor of a detached container.
    pub fn save(&self, s: &Store, r: &Record) -> Result<()> {
        let p = s.records.dir(&r.id).join("vm.json");
        fs::write(&p, serde_json::to_vec(self)?).with_context(|| format!("write {}", p.display()))
    }

    pub fn load(s: &Store, r: &Record) -> Result<VmOptions> {
        let p = s.records.dir(&r.id).join("vm.json");
        let data = fs::read(&p).with_context(|| format!("read {}", p.display()))?;
        serde_json::from_slice(&data).with_context(|| format!("parse {}", p.display()))
    }
}

/// `berthctl info`: the store, and whether and how VM isolation can run here (each part
/// with what is missing and how to set it up).
pub fn info(s: &Store, format: &str) -> Result<std::process::ExitCode> {
    let accel = berth_vm::accel::probe();
    let kernel_dir = kernel::dir_from_env();
    let kernel = match GuestKernel::open(&kernel_dir) {
        Ok(k) => {
            serde_json::json!({"version": k.version(), "dir": kernel_dir, "modules": k.modules()})
        }
        Err(e) => serde_json::json!({
            "error": format!("{}: {e} (scripts/vm-kernel.sh sets it up)", kernel_dir.display())
        }),
    };
    let agent = match assets::agent_binary() {
        Ok(p) => serde_json::json!({"path": p}),
        Err(e) => serde_json::json!({"error": e.to_string()}),
    };
    let virtiofsd = shares::VIRTIOFSD_PATHS
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| serde_json::json!({"path": p}))
        .unwrap_or_else(|| serde_json::json!({"error": "not found: volumes in VMs need it"}));
    let v = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "root": s.root,
        "runroot": s.runtime.root,
        "storage_driver": s.snapshots.driver().name(),
        "vm": {
            "hypervisor": "qemu",
            "qemu": berth_vm::qemu::DEFAULT_BINARY,
            "accel": accel.accel.as_str(),
            "accel_reason": accel.reason,
            "kernel": kernel,
            "agent": agent,
            "virtiofsd": virtiofsd,
        }
    });
    match format {
        "json" => println!("{}", serde_json::to_string_pretty(&v)?),
        "table" => {
            let text = |x: &serde_json::Value| match x.get("error") {
                Some(e) => format!("unavailable: {}", e.as_str().unwrap_or_default()),
                None => x
                    .get("version")
                    .or_else(|| x.get("path"))
                    .and_then(|y| y.as_str())
                    .unwrap_or_default()
                    .to_string(),
            };
            println!(
                "version:        {}",
                v["version"].as_str().unwrap_or_default()
            );
            println!("root:           {}", s.root.display());
            println!("runroot:        {}", s.runtime.root.display());
            println!("storage driver: {}", s.snapshots.driver().name());
            println!(
                "vm accel:       {} ({})",
                accel.accel.as_str(),
                accel.reason
            );
            println!("vm kernel:      {}", text(&v["vm"]["kernel"]));
            println!("vm agent:       {}", text(&v["vm"]["agent"]));
            println!("vm virtiofsd:   {}", text(&v["vm"]["virtiofsd"]));
        }
        f => bail!("--format {f:?}: use table or json"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Refuses what VM mode does not do (yet), before anything is made.
pub fn check_flags(a: &cli::Run) -> Result<()> {
    if a.detach && (a.tty || a.interactive) {
        bail!("--isolation vm -d: a detached VM container has no terminal or input (yet): drop -t and -i");
    }
    for v in &a.volume {
        let b = crate::run::parse_volume(v)?;
        if !b.source.is_dir() {
            bail!("--isolation vm -v {v:?}: only directories can be shared with a VM");
        }
    }
    if a.network != "none" {
        bail!(
            "--isolation vm --network {}: a VM has its own kernel and network stack; use \
             --network none",
            a.network
        );
    }
    Ok(())
}

/// Whether `r` runs (or ran) in a VM.
pub fn is_vm(r: &Record) -> bool {
    r.isolation.as_deref() == Some("vm")
}

/// The VM's run directory on the host: the control socket, the monitor file, the kill mark.
fn run_dir(s: &Store, r: &Record) -> std::path::PathBuf {
    s.runtime.root.join("vm").join(&r.id[..12])
}

/// The running VM container's monitor (the foreground berthctl) and its VMM, from the
/// monitor file, if that process still runs (checked by its start time against pid reuse).
pub fn monitor(s: &Store, r: &Record) -> Option<(i32, Option<i32>)> {
    let text = fs::read_to_string(run_dir(s, r).join("monitor")).ok()?;
    let mut w = text.split_whitespace();
    let pid: i32 = w.next()?.parse().ok()?;
    let start: u64 = w.next()?.parse().ok()?;
    let vmm: Option<i32> = w.next().and_then(|v| v.parse().ok());
    (start_time(pid) == Some(start)).then_some((pid, vmm))
}

/// Field 22 of /proc/PID/stat: when the process started.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn write_monitor(dir: &Path, vmm: Option<u32>) -> Result<()> {
    let me = std::process::id() as i32;
    let start = start_time(me).context("read this process's start time")?;
    let text = match vmm {
        Some(v) => format!("{me} {start} {v}\n"),
        None => format!("{me} {start}\n"),
    };
    let tmp = dir.join(".monitor");
    fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, dir.join("monitor"))
        .with_context(|| format!("write {}/monitor", dir.display()))
}

/// Sends `sig` to a running VM container's init: through its monitor, which forwards what
/// it receives; SIGKILL (which no process can forward) kills the VM, and the container
/// with it, recorded as killed (137).
pub fn signal(s: &Store, r: &Record, sig: i32) -> Result<()> {
    let Some((pid, vmm)) = monitor(s, r) else {
        bail!("container {} is not running", r.name);
    };
    if sig == libc::SIGSTOP {
        bail!(
            "container {}: SIGSTOP cannot be sent to a VM container",
            r.name
        );
    }
    if sig == libc::SIGKILL {
        let vmm = vmm.with_context(|| format!("container {}: its VM is still starting", r.name))?;
        let mark = run_dir(s, r).join("killed");
        fs::write(&mark, b"").with_context(|| format!("write {}", mark.display()))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(vmm),
            nix::sys::signal::Signal::SIGKILL,
        )
        .with_context(|| format!("container {}: kill its VMM {vmm}", r.name))?;
        return Ok(());
    }
    let signal = nix::sys::signal::Signal::try_from(sig)
        .with_context(|| format!("signal {sig}: not a signal"))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .with_context(|| format!("container {}: signal its monitor {pid}", r.name))
}

/// `berthctl exec` into a running VM container, through its monitor.
pub fn exec(s: &Store, r: &Record, a: &cli::Exec) -> Result<std::process::ExitCode> {
    if monitor(s, r).is_none() {
        bail!("container {} is not running", r.name);
    }
    // -u is resolved in the image's /etc/passwd and /etc/group, on the host (the guest's
    // writable layer is out of reach): the snapshot is mounted for the lookup only.
    let user = match &a.user {
        None => None,
        Some(u) => {
            let rootfs = s.snapshots.mount(&r.id)?;
            let ru = berth_image::passwd::resolve_user(&rootfs, u);
            let _ = s.snapshots.unmount(&r.id);
            let ru = ru.with_context(|| format!("container {}: exec -u {u}", r.name))?;
            Some((ru.uid, ru.gid, ru.additional_gids))
        }
    };
    let (rows, cols) = if a.tty {
        terminal_size().unwrap_or((0, 0))
    } else {
        (0, 0)
    };
    let req = vmexec::ExecRequest {
        args: a.command.clone(),
        env: a.env.iter().map(|e| crate::run::env_entry(e)).collect(),
        cwd: a.workdir.clone(),
        tty: a.tty,
        interactive: a.interactive,
        rows,
        cols,
        user,
    };
    let raw = if a.tty && is_terminal(0) {
        libberth::foreground::RawMode::enter()
    } else {
        None
    };
    let code = vmexec::exec(&vmexec::socket_in(&run_dir(s, r)), &req);
    drop(raw);
    let code = code.with_context(|| format!("container {}: exec", r.name))?;
    Ok(std::process::ExitCode::from(code.clamp(0, 255) as u8))
}

/// `stop`: `sig`, then SIGKILL after `timeout`; returns once the monitor has finished.
pub fn stop(s: &Store, r: &Record, sig: i32, timeout: Duration) -> Result<()> {
    if monitor(s, r).is_none() {
        return Ok(());
    }
    let gone = |limit: Duration| {
        let t = std::time::Instant::now();
        while monitor(s, r).is_some() {
            if t.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    };
    if sig != libc::SIGKILL {
        signal(s, r, sig)?;
        if gone(timeout) {
            return Ok(());
        }
    }
    signal(s, r, libc::SIGKILL)?;
    if !gone(Duration::from_secs(10)) {
        bail!(
            "container {}: still running 10 s after its VM was killed",
            r.name
        );
    }
    Ok(())
}

/// Where a detached container's monitor reports its start ("ok", or the error).
pub type Ready = std::sync::Mutex<Option<File>>;

fn report(ready: &Ready, msg: &str) {
    if let Some(mut f) = ready.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = f.write_all(msg.as_bytes());
    }
}

/// Runs the prepared container `r` in a VM, and cleans up as `run` does: in the
/// foreground, or as the monitor of a detached container (`ready` then hears of the start).
pub fn run(s: &Store, r: &Record, a: &VmOptions, ready: Option<File>) -> Result<u8> {
    let ready: Ready = std::sync::Mutex::new(ready);
    let result = run_in_vm(s, r, a, &ready);
    let code = match &result {
        Ok(c) => Some(*c),
        Err(e) => {
            report(&ready, &format!("{e:#}"));
            None
        }
    };
    crate::run::conclude(s, r, code);
    result.with_context(|| format!("container {}", r.name))
}

fn run_in_vm(s: &Store, r: &Record, a: &VmOptions, ready: &Ready) -> Result<u8> {
    let dir = s.records.dir(&r.id);
    let binds = a
        .volumes
        .iter()
        .map(|v| crate::run::parse_volume(v))
        .collect::<Result<Vec<_>>>()?;
    let (config, files) = guest_spec(&dir, &binds)?;
    // The guest mounts the layers itself: the host's mount of them is not needed.
    let _ = s.snapshots.unmount(&r.id);
    let kernel_dir = kernel::dir_from_env();
    let kernel = GuestKernel::open(&kernel_dir).map_err(|e| {
        anyhow::anyhow!(
            "the guest kernel at {}: {e} (scripts/vm-kernel.sh sets it up)",
            kernel_dir.display()
        )
    })?;
    let agent = assets::agent_binary()?;
    let vm_root = s.vm_dir();
    let initramfs = assets::initramfs(&vm_root, &kernel, &agent)?;
    let images = LayerImages::new(vm_root.join("layers"));
    let chains = s.snapshots.layers_of(&r.id)?;
    if chains.len() > sandbox::MAX_LAYERS {
        // Said before any disk is made for them.
        bail!(
            "the image has {} layers; a VM takes at most {} (one disk each)",
            chains.len(),
            sandbox::MAX_LAYERS
        );
    }
    let mut layers = Vec::new();
    for chain in chains {
        layers.push(images.image(&chain, &s.snapshots.layer_dir(&chain))?);
    }
    let memory_limit = config["linux"]["resources"]["memory"]["limit"].as_i64();
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let run_dir = run_dir(s, r);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&run_dir)
        .with_context(|| format!("create {}", run_dir.display()))?;
    write_monitor(&run_dir, None)?;
    let cfg = berth_microvm::SandboxConfig {
        name: format!("container {}", r.name),
        run_dir: run_dir.clone(),
        console_log: dir.join("console.log"),
        kernel,
        initramfs,
        memory_mib: sizing::memory_mib(memory_limit),
        vcpus: sizing::vcpus(a.cpus, host_cpus),
        layers,
        volumes: binds
            .iter()
            .map(|b| Volume {
                host: b.source.clone(),
                read_only: b.readonly,
            })
            .collect(),
        boot_timeout: BOOT_TIMEOUT,
    };
    let create = Request::Create {
        id: r.id.clone(),
        config,
        rootfs: Rootfs {
            layers: (0..cfg.layers.len()).map(sandbox::layer_serial).collect(),
            upper: None,
        },
        stdio: Stdio {
            stdin: a.interactive.then_some(STDIN),
            stdout: Some(STDOUT),
            stderr: (!a.tty).then_some(STDERR),
            terminal: a.tty,
        },
        files,
        volumes: (0..cfg.volumes.len()).map(shares::tag).collect(),
    };
    // Before any thread starts (the VMM's waiter, the agent's reader): they inherit the
    // mask, so that every signal for the container reaches the signalfd.
    let sfd = libberth::foreground::forward_signals().map_err(|e| anyhow::anyhow!("{e}"))?;
    let result = (|| {
        let sb = Arc::new(Sandbox::boot(&Qemu::probe(), &cfg).map_err(anyhow::Error::msg)?);
        write_monitor(&run_dir, sb.vmm_pid())?;
        let killed = run_dir.join("killed");
        let r = drive(s, &sb, r, a, create, sfd, ready).or_else(|e| {
            // `berthctl kill -s KILL` (or stop's last resort) killed the VM: the container
            // was killed, which is no failure of berthctl's.
            if killed.exists() {
                Ok(137)
            } else {
                Err(e)
            }
        });
        sb.close();
        r
    })();
    let _ = fs::remove_dir_all(&run_dir);
    result
}

/// The bundle's config made for the guest: the small /etc files berthctl writes are sent
/// along (`files/NAME`), the user's volumes are the guest's virtio-fs shares
/// (`volumes/TAG`), and the image's volumes (directories on the host) are left to the
/// image's own content in the guest's writable layer.
fn guest_spec(
    dir: &Path,
    binds: &[berth_image::runconfig::Bind],
) -> Result<(serde_json::Value, BTreeMap<String, String>)> {
    let path = dir.join("bundle/config.json");
    let data = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let mut config: serde_json::Value =
        serde_json::from_slice(&data).with_context(|| format!("parse {}", path.display()))?;
    let mut files = BTreeMap::new();
    if let Some(mounts) = config["mounts"].as_array_mut() {
        let mut kept = Vec::new();
        for mut m in std::mem::take(mounts) {
            let src = m["source"].as_str().map(Path::new);
            match src {
                Some(p) if p.starts_with(dir.join("etc")) => {
                    let name = p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .context("an /etc file without a name")?
                        .to_string();
                    let text =
                        fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
                    m["source"] = format!("files/{name}").into();
                    files.insert(name, text);
                    kept.push(m);
                }
                Some(p) if p.starts_with(dir) => {}
                Some(p) => {
                    let dest = m["destination"].as_str().unwrap_or_default();
                    if let Some(i) = binds
                        .iter()
                        .position(|b| b.source == p && b.destination == dest)
                    {
                        m["source"] = format!("volumes/{}", shares::tag(i)).into();
                    }
                    kept.push(m);
                }
                None => kept.push(m),
            }
        }
        *mounts = kept;
    }
    Ok((config, files))
}

/// Creates and starts the container in the guest, pumps its stdio and signals until it
/// exits, and powers the guest off.
fn drive(
    s: &Store,
    sb: &Arc<Sandbox>,
    r: &Record,
    a: &VmOptions,
    create: Request,
    sfd: nix::sys::signalfd::SignalFd,
    ready: &Ready,
) -> Result<u8> {
    let process = match &create {
        Request::Create { config, .. } => config["process"].clone(),
        _ => serde_json::Value::Null,
    };
    let execs = Arc::new(Execs::default());
    // A failed call, or a connection that broke: say how the VM ended too.
    let fail = |e: String| anyhow::anyhow!("{e} ({})", sb.ended(Duration::from_secs(3)));
    sb.call(create, CALL_TIMEOUT)
        .map_err(|e| fail(e.to_string()))?;
    let raw = if a.tty && is_terminal(0) {
        libberth::foreground::RawMode::enter()
    } else {
        None
    };
    let result = (|| -> Result<u8> {
        sb.call(Request::Start { id: r.id.clone() }, CALL_TIMEOUT)
            .map_err(|e| fail(e.to_string()))?;
        vmexec::serve(
            &vmexec::socket_in(&run_dir(s, r)),
            sb.clone(),
            execs.clone(),
            r.id.clone(),
            process,
        )?;
        report(ready, "ok");
        if a.tty {
            resize(sb, &r.id);
        }
        if a.interactive {
            let sb = sb.clone();
            std::thread::spawn(move || pump_stdin(&sb));
        }
        {
            let sb = sb.clone();
            let id = r.id.clone();
            std::thread::spawn(move || forward(&sb, &id, sfd));
        }
        let code = pump_output(sb, &r.id, &execs).map_err(fail)?;
        Ok(code)
    })();
    drop(raw);
    let code = result?;
    // The container has exited: its guest is no longer needed.
    if let Err(e) = sb.shutdown(Duration::from_secs(30)) {
        eprintln!("berthctl: {e}");
    }
    Ok(code)
}

/// Writes the container's output here until its init exits; its exit status.
fn pump_output(sb: &Sandbox, id: &str, execs: &Execs) -> std::result::Result<u8, String> {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    loop {
        match sb.recv(None) {
            Some(Incoming::Data { stream, bytes }) => {
                let _ = match stream {
                    STDOUT => stdout.write_all(&bytes).and_then(|_| stdout.flush()),
                    STDERR => stderr.write_all(&bytes).and_then(|_| stderr.flush()),
                    // An exec's output goes to its client; a stream nobody holds, nowhere.
                    _ => {
                        execs.output(stream, &bytes);
                        Ok(())
                    }
                };
            }
            Some(Incoming::Close { stream }) => execs.close(stream),
            Some(Incoming::Event(Event::Exited {
                ref exec_id, code, ..
            })) if exec_id.is_some() => {
                execs.exited(exec_id.as_deref().unwrap_or_default(), code);
            }
            Some(Incoming::Event(Event::Exited {
                id: ref got,
                exec_id: None,
                code,
                oom_killed,
            })) if got == id => {
                if oom_killed {
                    eprintln!(
                        "berthctl: the container was killed for lack of memory (OOM) in its VM"
                    );
                }
                return Ok(code.clamp(0, 255) as u8);
            }
            Some(Incoming::Event(_)) => {}
            Some(Incoming::Ended(why)) => {
                return Err(format!("the VM ended before the container did: {why}"))
            }
            None => {}
        }
    }
}

/// Standard input to the container, then its end.
fn pump_stdin(sb: &Sandbox) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if sb.data(STDIN, &buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = sb.close_stream(STDIN);
}

/// Signals sent to berthctl go to the container's init; a terminal's new size to its pty.
fn forward(sb: &Sandbox, id: &str, sfd: nix::sys::signalfd::SignalFd) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        while let Ok(Some(info)) = sfd.read_signal() {
            let signal = info.ssi_signo as i32;
            let r = match signal {
                libc::SIGCHLD => continue,
                libc::SIGWINCH => {
                    resize(sb, id);
                    continue;
                }
                _ => sb.call(
                    Request::Signal {
                        id: id.to_string(),
                        exec_id: None,
                        signal,
                        all: false,
                    },
                    CALL_TIMEOUT,
                ),
            };
            if r.is_err() {
                return;
            }
        }
    }
}

/// The terminal's size on fd 0, given to the container's pty.
fn resize(sb: &Sandbox, id: &str) {
    if let Some((rows, cols)) = terminal_size() {
        let _ = sb.call(
            Request::Resize {
                id: id.to_string(),
                exec_id: None,
                rows,
                cols,
            },
            CALL_TIMEOUT,
        );
    }
}

/// The size of the terminal on fd 0 (rows, columns), if it is one with a size.
fn terminal_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we own; fd 0 is ours.
    let ok = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

fn is_terminal(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}
