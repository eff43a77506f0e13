//! berth-agent: PID 1 of a Berth VM guest (docs/vm.md). It sets the guest up (see the
//! binary), then serves the host over one byte stream with berth-agent-proto.
//!
//! This slice serves the connection itself: the Hello exchange and Shutdown. Running
//! containers in the guest (Create, Start, Exec, Wait, Signal, Resize, Stats, Delete, with
//! libberth over the image's layers) is the next slice of issue 14: until then each of those
//! requests is answered with an error that says so, never with a pretended success.

use std::io::{Read, Write};

use berth_agent_proto::{Conn, ConnError, Frame, ProtoError, Request, Response, Side};

/// What the agent says it is in its Hello.
pub const PEER: &str = concat!("berth-agent ", env!("CARGO_PKG_VERSION"));

/// Why [`serve`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The host asked for Shutdown, and was answered: power the guest off.
    PowerOff,
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

/// Serves the host on `conn` after the Hello exchange, until it asks for Shutdown.
pub fn serve<S: Read + Write>(conn: &mut Conn<S>) -> Result<Outcome, ConnError> {
    conn.handshake(PEER)?;
    loop {
        match conn.recv()? {
            Frame::Request {
                id,
                request: Request::Shutdown {},
            } => {
                conn.send(&Frame::Response {
                    id,
                    response: Response::Done {},
                })?;
                return Ok(Outcome::PowerOff);
            }
            Frame::Request { id, request } => {
                let message = format!(
                    "{}: containers in the guest are not served by this agent yet (issue 14, next slice)",
                    op(&request)
                );
                conn.send(&Frame::Response {
                    id,
                    response: Response::Error { message },
                })?;
            }
            // No stream is open in this slice: data for one is dropped, as for a stream
            // that has ended.
            Frame::Data { .. } | Frame::Close { .. } => {}
            // The decoder refuses these from a host; should one get through, the stream is
            // not what it claims to be.
            other @ (Frame::Hello(_) | Frame::Response { .. } | Frame::Event(_)) => {
                return Err(ProtoError::NotAllowed {
                    kind: other.kind(),
                    from: Side::Host,
                }
                .into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_agent_proto::Rootfs;
    use std::os::unix::net::UnixStream;

    #[test]
    fn hello_refused_requests_then_shutdown() {
        let (host, agent) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve(&mut Conn::agent(agent)));
        let mut host = Conn::host(host);
        let hello = host.handshake("test host").unwrap();
        assert_eq!(hello.peer, PEER);
        let r = host
            .call(Request::Create {
                id: "c1".into(),
                config: serde_json_value(),
                rootfs: Rootfs::default(),
                stdio: Default::default(),
            })
            .unwrap();
        match r {
            Response::Error { message } => assert!(message.starts_with("create: "), "{message}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(host.call(Request::Shutdown {}).unwrap(), Response::Done {});
        assert_eq!(t.join().unwrap().unwrap(), Outcome::PowerOff);
    }

    #[test]
    fn a_host_that_breaks_the_protocol_ends_the_agent_with_an_error() {
        let (mut host, agent) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve(&mut Conn::agent(agent)));
        // A length word far over the limit, where the Hello should be.
        host.write_all(&u32::MAX.to_be_bytes()).unwrap();
        let e = t.join().unwrap().unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
    }

    fn serde_json_value() -> berth_agent_proto::JsonValue {
        berth_agent_proto::JsonValue::Null
    }
}
