use super::*;
use serde_json::json;

const IMAGE: &str = "r.example/a/b:1";

fn manifest(
    config_type: &str,
    config_size: u64,
    layer_type: &str,
) -> oci_spec::image::ImageManifest {
    let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    serde_json::from_value(json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": config_type, "digest": d('c'), "size": config_size},
        "layers": [{"mediaType": layer_type, "digest": d('1'), "size": 10}]
    }))
    .unwrap()
}

#[test]
fn every_allowed_layer_type_is_fetched() {
    for t in LAYER_TYPES {
        let w = wanted_blobs(IMAGE, &manifest(CONFIG_TYPES[0], 5, t)).unwrap();
        assert_eq!(w.len(), 2, "{t}");
        assert!(w[0].kind == BlobKind::Config && w[0].size == 5);
        assert!(w[1].kind == BlobKind::Layer && w[1].size == 10);
        assert_eq!(
            w[1].digest.to_string(),
            format!("sha256:{}", "1".repeat(64))
        );
    }
}

#[test]
fn unsupported_and_foreign_layers_are_named() {
    let e = wanted_blobs(
        IMAGE,
        &manifest(
            CONFIG_TYPES[0],
            5,
            "application/vnd.example.layer.v1+squashfs",
        ),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "image r.example/a/b:1: unsupported layer media type \"application/vnd.example.layer.v1+squashfs\""
    );
    let e = wanted_blobs(
        IMAGE,
        &manifest(
            CONFIG_TYPES[0],
            5,
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        ),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "image r.example/a/b:1: unsupported layer (non-distributable and foreign layers are not fetched) media type \"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip\""
    );
    let e = wanted_blobs(
        IMAGE,
        &manifest("application/vnd.example.config+json", 5, LAYER_TYPES[0]),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "image r.example/a/b:1: unsupported config media type \"application/vnd.example.config+json\""
    );
}

#[test]
fn a_config_over_8_mib_is_refused() {
    let e = wanted_blobs(
        IMAGE,
        &manifest(CONFIG_TYPES[0], MAX_CONFIG + 1, LAYER_TYPES[1]),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "image r.example/a/b:1: the config is 8388609 bytes, over the 8388608-byte limit"
    );
    assert!(wanted_blobs(
        IMAGE,
        &manifest(CONFIG_TYPES[0], MAX_CONFIG, LAYER_TYPES[1])
    )
    .is_ok());
}

#[test]
fn manifests_are_bounded_pinned_and_json() {
    let mut big = br#"{"x":""#.to_vec();
    big.resize(MAX_MANIFEST as usize + 1, b' ');
    let e = check_manifest(IMAGE, &big, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "image r.example/a/b:1: the manifest is 4194305 bytes, over the 4194304-byte limit"
    );
    let body = br#"{"schemaVersion":2}"#;
    let right = Digest::of(Algorithm::Sha256, body);
    assert_eq!(
        check_manifest(IMAGE, body, Some(&right)).unwrap()["schemaVersion"],
        2
    );
    let wrong = Digest::of(Algorithm::Sha256, b"other");
    let e = check_manifest(IMAGE, body, Some(&wrong)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("image r.example/a/b:1: blob {wrong}: digest mismatch, the registry sent data hashing to {right}")
    );
    let e = check_manifest(IMAGE, b"<html>", None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("image r.example/a/b:1: the manifest is not JSON: "),
        "{e}"
    );
}

#[test]
fn media_types_from_the_field_or_the_shape() {
    assert_eq!(
        media_type(
            &json!({"mediaType": "application/vnd.docker.distribution.manifest.list.v2+json"})
        ),
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    assert_eq!(
        media_type(&json!({"manifests": []})),
        platform::INDEX_TYPES[0]
    );
    assert_eq!(
        media_type(&json!({"config": {}})),
        platform::MANIFEST_TYPES[0]
    );
    assert_eq!(media_type(&json!({"schemaVersion": 1})), "");
}

#[test]
fn credential_errors_say_whose() {
    let e = PullError::Unauthorized {
        image: IMAGE.into(),
        registry: "r.example".into(),
        user: Some("me".into()),
        cause: "HTTP 401 from https://r.example/v2/".into(),
    };
    assert_eq!(
        e.to_string(),
        "image r.example/a/b:1: registry r.example refused the credentials of user me: HTTP 401 from https://r.example/v2/"
    );
    let e = PullError::Unauthorized {
        image: IMAGE.into(),
        registry: "r.example".into(),
        user: None,
        cause: "HTTP 401".into(),
    };
    assert_eq!(
        e.to_string(),
        "image r.example/a/b:1: registry r.example refused the credentials (none are stored for it: log in first): HTTP 401"
    );
}
