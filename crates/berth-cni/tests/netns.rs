//! Persistent network namespaces (root). Each test runs inside network and mount
//! namespaces of its own (common::in_private_namespaces): the mounts it makes, and the
//! namespaces they pin, go when it ends, whatever failed.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_cni::{is_namespace, NetnsDir, NetnsError};
use common::{in_private_namespaces, run};

fn own_netns_inode() -> u64 {
    fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
}

/// The optional fields of the mount at `dir` in our mountinfo (e.g. `shared:12`).
fn mount_tags(dir: &Path) -> Option<String> {
    let dir = fs::canonicalize(dir).unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            (Path::new(f.get(4)?) == dir).then(|| f[6..sep].join(" "))
        })
        .next_back()
}

#[test]
fn create_pins_a_fresh_namespace_with_lo_up_and_leaves_the_caller_where_it_was() {
    in_private_namespaces(
        "create_pins_a_fresh_namespace_with_lo_up_and_leaves_the_caller_where_it_was",
        |dir| {
            let before = own_netns_inode();
            let netns = NetnsDir::new(dir.join("netns"));

            let ns = netns.create("pod-a").unwrap();

            assert_eq!(ns.path(), dir.join("netns/pod-a"));
            assert_eq!(own_netns_inode(), before, "the caller's thread moved");
            assert!(is_namespace(ns.path()));
            let pinned = fs::metadata(ns.path()).unwrap().ino();
            assert_ne!(pinned, before, "the pinned namespace is the caller's");
            let lo = run(
                "nsenter",
                &[
                    &format!("--net={}", ns.path().display()),
                    "ip",
                    "-o",
                    "link",
                    "show",
                    "lo",
                ],
            );
            assert!(lo.contains(",UP"), "lo is not up: {lo}");
            // Nothing but lo in it.
            let links = run(
                "nsenter",
                &[
                    &format!("--net={}", ns.path().display()),
                    "ip",
                    "-o",
                    "link",
                    "show",
                ],
            );
            assert_eq!(links.lines().count(), 1, "{links}");
            // The descriptor can be opened for setns.
            drop(ns.open().unwrap());
            // Two namespaces are two.
            let other = netns.create("pod-b").unwrap();
            assert_ne!(fs::metadata(other.path()).unwrap().ino(), pinned);
        },
    );
}

#[test]
fn the_directory_is_a_mount_point_of_its_own_with_shared_propagation() {
    in_private_namespaces(
        "the_directory_is_a_mount_point_of_its_own_with_shared_propagation",
        |dir| {
            let d = dir.join("netns");
            let netns = NetnsDir::new(&d);
            netns.create("one").unwrap();
            let tags = mount_tags(&d).expect("the directory is not a mount point");
            assert!(tags.contains("shared:"), "not shared: {tags:?}");
            // A second namespace does not bind the directory onto itself again.
            netns.create("two").unwrap();
            let dir = fs::canonicalize(&d).unwrap();
            let count = fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .lines()
                .filter(|l| l.split(' ').nth(4).map(Path::new) == Some(dir.as_path()))
                .count();
            assert_eq!(count, 1);
        },
    );
}

#[test]
fn a_taken_name_is_refused_and_removal_is_idempotent() {
    in_private_namespaces("a_taken_name_is_refused_and_removal_is_idempotent", |dir| {
        let netns = NetnsDir::new(dir.join("netns"));
        let ns = netns.create("pod").unwrap();
        let e = netns.create("pod").unwrap_err();
        assert!(matches!(e, NetnsError::Exists { .. }), "{e:?}");
        // The refusal did not touch the existing one.
        assert!(is_namespace(ns.path()));

        ns.remove().unwrap();
        assert!(!ns.path().exists());
        assert!(mount_tags(ns.path().parent().unwrap()).is_some());
        ns.remove().unwrap();
        netns.remove("pod").unwrap();

        // The name can be used again, for a new namespace.
        let again = netns.create("pod").unwrap();
        assert!(is_namespace(again.path()));
        // A removal whose unlink did not happen (a crash) is finished by the next.
        nix::mount::umount2(again.path(), nix::mount::MntFlags::MNT_DETACH).unwrap();
        assert!(again.path().exists() && !is_namespace(again.path()));
        again.remove().unwrap();
        assert!(!again.path().exists());
    });
}

#[test]
fn a_namespace_mounted_twice_is_fully_removed() {
    in_private_namespaces("a_namespace_mounted_twice_is_fully_removed", |dir| {
        let netns = NetnsDir::new(dir.join("netns"));
        let ns = netns.create("pod").unwrap();
        nix::mount::mount(
            Some(ns.path()),
            ns.path(),
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        ns.remove().unwrap();
        assert!(!ns.path().exists());
    });
}
