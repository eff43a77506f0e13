//! The shim's event loop: one thread, poll(2) over the control socket, its connections,
//! every container's output and every ExecSync's, and a signalfd for SIGCHLD and SIGTERM.
//! No async runtime: a shim per pod must cost little memory.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_shim::crilog::{self, LineSplitter, LogFile, Stream};
use berth_shim::fdpass;
use berth_shim::protocol::{
    ContainerState, CreateSpec, ExecSpec, ExecSyncReply, ExecSyncSpec, Reply, Request, Response,
    Status, EXEC_OUTPUT_LIMIT, FRAME_HEADER,
};
use berth_shim::runtime::ContainerRuntime;
use berth_shim::SOCKET;
use libberth::process::Stdio;
use libberth::{ConsoleTarget, CreateOptions, ExecOptions, ProcessOverrides, Runtime};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::pause;

/// A request line longer than this is refused (requests are small).
const MAX_REQUEST: usize = 1 << 20;
/// How long a connection may take to send its request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// One output stream of a container, into its log.
struct Output {
    fd: OwnedFd,
    splitter: LineSplitter,
    /// 1 stdout (a terminal's only stream), 2 stderr: as attach frames name them.
    stream: u8,
}

/// The most an attached client may fall behind before it is cut off: a client that does
/// not read must not hold the container's logs back, nor fill the shim's memory.
const ATTACH_BACKLOG: usize = 1 << 20;

/// A client attached to a container's output.
struct Attacher {
    conn: UnixStream,
    stdout: bool,
    stderr: bool,
    /// Frames the socket did not take yet.
    pending: Vec<u8>,
    broken: bool,
}

impl Attacher {
    /// Queues a frame and writes what the socket takes now.
    fn send(&mut self, stream: u8, data: &[u8]) {
        if self.broken
            || !(if stream == 1 {
                self.stdout
            } else {
                self.stderr
            })
        {
            return;
        }
        if self.pending.len() + data.len() + FRAME_HEADER > ATTACH_BACKLOG {
            self.broken = true;
            return;
        }
        self.pending.push(stream);
        self.pending
            .extend_from_slice(&(data.len() as u32).to_be_bytes());
        self.pending.extend_from_slice(data);
        self.flush();
    }

    fn flush(&mut self) {
        while !self.pending.is_empty() {
            match self.conn.write(&self.pending) {
                Ok(0) => {
                    self.broken = true;
                    return;
                }
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.broken = true;
                    return;
                }
            }
        }
    }

    /// At the container's end: what is queued goes out (briefly waited for), then the
    /// connection closes, which tells the client.
    fn finish(mut self) {
        if self.broken || self.pending.is_empty() {
            return;
        }
        let _ = self.conn.set_nonblocking(false);
        let _ = self.conn.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = self.conn.write_all(&self.pending);
    }
}

struct Container {
    state: ContainerState,
    log: Option<LogFile>,
    outputs: Vec<Output>,
    /// The write side of its stdin, held open for attach.
    stdin: Option<OwnedFd>,
    /// The first attach takes `stdin` itself (CRI `stdin_once`).
    stdin_once: bool,
    tty: bool,
    /// A copy of its pty master (its stdin, and where its terminal size is set).
    console: Option<OwnedFd>,
    attachers: Vec<Attacher>,
}

/// An interactive exec: kept while the connection that asked for it is open.
struct Session {
    pid: i32,
    conn: UnixStream,
    exit: Option<i32>,
    /// The client closed its connection before the exit: the process was killed.
    gone: bool,
}

/// An ExecSync under way: its output so far, its exit, and who waits for the reply.
struct ExecSession {
    pid: i32,
    outputs: Vec<(OwnedFd, usize)>,
    bufs: [Vec<u8>; 2],
    deadline: Option<Instant>,
    exit: Option<i32>,
    timed_out: bool,
    reply_to: UnixStream,
}

/// A Wait request: answered when its container exits or at its deadline.
struct Waiter {
    id: String,
    deadline: Option<Instant>,
    reply_to: UnixStream,
}

/// A connection that has not sent its whole request yet.
struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Descriptors that came with the request.
    fds: Vec<OwnedFd>,
    since: Instant,
}

/// How much one read of a container's output takes: a quarter of a pipe's default
/// capacity, looped until the pipe is empty (conmon reads 8 KiB at a time).
const READ_CHUNK: usize = 16 * 1024;

pub struct Shim {
    pod: String,
    dir: PathBuf,
    rt: ContainerRuntime,
    listener: UnixListener,
    signals: SignalFd,
    conns: Vec<Conn>,
    containers: HashMap<String, Container>,
    execs: Vec<ExecSession>,
    sessions: Vec<Session>,
    waiters: Vec<Waiter>,
    pause: Option<i32>,
    shutting_down: bool,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Shim {
    pub fn new(
        pod: &str,
        dir: &Path,
        runtime_root: &Path,
        runtime_binary: Option<(&Path, &[String])>,
    ) -> Result<Shim, String> {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag on this process.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("shim.log"))
            .map_err(|e| format!("open {}: {e}", dir.join("shim.log").display()))?;
        crate::redirect_stdio(&log)?;
        fs::create_dir_all(dir.join("exits")).map_err(|e| format!("create exits dir: {e}"))?;
        let socket = dir.join(SOCKET);
        let _ = fs::remove_file(&socket);
        let listener =
            UnixListener::bind(&socket).map_err(|e| format!("bind {}: {e}", socket.display()))?;
        fs::set_permissions(&socket, fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod {}: {e}", socket.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("listen: {e}"))?;
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGPIPE,
        ] {
            mask.add(s);
        }
        mask.thread_block()
            .map_err(|e| format!("block signals: {e}"))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| format!("signalfd: {e}"))?;
        eprintln!("berth-shim: pod {pod}: serving {}", socket.display());
        Ok(Shim {
            pod: pod.to_string(),
            dir: dir.to_path_buf(),
            rt: match runtime_binary {
                None => ContainerRuntime::Builtin(Runtime {
                    root: runtime_root.to_path_buf(),
                    systemd_cgroup: false,
                    rootless: false,
                }),
                Some((b, options)) => ContainerRuntime::binary(
                    b.to_path_buf(),
                    options.to_vec(),
                    runtime_root.to_path_buf(),
                    dir.join("runtime"),
                ),
            },
            listener,
            signals,
            conns: Vec::new(),
            containers: HashMap::new(),
            execs: Vec::new(),
            sessions: Vec::new(),
            waiters: Vec::new(),
            pause: None,
            shutting_down: false,
        })
    }

    /// Serves until shut down and empty.
    pub fn run(&mut self) {
        loop {
            if self.shutting_down
                && self.containers.is_empty()
                && self.execs.is_empty()
                && self.sessions.is_empty()
            {
                self.finish_waits();
                let _ = fs::remove_file(self.dir.join(SOCKET));
                eprintln!("berth-shim: pod {}: done", self.pod);
                return;
            }
            self.poll_once();
        }
    }

    fn poll_once(&mut self) {
        // The order of `fds`: listener, signals, connections, container outputs, exec
        // outputs, exec sessions, attached clients.
        let mut owners: Vec<Source> = vec![Source::Listener, Source::Signals];
        let mut raw: Vec<(i32, PollFlags)> = vec![
            (self.listener.as_raw_fd(), PollFlags::POLLIN),
            (self.signals.as_raw_fd(), PollFlags::POLLIN),
        ];
        for (i, c) in self.conns.iter().enumerate() {
            owners.push(Source::Conn(i));
            raw.push((c.stream.as_raw_fd(), PollFlags::POLLIN));
        }
        for (id, c) in &self.containers {
            for (j, o) in c.outputs.iter().enumerate() {
                owners.push(Source::Output(id.clone(), j));
                raw.push((o.fd.as_raw_fd(), PollFlags::POLLIN));
            }
            for (k, a) in c.attachers.iter().enumerate() {
                owners.push(Source::Attacher(id.clone(), k));
                let mut f = PollFlags::POLLIN;
                if !a.pending.is_empty() {
                    f |= PollFlags::POLLOUT;
                }
                raw.push((a.conn.as_raw_fd(), f));
            }
        }
        for (i, e) in self.execs.iter().enumerate() {
            for (j, (fd, _)) in e.outputs.iter().enumerate() {
                owners.push(Source::ExecOutput(i, j));
                raw.push((fd.as_raw_fd(), PollFlags::POLLIN));
            }
        }
        for (i, s) in self.sessions.iter().enumerate() {
            if !s.gone {
                owners.push(Source::Session(i));
                raw.push((s.conn.as_raw_fd(), PollFlags::POLLIN));
            }
        }
        let ready: Vec<bool> = {
            let borrowed: Vec<(BorrowedFd<'_>, PollFlags)> = raw
                .iter()
                // SAFETY: every number in `raw` is a descriptor owned by `self`, which
                // outlives this block; nothing closes them before poll returns.
                .map(|&(fd, f)| (unsafe { BorrowedFd::borrow_raw(fd) }, f))
                .collect();
            let mut fds: Vec<PollFd<'_>> = borrowed
                .iter()
                .map(|(fd, f)| PollFd::new(*fd, *f))
                .collect();
            let timeout = self.next_timeout();
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    eprintln!("berth-shim: poll: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            fds.iter()
                .map(|f| {
                    f.revents().is_some_and(|r| {
                        r.intersects(
                            PollFlags::POLLIN
                                | PollFlags::POLLOUT
                                | PollFlags::POLLHUP
                                | PollFlags::POLLERR,
                        )
                    })
                })
                .collect()
        };
        // Connections and outputs are handled from the highest index down, so that removing
        // one does not shift the others.
        let mut conn_ready = Vec::new();
        let mut out_ready = Vec::new();
        let mut exec_ready = Vec::new();
        let mut session_ready = Vec::new();
        let mut attacher_ready = Vec::new();
        let mut accept = false;
        let mut signals = false;
        for (src, r) in owners.into_iter().zip(ready) {
            if !r {
                continue;
            }
            match src {
                Source::Listener => accept = true,
                Source::Signals => signals = true,
                Source::Conn(i) => conn_ready.push(i),
                Source::Output(id, j) => out_ready.push((id, j)),
                Source::ExecOutput(i, j) => exec_ready.push((i, j)),
                Source::Session(i) => session_ready.push(i),
                Source::Attacher(id, k) => attacher_ready.push((id, k)),
            }
        }
        // An output at its end is removed from its list: the higher indices go first, so
        // that the lower ones still name the same streams.
        out_ready.sort_unstable_by_key(|o| std::cmp::Reverse(o.1));
        for (id, j) in out_ready {
            self.read_output(&id, j);
        }
        exec_ready.sort_unstable_by_key(|e| std::cmp::Reverse(e.1));
        for (i, j) in exec_ready {
            self.read_exec_output(i, j);
        }
        for (id, k) in attacher_ready {
            self.service_attacher(&id, k);
        }
        for c in self.containers.values_mut() {
            c.attachers.retain(|a| !a.broken);
        }
        for i in session_ready {
            self.check_session(i);
        }
        if signals {
            self.handle_signals();
        }
        self.check_exec_deadlines();
        self.finish_execs();
        self.finish_sessions();
        self.finish_waits();
        conn_ready.sort_unstable();
        for i in conn_ready.into_iter().rev() {
            self.read_conn(i);
        }
        self.expire_conns();
        if accept {
            self.accept();
        }
    }

    fn next_timeout(&self) -> PollTimeout {
        let now = Instant::now();
        let mut next: Option<Instant> = self.conns.iter().map(|c| c.since + REQUEST_DEADLINE).min();
        for e in &self.execs {
            if let Some(d) = e.deadline.filter(|_| e.exit.is_none()) {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
        for d in self.waiters.iter().filter_map(|w| w.deadline) {
            next = Some(next.map_or(d, |n| n.min(d)));
        }
        match next {
            None => PollTimeout::NONE,
            Some(t) => {
                let ms = t.saturating_duration_since(now).as_millis().min(60_000) as u16;
                PollTimeout::from(ms.max(1))
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nonblocking(true);
                    self.conns.push(Conn {
                        stream,
                        buf: Vec::new(),
                        fds: Vec::new(),
                        since: Instant::now(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    eprintln!("berth-shim: accept: {e}");
                    return;
                }
            }
        }
    }

    fn expire_conns(&mut self) {
        let now = Instant::now();
        self.conns.retain(|c| now < c.since + REQUEST_DEADLINE);
    }

    fn read_conn(&mut self, i: usize) {
        let mut chunk = [0u8; 8192];
        let done = loop {
            match fdpass::recv(self.conns[i].stream.as_fd(), &mut chunk) {
                Ok((0, _)) => break Some(false),
                Ok((n, fds)) => {
                    let c = &mut self.conns[i];
                    c.fds.extend(fds);
                    if c.fds.len() > fdpass::MAX_FDS {
                        break Some(false);
                    }
                    c.buf.extend_from_slice(&chunk[..n]);
                    if c.buf.contains(&b'\n') {
                        break Some(true);
                    }
                    if c.buf.len() > MAX_REQUEST {
                        break Some(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(_) => break Some(false),
            }
        };
        match done {
            None => {}
            Some(false) => {
                self.conns.swap_remove(i);
            }
            Some(true) => {
                let c = self.conns.swap_remove(i);
                let line = c.buf.split(|&b| b == b'\n').next().unwrap_or(&[]);
                let _ = c.stream.set_nonblocking(false);
                match serde_json::from_slice::<Request>(line) {
                    Ok(req) => self.handle(req, c.stream, c.fds),
                    Err(e) => respond(c.stream, Err(format!("malformed request: {e}"))),
                }
                // A request (a create above all) allocates and frees far more than an idle
                // shim holds: give the freed pages back, or fifty idle shims keep them.
                // SAFETY: malloc_trim only returns free heap memory to the kernel.
                unsafe { libc::malloc_trim(0) };
                release_dead_stack();
            }
        }
    }

    fn handle(&mut self, req: Request, stream: UnixStream, fds: Vec<OwnedFd>) {
        let r = match req {
            Request::Exec(spec) => {
                if let Err((stream, e)) = self.exec(&spec, stream, fds) {
                    respond(stream, Err(e));
                }
                return;
            }
            Request::Attach {
                id,
                stdin,
                stdout,
                stderr,
            } => {
                if let Err((stream, e)) = self.attach(&id, stdin, stdout, stderr, stream) {
                    respond(stream, Err(e));
                }
                return;
            }
            Request::Sandbox(spec) => self.sandbox(&spec),
            Request::Create(spec) => self.create(&spec),
            Request::Start { id } => self.start(&id),
            Request::Kill { id, signal, all } => match self.known(&id) {
                Ok(_) => self.rt.kill(&id, signal, all).map(|()| Reply::Done),
                Err(e) => Err(e),
            },
            Request::Delete { id, force } => self.delete(&id, force),
            Request::State { id } => self.known(&id).map(|c| Reply::State(c.state.clone())),
            Request::ExecSync(spec) => match self.exec_sync(&spec, stream) {
                Ok(()) => return,
                Err((stream, e)) => {
                    respond(stream, Err(e));
                    return;
                }
            },
            Request::Wait { id, timeout_ms } => {
                if let Err(e) = self.known(&id) {
                    respond(stream, Err(e));
                    return;
                }
                self.waiters.push(Waiter {
                    id,
                    deadline: (timeout_ms > 0)
                        .then(|| Instant::now() + Duration::from_millis(timeout_ms)),
                    reply_to: stream,
                });
                self.finish_waits();
                return;
            }
            Request::ReopenLog { id } => self.reopen_log(&id),
            Request::Shutdown => self.shutdown(),
        };
        respond(stream, r);
    }

    fn known(&self, id: &str) -> Result<&Container, String> {
        self.containers
            .get(id)
            .ok_or_else(|| format!("container {id:?}: container does not exist"))
    }

    fn sandbox(&mut self, spec: &berth_shim::SandboxSpec) -> Result<Reply, String> {
        if self.pause.is_some() {
            return Err(format!("pod {}: the sandbox exists already", self.pod));
        }
        let pid = pause::start(spec).map_err(|e| format!("pod {}: {e}", self.pod))?;
        self.pause = Some(pid);
        if let Err(e) = pause::pin(&self.dir, pid, spec) {
            self.stop_pause();
            return Err(format!("pod {}: {e}", self.pod));
        }
        Ok(Reply::Sandbox { pid })
    }

    fn stop_pause(&mut self) {
        if let Some(pid) = self.pause.take() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        pause::unpin(&self.dir);
    }

    fn create(&mut self, spec: &CreateSpec) -> Result<Reply, String> {
        if self.containers.contains_key(&spec.id) {
            return Err(format!(
                "container {:?}: container with given ID already exists",
                spec.id
            ));
        }
        let log = match &spec.log_path {
            Some(p) => Some(
                LogFile::open(p)
                    .map_err(|e| format!("container {:?}: log {}: {e}", spec.id, p.display()))?,
            ),
            None => None,
        };
        let mut stdio = Stdio::default();
        let mut outputs = Vec::new();
        let mut stdin_w = None;
        if spec.stdin {
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
            stdio.stdin = Some(r);
            stdin_w = Some(w);
        } else {
            stdio.stdin = Some(
                nix::fcntl::open(
                    "/dev/null",
                    OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| e.to_string())?,
            );
        }
        if !spec.tty {
            for stream in [Stream::Stdout, Stream::Stderr] {
                let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
                    .map_err(|e| e.to_string())?;
                // The container's end blocks as a pipe normally does.
                nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))
                    .map_err(|e| e.to_string())?;
                match stream {
                    Stream::Stdout => stdio.stdout = Some(w),
                    Stream::Stderr => stdio.stderr = Some(w),
                }
                outputs.push(Output {
                    fd: r,
                    splitter: LineSplitter::new(stream),
                    stream: if stream == Stream::Stdout { 1 } else { 2 },
                });
            }
        }
        let opts = CreateOptions {
            id: spec.id.clone(),
            bundle: spec.bundle.clone(),
            console: spec.tty.then_some(ConsoleTarget::Return),
            stdio,
            ..Default::default()
        };
        let created = self.rt.create(&opts)?;
        let mut console = None;
        if let Some(master) = created.console_master {
            let _ = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
            console = nix::unistd::dup(&master).ok();
            outputs.push(Output {
                fd: master,
                splitter: LineSplitter::new(Stream::Stdout),
                stream: 1,
            });
        }
        // `opts.stdio` (the container's ends) is dropped here: only the container holds them.
        drop(opts);
        let state = ContainerState {
            id: spec.id.clone(),
            status: Status::Created,
            pid: created.pid,
            created_at: now_ns(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            oom_killed: false,
        };
        self.containers.insert(
            spec.id.clone(),
            Container {
                state,
                log,
                outputs,
                stdin: stdin_w,
                stdin_once: spec.stdin_once,
                tty: spec.tty,
                console,
                attachers: Vec::new(),
            },
        );
        Ok(Reply::Created { pid: created.pid })
    }

    fn start(&mut self, id: &str) -> Result<Reply, String> {
        self.known(id)?;
        self.rt.start(id)?;
        let c = self.containers.get_mut(id).expect("known");
        if c.state.status == Status::Created {
            c.state.status = Status::Running;
            c.state.started_at = now_ns();
        }
        Ok(Reply::Done)
    }

    fn delete(&mut self, id: &str, force: bool) -> Result<Reply, String> {
        let c = self.known(id)?;
        if c.state.status != Status::Exited && !force {
            return Err(format!(
                "container {id:?}: cannot delete container that is not stopped: running"
            ));
        }
        self.rt
            .delete(id, force || c.state.status == Status::Exited)?;
        if let Some(mut c) = self.containers.remove(id) {
            flush_outputs(&mut c);
        }
        let _ = fs::remove_file(self.exit_file(id));
        Ok(Reply::Done)
    }

    fn reopen_log(&mut self, id: &str) -> Result<Reply, String> {
        self.known(id)?;
        let c = self.containers.get_mut(id).expect("known");
        if let Some(log) = &mut c.log {
            log.reopen()
                .map_err(|e| format!("container {id:?}: reopen {}: {e}", log.path().display()))?;
        }
        Ok(Reply::Done)
    }

    fn shutdown(&mut self) -> Result<Reply, String> {
        self.stop_pause();
        self.shutting_down = true;
        Ok(Reply::Done)
    }

    fn exec_sync(
        &mut self,
        spec: &ExecSyncSpec,
        stream: UnixStream,
    ) -> Result<(), (UnixStream, String)> {
        let fail = |stream, e: String| Err((stream, e));
        if let Err(e) = self.known(&spec.id) {
            return fail(stream, e);
        }
        let process = match self.rt.exec_process(
            &spec.id,
            &ProcessOverrides {
                args: spec.cmd.clone(),
                ..Default::default()
            },
        ) {
            Ok(p) => p,
            Err(e) => return fail(stream, e),
        };
        let mut stdio = Stdio::default();
        let mut outputs = Vec::new();
        for (i, slot) in [&mut stdio.stdout, &mut stdio.stderr]
            .into_iter()
            .enumerate()
        {
            match nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK) {
                Ok((r, w)) => {
                    let _ = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()));
                    *slot = Some(w);
                    outputs.push((r, i));
                }
                Err(e) => return fail(stream, e.to_string()),
            }
        }
        match nix::fcntl::open(
            "/dev/null",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(fd) => stdio.stdin = Some(fd),
            Err(e) => return fail(stream, e.to_string()),
        }
        let opts = exec_options(&spec.id, process, None, stdio);
        let pid = match self.rt.exec(&opts) {
            Ok(e) => e.pid,
            Err(e) => return fail(stream, e),
        };
        drop(opts);
        self.execs.push(ExecSession {
            pid,
            outputs,
            bufs: [Vec::new(), Vec::new()],
            deadline: (spec.timeout_ms > 0)
                .then(|| Instant::now() + Duration::from_millis(spec.timeout_ms)),
            exit: None,
            timed_out: false,
            reply_to: stream,
        });
        Ok(())
    }

    fn read_output(&mut self, id: &str, j: usize) {
        let Some(c) = self.containers.get_mut(id).filter(|c| j < c.outputs.len()) else {
            return;
        };
        let mut buf = [0u8; READ_CHUNK];
        loop {
            let n = match nix::unistd::read(&c.outputs[j].fd, &mut buf) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                // A pty master reads EIO once the last process holding the slave is gone.
                Err(_) => 0,
            };
            let Container {
                log,
                outputs,
                attachers,
                ..
            } = c;
            let o = &mut outputs[j];
            let mut text = Vec::new();
            let stamp = crilog::now();
            let mut emit = |e: crilog::Entry<'_>| crilog::format_entry(&stamp, &e, &mut text);
            if n == 0 {
                o.splitter.finish(&mut emit);
                write_log(log, &text);
                outputs.remove(j);
                if outputs.is_empty() {
                    // The container's output has ended: so have its attach sessions.
                    for a in attachers.drain(..) {
                        a.finish();
                    }
                }
                return;
            }
            o.splitter.feed(&buf[..n], &mut emit);
            write_log(log, &text);
            for a in attachers.iter_mut() {
                a.send(o.stream, &buf[..n]);
            }
        }
    }

    /// An attached client's socket is writable (flush) or readable (it left: EOF).
    fn service_attacher(&mut self, id: &str, k: usize) {
        let Some(a) = self
            .containers
            .get_mut(id)
            .and_then(|c| c.attachers.get_mut(k))
        else {
            return;
        };
        a.flush();
        let mut buf = [0u8; 512];
        loop {
            match a.conn.read(&mut buf) {
                // Clients send nothing after the request; the end of their stream is leaving.
                Ok(0) => {
                    a.broken = true;
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    a.broken = true;
                    return;
                }
            }
        }
    }

    /// An interactive exec's connection is readable: at its end the client is gone, and
    /// the process goes with everything it started.
    fn check_session(&mut self, i: usize) {
        let Some(s) = self.sessions.get_mut(i) else {
            return;
        };
        let mut buf = [0u8; 512];
        let gone = loop {
            match s.conn.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        if gone {
            s.gone = true;
            if s.exit.is_none() {
                let _ = nix::sys::signal::killpg(Pid::from_raw(s.pid), Signal::SIGKILL);
                let _ = nix::sys::signal::kill(Pid::from_raw(s.pid), Signal::SIGKILL);
            }
        }
    }

    /// Tells each interactive exec's client that its process exited, and forgets it.
    fn finish_sessions(&mut self) {
        let mut i = 0;
        while i < self.sessions.len() {
            let s = &self.sessions[i];
            if s.exit.is_none() {
                i += 1;
                continue;
            }
            let s = self.sessions.swap_remove(i);
            if !s.gone {
                respond(
                    s.conn,
                    Ok(Reply::ExecExited {
                        exit_code: s.exit.unwrap_or(-1),
                    }),
                );
            }
        }
    }

    fn exec(
        &mut self,
        spec: &ExecSpec,
        stream: UnixStream,
        mut fds: Vec<OwnedFd>,
    ) -> Result<(), (UnixStream, String)> {
        let id = spec.id.as_str();
        match self.known(id) {
            Ok(c) if c.state.status == Status::Running => {}
            Ok(_) => {
                return Err((
                    stream,
                    format!("container {id:?}: container is not running"),
                ))
            }
            Err(e) => return Err((stream, e)),
        }
        let want = if spec.tty {
            0
        } else {
            [spec.stdin, spec.stdout, spec.stderr]
                .iter()
                .filter(|w| **w)
                .count()
        };
        if fds.len() != want {
            return Err((
                stream,
                format!(
                    "container {id:?}: exec: {} descriptors came with the request, {want} expected",
                    fds.len()
                ),
            ));
        }
        let process = match self.rt.exec_process(
            id,
            &ProcessOverrides {
                args: spec.cmd.clone(),
                terminal: spec.tty,
                ..Default::default()
            },
        ) {
            Ok(p) => p,
            Err(e) => return Err((stream, e)),
        };
        let null = |flags| {
            nix::fcntl::open(
                "/dev/null",
                flags | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| format!("open /dev/null: {e}"))
        };
        let mut stdio = Stdio::default();
        if !spec.tty {
            let mut take = |wanted: bool, flags| -> Result<OwnedFd, String> {
                if wanted {
                    Ok(fds.remove(0))
                } else {
                    null(flags)
                }
            };
            let r = (|| -> Result<(), String> {
                stdio.stdin = Some(take(spec.stdin, OFlag::O_RDONLY)?);
                stdio.stdout = Some(take(spec.stdout, OFlag::O_WRONLY)?);
                stdio.stderr = Some(take(spec.stderr, OFlag::O_WRONLY)?);
                Ok(())
            })();
            if let Err(e) = r {
                return Err((stream, e));
            }
        }
        let opts = exec_options(
            id,
            process,
            spec.tty.then_some(ConsoleTarget::Return),
            stdio,
        );
        let execed = match self.rt.exec(&opts) {
            Ok(e) => e,
            Err(e) => return Err((stream, e)),
        };
        // The process holds its stdio now; the shim keeps no copy.
        drop(opts);
        let master: Vec<BorrowedFd<'_>> = execed.console_master.iter().map(|m| m.as_fd()).collect();
        respond_with(&stream, Ok(Reply::ExecStarted { pid: execed.pid }), &master);
        drop(master);
        let _ = stream.set_nonblocking(true);
        self.sessions.push(Session {
            pid: execed.pid,
            conn: stream,
            exit: None,
            gone: false,
        });
        Ok(())
    }

    fn attach(
        &mut self,
        id: &str,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        stream: UnixStream,
    ) -> Result<(), (UnixStream, String)> {
        let c = match self.containers.get_mut(id) {
            Some(c) => c,
            None => {
                return Err((
                    stream,
                    format!("container {id:?}: container does not exist"),
                ))
            }
        };
        let dup = if c.tty {
            c.console.as_ref().map(nix::unistd::dup).transpose()
        } else if stdin && c.stdin_once && c.stdin.is_some() {
            // The attach gets the only copy: when it lets go, the container reads EOF.
            Ok(c.stdin.take())
        } else if stdin {
            match &c.stdin {
                Some(w) => nix::unistd::dup(w).map(Some),
                None if c.stdin_once => {
                    return Err((
                        stream,
                        format!(
                            "container {id:?}: attach: its stdin was closed after its first \
                             attach (stdinOnce)"
                        ),
                    ))
                }
                None => {
                    return Err((
                        stream,
                        format!("container {id:?}: attach: the container was made without stdin"),
                    ))
                }
            }
        } else {
            Ok(None)
        };
        let dup = match dup {
            Ok(d) => d,
            Err(e) => return Err((stream, format!("container {id:?}: attach: dup: {e}"))),
        };
        let fds: Vec<BorrowedFd<'_>> = dup.iter().map(|d| d.as_fd()).collect();
        respond_with(&stream, Ok(Reply::Attached { tty: c.tty }), &fds);
        drop(fds);
        drop(dup);
        if c.outputs.is_empty() {
            // Already ended: closing says so.
            return Ok(());
        }
        let _ = stream.set_nonblocking(true);
        c.attachers.push(Attacher {
            conn: stream,
            stdout,
            stderr: stderr && !c.tty,
            pending: Vec::new(),
            broken: false,
        });
        Ok(())
    }

    fn read_exec_output(&mut self, i: usize, j: usize) {
        let Some(e) = self.execs.get_mut(i) else {
            return;
        };
        let Some((fd, which)) = e.outputs.get(j) else {
            return;
        };
        let which = *which;
        let mut buf = [0u8; READ_CHUNK];
        loop {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) | Err(Errno::EIO) => {
                    e.outputs.remove(j);
                    return;
                }
                Ok(n) => {
                    let room = EXEC_OUTPUT_LIMIT.saturating_sub(e.bufs[which].len());
                    e.bufs[which].extend_from_slice(&buf[..n.min(room)]);
                }
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    e.outputs.remove(j);
                    return;
                }
            }
        }
    }

    fn handle_signals(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => {
                    // An administrator's stop: the pod ends whole, containers included.
                    eprintln!(
                        "berth-shim: pod {}: signalled; ending the pod and its containers",
                        self.pod
                    );
                    let ids: Vec<String> = self.containers.keys().cloned().collect();
                    for id in ids {
                        if let Err(e) = self.delete(&id, true) {
                            eprintln!("berth-shim: {e}");
                            self.containers.remove(&id);
                        }
                    }
                    let _ = self.shutdown();
                }
                _ => {}
            }
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.exited(pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.exited(pid.as_raw(), 128 + sig as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn exited(&mut self, pid: i32, code: i32) {
        if self.pause == Some(pid) {
            eprintln!("berth-shim: pod {}: the pause exited ({code})", self.pod);
            self.pause = None;
            return;
        }
        for e in &mut self.execs {
            if e.pid == pid {
                e.exit = Some(code);
                return;
            }
        }
        for s in &mut self.sessions {
            if s.pid == pid {
                s.exit = Some(code);
                return;
            }
        }
        let Some(id) = self
            .containers
            .iter()
            .find(|(_, c)| c.state.pid == pid && c.state.status != Status::Exited)
            .map(|(id, _)| id.clone())
        else {
            return;
        };
        let oom = self.rt.oom_killed(&id);
        let path = self.exit_file(&id);
        let c = self.containers.get_mut(&id).expect("found");
        c.state.status = Status::Exited;
        c.state.exit_code = code;
        c.state.finished_at = now_ns();
        c.state.oom_killed = oom;
        let data = serde_json::to_vec(&c.state).expect("state serializes");
        if let Err(e) = write_atomic(&path, &data) {
            eprintln!("berth-shim: container {id}: record its exit: {e}");
        }
    }

    fn exit_file(&self, id: &str) -> PathBuf {
        self.dir.join("exits").join(format!("{id}.json"))
    }

    fn check_exec_deadlines(&mut self) {
        let now = Instant::now();
        for e in &mut self.execs {
            if e.exit.is_none() && !e.timed_out && e.deadline.is_some_and(|d| now >= d) {
                e.timed_out = true;
                // The exec'd process leads its own process group (libberth makes it a
                // session leader): what it started goes with it.
                let _ = nix::sys::signal::killpg(Pid::from_raw(e.pid), Signal::SIGKILL);
                let _ = nix::sys::signal::kill(Pid::from_raw(e.pid), Signal::SIGKILL);
            }
        }
    }

    /// Replies to every Wait whose container has exited (or is gone), or whose deadline
    /// has passed, with the container's state.
    fn finish_waits(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.waiters.len() {
            let w = &self.waiters[i];
            let reply = match self.containers.get(&w.id) {
                None => Some(Err(format!(
                    "container {:?}: container does not exist",
                    w.id
                ))),
                Some(c) if c.state.status == Status::Exited => {
                    Ok(Reply::State(c.state.clone())).into()
                }
                Some(c) if w.deadline.is_some_and(|d| now >= d) => {
                    Ok(Reply::State(c.state.clone())).into()
                }
                Some(_) => None,
            };
            match reply {
                Some(r) => {
                    let w = self.waiters.swap_remove(i);
                    respond(w.reply_to, r);
                }
                None => i += 1,
            }
        }
    }

    /// Replies to every ExecSync whose process has exited and whose output is read.
    fn finish_execs(&mut self) {
        let mut i = 0;
        while i < self.execs.len() {
            let e = &self.execs[i];
            if e.exit.is_none() || !(e.outputs.is_empty() || e.timed_out) {
                i += 1;
                continue;
            }
            let e = self.execs.swap_remove(i);
            let b64 = base64::engine::general_purpose::STANDARD;
            let reply = ExecSyncReply {
                exit_code: e.exit.unwrap_or(-1),
                stdout: b64.encode(&e.bufs[0]),
                stderr: b64.encode(&e.bufs[1]),
                timed_out: e.timed_out,
            };
            respond(e.reply_to, Ok(Reply::ExecSync(reply)));
        }
    }
}

enum Source {
    Listener,
    Signals,
    Conn(usize),
    Output(String, usize),
    ExecOutput(usize, usize),
    Session(usize),
    Attacher(String, usize),
}

/// A reply line with descriptors attached.
fn respond_with(stream: &UnixStream, r: Result<Reply, String>, fds: &[BorrowedFd<'_>]) {
    let resp = match r {
        Ok(reply) => Response::Ok(reply),
        Err(e) => Response::Error(e),
    };
    let mut line = serde_json::to_vec(&resp).expect("responses serialize");
    line.push(b'\n');
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let _ = fdpass::send(stream.as_fd(), &line, fds);
}

fn respond(stream: UnixStream, r: Result<Reply, String>) {
    respond_with(&stream, r, &[]);
}

fn write_log(log: &mut Option<LogFile>, text: &[u8]) {
    if let (Some(l), false) = (log.as_mut(), text.is_empty()) {
        if let Err(e) = l.write(text) {
            eprintln!("berth-shim: write {}: {e}", l.path().display());
        }
    }
}

/// An exec into container `id` as the shim makes them: its own session (process group),
/// so that a deadline or a client leaving kills what it started too.
fn exec_options(
    id: &str,
    process: oci_spec::runtime::Process,
    console: Option<ConsoleTarget>,
    stdio: Stdio,
) -> ExecOptions {
    ExecOptions {
        id: id.to_string(),
        process,
        console,
        pid_file: None,
        preserve_fds: 0,
        ignore_paused: false,
        sub_cgroups: Vec::new(),
        stdio,
        new_session: true,
    }
}

/// Gives back the pages of the main thread's stack below the current frame: a create
/// runs deep in libberth once, and an idle shim need not keep what it touched.
fn release_dead_stack() {
    let here = 0u8;
    let sp = std::ptr::addr_of!(here) as usize;
    let Ok(maps) = fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let Some(low) = maps.lines().find(|l| l.ends_with("[stack]")).and_then(|l| {
        let (range, _) = l.split_once(' ')?;
        usize::from_str_radix(range.split_once('-')?.0, 16).ok()
    }) else {
        return;
    };
    // Keep the current frame's page and the one below it (callees of this function, the
    // signal-free red zone); everything lower is dead.
    let page = 4096;
    let top = (sp & !(page - 1)).saturating_sub(2 * page);
    if top > low {
        // SAFETY: [low, top) lies in this thread's stack mapping below the stack pointer,
        // where no live frame is; MADV_DONTNEED makes those pages read back as zeroes.
        unsafe { libc::madvise(low as *mut libc::c_void, top - low, libc::MADV_DONTNEED) };
    }
}

/// Whatever a deleted container's streams still hold goes to its log.
fn flush_outputs(c: &mut Container) {
    let stamp = crilog::now();
    for o in &mut c.outputs {
        let mut buf = [0u8; READ_CHUNK];
        let mut text = Vec::new();
        while let Ok(n) = nix::unistd::read(&o.fd, &mut buf) {
            if n == 0 {
                break;
            }
            o.splitter.feed(&buf[..n], &mut |e| {
                crilog::format_entry(&stamp, &e, &mut text)
            });
        }
        o.splitter
            .finish(&mut |e| crilog::format_entry(&stamp, &e, &mut text));
        write_log(&mut c.log, &text);
    }
    c.outputs.clear();
}

/// Temp file, fsync, rename: a crash leaves the old record or the new one.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}
