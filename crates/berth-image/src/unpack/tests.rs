//! Layers built in memory; hostile ones with header names written byte by byte. Root only.

use super::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

struct T {
    b: tar::Builder<Vec<u8>>,
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_000_000);
    h.set_size(size);
    h
}

/// Writes `name` into the header as raw bytes, bypassing the builder's checks.
fn raw_name(h: &mut tar::Header, name: &str) {
    let n = &mut h.as_old_mut().name;
    n.fill(0);
    n[..name.len()].copy_from_slice(name.as_bytes());
}

fn raw_link(h: &mut tar::Header, target: &str) {
    let n = &mut h.as_old_mut().linkname;
    n.fill(0);
    n[..target.len()].copy_from_slice(target.as_bytes());
}

impl T {
    fn new() -> T {
        T {
            b: tar::Builder::new(Vec::new()),
        }
    }
    fn dir(mut self, p: &str, mode: u32, mtime: u64) -> T {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        h.set_mtime(mtime);
        self.b.append_data(&mut h, p, io::empty()).unwrap();
        self
    }
    fn file(mut self, p: &str, data: &[u8]) -> T {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        self.b.append_data(&mut h, p, data).unwrap();
        self
    }
    fn file_full(mut self, p: &str, mode: u32, uid: u64, gid: u64, data: &[u8]) -> T {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.b.append_data(&mut h, p, data).unwrap();
        self
    }
    fn symlink(mut self, p: &str, target: &str) -> T {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        self.b.append_link(&mut h, p, target).unwrap();
        self
    }
    fn hardlink(mut self, p: &str, target: &str) -> T {
        let mut h = header(tar::EntryType::Link, 0o644, 0);
        self.b.append_link(&mut h, p, target).unwrap();
        self
    }
    fn node(mut self, p: &str, kind: tar::EntryType, major: u32, minor: u32) -> T {
        let mut h = header(kind, 0o620, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.b.append_data(&mut h, p, io::empty()).unwrap();
        self
    }
    /// An entry whose name (and link) bypass the builder's path checks.
    fn raw(mut self, kind: tar::EntryType, name: &str, link: Option<&str>, data: &[u8]) -> T {
        let mut h = header(kind, 0o644, data.len() as u64);
        raw_name(&mut h, name);
        if let Some(l) = link {
            raw_link(&mut h, l);
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }
    fn xattr_file(mut self, p: &str, key: &str, value: &[u8]) -> T {
        let mut pax = Vec::new();
        let rec = |k: &str, v: &[u8]| {
            let body_len = k.len() + v.len() + 3;
            let mut len = body_len + body_len.to_string().len();
            if len.to_string().len() != body_len.to_string().len() {
                len += 1;
            }
            let mut r = format!("{len} {k}=").into_bytes();
            r.extend_from_slice(v);
            r.push(b'\n');
            r
        };
        pax.extend(rec(&format!("SCHILY.xattr.{key}"), value));
        let mut h = header(tar::EntryType::XHeader, 0o644, pax.len() as u64);
        h.set_path("PaxHeaders/x").unwrap();
        h.set_cksum();
        self.b.append(&h, &pax[..]).unwrap();
        self.file(p, b"with xattr")
    }
    fn done(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

fn opts(w: Whiteouts) -> UnpackOptions {
    UnpackOptions {
        whiteouts: w,
        preserve_owner: true,
        max_size: DEFAULT_MAX_LAYER_SIZE,
    }
}

/// A destination inside a tempdir, with a canary file beside it (outside).
struct Dest {
    tmp: tempfile::TempDir,
}

impl Dest {
    fn new() -> Dest {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("root")).unwrap();
        fs::write(tmp.path().join("canary"), "untouched").unwrap();
        Dest { tmp }
    }
    fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }
    fn unpack(&self, tar: &[u8], w: Whiteouts) -> Result<Unpacked, UnpackError> {
        unpack_layer("sha256:test", tar, &self.root(), &opts(w), None)
    }
    /// Nothing outside the root changed: the canary is intact and alone.
    fn outside_intact(&self) {
        assert_eq!(
            fs::read_to_string(self.tmp.path().join("canary")).unwrap(),
            "untouched"
        );
        let names: Vec<String> = fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, ["canary", "root"]);
    }
}

fn refused(r: Result<Unpacked, UnpackError>, entry: &str) {
    let e = r.expect_err("the layer must be refused").to_string();
    assert!(
        e.contains("sha256:test") && e.contains(entry),
        "error names layer and entry: {e}"
    );
}

#[test]
fn every_file_type_with_owner_mode_and_times() {
    let d = Dest::new();
    let tar = T::new()
        .dir("etc", 0o755, 111)
        .file_full("etc/secret", 0o4750, 1000, 2000, b"s")
        .symlink("etc/link", "secret")
        .hardlink("etc/hard", "etc/secret")
        .node("dev/null", tar::EntryType::Char, 1, 3)
        .node("dev/sda", tar::EntryType::Block, 8, 0)
        .node("run/fifo", tar::EntryType::Fifo, 0, 0)
        .dir("tmp", 0o1777, 222)
        .done();
    let u = d.unpack(&tar, Whiteouts::Overlay).unwrap();
    assert_eq!(u.diff_id, Digest::of(Algorithm::Sha256, &tar));
    assert_eq!(u.size, tar.len() as u64);
    let r = d.root();
    let m = fs::metadata(r.join("etc/secret")).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (1000, 2000, 0o4750),
        "setuid survives chown"
    );
    assert_eq!(
        fs::read_link(r.join("etc/link")).unwrap(),
        Path::new("secret")
    );
    assert_eq!(fs::metadata(r.join("etc/hard")).unwrap().ino(), m.ino());
    let n = fs::symlink_metadata(r.join("dev/null")).unwrap();
    assert!(n.file_type().is_char_device() && n.rdev() == makedev(1, 3));
    assert!(fs::symlink_metadata(r.join("dev/sda"))
        .unwrap()
        .file_type()
        .is_block_device());
    assert!(fs::symlink_metadata(r.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    // Directory mtimes are set after their children are written.
    assert_eq!(fs::metadata(r.join("etc")).unwrap().mtime(), 111);
    assert_eq!(
        fs::metadata(r.join("tmp")).unwrap().permissions().mode() & 0o7777,
        0o1777
    );
    assert_eq!(m.mtime(), 1_000_000);
}

#[test]
fn compressed_streams_and_diff_id() {
    let tar = T::new().file("a", b"hello").done();
    let want = Digest::of(Algorithm::Sha256, &tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 1).unwrap();
    // Two gzip members: the second half of the stream in a second member.
    let (h1, h2) = tar.split_at(700);
    let mut multi = Vec::new();
    for part in [h1, h2] {
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        g.write_all(part).unwrap();
        multi.extend(g.finish().unwrap());
    }
    for (what, data) in [
        ("plain", &tar),
        ("gzip", &gz),
        ("zstd", &zst),
        ("multi-gzip", &multi),
    ] {
        let d = Dest::new();
        let u = unpack_layer(
            "sha256:test",
            &data[..],
            &d.root(),
            &opts(Whiteouts::Overlay),
            Some(&want),
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(u.diff_id, want, "{what}");
        assert_eq!(fs::read(d.root().join("a")).unwrap(), b"hello", "{what}");
    }
    let wrong = Digest::of(Algorithm::Sha256, b"other");
    let d = Dest::new();
    let e = unpack_layer(
        "sha256:test",
        &gz[..],
        &d.root(),
        &opts(Whiteouts::Overlay),
        Some(&wrong),
    )
    .unwrap_err();
    assert!(matches!(e, UnpackError::DiffIdMismatch { .. }), "{e}");
}

#[test]
fn security_capability_and_user_xattrs_are_kept() {
    let d = Dest::new();
    // A v2 capability blob granting cap_net_raw (bit 13), effective.
    let mut cap = vec![0x01, 0x00, 0x00, 0x02];
    cap.extend([0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let tar = T::new()
        .xattr_file("bin/ping", "security.capability", &cap)
        .xattr_file("data", "user.note", b"kept")
        .xattr_file("evil", "trusted.overlay.redirect", b"/etc")
        .done();
    d.unpack(&tar, Whiteouts::Overlay).unwrap();
    let get = |p: &str, k: &str| -> Option<Vec<u8>> {
        let path = CString::new(d.root().join(p).as_os_str().as_bytes()).unwrap();
        let key = CString::new(k).unwrap();
        let mut buf = vec![0u8; 256];
        // SAFETY: lgetxattr writes at most buf.len() bytes into buf.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                key.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        (n >= 0).then(|| buf[..n as usize].to_vec())
    };
    assert_eq!(get("bin/ping", "security.capability"), Some(cap));
    assert_eq!(get("data", "user.note"), Some(b"kept".to_vec()));
    assert_eq!(
        get("evil", "trusted.overlay.redirect"),
        None,
        "overlay's own xattrs are never taken from a layer"
    );
}

#[test]
fn overlay_whiteouts() {
    let d = Dest::new();
    let tar = T::new()
        .dir("etc", 0o755, 1)
        .file("etc/.wh.gone", b"")
        .file("var/.wh..wh..opq", b"")
        .done();
    d.unpack(&tar, Whiteouts::Overlay).unwrap();
    let w = fs::symlink_metadata(d.root().join("etc/gone")).unwrap();
    assert!(w.file_type().is_char_device() && w.rdev() == 0);
    assert!(!d.root().join("etc/.wh.gone").exists());
    assert!(!d.root().join("var/.wh..wh..opq").exists());
    let path = CString::new(d.root().join("var").as_os_str().as_bytes()).unwrap();
    let mut buf = [0u8; 4];
    // SAFETY: getxattr writes at most 4 bytes into buf.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            4,
        )
    };
    assert_eq!(&buf[..n.max(0) as usize], b"y");
}

#[test]
fn applied_whiteouts_and_opaque_dirs_in_either_order() {
    for opaque_first in [true, false] {
        let d = Dest::new();
        let base = T::new()
            .file("etc/gone", b"x")
            .file("etc/keep", b"k")
            .file("var/old", b"o")
            .file("var/sub/older", b"o")
            .dir("etc/gonedir", 0o755, 1)
            .file("etc/gonedir/f", b"f")
            .done();
        d.unpack(&base, Whiteouts::Apply).unwrap();
        let mut t = T::new()
            .file("etc/.wh.gone", b"")
            .file("etc/.wh.gonedir", b"");
        if opaque_first {
            t = t
                .file("var/.wh..wh..opq", b"")
                .file("var/new", b"n")
                .file("var/sub/newer", b"n");
        } else {
            t = t
                .file("var/new", b"n")
                .file("var/sub/newer", b"n")
                .file("var/.wh..wh..opq", b"");
        }
        d.unpack(&t.done(), Whiteouts::Apply).unwrap();
        let r = d.root();
        assert!(!r.join("etc/gone").exists() && !r.join("etc/gonedir").exists());
        assert!(r.join("etc/keep").exists());
        assert!(!r.join("var/old").exists(), "opaque_first={opaque_first}");
        assert!(
            !r.join("var/sub/older").exists(),
            "opaque_first={opaque_first}"
        );
        assert!(r.join("var/new").exists() && r.join("var/sub/newer").exists());
        d.outside_intact();
    }
}

#[test]
fn replacing_kinds_and_hardlinks_to_earlier_layers() {
    let d = Dest::new();
    d.unpack(
        &T::new()
            .file("a", b"file")
            .file("b/inner", b"i")
            .file("shared", b"s")
            .done(),
        Whiteouts::Apply,
    )
    .unwrap();
    d.unpack(
        &T::new()
            .dir("a", 0o755, 5)
            .file("a/x", b"x")
            .file("b", b"now a file")
            .hardlink("again", "shared")
            .done(),
        Whiteouts::Apply,
    )
    .unwrap();
    let r = d.root();
    assert!(r.join("a").is_dir() && r.join("a/x").exists());
    assert_eq!(fs::read(r.join("b")).unwrap(), b"now a file");
    assert_eq!(
        fs::metadata(r.join("again")).unwrap().ino(),
        fs::metadata(r.join("shared")).unwrap().ino()
    );
}

#[test]
fn long_names_and_long_link_targets() {
    let d = Dest::new();
    let long = format!("{}/{}", "d".repeat(90), "f".repeat(120));
    let target = format!("/{}", "t".repeat(150));
    let tar = T::new().file(&long, b"deep").symlink("l", &target).done();
    d.unpack(&tar, Whiteouts::Overlay).unwrap();
    assert_eq!(fs::read(d.root().join(&long)).unwrap(), b"deep");
    assert_eq!(
        fs::read_link(d.root().join("l")).unwrap(),
        Path::new(&target)
    );
}

#[test]
fn dot_dot_escapes_are_refused() {
    // Each name would land exactly on the canary beside the root if `..` were followed.
    for name in ["../canary", "a/../../canary", "./../canary"] {
        let d = Dest::new();
        let e = d
            .unpack(
                &T::new()
                    .raw(tar::EntryType::Regular, name, None, b"pwned")
                    .done(),
                Whiteouts::Overlay,
            )
            .expect_err("the layer must be refused")
            .to_string();
        assert_eq!(
            e,
            format!("layer sha256:test: entry {name:?}: the name climbs out of the root with `..`")
        );
        d.outside_intact();
    }
    // `..` that stays inside is fine.
    let d = Dest::new();
    d.unpack(
        &T::new()
            .raw(tar::EntryType::Regular, "a/../b", None, b"x")
            .done(),
        Whiteouts::Overlay,
    )
    .unwrap();
    assert!(d.root().join("b").exists());
}

#[test]
fn absolute_names_are_inside_the_root() {
    let d = Dest::new();
    let abs = format!("{}/canary", d.tmp.path().display());
    d.unpack(
        &T::new()
            .raw(tar::EntryType::Regular, &abs, None, b"overwritten?")
            .done(),
        Whiteouts::Overlay,
    )
    .unwrap();
    d.outside_intact();
    assert_eq!(
        fs::read(d.root().join(abs.trim_start_matches('/'))).unwrap(),
        b"overwritten?"
    );
}

#[test]
fn symlinked_parents_stay_inside() {
    // A link `evil` to the directory holding the canary, absolute or relative (the root's
    // parent is `..` from the root): `evil/canary` would be the canary itself.
    let d = Dest::new();
    let abs = d.tmp.path().to_string_lossy().into_owned();
    let r = d.unpack(
        &T::new()
            .symlink("evil", &abs)
            .raw(tar::EntryType::Regular, "evil/canary", None, b"pwned")
            .done(),
        Whiteouts::Overlay,
    );
    // Inside the root, the link names a directory that does not exist.
    match r {
        Err(UnpackError::Entry {
            entry, op, source, ..
        }) => {
            assert_eq!((entry.as_str(), op), ("evil/canary", "open its directory"));
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("{other:?}"),
    }
    d.outside_intact();
    let d = Dest::new();
    d.unpack(
        &T::new()
            .symlink("evil", "..")
            .raw(tar::EntryType::Regular, "evil/canary", None, b"pwned")
            .done(),
        Whiteouts::Overlay,
    )
    .unwrap();
    d.outside_intact();
    assert_eq!(
        fs::read(d.root().join("canary")).unwrap(),
        b"pwned",
        "`..` from the root is the root: the file lands inside"
    );
    // A link from an earlier layer is just as contained.
    let d = Dest::new();
    d.unpack(&T::new().symlink("etc", "..").done(), Whiteouts::Apply)
        .unwrap();
    d.unpack(
        &T::new()
            .raw(tar::EntryType::Regular, "etc/canary", None, b"pwned")
            .done(),
        Whiteouts::Apply,
    )
    .unwrap();
    d.outside_intact();
    assert_eq!(fs::read(d.root().join("canary")).unwrap(), b"pwned");
}

#[test]
fn hardlinks_cannot_reach_outside_or_to_directories() {
    let d = Dest::new();
    let canary = format!("{}/canary", d.tmp.path().display());
    // Absolute target: resolved inside the root, where there is no such file.
    refused(
        d.unpack(
            &T::new()
                .raw(tar::EntryType::Link, "h", Some(&canary), b"")
                .done(),
            Whiteouts::Overlay,
        ),
        "h",
    );
    refused(
        d.unpack(
            &T::new()
                .raw(tar::EntryType::Link, "h2", Some("../canary"), b"")
                .done(),
            Whiteouts::Overlay,
        ),
        "h2",
    );
    // Through a symlinked parent (`up` is the root's parent, if followed out): the link
    // goes to the root, and the target is not there.
    let e = d
        .unpack(
            &T::new()
                .symlink("up", "..")
                .raw(tar::EntryType::Link, "h3", Some("up/canary"), b"")
                .done(),
            Whiteouts::Overlay,
        )
        .expect_err("the layer must be refused")
        .to_string();
    assert_eq!(
        e,
        "layer sha256:test: entry \"h3\": its target /up/canary does not exist"
    );
    fs::create_dir(d.root().join("dir")).unwrap();
    refused(
        d.unpack(
            &T::new()
                .raw(tar::EntryType::Link, "h4", Some("dir"), b"")
                .done(),
            Whiteouts::Overlay,
        ),
        "h4",
    );
    assert_eq!(
        fs::metadata(d.tmp.path().join("canary")).unwrap().nlink(),
        1,
        "no new link to the host file"
    );
    d.outside_intact();
}

#[test]
fn whiteouts_cannot_delete_outside() {
    let d = Dest::new();
    for (name, why) in [
        ("../.wh.canary", "the name climbs out of the root with `..`"),
        (".wh...", "a whiteout of no name"),
    ] {
        let e = d
            .unpack(
                &T::new()
                    .raw(tar::EntryType::Regular, name, None, b"")
                    .done(),
                Whiteouts::Apply,
            )
            .expect_err("the layer must be refused")
            .to_string();
        assert_eq!(e, format!("layer sha256:test: entry {name:?}: {why}"));
        d.outside_intact();
    }
    // `up` is the root's parent if followed out: `up/.wh.canary` would delete the canary,
    // an opaque `up` would empty the directory holding it.
    d.unpack(
        &T::new()
            .symlink("up", "..")
            .raw(tar::EntryType::Regular, "up/.wh.canary", None, b"")
            .done(),
        Whiteouts::Apply,
    )
    .unwrap();
    d.outside_intact();
    d.unpack(
        &T::new()
            .raw(tar::EntryType::Regular, "up/.wh..wh..opq", None, b"")
            .done(),
        Whiteouts::Apply,
    )
    .unwrap();
    d.outside_intact();
}

#[test]
fn unknown_entry_types_are_refused() {
    let d = Dest::new();
    let mut h = header(tar::EntryType::new(b'Z'), 0o644, 0);
    raw_name(&mut h, "strange");
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, io::empty()).unwrap();
    refused(
        d.unpack(&b.into_inner().unwrap(), Whiteouts::Overlay),
        "strange",
    );
}

#[test]
fn a_truncated_stream_is_an_error() {
    let d = Dest::new();
    let tar = T::new().file("big", &vec![7u8; 100_000]).done();
    let e = d
        .unpack(&tar[..50_000], Whiteouts::Overlay)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sha256:test"), "{e}");
}

#[test]
fn a_stream_without_end_blocks_after_whole_entries_is_accepted() {
    // What umoci writes: the last entry's data, then nothing (no padding, no end blocks).
    let full = T::new().file("a", b"abc").done();
    let cut = &full[..512 + 3];
    let d = Dest::new();
    let u = d.unpack(cut, Whiteouts::Overlay).unwrap();
    assert_eq!(fs::read(d.root().join("a")).unwrap(), b"abc");
    assert_eq!(u.diff_id, Digest::of(Algorithm::Sha256, cut));
}

#[test]
fn an_extension_header_claiming_gigabytes_is_refused_within_a_memory_bound() {
    const ME: &str =
        "unpack::tests::an_extension_header_claiming_gigabytes_is_refused_within_a_memory_bound";
    // In the child: a header claiming 4 GiB, then bytes that never end.
    if let Ok(kind) = std::env::var("BERTH_HUGE_HEADER") {
        let kind = match kind.as_str() {
            "L" => tar::EntryType::GNULongName,
            "K" => tar::EntryType::GNULongLink,
            _ => tar::EntryType::XHeader,
        };
        let mut h = header(kind, 0o644, 4 << 30);
        raw_name(&mut h, "././@LongLink");
        h.set_cksum();
        let stream = io::Read::chain(&h.as_bytes()[..], io::repeat(b'a'));
        let d = tempfile::tempdir().unwrap();
        let r = unpack_layer("huge", stream, d.path(), &opts(Whiteouts::Overlay), None);
        match r {
            Ok(_) => println!("RESULT: unpacked"),
            Err(e) => println!("RESULT: {e}"),
        }
        return;
    }
    for (kind, want) in [
        (
            "L",
            "layer huge: a GNU long name of 4294967296 bytes, over the 65536-byte limit",
        ),
        (
            "K",
            "layer huge: a GNU long link target of 4294967296 bytes, over the 65536-byte limit",
        ),
        (
            "x",
            "layer huge: a PAX extended header of 4294967296 bytes, over the 1048576-byte limit",
        ),
    ] {
        // 512 MiB of address space; the old reader buffered the whole claimed size.
        let berth_testkit::Rerun::Done { code, stdout: out } = berth_testkit::rerun_limited(
            ME,
            &[("BERTH_HUGE_HEADER", kind)],
            512 << 20,
            std::time::Duration::from_secs(120),
        ) else {
            panic!("{kind}: the unpack hung");
        };
        assert_eq!(code, Some(0), "{kind}: the unpack died: {out}");
        assert_eq!(berth_testkit::result_line(&out), Some(want), "{kind}");
    }
}

#[test]
fn a_layer_that_unpacks_past_the_bound_is_refused() {
    let mut o = opts(Whiteouts::Overlay);
    o.max_size = 10_000;
    let d = Dest::new();
    let tar = T::new()
        .file("a", &[1u8; 6000])
        .file("b", &[2u8; 6000])
        .done();
    let e = unpack_layer("sha256:test", &tar[..], &d.root(), &o, None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "layer sha256:test: entry \"b\": the layer unpacks to more than the 10000-byte limit"
    );
    assert!(!d.root().join("b").exists(), "nothing of b is written");
    // At the bound, it unpacks.
    o.max_size = 12_000;
    let d = Dest::new();
    unpack_layer("sha256:test", &tar[..], &d.root(), &o, None).unwrap();
}
