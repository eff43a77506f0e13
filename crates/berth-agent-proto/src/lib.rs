//! The wire protocol between Berth's host side (berthctl, berthd's VM handler) and
//! `berth-agent`, PID 1 of a VM guest, over one byte stream (a virtio-serial port backed by
//! a host unix socket, or a vsock connection where the host has vhost-vsock).
//!
//! One stream carries everything, in frames:
//!
//! ```text
//! frame  = length:u32be  kind:u8  channel:u32be  payload
//! length = 5 + payload length, at most MAX_FRAME
//! ```
//!
//! | kind | channel | payload | sent by |
//! | --- | --- | --- | --- |
//! | [`Kind::Hello`] | 0 | JSON [`Hello`] | both, first |
//! | [`Kind::Request`] | request id | JSON [`Request`] | host |
//! | [`Kind::Response`] | its request's id | JSON [`Response`] | agent |
//! | [`Kind::Data`] | stdio stream id | raw bytes | both |
//! | [`Kind::Close`] | stdio stream id | empty: the stream ended | both |
//! | [`Kind::Event`] | 0 | JSON [`Event`] | agent |
//!
//! The guest is hostile: the host decodes what the agent sends with
//! [`Decoder::from_agent`], which refuses a frame longer than [`MAX_FRAME`] as soon as its
//! length is read (nothing that size is ever buffered), any kind the agent may not send,
//! malformed JSON, and JSON nested or sized beyond the frame. Every error ends the
//! connection (the caller then treats the VM as failed); nothing panics.

use std::fmt;

use serde::{Deserialize, Serialize};

mod conn;
pub use conn::{Conn, ConnError};
/// The JSON values in requests (OCI configs and processes), for users of this crate.
pub use serde_json::Value as JsonValue;

/// The protocol's version: a Hello with another one ends the connection.
pub const VERSION: u32 = 1;

/// The longest frame, header included (1 MiB): stdio data is split to fit.
pub const MAX_FRAME: usize = 1 << 20;

/// The bytes of a frame before its payload.
pub const HEADER: usize = 9;

/// The most payload one [`Kind::Data`] frame carries.
pub const MAX_DATA: usize = MAX_FRAME - HEADER;

/// A frame's kind (its fifth byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    Request = 2,
    Response = 3,
    Data = 4,
    Close = 5,
    Event = 6,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Request,
            3 => Kind::Response,
            4 => Kind::Data,
            5 => Kind::Close,
            6 => Kind::Event,
            _ => return None,
        })
    }
}

/// The first frame each side sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub version: u32,
    /// What sent it (`berth-agent 0.1.0`), for logs.
    pub peer: String,
}

/// Where a process's stdio goes: the [`Kind::Data`] channel of each stream, or none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stdio {
    pub stdin: Option<u32>,
    pub stdout: Option<u32>,
    /// None with a terminal: its output is one stream, stdout.
    pub stderr: Option<u32>,
    pub terminal: bool,
}

/// The container's root file system in the guest: read-only layers (block devices,
/// lowest first) under a writable one, stacked with overlayfs by the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rootfs {
    /// The serials of guest block devices (`/sys/block/vdX/serial`), each an erofs image of
    /// one layer. Serials, not names: `vdX` follows the guest's probe order.
    pub layers: Vec<String>,
    /// The writable layer's device serial; none: a tmpfs in guest memory.
    pub upper: Option<String>,
}

/// What the host asks of the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Makes a container from an OCI config (its root is replaced by `rootfs`).
    Create {
        id: String,
        config: serde_json::Value,
        rootfs: Rootfs,
        stdio: Stdio,
        /// Small files the container's mounts use (`/etc/hosts`, `/etc/resolv.conf`), by
        /// plain name: the agent writes them into the container's directory in the guest,
        /// and a bind mount whose source is relative (`files/hosts`) is resolved there.
        #[serde(default)]
        files: std::collections::BTreeMap<String, String>,
        /// virtio-fs tags of host directories: the agent mounts each in the container's
        /// directory, and a bind mount whose source is `volumes/TAG` is resolved there.
        #[serde(default)]
        volumes: Vec<String>,
    },
    Start {
        id: String,
    },
    /// Runs an OCI process in the running container.
    Exec {
        id: String,
        exec_id: String,
        process: serde_json::Value,
        stdio: Stdio,
    },
    Signal {
        id: String,
        exec_id: Option<String>,
        signal: i32,
        all: bool,
    },
    /// Answered when the container's (or exec's) process has exited.
    Wait {
        id: String,
        exec_id: Option<String>,
    },
    Resize {
        id: String,
        exec_id: Option<String>,
        rows: u16,
        cols: u16,
    },
    Stats {
        id: String,
    },
    Delete {
        id: String,
    },
    /// Ends every container and powers the guest off. (Braces: unknown fields are refused
    /// only in variants with fields, and these have none.)
    Shutdown {},
}

/// The agent's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    Done {},
    /// A process was made: its pid in the guest.
    Started {
        pid: i32,
    },
    Exited {
        code: i32,
        oom_killed: bool,
    },
    /// runc's stats shape (berth-cgroups' `Stats`), from the guest's cgroups.
    Stats {
        stats: serde_json::Value,
    },
    Error {
        message: String,
    },
}

/// What the agent tells unasked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    Exited {
        id: String,
        exec_id: Option<String>,
        code: i32,
        oom_killed: bool,
    },
    /// The guest kernel's OOM killer killed in the container's cgroup.
    Oom { id: String },
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Hello(Hello),
    Request { id: u32, request: Request },
    Response { id: u32, response: Response },
    Data { stream: u32, bytes: Vec<u8> },
    Close { stream: u32 },
    Event(Event),
}

impl Frame {
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Hello(_) => Kind::Hello,
            Frame::Request { .. } => Kind::Request,
            Frame::Response { .. } => Kind::Response,
            Frame::Data { .. } => Kind::Data,
            Frame::Close { .. } => Kind::Close,
            Frame::Event(_) => Kind::Event,
        }
    }
}

/// Why a stream of frames cannot be read on.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("frame of {0} bytes: longer than the {MAX_FRAME} allowed")]
    TooLong(usize),
    #[error("frame of {0} bytes: shorter than its header")]
    TooShort(usize),
    #[error("frame kind {0}: unknown")]
    UnknownKind(u8),
    #[error("a {kind:?} frame may not come from the {from}")]
    NotAllowed { kind: Kind, from: Side },
    #[error("{kind:?} frame on channel {channel}: {why}")]
    Malformed {
        kind: Kind,
        channel: u32,
        why: String,
    },
    #[error("the peer speaks protocol version {theirs}, this side {VERSION}")]
    Version { theirs: u32 },
    #[error("the first frame must be a Hello, not {0:?}")]
    NoHello(Kind),
    #[error("{0:?} payload too long for one frame")]
    Oversized(Kind),
}

/// Which end a decoder reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Host,
    Agent,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Host => "host",
            Side::Agent => "agent",
        })
    }
}

/// Appends `frame`'s bytes to `out`. A structured payload that does not fit in one frame,
/// or data longer than [`MAX_DATA`], is an error (split data with [`data_frames`]).
pub fn encode(frame: &Frame, out: &mut Vec<u8>) -> Result<(), ProtoError> {
    let (channel, payload): (u32, Vec<u8>) = match frame {
        Frame::Hello(h) => (0, json(h)),
        Frame::Request { id, request } => (*id, json(request)),
        Frame::Response { id, response } => (*id, json(response)),
        Frame::Data { stream, bytes } => (*stream, bytes.clone()),
        Frame::Close { stream } => (*stream, Vec::new()),
        Frame::Event(e) => (0, json(e)),
    };
    if payload.len() > MAX_DATA {
        return Err(ProtoError::Oversized(frame.kind()));
    }
    let len = (payload.len() + HEADER - 4) as u32;
    out.extend_from_slice(&len.to_be_bytes());
    out.push(frame.kind() as u8);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// `bytes` of stream `stream` as Data frames of at most [`MAX_DATA`] each.
pub fn data_frames(stream: u32, bytes: &[u8]) -> impl Iterator<Item = Frame> + '_ {
    bytes.chunks(MAX_DATA).map(move |c| Frame::Data {
        stream,
        bytes: c.to_vec(),
    })
}

/// A structured payload's JSON (these types always serialise).
fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("protocol types serialise")
}

/// Reads frames from one side's byte stream, as they arrive in pieces.
#[derive(Debug)]
pub struct Decoder {
    from: Side,
    buf: Vec<u8>,
    hello_seen: bool,
    failed: Option<ProtoError>,
}

impl Decoder {
    /// For the host: frames the agent may send (Hello, Response, Data, Close, Event).
    pub fn from_agent() -> Decoder {
        Decoder::new(Side::Agent)
    }

    /// For the agent: frames the host may send (Hello, Request, Data, Close).
    pub fn from_host() -> Decoder {
        Decoder::new(Side::Host)
    }

    fn new(from: Side) -> Decoder {
        Decoder {
            from,
            buf: Vec::new(),
            hello_seen: false,
            failed: None,
        }
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// How many bytes are buffered (never more than one frame's and what came with it).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, None until more bytes come. After an error every call
    /// returns it again: the stream cannot be resynchronised.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtoError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.decode_one();
        if let Err(e) = &r {
            self.failed = Some(e.clone());
            self.buf = Vec::new();
        }
        r
    }

    fn decode_one(&mut self) -> Result<Option<Frame>, ProtoError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        // `len` counts what follows the length word.
        let total = len + 4;
        if total > MAX_FRAME {
            return Err(ProtoError::TooLong(total));
        }
        if total < HEADER {
            return Err(ProtoError::TooShort(total));
        }
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        let kind = Kind::from_u8(self.buf[4]).ok_or(ProtoError::UnknownKind(self.buf[4]))?;
        let allowed = match self.from {
            Side::Agent => !matches!(kind, Kind::Request),
            Side::Host => !matches!(kind, Kind::Response | Kind::Event),
        };
        if !allowed {
            return Err(ProtoError::NotAllowed {
                kind,
                from: self.from,
            });
        }
        if !self.hello_seen && kind != Kind::Hello {
            return Err(ProtoError::NoHello(kind));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let channel = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]);
        let payload: Vec<u8> = self.buf[HEADER..total].to_vec();
        self.buf.drain(..total);
        let bad = |why: String| ProtoError::Malformed { kind, channel, why };
        fn parse<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T, String> {
            serde_json::from_slice(p).map_err(|e| e.to_string())
        }
        let frame = match kind {
            Kind::Hello => {
                let h: Hello = parse(&payload).map_err(bad)?;
                if h.version != VERSION {
                    return Err(ProtoError::Version { theirs: h.version });
                }
                if self.hello_seen {
                    return Err(bad("a second Hello".into()));
                }
                self.hello_seen = true;
                Frame::Hello(h)
            }
            Kind::Request => Frame::Request {
                id: channel,
                request: parse(&payload).map_err(bad)?,
            },
            Kind::Response => Frame::Response {
                id: channel,
                response: parse(&payload).map_err(bad)?,
            },
            Kind::Data => Frame::Data {
                stream: channel,
                bytes: payload,
            },
            Kind::Close => {
                if !payload.is_empty() {
                    return Err(bad(format!("{} bytes in a Close", payload.len())));
                }
                Frame::Close { stream: channel }
            }
            Kind::Event => {
                if channel != 0 {
                    return Err(bad("events travel on channel 0".into()));
                }
                Frame::Event(parse(&payload).map_err(bad)?)
            }
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests;
