use super::*;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};

#[test]
fn write_atomic_leaves_links_planted_beside_it_alone() {
    let safe = tempfile::tempdir().unwrap();
    let canary = safe.path().join("canary");
    fs::write(&canary, "precious").unwrap();
    let shared = tempfile::tempdir().unwrap();
    let target = shared.path().join("auth.json");
    // The name write_atomic used to write through (after removing what was there).
    let old_tmp = shared
        .path()
        .join(format!(".auth.json.{}.tmp", std::process::id()));
    symlink(&canary, &old_tmp).unwrap();
    write_atomic(&target, b"{}", 0o600).unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"{}");
    assert_eq!(
        fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(fs::read(&canary).unwrap(), b"precious");
    assert_eq!(
        fs::read_link(&old_tmp).unwrap(),
        canary,
        "another's entry is neither followed nor removed"
    );
    let names: Vec<String> = fs::read_dir(shared.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "nothing of its own is left: {names:?}");
}

#[test]
fn missing_directories_are_made_0700_one_by_one() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a/b/c");
    let fd = open_or_make_dir(&p, 0o700).unwrap();
    write_atomic_in(&fd, OsStr::new("f"), b"x", 0o600).unwrap();
    assert_eq!(fs::read(p.join("f")).unwrap(), b"x");
    for sub in ["a", "a/b", "a/b/c"] {
        let m = fs::metadata(d.path().join(sub)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700, "{sub}");
    }
    // An existing path is opened as it is, links in it followed (the caller's path).
    symlink(d.path().join("a"), d.path().join("link")).unwrap();
    open_or_make_dir(&d.path().join("link/b"), 0o700).unwrap();
}

#[test]
fn a_temporary_directory_is_new_and_private() {
    let d = tempfile::tempdir().unwrap();
    let dir = open_dir(d.path()).unwrap();
    let (fd, name) = create_temp_dir(&dir, OsStr::new("out")).unwrap();
    let s = name.to_string_lossy();
    assert!(
        s.starts_with(".out.tmp-") && s.len() == ".out.tmp-".len() + 32,
        "{s}"
    );
    assert_eq!(nix::sys::stat::fstat(&fd).unwrap().st_mode & 0o7777, 0o700);
    let (_, again) = create_temp_dir(&dir, OsStr::new("out")).unwrap();
    assert_ne!(name, again, "unguessable, so never the same twice");
    rename_noreplace(&dir, &name, OsStr::new("out")).unwrap();
    let e = rename_noreplace(&dir, &again, OsStr::new("out")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
}
