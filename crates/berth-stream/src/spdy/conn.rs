//! A SPDY/3.1 connection, server side: a reader task, a writer task, and stream handles.
//!
//! - The reader inflates every header block in order (one context per direction), answers
//!   PING, applies SETTINGS and WINDOW_UPDATE, hands new streams to the session through a
//!   bounded queue, and passes DATA to each stream's bounded queue in pieces of at most
//!   [`PIECE`] bytes. When a stream's queue is full the reader waits: the peer is then held
//!   back by TCP, so a peer that ignores flow control still cannot make us buffer more than
//!   [`STREAM_QUEUE`] pieces a stream.
//! - The writer owns the deflate context and the socket's write half; everything we send goes
//!   through one bounded queue, so a peer that does not read holds back whoever sends.
//! - Flow control: what we send on a stream takes from that stream's window and from the
//!   session window (SPDY/3.1 has both; both start at 64 KiB); WINDOW_UPDATE and SETTINGS
//!   INITIAL_WINDOW_SIZE give them back. What we receive is acknowledged with WINDOW_UPDATEs
//!   (stream and session) once the session has consumed half a window of it.
//! - Peers that do not keep windows. The SPDY library of Kubernetes (moby/spdystream, under
//!   kubectl, the kubelet, crictl and critest) neither sends nor reads WINDOW_UPDATE. A peer
//!   is trusted to keep windows once it has sent a WINDOW_UPDATE or an INITIAL_WINDOW_SIZE;
//!   before that, when a window runs out, we wait [`ConnConfig::window_grace`] for one, and
//!   if none comes the peer is taken not to keep windows and they are no longer enforced on
//!   this connection (TCP is then its only flow control, as between the kubelet and kubectl).
//!   A peer that keeps windows never waits for the grace: its updates arrive long before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

use super::frame::{
    self, goaway, rst, setting, Frame, FrameError, Head, FLAG_FIN, HEAD_LEN, MAX_ID,
};
use super::zlib::{Deflater, HeaderBlock, Inflater};

/// Bytes of DATA a stream's queue holds per entry at most.
pub const PIECE: usize = 16 * 1024;
/// Entries in a stream's inbound queue.
pub const STREAM_QUEUE: usize = 8;
/// The initial window of SPDY/3.1, for streams and for the session.
pub const INITIAL_WINDOW: u32 = 64 * 1024;
/// Frames waiting for the writer.
const OUT_QUEUE: usize = 64;
/// The largest DATA frame we send.
const MAX_SEND_FRAME: usize = 16 * 1024;
/// What the writer gathers before a write.
const WRITE_BATCH: usize = 64 * 1024;

/// How a connection behaves; the defaults suit the CRI streaming server.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Streams open at once; more are refused (RST_STREAM REFUSED_STREAM).
    pub max_streams: usize,
    /// How long a window may stay empty, before the peer has ever sent a WINDOW_UPDATE,
    /// until the peer is taken not to keep windows.
    pub window_grace: Duration,
    /// A connection on which nothing moves either way for this long is ended; a send that
    /// waits this long for a window fails.
    pub idle_timeout: Duration,
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            max_streams: 256,
            window_grace: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(4 * 60 * 60),
        }
    }
}

/// Why a stream operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    #[error("spdy connection closed")]
    Closed,
    #[error("spdy stream {0} was reset")]
    Reset(u32),
    #[error("spdy stream {0} already finished sending")]
    Finished(u32),
    #[error("spdy stream {0}: no window for {1:?}")]
    Stalled(u32, Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// The peer has not shown whether it keeps windows.
    Unknown,
    Enforced,
    Off,
}

struct StreamState {
    inbound: Option<mpsc::Sender<Bytes>>,
    send_window: i64,
    unacked: u32,
    local_fin: bool,
    remote_fin: bool,
    reset: bool,
}

struct State {
    streams: HashMap<u32, StreamState>,
    session_window: i64,
    session_unacked: u32,
    peer_initial_window: i64,
    flow: Flow,
    last_peer_stream: u32,
    goaway_received: bool,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Woken on every window change, reset and close.
    changed: Notify,
    out: mpsc::Sender<Out>,
    gone: watch::Sender<bool>,
    /// Milliseconds since `epoch` at the last frame read or written.
    activity: AtomicU64,
    epoch: std::time::Instant,
    cfg: ConnConfig,
}

enum Out {
    Frame(Frame),
    Shutdown(oneshot::Sender<()>),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.activity.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.activity.load(Ordering::Relaxed)))
    }

    async fn send(&self, f: Frame) -> Result<(), ConnError> {
        self.out
            .send(Out::Frame(f))
            .await
            .map_err(|_| ConnError::Closed)
    }

    fn mark_closed(&self) {
        {
            let mut st = self.lock();
            st.closed = true;
            for s in st.streams.values_mut() {
                s.inbound = None;
            }
        }
        self.changed.notify_waiters();
        self.gone.send_replace(true);
    }

    /// Forgets a stream once both sides are done with it.
    fn maybe_remove(st: &mut State, id: u32) {
        if let Some(s) = st.streams.get(&id) {
            if s.reset || (s.local_fin && s.remote_fin) {
                st.streams.remove(&id);
            }
        }
    }
}

/// A new stream the peer opened, with its headers.
pub struct Stream {
    pub id: u32,
    pub headers: HeaderBlock,
    rx: mpsc::Receiver<Bytes>,
    conn: Arc<Shared>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("headers", &self.headers)
            .finish()
    }
}

impl Stream {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.split('\0').next().unwrap_or(""))
    }

    /// Splits the stream into what reads and what writes.
    pub fn split(self) -> (RecvHalf, SendHalf) {
        (
            RecvHalf {
                id: self.id,
                rx: self.rx,
                conn: self.conn.clone(),
            },
            SendHalf {
                id: self.id,
                conn: self.conn,
            },
        )
    }
}

/// The reading side of a stream.
pub struct RecvHalf {
    id: u32,
    rx: mpsc::Receiver<Bytes>,
    conn: Arc<Shared>,
}

impl RecvHalf {
    /// The next piece of data; `None` once the peer finished the stream, reset it, or the
    /// connection ended. Consumed data is acknowledged to the peer.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let b = self.rx.recv().await?;
        self.ack(b.len()).await;
        Some(b)
    }

    async fn ack(&self, n: usize) {
        let (stream_delta, session_delta) = {
            let mut st = self.conn.lock();
            st.session_unacked += n as u32;
            let session = take_if_half(&mut st.session_unacked);
            let stream = st.streams.get_mut(&self.id).map(|s| {
                s.unacked += n as u32;
                take_if_half(&mut s.unacked)
            });
            (stream.flatten(), session)
        };
        if let Some(delta) = stream_delta {
            let _ = self
                .conn
                .send(Frame::WindowUpdate {
                    stream_id: self.id,
                    delta,
                })
                .await;
        }
        if let Some(delta) = session_delta {
            let _ = self
                .conn
                .send(Frame::WindowUpdate {
                    stream_id: 0,
                    delta,
                })
                .await;
        }
    }
}

fn take_if_half(unacked: &mut u32) -> Option<u32> {
    if *unacked >= INITIAL_WINDOW / 2 {
        Some(std::mem::take(unacked))
    } else {
        None
    }
}

/// The writing side of a stream; clones write to the same stream.
#[derive(Clone)]
pub struct SendHalf {
    id: u32,
    conn: Arc<Shared>,
}

impl SendHalf {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Accepts the stream (SYN_REPLY with no headers).
    pub async fn reply(&self) -> Result<(), ConnError> {
        self.conn
            .send(Frame::SynReply {
                stream_id: self.id,
                flags: 0,
                headers: Vec::new(),
            })
            .await
    }

    /// Sends `data`, in frames that fit the windows; waits for window as needed.
    pub async fn send(&self, mut data: Bytes) -> Result<(), ConnError> {
        while !data.is_empty() {
            let n = self.reserve(data.len().min(MAX_SEND_FRAME)).await?;
            let piece = data.split_to(n);
            self.conn
                .send(Frame::Data {
                    stream_id: self.id,
                    flags: 0,
                    data: piece,
                })
                .await?;
        }
        Ok(())
    }

    /// Ends our side of the stream (an empty DATA frame with FIN).
    pub async fn finish(&self) -> Result<(), ConnError> {
        {
            let mut st = self.conn.lock();
            let s = st
                .streams
                .get_mut(&self.id)
                .ok_or(ConnError::Reset(self.id))?;
            if s.reset {
                return Err(ConnError::Reset(self.id));
            }
            if s.local_fin {
                return Ok(());
            }
            s.local_fin = true;
            Shared::maybe_remove(&mut st, self.id);
        }
        self.conn
            .send(Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            })
            .await
    }

    /// Resets the stream with `status`.
    pub async fn reset(&self, status: u32) {
        {
            let mut st = self.conn.lock();
            match st.streams.get_mut(&self.id) {
                Some(s) if !s.reset => {
                    s.reset = true;
                    s.inbound = None;
                }
                _ => return,
            }
            Shared::maybe_remove(&mut st, self.id);
        }
        self.conn.changed.notify_waiters();
        let _ = self
            .conn
            .send(Frame::RstStream {
                stream_id: self.id,
                status,
            })
            .await;
    }

    /// Takes up to `want` bytes of window, waiting for some if there is none.
    async fn reserve(&self, want: usize) -> Result<usize, ConnError> {
        let grace = self.conn.cfg.window_grace;
        let limit = self.conn.cfg.idle_timeout;
        let started = Instant::now();
        let mut grace_until: Option<Instant> = None;
        loop {
            let notified = self.conn.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut guard = self.conn.lock();
                let st = &mut *guard;
                if st.closed {
                    return Err(ConnError::Closed);
                }
                let s = st
                    .streams
                    .get_mut(&self.id)
                    .ok_or(ConnError::Reset(self.id))?;
                if s.reset {
                    return Err(ConnError::Reset(self.id));
                }
                if s.local_fin {
                    return Err(ConnError::Finished(self.id));
                }
                if st.flow == Flow::Off {
                    return Ok(want);
                }
                let avail = st.session_window.min(s.send_window);
                if avail > 0 {
                    let n = want.min(avail as usize);
                    s.send_window -= n as i64;
                    st.session_window -= n as i64;
                    return Ok(n);
                }
                if st.flow == Flow::Unknown {
                    let until = *grace_until.get_or_insert_with(|| Instant::now() + grace);
                    if Instant::now() >= until {
                        st.flow = Flow::Off;
                        return Ok(want);
                    }
                }
            }
            let deadline = match grace_until {
                Some(g) => g.min(started + limit),
                None => started + limit,
            };
            if tokio::time::timeout_at(deadline, notified).await.is_err()
                && Instant::now() >= started + limit
            {
                return Err(ConnError::Stalled(self.id, limit));
            }
        }
    }
}

/// The server's side of one SPDY connection.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    reader_done: watch::Receiver<bool>,
}

impl Connection {
    /// Starts serving `io`; new streams arrive on the returned queue, which ends when the
    /// connection does or the peer sent GOAWAY.
    pub fn start<IO>(io: IO, cfg: ConnConfig) -> (Connection, mpsc::Receiver<Stream>)
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
        let (gone, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                streams: HashMap::new(),
                session_window: i64::from(INITIAL_WINDOW),
                session_unacked: 0,
                peer_initial_window: i64::from(INITIAL_WINDOW),
                flow: Flow::Unknown,
                last_peer_stream: 0,
                goaway_received: false,
                closed: false,
            }),
            changed: Notify::new(),
            out: out_tx,
            gone,
            activity: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            cfg,
        });
        let (accept_tx, accept_rx) = mpsc::channel(16);
        let (done_tx, done_rx) = watch::channel(false);
        tokio::spawn(writer(wr, out_rx, shared.clone()));
        let s = shared.clone();
        tokio::spawn(async move {
            let result = reader(rd, s.clone(), accept_tx).await;
            if let Err(e) = result {
                let last = s.lock().last_peer_stream;
                let status = match e {
                    ReadEnd::Protocol | ReadEnd::Session => goaway::PROTOCOL_ERROR,
                    ReadEnd::Io | ReadEnd::Idle => goaway::OK,
                };
                if !matches!(e, ReadEnd::Io | ReadEnd::Idle) {
                    let _ = s.out.try_send(Out::Frame(Frame::GoAway {
                        last_good_stream_id: last,
                        status,
                    }));
                }
            }
            s.mark_closed();
            done_tx.send_replace(true);
        });
        (
            Connection {
                shared,
                reader_done: done_rx,
            },
            accept_rx,
        )
    }

    /// A receiver that turns `true` when the peer went away (the connection ended by EOF,
    /// error, idle timeout or a protocol error).
    pub fn gone(&self) -> watch::Receiver<bool> {
        self.shared.gone.subscribe()
    }

    /// Ends the connection politely: GOAWAY, everything queued written, our side shut,
    /// then waits up to `linger` for the peer to close its side, so that nothing we sent is
    /// lost to a reset.
    pub async fn close(&self, linger: Duration) {
        let last = self.shared.lock().last_peer_stream;
        let _ = self
            .shared
            .send(Frame::GoAway {
                last_good_stream_id: last,
                status: goaway::OK,
            })
            .await;
        let (tx, rx) = oneshot::channel();
        if self.shared.out.send(Out::Shutdown(tx)).await.is_ok() {
            let _ = tokio::time::timeout(linger, rx).await;
        }
        let mut done = self.reader_done.clone();
        let _ = tokio::time::timeout(linger, done.wait_for(|d| *d)).await;
        self.shared.mark_closed();
    }
}

async fn writer<W: AsyncWrite>(wr: W, mut rx: mpsc::Receiver<Out>, shared: Arc<Shared>) {
    tokio::pin!(wr);
    let mut deflater = Deflater::new();
    let mut buf = BytesMut::with_capacity(WRITE_BATCH);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut shutdown = None;
        while let Some(item) = next.take() {
            match item {
                Out::Frame(f) => {
                    if frame::encode(&f, &mut deflater, &mut buf).is_err() {
                        // Our own headers always deflate; if zlib fails, the context is lost.
                        shared.mark_closed();
                        return;
                    }
                }
                Out::Shutdown(tx) => {
                    shutdown = Some(tx);
                    break;
                }
            }
            if buf.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
                shared.mark_closed();
                return;
            }
            buf.clear();
            shared.touch();
        }
        if let Some(tx) = shutdown {
            let _ = wr.shutdown().await;
            let _ = tx.send(());
            return;
        }
    }
}

enum ReadEnd {
    Io,
    Idle,
    Protocol,
    Session,
}

impl From<FrameError> for ReadEnd {
    fn from(_: FrameError) -> Self {
        ReadEnd::Protocol
    }
}

async fn read_exact_idle<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut [u8],
    shared: &Shared,
) -> Result<(), ReadEnd> {
    loop {
        let limit = shared.cfg.idle_timeout;
        match tokio::time::timeout(limit, rd.read_exact(buf)).await {
            Ok(Ok(_)) => {
                shared.touch();
                return Ok(());
            }
            Ok(Err(_)) => return Err(ReadEnd::Io),
            Err(_) if shared.idle_for() >= limit => return Err(ReadEnd::Idle),
            // Only a one-byte read is retried: it either took its byte or took nothing.
            Err(_) if buf.len() != 1 => return Err(ReadEnd::Idle),
            Err(_) => {}
        }
    }
}

async fn reader<R: AsyncRead>(
    rd: R,
    shared: Arc<Shared>,
    accept: mpsc::Sender<Stream>,
) -> Result<(), ReadEnd> {
    tokio::pin!(rd);
    let mut inflater = Inflater::new();
    let mut head = [0u8; HEAD_LEN];
    let mut accept = Some(accept);
    loop {
        // A head read that times out is safe to retry only when no byte of it was read: use
        // a one-byte probe first, then the rest.
        read_exact_idle(&mut rd, &mut head[..1], &shared).await?;
        read_exact_idle(&mut rd, &mut head[1..], &shared).await?;
        match Head::parse(&head)? {
            Head::Control { kind, flags, len } => {
                let mut p = vec![0u8; len];
                read_exact_idle(&mut rd, &mut p, &shared).await?;
                let f = frame::decode_control(kind, flags, &p, &mut inflater)?;
                on_control(f, &shared, &mut accept).await?;
            }
            Head::Data {
                stream_id,
                flags,
                len,
            } => {
                if stream_id == 0 {
                    return Err(ReadEnd::Protocol);
                }
                let mut left = len;
                loop {
                    let n = left.min(PIECE);
                    let mut p = BytesMut::zeroed(n);
                    read_exact_idle(&mut rd, &mut p, &shared).await?;
                    left -= n;
                    let fin = left == 0 && flags & FLAG_FIN != 0;
                    on_data(stream_id, p.freeze(), fin, &shared).await?;
                    if left == 0 {
                        break;
                    }
                }
            }
        }
    }
}

async fn on_data(id: u32, data: Bytes, fin: bool, shared: &Arc<Shared>) -> Result<(), ReadEnd> {
    let (tx, known) = {
        let st = shared.lock();
        match st.streams.get(&id) {
            Some(s) if !s.remote_fin && !s.reset => (s.inbound.clone(), true),
            Some(_) => (None, true),
            None => (None, id <= st.last_peer_stream),
        }
    };
    if !known {
        let _ = shared
            .send(Frame::RstStream {
                stream_id: id,
                status: rst::INVALID_STREAM,
            })
            .await;
        return Ok(());
    }
    let len = data.len();
    let delivered = match tx {
        Some(tx) if !data.is_empty() => tx.send(data).await.is_ok(),
        _ => false,
    };
    if !delivered && len > 0 {
        // Nobody reads this stream: give the window back at once.
        let session = {
            let mut st = shared.lock();
            st.session_unacked += len as u32;
            take_if_half(&mut st.session_unacked)
        };
        if let Some(delta) = session {
            let _ = shared
                .send(Frame::WindowUpdate {
                    stream_id: 0,
                    delta,
                })
                .await;
        }
    }
    if fin {
        let mut st = shared.lock();
        if let Some(s) = st.streams.get_mut(&id) {
            s.remote_fin = true;
            s.inbound = None;
        }
        Shared::maybe_remove(&mut st, id);
    }
    Ok(())
}

async fn on_control(
    f: Frame,
    shared: &Arc<Shared>,
    accept: &mut Option<mpsc::Sender<Stream>>,
) -> Result<(), ReadEnd> {
    match f {
        Frame::SynStream {
            stream_id,
            flags,
            headers,
            ..
        } => {
            let refuse = {
                let mut st = shared.lock();
                if stream_id % 2 == 0 || stream_id <= st.last_peer_stream {
                    // Stream ids of the client are odd and grow (section 2.3.2).
                    return Err(ReadEnd::Session);
                }
                st.last_peer_stream = stream_id;
                st.goaway_received
                    || st.closed
                    || st.streams.len() >= shared.cfg.max_streams
                    || accept.is_none()
            };
            if refuse {
                let _ = shared
                    .send(Frame::RstStream {
                        stream_id,
                        status: rst::REFUSED_STREAM,
                    })
                    .await;
                return Ok(());
            }
            let (tx, rx) = mpsc::channel(STREAM_QUEUE);
            let fin = flags & FLAG_FIN != 0;
            {
                let mut st = shared.lock();
                let window = st.peer_initial_window;
                st.streams.insert(
                    stream_id,
                    StreamState {
                        inbound: if fin { None } else { Some(tx) },
                        send_window: window,
                        unacked: 0,
                        local_fin: false,
                        remote_fin: fin,
                        reset: false,
                    },
                );
            }
            let stream = Stream {
                id: stream_id,
                headers,
                rx,
                conn: shared.clone(),
            };
            let full = match accept.as_ref().map(|a| a.try_send(stream)) {
                Some(Ok(())) => false,
                Some(Err(mpsc::error::TrySendError::Closed(_))) => {
                    *accept = None;
                    true
                }
                _ => true,
            };
            if full {
                {
                    let mut st = shared.lock();
                    st.streams.remove(&stream_id);
                }
                let _ = shared
                    .send(Frame::RstStream {
                        stream_id,
                        status: rst::REFUSED_STREAM,
                    })
                    .await;
            }
        }
        Frame::SynReply { stream_id, .. } => {
            // We open no streams, so there is nothing to reply to.
            let _ = shared
                .send(Frame::RstStream {
                    stream_id,
                    status: rst::PROTOCOL_ERROR,
                })
                .await;
        }
        Frame::Headers { stream_id, .. } => {
            let known = shared.lock().streams.contains_key(&stream_id);
            if !known {
                let _ = shared
                    .send(Frame::RstStream {
                        stream_id,
                        status: rst::INVALID_STREAM,
                    })
                    .await;
            }
        }
        Frame::RstStream { stream_id, .. } => {
            {
                let mut st = shared.lock();
                if let Some(s) = st.streams.get_mut(&stream_id) {
                    s.reset = true;
                    s.inbound = None;
                }
                Shared::maybe_remove(&mut st, stream_id);
            }
            shared.changed.notify_waiters();
        }
        Frame::Settings { entries, .. } => {
            {
                let mut st = shared.lock();
                for e in entries {
                    if e.id == setting::INITIAL_WINDOW_SIZE && e.value <= MAX_ID {
                        let delta = i64::from(e.value) - st.peer_initial_window;
                        st.peer_initial_window = i64::from(e.value);
                        for s in st.streams.values_mut() {
                            s.send_window += delta;
                        }
                        st.flow = Flow::Enforced;
                    }
                }
            }
            shared.changed.notify_waiters();
        }
        Frame::Ping { id } => {
            // Odd ids are the client's; even ones would be answers to ours (we send none).
            if id % 2 == 1 {
                let _ = shared.send(Frame::Ping { id }).await;
            }
        }
        Frame::GoAway { .. } => {
            shared.lock().goaway_received = true;
            // No new streams; the ones open go on.
            *accept = None;
        }
        Frame::WindowUpdate { stream_id, delta } => {
            {
                let mut st = shared.lock();
                if st.flow == Flow::Unknown {
                    st.flow = Flow::Enforced;
                }
                let max = i64::from(MAX_ID);
                if stream_id == 0 {
                    st.session_window = (st.session_window + i64::from(delta)).min(max);
                } else if let Some(s) = st.streams.get_mut(&stream_id) {
                    s.send_window = (s.send_window + i64::from(delta)).min(max);
                }
            }
            shared.changed.notify_waiters();
        }
        Frame::Data { .. } | Frame::Unknown { .. } => {}
    }
    Ok(())
}

/// Is the peer considered to keep windows? For tests.
#[cfg(test)]
fn flow_of(c: &Connection) -> Flow {
    c.shared.lock().flow
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ping_is_answered_and_windows_are_accounted() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (conn, mut streams) = Connection::start(server, ConnConfig::default());
        let (mut crd, mut cwr) = tokio::io::split(client);
        let mut d = Deflater::new();
        let mut out = BytesMut::new();
        frame::encode(&Frame::Ping { id: 1 }, &mut d, &mut out).unwrap();
        frame::encode(
            &Frame::SynStream {
                stream_id: 1,
                associated_id: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "stdout".into())],
            },
            &mut d,
            &mut out,
        )
        .unwrap();
        cwr.write_all(&out).await.unwrap();
        let s = streams.recv().await.unwrap();
        assert_eq!(s.header("streamtype"), Some("stdout"));
        let (_r, w) = s.split();
        assert_eq!(flow_of(&conn), Flow::Unknown);
        // A window update of 10 bytes on a fresh stream: 64 KiB + 10 may go out.
        out.clear();
        frame::encode(
            &Frame::WindowUpdate {
                stream_id: 1,
                delta: 10,
            },
            &mut d,
            &mut out,
        )
        .unwrap();
        frame::encode(
            &Frame::WindowUpdate {
                stream_id: 0,
                delta: 10,
            },
            &mut d,
            &mut out,
        )
        .unwrap();
        cwr.write_all(&out).await.unwrap();
        // Read back PING.
        let mut inf = Inflater::new();
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        loop {
            let n = crd.read(&mut tmp).await.unwrap();
            buf.extend_from_slice(&tmp[..n]);
            if let Some((f, _)) = frame::decode(&buf, &mut inf).unwrap() {
                assert_eq!(f, Frame::Ping { id: 1 });
                break;
            }
        }
        tokio::time::timeout(Duration::from_secs(5), async {
            while flow_of(&conn) != Flow::Enforced {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        let n = w.reserve(usize::MAX).await.unwrap();
        assert_eq!(n, 65536 + 10);
        // The window is empty now and the peer keeps windows: a send waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(400), w.reserve(1))
                .await
                .is_err()
        );
    }

    /// A server connection with one open stream (id 1), and the client's ends.
    async fn one_stream(
        cfg: ConnConfig,
    ) -> (
        Connection,
        SendHalf,
        tokio::io::WriteHalf<tokio::io::DuplexStream>,
        tokio::io::ReadHalf<tokio::io::DuplexStream>,
        Deflater,
    ) {
        let (client, server) = tokio::io::duplex(1 << 22);
        let (conn, mut streams) = Connection::start(server, cfg);
        let (crd, mut cwr) = tokio::io::split(client);
        let mut d = Deflater::new();
        let mut out = BytesMut::new();
        frame::encode(
            &Frame::SynStream {
                stream_id: 1,
                associated_id: 0,
                priority: 0,
                flags: 0,
                headers: vec![],
            },
            &mut d,
            &mut out,
        )
        .unwrap();
        cwr.write_all(&out).await.unwrap();
        let (_r, w) = streams.recv().await.unwrap().split();
        (conn, w, cwr, crd, d)
    }

    #[tokio::test]
    async fn a_peer_that_never_updates_windows_is_not_held_back_past_the_grace() {
        let cfg = ConnConfig {
            window_grace: Duration::from_millis(50),
            ..ConnConfig::default()
        };
        let (conn, w, _cwr, _crd, _d) = one_stream(cfg).await;
        assert_eq!(w.reserve(usize::MAX).await.unwrap(), 65536);
        let started = Instant::now();
        assert_eq!(w.reserve(1000).await.unwrap(), 1000);
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(flow_of(&conn), Flow::Off);
    }

    #[tokio::test]
    async fn initial_window_size_moves_open_streams_windows() {
        let (conn, w, mut cwr, _crd, mut d) = one_stream(ConnConfig::default()).await;
        let mut out = BytesMut::new();
        frame::encode(
            &Frame::Settings {
                flags: 0,
                entries: vec![frame::Setting {
                    flags: 0,
                    id: setting::INITIAL_WINDOW_SIZE,
                    value: 1000,
                }],
            },
            &mut d,
            &mut out,
        )
        .unwrap();
        cwr.write_all(&out).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while flow_of(&conn) != Flow::Enforced {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        // The stream's window shrank from 64 KiB to 1000 bytes.
        assert_eq!(w.reserve(usize::MAX).await.unwrap(), 1000);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), w.reserve(1))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_reset_stream_refuses_sends() {
        let (_conn, w, mut cwr, _crd, mut d) = one_stream(ConnConfig::default()).await;
        let mut out = BytesMut::new();
        frame::encode(
            &Frame::RstStream {
                stream_id: 1,
                status: rst::CANCEL,
            },
            &mut d,
            &mut out,
        )
        .unwrap();
        cwr.write_all(&out).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match w.send(Bytes::from_static(b"x")).await {
                    Ok(()) => tokio::time::sleep(Duration::from_millis(5)).await,
                    Err(e) => return e,
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(r, ConnError::Reset(1));
    }
}
