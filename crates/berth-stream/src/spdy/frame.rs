//! SPDY/3.1 frames (draft 3.1, section 2.2 onwards): their layout on the wire, encoding and
//! checked decoding.
//!
//! Every frame starts with eight bytes. A control frame: the control bit, a 15-bit version
//! (3), a 16-bit type, 8 bits of flags and a 24-bit length. A data frame: a clear control bit,
//! a 31-bit stream id, flags and length. Decoding is in two steps so that the connection can
//! read a data frame's payload in pieces: [`Head::parse`] reads the eight bytes, and
//! [`decode_control`] the payload of a control frame, whose header block (if any) it inflates
//! with the connection's one [`Inflater`].

use bytes::{BufMut, Bytes, BytesMut};

use super::zlib::{Deflater, HeaderBlock, HeaderError, Inflater};

/// The only version spoken.
pub const VERSION: u16 = 3;

/// Bytes of every frame's head.
pub const HEAD_LEN: usize = 8;

/// The largest payload a frame can declare (24 bits).
pub const MAX_LENGTH: usize = (1 << 24) - 1;

/// The largest control frame accepted. This server's peers send a few short headers; a
/// SETTINGS frame with every id is 8 * 8 bytes.
pub const MAX_CONTROL_LENGTH: usize = 64 * 1024;

/// The largest stream id and window delta (31 bits).
pub const MAX_ID: u32 = 0x7fff_ffff;

pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
pub const FLAG_CLEAR_SETTINGS: u8 = 0x01;

/// Control frame types.
pub mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const UNSUPPORTED_VERSION: u32 = 4;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
    pub const FRAME_TOO_LARGE: u32 = 11;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

/// SETTINGS ids this server reads.
pub mod setting {
    pub const MAX_CONCURRENT_STREAMS: u32 = 4;
    pub const INITIAL_WINDOW_SIZE: u32 = 7;
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

/// A frame, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_id: u32,
        priority: u8,
        flags: u8,
        headers: HeaderBlock,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: HeaderBlock,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: HeaderBlock,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type this version does not define; the spec says to ignore it.
    Unknown {
        kind: u16,
    },
}

/// Why bytes from the peer are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("{kind} frame has length {len}, must be {expected}")]
    Length {
        kind: &'static str,
        len: usize,
        expected: &'static str,
    },
    #[error("control frame of {len} bytes is larger than {MAX_CONTROL_LENGTH}")]
    TooLarge { len: usize },
    #[error("{kind} frame names stream 0")]
    ZeroStream { kind: &'static str },
    #[error("PING frame has id 0")]
    ZeroPing,
    #[error("WINDOW_UPDATE frame has delta {0}, must be 1 to 2^31-1")]
    Delta(u32),
    #[error("RST_STREAM frame has status 0")]
    ZeroStatus,
    #[error("SETTINGS frame says {count} entries in {len} bytes")]
    SettingsCount { count: u32, len: usize },
    #[error("header block of stream {stream_id}")]
    Header {
        stream_id: u32,
        #[source]
        source: HeaderError,
    },
}

/// The eight bytes that start a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    Control {
        kind: u16,
        flags: u8,
        len: usize,
    },
    Data {
        stream_id: u32,
        flags: u8,
        len: usize,
    },
}

impl Head {
    /// Reads a frame head. The version of a control frame must be 3; the length of one must
    /// not pass [`MAX_CONTROL_LENGTH`].
    pub fn parse(b: &[u8; HEAD_LEN]) -> Result<Head, FrameError> {
        let first = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let flags = b[4];
        let len = u32::from_be_bytes([0, b[5], b[6], b[7]]) as usize;
        if first & 0x8000_0000 != 0 {
            let version = ((first >> 16) & 0x7fff) as u16;
            if version != VERSION {
                return Err(FrameError::Version(version));
            }
            if len > MAX_CONTROL_LENGTH {
                return Err(FrameError::TooLarge { len });
            }
            Ok(Head::Control {
                kind: (first & 0xffff) as u16,
                flags,
                len,
            })
        } else {
            Ok(Head::Data {
                stream_id: first & MAX_ID,
                flags,
                len,
            })
        }
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn exact(kind: &'static str, p: &[u8], n: usize, expected: &'static str) -> Result<(), FrameError> {
    if p.len() != n {
        return Err(FrameError::Length {
            kind,
            len: p.len(),
            expected,
        });
    }
    Ok(())
}

fn at_least(
    kind: &'static str,
    p: &[u8],
    n: usize,
    expected: &'static str,
) -> Result<(), FrameError> {
    if p.len() < n {
        return Err(FrameError::Length {
            kind,
            len: p.len(),
            expected,
        });
    }
    Ok(())
}

fn stream_id(kind: &'static str, p: &[u8], at: usize) -> Result<u32, FrameError> {
    let id = be32(p, at) & MAX_ID;
    if id == 0 {
        return Err(FrameError::ZeroStream { kind });
    }
    Ok(id)
}

fn headers(
    inflater: &mut Inflater,
    stream_id: u32,
    block: &[u8],
) -> Result<HeaderBlock, FrameError> {
    inflater
        .inflate(block)
        .map_err(|source| FrameError::Header { stream_id, source })
}

/// Decodes the payload of a control frame whose head was `kind`, `flags`. A frame with a
/// header block inflates it with `inflater` even when the frame is otherwise bad, so that
/// the context stays in step with the peer's as long as it can.
pub fn decode_control(
    kind: u16,
    flags: u8,
    p: &[u8],
    inflater: &mut Inflater,
) -> Result<Frame, FrameError> {
    match kind {
        kind::SYN_STREAM => {
            at_least("SYN_STREAM", p, 10, "at least 10")?;
            let raw_id = be32(p, 0) & MAX_ID;
            let headers = headers(inflater, raw_id, &p[10..])?;
            let stream_id = stream_id("SYN_STREAM", p, 0)?;
            Ok(Frame::SynStream {
                stream_id,
                associated_id: be32(p, 4) & MAX_ID,
                priority: p[8] >> 5,
                flags,
                headers,
            })
        }
        kind::SYN_REPLY | kind::HEADERS => {
            let name = if kind == kind::SYN_REPLY {
                "SYN_REPLY"
            } else {
                "HEADERS"
            };
            at_least(name, p, 4, "at least 4")?;
            let raw_id = be32(p, 0) & MAX_ID;
            let headers = headers(inflater, raw_id, &p[4..])?;
            let stream_id = stream_id(name, p, 0)?;
            Ok(if kind == kind::SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    flags,
                    headers,
                }
            })
        }
        kind::RST_STREAM => {
            exact("RST_STREAM", p, 8, "8")?;
            let stream_id = stream_id("RST_STREAM", p, 0)?;
            let status = be32(p, 4);
            if status == 0 {
                return Err(FrameError::ZeroStatus);
            }
            Ok(Frame::RstStream { stream_id, status })
        }
        kind::SETTINGS => {
            at_least("SETTINGS", p, 4, "at least 4")?;
            let count = be32(p, 0);
            if (count as usize).checked_mul(8).map(|n| n + 4) != Some(p.len()) {
                return Err(FrameError::SettingsCount {
                    count,
                    len: p.len(),
                });
            }
            let entries = p[4..]
                .chunks_exact(8)
                .map(|e| Setting {
                    flags: e[0],
                    id: u32::from_be_bytes([0, e[1], e[2], e[3]]),
                    value: be32(e, 4),
                })
                .collect();
            Ok(Frame::Settings { flags, entries })
        }
        kind::PING => {
            exact("PING", p, 4, "4")?;
            let id = be32(p, 0);
            if id == 0 {
                return Err(FrameError::ZeroPing);
            }
            Ok(Frame::Ping { id })
        }
        kind::GOAWAY => {
            exact("GOAWAY", p, 8, "8")?;
            Ok(Frame::GoAway {
                last_good_stream_id: be32(p, 0) & MAX_ID,
                status: be32(p, 4),
            })
        }
        kind::WINDOW_UPDATE => {
            exact("WINDOW_UPDATE", p, 8, "8")?;
            let delta = be32(p, 4) & MAX_ID;
            if delta == 0 {
                return Err(FrameError::Delta(delta));
            }
            // Stream 0 is the session window (SPDY/3.1).
            Ok(Frame::WindowUpdate {
                stream_id: be32(p, 0) & MAX_ID,
                delta,
            })
        }
        other => Ok(Frame::Unknown { kind: other }),
    }
}

fn control_head(out: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u8(flags);
    out.put_uint(len as u64, 3);
}

/// Appends `frame` to `out`, compressing a header block with `deflater`. Fails only when a
/// header block does not compress or a payload is longer than a frame can say.
pub fn encode(
    frame: &Frame,
    deflater: &mut Deflater,
    out: &mut BytesMut,
) -> Result<(), HeaderError> {
    match frame {
        Frame::SynStream {
            stream_id,
            associated_id,
            priority,
            flags,
            headers,
        } => {
            let block = deflater.deflate(headers)?;
            control_head(out, kind::SYN_STREAM, *flags, 10 + block.len());
            out.put_u32(stream_id & MAX_ID);
            out.put_u32(associated_id & MAX_ID);
            out.put_u8((priority & 0x7) << 5);
            out.put_u8(0);
            out.put_slice(&block);
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        }
        | Frame::Headers {
            stream_id,
            flags,
            headers,
        } => {
            let block = deflater.deflate(headers)?;
            let kind = if matches!(frame, Frame::SynReply { .. }) {
                kind::SYN_REPLY
            } else {
                kind::HEADERS
            };
            control_head(out, kind, *flags, 4 + block.len());
            out.put_u32(stream_id & MAX_ID);
            out.put_slice(&block);
        }
        Frame::RstStream { stream_id, status } => {
            control_head(out, kind::RST_STREAM, 0, 8);
            out.put_u32(stream_id & MAX_ID);
            out.put_u32(*status);
        }
        Frame::Settings { flags, entries } => {
            control_head(out, kind::SETTINGS, *flags, 4 + 8 * entries.len());
            out.put_u32(entries.len() as u32);
            for e in entries {
                out.put_u8(e.flags);
                out.put_uint(u64::from(e.id & 0xff_ffff), 3);
                out.put_u32(e.value);
            }
        }
        Frame::Ping { id } => {
            control_head(out, kind::PING, 0, 4);
            out.put_u32(*id);
        }
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            control_head(out, kind::GOAWAY, 0, 8);
            out.put_u32(last_good_stream_id & MAX_ID);
            out.put_u32(*status);
        }
        Frame::WindowUpdate { stream_id, delta } => {
            control_head(out, kind::WINDOW_UPDATE, 0, 8);
            out.put_u32(stream_id & MAX_ID);
            out.put_u32(delta & MAX_ID);
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            if data.len() > MAX_LENGTH {
                return Err(HeaderError::Deflate(format!(
                    "data frame of {} bytes",
                    data.len()
                )));
            }
            out.put_u32(stream_id & MAX_ID);
            out.put_u8(*flags);
            out.put_uint(data.len() as u64, 3);
            out.put_slice(data);
        }
        Frame::Unknown { kind } => {
            control_head(out, *kind, 0, 0);
        }
    }
    Ok(())
}

/// Decodes one whole frame from the start of `b`, returning it and the bytes it took, or
/// `None` when `b` does not hold a whole frame yet. For tests and test clients; the
/// connection reads data frames in pieces instead.
pub fn decode(b: &[u8], inflater: &mut Inflater) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(head) = b.first_chunk::<HEAD_LEN>() else {
        return Ok(None);
    };
    match Head::parse(head)? {
        Head::Control { kind, flags, len } => {
            let Some(p) = b.get(HEAD_LEN..HEAD_LEN + len) else {
                return Ok(None);
            };
            Ok(Some((
                decode_control(kind, flags, p, inflater)?,
                HEAD_LEN + len,
            )))
        }
        Head::Data {
            stream_id,
            flags,
            len,
        } => {
            let Some(p) = b.get(HEAD_LEN..HEAD_LEN + len) else {
                return Ok(None);
            };
            if stream_id == 0 {
                return Err(FrameError::ZeroStream { kind: "DATA" });
            }
            Ok(Some((
                Frame::Data {
                    stream_id,
                    flags,
                    data: Bytes::copy_from_slice(p),
                },
                HEAD_LEN + len,
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(pairs: &[(&str, &str)]) -> HeaderBlock {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::SynStream {
                stream_id: 1,
                associated_id: 0,
                priority: 7,
                flags: FLAG_UNIDIRECTIONAL,
                headers: hb(&[("streamtype", "error")]),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: FLAG_FIN,
                headers: hb(&[]),
            },
            Frame::RstStream {
                stream_id: 3,
                status: rst::CANCEL,
            },
            Frame::Settings {
                flags: FLAG_CLEAR_SETTINGS,
                entries: vec![
                    Setting {
                        flags: 1,
                        id: setting::INITIAL_WINDOW_SIZE,
                        value: 1 << 20,
                    },
                    Setting {
                        flags: 0,
                        id: setting::MAX_CONCURRENT_STREAMS,
                        value: 100,
                    },
                ],
            },
            Frame::Ping { id: 0xffff_fffe },
            Frame::GoAway {
                last_good_stream_id: 5,
                status: goaway::PROTOCOL_ERROR,
            },
            Frame::Headers {
                stream_id: 5,
                flags: 0,
                headers: hb(&[("a", "b")]),
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: MAX_ID,
            },
            Frame::Data {
                stream_id: MAX_ID,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 7,
                flags: 0,
                data: Bytes::new(),
            },
        ]
    }

    #[test]
    fn every_frame_round_trips() {
        let mut def = Deflater::new();
        let mut inf = Inflater::new();
        let mut wire = BytesMut::new();
        for f in all_frames() {
            encode(&f, &mut def, &mut wire).unwrap();
        }
        let mut at = 0;
        for want in all_frames() {
            let (got, n) = decode(&wire[at..], &mut inf).unwrap().unwrap();
            assert_eq!(got, want);
            at += n;
        }
        assert_eq!(at, wire.len());
    }

    #[test]
    fn the_layout_is_the_specs() {
        let mut out = BytesMut::new();
        encode(&Frame::Ping { id: 1 }, &mut Deflater::new(), &mut out).unwrap();
        assert_eq!(&out[..], &[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]);
        out.clear();
        encode(
            &Frame::WindowUpdate {
                stream_id: 3,
                delta: 0x10000,
            },
            &mut Deflater::new(),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            &out[..],
            &[0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 3, 0, 1, 0, 0]
        );
        out.clear();
        encode(
            &Frame::Data {
                stream_id: 0x0102_0304,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"ab"),
            },
            &mut Deflater::new(),
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[..], &[1, 2, 3, 4, 1, 0, 0, 2, b'a', b'b']);
        out.clear();
        encode(
            &Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![],
            },
            &mut Deflater::new(),
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[..4], &[0x80, 3, 0, 2]);
        let len = u32::from_be_bytes([0, out[5], out[6], out[7]]) as usize;
        assert_eq!(len, out.len() - HEAD_LEN);
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut out = BytesMut::new();
        encode(&Frame::Ping { id: 1 }, &mut Deflater::new(), &mut out).unwrap();
        for cut in 0..out.len() {
            assert_eq!(
                decode(&out[..cut], &mut Inflater::new()),
                Ok(None),
                "cut at {cut}"
            );
        }
    }

    fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x80, 3, (kind >> 8) as u8, kind as u8, flags];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn malformed_frames_are_refused_with_a_reason() {
        let mut v2 = control(kind::PING, 0, &[0, 0, 0, 1]);
        v2[1] = 2;
        let mut huge = control(kind::SETTINGS, 0, &[]);
        huge[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        let table: Vec<(Vec<u8>, FrameError)> = vec![
            (v2, FrameError::Version(2)),
            (huge, FrameError::TooLarge { len: MAX_LENGTH }),
            (
                control(kind::PING, 0, &[0, 0, 1]),
                FrameError::Length {
                    kind: "PING",
                    len: 3,
                    expected: "4",
                },
            ),
            (control(kind::PING, 0, &[0, 0, 0, 0]), FrameError::ZeroPing),
            (
                control(kind::RST_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0]),
                FrameError::Length {
                    kind: "RST_STREAM",
                    len: 7,
                    expected: "8",
                },
            ),
            (
                control(kind::RST_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0]),
                FrameError::ZeroStatus,
            ),
            (
                control(kind::RST_STREAM, 0, &[0x80, 0, 0, 0, 0, 0, 0, 1]),
                FrameError::ZeroStream { kind: "RST_STREAM" },
            ),
            (
                control(kind::WINDOW_UPDATE, 0, &[0, 0, 0, 1, 0, 0, 0, 0]),
                FrameError::Delta(0),
            ),
            (
                control(kind::WINDOW_UPDATE, 0, &[0, 0, 0, 1, 0x80, 0, 0, 0]),
                FrameError::Delta(0),
            ),
            (
                control(kind::GOAWAY, 0, &[0, 0, 0, 1]),
                FrameError::Length {
                    kind: "GOAWAY",
                    len: 4,
                    expected: "8",
                },
            ),
            (
                control(kind::SETTINGS, 0, &[0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 1]),
                FrameError::SettingsCount { count: 2, len: 12 },
            ),
            (
                control(kind::SETTINGS, 0, &[0, 0]),
                FrameError::Length {
                    kind: "SETTINGS",
                    len: 2,
                    expected: "at least 4",
                },
            ),
            (
                control(kind::SYN_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0]),
                FrameError::Length {
                    kind: "SYN_STREAM",
                    len: 9,
                    expected: "at least 10",
                },
            ),
            (
                control(kind::SYN_REPLY, 0, &[0, 0, 1]),
                FrameError::Length {
                    kind: "SYN_REPLY",
                    len: 3,
                    expected: "at least 4",
                },
            ),
            (
                vec![0, 0, 0, 0, 0, 0, 0, 1, b'x'],
                FrameError::ZeroStream { kind: "DATA" },
            ),
        ];
        for (raw, want) in table {
            assert_eq!(
                decode(&raw, &mut Inflater::new()),
                Err(want.clone()),
                "{raw:02x?}"
            );
        }
    }

    #[test]
    fn a_syn_stream_with_a_bad_header_block_names_its_stream() {
        let raw = control(
            kind::SYN_STREAM,
            0,
            &[0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0x78, 0xbb, 1, 2],
        );
        match decode(&raw, &mut Inflater::new()) {
            Err(FrameError::Header { stream_id: 9, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_control_frames_are_kept_to_be_ignored() {
        let raw = control(0x0fff, 0, &[1, 2, 3]);
        assert_eq!(
            decode(&raw, &mut Inflater::new()),
            Ok(Some((Frame::Unknown { kind: 0x0fff }, 11)))
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap fuzz: every prefix and many byte flips of valid frames, and noise.
        let mut wire = BytesMut::new();
        let mut def = Deflater::new();
        for f in all_frames() {
            encode(&f, &mut def, &mut wire).unwrap();
        }
        let mut seed = 0x9e37_79b9_u32;
        for i in 0..4000 {
            let mut b = wire.to_vec();
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let at = seed as usize % b.len();
            b[at] ^= (seed >> 8) as u8 | 1;
            let b = &b[..b.len() - (i % 7)];
            let mut inf = Inflater::new();
            let mut rest = b;
            while let Ok(Some((_, n))) = decode(rest, &mut inf) {
                rest = &rest[n..];
            }
        }
    }
}
