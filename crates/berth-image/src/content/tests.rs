//! Unit tests of the content store on a temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Barrier};

use super::*;
use crate::digest::Algorithm;

fn store() -> (tempfile::TempDir, ContentStore) {
    let d = tempfile::tempdir().unwrap();
    let s = ContentStore::open(d.path()).unwrap();
    (d, s)
}

fn blob(n: usize) -> (Vec<u8>, Digest) {
    let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
    let d = Digest::of(Algorithm::Sha256, &data);
    (data, d)
}

#[test]
fn put_then_read_gives_the_data_back_read_only() {
    let (_t, s) = store();
    let (data, d) = blob(100_000);

    s.put(&d, &data).unwrap();

    assert!(s.exists(&d));
    assert_eq!(s.read(&d).unwrap(), data);
    let mode = fs::metadata(s.blob_path(&d)).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o444);
    assert_eq!(s.list().unwrap(), vec![d.clone()]);
    // Putting it again is a no-op.
    s.put(&d, &data).unwrap();
}

#[test]
fn sha512_blobs_are_kept_apart() {
    let (_t, s) = store();
    let data = b"hello".to_vec();
    let d = Digest::of(Algorithm::Sha512, &data);

    s.put(&d, &data).unwrap();

    assert!(s.blob_path(&d).starts_with(_t.path().join("blobs/sha512")));
    assert_eq!(s.read(&d).unwrap(), data);
}

#[test]
fn wrong_data_is_refused_and_leaves_nothing() {
    let (_t, s) = store();
    let (_, d) = blob(10);

    let err = s.put(&d, b"not the blob").unwrap_err();

    assert!(matches!(err, ContentError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&d.to_string()), "{err}");
    let mut w = s.writer(&d, Some(10)).unwrap().unwrap();
    w.write_data(b"012345678").unwrap();
    let err = w.commit().unwrap_err();
    assert!(
        matches!(
            err,
            ContentError::SizeMismatch {
                expected: 10,
                actual: 9,
                ..
            }
        ),
        "{err}"
    );
    assert!(!s.exists(&d));
    assert!(!s.ingest_path(&d).exists(), "the bad data was kept");
}

#[test]
fn more_data_than_the_descriptor_says_is_refused() {
    let (_t, s) = store();
    let (data, d) = blob(10);
    let mut w = s.writer(&d, Some(10)).unwrap().unwrap();

    let err = w.write_data(&[data.as_slice(), b"x"].concat()).unwrap_err();

    assert!(
        matches!(err, ContentError::TooLarge { size: 10, .. }),
        "{err}"
    );
}

#[test]
fn a_killed_writer_is_resumed_where_it_stopped() {
    let (_t, s) = store();
    let (data, d) = blob(200_000);
    let mut w = s.writer(&d, Some(data.len() as u64)).unwrap().unwrap();
    w.write_data(&data[..123_456]).unwrap();
    drop(w); // as if the pull were killed

    let mut w = s.writer(&d, Some(data.len() as u64)).unwrap().unwrap();

    assert_eq!(w.offset(), 123_456);
    w.write_data(&data[123_456..]).unwrap();
    w.commit().unwrap();
    assert_eq!(s.read(&d).unwrap(), data);
}

#[test]
fn leftover_data_longer_than_the_blob_is_discarded() {
    let (_t, s) = store();
    let (data, d) = blob(100);
    fs::write(s.ingest_path(&d), vec![0u8; 500]).unwrap();

    let w = s.writer(&d, Some(100)).unwrap().unwrap();

    assert_eq!(w.offset(), 0);
    drop(w);
    s.put(&d, &data).unwrap();
    assert_eq!(s.read(&d).unwrap(), data);
}

#[test]
fn concurrent_writers_of_one_blob_write_it_once() {
    let (_t, s) = store();
    let (data, d) = blob(1_000_000);
    let (data, d) = (Arc::new(data), Arc::new(d));
    let start = Arc::new(Barrier::new(4));

    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (s, data, d, start) = (s.clone(), data.clone(), d.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                match s.writer(&d, Some(data.len() as u64)).unwrap() {
                    None => false,
                    Some(mut w) => {
                        for chunk in data.chunks(4096) {
                            w.write_data(chunk).unwrap();
                        }
                        w.commit().unwrap();
                        true
                    }
                }
            })
        })
        .collect();
    let wrote: usize = handles
        .into_iter()
        .map(|h| h.join().unwrap() as usize)
        .sum();

    assert_eq!(wrote, 1, "exactly one writer wrote the blob");
    assert_eq!(s.read(&d).unwrap(), *data);
}

#[test]
fn delete_and_missing_blobs() {
    let (_t, s) = store();
    let (data, d) = blob(10);
    s.put(&d, &data).unwrap();

    assert!(s.delete(&d).unwrap());
    assert!(!s.delete(&d).unwrap());
    assert!(matches!(s.read(&d), Err(ContentError::NotFound(_))));
    assert!(s.list().unwrap().is_empty());
}

#[test]
fn ingest_finds_the_digest_and_dedups() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let data = vec![9u8; 300_000];
    let (d, n) = store.ingest(&data[..]).unwrap();
    assert_eq!(d, Digest::of(crate::digest::Algorithm::Sha256, &data));
    assert_eq!(n, 300_000);
    assert_eq!(store.read(&d).unwrap(), data);
    let (d2, _) = store.ingest(&data[..]).unwrap();
    assert_eq!(d, d2);
    let leftovers = std::fs::read_dir(dir.path().join("ingest"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "no temporary file remains");
}
