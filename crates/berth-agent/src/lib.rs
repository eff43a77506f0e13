//! berth-agent: PID 1 of a Berth VM guest (docs/vm.md). It sets the guest up (see the
//! binary), then serves the host over one byte stream with berth-agent-proto: it makes and
//! runs containers with libberth over the image's layers (namespaces, cgroups, seccomp and
//! capabilities apply inside the VM too), carries their stdio as Data frames, and reports
//! their exits.
//!
//! One thread and poll(2), as in berth-shim: requests are handled in turn, and children are
//! reaped only between them, so libberth's own waits on the processes it forks never race
//! a reaper.

pub mod rootfs;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_agent_proto::{
    encode, ConnError, Decoder, Event, Frame, Hello, ProtoError, Request, Response, Rootfs, Side,
    Stdio, MAX_DATA, VERSION,
};
use libberth::{ConsoleTarget, CreateOptions, ExecOptions, Runtime};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub use rootfs::Paths;

/// What the agent says it is in its Hello.
pub const PEER: &str = concat!("berth-agent ", env!("CARGO_PKG_VERSION"));

/// Why [`serve`] returned: either way the guest powers off.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The host asked for Shutdown, and was answered.
    PowerOff,
    /// The host closed the connection: nobody is left to serve.
    HostGone,
}

/// How long output is still read after a process exits, before its exit is reported: the
/// container's init takes its pid namespace with it, so its pipes end at once.
const DRAIN: Duration = Duration::from_millis(500);

/// One process the agent started: a container's init or an exec.
struct Proc {
    pid: i32,
    /// The pty's master, for Resize.
    console: Option<OwnedFd>,
    exit: Option<(i32, bool)>,
    /// Requests waiting for the exit.
    waiters: Vec<u32>,
}

struct Container {
    init: Proc,
    execs: BTreeMap<String, Proc>,
    dir: PathBuf,
    started: bool,
}

/// Output of a process, read and sent to the host as Data on `stream`.
struct Output {
    stream: u32,
    fd: OwnedFd,
    pid: i32,
}

/// Input to a process from the host's Data on its stream.
struct Input {
    fd: OwnedFd,
    pid: i32,
    queue: VecDeque<u8>,
    /// The host closed the stream: close the fd once the queue is written.
    closing: bool,
}

struct Agent<'p, S> {
    stream: S,
    decoder: Decoder,
    runtime: Runtime,
    paths: &'p Paths,
    layers: rootfs::Layers,
    containers: BTreeMap<String, Container>,
    /// pid → (container, exec).
    pids: HashMap<i32, (String, Option<String>)>,
    outputs: Vec<Output>,
    inputs: HashMap<u32, Input>,
}

/// Serves the host on `stream` until it asks for Shutdown or goes away; every container is
/// ended and removed before this returns.
pub fn serve<S: Read + Write + AsFd>(stream: S, paths: &Paths) -> Result<Outcome, ConnError> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None);
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| io::Error::other(format!("signalfd: {e}")))?;
    let mut agent = Agent {
        stream,
        decoder: Decoder::from_host(),
        runtime: Runtime {
            root: paths.state.clone(),
            systemd_cgroup: false,
            rootless: false,
        },
        paths,
        layers: rootfs::Layers::default(),
        containers: BTreeMap::new(),
        pids: HashMap::new(),
        outputs: Vec::new(),
        inputs: HashMap::new(),
    };
    let r = agent.run(&sfd);
    agent.end_all();
    r
}

impl<S: Read + Write + AsFd> Agent<'_, S> {
    fn send(&mut self, frame: &Frame) -> Result<(), ConnError> {
        let mut out = Vec::new();
        encode(frame, &mut out)?;
        self.stream.write_all(&out)?;
        self.stream.flush()?;
        Ok(())
    }

    fn respond(&mut self, id: u32, response: Response) -> Result<(), ConnError> {
        self.send(&Frame::Response { id, response })
    }

    fn run(&mut self, sfd: &SignalFd) -> Result<Outcome, ConnError> {
        self.send(&Frame::Hello(Hello {
            version: VERSION,
            peer: PEER.to_string(),
        }))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            self.reap()?;
            // The poll set: the host, SIGCHLD, each output, each input with bytes queued.
            let in_streams: Vec<u32> = self
                .inputs
                .iter()
                .filter(|(_, i)| !i.queue.is_empty() || i.closing)
                .map(|(s, _)| *s)
                .collect();
            let (host_ready, sig_ready, out_ready, in_ready) = {
                let mut fds = vec![
                    PollFd::new(self.stream.as_fd(), PollFlags::POLLIN),
                    PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
                ];
                for o in &self.outputs {
                    fds.push(PollFd::new(o.fd.as_fd(), PollFlags::POLLIN));
                }
                for s in &in_streams {
                    fds.push(PollFd::new(self.inputs[s].fd.as_fd(), PollFlags::POLLOUT));
                }
                match poll(&mut fds, PollTimeout::from(1000u16)) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(io::Error::from(e).into()),
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                let n_out = self.outputs.len();
                (
                    ready(&fds[0]),
                    ready(&fds[1]),
                    fds[2..2 + n_out].iter().map(ready).collect::<Vec<_>>(),
                    fds[2 + n_out..].iter().map(ready).collect::<Vec<_>>(),
                )
            };
            if sig_ready {
                while sfd.read_signal().ok().flatten().is_some() {}
            }
            // Outputs, last first so that removing one keeps the others' indexes.
            for i in (0..out_ready.len()).rev() {
                if out_ready[i] {
                    self.pump_output(i, &mut buf)?;
                }
            }
            for (k, s) in in_streams.iter().enumerate() {
                if in_ready[k] {
                    self.pump_input(*s);
                }
            }
            if host_ready {
                let n = match self.stream.read(&mut buf) {
                    Ok(0) => return Ok(Outcome::HostGone),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                };
                self.decoder.push(&buf[..n]);
                while let Some(frame) = self.decoder.next_frame()? {
                    if let Some(outcome) = self.handle(frame)? {
                        return Ok(outcome);
                    }
                }
            }
        }
    }

    /// Reads what output `i` has and sends it; at its end, sends Close and drops it.
    fn pump_output(&mut self, i: usize, buf: &mut [u8]) -> Result<(), ConnError> {
        let len = MAX_DATA.min(buf.len());
        let n = match nix::unistd::read(&self.outputs[i].fd, &mut buf[..len]) {
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return Ok(()),
            // A pty's master reads EIO once the last slave is closed: its end.
            Err(_) => 0,
        };
        let stream = self.outputs[i].stream;
        if n == 0 {
            self.outputs.remove(i);
            return self.send(&Frame::Close { stream });
        }
        self.send(&Frame::Data {
            stream,
            bytes: buf[..n].to_vec(),
        })
    }

    fn pump_input(&mut self, stream: u32) {
        let Some(input) = self.inputs.get_mut(&stream) else {
            return;
        };
        while !input.queue.is_empty() {
            let (a, _) = input.queue.as_slices();
            match nix::unistd::write(&input.fd, a) {
                Ok(n) => {
                    input.queue.drain(..n);
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return,
                // The reader is gone: what the host sends more is dropped.
                Err(_) => {
                    self.inputs.remove(&stream);
                    return;
                }
            }
        }
        if input.closing {
            self.inputs.remove(&stream);
        }
    }

    /// Reaps every exited child; a process of ours has its exit reported.
    fn reap(&mut self) -> Result<(), ConnError> {
        loop {
            let st = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return Ok(()),
                Ok(st) => st,
            };
            let (pid, code) = match st {
                WaitStatus::Exited(p, c) => (p.as_raw(), c),
                WaitStatus::Signaled(p, s, _) => (p.as_raw(), 128 + s as i32),
                _ => continue,
            };
            self.exited(pid, code)?;
        }
    }

    fn exited(&mut self, pid: i32, code: i32) -> Result<(), ConnError> {
        let Some((id, exec_id)) = self.pids.remove(&pid) else {
            return Ok(());
        };
        self.drain_outputs_of(pid)?;
        self.inputs.retain(|_, i| i.pid != pid);
        let oom_killed = exec_id.is_none()
            && self
                .runtime
                .saved(&id)
                .ok()
                .and_then(|s| s.cgroup)
                .and_then(|cg| cg.oom_kills().ok().flatten())
                .is_some_and(|n| n > 0);
        let Some(c) = self.containers.get_mut(&id) else {
            return Ok(());
        };
        let p = match &exec_id {
            None => &mut c.init,
            Some(e) => match c.execs.get_mut(e) {
                Some(p) => p,
                None => return Ok(()),
            },
        };
        p.exit = Some((code, oom_killed));
        p.console = None;
        let waiters = std::mem::take(&mut p.waiters);
        self.send(&Frame::Event(Event::Exited {
            id,
            exec_id,
            code,
            oom_killed,
        }))?;
        for w in waiters {
            self.respond(w, Response::Exited { code, oom_killed })?;
        }
        Ok(())
    }

    /// Sends what the process's outputs still hold, for up to [`DRAIN`], so that its output
    /// comes before its exit.
    fn drain_outputs_of(&mut self, pid: i32) -> Result<(), ConnError> {
        let deadline = Instant::now() + DRAIN;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mine: Vec<usize> = (0..self.outputs.len())
                .filter(|&i| self.outputs[i].pid == pid)
                .collect();
            let left = deadline.saturating_duration_since(Instant::now());
            if mine.is_empty() || left.is_zero() {
                return Ok(());
            }
            let ready: Vec<bool> = {
                let mut fds: Vec<PollFd> = mine
                    .iter()
                    .map(|&i| PollFd::new(self.outputs[i].fd.as_fd(), PollFlags::POLLIN))
                    .collect();
                let ms = left.as_millis().min(u16::MAX as u128) as u16;
                if poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) == 0 {
                    return Ok(());
                }
                fds.iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect()
            };
            for k in (0..mine.len()).rev() {
                if ready[k] {
                    self.pump_output(mine[k], &mut buf)?;
                }
            }
        }
    }

    /// Handles one frame from the host; Some when the agent is to stop.
    fn handle(&mut self, frame: Frame) -> Result<Option<Outcome>, ConnError> {
        match frame {
            Frame::Request {
                id,
                request: Request::Shutdown {},
            } => {
                self.end_all();
                self.respond(id, Response::Done {})?;
                Ok(Some(Outcome::PowerOff))
            }
            Frame::Request {
                id,
                request: Request::Wait { id: cid, exec_id },
            } => {
                match self.find(&cid, exec_id.as_deref()) {
                    Err(message) => self.respond(
                        id,
                        Response::Error {
                            message: format!("wait: {message}"),
                        },
                    )?,
                    Ok(p) => match p.exit {
                        Some((code, oom_killed)) => {
                            self.respond(id, Response::Exited { code, oom_killed })?
                        }
                        None => p.waiters.push(id),
                    },
                }
                Ok(None)
            }
            Frame::Request { id, request } => {
                let op = op(&request);
                let response = match self.request(request) {
                    Ok(r) => r,
                    Err(e) => Response::Error {
                        message: format!("{op}: {e}"),
                    },
                };
                self.respond(id, response)?;
                Ok(None)
            }
            Frame::Data { stream, bytes } => {
                if let Some(i) = self.inputs.get_mut(&stream) {
                    if !i.closing {
                        i.queue.extend(bytes);
                    }
                }
                self.pump_input(stream);
                Ok(None)
            }
            Frame::Close { stream } => {
                if let Some(i) = self.inputs.get_mut(&stream) {
                    i.closing = true;
                }
                self.pump_input(stream);
                Ok(None)
            }
            // The host's Hello: the decoder has checked that it comes first, once, with this
            // protocol version.
            Frame::Hello(_) => Ok(None),
            // The decoder refuses these from a host; should one get through, the stream is
            // not what it claims to be.
            other @ (Frame::Response { .. } | Frame::Event(_)) => Err(ProtoError::NotAllowed {
                kind: other.kind(),
                from: Side::Host,
            }
            .into()),
        }
    }

    fn find(&mut self, id: &str, exec_id: Option<&str>) -> Result<&mut Proc, String> {
        let c = self
            .containers
            .get_mut(id)
            .ok_or_else(|| format!("no container {id}"))?;
        match exec_id {
            None => Ok(&mut c.init),
            Some(e) => c
                .execs
                .get_mut(e)
                .ok_or_else(|| format!("container {id}: no exec {e}")),
        }
    }

    fn request(&mut self, request: Request) -> Result<Response, String> {
        match request {
            Request::Create {
                id,
                config,
                rootfs,
                stdio,
                files,
                volumes,
            } => self.create(&id, config, &rootfs, &stdio, &files, &volumes),
            Request::Start { id } => {
                let c = self
                    .containers
                    .get_mut(&id)
                    .ok_or_else(|| format!("no container {id}"))?;
                self.runtime
                    .start(&id)
                    .map_err(|e| format!("container {id}: {}", e.chain()))?;
                c.started = true;
                Ok(Response::Done {})
            }
            Request::Exec {
                id,
                exec_id,
                process,
                stdio,
            } => self.exec(&id, &exec_id, process, &stdio),
            Request::Signal {
                id,
                exec_id,
                signal,
                all,
            } => {
                let p = self.find(&id, exec_id.as_deref())?;
                if p.exit.is_some() {
                    return Ok(Response::Done {});
                }
                match exec_id {
                    None => self
                        .runtime
                        .kill(&id, signal, all)
                        .map_err(|e| format!("container {id}: {}", e.chain()))?,
                    Some(e) => {
                        let sig = Signal::try_from(signal)
                            .map_err(|_| format!("signal {signal}: not a signal"))?;
                        nix::sys::signal::kill(Pid::from_raw(p.pid), sig)
                            .map_err(|err| format!("container {id} exec {e}: {err}"))?;
                    }
                }
                Ok(Response::Done {})
            }
            Request::Resize {
                id,
                exec_id,
                rows,
                cols,
            } => {
                let p = self.find(&id, exec_id.as_deref())?;
                let Some(m) = &p.console else {
                    return Err(format!("container {id}: the process has no terminal"));
                };
                libberth::console::set_size(m.as_fd(), rows, cols)
                    .map_err(|e| format!("container {id}: {}", e.chain()))?;
                Ok(Response::Done {})
            }
            Request::Stats { id } => {
                if !self.containers.contains_key(&id) {
                    return Err(format!("no container {id}"));
                }
                let cg = self
                    .runtime
                    .saved(&id)
                    .map_err(|e| format!("container {id}: {}", e.chain()))?
                    .cgroup
                    .ok_or_else(|| format!("container {id}: no cgroup"))?;
                let stats = cg
                    .stats()
                    .map_err(|e| format!("container {id}: cgroup stats: {e}"))?;
                Ok(Response::Stats {
                    stats: serde_json::to_value(stats).map_err(|e| e.to_string())?,
                })
            }
            Request::Delete { id } => {
                if !self.containers.contains_key(&id) {
                    return Err(format!("no container {id}"));
                }
                self.delete(&id)?;
                Ok(Response::Done {})
            }
            Request::Wait { .. } | Request::Shutdown {} => unreachable!("handled by the caller"),
        }
    }

    fn create(
        &mut self,
        id: &str,
        config: serde_json::Value,
        root: &Rootfs,
        stdio: &Stdio,
        files: &BTreeMap<String, String>,
        volumes: &[String],
    ) -> Result<Response, String> {
        libberth::state::validate_id(id).map_err(|e| e.to_string())?;
        if self.containers.contains_key(id) {
            return Err(format!("container {id} exists already"));
        }
        if root.upper.is_some() {
            return Err(format!(
                "container {id}: a writable layer on a disk is not supported; the upper layer is a tmpfs"
            ));
        }
        let dir = self.paths.containers.join(id);
        let made = (|| -> Result<(Proc, StdioEnds), String> {
            let mut lowers = Vec::new();
            for serial in &root.layers {
                lowers.push(self.layers.mount(self.paths, serial)?);
            }
            let rootfs = rootfs::mount_overlay(&lowers, &dir)?;
            let files_dir = dir.join("files");
            fs::create_dir_all(&files_dir)
                .map_err(|e| format!("create {}: {e}", files_dir.display()))?;
            for (name, data) in files {
                if !rootfs::valid_file_name(name) {
                    return Err(format!("file name {name:?} is not one plain component"));
                }
                let p = files_dir.join(name);
                fs::write(&p, data).map_err(|e| format!("write {}: {e}", p.display()))?;
            }
            for tag in volumes {
                rootfs::mount_volume(&dir, tag)?;
            }
            let config = guest_config(config, &rootfs, &dir)?;
            let bundle = dir.join("bundle");
            fs::create_dir_all(&bundle).map_err(|e| format!("create {}: {e}", bundle.display()))?;
            let data = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
            fs::write(bundle.join("config.json"), data)
                .map_err(|e| format!("write {}/config.json: {e}", bundle.display()))?;
            let (child, outputs, input) = Pipes::make(stdio)?.split();
            let created = self
                .runtime
                .create(&CreateOptions {
                    id: id.to_string(),
                    bundle,
                    console: stdio.terminal.then_some(ConsoleTarget::Return),
                    stdio: child,
                    ..Default::default()
                })
                .map_err(|e| e.chain())?;
            let (console, outputs, input) =
                with_console(created.console_master, stdio, outputs, input, created.pid)?;
            let proc = Proc {
                pid: created.pid,
                console,
                exit: None,
                waiters: Vec::new(),
            };
            Ok((
                proc,
                (fix_pid(outputs, created.pid), fix_input(input, created.pid)),
            ))
        })();
        match made {
            Ok((init, (outputs, input))) => {
                let pid = init.pid;
                self.pids.insert(pid, (id.to_string(), None));
                self.outputs.extend(outputs);
                if let Some((s, i)) = input {
                    self.inputs.insert(s, i);
                }
                self.containers.insert(
                    id.to_string(),
                    Container {
                        init,
                        execs: BTreeMap::new(),
                        dir,
                        started: false,
                    },
                );
                Ok(Response::Started { pid })
            }
            Err(e) => {
                let _ = rootfs::remove_container_dir(&dir);
                Err(format!("container {id}: {e}"))
            }
        }
    }

    fn exec(
        &mut self,
        id: &str,
        exec_id: &str,
        process: serde_json::Value,
        stdio: &Stdio,
    ) -> Result<Response, String> {
        let c = self
            .containers
            .get(id)
            .ok_or_else(|| format!("no container {id}"))?;
        if c.execs.contains_key(exec_id) {
            return Err(format!("container {id}: exec {exec_id} exists already"));
        }
        if !c.started || c.init.exit.is_some() {
            return Err(format!("container {id} is not running"));
        }
        let process: oci_spec::runtime::Process = serde_json::from_value(process)
            .map_err(|e| format!("container {id}: exec {exec_id}: the process: {e}"))?;
        let (child, outputs, input) = Pipes::make(stdio)?.split();
        let execed = self
            .runtime
            .exec(&ExecOptions {
                id: id.to_string(),
                process,
                console: stdio.terminal.then_some(ConsoleTarget::Return),
                pid_file: None,
                preserve_fds: 0,
                ignore_paused: false,
                sub_cgroups: Vec::new(),
                stdio: child,
                new_session: true,
            })
            .map_err(|e| format!("container {id}: {}", e.chain()))?;
        let (console, outputs, input) =
            with_console(execed.console_master, stdio, outputs, input, execed.pid)?;
        let pid = execed.pid;
        self.pids
            .insert(pid, (id.to_string(), Some(exec_id.to_string())));
        self.outputs.extend(fix_pid(outputs, pid));
        if let Some((s, i)) = fix_input(input, pid) {
            self.inputs.insert(s, i);
        }
        let c = self.containers.get_mut(id).expect("checked above");
        c.execs.insert(
            exec_id.to_string(),
            Proc {
                pid,
                console,
                exit: None,
                waiters: Vec::new(),
            },
        );
        Ok(Response::Started { pid })
    }

    /// Kills the container's processes, reaps its init, and removes it and its rootfs.
    fn delete(&mut self, id: &str) -> Result<(), String> {
        let Some(c) = self.containers.get(id) else {
            return Ok(());
        };
        if c.init.exit.is_none() {
            let _ = self.runtime.kill(id, libc::SIGKILL, true);
            let pid = c.init.pid;
            // Ours to reap, and dead or dying: wait for it here, so libberth's delete sees
            // it gone rather than a zombie.
            if let Ok(st) = waitpid(Pid::from_raw(pid), None) {
                let code = match st {
                    WaitStatus::Exited(_, c) => c,
                    WaitStatus::Signaled(_, s, _) => 128 + s as i32,
                    _ => 137,
                };
                let _ = self.exited(pid, code);
            }
        }
        let r = self
            .runtime
            .delete(id, true)
            .map_err(|e| format!("container {id}: {}", e.chain()));
        let c = self.containers.remove(id).expect("checked above");
        let pids: Vec<i32> = std::iter::once(c.init.pid)
            .chain(c.execs.values().map(|p| p.pid))
            .collect();
        self.outputs.retain(|o| !pids.contains(&o.pid));
        self.inputs.retain(|_, i| !pids.contains(&i.pid));
        self.pids.retain(|p, _| !pids.contains(p));
        rootfs::remove_container_dir(&c.dir).map_err(|e| format!("container {id}: {e}"))?;
        r
    }

    /// Ends and removes every container (Shutdown, or the host gone).
    fn end_all(&mut self) {
        let ids: Vec<String> = self.containers.keys().cloned().collect();
        for id in ids {
            if let Err(e) = self.delete(&id) {
                eprintln!("berth-agent: {e}");
            }
        }
    }
}

/// The request's operation, for messages.
fn op(r: &Request) -> &'static str {
    match r {
        Request::Create { .. } => "create",
        Request::Start { .. } => "start",
        Request::Exec { .. } => "exec",
        Request::Signal { .. } => "signal",
        Request::Wait { .. } => "wait",
        Request::Resize { .. } => "resize",
        Request::Stats { .. } => "stats",
        Request::Delete { .. } => "delete",
        Request::Shutdown {} => "shutdown",
    }
}

/// The host's config made to fit the guest: the root is the overlay the agent mounted, and
/// a bind mount's relative source names a file the agent wrote in the container's
/// directory. Hooks would run guest binaries the host named: refused.
fn guest_config(
    mut config: serde_json::Value,
    rootfs: &std::path::Path,
    dir: &std::path::Path,
) -> Result<serde_json::Value, String> {
    let obj = config
        .as_object_mut()
        .ok_or("the config is not a JSON object")?;
    if obj.get("hooks").is_some_and(|h| !h.is_null()) {
        return Err("hooks are not run in a VM guest".into());
    }
    let root = obj
        .entry("root")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .ok_or("root is not an object")?;
    root.insert(
        "path".into(),
        serde_json::Value::String(rootfs.display().to_string()),
    );
    if let Some(mounts) = obj.get_mut("mounts").and_then(|m| m.as_array_mut()) {
        for m in mounts {
            let Some(src) = m.get("source").and_then(|s| s.as_str()) else {
                continue;
            };
            for kind in ["files", "volumes"] {
                if let Some(name) = src.strip_prefix(kind).and_then(|r| r.strip_prefix('/')) {
                    if !rootfs::valid_file_name(name) {
                        return Err(format!("mount source {src:?}: not {kind}/NAME"));
                    }
                    let path = dir.join(kind).join(name);
                    m["source"] = serde_json::Value::String(path.display().to_string());
                    break;
                }
            }
        }
    }
    Ok(config)
}

/// The agent's ends of a process's stdio: outputs, and the input with its stream.
type StdioEnds = (Vec<Output>, Option<(u32, Input)>);

/// The pipes of a process without a terminal, or none (with one, the pty serves).
struct Pipes {
    terminal: bool,
    stdin: Option<(u32, OwnedFd, OwnedFd)>,
    stdout: Option<(u32, OwnedFd, OwnedFd)>,
    stderr: Option<(u32, OwnedFd, OwnedFd)>,
}

impl Pipes {
    fn make(s: &Stdio) -> Result<Pipes, String> {
        let pipe = |stream: Option<u32>| -> Result<Option<(u32, OwnedFd, OwnedFd)>, String> {
            match stream {
                None => Ok(None),
                Some(st) => {
                    let (r, w) =
                        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
                    Ok(Some((st, r, w)))
                }
            }
        };
        if s.terminal {
            return Ok(Pipes {
                terminal: true,
                stdin: None,
                stdout: None,
                stderr: None,
            });
        }
        Ok(Pipes {
            terminal: false,
            stdin: pipe(s.stdin)?,
            stdout: pipe(s.stdout)?,
            stderr: pipe(s.stderr)?,
        })
    }

    /// The child's ends, the agent's output ends, and its input end (pids filled later).
    fn split(self) -> (libberth::process::Stdio, Vec<Output>, Option<(u32, Input)>) {
        let mut child = libberth::process::Stdio::default();
        let mut outputs = Vec::new();
        let mut input = None;
        if let Some((s, r, w)) = self.stdin {
            child.stdin = Some(r);
            set_nonblocking(w.as_fd());
            input = Some((
                s,
                Input {
                    fd: w,
                    pid: 0,
                    queue: VecDeque::new(),
                    closing: false,
                },
            ));
        }
        for (slot, p) in [
            (&mut child.stdout, self.stdout),
            (&mut child.stderr, self.stderr),
        ] {
            if let Some((s, r, w)) = p {
                *slot = Some(w);
                set_nonblocking(r.as_fd());
                outputs.push(Output {
                    stream: s,
                    fd: r,
                    pid: 0,
                });
            }
        }
        // A stream the host did not ask for is /dev/null, not the agent's own stdio (the
        // guest's console). With a terminal the pty serves all three.
        if !self.terminal {
            let null = |write: bool| {
                fs::OpenOptions::new()
                    .read(!write)
                    .write(write)
                    .custom_flags(libc::O_CLOEXEC)
                    .open("/dev/null")
                    .ok()
                    .map(OwnedFd::from)
            };
            if child.stdin.is_none() {
                child.stdin = null(false);
            }
            if child.stdout.is_none() {
                child.stdout = null(true);
            }
            if child.stderr.is_none() {
                child.stderr = null(true);
            }
        }
        (child, outputs, input)
    }
}

/// With a terminal, the pty's master is the process's output (on the stdout stream) and
/// input (from the stdin stream); a copy is kept for Resize.
#[allow(clippy::type_complexity)]
fn with_console(
    master: Option<OwnedFd>,
    stdio: &Stdio,
    mut outputs: Vec<Output>,
    mut input: Option<(u32, Input)>,
    pid: i32,
) -> Result<(Option<OwnedFd>, Vec<Output>, Option<(u32, Input)>), String> {
    let Some(m) = master else {
        return Ok((None, outputs, input));
    };
    set_nonblocking(m.as_fd());
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| format!("dup the pty: {e}"));
    if let Some(s) = stdio.stdout {
        outputs.push(Output {
            stream: s,
            fd: dup(&m)?,
            pid,
        });
    }
    if let Some(s) = stdio.stdin {
        input = Some((
            s,
            Input {
                fd: dup(&m)?,
                pid,
                queue: VecDeque::new(),
                closing: false,
            },
        ));
    }
    Ok((Some(m), outputs, input))
}

fn fix_pid(mut outputs: Vec<Output>, pid: i32) -> Vec<Output> {
    for o in &mut outputs {
        o.pid = pid;
    }
    outputs
}

fn fix_input(input: Option<(u32, Input)>, pid: i32) -> Option<(u32, Input)> {
    input.map(|(s, mut i)| {
        i.pid = pid;
        (s, i)
    })
}

fn set_nonblocking(fd: BorrowedFd<'_>) {
    if let Ok(fl) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL) {
        let fl = OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK;
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(fl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_agent_proto::Conn;
    use std::os::unix::net::UnixStream;

    fn test_paths(t: &tempfile::TempDir) -> Paths {
        Paths {
            state: t.path().join("state"),
            containers: t.path().join("c"),
            layers: t.path().join("layers"),
            sys_block: t.path().join("sys"),
            dev: t.path().join("dev"),
        }
    }

    #[test]
    fn hello_errors_named_by_operation_then_shutdown() {
        let t = tempfile::tempdir().unwrap();
        let paths = test_paths(&t);
        let (host, agent) = UnixStream::pair().unwrap();
        let th = std::thread::spawn(move || serve(agent, &paths));
        let mut host = Conn::host(host);
        let hello = host.handshake("test host").unwrap();
        assert_eq!(hello.peer, PEER);
        // A container that does not exist, and a layer whose disk name is not plain.
        match host.call(Request::Start { id: "c1".into() }).unwrap() {
            Response::Error { message } => assert_eq!(message, "start: no container c1"),
            other => panic!("{other:?}"),
        }
        let r = host
            .call(Request::Create {
                id: "c1".into(),
                config: serde_json::json!({"ociVersion": "1.0.2"}),
                rootfs: Rootfs {
                    layers: vec!["../../dev/sda".into()],
                    upper: None,
                },
                stdio: Default::default(),
                files: Default::default(),
                volumes: Vec::new(),
            })
            .unwrap();
        match r {
            Response::Error { message } => {
                assert!(
                    message.starts_with("create: container c1: layer serial"),
                    "{message}"
                );
                assert!(
                    !t.path().join("c/c1").exists(),
                    "the container's directory was left"
                );
            }
            other => panic!("{other:?}"),
        }
        match host
            .call(Request::Wait {
                id: "c9".into(),
                exec_id: None,
            })
            .unwrap()
        {
            Response::Error { message } => assert_eq!(message, "wait: no container c9"),
            other => panic!("{other:?}"),
        }
        assert_eq!(host.call(Request::Shutdown {}).unwrap(), Response::Done {});
        assert_eq!(th.join().unwrap().unwrap(), Outcome::PowerOff);
    }

    #[test]
    fn a_host_that_goes_away_ends_the_agent() {
        let t = tempfile::tempdir().unwrap();
        let paths = test_paths(&t);
        let (host, agent) = UnixStream::pair().unwrap();
        let th = std::thread::spawn(move || serve(agent, &paths));
        let mut host = Conn::host(host);
        host.handshake("test host").unwrap();
        drop(host);
        assert_eq!(th.join().unwrap().unwrap(), Outcome::HostGone);
    }

    #[test]
    fn a_host_that_breaks_the_protocol_ends_the_agent_with_an_error() {
        let t = tempfile::tempdir().unwrap();
        let paths = test_paths(&t);
        let (mut host, agent) = UnixStream::pair().unwrap();
        let th = std::thread::spawn(move || serve(agent, &paths));
        // A length word far over the limit, where the Hello should be.
        host.write_all(&u32::MAX.to_be_bytes()).unwrap();
        let e = th.join().unwrap().unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
    }

    #[test]
    fn the_guest_config_roots_in_the_overlay_and_resolves_file_mounts() {
        let c = serde_json::json!({
            "root": {"path": "/host/rootfs", "readonly": false},
            "mounts": [
                {"destination": "/etc/hosts", "source": "files/hosts", "type": "bind"},
                {"destination": "/data", "source": "volumes/berth-v0", "type": "bind"},
                {"destination": "/proc", "source": "proc", "type": "proc"}
            ]
        });
        let g = guest_config(
            c,
            "/run/berth/c/x/rootfs".as_ref(),
            "/run/berth/c/x".as_ref(),
        )
        .unwrap();
        assert_eq!(g["root"]["path"], "/run/berth/c/x/rootfs");
        assert_eq!(g["mounts"][0]["source"], "/run/berth/c/x/files/hosts");
        assert_eq!(g["mounts"][1]["source"], "/run/berth/c/x/volumes/berth-v0");
        assert_eq!(g["mounts"][2]["source"], "proc");
        let bad =
            serde_json::json!({"mounts": [{"destination": "/x", "source": "files/../../etc"}]});
        assert!(guest_config(bad, "/r".as_ref(), "/d".as_ref()).is_err());
        let hooks = serde_json::json!({"hooks": {"prestart": [{"path": "/bin/true"}]}});
        assert!(guest_config(hooks, "/r".as_ref(), "/d".as_ref())
            .unwrap_err()
            .contains("hooks"));
    }
}
