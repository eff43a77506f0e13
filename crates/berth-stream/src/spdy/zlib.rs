//! Header blocks and their compression (SPDY/3 section 2.6.10).
//!
//! A header block is a count of name/value pairs, each a 32-bit length and bytes; a value
//! that holds several values separates them with NUL. The block travels zlib-compressed
//! with a preset dictionary, and each direction of a connection keeps one compression
//! context for its whole life: every block is a SYNC_FLUSH'ed continuation of the one
//! before it. So a block can be decoded only in the order the peer sent it, and a block
//! that does not decode leaves the context unusable: the connection must end.

use std::sync::OnceLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Names of a header block, in order, lowercase; a value may hold several values
/// separated by NUL, as on the wire.
pub type HeaderBlock = Vec<(String, String)>;

/// The most a decompressed header block may hold. Streams of this server carry a handful
/// of short headers; this bounds what a compressed block (a "zip bomb") can make us hold.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// The most name/value pairs in one block.
pub const MAX_HEADERS: usize = 128;

/// Why a header block could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header block does not inflate: {0}")]
    Inflate(String),
    #[error("header block uses dictionary {got:#010x}, not the SPDY/3 one ({want:#010x})")]
    Dictionary { got: u32, want: u32 },
    #[error("header block inflates past {MAX_HEADER_BLOCK} bytes")]
    TooLarge,
    #[error("header block is truncated")]
    Truncated,
    #[error("header block has {0} bytes after its last pair")]
    Trailing(usize),
    #[error("header block has {0} pairs, at most {MAX_HEADERS}")]
    TooMany(u32),
    #[error("header name is empty")]
    EmptyName,
    #[error("header name {0:?} is not lowercase")]
    NotLowercase(String),
    #[error("header name {0:?} appears twice")]
    Duplicate(String),
    #[error("header {0:?} is not UTF-8")]
    NotUtf8(String),
    #[error("header block does not deflate: {0}")]
    Deflate(String),
}

/// The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): a list of
/// length-prefixed words, then a run of common text. Built once from its parts.
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &[&str] = &[
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505",
            "203 Non-Authoritative Information",
            "204 No Content",
            "301 Moved Permanently",
            "400 Bad Request",
            "401 Unauthorized",
            "403 Forbidden",
            "404 Not Found",
            "500 Internal Server Error",
            "501 Not Implemented",
            "503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
            " 00:00:00",
            " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
            "application/xhtml+xml,text/plain,text/javascript,",
            "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        ];
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        for t in TAIL {
            d.extend_from_slice(t.as_bytes());
        }
        d
    })
}

/// Adler-32 of a byte string, the id zlib gives a preset dictionary.
pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// Serialises a header block, uncompressed.
pub fn encode_block(headers: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        4 + headers
            .iter()
            .map(|(n, v)| 8 + n.len() + v.len())
            .sum::<usize>(),
    );
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (name, value) in headers {
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// Parses an uncompressed header block, checking what SPDY/3 asks of it.
pub fn decode_block(mut b: &[u8]) -> Result<HeaderBlock, HeaderError> {
    let count = take_u32(&mut b)?;
    if count as usize > MAX_HEADERS {
        return Err(HeaderError::TooMany(count));
    }
    let mut out: HeaderBlock = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let name = take_str(&mut b)?;
        if name.is_empty() {
            return Err(HeaderError::EmptyName);
        }
        if name.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(HeaderError::NotLowercase(name));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(HeaderError::Duplicate(name));
        }
        let value = take_str(&mut b).map_err(|e| match e {
            HeaderError::NotUtf8(_) => HeaderError::NotUtf8(name.clone()),
            e => e,
        })?;
        out.push((name, value));
    }
    if !b.is_empty() {
        return Err(HeaderError::Trailing(b.len()));
    }
    Ok(out)
}

fn take_u32(b: &mut &[u8]) -> Result<u32, HeaderError> {
    let (head, rest) = b.split_first_chunk::<4>().ok_or(HeaderError::Truncated)?;
    *b = rest;
    Ok(u32::from_be_bytes(*head))
}

fn take_str(b: &mut &[u8]) -> Result<String, HeaderError> {
    let len = take_u32(b)? as usize;
    if len > b.len() {
        return Err(HeaderError::Truncated);
    }
    let (s, rest) = b.split_at(len);
    *b = rest;
    String::from_utf8(s.to_vec())
        .map_err(|e| HeaderError::NotUtf8(String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// The compression context of the blocks one side sends.
pub struct Deflater {
    z: Compress,
}

impl Default for Deflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Deflater {
    pub fn new() -> Self {
        let mut z = Compress::new(Compression::default(), true);
        // Cannot fail on a fresh stream: zlib refuses a dictionary only mid-stream.
        let _ = z.set_dictionary(dictionary());
        Self { z }
    }

    /// Compresses one block as the continuation of the ones before it.
    pub fn deflate(&mut self, headers: &[(String, String)]) -> Result<Vec<u8>, HeaderError> {
        let raw = encode_block(headers);
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let start_in = self.z.total_in();
        loop {
            let consumed = (self.z.total_in() - start_in) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            self.z
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| HeaderError::Deflate(e.to_string()))?;
            let consumed = (self.z.total_in() - start_in) as usize;
            // A sync flush is complete once all input is in and zlib left room to spare.
            if consumed == raw.len() && out.capacity() - out.len() >= 64 {
                break;
            }
        }
        Ok(out)
    }
}

/// The decompression context of the blocks the peer sends.
pub struct Inflater {
    z: Decompress,
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    pub fn new() -> Self {
        Self {
            z: Decompress::new(true),
        }
    }

    /// Inflates and parses one compressed block, the next the peer sent.
    pub fn inflate(&mut self, input: &[u8]) -> Result<HeaderBlock, HeaderError> {
        let mut out: Vec<u8> = Vec::with_capacity(1024);
        let start_in = self.z.total_in();
        loop {
            let consumed = (self.z.total_in() - start_in) as usize;
            let before_out = out.len();
            if out.capacity() - out.len() < 256 {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(HeaderError::TooLarge);
                }
                out.reserve(1024.min(MAX_HEADER_BLOCK + 1 - out.len()).max(256));
            }
            match self
                .z
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => {
                    // SPDY streams never finish: a final block is a peer error.
                    return Err(HeaderError::Inflate("compression stream ended".into()));
                }
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(id) => {
                        let want = adler32(dictionary());
                        if id != want {
                            return Err(HeaderError::Dictionary { got: id, want });
                        }
                        self.z
                            .set_dictionary(dictionary())
                            .map_err(|e| HeaderError::Inflate(e.to_string()))?;
                        continue;
                    }
                    None => return Err(HeaderError::Inflate(e.to_string())),
                },
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(HeaderError::TooLarge);
            }
            let consumed_now = (self.z.total_in() - start_in) as usize;
            let made_progress = consumed_now > consumed || out.len() > before_out;
            if consumed_now == input.len() && out.capacity() > out.len() {
                break;
            }
            if !made_progress {
                return Err(HeaderError::Truncated);
            }
        }
        decode_block(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(pairs: &[(&str, &str)]) -> HeaderBlock {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b"utf-,*,enq=0."));
        // The dictionary id a zlib stream compressed with it names in its header.
        assert_eq!(adler32(d), 0xe3c6_a7c2);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Two blocks of one context, as another zlib (CPython's, level 6, the SPDY/3
    /// dictionary, a SYNC_FLUSH after each) compressed them: the second block refers back
    /// into the first, so it decodes only with the context the first left.
    const CAPTURED_1: &str = "78bbe3c6a7c202a62346703a2b294a4dcc851625c0149b925f5a02000000ffff";
    const CAPTURED_2: &str =
        "0225480c395031930829b18bc099c3c2c0c2004873164162381394f2190d00000000ffff";

    #[test]
    fn blocks_compressed_elsewhere_decode_in_one_context() {
        let mut inf = Inflater::new();
        assert_eq!(
            inf.inflate(&hex(CAPTURED_1)).unwrap(),
            block(&[("streamtype", "stdout")])
        );
        assert_eq!(
            inf.inflate(&hex(CAPTURED_2)).unwrap(),
            block(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")])
        );
        // A fresh context cannot read the second block alone.
        assert!(Inflater::new().inflate(&hex(CAPTURED_2)).is_err());
    }

    #[test]
    fn our_blocks_round_trip_through_one_context_per_direction() {
        let mut def = Deflater::new();
        let mut inf = Inflater::new();
        let blocks = [
            block(&[("streamtype", "error")]),
            block(&[("streamtype", "stdin"), ("x", "a\0b")]),
            block(&[]),
            block(&[("streamtype", "error")]),
        ];
        for b in &blocks {
            let z = def.deflate(b).unwrap();
            assert_eq!(
                &z[z.len() - 4..],
                &[0, 0, 0xff, 0xff],
                "each block ends with a sync flush"
            );
            assert_eq!(&inf.inflate(&z).unwrap(), b);
        }
        // A zlib header is only at the start of the context.
        let first = Deflater::new().deflate(&blocks[0]).unwrap();
        assert_eq!(&first[..6], &[0x78, 0xbb, 0xe3, 0xc6, 0xa7, 0xc2]);
    }

    #[test]
    fn a_large_block_round_trips() {
        let big = "v".repeat(40_000);
        let b = block(&[("a", &big), ("b", &big[..1000])]);
        let z = Deflater::new().deflate(&b).unwrap();
        assert_eq!(Inflater::new().inflate(&z).unwrap(), b);
    }

    #[test]
    fn a_block_that_inflates_too_far_is_refused() {
        let big = "v".repeat(MAX_HEADER_BLOCK);
        let raw = encode_block(&block(&[("a", &big)]));
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(dictionary()).unwrap();
        let mut out = Vec::with_capacity(raw.len() + 1024);
        z.compress_vec(&raw, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.len() < 4096, "compresses well: {}", out.len());
        assert_eq!(Inflater::new().inflate(&out), Err(HeaderError::TooLarge));
    }

    #[test]
    fn a_block_with_another_dictionary_is_refused() {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(b"not the spdy dictionary").unwrap();
        let mut out = Vec::with_capacity(256);
        z.compress_vec(
            &encode_block(&block(&[("a", "b")])),
            &mut out,
            FlushCompress::Sync,
        )
        .unwrap();
        assert!(matches!(
            Inflater::new().inflate(&out),
            Err(HeaderError::Dictionary { .. })
        ));
    }

    #[test]
    fn bad_uncompressed_blocks_are_refused() {
        let table: &[(&[u8], HeaderError)] = &[
            (b"", HeaderError::Truncated),
            (b"\0\0\0", HeaderError::Truncated),
            (b"\0\0\0\x01\0\0\0\x05ab", HeaderError::Truncated),
            (b"\0\0\0\x01\0\0\0\0\0\0\0\0", HeaderError::EmptyName),
            (
                b"\0\0\0\x01\0\0\0\x01A\0\0\0\0",
                HeaderError::NotLowercase("A".into()),
            ),
            (
                b"\0\0\0\x02\0\0\0\x01a\0\0\0\0\0\0\0\x01a\0\0\0\0",
                HeaderError::Duplicate("a".into()),
            ),
            (
                b"\0\0\0\x01\0\0\0\x01a\0\0\0\x01\xff",
                HeaderError::NotUtf8("a".into()),
            ),
            (b"\0\0\0\0x", HeaderError::Trailing(1)),
            (b"\xff\xff\xff\xff", HeaderError::TooMany(u32::MAX)),
            (b"\0\0\0\x01\xff\xff\xff\xff", HeaderError::Truncated),
        ];
        for (raw, want) in table {
            assert_eq!(decode_block(raw).as_ref(), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn garbage_does_not_inflate() {
        for bad in [
            &b""[..],
            b"\x78",
            b"\x00\x01\x02\x03",
            b"\x78\xbb\xe3\xc6\xa7\xc2\xff\xff\xff",
        ] {
            assert!(Inflater::new().inflate(bad).is_err(), "{bad:?}");
        }
    }
}
