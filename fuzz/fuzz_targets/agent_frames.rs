//! What a VM guest's agent sends the host (berth-agent-proto `Decoder::from_agent`), fed in
//! the pieces the input's first byte chooses: any bytes end in frames or an error, never a
//! panic, the decoder never holds more than one frame's bytes and a piece, and every frame
//! decoded encodes again to a frame that decodes the same.

#![no_main]

use berth_agent_proto::{encode, Decoder, MAX_FRAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    let mut d = Decoder::from_agent();
    let mut frames = Vec::new();
    'feed: for chunk in rest.chunks(piece) {
        d.push(chunk);
        assert!(d.buffered() <= MAX_FRAME + piece);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    let mut wire = Vec::new();
    for f in &frames {
        encode(f, &mut wire).expect("a decoded frame encodes");
    }
    let mut again = Decoder::from_agent();
    again.push(&wire);
    for want in &frames {
        assert_eq!(
            &again.next_frame().expect("re-decodes").expect("whole"),
            want
        );
    }
});
