//! SPDY/3.1 frames as a streaming client sends them (berth-stream `spdy::frame::decode`,
//! with one header decompression context for the whole input, as a connection has): any
//! bytes end in frames or an error, never a panic, and inflated header blocks stay within
//! their bound. Every frame decoded encodes again to the same frame.

#![no_main]

use berth_stream::spdy::frame::{decode, encode, Frame};
use berth_stream::spdy::zlib::{Deflater, Inflater, MAX_HEADERS};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut inflater = Inflater::new();
    let mut frames = Vec::new();
    let mut rest = data;
    while let Ok(Some((frame, used))) = decode(rest, &mut inflater) {
        assert!(used >= 8 && used <= rest.len());
        rest = &rest[used..];
        if let Frame::SynStream { headers, .. }
        | Frame::SynReply { headers, .. }
        | Frame::Headers { headers, .. } = &frame
        {
            assert!(headers.len() <= MAX_HEADERS);
        }
        if !matches!(frame, Frame::Unknown { .. }) {
            frames.push(frame);
        }
    }
    let mut deflater = Deflater::new();
    let mut wire = BytesMut::new();
    for f in &frames {
        encode(f, &mut deflater, &mut wire).expect("a decoded frame encodes");
    }
    let mut inflater = Inflater::new();
    let mut at = 0;
    for want in &frames {
        let (got, used) = decode(&wire[at..], &mut inflater)
            .expect("re-decodes")
            .expect("whole");
        assert_eq!(&got, want);
        at += used;
    }
});
