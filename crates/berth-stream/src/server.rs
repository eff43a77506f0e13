//! The HTTP side: URLs, tokens, protocol negotiation and the upgrade.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::remotecommand::Command;
use crate::spdy::conn::ConnConfig;
use crate::token::{CacheError, RequestCache};
use crate::ws::WsProtocol;
use crate::{
    portforward, remotecommand, ws, AttachRequest, ExecRequest, PortForwardRequest, Runtime,
};

/// The header of SPDY streaming's subprotocol.
pub const STREAM_PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// The header that lists the subprotocols we speak, on a refusal.
pub const ACCEPTED_PROTOCOLS_HEADER: &str = "x-accepted-stream-protocol-versions";

/// SPDY subprotocols of exec and attach, most preferred first.
pub const SPDY_EXEC_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// SPDY subprotocols of port-forward.
pub const SPDY_PORT_FORWARD_PROTOCOLS: &[&str] = &["portforward.k8s.io"];

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where clients reach this server, e.g. `http://127.0.0.1:10010`; URLs handed out start
    /// with it.
    pub base_url: String,
    /// How long a URL works (once).
    pub token_ttl: Duration,
    /// Requests pending at once.
    pub max_pending: usize,
    /// How long the client has to open the streams of a request, and how long a port
    /// forward's dial may take.
    pub stream_creation_timeout: Duration,
    /// How long the embedder has to return once its client went away.
    pub cancel_grace: Duration,
    /// How long the output of a command that ended may take to reach the client.
    pub drain_timeout: Duration,
    /// How long a closing connection waits for the peer to close its side.
    pub linger: Duration,
    /// How long an HTTP request head may take.
    pub header_timeout: Duration,
    /// SPDY connections.
    pub spdy: ConnConfig,
}

impl Config {
    /// The kubelet's defaults: URLs work for a minute, streams must come within 30 s,
    /// connections idle for 4 hours end.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            token_ttl: Duration::from_secs(60),
            max_pending: 1000,
            stream_creation_timeout: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            linger: Duration::from_secs(5),
            header_timeout: Duration::from_secs(30),
            spdy: ConnConfig::default(),
        }
    }
}

/// Why a request was not accepted; the messages are the kubelet's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("missing required container_id")]
    MissingContainerId,
    #[error("missing required pod_sandbox_id")]
    MissingPodSandboxId,
    #[error("tty and stderr cannot both be true")]
    TtyAndStderr,
    #[error("one of stdin, stdout, or stderr must be set")]
    NoStreams,
    #[error("cannot store the request")]
    Cache(#[from] CacheError),
}

pub(crate) enum Pending {
    Command(Command),
    PortForward(PortForwardRequest),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exec,
    Attach,
    PortForward,
}

pub(crate) struct Inner<R> {
    pub runtime: Arc<R>,
    pub cfg: Config,
    cache: RequestCache<Pending>,
}

/// The streaming server. Cheap to clone; clones share their requests.
pub struct Server<R> {
    inner: Arc<Inner<R>>,
}

impl<R> Clone for Server<R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

fn check_streams(
    container_id: &str,
    tty: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> Result<(), RequestError> {
    if container_id.is_empty() {
        return Err(RequestError::MissingContainerId);
    }
    if tty && stderr {
        return Err(RequestError::TtyAndStderr);
    }
    if !stdin && !stdout && !stderr {
        return Err(RequestError::NoStreams);
    }
    Ok(())
}

impl<R: Runtime> Server<R> {
    pub fn new(runtime: Arc<R>, config: Config) -> Self {
        let cache = RequestCache::new(config.token_ttl, config.max_pending);
        Self {
            inner: Arc::new(Inner {
                runtime,
                cfg: config,
                cache,
            }),
        }
    }

    /// Stores an exec request; returns the URL the client is to use, once.
    pub fn exec_url(&self, req: ExecRequest) -> Result<String, RequestError> {
        check_streams(
            &req.container_id,
            req.tty,
            req.stdin,
            req.stdout,
            req.stderr,
        )?;
        self.url("exec", Pending::Command(Command::Exec(req)))
    }

    /// Stores an attach request; returns the URL the client is to use, once.
    pub fn attach_url(&self, req: AttachRequest) -> Result<String, RequestError> {
        check_streams(
            &req.container_id,
            req.tty,
            req.stdin,
            req.stdout,
            req.stderr,
        )?;
        self.url("attach", Pending::Command(Command::Attach(req)))
    }

    /// Stores a port-forward request; returns the URL the client is to use, once.
    pub fn port_forward_url(&self, req: PortForwardRequest) -> Result<String, RequestError> {
        if req.pod_sandbox_id.is_empty() {
            return Err(RequestError::MissingPodSandboxId);
        }
        self.url("portforward", Pending::PortForward(req))
    }

    fn url(&self, kind: &str, p: Pending) -> Result<String, RequestError> {
        let token = self.inner.cache.insert(p)?;
        Ok(format!(
            "{}/{kind}/{token}",
            self.inner.cfg.base_url.trim_end_matches('/')
        ))
    }

    /// Accepts connections on `listener` for ever. A failed accept (say, no descriptor
    /// left) is retried after a pause.
    pub async fn serve(&self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    let me = self.clone();
                    tokio::spawn(async move { me.serve_connection(sock).await });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Serves one HTTP/1.1 connection, upgrades included.
    pub async fn serve_connection<IO>(&self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let inner = self.inner.clone();
        let svc = hyper::service::service_fn(move |req| {
            let inner = inner.clone();
            async move { Ok::<_, Infallible>(handle(inner, req)) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.inner.cfg.header_timeout)
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades()
            .await;
    }
}

/// A response that refuses an upgrade.
type Refused = Box<Response<String>>;

fn refuse(status: StatusCode, msg: impl Into<String>) -> Refused {
    Box::new(plain(status, msg))
}

fn plain(status: StatusCode, msg: impl Into<String>) -> Response<String> {
    let mut r = Response::new(msg.into() + "\n");
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The values of a header that may repeat and may hold comma-separated lists.
fn list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn has_token(headers: &HeaderMap, name: hyper::header::HeaderName, token: &str) -> bool {
    list(headers, name.as_str())
        .iter()
        .any(|v| v.eq_ignore_ascii_case(token))
}

/// The first protocol the client offers that we speak.
pub(crate) fn negotiate<'a>(client: &[String], ours: &[&'a str]) -> Option<&'a str> {
    client
        .iter()
        .find_map(|c| ours.iter().find(|o| **o == c.as_str()).copied())
}

enum Upgrade {
    Spdy(&'static str),
    WebSocket(WsProtocol, String),
}

fn choose(kind: Kind, req: &Request<Incoming>) -> Result<Upgrade, Refused> {
    let h = req.headers();
    let connection_upgrade = has_token(h, CONNECTION, "upgrade");
    if connection_upgrade && has_token(h, UPGRADE, "websocket") {
        if h.get(SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "unable to upgrade: websocket version must be 13",
            ));
        }
        let Some(key) = h.get(SEC_WEBSOCKET_KEY).and_then(|v| v.to_str().ok()) else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "unable to upgrade: missing Sec-WebSocket-Key",
            ));
        };
        let offered = list(h, SEC_WEBSOCKET_PROTOCOL.as_str());
        let ours = if kind == Kind::PortForward {
            ws::PORT_FORWARD_PROTOCOLS
        } else {
            ws::EXEC_PROTOCOLS
        };
        let chosen = if offered.is_empty() {
            Some(WsProtocol::by_name(""))
        } else {
            negotiate(&offered, &ours.iter().map(|p| p.name).collect::<Vec<_>>())
                .map(WsProtocol::by_name)
        };
        let Some(Some(p)) = chosen else {
            let names: Vec<&str> = ours.iter().map(|p| p.name).collect();
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "unable to upgrade: requested websocket protocol(s) {offered:?} are not supported; supported: {names:?}"
                ),
            ));
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        return Ok(Upgrade::WebSocket(p, accept));
    }
    if connection_upgrade && has_token(h, UPGRADE, "SPDY/3.1") {
        let ours = if kind == Kind::PortForward {
            SPDY_PORT_FORWARD_PROTOCOLS
        } else {
            SPDY_EXEC_PROTOCOLS
        };
        let offered = list(h, STREAM_PROTOCOL_HEADER);
        return match negotiate(&offered, ours) {
            Some(p) => Ok(Upgrade::Spdy(p)),
            None => {
                let mut r = refuse(
                    StatusCode::FORBIDDEN,
                    format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {ours:?}"),
                );
                for p in ours {
                    r.headers_mut()
                        .append(ACCEPTED_PROTOCOLS_HEADER, HeaderValue::from_static(p));
                }
                Err(r)
            }
        };
    }
    Err(refuse(
        StatusCode::BAD_REQUEST,
        "unable to upgrade: expected Connection: Upgrade with Upgrade: SPDY/3.1 or websocket",
    ))
}

fn parse_ports(query: Option<&str>) -> Result<Vec<u16>, Refused> {
    let mut ports = Vec::new();
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != "port" {
            continue;
        }
        match v.parse::<u16>() {
            Ok(p) if p > 0 => ports.push(p),
            _ => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("unable to parse {v:?} as a port"),
                ))
            }
        }
        if ports.len() > ws::MAX_PORTS {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("at most {} ports", ws::MAX_PORTS),
            ));
        }
    }
    if ports.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "at least one port must be given with ?port=",
        ));
    }
    Ok(ports)
}

fn handle<R: Runtime>(inner: Arc<Inner<R>>, mut req: Request<Incoming>) -> Response<String> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let kind = match parts.next() {
        Some("exec") => Kind::Exec,
        Some("attach") => Kind::Attach,
        Some("portforward") => Kind::PortForward,
        _ => return plain(StatusCode::NOT_FOUND, "not found"),
    };
    let token = parts.next().unwrap_or("").trim_end_matches('/').to_string();
    if token.is_empty() || !inner.cache.contains(&token) {
        return plain(StatusCode::NOT_FOUND, "unknown or expired token");
    }
    let upgrade = match choose(kind, &req) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let ports = match (&upgrade, kind) {
        (Upgrade::WebSocket(..), Kind::PortForward) => match parse_ports(req.uri().query()) {
            Ok(p) => p,
            Err(r) => return *r,
        },
        _ => Vec::new(),
    };
    let pending = match (inner.cache.consume(&token), kind) {
        (Some(Pending::Command(c @ Command::Exec(_))), Kind::Exec) => Pending::Command(c),
        (Some(Pending::Command(c @ Command::Attach(_))), Kind::Attach) => Pending::Command(c),
        (Some(Pending::PortForward(p)), Kind::PortForward) => Pending::PortForward(p),
        _ => return plain(StatusCode::NOT_FOUND, "unknown or expired token"),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = Response::new(String::new());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    match &upgrade {
        Upgrade::Spdy(p) => {
            h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            h.insert(STREAM_PROTOCOL_HEADER, HeaderValue::from_static(p));
        }
        Upgrade::WebSocket(p, accept) => {
            h.insert(UPGRADE, HeaderValue::from_static("websocket"));
            if let Ok(v) = HeaderValue::from_str(accept) {
                h.insert(SEC_WEBSOCKET_ACCEPT, v);
            }
            if !p.name.is_empty() {
                h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p.name));
            }
        }
    }
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let io = TokioIo::new(upgraded);
        match (upgrade, pending) {
            (Upgrade::Spdy(p), Pending::Command(c)) => {
                remotecommand::serve_spdy(inner, io, p, c).await
            }
            (Upgrade::Spdy(_), Pending::PortForward(r)) => {
                portforward::serve_spdy(inner, io, r).await
            }
            (Upgrade::WebSocket(p, _), Pending::Command(c)) => {
                ws::serve_command(inner, io, p, c).await
            }
            (Upgrade::WebSocket(p, _), Pending::PortForward(r)) => {
                ws::serve_port_forward(inner, io, p, r, ports).await
            }
        }
    });
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_order_decides() {
        let c = vec![
            "v2.channel.k8s.io".to_string(),
            "v4.channel.k8s.io".to_string(),
        ];
        assert_eq!(
            negotiate(&c, SPDY_EXEC_PROTOCOLS),
            Some("v2.channel.k8s.io")
        );
        assert_eq!(negotiate(&["v9".to_string()], SPDY_EXEC_PROTOCOLS), None);
    }

    #[test]
    fn requests_are_checked_as_the_kubelet_does() {
        assert_eq!(
            check_streams("", false, true, false, false),
            Err(RequestError::MissingContainerId)
        );
        assert_eq!(
            check_streams("c", true, false, true, true),
            Err(RequestError::TtyAndStderr)
        );
        assert_eq!(
            check_streams("c", false, false, false, false),
            Err(RequestError::NoStreams)
        );
        assert_eq!(check_streams("c", true, true, true, false), Ok(()));
    }

    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(
            parse_ports(Some("port=80&port=443")).unwrap(),
            vec![80, 443]
        );
        assert!(parse_ports(Some("port=0")).is_err());
        assert!(parse_ports(Some("port=70000")).is_err());
        assert!(parse_ports(None).is_err());
    }
}
