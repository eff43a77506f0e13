use super::*;

fn load(text: &str) -> Result<RegistriesConfig, ConfigError> {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("registries.toml");
    fs::write(&p, text).unwrap();
    RegistriesConfig::load(&p)
}

#[test]
fn defaults_and_a_missing_file() {
    let c = RegistriesConfig::load(Path::new("/nonexistent/registries.toml")).unwrap();
    assert_eq!(c.search, ["docker.io"]);
    let names: Vec<String> = c
        .candidates("alpine")
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(names, ["docker.io/library/alpine:latest"]);
    let e = c
        .endpoints(&ImageName::parse("quay.io/a/b").unwrap())
        .unwrap();
    assert_eq!(
        e,
        [Endpoint {
            host: "quay.io".into(),
            repository: "a/b".into(),
            insecure: false,
            mirror: false
        }]
    );
    let e = c
        .endpoints(&ImageName::parse("127.0.0.1:5000/a").unwrap())
        .unwrap();
    assert!(e[0].insecure, "loopback registries are insecure by default");
}

#[test]
fn search_mirrors_locations_and_blocking() {
    let c = load(
        r#"
unqualified-search-registries = ["r1.example", "r2.example:5000"]
[[registry]]
prefix = "docker.io"
location = "real.example"
[[registry.mirror]]
location = "m1.example:5000/cache"
insecure = true
[[registry.mirror]]
location = "m2.example"
[[registry]]
prefix = "docker.io/library/blocked"
blocked = true
"#,
    )
    .unwrap();
    let names: Vec<String> = c
        .candidates("me/app:1")
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(names, ["r1.example/me/app:1", "r2.example:5000/me/app:1"]);
    let e = c
        .endpoints(&ImageName::parse("docker.io/library/alpine").unwrap())
        .unwrap();
    let hosts: Vec<(&str, &str, bool, bool)> = e
        .iter()
        .map(|e| (e.host.as_str(), e.repository.as_str(), e.insecure, e.mirror))
        .collect();
    assert_eq!(
        hosts,
        [
            ("m1.example:5000", "cache/library/alpine", true, true),
            ("m2.example", "library/alpine", false, true),
            ("real.example", "library/alpine", false, false)
        ]
    );
    let err = c
        .endpoints(&ImageName::parse("docker.io/library/blocked").unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("blocked") && err.contains("registries.toml"),
        "{err}"
    );
    // A prefix matches at a component boundary only.
    assert!(c
        .entry_for("docker.io/library/blockedness")
        .is_some_and(|e| e.prefix == "docker.io"));
}

#[test]
fn unknown_keys_are_errors_naming_the_file() {
    let e = load("unqualified-search-registry = []\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("registries.toml") && e.contains("unqualified-search-registry"),
        "{e}"
    );
    let e = load("[[registry]]\nprefix = \"a\"\ninsecur = true\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("insecur"), "{e}");
}

#[test]
fn only_real_loopback_hosts_are_implicitly_insecure() {
    for h in [
        "localhost",
        "localhost:5000",
        "127.0.0.1",
        "127.0.0.1:5000",
        "127.1.2.3:80",
        "127.255.255.254",
        "[::1]",
        "[::1]:5000",
    ] {
        assert!(loopback(h), "{h} is on this machine");
    }
    for h in [
        "127.evil.example",
        "127.evil.example:5000",
        "127.0.0.1.nip.io",
        "127.0.0.1.evil.example:443",
        "localhost.evil.example",
        "localhostx:5000",
        "128.0.0.1",
        "10.0.0.1:5000",
        "[::2]:5000",
        "[::1]evil:5000",
        "[::1",
        "127.0.0.1:port",
        "127.0.0.1:99999",
        "",
    ] {
        assert!(!loopback(h), "{h:?} is not a loopback host");
    }
    let c = RegistriesConfig::default();
    let e = c
        .endpoints(&ImageName::parse("127.evil.example/a/b").unwrap())
        .unwrap();
    assert!(!e[0].insecure, "a host named 127.* is not loopback");
    assert!(!c.insecure_host("127.evil.example:5000"));
    assert!(c.insecure_host("127.0.0.1:5000"));
    assert!(c.insecure_host("[::1]:5000"));
}
