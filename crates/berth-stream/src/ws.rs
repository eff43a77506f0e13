//! The WebSocket forms of exec, attach and port-forward.
//!
//! Every message carries one channel: its first byte is the channel number (binary
//! protocols), or its first character is the number as an ASCII digit and the rest is
//! base64 (`base64.` protocols). Exec and attach use channels 0 stdin, 1 stdout, 2 stderr,
//! 3 error (the status), 4 resize; `v5.channel.k8s.io` adds 255, a client's signal that it
//! closed the channel named by the next byte (stdin). Port-forward has a data and an error
//! channel per port of the URL's `?port=`, whose first message is the port, little-endian.

use std::sync::Arc;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::io::{pipes, ResizeParser};
use crate::remotecommand::{drain, pump_output, run_command, Command};
use crate::server::Inner;
use crate::{status, PortForwardRequest, Runtime};

/// The largest message or frame accepted from a client.
const MAX_MESSAGE: usize = 1 << 20;
/// Messages waiting for the writer.
const OUT_QUEUE: usize = 32;
/// Bytes read from a pod per message.
const CHUNK: usize = 32 * 1024;
/// The most ports one port-forward URL may name.
pub const MAX_PORTS: usize = 64;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// A WebSocket subprotocol and what it implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsProtocol {
    pub name: &'static str,
    /// Binary messages with a channel byte, or text with a digit and base64.
    pub binary: bool,
    /// The error channel carries a JSON Status (v4 on), not text.
    pub status: bool,
    /// The client may signal that it closed a channel (v5).
    pub close: bool,
}

const fn proto(name: &'static str, binary: bool, status: bool, close: bool) -> WsProtocol {
    WsProtocol {
        name,
        binary,
        status,
        close,
    }
}

/// What exec and attach speak, most preferred first.
pub const EXEC_PROTOCOLS: &[WsProtocol] = &[
    proto("v5.channel.k8s.io", true, true, true),
    proto("v4.channel.k8s.io", true, true, false),
    proto("v4.base64.channel.k8s.io", false, true, false),
    proto("channel.k8s.io", true, false, false),
    proto("base64.channel.k8s.io", false, false, false),
];

/// What port-forward speaks.
pub const PORT_FORWARD_PROTOCOLS: &[WsProtocol] = &[
    proto("portforward.k8s.io", true, false, false),
    proto("v4.channel.k8s.io", true, false, false),
    proto("v4.base64.channel.k8s.io", false, false, false),
    proto("channel.k8s.io", true, false, false),
    proto("base64.channel.k8s.io", false, false, false),
];

impl WsProtocol {
    /// The protocol named `name`; the empty name (a client that offers none) is the binary
    /// channel protocol, as in the kubelet.
    pub fn by_name(name: &str) -> Option<WsProtocol> {
        if name.is_empty() {
            return Some(proto("", true, false, false));
        }
        EXEC_PROTOCOLS
            .iter()
            .chain(PORT_FORWARD_PROTOCOLS)
            .find(|p| p.name == name)
            .copied()
    }

    fn encode(&self, channel: u8, data: &[u8]) -> Message {
        if self.binary {
            let mut b = BytesMut::with_capacity(data.len() + 1);
            b.extend_from_slice(&[channel]);
            b.extend_from_slice(data);
            Message::binary(b.freeze())
        } else {
            let mut s = String::with_capacity(data.len() * 4 / 3 + 8);
            s.push(char::from(b'0' + channel));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
            Message::text(s)
        }
    }

    /// The channel and payload of a client's message; `None` for one that is not data of
    /// this protocol (control messages, the wrong kind, bad base64).
    fn decode(&self, m: Message) -> Option<(u8, Bytes)> {
        match m {
            Message::Binary(b) if self.binary && !b.is_empty() => Some((b[0], b.slice(1..))),
            Message::Text(t) if !self.binary && !t.is_empty() => {
                let t = t.as_str();
                let ch = t.as_bytes()[0].checked_sub(b'0')?;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(&t[1..])
                    .ok()?;
                Some((ch, Bytes::from(data)))
            }
            _ => None,
        }
    }
}

type Sink<IO> = SplitSink<WebSocketStream<IO>, Message>;
type Source<IO> = SplitStream<WebSocketStream<IO>>;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .max_write_buffer_size(4 * MAX_MESSAGE)
}

/// Writes queued messages; when the queue ends, closes the WebSocket.
async fn writer<IO: AsyncRead + AsyncWrite + Unpin>(
    mut sink: Sink<IO>,
    mut rx: mpsc::Receiver<Message>,
    gone: watch::Sender<bool>,
) {
    while let Some(m) = rx.recv().await {
        if sink.send(m).await.is_err() {
            gone.send_replace(true);
            return;
        }
    }
    // A close with a status: clients (gorilla/websocket under kubectl) take a bare one for
    // an error.
    let bye = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(bye))).await;
    let _ = sink.close().await;
}

/// The next data message, or `None` when the client closed, failed or idled out.
async fn next<IO: AsyncRead + AsyncWrite + Unpin>(
    src: &mut Source<IO>,
    p: &WsProtocol,
    idle: std::time::Duration,
) -> Option<Option<(u8, Bytes)>> {
    match tokio::time::timeout(idle, src.next()).await {
        Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => None,
        Ok(Some(Ok(m))) => Some(p.decode(m)),
    }
}

struct Start<IO> {
    src: Source<IO>,
    out: mpsc::Sender<Message>,
    gone_tx: watch::Sender<bool>,
    gone: watch::Receiver<bool>,
    writer: tokio::task::JoinHandle<()>,
}

async fn start<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: IO) -> Start<IO> {
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config())).await;
    let (sink, src) = ws.split();
    let (out, rx) = mpsc::channel(OUT_QUEUE);
    let (gone_tx, gone) = watch::channel(false);
    let writer = tokio::spawn(writer(sink, rx, gone_tx.clone()));
    Start {
        src,
        out,
        gone_tx,
        gone,
        writer,
    }
}

/// Reads the client's side of an exec or attach until it closes.
async fn read_command<IO: AsyncRead + AsyncWrite + Unpin>(
    mut src: Source<IO>,
    p: WsProtocol,
    mut stdin: Option<DuplexStream>,
    resize: Option<crate::io::ResizeSender>,
    idle: std::time::Duration,
) {
    let mut parser = ResizeParser::default();
    while let Some(msg) = next(&mut src, &p, idle).await {
        let Some((ch, data)) = msg else { continue };
        match ch {
            STDIN => {
                if let Some(pipe) = stdin.as_mut() {
                    if pipe.write_all(&data).await.is_err() {
                        stdin = None;
                    }
                }
            }
            RESIZE => {
                if let Some(tx) = &resize {
                    for s in parser.push(&data) {
                        tx.push(s);
                    }
                }
            }
            CLOSE if p.close && data.first() == Some(&STDIN) => {
                if let Some(mut pipe) = stdin.take() {
                    let _ = pipe.shutdown().await;
                }
            }
            _ => {}
        }
    }
}

/// Serves exec or attach over WebSocket.
pub(crate) async fn serve_command<R, IO>(inner: Arc<Inner<R>>, io: IO, p: WsProtocol, cmd: Command)
where
    R: Runtime,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &inner.cfg;
    let Start {
        src,
        out,
        gone_tx,
        gone,
        writer,
    } = start(io).await;
    let f = cmd.flags();
    let (io, pipes) = pipes(f.stdin, f.stdout, f.stderr && !f.tty, f.tty, gone.clone());
    let idle = cfg.spdy.idle_timeout;
    let mut reader = tokio::spawn(async move {
        read_command(src, p, pipes.stdin, pipes.resize, idle).await;
        gone_tx.send_replace(true);
    });
    let mut pumps = Vec::new();
    for (pipe, ch) in [(pipes.stdout, STDOUT), (pipes.stderr, STDERR)] {
        if let Some(pipe) = pipe {
            let out = out.clone();
            pumps.push(tokio::spawn(pump_output(
                pipe,
                move |b| {
                    let out = out.clone();
                    async move { out.send(p.encode(ch, &b)).await.is_ok() }
                },
                || async {},
            )));
        }
    }
    let outcome = run_command(inner.runtime.clone(), cmd, io, gone, cfg.cancel_grace).await;
    drain(pumps, cfg.drain_timeout).await;
    let msg = if p.status {
        Some(status::v4(&outcome))
    } else {
        status::text(&outcome)
    };
    if let Some(msg) = msg {
        let _ = out.send(p.encode(ERROR, &msg)).await;
    }
    finish(out, writer, &mut reader, cfg.linger).await;
}

/// Closes the WebSocket (once everything queued is written) and waits, at most `linger`,
/// for the client's close.
async fn finish(
    out: mpsc::Sender<Message>,
    writer: tokio::task::JoinHandle<()>,
    reader: &mut tokio::task::JoinHandle<()>,
    linger: std::time::Duration,
) {
    drop(out);
    let deadline = tokio::time::Instant::now() + linger;
    let _ = tokio::time::timeout_at(deadline, writer).await;
    if tokio::time::timeout_at(deadline, &mut *reader)
        .await
        .is_err()
    {
        reader.abort();
    }
}

/// Serves port-forward over WebSocket for `ports`.
pub(crate) async fn serve_port_forward<R, IO>(
    inner: Arc<Inner<R>>,
    io: IO,
    p: WsProtocol,
    req: PortForwardRequest,
    ports: Vec<u16>,
) where
    R: Runtime,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &inner.cfg;
    let Start {
        mut src,
        out,
        gone_tx,
        gone,
        writer,
    } = start(io).await;
    let pod: Arc<str> = req.pod_sandbox_id.into();
    let mut to_pods = Vec::with_capacity(ports.len());
    let mut tasks = Vec::with_capacity(ports.len());
    for (i, port) in ports.iter().copied().enumerate() {
        let (data, error) = ((2 * i) as u8, (2 * i + 1) as u8);
        for ch in [data, error] {
            let _ = out.send(p.encode(ch, &port.to_le_bytes())).await;
        }
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        to_pods.push(tx);
        tasks.push(tokio::spawn(forward(
            inner.runtime.clone(),
            pod.clone(),
            port,
            Channel {
                p,
                data,
                error,
                out: out.clone(),
            },
            rx,
            gone.clone(),
            cfg.stream_creation_timeout,
        )));
    }
    let idle = cfg.spdy.idle_timeout;
    let mut reader = tokio::spawn(async move {
        while let Some(msg) = next(&mut src, &p, idle).await {
            let Some((ch, data)) = msg else { continue };
            let i = usize::from(ch / 2);
            if ch % 2 == 0 && i < to_pods.len() && to_pods[i].send(data).await.is_err() {
                // That port's connection is done; what comes for it is dropped.
            }
        }
        gone_tx.send_replace(true);
    });
    for t in tasks {
        let _ = t.await;
    }
    finish(out, writer, &mut reader, cfg.linger).await;
}

struct Channel {
    p: WsProtocol,
    data: u8,
    error: u8,
    out: mpsc::Sender<Message>,
}

async fn forward<R: Runtime>(
    runtime: Arc<R>,
    pod: Arc<str>,
    port: u16,
    ch: Channel,
    mut from_client: mpsc::Receiver<Bytes>,
    mut gone: watch::Receiver<bool>,
    dial_timeout: std::time::Duration,
) {
    let report = |msg: String| {
        let m = ch.p.encode(
            ch.error,
            format!("error forwarding port {port} to pod {pod}: {msg}").as_bytes(),
        );
        let out = ch.out.clone();
        async move {
            let _ = out.send(m).await;
        }
    };
    let target = match tokio::time::timeout(dial_timeout, runtime.port_forward(&pod, port)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return report(e.to_string()).await,
        Err(_) => return report("dial timed out".into()).await,
    };
    let (mut from_pod, mut to_pod) = tokio::io::split(target);
    let upstream = async {
        while let Some(b) = from_client.recv().await {
            to_pod
                .write_all(&b)
                .await
                .map_err(|e| format!("writing to port {port}: {e}"))?;
        }
        let _ = to_pod.shutdown().await;
        Ok::<(), String>(())
    };
    let downstream = async {
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = from_pod
                .read(&mut buf)
                .await
                .map_err(|e| format!("reading from port {port}: {e}"))?;
            if n == 0 {
                return Ok::<(), String>(());
            }
            if ch.out.send(ch.p.encode(ch.data, &buf[..n])).await.is_err() {
                return Ok(());
            }
        }
    };
    // The port is done when the pod closes its side (the client cannot close a channel).
    tokio::select! {
        r = downstream => if let Err(msg) = r { report(msg).await },
        r = upstream => if let Err(msg) = r { report(msg).await },
        _ = crate::io::wait_gone(&mut gone) => {}
    }
}
