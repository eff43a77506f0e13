use super::*;
use crate::build::{simple_config, store_image, LayerBuilder};

fn store() -> (tempfile::TempDir, ContentStore) {
    let d = tempfile::tempdir().unwrap();
    let s = ContentStore::open(&d.path().join("content")).unwrap();
    (d, s)
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn image(s: &ContentStore, name: &str) -> FetchedImage {
    let mut a = LayerBuilder::new();
    a.file("a", 0o644, b"one").unwrap();
    let mut b = LayerBuilder::new();
    b.file("b", 0o644, b"two").unwrap();
    store_image(
        s,
        Some(name.into()),
        &[a.finish().unwrap(), b.finish().unwrap()],
        simple_config(&["sh"]),
        "amd64",
    )
    .unwrap()
}

const HOST: (&str, &str, Option<&str>) = ("linux", "amd64", None);

#[test]
fn round_trips_in_every_format() {
    let (dir, s) = store();
    let img = image(&s, "localhost/rt:1");
    for (fmt, file) in [
        (ArchiveFormat::OciLayout, "layout"),
        (ArchiveFormat::OciArchive, "oci.tar"),
        (ArchiveFormat::DockerArchive, "docker.tar"),
    ] {
        let dest = dir.path().join(file);
        export(
            &s,
            &[ExportImage {
                name: Some("localhost/rt:1"),
                manifest_digest: &img.manifest_digest,
            }],
            fmt,
            &dest,
        )
        .unwrap();
        assert_eq!(detect(&dest).unwrap(), fmt);
        let (_d2, s2) = store();
        let got = import(&s2, &dest, HOST).unwrap();
        assert_eq!(got.len(), 1, "{fmt:?}");
        assert_eq!(got[0].name.as_deref(), Some("localhost/rt:1"), "{fmt:?}");
        // Same config, same layers' content (docker archives hold them uncompressed,
        // which these already are).
        assert_eq!(
            got[0].manifest.config().digest(),
            img.manifest.config().digest(),
            "{fmt:?}"
        );
        for l in got[0].manifest.layers() {
            assert!(s2.exists(&l.digest().to_string().parse().unwrap()));
        }
        // Nothing staged remains.
        assert_eq!(
            std::fs::read_dir(
                s2.blob_path(&img.manifest_digest)
                    .parent()
                    .unwrap()
                    .parent()
                    .unwrap()
                    .parent()
                    .unwrap()
                    .join("ingest")
            )
            .unwrap()
            .count(),
            0
        );
    }
    let e = export(
        &s,
        &[ExportImage {
            name: None,
            manifest_digest: &img.manifest_digest,
        }],
        ArchiveFormat::OciArchive,
        &dir.path().join("oci.tar"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("exists already"), "{e}");
}

#[test]
fn compressed_docker_archives_and_compressed_layers() {
    let (dir, s) = store();
    let mut l = LayerBuilder::new();
    l.file("x", 0o644, b"x").unwrap();
    let plain = l.finish().unwrap();
    let diff = Digest::of(Algorithm::Sha256, &plain);
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff.to_string()]}})).unwrap();
    let layer = gz(&plain);
    let mut b = tar::Builder::new(Vec::new());
    for (n, d) in [("cfg.json", &config), ("l/layer.tar", &layer)] {
        let mut h = tar_header(d.len() as u64);
        b.append_data(&mut h, n, &d[..]).unwrap();
    }
    let m = serde_json::to_vec(
        &json!([{"Config": "cfg.json", "RepoTags": ["busybox:1"], "Layers": ["l/layer.tar"]}]),
    )
    .unwrap();
    let mut h = tar_header(m.len() as u64);
    b.append_data(&mut h, "manifest.json", &m[..]).unwrap();
    let path = dir.path().join("d.tar.gz");
    std::fs::write(&path, gz(&b.into_inner().unwrap())).unwrap();
    let got = import(&s, &path, HOST).unwrap();
    assert_eq!(got[0].name.as_deref(), Some("docker.io/library/busybox:1"));
    assert_eq!(
        got[0].manifest.layers()[0].media_type().to_string(),
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
}

fn tar_of(members: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, link) in members {
        let mut h = tar_header(data.len() as u64);
        h.set_entry_type(*kind);
        let n = &mut h.as_old_mut().name;
        n.fill(0);
        n[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            let ln = &mut h.as_old_mut().linkname;
            ln[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_archives_are_refused_and_leave_nothing() {
    let (dir, s) = store();
    let m: &[u8] = b"[]";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "../x",
            tar_of(&[
                ("manifest.json", tar::EntryType::Regular, m, None),
                ("../x", tar::EntryType::Regular, b"x", None),
            ]),
        ),
        (
            "/etc/x",
            tar_of(&[
                ("manifest.json", tar::EntryType::Regular, m, None),
                ("/etc/x", tar::EntryType::Regular, b"x", None),
            ]),
        ),
        (
            "ln",
            tar_of(&[
                ("manifest.json", tar::EntryType::Regular, m, None),
                ("ln", tar::EntryType::Symlink, b"", Some("/etc/passwd")),
            ]),
        ),
        (
            "hard",
            tar_of(&[
                ("manifest.json", tar::EntryType::Regular, m, None),
                ("hard", tar::EntryType::Link, b"", Some("/etc/shadow")),
            ]),
        ),
    ];
    for (member, data) in cases {
        let p = dir.path().join("bad.tar");
        std::fs::write(&p, data).unwrap();
        let e = import(&s, &p, HOST).unwrap_err().to_string();
        assert!(e.contains("bad.tar") && e.contains(member), "{member}: {e}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("content/ingest"))
            .unwrap()
            .count(),
        0
    );
    assert!(!dir.path().join("x").exists());
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused() {
    let (dir, s) = store();
    let img = image(&s, "localhost/t:1");
    let layout = dir.path().join("layout");
    export(
        &s,
        &[ExportImage {
            name: Some("localhost/t:1"),
            manifest_digest: &img.manifest_digest,
        }],
        ArchiveFormat::OciLayout,
        &layout,
    )
    .unwrap();
    let l = img.manifest.layers()[1].digest().to_string();
    let hex = l.trim_start_matches("sha256:");
    let blob = layout.join("blobs/sha256").join(hex);
    let mut data = std::fs::read(&blob).unwrap();
    data[600] ^= 0xff;
    std::fs::write(&blob, &data).unwrap();
    let (_d, s2) = store();
    let e = import(&s2, &layout, HOST).unwrap_err().to_string();
    assert!(e.contains(hex) && e.contains("hashes to"), "{e}");
    assert!(!s2.exists(&l.parse().unwrap()));
    // And a missing blob.
    std::fs::remove_file(&blob).unwrap();
    let e = import(&s2, &layout, HOST).unwrap_err().to_string();
    assert!(e.contains(hex) && e.contains("missing"), "{e}");
}

#[test]
fn an_index_picks_the_platform() {
    let (dir, s) = store();
    let amd = image(&s, "localhost/m:1");
    let layout = dir.path().join("layout");
    export(
        &s,
        &[ExportImage {
            name: None,
            manifest_digest: &amd.manifest_digest,
        }],
        ArchiveFormat::OciLayout,
        &layout,
    )
    .unwrap();
    let idx: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut entry = idx["manifests"][0].clone();
    entry["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let nested = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry]})).unwrap();
    let nd = Digest::of(Algorithm::Sha256, &nested);
    std::fs::write(layout.join("blobs/sha256").join(nd.hex()), &nested).unwrap();
    let top = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": nd.to_string(), "size": nested.len(), "annotations": {"org.opencontainers.image.ref.name": "localhost/m:1"}}]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    let (_d, s2) = store();
    let got = import(&s2, &layout, HOST).unwrap();
    assert_eq!(got[0].manifest_digest, amd.manifest_digest);
    assert_eq!(got[0].name.as_deref(), Some("localhost/m:1"));
    let e = import(&s2, &layout, ("linux", "arm64", None))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("linux/arm64") && e.contains("linux/amd64"),
        "{e}"
    );
}

#[test]
fn names() {
    assert_eq!(
        normalise_name("busybox:1").as_deref(),
        Some("docker.io/library/busybox:1")
    );
    assert_eq!(
        normalise_name("me/app").as_deref(),
        Some("docker.io/me/app:latest")
    );
    assert_eq!(
        normalise_name("localhost/x:2").as_deref(),
        Some("localhost/x:2")
    );
    assert_eq!(
        normalise_name("127.0.0.1:5000/a/b:c").as_deref(),
        Some("127.0.0.1:5000/a/b:c")
    );
    assert_eq!(normalise_name("latest"), None);
}

/// What a local user who can write the output's directory plants before `export` runs:
/// at the temporary name export used to pick (`.NAME.tmp-PID`), a link to a canary file,
/// or (for a directory output) a directory of links to canaries.
#[test]
fn export_never_writes_through_links_planted_in_the_output_directory() {
    use std::os::unix::fs::symlink;
    let (_d, s) = store();
    let img = image(&s, "localhost/planted:1");
    let export_one = |fmt, dest: &Path| {
        export(
            &s,
            &[ExportImage {
                name: Some("localhost/planted:1"),
                manifest_digest: &img.manifest_digest,
            }],
            fmt,
            dest,
        )
    };
    for fmt in [
        ArchiveFormat::OciArchive,
        ArchiveFormat::DockerArchive,
        ArchiveFormat::OciLayout,
    ] {
        // The canaries live elsewhere, owned by root; the output directory is the user's.
        let safe = tempfile::tempdir().unwrap();
        let canary = safe.path().join("canary");
        fs::write(&canary, "precious").unwrap();
        let canary_dir = safe.path().join("dir");
        fs::create_dir(&canary_dir).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("out");
        let tmp = out.path().join(format!(".out.tmp-{}", std::process::id()));
        if fmt == ArchiveFormat::OciLayout {
            fs::create_dir(&tmp).unwrap();
            symlink(&canary, tmp.join("oci-layout")).unwrap();
            symlink(&canary, tmp.join("index.json")).unwrap();
            symlink(&canary_dir, tmp.join("blobs")).unwrap();
        } else {
            symlink(&canary, &tmp).unwrap();
        }
        let r = export_one(fmt, &dest);
        assert!(
            fs::read(&canary).unwrap() == b"precious",
            "{fmt:?}: the canary was written through a planted link ({r:?})"
        );
        assert_eq!(fs::read_dir(&canary_dir).unwrap().count(), 0, "{fmt:?}");
        r.unwrap();
        assert_eq!(detect(&dest).unwrap(), fmt);
        // A link planted at the output's own name, to a file or to nothing: refused, and
        // nothing is written through it.
        for target in [canary.clone(), safe.path().join("absent")] {
            let dest = out.path().join(format!("link-{fmt:?}"));
            let _ = fs::remove_file(&dest);
            symlink(&target, &dest).unwrap();
            let e = export_one(fmt, &dest).unwrap_err().to_string();
            assert!(
                e.ends_with(": exists already; remove it or choose another name"),
                "{e}"
            );
            assert!(fs::read(&canary).unwrap() == b"precious");
            assert!(!safe.path().join("absent").exists());
            assert_eq!(fs::read_link(&dest).unwrap(), target);
        }
        // Nothing of export's own is left beside the output.
        let mut left: Vec<String> = fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".out"))
            .collect();
        left.retain(|n| *n != tmp.file_name().unwrap().to_string_lossy());
        assert_eq!(left, Vec::<String>::new(), "{fmt:?}");
    }
}
