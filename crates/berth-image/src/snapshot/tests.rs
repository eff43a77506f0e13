//! These mount overlays, so they need root (as all of Berth's tests run).

use super::*;
use crate::build::{simple_config, store_image, LayerBuilder};
use crate::images::ImageStore;

struct Env {
    dir: tempfile::TempDir,
    content: ContentStore,
    images: ImageStore,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let content = ContentStore::open(&dir.path().join("content")).unwrap();
    let images = ImageStore::open(dir.path()).unwrap();
    Env {
        dir,
        content,
        images,
    }
}

impl Env {
    fn image(&self, layers: Vec<Vec<u8>>) -> ImageRecord {
        let img = store_image(
            &self.content,
            None,
            &layers,
            simple_config(&["sh"]),
            "amd64",
        )
        .unwrap();
        self.images.add(&self.content, &img, &[]).unwrap()
    }

    fn snapshotter(&self, driver: Driver) -> Snapshotter {
        Snapshotter::open(&self.dir.path().join("snapshots"), Some(driver)).unwrap()
    }
}

fn two_layers() -> Vec<Vec<u8>> {
    let mut a = LayerBuilder::new();
    a.dir("etc", 0o755).unwrap();
    a.file("etc/keep", 0o644, b"keep").unwrap();
    a.file("etc/gone", 0o644, b"gone").unwrap();
    a.dir("var", 0o755).unwrap();
    a.file("var/old", 0o644, b"old").unwrap();
    let mut b = LayerBuilder::new();
    b.dir("etc", 0o755).unwrap();
    b.whiteout("etc/gone").unwrap();
    b.file("etc/new", 0o600, b"new").unwrap();
    b.dir("var", 0o755).unwrap();
    b.opaque("var").unwrap();
    b.file("var/fresh", 0o644, b"fresh").unwrap();
    vec![a.finish().unwrap(), b.finish().unwrap()]
}

fn check_merged(rootfs: &Path) {
    assert_eq!(fs::read(rootfs.join("etc/keep")).unwrap(), b"keep");
    assert_eq!(fs::read(rootfs.join("etc/new")).unwrap(), b"new");
    assert!(
        !rootfs.join("etc/gone").exists(),
        "the whiteout hides etc/gone"
    );
    assert!(
        !rootfs.join("var/old").exists(),
        "the opaque dir hides var/old"
    );
    assert_eq!(fs::read(rootfs.join("var/fresh")).unwrap(), b"fresh");
    assert!(!rootfs.join("etc/.wh.gone").exists());
}

#[test]
fn overlay_rootfs_merges_layers_with_whiteouts() {
    let e = env();
    let img = e.image(two_layers());
    let s = e.snapshotter(Driver::Overlay);
    let st = s.unpack(&e.content, &img).unwrap();
    assert_eq!((st.unpacked, st.present), (2, 0));
    // The uncompressed sizes of the layers unpacked now (these are plain tars).
    let sizes: Vec<(Digest, u64)> = img
        .layers
        .iter()
        .map(|l| (l.diff_id.clone(), l.size))
        .collect();
    assert_eq!(st.sizes, sizes);
    let st = s.unpack(&e.content, &img).unwrap();
    assert_eq!((st.unpacked, st.present), (0, 2));
    let rootfs = s.prepare("c1", &e.content, &img).unwrap();
    assert!(s.is_mounted("c1"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&rootfs).unwrap().permissions().mode() & 0o777,
        0o755,
        "every user may enter the container's root"
    );
    check_merged(&rootfs);
    // Writes land in the container's upper dir, not in the shared layer.
    fs::write(rootfs.join("etc/keep"), b"changed").unwrap();
    let bottom = s.layer_dir(&img.layers[0].chain_id);
    assert_eq!(fs::read(bottom.join("etc/keep")).unwrap(), b"keep");
    // A second container sees the image, not the first one's change.
    let r2 = s.prepare("c2", &e.content, &img).unwrap();
    assert_eq!(fs::read(r2.join("etc/keep")).unwrap(), b"keep");
    assert!(matches!(
        s.prepare("c2", &e.content, &img),
        Err(SnapshotError::Exists { .. })
    ));
    // Unmount and mount again keeps the upper layer.
    s.unmount("c1").unwrap();
    assert!(!s.is_mounted("c1"));
    s.mount("c1").unwrap();
    assert_eq!(fs::read(rootfs.join("etc/keep")).unwrap(), b"changed");
    s.remove("c1").unwrap();
    s.remove("c2").unwrap();
    assert!(!e.dir.path().join("snapshots/containers/c1").exists());
    assert_eq!(s.containers().unwrap(), Vec::<String>::new());
}

#[test]
fn copy_driver_gives_the_same_tree() {
    let e = env();
    let img = e.image(two_layers());
    let s = e.snapshotter(Driver::Copy);
    let st = s.unpack(&e.content, &img).unwrap();
    assert_eq!((st.unpacked, st.present), (0, 0));
    let rootfs = s.prepare("c", &e.content, &img).unwrap();
    check_merged(&rootfs);
    assert!(
        s.layers().unwrap().is_empty(),
        "the copy driver shares nothing"
    );
    s.remove("c").unwrap();
    assert!(!rootfs.exists());
}

#[test]
fn an_image_of_120_layers_mounts() {
    let e = env();
    let layers: Vec<Vec<u8>> = (0..120)
        .map(|i| {
            let mut b = LayerBuilder::new();
            b.file(&format!("f{i:03}"), 0o644, format!("{i}").as_bytes())
                .unwrap();
            b.finish().unwrap()
        })
        .collect();
    let img = e.image(layers);
    let s = e.snapshotter(Driver::Overlay);
    s.unpack(&e.content, &img).unwrap();
    let rootfs = s.prepare("many", &e.content, &img).unwrap();
    for i in 0..120 {
        assert_eq!(
            fs::read_to_string(rootfs.join(format!("f{i:03}"))).unwrap(),
            format!("{i}")
        );
    }
    s.remove("many").unwrap();
}

#[test]
fn prepare_without_unpacked_layers_leaves_nothing() {
    let e = env();
    let img = e.image(two_layers());
    let s = e.snapshotter(Driver::Overlay);
    let err = s.prepare("c", &e.content, &img).unwrap_err().to_string();
    assert!(
        err.contains("container c") && err.contains("not unpacked"),
        "{err}"
    );
    assert!(!e.dir.path().join("snapshots/containers/c").exists());
}

#[test]
fn a_corrupt_layer_is_refused_and_not_committed() {
    let e = env();
    let img = e.image(two_layers());
    // Replace the top layer's blob with other bytes (blobs are read-only, root may write).
    let p = e.content.blob_path(&img.layers[1].digest);
    let mut other = LayerBuilder::new();
    other.file("x", 0o644, b"x").unwrap();
    fs::write(&p, other.finish().unwrap()).unwrap();
    let s = e.snapshotter(Driver::Overlay);
    let err = s.unpack(&e.content, &img).unwrap_err().to_string();
    assert!(err.contains(&img.layers[1].digest.to_string()), "{err}");
    assert!(!s.has_layer(&img.layers[1].chain_id));
    let leftovers: Vec<_> = fs::read_dir(e.dir.path().join("snapshots/layers"))
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn prune_keeps_layers_of_images_and_containers() {
    let e = env();
    let shared = two_layers();
    let mut top = LayerBuilder::new();
    top.file("only-b", 0o644, b"b").unwrap();
    let a = e.image(shared.clone());
    let b = e.image(vec![
        shared[0].clone(),
        shared[1].clone(),
        top.finish().unwrap(),
    ]);
    let s = e.snapshotter(Driver::Overlay);
    s.unpack(&e.content, &a).unwrap();
    let st = s.unpack(&e.content, &b).unwrap();
    assert_eq!(
        (st.unpacked, st.present),
        (1, 2),
        "shared layers are unpacked once"
    );
    s.prepare("uses-b", &e.content, &b).unwrap();
    // Nothing kept by images: the container still holds b's whole chain.
    assert!(s.prune(&BTreeSet::new()).unwrap().is_empty());
    s.remove("uses-b").unwrap();
    let keep: BTreeSet<Digest> = a.chain().into_iter().collect();
    let removed = s.prune(&keep).unwrap();
    assert_eq!(removed, vec![b.layers[2].chain_id.clone()]);
    assert_eq!(s.layers().unwrap().len(), 2);
}

#[test]
fn concurrent_unpacks_of_one_image_both_succeed() {
    let e = env();
    let img = e.image(two_layers());
    let s = e.snapshotter(Driver::Overlay);
    std::thread::scope(|sc| {
        let h: Vec<_> = (0..2)
            .map(|_| sc.spawn(|| s.unpack(&e.content, &img)))
            .collect();
        for h in h {
            h.join().unwrap().unwrap();
        }
    });
    assert_eq!(s.layers().unwrap().len(), 2);
    let rootfs = s.prepare("c", &e.content, &img).unwrap();
    check_merged(&rootfs);
    s.remove("c").unwrap();
}

/// The names readdir lists in `dir`, sorted.
fn listed(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_whiteout_of_a_name_no_lower_layer_has_leaves_no_phantom() {
    // Layer 1: etc/{keep,gone}, opt/deep/old (a dir the next layer makes opaque), var/x.
    // Layer 2: whiteouts of what exists below (etc/gone), of what never did (etc/never,
    // a path under a missing dir, a name under an opaque dir of layer 2 itself), and of a
    // name below a file.
    let mut a = LayerBuilder::new();
    a.dir("etc", 0o755).unwrap();
    a.file("etc/keep", 0o644, b"keep").unwrap();
    a.file("etc/gone", 0o644, b"gone").unwrap();
    a.dir("opt", 0o755).unwrap();
    a.dir("opt/deep", 0o755).unwrap();
    a.file("opt/deep/old", 0o644, b"old").unwrap();
    a.file("var", 0o644, b"a file, not a dir").unwrap();
    let mut b = LayerBuilder::new();
    b.dir("etc", 0o755).unwrap();
    b.whiteout("etc/gone").unwrap();
    b.whiteout("etc/never").unwrap();
    b.dir("mnt", 0o755).unwrap();
    b.whiteout("mnt/nothing").unwrap();
    let mut c = LayerBuilder::new();
    c.dir("opt", 0o755).unwrap();
    c.dir("opt/deep", 0o755).unwrap();
    c.opaque("opt/deep").unwrap();
    c.file("opt/deep/new", 0o644, b"new").unwrap();
    let mut d = LayerBuilder::new();
    d.dir("opt", 0o755).unwrap();
    d.dir("opt/deep", 0o755).unwrap();
    // Hidden by layer 3's opaque directory: not below any more.
    d.whiteout("opt/deep/old").unwrap();
    // Still below (layer 3 made it).
    d.whiteout("opt/deep/new").unwrap();
    let e = env();
    let img = e.image(vec![
        a.finish().unwrap(),
        b.finish().unwrap(),
        c.finish().unwrap(),
        d.finish().unwrap(),
    ]);
    let s = e.snapshotter(Driver::Overlay);
    s.unpack(&e.content, &img).unwrap();
    let rootfs = s.prepare("c", &e.content, &img).unwrap();
    assert_eq!(listed(&rootfs.join("etc")), ["keep"]);
    assert_eq!(listed(&rootfs.join("mnt")), Vec::<String>::new());
    assert_eq!(listed(&rootfs.join("opt/deep")), Vec::<String>::new());
    // The whiteouts that hide something stay in their layers; the others are gone.
    let layer = |i: usize| s.layer_dir(&img.layers[i].chain_id);
    let is_whiteout = |p: PathBuf| {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
    };
    assert!(is_whiteout(layer(1).join("etc/gone")));
    assert!(!layer(1).join("etc/never").exists());
    assert!(!layer(1).join("mnt/nothing").exists());
    assert!(!is_whiteout(layer(3).join("opt/deep/old")));
    assert!(is_whiteout(layer(3).join("opt/deep/new")));
    s.remove("c").unwrap();
}
