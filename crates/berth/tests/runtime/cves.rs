//! Regression tests for known container escapes that apply to berth itself.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::common::*;

/// CVE-2019-5736: the container init (and any berth process inside a container) must not
/// run from the host's berth binary, or a container process could reopen that image for
/// writing once the runtime process exits. berth re-execs through a read-only bind mount of
/// itself (or a sealed memfd copy).
#[test]
fn the_inits_image_cannot_be_written_even_after_it_dies() {
    // A private copy of berth: a binary that some berth process still runs refuses writes
    // with ETXTBSY whatever the protection, and other tests run the shared one.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("berth");
    // By a child process, so no thread here holds a writable fd a forked child could
    // inherit (exec would then fail with ETXTBSY).
    let st = std::process::Command::new("install")
        .args(["-m", "0755"])
        .arg(berth_bin())
        .arg(&bin)
        .status()
        .unwrap();
    assert!(st.success());
    let root = dir.path().join("root");
    // stderr to a file: the waiting init keeps it open, so a pipe would never reach EOF.
    let err_path = dir.path().join("stderr");
    let berth = |args: &[&str]| {
        let err = fs::File::create(&err_path).unwrap();
        let status = std::process::Command::new(&bin)
            .arg("--root")
            .arg(&root)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(err)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "{args:?}: {}",
            fs::read_to_string(&err_path).unwrap_or_default()
        );
    };
    let b = Bundle::new().sh("true");
    let id = unique_id("cve5736");
    let before = fs::read(&bin).unwrap();
    berth(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join(&id).join("state.json")).unwrap()).unwrap();
    let init = state["pid"].as_i64().unwrap();
    // What an attacker holds: an O_PATH handle on the runtime's image.
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/{init}/exe"))
        .unwrap();
    berth(&["delete", "--force", &id]);

    // Once no process runs the image, try to reopen it for writing.
    match OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
    {
        Ok(mut f) => {
            let host = fs::metadata(&bin).unwrap();
            let got = f.metadata().unwrap();
            // Never write to the binary itself: that it is reachable is the failure.
            assert!(
                (got.dev(), got.ino()) != (host.dev(), host.ino()),
                "a container process could write the host's berth binary"
            );
            let err = f
                .write_all(b"x")
                .expect_err("the sealed copy accepted a write");
            assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        }
        Err(err) => assert!(
            matches!(err.raw_os_error(), Some(libc::EROFS) | Some(libc::EPERM)),
            "refused, but not for being read-only or sealed: {err}"
        ),
    }
    assert_eq!(fs::read(&bin).unwrap(), before, "the berth binary changed");
}

/// CVE-2024-21626: no runtime fd may reach the container; the user process starts with
/// exactly its stdio.
#[test]
fn the_user_process_gets_no_runtime_fds() {
    let berth = Berth::new();
    let b = Bundle::new().args(&["sleep", "1000"]);
    let id = unique_id("fds");
    berth.create(&id, b.path(), &[]).assert_ok("create");
    berth.cmd(&["start", &id]).assert_ok("start");
    let pid = berth.pid(&id);
    wait_for("the init to exec sleep", || {
        fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .ok()
            .filter(|c| c.starts_with("sleep"))
    });

    let mut fds: Vec<i32> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    fds.sort();

    assert_eq!(fds, [0, 1, 2], "the container's process holds extra fds");
}

/// CVE-2024-21626: a cwd through /proc/self/fd/N (a leaked host directory) is refused.
#[test]
fn a_cwd_through_proc_self_fd_is_refused() {
    let berth = Berth::new();
    let b = Bundle::new()
        .args(&["true"])
        .edit(|c| c["process"]["cwd"] = serde_json::json!("/proc/self/fd/5"));
    let id = unique_id("cwdfd");

    let out = berth.create(&id, b.path(), &[]);

    out.assert_error("cwd via /proc/self/fd")
        .assert_stderr_has("cwd via /proc/self/fd", &[&id, "process.cwd"]);
    assert_no_leftovers(&berth, &id, b.path());
}

/// CVE-2021-30465: a mount destination that is a symlink pointing out of the rootfs mounts
/// inside the rootfs (the link is resolved as if the rootfs were /), never on the host.
#[test]
fn a_mount_destination_symlinked_out_of_the_rootfs_stays_inside() {
    let berth = Berth::new();
    let marker = format!("berth-escape-{}", unique_id("m"));
    let root = own_rootfs(&["proc"]);
    std::os::unix::fs::symlink(
        format!("/../../../../../../../../opt/{marker}"),
        root.path().join("evil"),
    )
    .unwrap();
    let b = Bundle::new().args(&["true"]).edit(|c| {
        c["root"]["path"] = serde_json::json!(root.path());
        add_mount(
            c,
            serde_json::json!({"destination": "/evil", "type": "tmpfs", "source": "tmpfs"}),
        );
    });
    let id = unique_id("symlink");

    let out = berth.run(&id, b.path(), &[]);

    out.assert_ok("run with a symlinked mount destination");
    assert!(
        !Path::new("/opt").join(&marker).exists(),
        "the mount followed the symlink out of the rootfs to /opt/{marker}"
    );
    assert!(
        root.path().join("opt").join(&marker).is_dir(),
        "the destination was not made inside the rootfs"
    );
}

/// Masked and read-only paths cannot be undone from inside by a process without
/// CAP_SYS_ADMIN (the default capability set).
#[test]
fn masked_and_readonly_paths_cannot_be_unmounted_or_remounted_from_inside() {
    let berth = Berth::new();
    let b = Bundle::new().sh(
        "umount /proc/keys 2>/dev/null && echo unmasked || echo mask-kept; \
         umount -l /proc/sys 2>/dev/null && echo ro-removed || echo ro-kept; \
         mount -o remount,rw /proc/sys 2>/dev/null && echo remounted || echo remount-refused; \
         echo 1 > /proc/sys/kernel/printk 2>/dev/null && echo wrote || echo write-refused; \
         wc -c < /proc/keys",
    );

    let out = berth.run_to_exit(&b).stdout;

    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        [
            "mask-kept",
            "ro-kept",
            "remount-refused",
            "write-refused",
            "0"
        ],
        "{out}"
    );
}

/// A rootfs of its own, for a test that plants links in it: busybox with sh, true and cat,
/// and the directories /bin, /dev, /sys, /tmp plus `extra`.
fn own_rootfs(extra: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for d in ["bin", "dev", "sys", "tmp"].iter().chain(extra) {
        fs::create_dir_all(root.path().join(d)).unwrap();
    }
    fs::copy("/bin/busybox", root.path().join("bin/busybox")).unwrap();
    for applet in ["sh", "true", "cat"] {
        std::os::unix::fs::symlink("busybox", root.path().join("bin").join(applet)).unwrap();
    }
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    root
}

/// `create` must fail naming the container and `needles`, leaving nothing behind.
fn refused(b: &Bundle, needles: &[&str]) {
    let berth = Berth::new();
    let id = unique_id("procmount");
    berth
        .create(&id, b.path(), &[])
        .assert_error("create with a mount that hides /proc")
        .assert_stderr_has("create", &[&id])
        .assert_stderr_has("create", needles);
    assert_no_leftovers(&berth, &id, b.path());
}

/// CVE-2019-16884: a volume mounted over /proc would hide /proc/self/attr, so an LSM label
/// written there would land in the volume and the container would run unconfined.
#[test]
fn cve_2019_16884_a_volume_over_proc_is_refused() {
    let vol = tempfile::tempdir().unwrap();
    let b = Bundle::new().edit(|c| {
        add_mount(
            c,
            serde_json::json!({"destination": "/proc", "type": "bind",
                "source": vol.path(), "options": ["rbind"]}),
        )
    });

    refused(&b, &["/proc", "only procfs may be mounted on /proc"]);
}

/// CVE-2019-16884, the narrower form: a mount over /proc/self/attr itself.
#[test]
fn cve_2019_16884_a_mount_over_proc_self_attr_is_refused() {
    let b = Bundle::new().edit(|c| {
        add_mount(
            c,
            serde_json::json!({"destination": "/proc/self/attr", "type": "tmpfs",
                "source": "tmpfs"}),
        )
    });

    refused(&b, &["/proc/self/attr", "is under /proc"]);
}

/// CVE-2023-27561 (CVE-2019-16884 come back): the destination is not spelled /proc but a
/// symlink in the rootfs leads there.
#[test]
fn cve_2023_27561_a_symlink_leading_a_mount_onto_proc_is_refused() {
    let root = own_rootfs(&["proc"]);
    std::os::unix::fs::symlink("/proc", root.path().join("innocent")).unwrap();
    let b = Bundle::new().args(&["true"]).edit(|c| {
        c["root"]["path"] = serde_json::json!(root.path());
        add_mount(
            c,
            serde_json::json!({"destination": "/innocent", "type": "tmpfs", "source": "tmpfs"}),
        );
    });

    refused(
        &b,
        &[
            "only procfs may be mounted on /proc",
            "through a symlink from /innocent",
        ],
    );
}

/// CVE-2023-28642: /proc in the rootfs is a symlink, so procfs would be mounted elsewhere and
/// what the runtime writes to /proc would not reach the kernel.
#[test]
fn cve_2023_28642_proc_as_a_symlink_in_the_rootfs_is_refused() {
    let root = own_rootfs(&["fakeproc"]);
    std::os::unix::fs::symlink("/fakeproc", root.path().join("proc")).unwrap();
    let b = Bundle::new()
        .args(&["true"])
        .edit(|c| c["root"]["path"] = serde_json::json!(root.path()));

    refused(&b, &["symlink", "/fakeproc", "proc", "CVE-2023-28642"]);
    assert!(
        fs::read_dir(root.path().join("fakeproc"))
            .unwrap()
            .next()
            .is_none(),
        "procfs was mounted at the symlink's target"
    );
}

/// The same check for sysfs: /sys as a symlink is refused.
#[test]
fn cve_2023_28642_sys_as_a_symlink_in_the_rootfs_is_refused() {
    let root = own_rootfs(&["proc", "fakesys"]);
    fs::remove_dir(root.path().join("sys")).unwrap();
    std::os::unix::fs::symlink("fakesys", root.path().join("sys")).unwrap();
    let b = Bundle::new()
        .args(&["true"])
        .edit(|c| c["root"]["path"] = serde_json::json!(root.path()));

    refused(&b, &["symlink", "/fakesys", "sysfs"]);
}

/// What the /proc checks still allow: a bind of a file onto a listed /proc file, as lxcfs
/// does, and the container sees it.
#[test]
fn a_file_bound_onto_proc_uptime_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("uptime");
    fs::write(&src, "4242.00 17.00\n").unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o644)).unwrap();
    let b = Bundle::new().args(&["cat", "/proc/uptime"]).edit(|c| {
        add_mount(
            c,
            serde_json::json!({"destination": "/proc/uptime", "type": "bind",
                "source": src, "options": ["bind", "ro"]}),
        )
    });

    let out = Berth::new().run_to_exit(&b);

    assert_eq!(out.stdout.trim(), "4242.00 17.00", "stderr: {}", out.stderr);
}

/// The class of CVE-2025-31133: with a /dev that is not a fresh tmpfs, an image that ships
/// /dev/null as a link (here to a file it controls; in the attack, to a /proc/sys file)
/// must not become what masked paths are bound from.
#[test]
fn a_planted_dev_null_is_refused_not_used_for_masking() {
    let root = own_rootfs(&["proc", "dev"]);
    fs::write(root.path().join("tmp/sink"), "").unwrap();
    std::os::unix::fs::symlink("/tmp/sink", root.path().join("dev/null")).unwrap();
    let b = Bundle::new().args(&["true"]).edit(|c| {
        c["root"]["path"] = serde_json::json!(root.path());
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["destination"] != "/dev");
    });

    refused(&b, &["/dev/null", "not the device"]);
}

/// The same with /dev bound from a directory the image controls (no devices are made
/// then): masking checks the node it binds.
#[test]
fn a_planted_dev_null_in_a_bound_dev_is_refused() {
    let dev = tempfile::tempdir().unwrap();
    fs::write(dev.path().join("sink"), "").unwrap();
    std::os::unix::fs::symlink("/dev/sink", dev.path().join("null")).unwrap();
    let b = Bundle::new().args(&["true"]).edit(|c| {
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["destination"] != "/dev");
        add_mount(
            c,
            serde_json::json!({"destination": "/dev", "type": "bind", "source": dev.path(),
                "options": ["rbind"]}),
        );
    });

    refused(&b, &["/dev/null", "not the device 1:3"]);
}

/// A /dev the image controls (bound from a directory) with /dev/console planted as a link
/// into procfs: the pty is not bound over /proc/sys/kernel/core_pattern (threat model F13, the class
/// of CVE-2025-52565); the link is resolved inside the root and refused.
#[test]
fn a_planted_dev_console_link_into_procfs_is_refused() {
    let dev = tempfile::tempdir().unwrap();
    nix::sys::stat::mknod(
        &dev.path().join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    std::os::unix::fs::symlink("pts/ptmx", dev.path().join("ptmx")).unwrap();
    std::os::unix::fs::symlink("/proc/sys/kernel/core_pattern", dev.path().join("console"))
        .unwrap();
    let berth = Berth::new();
    let b = Bundle::new().args(&["true"]).edit(|c| {
        c["process"]["terminal"] = serde_json::json!(true);
        // In /dev's place, so that /dev/pts is mounted on top of it.
        for m in c["mounts"].as_array_mut().unwrap() {
            if m["destination"] == "/dev" {
                *m = serde_json::json!({"destination": "/dev", "type": "bind",
                        "source": dev.path(), "options": ["rbind"]});
            }
        }
    });
    let id = unique_id("consolelink");

    let out = berth.run(&id, b.path(), &[]);

    out.assert_error("a /dev/console link into procfs")
        .assert_stderr_has("console", &["/dev/console", "procfs"]);
    assert_no_leftovers(&berth, &id, b.path());
}
