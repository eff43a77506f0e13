//! What the embedder holds while it runs a command: the client's stdin, stdout and stderr
//! as plain async byte streams, its terminal sizes, and a signal for a client that left.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

use tokio::sync::{watch, Notify};

/// Bytes buffered between the transport and the embedder, per stream.
pub const PIPE_BUFFER: usize = 64 * 1024;

/// A terminal's size, as Kubernetes sends it (`{"Width":80,"Height":24}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The client's stdin: reads what the client sends, ends (EOF) when the client closes it.
#[derive(Debug)]
pub struct Stdin(pub(crate) DuplexStream);

impl AsyncRead for Stdin {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

/// The client's stdout or stderr. Writes wait while the client is slow (the buffer between
/// is bounded); `shutdown` or drop ends the stream for the client. A write fails once the
/// client is gone.
#[derive(Debug)]
pub struct Output(pub(crate) DuplexStream);

impl AsyncWrite for Output {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Sizes queued for the embedder at most; when it lags further, the oldest are dropped,
/// so the latest size always arrives and a slow reader never holds back the connection.
pub const RESIZE_QUEUE: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct SizeQueue {
    q: Mutex<(VecDeque<TerminalSize>, bool)>,
    ready: Notify,
}

/// The transport's end of a [`Resize`]; dropping it ends the sizes.
pub(crate) struct ResizeSender(Arc<SizeQueue>);

impl ResizeSender {
    pub fn push(&self, size: TerminalSize) {
        {
            let mut g = self.0.q.lock().unwrap_or_else(|e| e.into_inner());
            if g.0.len() == RESIZE_QUEUE {
                g.0.pop_front();
            }
            g.0.push_back(size);
        }
        self.0.ready.notify_one();
    }
}

impl Drop for ResizeSender {
    fn drop(&mut self) {
        self.0.q.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.0.ready.notify_one();
    }
}

/// Terminal sizes the client sends, in order (see [`RESIZE_QUEUE`]).
#[derive(Debug)]
pub struct Resize(pub(crate) Arc<SizeQueue>);

impl Resize {
    /// The next size the client sent; `None` once the client stopped sending them.
    pub async fn recv(&mut self) -> Option<TerminalSize> {
        loop {
            let ready = self.0.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            {
                let mut g = self.0.q.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(s) = g.0.pop_front() {
                    return Some(s);
                }
                if g.1 {
                    return None;
                }
            }
            ready.await;
        }
    }
}

/// Turns ready when the client went away before the command ended: the embedder should then
/// stop what it started (kill the exec'd process, detach).
#[derive(Debug, Clone)]
pub struct ClientGone(pub(crate) watch::Receiver<bool>);

impl ClientGone {
    /// Waits until the client is gone.
    pub async fn wait(&mut self) {
        // An error means the connection's state is dropped: the client is gone too.
        wait_gone(&mut self.0).await;
    }

    /// Whether the client is gone already.
    pub fn is_gone(&self) -> bool {
        *self.0.borrow()
    }
}

/// Waits until `gone` turns true or its sender is dropped.
pub(crate) async fn wait_gone(gone: &mut watch::Receiver<bool>) {
    let _ = gone.wait_for(|g| *g).await;
}

/// The streams of one exec or attach, as the request asked for them: `stdin` when it asked
/// for stdin, `stdout`, `stderr` likewise (never `stderr` with a tty), `resize` with a tty.
#[derive(Debug)]
pub struct StreamIo {
    pub stdin: Option<Stdin>,
    pub stdout: Option<Output>,
    pub stderr: Option<Output>,
    pub resize: Option<Resize>,
    pub client_gone: ClientGone,
}

/// Our ends of the pipes behind a [`StreamIo`].
pub(crate) struct Pipes {
    pub stdin: Option<DuplexStream>,
    pub stdout: Option<DuplexStream>,
    pub stderr: Option<DuplexStream>,
    pub resize: Option<ResizeSender>,
}

/// Makes the pipes for a command with the given streams.
pub(crate) fn pipes(
    stdin: bool,
    stdout: bool,
    stderr: bool,
    resize: bool,
    gone: watch::Receiver<bool>,
) -> (StreamIo, Pipes) {
    fn pair(on: bool) -> (Option<DuplexStream>, Option<DuplexStream>) {
        if on {
            let (a, b) = tokio::io::duplex(PIPE_BUFFER);
            (Some(a), Some(b))
        } else {
            (None, None)
        }
    }
    let (in_ours, in_theirs) = pair(stdin);
    let (out_ours, out_theirs) = pair(stdout);
    let (err_ours, err_theirs) = pair(stderr);
    let (resize_tx, resize_rx) = if resize {
        let q = Arc::new(SizeQueue::default());
        (Some(ResizeSender(q.clone())), Some(Resize(q)))
    } else {
        (None, None)
    };
    (
        StreamIo {
            stdin: in_theirs.map(Stdin),
            stdout: out_theirs.map(Output),
            stderr: err_theirs.map(Output),
            resize: resize_rx,
            client_gone: ClientGone(gone),
        },
        Pipes {
            stdin: in_ours,
            stdout: out_ours,
            stderr: err_ours,
            resize: resize_tx,
        },
    )
}

/// Parses the resize stream: JSON objects one after another, maybe split anywhere.
#[derive(Default)]
pub(crate) struct ResizeParser {
    buf: Vec<u8>,
}

/// The most of an unfinished size message kept.
const MAX_RESIZE_MESSAGE: usize = 4096;

impl ResizeParser {
    pub fn push(&mut self, data: &[u8]) -> Vec<TerminalSize> {
        self.buf.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut used = 0;
        {
            let mut it =
                serde_json::Deserializer::from_slice(&self.buf).into_iter::<TerminalSize>();
            loop {
                match it.next() {
                    Some(Ok(s)) => {
                        sizes.push(s);
                        used = it.byte_offset();
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(_)) => {
                        // Not a size: drop what we have and start over with the next bytes.
                        used = self.buf.len();
                        break;
                    }
                    None => {
                        used = self.buf.len();
                        break;
                    }
                }
            }
        }
        self.buf.drain(..used);
        if self.buf.len() > MAX_RESIZE_MESSAGE {
            self.buf.clear();
        }
        sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_messages_split_anywhere_are_parsed() {
        let mut p = ResizeParser::default();
        assert_eq!(p.push(b"{\"Width\":80,"), vec![]);
        assert_eq!(
            p.push(b"\"Height\":24}\n{\"Width\":100,\"Height\":50}\n{\"Wi"),
            vec![
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 50
                }
            ]
        );
        assert_eq!(
            p.push(b"dth\":1,\"Height\":2}"),
            vec![TerminalSize {
                width: 1,
                height: 2
            }]
        );
    }

    #[test]
    fn garbage_on_the_resize_stream_is_dropped() {
        let mut p = ResizeParser::default();
        assert_eq!(p.push(b"not json"), vec![]);
        assert_eq!(
            p.push(b"{\"Width\":3,\"Height\":4}"),
            vec![TerminalSize {
                width: 3,
                height: 4
            }]
        );
        assert_eq!(p.push(&[b'['; 5000]), vec![]);
        assert!(p.buf.len() <= MAX_RESIZE_MESSAGE);
    }

    #[tokio::test]
    async fn sizes_arrive_in_order_and_a_lagging_reader_keeps_the_latest() {
        let q = Arc::new(SizeQueue::default());
        let (tx, mut rx) = (ResizeSender(q.clone()), Resize(q));
        let size = |w| TerminalSize {
            width: w,
            height: 1,
        };
        tx.push(size(1));
        tx.push(size(2));
        assert_eq!(rx.recv().await, Some(size(1)));
        assert_eq!(rx.recv().await, Some(size(2)));
        for w in 0..(RESIZE_QUEUE as u16 + 5) {
            tx.push(size(w));
        }
        drop(tx);
        let mut got = Vec::new();
        while let Some(s) = rx.recv().await {
            got.push(s.width);
        }
        assert_eq!(got.len(), RESIZE_QUEUE);
        assert_eq!(got.last(), Some(&(RESIZE_QUEUE as u16 + 4)));
    }
}
