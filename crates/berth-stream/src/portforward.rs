//! Port-forward over SPDY: the client opens an error and a data stream per connection it
//! forwards, with headers `streamType`, `port` and `requestID`; each complete pair is dialled
//! through the runtime and copied both ways.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::server::Inner;
use crate::spdy::conn::{Connection, RecvHalf, SendHalf, Stream};
use crate::spdy::frame::rst;
use crate::{PortForwardRequest, Runtime};

/// Bytes copied from the pod per message.
const CHUNK: usize = 32 * 1024;

struct Half {
    recv: RecvHalf,
    send: SendHalf,
}

struct Pair {
    port: u16,
    data: Option<Half>,
    error: Option<Half>,
    since: Instant,
}

/// Why a stream does not belong to a pair; the kubelet's words.
fn check(s: &Stream) -> Result<(u16, bool), String> {
    let port = s
        .header("port")
        .ok_or_else(|| "\"port\" header is required".to_string())?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("unable to parse {port:?} as a port"))?;
    if port == 0 {
        return Err("port \"0\" must be > 0".into());
    }
    match s.header("streamtype") {
        Some("data") => Ok((port, true)),
        Some("error") => Ok((port, false)),
        Some(other) => Err(format!("invalid stream type {other:?}")),
        None => Err("\"streamType\" header is required".into()),
    }
}

/// The pair a stream belongs to: its `requestID`, or for clients too old to send one, the
/// error stream's id (a data stream comes two after its error stream).
fn request_id(s: &Stream, data: bool) -> String {
    match s.header("requestid") {
        Some(id) => id.to_string(),
        None if data => s.id.saturating_sub(2).to_string(),
        None => s.id.to_string(),
    }
}

/// Serves a port-forward session over SPDY.
pub(crate) async fn serve_spdy<R, IO>(inner: Arc<Inner<R>>, io: IO, req: PortForwardRequest)
where
    R: Runtime,
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let cfg = &inner.cfg;
    let (conn, mut incoming) = Connection::start(io, cfg.spdy.clone());
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let timeout = cfg.stream_creation_timeout;
    let mut sweep = tokio::time::interval(Duration::from_millis(250).min(timeout));
    let pod: Arc<str> = req.pod_sandbox_id.into();
    loop {
        tokio::select! {
            s = incoming.recv() => {
                let Some(s) = s else { break };
                let (port, is_data) = match check(&s) {
                    Ok(v) => v,
                    Err(_) => {
                        let (_, w) = s.split();
                        w.reset(rst::PROTOCOL_ERROR).await;
                        continue;
                    }
                };
                let id = request_id(&s, is_data);
                let (recv, send) = s.split();
                if send.reply().await.is_err() {
                    continue;
                }
                if !pairs.contains_key(&id) && pairs.len() >= cfg.spdy.max_streams {
                    send.reset(rst::REFUSED_STREAM).await;
                    continue;
                }
                let pair = pairs.entry(id.clone()).or_insert_with(|| Pair { port, data: None, error: None, since: Instant::now() });
                let slot = if is_data { &mut pair.data } else { &mut pair.error };
                if slot.is_some() || pair.port != port {
                    send.reset(rst::PROTOCOL_ERROR).await;
                    continue;
                }
                *slot = Some(Half { recv, send });
                if pair.data.is_some() && pair.error.is_some() {
                    if let Some(Pair { port, data: Some(data), error: Some(error), .. }) = pairs.remove(&id) {
                        let runtime = inner.runtime.clone();
                        let pod = pod.clone();
                        let dial_timeout = timeout;
                        tokio::spawn(forward(runtime, pod, port, data, error, conn.gone(), dial_timeout));
                    }
                }
            }
            _ = sweep.tick() => {
                let now = Instant::now();
                let stale: Vec<String> = pairs.iter().filter(|(_, p)| now - p.since >= timeout).map(|(k, _)| k.clone()).collect();
                for k in stale {
                    if let Some(p) = pairs.remove(&k) {
                        if let Some(e) = p.error {
                            let _ = e.send.send(Bytes::from(format!("timed out waiting for the data stream of request {k}"))).await;
                            let _ = e.send.finish().await;
                        }
                        if let Some(d) = p.data {
                            d.send.reset(rst::CANCEL).await;
                        }
                    }
                }
            }
        }
    }
    conn.close(cfg.linger).await;
}

/// Dials `port` and copies both ways; a failure goes on the pair's error stream and ends
/// only this pair.
async fn forward<R: Runtime>(
    runtime: Arc<R>,
    pod: Arc<str>,
    port: u16,
    data: Half,
    error: Half,
    mut gone: watch::Receiver<bool>,
    dial_timeout: Duration,
) {
    // The client writes nothing on the error stream; what it might is dropped.
    drop(error.recv);
    let dialled = tokio::time::timeout(dial_timeout, runtime.port_forward(&pod, port)).await;
    let target = match dialled {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            fail(
                &error.send,
                &data.send,
                format!("error forwarding port {port} to pod {pod}: {e}"),
            )
            .await;
            return;
        }
        Err(_) => {
            fail(
                &error.send,
                &data.send,
                format!("error forwarding port {port} to pod {pod}: dial timed out"),
            )
            .await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tokio::io::split(target);
    let Half {
        recv: mut from_client,
        send: to_client,
    } = data;
    let upstream = async {
        while let Some(b) = from_client.recv().await {
            to_pod
                .write_all(&b)
                .await
                .map_err(|e| format!("writing to port {port}: {e}"))?;
        }
        // The client closed its side: pass the half-close on.
        let _ = to_pod.shutdown().await;
        Ok::<(), String>(())
    };
    let downstream = async {
        loop {
            let mut buf = BytesMut::zeroed(CHUNK);
            let n = from_pod
                .read(&mut buf)
                .await
                .map_err(|e| format!("reading from port {port}: {e}"))?;
            if n == 0 {
                let _ = to_client.finish().await;
                return Ok::<(), String>(());
            }
            buf.truncate(n);
            if to_client.send(buf.freeze()).await.is_err() {
                return Ok(());
            }
        }
    };
    let copy = async {
        let (up, down) = tokio::join!(upstream, downstream);
        up.and(down)
    };
    tokio::select! {
        r = copy => {
            if let Err(msg) = r {
                fail(&error.send, &to_client, format!("error forwarding port {port} to pod {pod}: {msg}")).await;
                return;
            }
        }
        _ = crate::io::wait_gone(&mut gone) => return,
    }
    let _ = error.send.finish().await;
}

async fn fail(error: &SendHalf, data: &SendHalf, msg: String) {
    let _ = error.send(Bytes::from(msg)).await;
    let _ = error.finish().await;
    let _ = data.finish().await;
}
