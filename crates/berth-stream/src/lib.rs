//! The CRI streaming server: exec, attach and port-forward for Kubernetes clients.
//!
//! The CRI's `Exec`, `Attach` and `PortForward` calls do not stream themselves: they answer
//! with a URL, and the client (the kubelet's proxy, kubectl, crictl, critest) connects there,
//! upgrades the HTTP/1.1 connection and speaks one of Kubernetes' streaming protocols:
//!
//! - SPDY/3.1 with subprotocol `v4.channel.k8s.io`, `v3.channel.k8s.io`,
//!   `v2.channel.k8s.io` or `channel.k8s.io` for exec and attach: one SPDY stream per
//!   `streamType` (error, stdin, stdout, stderr, resize), and `portforward.k8s.io`: a data
//!   and an error stream per forwarded connection, paired by `requestID`;
//! - WebSocket with subprotocol `v5.channel.k8s.io`, `v4.channel.k8s.io`,
//!   `channel.k8s.io` (and the `base64.` variants) for exec and attach: every message starts
//!   with a channel byte (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize, 255 close in v5);
//!   and `portforward.k8s.io`, `v4.channel.k8s.io` (and variants) for port-forward: a data and
//!   an error channel per `?port=` of the URL, each starting with the port, little-endian.
//!
//! This crate speaks all of them and hands the embedder (berthd) plain, typed things: a
//! [`StreamIo`] with stdin as an `AsyncRead`, stdout and stderr as `AsyncWrite`, terminal
//! sizes, and a [`ClientGone`] signal; for port-forward, the embedder opens the connection
//! into the pod and this crate copies both ways.
//!
//! # Use
//!
//! ```no_run
//! use std::sync::Arc;
//! use berth_stream::{AttachRequest, Config, ExecRequest, Outcome, Runtime, Server, StreamIo};
//! use tokio::io::AsyncWriteExt;
//!
//! struct Berthd;
//!
//! impl Runtime for Berthd {
//!     type Conn = tokio::net::TcpStream;
//!
//!     async fn exec(&self, req: ExecRequest, mut io: StreamIo) -> Outcome {
//!         // Start req.cmd in req.container_id; copy io.stdin to it and its output to
//!         // io.stdout / io.stderr; apply io.resize; kill it if io.client_gone fires.
//!         if let Some(out) = io.stdout.as_mut() {
//!             let _ = out.write_all(b"hello\n").await;
//!         }
//!         Outcome::Exited(0)
//!     }
//!
//!     async fn attach(&self, _req: AttachRequest, _io: StreamIo) -> Outcome {
//!         Outcome::Failed("attach is not supported".into())
//!     }
//!
//!     async fn port_forward(&self, _pod_sandbox_id: &str, port: u16) -> std::io::Result<Self::Conn> {
//!         // Dial inside the pod's network namespace.
//!         tokio::net::TcpStream::connect(("127.0.0.1", port)).await
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let base = format!("http://{}", listener.local_addr()?);
//! let server = Server::new(Arc::new(Berthd), Config::new(base));
//! let url = server
//!     .exec_url(ExecRequest {
//!         container_id: "c1".into(),
//!         cmd: vec!["ls".into()],
//!         tty: false,
//!         stdin: false,
//!         stdout: true,
//!         stderr: true,
//!     })
//!     .expect("valid request");
//! // Answer the CRI call with `url`; serve connections:
//! tokio::spawn(async move { server.serve(listener).await });
//! # let _ = url;
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//!
//! - **Tokens.** Each request is stored under a random 128-bit token that works once and for
//!   [`Config::token_ttl`] (a minute, as the kubelet's); a wrong, spent or expired token gets
//!   404. The token is taken only once the protocol is agreed, so a client that falls back
//!   from WebSocket to SPDY after a refused upgrade can still use its URL.
//! - **Negotiation.** SPDY takes the first of the client's `X-Stream-Protocol-Version`
//!   values that we speak (403 with `X-Accepted-Stream-Protocol-Versions` otherwise);
//!   WebSocket the first of its `Sec-WebSocket-Protocol` values (400 otherwise). Both
//!   refusals name what we speak.
//! - **SPDY** is ours ([`spdy`]): frames, zlib header blocks with the SPDY/3 dictionary (one
//!   context per direction), flow control (see [`spdy::conn`] on peers that ignore it),
//!   PING answered, GOAWAY honoured, a bounded queue per stream and for the writer.
//! - **WebSocket** framing is `tokio-tungstenite`'s (bounded message and frame sizes); the
//!   upgrade handshake and the channel protocol are ours.
//! - **Exec and attach.** The server waits up to [`Config::stream_creation_timeout`] for the
//!   streams the request implies (error; stdin, stdout if asked; stderr if asked without a
//!   tty; resize with a tty from v3 on), then calls the [`Runtime`]. When the client leaves
//!   first, [`ClientGone`] fires and the embedder has [`Config::cancel_grace`] to return
//!   before its future is dropped. After it returns, its output is drained (at most
//!   [`Config::drain_timeout`]), the status goes on the error stream, and the connection
//!   is closed politely (GOAWAY or a WebSocket close, then a bounded wait for the peer).
//! - **Port-forward.** SPDY stream pairs are matched by `requestID` (or by stream id for old
//!   clients); a pair not completed within the stream creation timeout is dropped with a
//!   message on its error stream. Each pair dials through [`Runtime::port_forward`] and
//!   copies both ways with half-close; a failed dial or copy is reported on that pair's error
//!   stream and ends only that pair, never the session (kubernetes#74551).
//! - **Bounds.** Every pipe between the network and the embedder is bounded; a client that
//!   does not read holds back the embedder's writes rather than filling memory.

mod io;
mod portforward;
mod remotecommand;
mod server;
pub mod spdy;
mod status;
mod token;
mod ws;

use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite};

pub use io::{ClientGone, Output, Resize, Stdin, StreamIo, TerminalSize};
pub use server::{Config, RequestError, Server};
pub use token::{CacheError, RequestCache};

/// An exec request, as the CRI's `ExecRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// An attach request, as the CRI's `AttachRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    pub container_id: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A port-forward request, as the CRI's `PortForwardRequest`. The ports a client forwards
/// are named by the client on the connection; `ports` is informative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardRequest {
    pub pod_sandbox_id: String,
    pub ports: Vec<u16>,
}

/// How an exec or attach ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited with this code; 0 is success.
    Exited(i32),
    /// The runtime could not do what was asked; the client is told this message.
    Failed(String),
}

/// What the embedder does for the streaming server.
///
/// Each method runs once per client connection, on its own task. The futures must be
/// `Send`; an implementation may write `async fn`.
pub trait Runtime: Send + Sync + 'static {
    /// A connection into a pod, as [`Runtime::port_forward`] opens it.
    type Conn: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Runs `req.cmd` in the container with the client's streams; returns when the process
    /// ended and its output was written (drop or shut down `io.stdout`/`io.stderr`).
    fn exec(&self, req: ExecRequest, io: StreamIo) -> impl Future<Output = Outcome> + Send;

    /// Attaches the client's streams to the container's main process until it ends or the
    /// client leaves.
    fn attach(&self, req: AttachRequest, io: StreamIo) -> impl Future<Output = Outcome> + Send;

    /// Opens a connection to `port` inside the pod's network namespace.
    fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
    ) -> impl Future<Output = std::io::Result<Self::Conn>> + Send;
}
