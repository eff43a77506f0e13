//! libberth's mount options parser (`libberth::rootfs::options`), as it meets a mount's
//! `options` list from config.json: one option per line of the input (a final newline
//! ends the last line). The result must be consistent: a flag is never both set and
//! cleared; a recursive attribute is never both set and cleared (the atime field aside,
//! which mount_setattr(2) sets by clearing it whole) and the atime field holds one mode,
//! as the kernel requires.

#![no_main]

use libberth::rootfs::options::{
    self, MOUNT_ATTR_NOATIME, MOUNT_ATTR_RELATIME, MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME,
};
use libfuzzer_sys::fuzz_target;

/// The values mount_setattr(2) accepts in the atime field of `attr_set`.
const ATIME_MODES: [u64; 3] = [
    MOUNT_ATTR_RELATIME,
    MOUNT_ATTR_NOATIME,
    MOUNT_ATTR_STRICTATIME,
];

fuzz_target!(|data: &[u8]| {
    // Options come from JSON strings, which are always UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let text = text.strip_suffix('\n').unwrap_or(text);
    let list: Vec<String> = text.split('\n').map(str::to_owned).collect();
    for option in &list {
        let _ = options::is_unsupported(option);
        let _ = options::propagation(option);
    }

    let parsed = options::parse(&list);
    assert!(
        parsed.flags.intersection(parsed.cleared).is_empty(),
        "{list:?}: flags {:?} both set and cleared",
        parsed.flags.intersection(parsed.cleared)
    );
    assert_eq!(
        parsed.rec_set & parsed.rec_clr & !MOUNT_ATTR__ATIME,
        0,
        "{list:?}: recursive attributes both set and cleared"
    );
    let atime = parsed.rec_set & MOUNT_ATTR__ATIME;
    assert!(
        ATIME_MODES.contains(&atime),
        "{list:?}: recursive atime field {atime:#x} is not one mode"
    );
    if parsed.data.is_empty() {
        assert_eq!(parsed.data_string(), None);
    } else {
        assert!(parsed.data_string().is_some());
    }
    let _ = parsed.is_bind();
    let _ = parsed.bind_remount_flags();
});
