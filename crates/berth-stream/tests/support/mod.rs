//! What the integration tests share: a runtime that records what it is given, a small
//! SPDY/3.1 client built on the crate's framing, a WebSocket client (tokio-tungstenite), and
//! raw HTTP upgrades.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_stream::spdy::frame::{self, Frame, FLAG_FIN};
use berth_stream::spdy::zlib::{Deflater, Inflater};
use berth_stream::{
    AttachRequest, Config, ExecRequest, Outcome, PortForwardRequest, Runtime, Server, StreamIo,
    TerminalSize,
};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Every wait of a test ends by this.
pub const WAIT: Duration = Duration::from_secs(20);

/// What the runtime saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Exec(Vec<String>),
    Attach(String),
    Stdin(Vec<u8>),
    StdinClosed,
    Resize(TerminalSize),
    Cancelled,
    Dial(u16),
}

/// A runtime whose commands are tests' scripts:
/// - `out TEXT CODE`: TEXT on stdout, `err:TEXT` on stderr, exit CODE;
/// - `cat`: stdin to stdout until EOF, then exit 0;
/// - `big N`: N bytes of a pattern on stdout;
/// - `resize N`: wait for N terminal sizes, then exit 0;
/// - `hang`: wait until the client is gone;
/// - `fail MSG`: the runtime fails with MSG.
///
/// `port_forward` dials 127.0.0.1:port, except port 1, which fails.
#[derive(Default)]
pub struct TestRuntime {
    pub events: Mutex<Vec<Event>>,
    pub notify: tokio::sync::Notify,
}

impl TestRuntime {
    fn record(&self, e: Event) {
        self.events.lock().unwrap().push(e);
        self.notify.notify_waiters();
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the events.
    pub async fn wait_for(&self, pred: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        tokio::time::timeout(WAIT, async {
            loop {
                let n = self.notify.notified();
                tokio::pin!(n);
                n.as_mut().enable();
                let ev = self.events();
                if pred(&ev) {
                    return ev;
                }
                n.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("runtime events never matched: {:?}", self.events()))
    }

    async fn run(&self, cmd: Vec<String>, mut io: StreamIo) -> Outcome {
        let arg = |i: usize| cmd.get(i).cloned().unwrap_or_default();
        match arg(0).as_str() {
            "out" => {
                if let Some(o) = io.stdout.as_mut() {
                    o.write_all(arg(1).as_bytes()).await.unwrap();
                }
                if let Some(e) = io.stderr.as_mut() {
                    e.write_all(format!("err:{}", arg(1)).as_bytes())
                        .await
                        .unwrap();
                }
                Outcome::Exited(arg(2).parse().unwrap_or(0))
            }
            "cat" => {
                let mut stdin = io.stdin.take().expect("stdin");
                let mut buf = vec![0u8; 8192];
                loop {
                    let n = stdin.read(&mut buf).await.unwrap();
                    if n == 0 {
                        self.record(Event::StdinClosed);
                        break;
                    }
                    self.record(Event::Stdin(buf[..n].to_vec()));
                    if let Some(o) = io.stdout.as_mut() {
                        o.write_all(&buf[..n]).await.unwrap();
                    }
                }
                Outcome::Exited(0)
            }
            "big" => {
                let n: usize = arg(1).parse().unwrap();
                let out = io.stdout.as_mut().expect("stdout");
                let mut sent = 0;
                while sent < n {
                    let k = (n - sent).min(64 * 1024);
                    out.write_all(&pattern(sent, k)).await.unwrap();
                    sent += k;
                }
                Outcome::Exited(0)
            }
            "resize" => {
                let n: usize = arg(1).parse().unwrap();
                let mut r = io.resize.take().expect("resize");
                for _ in 0..n {
                    let s = r.recv().await.expect("a size");
                    self.record(Event::Resize(s));
                }
                Outcome::Exited(0)
            }
            "hang" => {
                io.client_gone.wait().await;
                self.record(Event::Cancelled);
                Outcome::Exited(137)
            }
            "fail" => Outcome::Failed(arg(1)),
            other => panic!("unknown test command {other}"),
        }
    }
}

/// The bytes `start..start+n` of the test pattern.
pub fn pattern(start: usize, n: usize) -> Vec<u8> {
    (start..start + n).map(|i| (i % 251) as u8).collect()
}

impl Runtime for TestRuntime {
    type Conn = TcpStream;

    async fn exec(&self, req: ExecRequest, io: StreamIo) -> Outcome {
        self.record(Event::Exec(req.cmd.clone()));
        self.run(req.cmd, io).await
    }

    async fn attach(&self, req: AttachRequest, io: StreamIo) -> Outcome {
        self.record(Event::Attach(req.container_id.clone()));
        self.run(vec!["cat".into()], io).await
    }

    async fn port_forward(&self, _pod: &str, port: u16) -> std::io::Result<TcpStream> {
        self.record(Event::Dial(port));
        if port == 1 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "nothing listens on port 1",
            ));
        }
        TcpStream::connect(("127.0.0.1", port)).await
    }
}

/// A server on a fresh port.
pub struct Harness {
    pub server: Server<TestRuntime>,
    pub runtime: Arc<TestRuntime>,
    pub addr: SocketAddr,
}

pub async fn harness() -> Harness {
    harness_with(|_| {}).await
}

pub async fn harness_with(tune: impl FnOnce(&mut Config)) -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = Config::new(format!("http://{addr}"));
    tune(&mut cfg);
    let runtime = Arc::new(TestRuntime::default());
    let server = Server::new(runtime.clone(), cfg);
    let s = server.clone();
    tokio::spawn(async move { s.serve(listener).await });
    Harness {
        server,
        runtime,
        addr,
    }
}

pub fn exec_req(cmd: &[&str], stdin: bool, stdout: bool, stderr: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout,
        stderr,
    }
}

pub fn pf_req() -> PortForwardRequest {
    PortForwardRequest {
        pod_sandbox_id: "pod1".into(),
        ports: vec![],
    }
}

/// The path of a URL the server handed out.
pub fn path_of(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    rest[rest.find('/').unwrap()..].to_string()
}

/// An HTTP response head.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Head {
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Sends a request with `headers` and reads the response head (and, for a refusal, the
/// body), leaving the socket at the first byte after the head.
pub async fn request(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (Head, TcpStream) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // As Go's clients: small frames (window updates) go out at once, not after Nagle's wait.
    s.set_nodelay(true).unwrap();
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n == 1,
            "connection closed in the response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let text = String::from_utf8(buf).unwrap();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let mut body = String::new();
    if status != 101 {
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let mut b = vec![0u8; len];
        s.read_exact(&mut b).await.unwrap();
        body = String::from_utf8(b).unwrap();
    }
    (
        Head {
            status,
            headers,
            body,
        },
        s,
    )
}

/// A SPDY upgrade request for `protocols`.
pub async fn spdy_upgrade(addr: SocketAddr, path: &str, protocols: &[&str]) -> (Head, TcpStream) {
    let mut h = vec![("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
    for p in protocols {
        h.push(("X-Stream-Protocol-Version", p));
    }
    request(addr, path, &h).await
}

/// What happens on a client stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Reply,
    Data(Bytes),
    Fin,
    Reset(u32),
}

struct ClientShared {
    wr: tokio::sync::Mutex<(OwnedWriteHalf, Deflater)>,
    streams: Mutex<HashMap<u32, mpsc::UnboundedSender<Ev>>>,
    goaway: Mutex<bool>,
    /// Bytes the server sent beyond the windows we gave (must stay 0 for a peer that keeps
    /// windows).
    overrun: Mutex<i64>,
}

/// A SPDY/3.1 client on the crate's own framing, for tests. With `keeps_windows` it
/// acknowledges every DATA frame at once and checks the server keeps within its windows;
/// without, it behaves as spdystream: never a WINDOW_UPDATE.
#[derive(Clone)]
pub struct SpdyClient {
    shared: Arc<ClientShared>,
    next_id: Arc<Mutex<u32>>,
    pub closed: Arc<tokio::sync::Notify>,
    closed_flag: Arc<Mutex<bool>>,
}

pub struct ClientStream {
    pub id: u32,
    pub rx: mpsc::UnboundedReceiver<Ev>,
    client: SpdyClient,
}

impl SpdyClient {
    pub fn start(sock: TcpStream, keeps_windows: bool) -> SpdyClient {
        let (mut rd, wr) = sock.into_split();
        let shared = Arc::new(ClientShared {
            wr: tokio::sync::Mutex::new((wr, Deflater::new())),
            streams: Mutex::new(HashMap::new()),
            goaway: Mutex::new(false),
            overrun: Mutex::new(0),
        });
        let client = SpdyClient {
            shared: shared.clone(),
            next_id: Arc::new(Mutex::new(1)),
            closed: Arc::new(tokio::sync::Notify::new()),
            closed_flag: Arc::new(Mutex::new(false)),
        };
        let c = client.clone();
        tokio::spawn(async move {
            let mut inf = Inflater::new();
            let mut buf = BytesMut::new();
            let mut session_window: i64 = 65536;
            let mut windows: HashMap<u32, i64> = HashMap::new();
            'read: loop {
                loop {
                    match frame::decode(&buf, &mut inf) {
                        Ok(Some((f, n))) => {
                            let _ = buf.split_to(n);
                            if let Frame::Data {
                                stream_id, data, ..
                            } = &f
                            {
                                if keeps_windows {
                                    let w = windows.entry(*stream_id).or_insert(65536);
                                    *w -= data.len() as i64;
                                    session_window -= data.len() as i64;
                                    let over = (-*w).max(-session_window).max(0);
                                    let mut o = c.shared.overrun.lock().unwrap();
                                    *o = (*o).max(over);
                                }
                            }
                            c.on_frame(f, keeps_windows, &mut windows, &mut session_window)
                                .await;
                        }
                        Ok(None) => break,
                        Err(e) => panic!("the server sent a bad frame: {e}"),
                    }
                }
                let mut tmp = [0u8; 65536];
                match rd.read(&mut tmp).await {
                    Ok(0) | Err(_) => break 'read,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
            *c.closed_flag.lock().unwrap() = true;
            c.shared.streams.lock().unwrap().clear();
            c.closed.notify_waiters();
        });
        client
    }

    async fn on_frame(
        &self,
        f: Frame,
        keeps_windows: bool,
        windows: &mut HashMap<u32, i64>,
        session: &mut i64,
    ) {
        let send = |id: u32, ev: Ev| {
            if let Some(tx) = self.shared.streams.lock().unwrap().get(&id) {
                let _ = tx.send(ev);
            }
        };
        match f {
            Frame::SynReply { stream_id, .. } => send(stream_id, Ev::Reply),
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let n = data.len() as u32;
                if !data.is_empty() {
                    send(stream_id, Ev::Data(data));
                }
                if flags & FLAG_FIN != 0 {
                    send(stream_id, Ev::Fin);
                }
                if keeps_windows && n > 0 {
                    *windows.entry(stream_id).or_insert(65536) += i64::from(n);
                    *session += i64::from(n);
                    self.send_frame(Frame::WindowUpdate {
                        stream_id,
                        delta: n,
                    })
                    .await;
                    self.send_frame(Frame::WindowUpdate {
                        stream_id: 0,
                        delta: n,
                    })
                    .await;
                }
            }
            Frame::RstStream { stream_id, status } => send(stream_id, Ev::Reset(status)),
            Frame::GoAway { .. } => {
                // As spdystream: no new streams, and our side of the connection ends.
                *self.shared.goaway.lock().unwrap() = true;
                self.abort().await;
            }
            Frame::Ping { id } if id % 2 == 0 => self.send_frame(Frame::Ping { id }).await,
            _ => {}
        }
    }

    pub async fn send_frame(&self, f: Frame) {
        let mut g = self.shared.wr.lock().await;
        let (wr, def) = &mut *g;
        let mut out = BytesMut::new();
        frame::encode(&f, def, &mut out).unwrap();
        let _ = wr.write_all(&out).await;
    }

    /// Opens a stream with `headers` (names as Go writes them: lowercase) and waits for
    /// the server's reply.
    pub async fn open(&self, headers: &[(&str, &str)]) -> ClientStream {
        let s = self.open_no_wait(headers).await;
        self.expect_reply(s).await
    }

    pub async fn expect_reply(&self, mut s: ClientStream) -> ClientStream {
        let ev = tokio::time::timeout(WAIT, s.rx.recv())
            .await
            .expect("a reply in time");
        assert_eq!(ev, Some(Ev::Reply), "stream {} was not accepted", s.id);
        s
    }

    pub async fn open_no_wait(&self, headers: &[(&str, &str)]) -> ClientStream {
        let id = {
            let mut n = self.next_id.lock().unwrap();
            let id = *n;
            *n += 2;
            id
        };
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared.streams.lock().unwrap().insert(id, tx);
        self.send_frame(Frame::SynStream {
            stream_id: id,
            associated_id: 0,
            priority: 0,
            flags: 0,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        })
        .await;
        ClientStream {
            id,
            rx,
            client: self.clone(),
        }
    }

    pub fn goaway(&self) -> bool {
        *self.shared.goaway.lock().unwrap()
    }

    pub fn overrun(&self) -> i64 {
        *self.shared.overrun.lock().unwrap()
    }

    /// Waits until the server closed the connection.
    pub async fn wait_closed(&self) {
        tokio::time::timeout(WAIT, async {
            loop {
                let n = self.closed.notified();
                tokio::pin!(n);
                n.as_mut().enable();
                if *self.closed_flag.lock().unwrap() {
                    return;
                }
                n.await;
            }
        })
        .await
        .expect("the server closes the connection");
    }

    /// Drops the connection at once.
    pub async fn abort(&self) {
        let mut g = self.shared.wr.lock().await;
        let _ = g.0.shutdown().await;
    }
}

impl ClientStream {
    pub async fn write(&self, data: &[u8]) {
        self.client
            .send_frame(Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: Bytes::copy_from_slice(data),
            })
            .await;
    }

    pub async fn close(&self) {
        self.client
            .send_frame(Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            })
            .await;
    }

    /// Everything until FIN (or reset, or the connection's end).
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .expect("stream ends in time")
            {
                Some(Ev::Data(d)) => out.extend_from_slice(&d),
                Some(Ev::Reply) => {}
                Some(Ev::Fin) | Some(Ev::Reset(_)) | None => return out,
            }
        }
    }

    /// At least `n` bytes.
    pub async fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n {
            match tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .expect("data in time")
            {
                Some(Ev::Data(d)) => out.extend_from_slice(&d),
                Some(Ev::Reply) => {}
                other => panic!("stream ended after {} of {n} bytes: {other:?}", out.len()),
            }
        }
        out
    }
}

/// A WebSocket client connection with subprotocols `protocols`; the HTTP response comes back
/// as an error for a refused upgrade.
pub async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    protocols: &[&str],
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<TcpStream>,
        Option<String>,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    if !protocols.is_empty() {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            protocols.join(", ").parse().unwrap(),
        );
    }
    let sock = TcpStream::connect(addr).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, sock).await?;
    let p = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_string());
    Ok((ws, p))
}

/// A TCP echo server on a fresh port; returns the port.
pub async fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}
