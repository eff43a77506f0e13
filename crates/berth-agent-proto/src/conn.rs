//! One end of the protocol over a blocking byte stream: frames out, frames in, the Hello
//! exchange, and (for the host) a request answered by its response while Data and Event
//! frames that arrive meanwhile are kept in order for the caller.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use crate::{encode, Decoder, Frame, Hello, ProtoError, Request, Response, VERSION};

/// Why a connection cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Proto(#[from] ProtoError),
    #[error("the peer closed the connection")]
    Closed,
}

/// A connection: [`Conn::host`] reads what an agent sends, [`Conn::agent`] what a host sends.
pub struct Conn<S> {
    stream: S,
    decoder: Decoder,
    next_id: u32,
    /// Frames read while waiting for a response, oldest first.
    pending: VecDeque<Frame>,
}

impl<S: Read + Write> Conn<S> {
    pub fn host(stream: S) -> Conn<S> {
        Conn::new(stream, Decoder::from_agent())
    }

    pub fn agent(stream: S) -> Conn<S> {
        Conn::new(stream, Decoder::from_host())
    }

    fn new(stream: S, decoder: Decoder) -> Conn<S> {
        Conn {
            stream,
            decoder,
            next_id: 1,
            pending: VecDeque::new(),
        }
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    pub fn send(&mut self, frame: &Frame) -> Result<(), ConnError> {
        let mut out = Vec::new();
        encode(frame, &mut out)?;
        self.stream.write_all(&out)?;
        self.stream.flush()?;
        Ok(())
    }

    /// The next frame: one kept from before, else read from the stream.
    pub fn recv(&mut self) -> Result<Frame, ConnError> {
        if let Some(f) = self.pending.pop_front() {
            return Ok(f);
        }
        self.read_frame()
    }

    fn read_frame(&mut self) -> Result<Frame, ConnError> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(f) = self.decoder.next_frame()? {
                return Ok(f);
            }
            let n = match self.stream.read(&mut buf) {
                Ok(0) => return Err(ConnError::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            self.decoder.push(&buf[..n]);
        }
    }

    /// Sends this side's Hello and reads the peer's (the decoder refuses another version).
    pub fn handshake(&mut self, peer: &str) -> Result<Hello, ConnError> {
        self.send(&Frame::Hello(Hello {
            version: VERSION,
            peer: peer.to_string(),
        }))?;
        match self.read_frame()? {
            Frame::Hello(h) => Ok(h),
            other => Err(ProtoError::NoHello(other.kind()).into()),
        }
    }

    /// Sends `request` and waits for its response; other frames that come first are kept
    /// for [`Conn::recv`]. A response to another request is a protocol error.
    pub fn call(&mut self, request: Request) -> Result<Response, ConnError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.send(&Frame::Request { id, request })?;
        loop {
            match self.read_frame()? {
                Frame::Response { id: got, response } if got == id => return Ok(response),
                Frame::Response { id: got, .. } => {
                    return Err(ProtoError::Malformed {
                        kind: crate::Kind::Response,
                        channel: got,
                        why: format!("a response to request {got}, waiting for {id}"),
                    }
                    .into())
                }
                other => self.pending.push_back(other),
            }
        }
    }
}
