use std::fs;
use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

use berth_fs::{reopen_dir, set_xattr};
use nix::sys::stat::{mkdirat, utimensat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::*;

fn meta(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap()
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn user_xattr(p: &Path) -> Option<Vec<u8>> {
    let f = File::open(p).unwrap();
    berth_fs::kept_xattrs(&f)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k.as_bytes() == b"user.berth")
        .map(|(_, v)| v)
}

fn root_uid() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn a_tree_keeps_owners_modes_times_links_and_xattrs() {
    if !root_uid() {
        berth_testkit::skip(
            "a_tree_keeps_owners_modes_times_links_and_xattrs",
            "needs root to set owners",
        );
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let rootfs = d.path().join("rootfs");
    let data = rootfs.join("var/lib/db");
    fs::create_dir_all(data.join("sub/deeper")).unwrap();
    fs::write(data.join("seed"), b"seeded").unwrap();
    fs::write(data.join("sub/deeper/big"), vec![7u8; 300_000]).unwrap();
    fs::hard_link(data.join("seed"), data.join("sub/seed-link")).unwrap();
    std::os::unix::fs::symlink("../seed", data.join("sub/rel")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", data.join("abs")).unwrap();
    nix::unistd::mkfifo(&data.join("pipe"), Mode::from_bits_truncate(0o640)).unwrap();
    let _sock = UnixListener::bind(data.join("sock")).unwrap();
    chown(&data.join("seed"), 4242, 4343);
    chmod(&data.join("seed"), 0o4750);
    chown(&data.join("sub/rel"), 7, 8);
    chown(&data.join("pipe"), 9, 10);
    chown(&data.join("sub"), 4242, 4343);
    chmod(&data.join("sub"), 0o500);
    chown(&data, 999, 998);
    chmod(&data, 0o750);
    let f = File::open(data.join("sub/deeper/big")).unwrap();
    set_xattr(&f, c"user.berth", b"kept").unwrap();
    set_xattr(&f, c"trusted.overlay.opaque", b"y").unwrap();
    drop(f);
    let old = TimeSpec::new(1_000_000, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        &data.join("sub/deeper"),
        &old,
        &old,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();

    let vol = d.path().join("vol");
    fs::create_dir(&vol).unwrap();
    let stats = copy_up(&rootfs, "/var/lib/db", &vol).unwrap();
    assert_eq!(stats.skipped, 1, "the socket");
    assert_eq!(
        stats.bytes,
        6 + 300_000,
        "the hardlink's data is not copied twice"
    );
    assert_eq!(stats.entries, 8);

    let m = meta(&vol);
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (999, 998, 0o750));
    let m = meta(&vol.join("seed"));
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (4242, 4343, 0o4750));
    assert_eq!(fs::read(vol.join("seed")).unwrap(), b"seeded");
    assert_eq!(
        m.ino(),
        meta(&vol.join("sub/seed-link")).ino(),
        "a hardlink stays one file"
    );
    assert_eq!(meta(&vol.join("sub")).mode() & 0o7777, 0o500);
    assert_eq!(fs::read(vol.join("sub/deeper/big")).unwrap().len(), 300_000);
    assert_eq!(meta(&vol.join("sub/deeper")).mtime(), 1_000_000);
    assert_eq!(
        user_xattr(&vol.join("sub/deeper/big")).as_deref(),
        Some(&b"kept"[..])
    );
    let overlay = File::open(vol.join("sub/deeper/big")).unwrap();
    assert!(
        berth_fs::kept_xattrs(&overlay)
            .unwrap()
            .iter()
            .all(|(k, _)| !k.as_bytes().starts_with(b"trusted.overlay.")),
        "overlayfs's own xattrs are not copied"
    );
    assert_eq!(
        fs::read_link(vol.join("sub/rel")).unwrap(),
        Path::new("../seed")
    );
    assert_eq!(
        (
            meta(&vol.join("sub/rel")).uid(),
            meta(&vol.join("sub/rel")).gid()
        ),
        (7, 8)
    );
    assert_eq!(
        fs::read_link(vol.join("abs")).unwrap(),
        Path::new("/etc/shadow"),
        "a link is copied as a link, never followed"
    );
    let m = meta(&vol.join("pipe"));
    assert!(m.file_type().is_fifo());
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (9, 10, 0o640));
    assert!(!vol.join("sock").exists());
}

#[test]
fn a_volume_path_through_a_link_stays_in_the_root() {
    let d = tempfile::tempdir().unwrap();
    let host = d.path().join("host-secret");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("key"), b"host only").unwrap();
    let rootfs = d.path().join("rootfs");
    fs::create_dir_all(rootfs.join("real")).unwrap();
    fs::write(rootfs.join("real/inside"), b"image").unwrap();
    // Absolute and climbing links, each aimed at the host directory.
    std::os::unix::fs::symlink(&host, rootfs.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../host-secret", rootfs.join("up")).unwrap();
    std::os::unix::fs::symlink("/real", rootfs.join("via")).unwrap();
    for v in ["/abs", "/up", "/abs/../up"] {
        let vol = d.path().join(format!("vol{}", v.replace('/', "_")));
        fs::create_dir(&vol).unwrap();
        let stats = copy_up(&rootfs, v, &vol).unwrap();
        assert_eq!(stats, CopyUpStats::default(), "{v}: nothing from the host");
        assert!(fs::read_dir(&vol).unwrap().next().is_none(), "{v}");
    }
    let vol = d.path().join("vol-via");
    fs::create_dir(&vol).unwrap();
    copy_up(&rootfs, "/via", &vol).unwrap();
    assert_eq!(
        fs::read(vol.join("inside")).unwrap(),
        b"image",
        "a link inside the root is fine"
    );
}

#[test]
fn a_missing_path_copies_nothing_and_a_file_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let rootfs = d.path().join("rootfs");
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::write(rootfs.join("etc/conf"), b"x").unwrap();
    let vol = d.path().join("vol");
    fs::create_dir(&vol).unwrap();
    chmod(&vol, 0o755);
    assert_eq!(
        copy_up(&rootfs, "/data", &vol).unwrap(),
        CopyUpStats::default()
    );
    assert_eq!(meta(&vol).mode() & 0o7777, 0o755, "left as made");
    let e = copy_up(&rootfs, "/etc/conf", &vol).unwrap_err().to_string();
    assert_eq!(
        e,
        "volume /etc/conf: cannot copy /etc/conf from the image: it is not a directory in the image"
    );
    let e = copy_up(&rootfs, "/", &vol).unwrap_err().to_string();
    assert_eq!(
        e,
        "volume /: cannot copy / from the image: a volume cannot be the root"
    );
}

#[test]
fn nesting_past_the_limit_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let rootfs = d.path().join("rootfs");
    let p = rootfs.join("v");
    fs::create_dir_all(&p).unwrap();
    // Made one level at a time through a descriptor: the whole path is past PATH_MAX.
    let mut fd = nix::fcntl::open(&p, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
    for _ in 0..=MAX_DEPTH {
        mkdirat(&fd, "dddddddddddddddddddd", Mode::from_bits_truncate(0o755)).unwrap();
        fd = reopen_dir(&fd, "dddddddddddddddddddd").unwrap();
    }
    let vol = d.path().join("vol");
    fs::create_dir(&vol).unwrap();
    let e = copy_up(&rootfs, "/v", &vol).unwrap_err().to_string();
    assert!(
        e.starts_with("volume /v: cannot copy /v/dddddddddddddddddddd/")
            && e.ends_with(&format!(
                "copy: directories nest deeper than {MAX_DEPTH} levels"
            )),
        "{e}"
    );
}
