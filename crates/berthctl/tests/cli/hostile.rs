//! berthctl against hostile input: images whose files are not what they claim, output
//! directories other users can write, and inputs that try to exhaust memory.

use super::*;

/// A busybox root file system tarball whose /etc/passwd is a node of `kind` (fifo or
/// character device `major:0`), written with the tar crate.
fn rootfs_with_passwd_node(dir: &Path, kind: tar::EntryType, major: u32) -> PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    let bb = std::fs::read("/bin/busybox").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(bb.len() as u64);
    b.append_data(&mut h, "bin/busybox", &bb[..]).unwrap();
    for a in ["sh", "true", "id"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(&mut h, format!("bin/{a}"), "busybox")
            .unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(0);
    h.set_device_major(major).unwrap();
    h.set_device_minor(0).unwrap();
    b.append_data(&mut h, "etc/passwd", std::io::empty())
        .unwrap();
    let tar = dir.join(format!("passwd-{kind:?}.tar"));
    std::fs::write(&tar, b.into_inner().unwrap()).unwrap();
    tar
}

/// A character-device major no driver has registered here: opening such a node fails
/// with ENXIO ("No such device or address"), which would show in the error.
fn unregistered_major() -> u32 {
    let devices = std::fs::read_to_string("/proc/devices").unwrap();
    let chars = devices.split("Block devices:").next().unwrap();
    let used: Vec<u32> = chars
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    (60..=254).find(|m| !used.contains(m)).unwrap()
}

/// Runs berthctl, killing it after `limit`: (exit status, stderr), None when it hung.
fn out_within(ctl: &Ctl, args: &[&str], limit: Duration) -> Option<(Option<i32>, String)> {
    let mut child = ctl.cmd(args).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut e = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut e).unwrap();
            return Some((st.code(), e));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_image_passwd_that_is_a_fifo_or_a_device_is_never_opened() {
    let ctl = Ctl::new();
    for (kind, major, what) in [
        (tar::EntryType::Fifo, 0, "a fifo"),
        (
            tar::EntryType::Char,
            unregistered_major(),
            "a character device",
        ),
    ] {
        let tar = rootfs_with_passwd_node(ctl.dir.path(), kind, major);
        let id = ctl.ok(&["import", tar.to_str().unwrap()]);
        let id = id.trim();
        let (code, e) = out_within(
            &ctl,
            &["run", "--rm", "-u", "user", id, "id"],
            Duration::from_secs(60),
        )
        .expect("run -u with a hostile /etc/passwd hung");
        assert_eq!(code, Some(125), "{e}");
        assert!(
            e.ends_with(&format!(
                ": user \"user\": the image's /etc/passwd is {what}, not a regular file\n"
            )) && e.lines().count() == 1,
            "one line naming the file and what it is: {e}"
        );
    }
    assert_clean(&ctl);
}

#[test]
fn save_never_writes_through_links_planted_in_the_output_directory() {
    use std::os::unix::fs::symlink;
    let ctl = Ctl::new();
    ctl.ok(&["run", "--rm", BB, "true"]);
    // A directory a local user can write; a canary only root can.
    let out = ctl.dir.path().join("shared");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let canary = ctl.dir.path().join("canary");
    std::fs::write(&canary, "precious").unwrap();
    let canary_dir = ctl.dir.path().join("canary-dir");
    std::fs::create_dir(&canary_dir).unwrap();
    let next_pid: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for fmt in ["oci-archive", "docker-archive", "oci-dir"] {
        // The temporary names save used to pick (`.NAME.tmp-PID`), for the pids the next
        // processes will get: links to the canary, or directories of them.
        let dest = out.join(format!("img-{fmt}"));
        for pid in next_pid..next_pid + 400 {
            let tmp = out.join(format!(".img-{fmt}.tmp-{pid}"));
            if fmt == "oci-dir" {
                std::fs::create_dir(&tmp).unwrap();
                symlink(&canary, tmp.join("oci-layout")).unwrap();
                symlink(&canary, tmp.join("index.json")).unwrap();
                symlink(&canary_dir, tmp.join("blobs")).unwrap();
            } else {
                symlink(&canary, &tmp).unwrap();
            }
        }
        ctl.ok(&["save", "--format", fmt, "-o", dest.to_str().unwrap(), BB]);
        assert!(
            std::fs::read(&canary).unwrap() == b"precious",
            "{fmt}: the canary was written through a planted link"
        );
        assert_eq!(std::fs::read_dir(&canary_dir).unwrap().count(), 0, "{fmt}");
        let other = Ctl::new();
        assert!(other
            .ok(&["load", "-i", dest.to_str().unwrap()])
            .contains("localhost/berth-busybox:latest"));
        // A link at the output's own name: refused, nothing written through it.
        let linked = out.join(format!("linked-{fmt}"));
        symlink(&canary, &linked).unwrap();
        let e = ctl.fails(
            &["save", "--format", fmt, "-o", linked.to_str().unwrap(), BB],
            125,
        );
        assert!(e.contains("exists already"), "{e}");
        assert!(std::fs::read(&canary).unwrap() == b"precious");
    }
    assert_clean(&ctl);
}

/// Runs berthctl with its address space limited to `limit` bytes (RLIMIT_AS): (exit code,
/// stdout, stderr). A berthctl that buffers a large input dies of the limit instead of
/// taking the machine's memory.
fn out_limited(ctl: &Ctl, args: &[&str], limit: u64) -> (Option<i32>, String, String) {
    let mut c = ctl.cmd(args);
    let o = berth_testkit::limit_address_space(&mut c, limit)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    eprintln!(
        "berthctl {args:?} (limited) -> {:?}\n{out}{err}",
        o.status.code()
    );
    (o.status.code(), out, err)
}

const LIMIT: u64 = 128 << 20;

#[test]
fn import_streams_a_tarball_larger_than_its_memory() {
    // 160 MiB of zeros in one file, zstd-compressed to a few KiB: more than berthctl may
    // hold (128 MiB of address space), so only a streaming import gets through.
    let ctl = Ctl::new();
    let big = 160u64 << 20;
    let tar = ctl.dir.path().join("bomb.tar.zst");
    {
        let out = std::fs::File::create(&tar).unwrap();
        let mut b = tar::Builder::new(zstd::Encoder::new(out, 1).unwrap().auto_finish());
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(big);
        b.append_data(
            &mut h,
            "zeros",
            std::io::Read::take(std::io::repeat(0), big),
        )
        .unwrap();
        b.into_inner().unwrap();
    }
    let (code, out, err) = out_limited(&ctl, &["import", tar.to_str().unwrap(), "big"], LIMIT);
    assert_eq!(code, Some(0), "import of a 160 MiB tar in 128 MiB: {err}");
    assert!(out.trim().starts_with("sha256:"), "{out}");
    // The layer is the file as given (compressed) and its diffID the plain tar's.
    let v: serde_json::Value = serde_json::from_str(&ctl.ok(&["inspect", "big"])).unwrap();
    assert_eq!(
        v["Manifest"]["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(
        v["Manifest"]["layers"][0]["size"],
        std::fs::metadata(&tar).unwrap().len()
    );
    assert_clean(&ctl);
}

/// An OCI layout under `dir` whose index.json lists `desc` (a descriptor made from the
/// digest and size of `blob`, a sparse file of `size` zero bytes, put under blobs/).
fn layout_with_blob(dir: &Path, media_type: &str, size: u64) -> PathBuf {
    let l = dir.join(format!("layout-{size}"));
    std::fs::create_dir_all(l.join("blobs/sha256")).unwrap();
    std::fs::write(l.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let tmp = l.join("blob");
    std::fs::File::create(&tmp).unwrap().set_len(size).unwrap();
    let sum = Command::new("sha256sum").arg(&tmp).output().unwrap();
    let hex = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    std::fs::rename(&tmp, l.join("blobs/sha256").join(&hex)).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": size}
    ]});
    std::fs::write(l.join("index.json"), index.to_string()).unwrap();
    l
}

#[test]
fn load_refuses_oversized_documents_before_reading_them() {
    let ctl = Ctl::new();
    // A nested index of 200 MiB (its size honestly given): refused by its size.
    let l = layout_with_blob(
        ctl.dir.path(),
        "application/vnd.oci.image.index.v1+json",
        200 << 20,
    );
    let (code, _, err) = out_limited(&ctl, &["load", "-i", l.to_str().unwrap()], LIMIT);
    assert_eq!(code, Some(125), "{err}");
    assert!(
        err.trim_end().ends_with(&format!(
            "{}: member \"index.json\": an index of 209715200 bytes, over the 4194304-byte limit",
            l.display()
        )) && err.lines().count() == 1,
        "{err}"
    );
    // An archive whose first header is a GNU long name claiming 4 GiB (a sparse file: the
    // claimed bytes read as zeros, and cost no disk).
    let ar = ctl.dir.path().join("longname.tar");
    {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(4 << 30);
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_cksum();
        std::fs::write(&ar, h.as_bytes()).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&ar)
            .unwrap()
            .set_len(512 + (4 << 30) + 1024)
            .unwrap();
    }
    let (code, _, err) = out_limited(&ctl, &["load", "-i", ar.to_str().unwrap()], LIMIT);
    assert_eq!(code, Some(125), "{err}");
    assert!(
        err.trim_end().ends_with(&format!(
            "{}: read the tar: a GNU long name of 4294967296 bytes, over the 65536-byte limit",
            ar.display()
        )) && err.lines().count() == 1,
        "{err}"
    );
    assert_clean(&ctl);
}

#[test]
fn a_whiteout_of_a_name_absent_below_is_not_listed() {
    let ctl = Ctl::new();
    busybox_rootfs_tar(ctl.dir.path());
    let layout = Layout::new("1");
    let tree = ctl.dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/present"), "here").unwrap();
    layout.insert("1", &tree, "/");
    // The top layer whites out names no layer below has (real images do this): in etc,
    // which a lower layer has, and in opt, which only this layer makes. Overlayfs hides a
    // whiteout in a directory it merges; in one that only this layer has, readdir lists
    // it and stat cannot find it.
    let mut b = tar::Builder::new(Vec::new());
    for name in ["etc/.wh.never", "opt/.wh.never"] {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(0);
        b.append_data(&mut h, name, std::io::empty()).unwrap();
    }
    let top = ctl.dir.path().join("top.tar");
    std::fs::write(&top, b.into_inner().unwrap()).unwrap();
    layout.raw_layer("1", &top);
    ctl.ok(&["load", "-i", layout.path().to_str().unwrap()]);
    let id = ctl.ok(&["images", "-q"]);
    // ls -A stats what readdir lists: a phantom fails it ("No such file or directory").
    let out = ctl.ok(&[
        "run",
        "--rm",
        id.trim(),
        "busybox",
        "sh",
        "-c",
        "busybox ls -A /etc && echo -- && busybox ls -A /opt",
    ]);
    let (etc, opt) = out.split_once("--\n").unwrap();
    assert!(
        etc.lines().any(|l| l == "present") && !etc.lines().any(|l| l == "never"),
        "{etc}"
    );
    assert_eq!(opt, "", "no phantom in /opt");
    assert_clean(&ctl);
}

#[test]
fn a_layer_over_the_unpacked_size_bound_is_refused() {
    // The built-in image's one layer is about 2 MB unpacked; a 100 KiB bound refuses it.
    let ctl = Ctl::new();
    let e = ctl.fails(
        &["--max-layer-size", "100k", "run", "--rm", BB, "true"],
        125,
    );
    assert!(
        e.contains("the layer unpacks to more than the 102400-byte limit")
            && e.lines().count() == 1,
        "{e}"
    );
    // The default is generous.
    ctl.ok(&["run", "--rm", BB, "true"]);
    let e = ctl.fails(&["--max-layer-size", "lots", "images"], 125);
    assert!(e.contains("--max-layer-size"), "{e}");
    assert_clean(&ctl);
}

/// A static program (built with the host's gcc) that calls io_uring_setup, a system call
/// the default profile does not list, and prints ENOSYS or "implemented"; None without gcc.
fn io_uring_probe(dir: &Path) -> Option<PathBuf> {
    let src = dir.join("iou.c");
    std::fs::write(
        &src,
        "#include <errno.h>\n#include <stdio.h>\n#include <unistd.h>\n#include <sys/syscall.h>\n\
         int main(void) { long r = syscall(425, 0, 0);\n\
         puts(r < 0 && errno == ENOSYS ? \"ENOSYS\" : \"implemented\"); return 0; }\n",
    )
    .unwrap();
    let bin = dir.join("iou");
    let ok = Command::new("gcc")
        .args(["-static", "-O", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(bin)
}

#[test]
fn the_default_seccomp_profile_is_an_allow_list() {
    let ctl = Ctl::new();
    // Common programs work under it: a tour of busybox's applets.
    let script = "set -e; ls -la / >/dev/null; cat /etc/passwd >/dev/null; \
        echo x > /tmp/f; cp /tmp/f /tmp/g; mv /tmp/g /tmp/h; rm /tmp/h; \
        mkdir -p /tmp/d/e; rmdir /tmp/d/e; ln -s /tmp/f /tmp/l; readlink /tmp/l >/dev/null; \
        ln /tmp/f /tmp/hard; chmod 600 /tmp/f; chown 1:1 /tmp/f; touch -d 2020-01-01 /tmp/f; \
        stat /tmp/f >/dev/null; truncate -s 10 /tmp/f; date >/dev/null; sleep 0.1; \
        ps >/dev/null; id >/dev/null; env >/dev/null; sort /etc/passwd | uniq >/dev/null; \
        find / -xdev -maxdepth 2 >/dev/null; tar -cf /tmp/t.tar /etc; tar -tf /tmp/t.tar >/dev/null; \
        gzip /tmp/t.tar; gunzip /tmp/t.tar.gz; md5sum /tmp/t.tar >/dev/null; \
        sha256sum /tmp/t.tar >/dev/null; dd if=/dev/zero of=/tmp/z bs=1k count=64 2>/dev/null; \
        wc -c /tmp/z >/dev/null; seq 1 3 | tail -1 >/dev/null; (sleep 0.1 &); wait; \
        trap 'true' USR1; kill -USR1 $$; uname -a >/dev/null; df / >/dev/null; \
        free >/dev/null; top -bn1 >/dev/null; nproc >/dev/null; taskset -p $$ >/dev/null; \
        renice -n 1 $$ >/dev/null; ionice -c 3 true; linux32 true; timeout 5 true; \
        nc -l -p 9999 > /tmp/got & sleep 0.3; echo hi | nc 127.0.0.1 9999; wait; \
        grep -q hi /tmp/got; mkfifo /tmp/fifo; xargs echo </dev/null >/dev/null; \
        awk 'BEGIN{print 1}' >/dev/null; sed -n 1p /etc/passwd >/dev/null; \
        vi --help >/dev/null 2>&1 || true; echo all-ok";
    assert_eq!(ctl.ok(&["run", "--rm", BB, "sh", "-c", script]), "all-ok\n");
    // What the runtime is told: refuse what is not listed, with ENOSYS (so libc falls back
    // from a system call it does not get, as with podman's profile).
    let id = ctl.ok(&["run", "-d", BB, "true"]).trim().to_string();
    let config = ctl.bundle_config(&id);
    assert_eq!(
        config["linux"]["seccomp"]["defaultAction"],
        "SCMP_ACT_ERRNO"
    );
    assert_eq!(config["linux"]["seccomp"]["defaultErrnoRet"], libc::ENOSYS);
    ctl.ok(&["rm", "-f", &id]);
    // A system call it does not list (io_uring_setup) is refused with ENOSYS; without the
    // profile, the kernel answers.
    match io_uring_probe(ctl.dir.path()) {
        None => panic!("the io_uring probe needs gcc (build-essential)"),
        Some(bin) => {
            let v = format!("{}:/probe:ro", bin.display());
            assert_eq!(ctl.ok(&["run", "--rm", "-v", &v, BB, "/probe"]), "ENOSYS\n");
            assert_eq!(
                ctl.ok(&["run", "--rm", "--no-seccomp", "-v", &v, BB, "/probe"]),
                "implemented\n"
            );
        }
    }
    // The calls it refuses outright still get EPERM.
    let o = ctl.out(&[
        "run",
        "--rm",
        BB,
        "sh",
        "-c",
        "unshare -U true 2>&1; hostname other 2>&1",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.matches("Operation not permitted").count() == 2, "{out}");
    assert_clean(&ctl);
}
