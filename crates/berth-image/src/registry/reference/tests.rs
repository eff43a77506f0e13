use super::*;

#[test]
fn names_as_docker_reads_them() {
    let p = |s: &str| ImageName::parse(s).unwrap().to_string();
    assert_eq!(p("alpine"), "docker.io/library/alpine:latest");
    assert_eq!(p("library/alpine:3"), "docker.io/library/alpine:3");
    assert_eq!(p("docker.io/alpine"), "docker.io/library/alpine:latest");
    assert_eq!(p("index.docker.io/me/app:v1"), "docker.io/me/app:v1");
    assert_eq!(p("127.0.0.1:5000/a/b:tag"), "127.0.0.1:5000/a/b:tag");
    assert_eq!(p("localhost/x"), "localhost/x:latest");
    let d = format!("sha256:{}", "a".repeat(64));
    assert_eq!(p(&format!("quay.io/x/y@{d}")), format!("quay.io/x/y@{d}"));
    assert_eq!(
        p(&format!("quay.io/x/y:1@{d}")),
        format!("quay.io/x/y:1@{d}")
    );
    for bad in [
        "",
        "UPPER/case",
        "a//b",
        "x:",
        "x:-bad",
        "quay.io/x@sha256:zz",
        "-x",
    ] {
        assert!(ImageName::parse(bad).is_err(), "{bad:?}");
    }
    assert!(ImageName::is_fully_qualified("localhost/x"));
    assert!(ImageName::is_fully_qualified("a.b/x"));
    assert!(!ImageName::is_fully_qualified("me/app"));
    assert!(!ImageName::is_fully_qualified("alpine"));
}
