//! Regression tests for known container escapes that apply to berth itself.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use crate::common::*;

/// CVE-2019-5736: the container init (and any berth process inside a container) must not
/// run from the host's berth binary, or a container process could reopen that image for
/// writing once the runtime process exits. berth re-execs through a read-only bind mount of
/// itself (or a sealed memfd copy).
#[test]
fn the_inits_image_cannot_be_written_even_after_it_dies() {
    let berth = Berth::new();
    let b = Bundle::new().sh("true");
    let id = unique_id("cve5736");
    let before = fs::read(berth_bin()).expect("read the berth binary");
    berth.create(&id, b.path(), &[]).assert_ok("create");
    let init = berth.pid(&id);

    // What an attacker holds: an O_PATH handle on the runtime's image.
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/{init}/exe"))
        .unwrap();
    berth.cmd(&["delete", "--force", &id]).assert_ok("delete");

    // Once the init is gone, the image is no longer busy: try to reopen it for writing.
    if let Ok(mut f) = OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
    {
        let host = fs::metadata(berth_bin()).unwrap();
        let got = f.metadata().unwrap();
        // Never write to the real binary: that it is reachable at all is the failure.
        assert!(
            (got.dev(), got.ino()) != (host.dev(), host.ino()),
            "a container process could write the host's berth binary"
        );
        let err = f
            .write_all(b"x")
            .expect_err("the sealed copy accepted a write");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    } else {
        let err = OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
            .unwrap_err();
        assert!(
            matches!(
                err.raw_os_error(),
                Some(libc::EROFS) | Some(libc::EPERM) | Some(libc::EACCES)
            ),
            "unexpected refusal {err}"
        );
    }
    assert_eq!(
        fs::read(berth_bin()).unwrap(),
        before,
        "the berth binary changed"
    );
}
