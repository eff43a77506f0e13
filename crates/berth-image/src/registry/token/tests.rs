use super::*;

fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Challenge {
    Challenge::Bearer {
        realm: realm.into(),
        service: service.map(str::to_string),
        scope: scope.map(str::to_string),
    }
}

#[test]
fn challenges_parse_with_quotes_and_commas() {
    assert_eq!(
        parse_challenge(
            r#"Bearer realm="https://t.example/token",service="reg",scope="repository:a:pull""#
        ),
        Some(bearer(
            "https://t.example/token",
            Some("reg"),
            Some("repository:a:pull")
        ))
    );
    // A scope with several actions holds a comma inside its quotes.
    assert_eq!(
        parse_challenge(r#"bearer realm="https://t/x", scope="repository:a:pull,push""#),
        Some(bearer("https://t/x", None, Some("repository:a:pull,push")))
    );
    assert_eq!(
        parse_challenge("Bearer realm=https://t/x,service=s"),
        Some(bearer("https://t/x", Some("s"), None))
    );
    assert_eq!(
        parse_challenge(r#"Basic realm="registry""#),
        Some(Challenge::Basic)
    );
    assert_eq!(parse_challenge(r#"Bearer service="no realm""#), None);
    assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
    assert_eq!(parse_challenge("Negotiate abc"), None);
}

#[test]
fn a_realm_is_checked_against_the_registry_scheme() {
    assert!(check_realm("https", "https://auth.example/token").is_ok());
    assert!(check_realm("http", "https://auth.example/token").is_ok());
    assert!(check_realm("http", "http://127.0.0.1:5001/token").is_ok());
    let e = check_realm("https", "http://auth.example/token").unwrap_err();
    assert_eq!(
        e.to_string(),
        "the registry names the token realm http://auth.example/token: plain http for a registry reached over https; no credentials are sent there"
    );
    for bad in [
        "ftp://auth.example/t",
        "file:///etc/passwd",
        "not a url",
        "",
    ] {
        let e = check_realm("http", bad).unwrap_err();
        assert!(matches!(e, TokenError::BadRealm { .. }), "{bad}: {e}");
    }
}
