//! Exec, attach and port-forward: berth-stream speaks the clients' protocols, this module
//! connects its streams to the pod's shim.
//!
//! - **Exec**: berthd makes the command's pipes (or the shim sends back its pty master) and
//!   copies between them and the client; the shim only starts, reaps and reports. The shim
//!   connection stays open for the command's life: dropping it (the client left) makes the
//!   shim kill the command and what it started.
//! - **Attach**: the shim sends the container's stdin (or pty master) and streams its output
//!   as frames beside the log.
//! - **Port-forward**: a TCP connection opened to `127.0.0.1:<port>` from a thread that
//!   entered the pod's network namespace (a thread of its own: the namespace is a thread's).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use berth_shim::protocol::FRAME_HEADER;
use berth_shim::{ExecSpec, Reply, Session};
use berth_stream::{AttachRequest, ExecRequest, Outcome, Runtime, StreamIo, TerminalSize};
use nix::fcntl::OFlag;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::engine::Engine;

/// How long an exec's output may still flow after the command exited.
const OUTPUT_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// A non-blocking pipe end or pty master as a tokio stream. A pty master's EIO (the last
/// process holding the terminal is gone) reads as the end of the stream.
pub struct FdStream(AsyncFd<OwnedFd>);

impl FdStream {
    pub fn new(fd: OwnedFd) -> io::Result<FdStream> {
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        // SAFETY: the AsyncFd owns `fd` (an OwnedFd) for its whole life: nothing else can
        // close it or put another file at its number while it is registered.
        let registered = unsafe { AsyncFd::register(fd) }?;
        Ok(FdStream(registered))
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard
                .try_io(|fd| nix::unistd::read(fd.get_ref(), unfilled).map_err(io::Error::from))
            {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Sets a terminal's size on its master.
fn resize(master: &OwnedFd, size: TerminalSize) {
    let ws = libc::winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which points to a live local;
    // the descriptor is a pty master this process owns.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// The shim's connection as a tokio stream.
fn async_conn(s: std::os::unix::net::UnixStream) -> io::Result<tokio::net::UnixStream> {
    s.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(s)
}

/// Copies `from` into `to` until `from` ends, then closes `to` (the other side's EOF).
async fn pump<R, W>(mut from: R, mut to: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.shutdown().await;
}

/// berth-stream's embedder: exec, attach and port-forward on the engine's pods.
pub struct Streams {
    pub engine: Arc<Engine>,
}

impl Streams {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> crate::error::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let e = self.engine.clone();
        match tokio::task::spawn_blocking(move || f(&e)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the call panicked: {e}")),
        }
    }
}

impl Runtime for Streams {
    type Conn = tokio::net::TcpStream;

    async fn exec(&self, req: ExecRequest, mut io: StreamIo) -> Outcome {
        // Our ends and the command's, for those streams the request has (no terminal).
        let mut mine: Vec<Option<OwnedFd>> = vec![None, None, None];
        let mut theirs: Vec<OwnedFd> = Vec::new();
        if !req.tty {
            for (i, wanted) in [req.stdin, req.stdout, req.stderr].into_iter().enumerate() {
                if !wanted {
                    continue;
                }
                let (r, w) = match pipe() {
                    Ok(p) => p,
                    Err(e) => return Outcome::Failed(format!("exec: pipe: {e}")),
                };
                // stdin: the command reads; stdout, stderr: it writes.
                let (ours, its) = if i == 0 { (w, r) } else { (r, w) };
                mine[i] = Some(ours);
                theirs.push(its);
            }
        }
        let spec = ExecSpec {
            id: req.container_id.clone(),
            cmd: req.cmd.clone(),
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        };
        let session = match self.blocking(move |e| e.open_exec(spec, theirs)).await {
            Ok(s) => s,
            Err(e) => return Outcome::Failed(e),
        };
        let Session {
            stream,
            fds,
            leftover,
            ..
        } = session;
        // Output is read to its end before the status goes out; input stops at the exit.
        let mut tasks = tokio::task::JoinSet::new();
        let mut inputs = tokio::task::JoinSet::new();
        let mut master = None;
        if req.tty {
            let Some(m) = fds.into_iter().next() else {
                return Outcome::Failed("exec: the shim sent no terminal".into());
            };
            let out = match m.try_clone().and_then(FdStream::new) {
                Ok(s) => s,
                Err(e) => return Outcome::Failed(format!("exec: terminal: {e}")),
            };
            if let Some(stdout) = io.stdout.take() {
                tasks.spawn(pump(out, stdout));
            }
            if let Some(stdin) = io.stdin.take() {
                match m.try_clone().and_then(FdStream::new) {
                    Ok(input) => {
                        inputs.spawn(async move {
                            let mut input = input;
                            let mut stdin = stdin;
                            let _ = tokio::io::copy(&mut stdin, &mut input).await;
                        });
                    }
                    Err(e) => return Outcome::Failed(format!("exec: terminal: {e}")),
                }
            }
            master = Some(m);
        } else {
            if let (Some(stdin), Some(w)) = (io.stdin.take(), mine[0].take()) {
                match FdStream::new(w) {
                    Ok(w) => {
                        inputs.spawn(pump(stdin, w));
                    }
                    Err(e) => return Outcome::Failed(format!("exec: stdin: {e}")),
                }
            }
            for (slot, out) in [(1, io.stdout.take()), (2, io.stderr.take())] {
                if let (Some(out), Some(r)) = (out, mine[slot].take()) {
                    match FdStream::new(r) {
                        Ok(r) => {
                            tasks.spawn(pump(r, out));
                        }
                        Err(e) => return Outcome::Failed(format!("exec: output: {e}")),
                    }
                }
            }
        }
        let mut resize_rx = io.resize.take();
        let resizer = async {
            if let (Some(rx), Some(m)) = (resize_rx.as_mut(), master.as_ref()) {
                while let Some(size) = rx.recv().await {
                    resize(m, size);
                }
            }
            std::future::pending::<()>().await
        };
        // The shim's last word: ExecExited with the code, then the connection closes.
        let mut conn = match async_conn(stream) {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(format!("exec: {e}")),
        };
        let exited = async {
            let mut text = leftover;
            let _ = conn.read_to_end(&mut text).await;
            text
        };
        let mut gone = io.client_gone;
        let text = tokio::select! {
            t = exited => t,
            _ = resizer => unreachable!(),
            _ = gone.wait() => {
                // Dropping the shim's connection (with this future) kills the command.
                tasks.abort_all();
                inputs.abort_all();
                return Outcome::Failed("the client went away".into());
            }
        };
        inputs.abort_all();
        // What the command left in its pipes comes out; a process it left behind holding
        // them open does not keep the session (its status) waiting past a moment.
        let drained = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(OUTPUT_DRAIN, drained).await.is_err() {
            tasks.abort_all();
        }
        let line = text.split(|&b| b == b'\n').find(|l| !l.is_empty());
        match line.map(serde_json::from_slice::<berth_shim::protocol::Response>) {
            Some(Ok(berth_shim::protocol::Response::Ok(Reply::ExecExited { exit_code }))) => {
                Outcome::Exited(exit_code)
            }
            Some(Ok(other)) => Outcome::Failed(format!("exec: the shim said {other:?}")),
            Some(Err(e)) => Outcome::Failed(format!("exec: the shim's reply: {e}")),
            None => Outcome::Failed("exec: the shim closed without the exit code".into()),
        }
    }

    async fn attach(&self, req: AttachRequest, mut io: StreamIo) -> Outcome {
        let id = req.container_id.clone();
        let (stdin, stdout, stderr) = (req.stdin, req.stdout, req.stderr);
        let session = match self
            .blocking(move |e| e.open_attach(&id, stdin, stdout, stderr))
            .await
        {
            Ok(s) => s,
            Err(e) => return Outcome::Failed(e),
        };
        let tty = matches!(session.reply, Reply::Attached { tty: true });
        let input = session.fds.into_iter().next();
        let mut tasks = tokio::task::JoinSet::new();
        if let (Some(stdin), Some(fd)) = (io.stdin.take(), input.as_ref()) {
            match fd.try_clone().and_then(FdStream::new) {
                Ok(w) => {
                    tasks.spawn(async move {
                        let (mut stdin, mut w) = (stdin, w);
                        let _ = tokio::io::copy(&mut stdin, &mut w).await;
                    });
                }
                Err(e) => return Outcome::Failed(format!("attach: stdin: {e}")),
            }
        }
        let mut resize_rx = io.resize.take();
        let master = input.filter(|_| tty);
        let resizer = async {
            if let (Some(rx), Some(m)) = (resize_rx.as_mut(), master.as_ref()) {
                while let Some(size) = rx.recv().await {
                    resize(m, size);
                }
            }
            std::future::pending::<()>().await
        };
        let mut conn = match async_conn(session.stream) {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(format!("attach: {e}")),
        };
        let (mut out, mut err) = (io.stdout.take(), io.stderr.take());
        let mut leftover = session.leftover;
        let frames = async {
            let mut buf = std::mem::take(&mut leftover);
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                while buf.len() >= FRAME_HEADER {
                    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                    if buf.len() < FRAME_HEADER + len {
                        break;
                    }
                    let body = &buf[FRAME_HEADER..FRAME_HEADER + len];
                    let sink = if buf[0] == 2 {
                        err.as_mut()
                    } else {
                        out.as_mut()
                    };
                    if let Some(s) = sink {
                        let _ = s.write_all(body).await;
                    }
                    buf.drain(..FRAME_HEADER + len);
                }
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        };
        let mut gone = io.client_gone;
        tokio::select! {
            _ = frames => {}
            _ = resizer => unreachable!(),
            _ = gone.wait() => {
                tasks.abort_all();
                return Outcome::Failed("the client went away".into());
            }
        }
        tasks.abort_all();
        // The container ended: its exit code is the session's.
        let id = req.container_id.clone();
        match self
            .blocking(move |e| e.container_status(&id, false).map(|(s, _)| s.exit_code))
            .await
        {
            Ok(code) => Outcome::Exited(code),
            Err(_) => Outcome::Exited(0),
        }
    }

    async fn port_forward(&self, pod_sandbox_id: &str, port: u16) -> io::Result<Self::Conn> {
        let pod = pod_sandbox_id.to_string();
        let netns = self
            .blocking(move |e| e.pod_netns(&pod))
            .await
            .map_err(io::Error::other)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // A thread of its own: entering a network namespace is for the thread's life.
        std::thread::spawn(move || {
            let r = (|| -> io::Result<std::net::TcpStream> {
                if let Some(ns) = &netns {
                    let f = std::fs::File::open(ns)?;
                    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
                }
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10))
            })();
            let _ = tx.send(r);
        });
        let s = rx
            .await
            .map_err(|_| io::Error::other("the dialing thread died"))??;
        s.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(s)
    }
}
