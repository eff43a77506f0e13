//! A path as the HTTP/2 `:authority`: older gRPC clients on a unix socket send the socket's
//! path there (crictl and critest before 1.27, the kubelet before Kubernetes 1.26, grpc-java,
//! grpc-python, grpcurl). h2, under tonic, refuses such a request with PROTOCOL_ERROR
//! (hyperium/h2#487, still open), so those clients could not talk to berthd at all.
//!
//! Each connection passes through [`normalize`] on its way to tonic. It reads the client's
//! HTTP/2 frames and decodes the first request's header block: when its authority is valid
//! the connection is passed through untouched from then on (no cost); when it is not, every
//! header block of the connection is decoded and written again with `localhost` for an
//! invalid authority, as literals that never touch the server's dynamic table (so the two
//! decoders' tables cannot drift). Every other frame, and everything the server sends, goes
//! through as it is.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

/// The client's connection preface (RFC 9113, 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every peer accepts (SETTINGS_MAX_FRAME_SIZE's minimum and default).
const MAX_FRAME: usize = 16_384;
/// The most a header block may take, across its frames (tonic's limit is lower).
const MAX_BLOCK: usize = 1 << 20;

/// Hands tonic a stream that carries `client`'s connection with its authority mended; the
/// copying runs on a task of its own until both sides are done.
pub fn normalize<C>(client: C) -> DuplexStream
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    tokio::spawn(async move {
        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(ours);
        let down = async {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
            let _ = cw.shutdown().await;
        };
        let up = async {
            if let Err(e) = rewrite(&mut cr, &mut sw).await {
                tracing::debug!("CRI connection: {e}");
            }
            let _ = sw.shutdown().await;
        };
        tokio::join!(down, up);
    });
    theirs
}

/// Whether an authority is one an HTTP/2 server accepts.
pub fn valid_authority(a: &[u8]) -> bool {
    http::uri::Authority::try_from(a).is_ok()
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Copies the client's side of the connection, mending header blocks as needed.
async fn rewrite<R, W>(from: &mut R, to: &mut W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    from.read_exact(&mut preface).await?;
    to.write_all(&preface).await?;
    if &preface != PREFACE {
        // Not HTTP/2 with prior knowledge: not ours to mend.
        tokio::io::copy(from, to).await?;
        return Ok(());
    }
    let mut decoder = loona_hpack::Decoder::new();
    decoder.set_max_allowed_table_size(1 << 16);
    let mut mending = None::<bool>;
    loop {
        let Some((head, payload)) = read_frame(from).await? else {
            return Ok(());
        };
        if head[3] != HEADERS {
            to.write_all(&head).await?;
            to.write_all(&payload).await?;
            continue;
        }
        // A header block: this HEADERS frame and its CONTINUATIONs.
        let flags = head[4];
        let stream = [head[5], head[6], head[7], head[8]];
        let mut raw = vec![(head, payload)];
        let (mut block, priority) = headers_fragment(flags, &raw[0].1)?;
        let mut last = flags;
        while last & END_HEADERS == 0 {
            let Some((h, p)) = read_frame(from).await? else {
                return Err(bad("the connection ended inside a header block"));
            };
            if h[3] != CONTINUATION || h[5..9] != stream {
                return Err(bad("a header block interrupted by another frame"));
            }
            block.extend_from_slice(&p);
            if block.len() > MAX_BLOCK {
                return Err(bad("a header block over 1 MiB"));
            }
            last = h[4];
            raw.push((h, p));
        }
        let headers = decoder
            .decode(&block)
            .map_err(|e| bad(format!("header block: {e:?}")))?;
        let mend = *mending.get_or_insert_with(|| {
            headers
                .iter()
                .any(|(n, v)| n == b":authority" && !valid_authority(v))
        });
        if !mend {
            // The first request's authority is valid: pass the rest through as it is.
            for (h, p) in &raw {
                to.write_all(h).await?;
                to.write_all(p).await?;
            }
            tokio::io::copy(from, to).await?;
            return Ok(());
        }
        let mended: Vec<(Vec<u8>, Vec<u8>)> = headers
            .into_iter()
            .map(|(n, v)| {
                if n == b":authority" && !valid_authority(&v) {
                    (n, b"localhost".to_vec())
                } else {
                    (n, v)
                }
            })
            .collect();
        let out = encode_literals(&mended);
        write_block(to, flags & END_STREAM, stream, priority, &out).await?;
    }
}

/// Reads one frame: its 9-byte header and payload; None at a clean end.
async fn read_frame<R: AsyncRead + Unpin>(from: &mut R) -> io::Result<Option<([u8; 9], Vec<u8>)>> {
    let mut head = [0u8; 9];
    match from.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    from.read_exact(&mut payload).await?;
    Ok(Some((head, payload)))
}

/// The header block fragment of a HEADERS frame, and its priority fields if it has them.
fn headers_fragment(flags: u8, p: &[u8]) -> io::Result<(Vec<u8>, Option<[u8; 5]>)> {
    let mut start = 0;
    let mut end = p.len();
    if flags & PADDED != 0 {
        let pad = *p
            .first()
            .ok_or_else(|| bad("a padded HEADERS frame without its length"))?;
        start = 1;
        end = end
            .checked_sub(pad as usize)
            .ok_or_else(|| bad("HEADERS padding longer than the frame"))?;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let fields = p
            .get(start..start + 5)
            .ok_or_else(|| bad("a HEADERS frame too short for its priority"))?;
        priority = Some(fields.try_into().expect("five bytes"));
        start += 5;
    }
    if start > end {
        return Err(bad("a HEADERS frame shorter than its fields"));
    }
    Ok((p[start..end].to_vec(), priority))
}

/// Writes a header block as a HEADERS frame and as many CONTINUATIONs as it needs.
async fn write_block<W: AsyncWrite + Unpin>(
    to: &mut W,
    end_stream: u8,
    stream: [u8; 4],
    priority: Option<[u8; 5]>,
    block: &[u8],
) -> io::Result<()> {
    let mut first = Vec::new();
    if let Some(p) = priority {
        first.extend_from_slice(&p);
    }
    let room = MAX_FRAME - first.len();
    let (head_part, mut rest) = block.split_at(block.len().min(room));
    first.extend_from_slice(head_part);
    let mut flags = end_stream | if rest.is_empty() { END_HEADERS } else { 0 };
    if priority.is_some() {
        flags |= PRIORITY;
    }
    write_frame(to, HEADERS, flags, stream, &first).await?;
    while !rest.is_empty() {
        let (part, more) = rest.split_at(rest.len().min(MAX_FRAME));
        rest = more;
        let flags = if rest.is_empty() { END_HEADERS } else { 0 };
        write_frame(to, CONTINUATION, flags, stream, part).await?;
    }
    Ok(())
}

async fn write_frame<W: AsyncWrite + Unpin>(
    to: &mut W,
    kind: u8,
    flags: u8,
    stream: [u8; 4],
    payload: &[u8],
) -> io::Result<()> {
    let len = (payload.len() as u32).to_be_bytes();
    let head = [
        len[1], len[2], len[3], kind, flags, stream[0], stream[1], stream[2], stream[3],
    ];
    to.write_all(&head).await?;
    to.write_all(payload).await
}

/// An HPACK integer with an `n`-bit prefix, the prefix's other bits being `first` (RFC
/// 7541, 5.1).
fn encode_integer(mut v: usize, n: u8, first: u8, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header list as literal fields without indexing and with new names (RFC 7541, 6.2.2),
/// strings unencoded: nothing enters either side's dynamic table.
pub fn encode_literals(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in headers {
        out.push(0x00);
        encode_integer(n.len(), 7, 0, &mut out);
        out.extend_from_slice(n);
        encode_integer(v.len(), 7, 0, &mut out);
        out.extend_from_slice(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_encode_as_rfc_7541_shows() {
        let mut out = Vec::new();
        encode_integer(10, 5, 0, &mut out);
        assert_eq!(out, [10]);
        out.clear();
        encode_integer(1337, 5, 0, &mut out);
        assert_eq!(out, [31, 154, 10]);
        out.clear();
        encode_integer(42, 8, 0, &mut out);
        assert_eq!(out, [42]);
    }

    #[test]
    fn literals_decode_back_and_leave_no_table_entries() {
        let h = vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":authority".to_vec(), vec![b'x'; 300]),
        ];
        let block = encode_literals(&h);
        let mut d = loona_hpack::Decoder::new();
        assert_eq!(d.decode(&block).unwrap(), h);
        // Decoded twice with one decoder: nothing was indexed in between.
        assert_eq!(d.decode(&block).unwrap(), h);
    }

    #[test]
    fn socket_paths_are_invalid_authorities_and_hosts_are_not() {
        assert!(!valid_authority(b"/run/berth/berthd.sock"));
        assert!(!valid_authority(b"%2Frun%2Fberth"));
        assert!(valid_authority(b"localhost"));
        assert!(valid_authority(b"127.0.0.1:1234"));
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let s = stream.to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, s[0], s[1], s[2], s[3]];
        f.extend_from_slice(payload);
        f
    }

    fn request(authority: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (
                b":path".to_vec(),
                b"/runtime.v1.RuntimeService/Version".to_vec(),
            ),
            (b":authority".to_vec(), authority.to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
        ]
    }

    async fn run(input: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        rewrite(&mut input.as_slice(), &mut out).await.unwrap();
        out
    }

    /// Splits a byte stream (after the preface) into frames.
    fn frames(mut b: &[u8]) -> Vec<(u8, u8, Vec<u8>)> {
        let mut out = Vec::new();
        while b.len() >= 9 {
            let len = u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize;
            out.push((b[3], b[4], b[9..9 + len].to_vec()));
            b = &b[9 + len..];
        }
        out
    }

    #[tokio::test]
    async fn a_path_authority_becomes_localhost_in_every_block() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
                                             // The first block split over HEADERS (padded, with priority) and a CONTINUATION.
        let block = encode_literals(&request(b"/run/berthd.sock"));
        let (a, b) = block.split_at(10);
        let mut payload = vec![3u8]; // pad length
        payload.extend_from_slice(&[0, 0, 0, 0, 16]); // priority
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0, 0]);
        input.extend(frame(HEADERS, PADDED | PRIORITY, 1, &payload));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        input.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0")); // DATA
        input.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            3,
            &encode_literals(&request(b"/run/berthd.sock")),
        ));
        let out = run(input).await;
        assert_eq!(&out[..24], PREFACE);
        let f = frames(&out[24..]);
        let kinds: Vec<u8> = f.iter().map(|x| x.0).collect();
        assert_eq!(kinds, [0x4, HEADERS, 0x0, HEADERS]);
        let mut d = loona_hpack::Decoder::new();
        for (i, (_, flags, p)) in f.iter().enumerate().filter(|(_, x)| x.0 == HEADERS) {
            assert_ne!(flags & END_HEADERS, 0);
            let p = if flags & PRIORITY != 0 {
                assert_eq!(&p[..5], &[0, 0, 0, 0, 16]);
                &p[5..]
            } else {
                &p[..]
            };
            let h = d.decode(p).unwrap();
            assert!(
                h.contains(&(b":authority".to_vec(), b"localhost".to_vec())),
                "{i}: {h:?}"
            );
        }
        assert_eq!(f[3].1 & END_STREAM, END_STREAM, "END_STREAM is kept");
        assert_eq!(f[2].2, b"\0\0\0\0\0", "DATA goes through");
    }

    #[tokio::test]
    async fn a_valid_authority_leaves_the_connection_untouched() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &encode_literals(&request(b"localhost")),
        ));
        input.extend(frame(0x0, END_STREAM, 1, b"abc"));
        // After the first block nothing is parsed: even garbage passes.
        input.extend_from_slice(b"\x00\x00\x01\x01\x04\x00\x00\x00\x03\xff");
        assert_eq!(run(input.clone()).await, input);
    }

    #[tokio::test]
    async fn malformed_blocks_end_the_connection() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff, 0x0f],
        ));
        let mut out = Vec::new();
        assert!(rewrite(&mut input.as_slice(), &mut out).await.is_err());
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, b"\x00"));
        input.extend(frame(0x0, 0, 1, b"x"));
        let mut out = Vec::new();
        let e = rewrite(&mut input.as_slice(), &mut out).await.unwrap_err();
        assert!(e.to_string().contains("interrupted"), "{e}");
    }
}
