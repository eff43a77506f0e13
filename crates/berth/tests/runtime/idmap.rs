//! Idmapped bind mounts: `idmap`/`ridmap` with the mount's own uidMappings/gidMappings or
//! the container's user namespace mappings, observed as file owners inside and on the host.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::{json, Value};

use crate::common::*;

/// A host directory, world-traversable, holding `f` owned by root.
fn source() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(d.path().join("f"), "data").unwrap();
    d
}

/// The mount's own mapping: on-disk root is host uid/gid 1234.
fn own_maps(mount: &mut Value) {
    mount["uidMappings"] = json!([{"containerID": 0, "hostID": 1234, "size": 1}]);
    mount["gidMappings"] = json!([{"containerID": 0, "hostID": 1234, "size": 1}]);
}

fn run(b: Bundle, script: &str) -> Finished {
    Berth::new().run_to_exit(&b.sh(&format!("exec 2>&1; {script}")))
}

#[test]
fn own_mappings_show_on_disk_root_as_the_mapped_id() {
    let src = source();
    let b = Bundle::new().edit(|c| {
        let mut m = json!({"destination": "/data", "type": "bind", "source": src.path(),
            "options": ["bind", "idmap"]});
        own_maps(&mut m);
        add_mount(c, m);
    });

    let out = run(b, "stat -c %u:%g /data/f");

    assert_eq!(out.stdout.trim(), "1234:1234", "{}", out.stderr);
}

#[test]
fn writes_through_an_idmapped_mount_land_unmapped_on_disk() {
    let src = source();
    let b = Bundle::new().edit(|c| {
        let mut m = json!({"destination": "/data", "type": "bind", "source": src.path(),
            "options": ["bind", "idmap"]});
        own_maps(&mut m);
        add_mount(c, m);
        c["process"]["user"] = json!({"uid": 1234, "gid": 1234});
    });

    let out = run(b, "touch /data/new && stat -c %u:%g /data/new");

    assert_eq!(out.stdout.trim(), "1234:1234");
    let meta = fs::metadata(src.path().join("new")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (0, 0),
        "on disk the file is root's"
    );
}

#[test]
fn idmap_alone_takes_the_containers_user_namespace_mappings() {
    let src = source();
    let b = Bundle::new().edit(|c| {
        with_user_namespace(c);
        add_mount(
            c,
            json!({"destination": "/data", "type": "bind", "source": src.path(),
                "options": ["bind", "idmap"]}),
        );
        add_mount(
            c,
            json!({"destination": "/mnt", "type": "bind", "source": src.path(),
                "options": ["bind"]}),
        );
    });

    let out = run(b, "stat -c %u:%g /data/f /mnt/f");

    // Through the idmap the file is the container's root; through a plain bind it is
    // unmapped (the overflow id).
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, ["0:0", "65534:65534"], "{}", out.stdout);
}

fn submount_owner(option: &str) -> String {
    let src = source();
    let _sub = HostSubmount::new(src.path());
    let b = Bundle::new().edit(|c| {
        let mut m = json!({"destination": "/data", "type": "bind", "source": src.path(),
            "options": ["rbind", option]});
        own_maps(&mut m);
        add_mount(c, m);
    });
    run(b, "stat -c %u:%g /data/f /data/sub/in-submount").stdout
}

#[test]
fn ridmap_reaches_submounts_and_idmap_does_not() {
    let lines = submount_owner("ridmap");
    assert_eq!(
        lines.lines().collect::<Vec<_>>(),
        ["1234:1234", "1234:1234"]
    );
    let lines = submount_owner("idmap");
    assert_eq!(lines.lines().collect::<Vec<_>>(), ["1234:1234", "0:0"]);
}

fn refused(mount: Value, needles: &[&str]) {
    let berth = Berth::new();
    let b = Bundle::new().edit(|c| add_mount(c, mount));
    let id = unique_id("idmapbad");
    berth
        .create(&id, b.path(), &[])
        .assert_error("create with a bad idmap")
        .assert_stderr_has("create", needles);
    assert_no_leftovers(&berth, &id, b.path());
}

#[test]
fn bad_idmaps_are_refused() {
    let src = source();
    let s = src.path().to_str().unwrap();
    let mut tmpfs = json!({"destination": "/data", "type": "tmpfs", "source": "tmpfs",
        "options": ["idmap"]});
    own_maps(&mut tmpfs);
    refused(tmpfs, &["mounts[", "bind mounts only"]);
    refused(
        json!({"destination": "/data", "type": "bind", "source": s, "options": ["bind", "idmap"]}),
        &["mounts[", "container's user namespace mappings", "has none"],
    );
    refused(
        json!({"destination": "/data", "type": "bind", "source": s, "options": ["bind"],
            "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}),
        &["uidMappings and gidMappings must be given together"],
    );
    assert!(Path::new(s).join("f").exists());
}
