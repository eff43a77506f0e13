//! One VM with berth-agent as its init, and the host's end of the agent protocol: requests
//! answered by id from any thread, and everything else the agent sends (stdio data, stream
//! ends, exits) delivered in order on a channel. A reader thread owns the socket's read
//! side; whatever it cannot decode ends the connection, and the caller then learns how the
//! VM ended.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use berth_agent_proto::{
    encode, Decoder, Event, Frame, Hello, ProtoError, Request, Response, VERSION,
};
use berth_vm::kernel::GuestKernel;
use berth_vm::{BlockDevice, ControlChannel, Hypervisor, Vm, VmConfig, VmExit};

use crate::Error;

/// What this side says it is in its Hello.
pub const PEER: &str = concat!("berth ", env!("CARGO_PKG_VERSION"));

/// The serial of layer disk `i` (bottom first), as the agent finds it.
pub fn layer_serial(i: usize) -> String {
    format!("berth-l{i}")
}

/// The most layers a VM takes: each is a virtio-mmio disk, and QEMU's microvm has 24
/// transports, one of which carries the control port.
pub const MAX_LAYERS: usize = 22;

/// A VM to boot for one container (berthctl) or pod.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The container or pod, for messages.
    pub name: String,
    /// Host directory for the control socket (its path must fit a unix socket address).
    pub run_dir: PathBuf,
    /// Where the guest console is written.
    pub console_log: PathBuf,
    pub kernel: GuestKernel,
    pub initramfs: PathBuf,
    pub memory_mib: u32,
    pub vcpus: u16,
    /// The layers' erofs images, bottom first.
    pub layers: Vec<PathBuf>,
    /// Host directories for the guest, mounted by the agent by tag (`shares::tag(i)`).
    pub volumes: Vec<crate::shares::Volume>,
    /// From boot to the agent's Hello.
    pub boot_timeout: Duration,
}

/// What the agent sends besides responses, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Data {
        stream: u32,
        bytes: Vec<u8>,
    },
    Close {
        stream: u32,
    },
    Event(Event),
    /// The connection ended (why); nothing follows.
    Ended(String),
}

type Pending = Arc<Mutex<Option<HashMap<u32, Sender<Response>>>>>;
type SharedVm = Arc<Mutex<Option<Box<dyn Vm>>>>;

/// A booted VM whose agent has said Hello. Every method takes `&self`, so that threads
/// pumping stdio and signals can share it; [`Sandbox::close`] (or drop) kills the VM and
/// removes what it left on the host.
pub struct Sandbox {
    name: String,
    vm: Arc<Mutex<Option<Box<dyn Vm>>>>,
    writer: Mutex<UnixStream>,
    pending: Pending,
    next_id: AtomicU32,
    incoming: Mutex<Receiver<Incoming>>,
    reader: Option<JoinHandle<()>>,
    console_log: PathBuf,
    socket: PathBuf,
    /// The virtiofsd of each volume: ended after the VM.
    shares: Mutex<Vec<crate::shares::Share>>,
    /// The agent's Hello.
    pub agent: Hello,
    /// From boot() to the agent's Hello.
    pub boot_time: Duration,
}

impl Sandbox {
    /// Boots the VM and waits for the agent's Hello. On any failure the VM is killed and
    /// its socket removed; the error says how far it got and how the VM ended.
    pub fn boot(hv: &dyn Hypervisor, c: &SandboxConfig) -> Result<Sandbox, Error> {
        if c.layers.len() > MAX_LAYERS {
            return Err(Error::new(format!(
                "{}: the image has {} layers; a VM takes at most {MAX_LAYERS} (one disk each)",
                c.name,
                c.layers.len()
            )));
        }
        let socket = c.run_dir.join("ctl.sock");
        let mut config = VmConfig::new(c.kernel.vmlinuz(), &c.console_log);
        config.initramfs = Some(c.initramfs.clone());
        config.memory_mib = c.memory_mib;
        config.vcpus = c.vcpus;
        // The console at 115200 baud costs time under TCG; the kernel's own messages are
        // quieted, the agent's lines still reach it.
        config.cmdline = "quiet".into();
        config.control = Some(ControlChannel::new(&socket));
        config.block_devices = c
            .layers
            .iter()
            .enumerate()
            .map(|(i, p)| BlockDevice {
                path: p.clone(),
                read_only: true,
                serial: Some(layer_serial(i)),
            })
            .collect();
        let mut shares = Vec::new();
        for (i, v) in c.volumes.iter().enumerate() {
            let share = crate::shares::Share::start(&c.run_dir, i, v)
                .map_err(|e| Error::new(format!("{}: {e}", c.name)))?;
            config.shared_dirs.push(berth_vm::SharedDir {
                socket: share.socket.clone(),
                tag: share.tag.clone(),
            });
            shares.push(share);
        }
        let started = Instant::now();
        let mut vm = hv
            .boot(&config)
            .map_err(|e| Error::new(format!("{}: boot the VM: {}", c.name, chain(&e))))?;
        let connected = (|| -> Result<(UnixStream, Hello, Decoder), String> {
            let stream = UnixStream::connect(&socket)
                .map_err(|e| format!("connect to {}: {e}", socket.display()))?;
            stream
                .set_read_timeout(Some(c.boot_timeout))
                .map_err(|e| e.to_string())?;
            let mut decoder = Decoder::from_agent();
            let mut out = Vec::new();
            encode(
                &Frame::Hello(Hello {
                    version: VERSION,
                    peer: PEER.into(),
                }),
                &mut out,
            )
            .map_err(|e| e.to_string())?;
            (&stream)
                .write_all(&out)
                .map_err(|e| format!("send Hello: {e}"))?;
            let mut buf = [0u8; 4096];
            let hello = loop {
                if let Some(f) = decoder.next_frame().map_err(|e| e.to_string())? {
                    match f {
                        Frame::Hello(h) => break h,
                        other => return Err(ProtoError::NoHello(other.kind()).to_string()),
                    }
                }
                if started.elapsed() > c.boot_timeout {
                    return Err(format!(
                        "no Hello from the agent within {:?}",
                        c.boot_timeout
                    ));
                }
                match (&stream).read(&mut buf) {
                    Ok(0) => return Err("the agent closed the connection before its Hello".into()),
                    Ok(n) => decoder.push(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        return Err(format!(
                            "no Hello from the agent within {:?}",
                            c.boot_timeout
                        ))
                    }
                    Err(e) => return Err(format!("read the control socket: {e}")),
                }
            };
            stream.set_read_timeout(None).map_err(|e| e.to_string())?;
            Ok((stream, hello, decoder))
        })();
        let (stream, hello, decoder) = match connected {
            Ok(x) => x,
            Err(why) => {
                let ended = ended(&mut *vm, Duration::from_secs(2), &c.console_log);
                return Err(Error::new(format!(
                    "{}: the VM's agent: {why} ({ended})",
                    c.name
                )));
            }
        };
        let boot_time = started.elapsed();
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let (tx, incoming) = mpsc::channel();
        let read_half = stream
            .try_clone()
            .map_err(|e| Error::new(format!("{}: the control socket: {e}", c.name)))?;
        let p = pending.clone();
        let vm: SharedVm = Arc::new(Mutex::new(Some(vm)));
        let v = vm.clone();
        let reader = std::thread::Builder::new()
            .name("agent-reader".into())
            .spawn(move || read_loop(read_half, decoder, p, tx, v))
            .map_err(|e| Error::new(format!("{}: start the reader thread: {e}", c.name)))?;
        Ok(Sandbox {
            name: c.name.clone(),
            vm,
            writer: Mutex::new(stream),
            pending,
            next_id: AtomicU32::new(1),
            incoming: Mutex::new(incoming),
            reader: Some(reader),
            console_log: c.console_log.clone(),
            socket,
            shares: Mutex::new(shares),
            agent: hello,
            boot_time,
        })
    }

    /// The VMM's pid, while the VM is held.
    pub fn vmm_pid(&self) -> Option<u32> {
        self.lock_vm().as_ref().map(|vm| vm.pid())
    }

    fn lock_vm(&self) -> std::sync::MutexGuard<'_, Option<Box<dyn Vm>>> {
        self.vm.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, frame: &Frame) -> Result<(), Error> {
        let mut out = Vec::new();
        encode(frame, &mut out).map_err(|e| Error::new(format!("{}: {e}", self.name)))?;
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(&out)
            .map_err(|e| Error::new(format!("{}: send to the agent: {e}", self.name)))
    }

    /// Sends `request` and waits up to `timeout` for its response; the agent's Error is
    /// this call's error, with the agent's words.
    pub fn call(&self, request: Request, timeout: Duration) -> Result<Response, Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).max(1);
        let (tx, rx) = mpsc::channel();
        match self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            Some(m) => {
                m.insert(id, tx);
            }
            None => {
                return Err(Error::new(format!(
                    "{}: the connection to the agent has ended",
                    self.name
                )))
            }
        }
        self.send(&Frame::Request { id, request })?;
        match rx.recv_timeout(timeout) {
            Ok(Response::Error { message }) => Err(Error::new(format!("{}: {message}", self.name))),
            Ok(r) => Ok(r),
            Err(RecvTimeoutError::Timeout) => {
                if let Some(m) = self
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_mut()
                {
                    m.remove(&id);
                }
                Err(Error::new(format!(
                    "{}: the agent did not answer within {timeout:?}",
                    self.name
                )))
            }
            Err(RecvTimeoutError::Disconnected) => Err(Error::new(format!(
                "{}: the connection to the agent ended before its answer",
                self.name
            ))),
        }
    }

    /// Stdin bytes for `stream`.
    pub fn data(&self, stream: u32, bytes: &[u8]) -> Result<(), Error> {
        for f in berth_agent_proto::data_frames(stream, bytes) {
            self.send(&f)?;
        }
        Ok(())
    }

    /// The end of stdin `stream`.
    pub fn close_stream(&self, stream: u32) -> Result<(), Error> {
        self.send(&Frame::Close { stream })
    }

    /// The next thing the agent sent besides responses, waiting up to `timeout` (None:
    /// for ever); None when the time ran out. After [`Incoming::Ended`], every call says
    /// Ended again.
    pub fn recv(&self, timeout: Option<Duration>) -> Option<Incoming> {
        let rx = self.incoming.lock().unwrap_or_else(|p| p.into_inner());
        let r = match timeout {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(t) => rx.recv_timeout(t),
        };
        match r {
            Ok(i) => Some(i),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Incoming::Ended(
                "the connection to the agent has ended".into(),
            )),
        }
    }

    /// How the VM ended (waiting up to `timeout`; killed after that), with the console's
    /// last lines when it did not power off: for a message after the connection broke.
    pub fn ended(&self, timeout: Duration) -> String {
        match self.lock_vm().as_mut() {
            Some(vm) => ended(&mut **vm, timeout, &self.console_log),
            None => "the VM was closed".into(),
        }
    }

    /// Asks the agent to end its containers and power off, waits for the VM to end, then
    /// closes it ([`Sandbox::close`]).
    pub fn shutdown(&self, timeout: Duration) -> Result<VmExit, Error> {
        let asked = self.call(Request::Shutdown {}, timeout);
        let exit = match self.lock_vm().as_mut() {
            None => return Err(Error::new(format!("{}: the VM was closed", self.name))),
            Some(vm) => match vm.wait(timeout) {
                Ok(e) => Ok(e),
                Err(_) => {
                    let _ = vm.kill();
                    vm.wait(Duration::from_secs(5))
                        .map_err(|e| Error::new(format!("{}: {}", self.name, chain(&e))))
                }
            },
        };
        self.close();
        let exit = exit?;
        asked?;
        if !exit.is_clean() {
            return Err(Error::new(format!(
                "{}: the VM did not power off: {exit}",
                self.name
            )));
        }
        Ok(exit)
    }

    /// Kills the VM if it still runs, reaps it, and removes its control socket. Calls
    /// after the first do nothing.
    pub fn close(&self) {
        let vm = self.lock_vm().take();
        if let Some(mut vm) = vm {
            let _ = vm.kill();
            drop(vm);
        }
        self.shares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The control socket's path (gone once the VM is dropped).
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.close();
        // The reader ends when the VMM's end of the socket closes.
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn read_loop(
    mut stream: UnixStream,
    mut decoder: Decoder,
    pending: Pending,
    tx: Sender<Incoming>,
    vm: SharedVm,
) {
    // Set when the guest broke the protocol: it is hostile or broken, and is killed at once.
    let mut violated = false;
    let mut buf = vec![0u8; 64 * 1024];
    let why = 'outer: loop {
        loop {
            match decoder.next_frame() {
                Ok(None) => break,
                Err(e) => {
                    violated = true;
                    break 'outer format!("the agent broke the protocol: {e}");
                }
                Ok(Some(Frame::Response { id, response })) => {
                    let tx = pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_mut()
                        .and_then(|m| m.remove(&id));
                    match tx {
                        Some(t) => {
                            let _ = t.send(response);
                        }
                        None => {
                            break 'outer format!(
                                "the agent answered request {id}, which was not asked"
                            )
                        }
                    }
                }
                Ok(Some(Frame::Data { stream, bytes })) => {
                    let _ = tx.send(Incoming::Data { stream, bytes });
                }
                Ok(Some(Frame::Close { stream })) => {
                    let _ = tx.send(Incoming::Close { stream });
                }
                Ok(Some(Frame::Event(e))) => {
                    let _ = tx.send(Incoming::Event(e));
                }
                // The decoder lets no second Hello and no Request from the agent through.
                Ok(Some(f)) => {
                    break 'outer format!("unexpected {:?} frame from the agent", f.kind())
                }
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => break "the agent closed the connection".to_string(),
            Ok(n) => decoder.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break format!("read the control socket: {e}"),
        }
    };
    if violated {
        if let Some(vm) = vm.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            let _ = vm.kill();
        }
    }
    // Callers waiting for a response see their channel close; new calls are refused.
    pending.lock().unwrap_or_else(|p| p.into_inner()).take();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = tx.send(Incoming::Ended(why));
}

/// How the VM ended, waiting up to `timeout` and killing it after that; a guest that did
/// not power off has the console's last lines added (guest-written: printable only).
fn ended(vm: &mut dyn Vm, timeout: Duration, console: &Path) -> String {
    let exit = match vm.wait(timeout) {
        Ok(e) => e,
        Err(_) => {
            let _ = vm.kill();
            match vm.wait(Duration::from_secs(5)) {
                Ok(e) => e,
                Err(e) => return format!("the VM could not be ended: {}", chain(&e)),
            }
        }
    };
    if exit.is_clean() {
        return exit.to_string();
    }
    let tail = console_tail(console, 5);
    if tail.is_empty() {
        exit.to_string()
    } else {
        format!("{exit}; console: {tail}")
    }
}

/// The last `n` non-empty lines of the console log, printable, at most 4 KiB read.
pub fn console_tail(path: &Path, n: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(len.saturating_sub(4096)));
    let mut b = Vec::new();
    let _ = f.take(4096).read_to_end(&mut b);
    let text: String = String::from_utf8_lossy(&b)
        .chars()
        .map(|c| if c == '\n' || !c.is_control() { c } else { ' ' })
        .collect();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}
