//! berth-shim: one monitor process per pod for Berth's CRI engine (docs/cri.md).
//!
//! The shim holds the pod's infra process (a built-in pause, forked from the shim: no
//! image), makes the pod's containers through libberth in process, holds their stdio,
//! writes their CRI logs, reaps them and records their exits in files, so that the engine
//! (berthd) can die and come back without losing a line or an exit code.
//!
//! This library is what the engine needs to talk to a shim: [`spawn`] starts one and waits
//! until it serves, [`Client`] sends it one request per connection (a line of JSON, a line
//! of JSON back, with a deadline). The `berth-shim` binary is the shim itself.

pub mod crilog;
pub mod fdpass;
pub mod protocol;
pub mod runtime;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub use protocol::{
    ContainerState, CreateSpec, ExecSpec, ExecSyncReply, ExecSyncSpec, Reply, Request, SandboxSpec,
    Status,
};

/// The longest reply line: an ExecSync's, with both streams at their cap, in base64.
const MAX_REPLY: usize = 4 * protocol::EXEC_OUTPUT_LIMIT;

/// The socket a shim serves in its directory.
pub const SOCKET: &str = "shim.sock";

/// Why a shim could not be reached or refused a request.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("pod {pod}: start berth-shim {binary}: {source}")]
    Spawn {
        pod: String,
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pod {pod}: berth-shim did not start: {reason}")]
    NotStarted { pod: String, reason: String },
    #[error("shim {socket}: {what}: {source}")]
    Io {
        socket: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("shim {socket}: malformed reply: {reason}")]
    Protocol { socket: PathBuf, reason: String },
    /// The shim answered with an error.
    #[error("{0}")]
    Refused(String),
}

/// Starts the shim of pod `pod` with its directory `dir`; returns once it serves its
/// socket (the shim forks away from us and outlives the caller). The pod's containers are
/// made by libberth in the shim with its state under `runtime_root`, or, given
/// `oci_binary`, by that OCI runtime (runc, crun, runsc) with `runtime_root` as its
/// `--root` and the global options given with it.
pub fn spawn(
    binary: &Path,
    pod: &str,
    dir: &Path,
    runtime_root: &Path,
    oci_binary: Option<(&Path, &[String])>,
) -> Result<Client, ShimError> {
    let mut cmd = Command::new(binary);
    cmd.arg("--pod")
        .arg(pod)
        .arg("--dir")
        .arg(dir)
        .arg("--runtime-root")
        .arg(runtime_root);
    if let Some((b, options)) = oci_binary {
        cmd.arg("--runtime-binary").arg(b);
        for o in options {
            // `=`: an option's value may itself start with '-'.
            cmd.arg(format!("--runtime-option={o}"));
        }
    }
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| ShimError::Spawn {
            pod: pod.to_string(),
            binary: binary.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        return Err(ShimError::NotStarted {
            pod: pod.to_string(),
            reason: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(Client::new(dir.join(SOCKET)))
}

/// A connection kept open after its first reply: an interactive exec or an attach.
#[derive(Debug)]
pub struct Session {
    pub stream: UnixStream,
    pub reply: Reply,
    /// The descriptors the reply brought (a pty master, a container's stdin).
    pub fds: Vec<OwnedFd>,
    /// What came after the reply line in the same read (the first output frames).
    pub leftover: Vec<u8>,
}

/// Talks to one shim.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client of the shim listening on `socket`, with a 30 s deadline per request.
    pub fn new(socket: PathBuf) -> Client {
        Client {
            socket,
            timeout: Duration::from_secs(30),
        }
    }

    /// The same shim with another deadline (an ExecSync waits as long as its own timeout).
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            socket: self.socket.clone(),
            timeout,
        }
    }

    /// Sends `req` with `fds` and keeps the connection: the first reply, with the
    /// descriptors that came with it, and the stream for what follows (no deadline on it).
    pub fn open(&self, req: &Request, fds: &[BorrowedFd<'_>]) -> Result<Session, ShimError> {
        let io = |what: &'static str| {
            let socket = self.socket.clone();
            move |source| ShimError::Io {
                socket,
                what,
                source,
            }
        };
        let s = UnixStream::connect(&self.socket).map_err(io("connect"))?;
        s.set_read_timeout(Some(self.timeout))
            .map_err(io("set a deadline"))?;
        let mut line = serde_json::to_vec(req).expect("requests serialize");
        line.push(b'\n');
        fdpass::send(s.as_fd(), &line, fds).map_err(io("send the request"))?;
        let mut buf = Vec::new();
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let nl = loop {
            let (n, fds) = fdpass::recv(s.as_fd(), &mut chunk).map_err(io("read the reply"))?;
            got.extend(fds);
            if n == 0 {
                return Err(ShimError::Protocol {
                    socket: self.socket.clone(),
                    reason: "the shim closed the connection without a reply".into(),
                });
            }
            buf.extend_from_slice(&chunk[..n]);
            let seen = buf.len() - n;
            if let Some(p) = buf[seen..].iter().position(|&b| b == b'\n') {
                break seen + p;
            }
            if buf.len() > MAX_REPLY {
                return Err(ShimError::Protocol {
                    socket: self.socket.clone(),
                    reason: "the reply line is too long".into(),
                });
            }
        };
        let leftover = buf.split_off(nl + 1);
        let reply = self.parse(&buf)?;
        s.set_read_timeout(None).map_err(io("clear the deadline"))?;
        Ok(Session {
            stream: s,
            reply,
            fds: got,
            leftover,
        })
    }

    fn parse(&self, line: &[u8]) -> Result<Reply, ShimError> {
        let r: protocol::Response =
            serde_json::from_slice(line).map_err(|e| ShimError::Protocol {
                socket: self.socket.clone(),
                reason: e.to_string(),
            })?;
        match r {
            protocol::Response::Ok(reply) => Ok(reply),
            protocol::Response::Error(msg) => Err(ShimError::Refused(msg)),
        }
    }

    /// Sends `req` and returns the shim's reply.
    pub fn call(&self, req: &Request) -> Result<Reply, ShimError> {
        self.open(req, &[]).map(|s| s.reply)
    }
}
