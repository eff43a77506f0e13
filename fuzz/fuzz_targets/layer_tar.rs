//! An image layer (berth-image `unpack::unpack_layer`): any bytes, as a plain, gzip or zstd
//! tar stream, unpacked into a fresh directory with the overlay whiteouts and a small size
//! bound. The unpacker must end with a result, never a panic, and write nothing outside its
//! directory: a canary beside it stays as it was.

#![no_main]

use std::fs;

use berth_fuzz::FakeHost;
use berth_image::unpack::{unpack_layer, UnpackOptions, Whiteouts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let base = FakeHost::get().scratch().join("layer");
    let _ = fs::remove_dir_all(&base);
    let dest = base.join("root");
    fs::create_dir_all(&dest).expect("make the layer directory");
    let canary = base.join("canary");
    fs::write(&canary, "untouched").expect("write the canary");
    let opts = UnpackOptions {
        whiteouts: Whiteouts::Overlay,
        preserve_owner: false,
        max_size: 1 << 20,
    };

    let _ = unpack_layer("fuzz", data, &dest, &opts, None);

    assert_eq!(
        fs::read_to_string(&canary).expect("the canary is still there"),
        "untouched"
    );
    let names: Vec<_> = fs::read_dir(&base)
        .expect("list the scratch directory")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert!(
        names.len() <= 2,
        "the layer wrote beside its directory: {names:?}"
    );
});
