//! The store as two front ends share it: an image a berthd pod uses (a snapshot without a
//! berthctl record) is as much in use as one a berthctl container uses.

use berth_engine::{Error, Record, Store, StoreOptions};
use berth_image::snapshot::Driver;

fn open(tmp: &std::path::Path) -> Store {
    Store::open(&StoreOptions {
        root: tmp.join("root"),
        runroot: tmp.join("run"),
        driver: Some(Driver::Copy),
        max_layer_size: 1 << 30,
        registries_conf: tmp.join("registries.toml"),
    })
    .expect("open the store")
}

#[test]
fn an_image_in_use_by_either_front_end_is_kept() {
    if !nix::unistd::geteuid().is_root() {
        berth_testkit::skip(
            "an_image_in_use_by_either_front_end_is_kept",
            "needs root (layers keep their owners)",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let img = s
        .image(berth_image::builtin::NAME)
        .expect("the built-in image");
    assert!(s.users_of(&img).unwrap().is_empty());
    s.check_unused(&img).unwrap();

    // A pod's container: only a snapshot.
    s.snapshots.prepare("pod-ctr-1", &s.content, &img).unwrap();
    let err = s.check_unused(&img).unwrap_err();
    assert!(
        matches!(&err, Error::ImageInUse { users, .. } if users == "pod-ctr-1"),
        "{err}"
    );

    // A berthctl container: a record (and a snapshot of its own), named by its name.
    let rec = Record {
        id: "c0ffee".into(),
        name: "web".into(),
        image: berth_image::builtin::NAME.into(),
        image_id: img.id.clone(),
        command: vec!["sh".into()],
        created: 1,
        stop_signal: None,
        auto_remove: false,
        detached: false,
        exit_code: None,
        finished: None,
        isolation: None,
    };
    s.records.create(&rec).unwrap();
    s.snapshots.prepare("c0ffee", &s.content, &img).unwrap();
    let mut users = s.users_of(&img).unwrap();
    users.sort();
    assert_eq!(users, ["pod-ctr-1", "web"]);

    // Once both are gone, nothing uses it.
    s.snapshots.remove("pod-ctr-1").unwrap();
    s.snapshots.remove("c0ffee").unwrap();
    s.records.remove("c0ffee").unwrap();
    assert!(s.users_of(&img).unwrap().is_empty());
}
