use super::*;
use std::fs;

fn rootfs() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir(d.path().join("etc")).unwrap();
    fs::write(
        d.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n# comment\nweb:x:33:33:www:/var/www:/bin/false\nbroken line\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        d.path().join("etc/group"),
        "root:x:0:\nweb:x:33:\napp:x:1000:\nwheel:x:10:app,web\naudio:x:29:app\n",
    )
    .unwrap();
    d
}

#[test]
fn names_numbers_and_groups() {
    let d = rootfs();
    let r = |s| resolve_user(d.path(), s).unwrap();
    assert_eq!(
        r(""),
        ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            home: Some("/root".into())
        }
    );
    let app = r("app");
    assert_eq!(
        (app.uid, app.gid, app.additional_gids.clone()),
        (1000, 1000, vec![10, 29])
    );
    assert_eq!(app.home.as_deref(), Some("/home/app"));
    assert_eq!((r("33").uid, r("33").gid), (33, 33));
    let unknown = r("4242");
    assert_eq!((unknown.uid, unknown.gid, unknown.home), (4242, 0, None));
    assert_eq!((r("app:wheel").uid, r("app:wheel").gid), (1000, 10));
    assert_eq!(r("app:wheel").additional_gids, Vec::<u32>::new());
    assert_eq!((r("5:7").uid, r("5:7").gid), (5, 7));
}

#[test]
fn unknown_names_are_errors_naming_them() {
    let d = rootfs();
    let e = resolve_user(d.path(), "nobody-here")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nobody-here") && e.contains("/etc/passwd"),
        "{e}"
    );
    let e = resolve_user(d.path(), "app:nogroup")
        .unwrap_err()
        .to_string();
    assert!(e.contains("nogroup") && e.contains("/etc/group"), "{e}");
}

#[test]
fn a_link_to_a_host_file_is_read_inside_the_image() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir(d.path().join("etc")).unwrap();
    // The image's passwd points at the host's: it must resolve inside the rootfs, where
    // there is no /etc/shadow-like file, not read the host's /etc/passwd.
    std::os::unix::fs::symlink("/etc/hostpasswd", d.path().join("etc/passwd")).unwrap();
    fs::write(
        d.path().join("etc/hostpasswd"),
        "root:x:0:0::/in-image:/bin/sh\n",
    )
    .unwrap();
    let u = resolve_user(d.path(), "root").unwrap();
    assert_eq!(u.home.as_deref(), Some("/in-image"));
    std::os::unix::fs::symlink("../../../../../../etc", d.path().join("etc2")).unwrap();
    fs::remove_file(d.path().join("etc/passwd")).unwrap();
    std::os::unix::fs::symlink("/etc2/passwd", d.path().join("etc/passwd")).unwrap();
    // /etc2 -> ../../etc resolves to the image's own /etc, where passwd is that same link:
    // a loop, not the host file.
    let e = resolve_user(d.path(), "root");
    assert!(e.is_err() || e.unwrap().home.as_deref() != Some("/root"));
}

#[test]
fn missing_files_mean_numeric_ids_only() {
    let d = tempfile::tempdir().unwrap();
    assert_eq!(resolve_user(d.path(), "12:34").unwrap().gid, 34);
    assert!(resolve_user(d.path(), "app").is_err());
}

/// A character-device major no driver has registered on this host: opening such a node
/// fails with ENXIO, so an ENXIO in an error would show that the node was opened.
fn unregistered_major() -> u64 {
    let devices = fs::read_to_string("/proc/devices").unwrap();
    let chars = devices.split("Block devices:").next().unwrap();
    let used: Vec<u64> = chars
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    (60..=254).find(|m| !used.contains(m)).unwrap()
}

#[test]
fn a_character_device_as_passwd_is_never_opened() {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let d = rootfs();
    let p = d.path().join("etc/passwd");
    fs::remove_file(&p).unwrap();
    mknod(
        &p,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o644),
        makedev(unregistered_major(), 0),
    )
    .unwrap();
    let e = resolve_user(d.path(), "app").unwrap_err().to_string();
    assert_eq!(
        e,
        "user \"app\": the image's /etc/passwd is a character device, not a regular file"
    );
}

#[test]
fn a_fifo_as_passwd_is_never_opened() {
    use std::os::unix::fs::OpenOptionsExt;
    let d = rootfs();
    let p = d.path().join("etc/passwd");
    fs::remove_file(&p).unwrap();
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    // A writer blocks in open() until someone opens the fifo for reading.
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (p2, o2) = (p.clone(), opened.clone());
    let writer = std::thread::spawn(move || {
        let _w = fs::OpenOptions::new().write(true).open(&p2).unwrap();
        o2.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    let e = resolve_user(d.path(), "app").unwrap_err().to_string();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let was_opened = opened.load(std::sync::atomic::Ordering::SeqCst);
    // Let the writer go.
    let _r = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&p)
        .unwrap();
    writer.join().unwrap();
    assert!(!was_opened, "resolve_user opened the fifo");
    assert_eq!(
        e,
        "user \"app\": the image's /etc/passwd is a fifo, not a regular file"
    );
}

#[test]
fn an_oversized_group_file_is_refused() {
    let d = rootfs();
    let f = fs::File::create(d.path().join("etc/group")).unwrap();
    f.set_len(MAX_FILE + 1).unwrap();
    let e = resolve_user(d.path(), "app").unwrap_err().to_string();
    assert_eq!(
        e,
        format!("user \"app\": the image's /etc/group is larger than {MAX_FILE} bytes")
    );
}
