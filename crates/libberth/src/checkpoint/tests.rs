//! Unit tests of checkpoint/restore: criu arguments, flag parsing, log lines.

use super::*;

fn strings(args: &[OsString]) -> Vec<String> {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

fn has_pair(args: &[String], a: &str, b: &str) -> bool {
    args.windows(2).any(|w| w[0] == a && w[1] == b)
}

fn common() -> CriuCommon {
    CriuCommon {
        image_path: PathBuf::from("/img"),
        ..CriuCommon::default()
    }
}

#[test]
fn only_running_and_paused_can_be_checkpointed() {
    checkpointable(Status::Running).unwrap();
    checkpointable(Status::Paused).unwrap();
    for s in [Status::Creating, Status::Created, Status::Stopped] {
        let e = checkpointable(s).unwrap_err().to_string();
        assert_eq!(e, format!("container cannot be checkpointed in {s} state"));
    }
}

#[test]
fn cgroups_modes_parse_as_runc_names_them() {
    assert_eq!(CgroupsMode::parse("").unwrap(), CgroupsMode::Default);
    assert_eq!(CgroupsMode::parse("soft").unwrap(), CgroupsMode::Soft);
    assert_eq!(CgroupsMode::parse("full").unwrap(), CgroupsMode::Full);
    assert_eq!(CgroupsMode::parse("strict").unwrap(), CgroupsMode::Strict);
    assert_eq!(CgroupsMode::parse("ignore").unwrap(), CgroupsMode::Ignore);
    let e = CgroupsMode::parse("props").unwrap_err().to_string();
    assert!(
        e.contains("--manage-cgroups-mode") && e.contains("props"),
        "{e}"
    );
}

#[test]
fn empty_ns_takes_only_network() {
    check_empty_ns(&[]).unwrap();
    check_empty_ns(&["network".into()]).unwrap();
    let e = check_empty_ns(&["network".into(), "ipc".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--empty-ns") && e.contains("ipc"), "{e}");
}

#[test]
fn page_server_addresses() {
    assert_eq!(
        PageServer::parse("10.0.0.1:27").unwrap(),
        PageServer {
            address: "10.0.0.1".into(),
            port: 27
        }
    );
    assert_eq!(PageServer::parse("[::1]:9").unwrap().address, "::1");
    for bad in ["host", ":1", "host:", "host:port", "host:70000"] {
        assert!(PageServer::parse(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn parent_path_must_be_relative_and_status_fd_needs_lazy_pages() {
    let mut o = CheckpointOptions {
        parent_path: Some(PathBuf::from("/abs")),
        ..CheckpointOptions::default()
    };
    assert!(o
        .validate()
        .unwrap_err()
        .to_string()
        .contains("--parent-path"));
    o.parent_path = Some(PathBuf::from("../pre"));
    o.validate().unwrap();
    o.status_fd = Some(1);
    assert!(o
        .validate()
        .unwrap_err()
        .to_string()
        .contains("--lazy-pages"));
}

#[test]
fn container_paths_are_clean_and_absolute() {
    assert_eq!(container_path(Path::new("a/./b//c")), Path::new("/a/b/c"));
    assert_eq!(
        container_path(Path::new("/../../etc/x")),
        Path::new("/etc/x")
    );
    assert_eq!(container_path(Path::new("/a/b/../c")), Path::new("/a/c"));
}

#[test]
fn error_line_is_the_last_and_loses_its_timestamp() {
    let log = "(00.000001) Version: 3.17\n\
               (00.010000) Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds\n\
               (00.020000) Error (criu/crtools.c:260): Could not initialize\n\
               (00.030000) Unlock network\n";
    assert_eq!(
        last_error_line(log).as_deref(),
        Some("Error (criu/crtools.c:260): Could not initialize")
    );
    assert_eq!(last_error_line("all fine\n"), None);
}

#[test]
fn dump_maps_each_flag_to_criu() {
    let o = CheckpointOptions {
        id: "c".into(),
        common: CriuCommon {
            work_path: Some(PathBuf::from("/work")),
            tcp_established: true,
            ext_unix_sk: true,
            shell_job: true,
            file_locks: true,
            cgroups_mode: CgroupsMode::Strict,
            auto_dedup: true,
            lazy_pages: true,
            ..common()
        },
        parent_path: Some(PathBuf::from("../pre")),
        leave_running: true,
        tcp_skip_in_flight: true,
        link_remap: true,
        page_server: Some(PageServer {
            address: "h".into(),
            port: 5,
        }),
        status_fd: Some(7),
        ..CheckpointOptions::default()
    };
    let plan = DumpPlan {
        o: &o,
        pid: 42,
        root: Path::new("/rootfs"),
        mounts: vec![ExtMount {
            key: PathBuf::from("/data"),
            value: PathBuf::from("/data"),
        }],
        external_ns: vec![OsString::from("net[7]:extRootNetNS")],
        freeze_cgroup: Some(PathBuf::from("/sys/fs/cgroup/freezer/c")),
    };
    let a = strings(&dump_args(&plan));
    assert_eq!(&a[..3], ["dump", "-t", "42"]);
    for (x, y) in [
        ("-D", "/img"),
        ("-W", "/work"),
        ("-o", "dump.log"),
        ("--root", "/rootfs"),
        ("--empty-ns", "net"),
        ("--prev-images-dir", "../pre"),
        ("--address", "h"),
        ("--port", "5"),
        ("--status-fd", "7"),
        ("--freeze-cgroup", "/sys/fs/cgroup/freezer/c"),
        ("--external", "net[7]:extRootNetNS"),
        ("--external", "mnt[/data]:/data"),
    ] {
        assert!(has_pair(&a, x, y), "{x} {y} missing from {a:?}");
    }
    for f in [
        "--manage-cgroups=strict",
        "--tcp-established",
        "--ext-unix-sk",
        "--shell-job",
        "--file-locks",
        "--auto-dedup",
        "--lazy-pages",
        "--leave-running",
        "--skip-in-flight",
        "--link-remap",
        "--track-mem",
        "--page-server",
        "-v4",
    ] {
        assert!(a.iter().any(|x| x == f), "{f} missing from {a:?}");
    }
}

#[test]
fn pre_dump_tracks_memory_and_never_stops_the_container() {
    let o = CheckpointOptions {
        common: common(),
        pre_dump: true,
        leave_running: true,
        ..CheckpointOptions::default()
    };
    let plan = DumpPlan {
        o: &o,
        pid: 1,
        root: Path::new("/r"),
        mounts: Vec::new(),
        external_ns: Vec::new(),
        freeze_cgroup: None,
    };
    let a = strings(&dump_args(&plan));
    assert_eq!(a[0], "pre-dump");
    assert!(a.iter().any(|x| x == "--track-mem"));
    assert!(!a.iter().any(|x| x == "--leave-running"), "{a:?}");
    assert!(a.iter().any(|x| x == "--manage-cgroups"), "{a:?}");
}

#[test]
fn restore_maps_flags_pipes_namespaces_and_cgroup_roots() {
    let o = RestoreOptions {
        id: "c".into(),
        common: CriuCommon {
            shell_job: true,
            ..common()
        },
        lsm_profile: Some("apparmor:p".into()),
        lsm_mount_context: Some("ctx".into()),
        ..RestoreOptions::default()
    };
    let plan = RestorePlan {
        o: &o,
        root: Path::new("/state/c/criu-root"),
        pidfile: Path::new("/state/c/criu-restore.pid"),
        mounts: vec![ExtMount {
            key: PathBuf::from("/data"),
            value: PathBuf::from("/host/data"),
        }],
        stdio: vec!["/dev/null", "pipe:[99]", "pipe:[100]"],
        inherit_ns: vec![(9, EXT_NET_KEY)],
        join_ns: vec![("ipc", PathBuf::from("/proc/5/ns/ipc"))],
        cgroup_roots: vec![
            (Some("memory".into()), PathBuf::from("/a/c")),
            (None, PathBuf::from("/b/c")),
        ],
    };
    let a = strings(&restore_args(&plan));
    assert_eq!(a[0], "restore");
    for (x, y) in [
        ("-D", "/img"),
        ("-o", "restore.log"),
        ("--root", "/state/c/criu-root"),
        ("--pidfile", "/state/c/criu-restore.pid"),
        ("--lsm-profile", "apparmor:p"),
        ("--lsm-mount-context", "ctx"),
        ("--cgroup-root", "memory:/a/c"),
        ("--cgroup-root", "/b/c"),
        ("--inherit-fd", "fd[1]:pipe:[99]"),
        ("--inherit-fd", "fd[2]:pipe:[100]"),
        ("--inherit-fd", "fd[9]:extRootNetNS"),
        ("--join-ns", "ipc:/proc/5/ns/ipc"),
        ("--external", "mnt[/data]:/host/data"),
    ] {
        assert!(has_pair(&a, x, y), "{x} {y} missing from {a:?}");
    }
    for f in [
        "--restore-detached",
        "--restore-sibling",
        "--evasive-devices",
        "--shell-job",
    ] {
        assert!(a.iter().any(|x| x == f), "{f} missing from {a:?}");
    }
    assert!(!a.iter().any(|x| x.starts_with("fd[0]")), "{a:?}");
}

#[test]
fn tmpfs_children_are_left_to_criu() {
    let spec: Spec = serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.0",
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
            {"destination": "/data", "type": "bind", "source": "/x", "options": ["rbind"]}
        ]
    }))
    .unwrap();
    let mounts = spec.mounts().as_deref().unwrap();
    assert!(on_tmpfs(Path::new("/dev/pts"), mounts));
    assert!(!on_tmpfs(Path::new("/dev"), mounts));
    assert!(!on_tmpfs(Path::new("/data"), mounts));
    assert!(is_bind(&mounts[2]));
    assert!(!is_bind(&mounts[0]));
}
