use super::*;

#[test]
fn reads_each_form_in_order() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.json");
    let b = d.path().join("b.json");
    fs::write(
        &a,
        r#"{"auths": {"https://index.docker.io/v1/": {"auth": "ZG9jazpwdw=="}}}"#,
    )
    .unwrap();
    fs::write(&b, r#"{"auths": {"r.example:5000": {"username": "u", "password": "p"}, "docker.io": {"auth": "b3RoZXI6eA=="}, "tok.example": {"identitytoken": "x"}}}"#).unwrap();
    let s = AuthStore {
        files: vec![d.path().join("missing.json"), a.clone(), b.clone()],
        given: None,
    };
    assert_eq!(
        s.credentials("docker.io").unwrap(),
        Some(("dock".into(), "pw".into())),
        "the first file wins"
    );
    assert_eq!(
        s.credentials("r.example:5000").unwrap(),
        Some(("u".into(), "p".into()))
    );
    assert_eq!(
        s.credentials("tok.example").unwrap(),
        None,
        "identity tokens are skipped"
    );
    assert_eq!(s.credentials("other").unwrap(), None);
    fs::write(&a, "{broken").unwrap();
    let e = s.credentials("docker.io").unwrap_err().to_string();
    assert!(e.contains("a.json"), "{e}");
}

#[test]
fn logout_removes_and_says_when_there_was_nothing() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("auth.json");
    fs::write(
        &a,
        r#"{"auths": {"r.example": {"auth": "dTpw"}, "keep.example": {"auth": "dTpw"}}}"#,
    )
    .unwrap();
    let s = AuthStore {
        files: vec![a.clone()],
        given: None,
    };
    assert_eq!(s.logout("https://r.example/").unwrap(), a);
    assert_eq!(s.credentials("r.example").unwrap(), None);
    assert!(s.credentials("keep.example").unwrap().is_some());
    let e = s.logout("r.example").unwrap_err().to_string();
    assert!(
        e.contains("not logged in") && e.contains("auth.json"),
        "{e}"
    );
}

#[test]
fn files_follow_podman_then_docker() {
    let s = AuthStore::from_vars(
        Some("/a/auth.json".into()),
        Some("/run/user/7".into()),
        Some("/home/u".into()),
        7,
    );
    let want: Vec<PathBuf> = [
        "/a/auth.json",
        "/run/user/7/containers/auth.json",
        "/home/u/.config/containers/auth.json",
        "/home/u/.docker/config.json",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(s.files, want);
    // Root without XDG_RUNTIME_DIR writes where podman does; empty values are unset.
    let s = AuthStore::from_vars(Some("".into()), None, None, 0);
    assert_eq!(s.files, [PathBuf::from("/run/containers/0/auth.json")]);
}

#[test]
fn keys_match_in_every_form() {
    assert!(key_matches("r.example:5000", "r.example:5000"));
    assert!(key_matches("https://r.example:5000", "r.example:5000"));
    assert!(key_matches("https://r.example:5000/v2/", "r.example:5000"));
    assert!(key_matches("https://index.docker.io/v1/", "docker.io"));
    assert!(key_matches("docker.io", "docker.io"));
    assert!(!key_matches("r.example", "r.example:5000"));
    assert!(!key_matches("other.example", "r.example"));
}

#[test]
fn identity_tokens_are_reported_not_used() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("auth.json");
    fs::write(
        &a,
        r#"{"auths": {"tok.example": {"identitytoken": "x"}, "pw.example": {"auth": "dTpw"}}}"#,
    )
    .unwrap();
    let s = AuthStore {
        files: vec![a.clone()],
        given: None,
    };
    assert_eq!(s.credentials("tok.example").unwrap(), None);
    assert_eq!(s.identity_token_only("tok.example"), Some(a));
    assert_eq!(s.identity_token_only("pw.example"), None);
    assert_eq!(s.identity_token_only("other.example"), None);
}

#[test]
fn a_fifo_or_an_oversized_credential_file_is_refused_without_blocking() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("fifo.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let store = AuthStore {
        files: vec![fifo.clone()],
        given: None,
    };
    let e = store.credentials("r.example").unwrap_err().to_string();
    assert_eq!(e, format!("{}: not a regular file", fifo.display()));
    let big = d.path().join("big.json");
    fs::File::create(&big)
        .unwrap()
        .set_len(MAX_AUTH_FILE + 1)
        .unwrap();
    let store = AuthStore {
        files: vec![big.clone()],
        given: None,
    };
    let e = store.credentials("r.example").unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}: 4194305 bytes, over the 4194304-byte limit",
            big.display()
        )
    );
}

#[test]
fn given_credentials_come_before_the_files() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.json");
    fs::write(
        &a,
        r#"{"auths": {"r.example": {"username": "file", "password": "f"}}}"#,
    )
    .unwrap();
    let s = AuthStore {
        files: vec![a],
        given: None,
    };
    assert_eq!(
        s.credentials("r.example").unwrap(),
        Some(("file".into(), "f".into()))
    );
    let s = s.with_credentials("kubelet", "k");
    assert_eq!(
        s.credentials("r.example").unwrap(),
        Some(("kubelet".into(), "k".into()))
    );
}
