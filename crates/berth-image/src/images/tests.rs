use super::*;
use crate::build::{simple_config, store_image, LayerBuilder};

fn layer(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = LayerBuilder::new();
    b.file(name, 0o644, data).unwrap();
    b.finish().unwrap()
}

fn setup() -> (tempfile::TempDir, ContentStore, ImageStore) {
    let dir = tempfile::tempdir().unwrap();
    let content = ContentStore::open(&dir.path().join("content")).unwrap();
    let images = ImageStore::open(dir.path()).unwrap();
    (dir, content, images)
}

#[test]
fn chain_ids_follow_the_image_spec() {
    let a: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
    let b: Digest = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
    assert_eq!(chain_id(None, &a), a);
    let expected = Digest::of(Algorithm::Sha256, format!("{a} {b}").as_bytes());
    assert_eq!(chain_id(Some(&a), &b), expected);
}

#[test]
fn add_records_layers_diff_ids_and_chain() {
    let (_d, content, images) = setup();
    let l1 = layer("a", b"1");
    let l2 = layer("b", b"2");
    let img = store_image(
        &content,
        Some("example.org/x:1".into()),
        &[l1.clone(), l2.clone()],
        simple_config(&["sh"]),
        "amd64",
    )
    .unwrap();
    let rec = images.add(&content, &img, &[]).unwrap();
    assert_eq!(rec.names, vec!["example.org/x:1".to_string()]);
    assert_eq!(rec.layers.len(), 2);
    let d1 = Digest::of(Algorithm::Sha256, &l1);
    let d2 = Digest::of(Algorithm::Sha256, &l2);
    assert_eq!(rec.layers[0].diff_id, d1);
    assert_eq!(rec.layers[0].chain_id, d1);
    assert_eq!(rec.layers[1].chain_id, chain_id(Some(&d1), &d2));
    assert_eq!(rec.architecture, "amd64");
    assert_eq!(rec.manifest_digest, img.manifest_digest);
    // Survives reopening.
    let again = ImageStore::open(_d.path()).unwrap();
    assert_eq!(again.list().unwrap(), vec![rec]);
}

#[test]
fn a_name_moves_to_the_newer_image() {
    let (_d, content, images) = setup();
    let a = store_image(
        &content,
        Some("r.io/a:latest".into()),
        &[layer("a", b"1")],
        simple_config(&["sh"]),
        "amd64",
    )
    .unwrap();
    let b = store_image(
        &content,
        Some("r.io/a:latest".into()),
        &[layer("a", b"2")],
        simple_config(&["sh"]),
        "amd64",
    )
    .unwrap();
    let ra = images.add(&content, &a, &[]).unwrap();
    let rb = images.add(&content, &b, &[]).unwrap();
    let all = images.list().unwrap();
    assert_eq!(all.len(), 2);
    let old = all.iter().find(|i| i.id == ra.id).unwrap();
    assert!(old.names.is_empty(), "the old image keeps no name: {old:?}");
    assert_eq!(images.find("r.io/a", &[]).unwrap().id, rb.id);
}

#[test]
fn find_by_name_candidate_id_prefix_and_digest() {
    let (_d, content, images) = setup();
    let img = store_image(
        &content,
        Some("docker.io/library/busy:latest".into()),
        &[layer("a", b"1")],
        simple_config(&["sh"]),
        "amd64",
    )
    .unwrap();
    let rec = images.add(&content, &img, &[]).unwrap();
    assert_eq!(
        images.find("docker.io/library/busy:latest", &[]).unwrap(),
        rec
    );
    assert_eq!(images.find("docker.io/library/busy", &[]).unwrap(), rec);
    assert_eq!(
        images
            .find("busy", &["docker.io/library/busy:latest".into()])
            .unwrap(),
        rec
    );
    assert_eq!(images.find(&rec.id.hex()[..5], &[]).unwrap(), rec);
    assert_eq!(images.find(&rec.id.to_string(), &[]).unwrap(), rec);
    assert_eq!(
        images.find(&rec.manifest_digest.to_string(), &[]).unwrap(),
        rec
    );
    assert!(matches!(
        images.find("busy", &[]),
        Err(ImageError::NotFound(_))
    ));
    assert!(matches!(
        images.find("ab", &[]),
        Err(ImageError::NotFound(_))
    ));
}

#[test]
fn tag_untag_and_remove() {
    let (_d, content, images) = setup();
    let img = store_image(
        &content,
        Some("r.io/a:1".into()),
        &[layer("a", b"1")],
        simple_config(&["sh"]),
        "amd64",
    )
    .unwrap();
    let rec = images.add(&content, &img, &[]).unwrap();
    let t = images.tag("r.io/a:1", &[], "localhost/b:2").unwrap();
    assert_eq!(
        t.names,
        vec!["r.io/a:1".to_string(), "localhost/b:2".to_string()]
    );
    let u = images.untag("r.io/a:1").unwrap();
    assert_eq!(u.names, vec!["localhost/b:2".to_string()]);
    assert!(matches!(
        images.untag("r.io/a:1"),
        Err(ImageError::NotFound(_))
    ));
    let refs = images.referenced_blobs().unwrap();
    assert!(refs.contains(&rec.id) && refs.contains(&rec.manifest_digest));
    assert!(refs.contains(&rec.layers[0].digest));
    images.remove(&rec.id).unwrap();
    assert!(images.list().unwrap().is_empty());
    assert!(images.referenced_blobs().unwrap().is_empty());
}

#[test]
fn a_corrupt_store_is_an_error_naming_the_file() {
    let (d, _content, images) = setup();
    fs::write(d.path().join("images.json"), b"{not json").unwrap();
    let e = images.list().unwrap_err().to_string();
    assert!(e.contains("images.json"), "{e}");
}

#[test]
fn a_layer_count_unlike_the_config_is_refused() {
    let (_d, content, images) = setup();
    let mut img = store_image(
        &content,
        None,
        &[layer("a", b"1")],
        simple_config(&["sh"]),
        "amd64",
    )
    .unwrap();
    let mut layers = img.manifest.layers().clone();
    layers.push(layers[0].clone());
    img.manifest.set_layers(layers);
    let e = images.add(&content, &img, &[]).unwrap_err().to_string();
    assert!(e.contains("2 layers") && e.contains("1 diffIDs"), "{e}");
}

#[test]
fn concurrent_adds_keep_every_image() {
    let (_d, content, images) = setup();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let content = content.clone();
            let images = images.clone();
            std::thread::spawn(move || {
                let img = store_image(
                    &content,
                    Some(format!("r.io/c:{i}")),
                    &[layer("x", format!("{i}").as_bytes())],
                    simple_config(&["sh"]),
                    "amd64",
                )
                .unwrap();
                images.add(&content, &img, &[]).unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(images.list().unwrap().len(), 8);
}
