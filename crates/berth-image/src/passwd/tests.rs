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
