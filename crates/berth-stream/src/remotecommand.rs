//! Exec and attach: the request kinds, running the embedder's side with cancellation, and
//! the SPDY form of the protocol (one stream per `streamType`).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::io::{pipes, Pipes, ResizeParser, StreamIo};
use crate::server::Inner;
use crate::spdy::conn::{Connection, RecvHalf, SendHalf, Stream};
use crate::{status, AttachRequest, ExecRequest, Outcome, Runtime};

/// Bytes read from the embedder's output per message.
pub(crate) const OUTPUT_CHUNK: usize = 32 * 1024;

/// An exec or attach request.
#[derive(Debug, Clone)]
pub(crate) enum Command {
    Exec(ExecRequest),
    Attach(AttachRequest),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Flags {
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

impl Command {
    pub fn flags(&self) -> Flags {
        match self {
            Command::Exec(r) => Flags {
                tty: r.tty,
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
            },
            Command::Attach(r) => Flags {
                tty: r.tty,
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
            },
        }
    }
}

/// Runs the embedder's side of `cmd`. When the client goes away first, the embedder sees
/// [`crate::ClientGone`] and has `grace` to return; then its future is dropped.
pub(crate) async fn run_command<R: Runtime>(
    runtime: Arc<R>,
    cmd: Command,
    io: StreamIo,
    mut gone: watch::Receiver<bool>,
    grace: Duration,
) -> Outcome {
    let mut task = tokio::spawn(async move {
        match cmd {
            Command::Exec(r) => runtime.exec(r, io).await,
            Command::Attach(r) => runtime.attach(r, io).await,
        }
    });
    let joined = tokio::select! {
        r = &mut task => r,
        _ = crate::io::wait_gone(&mut gone) => match tokio::time::timeout(grace, &mut task).await {
            Ok(r) => r,
            Err(_) => {
                task.abort();
                return Outcome::Failed("the client went away and the command did not end".into());
            }
        },
    };
    joined.unwrap_or_else(|e| Outcome::Failed(format!("the runtime failed: {e}")))
}

/// Copies what the embedder writes to `out` into messages for `send`, then `finish`.
pub(crate) async fn pump_output<F, Fut, G, GFut>(mut out: DuplexStream, mut send: F, finish: G)
where
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = bool>,
    G: FnOnce() -> GFut,
    GFut: std::future::Future<Output = ()>,
{
    loop {
        let mut buf = BytesMut::zeroed(OUTPUT_CHUNK);
        match out.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.truncate(n);
                if !send(buf.freeze()).await {
                    // The client is gone: dropping `out` fails the embedder's writes.
                    return;
                }
            }
        }
    }
    finish().await;
}

/// Copies stdin from `next` into the embedder's pipe; EOF when `next` ends.
pub(crate) async fn pump_stdin(mut recv: RecvHalf, mut pipe: DuplexStream) {
    while let Some(b) = recv.recv().await {
        if pipe.write_all(&b).await.is_err() {
            return;
        }
    }
    let _ = pipe.shutdown().await;
}

/// Feeds resize messages to the embedder.
async fn pump_resize(mut recv: RecvHalf, tx: crate::io::ResizeSender) {
    let mut parser = ResizeParser::default();
    while let Some(b) = recv.recv().await {
        for size in parser.push(&b) {
            tx.push(size);
        }
    }
}

/// Waits for the output pumps to end, at most `limit`; the late ones are stopped.
pub(crate) async fn drain(pumps: Vec<JoinHandle<()>>, limit: Duration) {
    let deadline = Instant::now() + limit;
    for mut p in pumps {
        if tokio::time::timeout_at(deadline, &mut p).await.is_err() {
            p.abort();
        }
    }
}

#[derive(Default)]
struct Streams {
    error: Option<(RecvHalf, SendHalf)>,
    stdin: Option<(RecvHalf, SendHalf)>,
    stdout: Option<(RecvHalf, SendHalf)>,
    stderr: Option<(RecvHalf, SendHalf)>,
    resize: Option<(RecvHalf, SendHalf)>,
}

impl Streams {
    fn slot(&mut self, kind: &str) -> Option<&mut Option<(RecvHalf, SendHalf)>> {
        match kind {
            "error" => Some(&mut self.error),
            "stdin" => Some(&mut self.stdin),
            "stdout" => Some(&mut self.stdout),
            "stderr" => Some(&mut self.stderr),
            "resize" => Some(&mut self.resize),
            _ => None,
        }
    }
}

/// Which streams a request implies (the kubelet's count).
struct Expected {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    resize: bool,
}

impl Expected {
    fn met(&self, s: &Streams) -> bool {
        s.error.is_some()
            && (!self.stdin || s.stdin.is_some())
            && (!self.stdout || s.stdout.is_some())
            && (!self.stderr || s.stderr.is_some())
            && (!self.resize || s.resize.is_some())
    }
}

/// Accepts `s` into its slot (replying) or resets it.
async fn take(streams: &mut Streams, s: Stream) {
    let kind = s.header("streamtype").unwrap_or("").to_ascii_lowercase();
    let (r, w) = s.split();
    match streams.slot(&kind) {
        Some(slot) if slot.is_none() => {
            if w.reply().await.is_ok() {
                *slot = Some((r, w));
            }
        }
        _ => w.reset(crate::spdy::frame::rst::PROTOCOL_ERROR).await,
    }
}

/// Serves exec or attach over SPDY with subprotocol `protocol`.
pub(crate) async fn serve_spdy<R, IO>(
    inner: Arc<Inner<R>>,
    io: IO,
    protocol: &'static str,
    cmd: Command,
) where
    R: Runtime,
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let cfg = &inner.cfg;
    let (conn, mut incoming) = Connection::start(io, cfg.spdy.clone());
    let f = cmd.flags();
    let v4 = protocol == "v4.channel.k8s.io";
    let resizable = v4 || protocol == "v3.channel.k8s.io";
    let expected = Expected {
        stdin: f.stdin,
        stdout: f.stdout,
        stderr: f.stderr && !f.tty,
        resize: f.tty && resizable,
    };
    let mut streams = Streams::default();
    let deadline = Instant::now() + cfg.stream_creation_timeout;
    while !expected.met(&streams) {
        match tokio::time::timeout_at(deadline, incoming.recv()).await {
            Ok(Some(s)) => take(&mut streams, s).await,
            // Gone before it asked for anything, or too slow to: nothing was started.
            Ok(None) | Err(_) => {
                conn.close(cfg.linger).await;
                return;
            }
        }
    }
    // Streams the client opens later are answered and ignored.
    tokio::spawn(hold_extra_streams(incoming));

    let (io, p) = pipes(
        expected.stdin,
        expected.stdout,
        expected.stderr,
        f.tty && streams.resize.is_some(),
        conn.gone(),
    );
    let Pipes {
        stdin,
        stdout,
        stderr,
        resize,
    } = p;
    if let (Some(pipe), Some((r, _))) = (stdin, streams.stdin.take()) {
        tokio::spawn(pump_stdin(r, pipe));
    }
    if let (Some(tx), Some((r, _))) = (resize, streams.resize.take()) {
        tokio::spawn(pump_resize(r, tx));
    }
    let mut pumps = Vec::new();
    for (pipe, stream) in [
        (stdout, streams.stdout.take()),
        (stderr, streams.stderr.take()),
    ] {
        if let (Some(pipe), Some((_, w))) = (pipe, stream) {
            pumps.push(tokio::spawn(spdy_output(pipe, w)));
        }
    }
    let outcome = run_command(
        inner.runtime.clone(),
        cmd,
        io,
        conn.gone(),
        cfg.cancel_grace,
    )
    .await;
    drain(pumps, cfg.drain_timeout).await;
    if let Some((_, w)) = streams.error.take() {
        let msg = if v4 {
            Some(status::v4(&outcome))
        } else {
            status::text(&outcome)
        };
        if let Some(msg) = msg {
            let _ = w.send(Bytes::from(msg)).await;
        }
        let _ = w.finish().await;
    }
    conn.close(cfg.linger).await;
}

async fn spdy_output(pipe: DuplexStream, w: SendHalf) {
    let w2 = w.clone();
    pump_output(
        pipe,
        move |b| {
            let w = w.clone();
            async move { w.send(b).await.is_ok() }
        },
        move || async move {
            let _ = w2.finish().await;
        },
    )
    .await;
}

/// Answers streams opened after the expected ones and keeps them open until the
/// connection ends (an old client may open stderr with a tty).
pub(crate) async fn hold_extra_streams(mut incoming: mpsc::Receiver<Stream>) {
    let mut held = Vec::new();
    while let Some(s) = incoming.recv().await {
        let (_r, w) = s.split();
        if w.reply().await.is_ok() {
            held.push(w);
        }
    }
}
