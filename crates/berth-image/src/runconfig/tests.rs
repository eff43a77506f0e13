use super::*;
use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

fn image(entry: Option<&[&str]>, cmd: Option<&[&str]>, env: &[&str]) -> ImageConfiguration {
    let mut c = ConfigBuilder::default().build().unwrap();
    c.set_entrypoint(entry.map(|e| e.iter().map(|s| s.to_string()).collect()));
    c.set_cmd(cmd.map(|e| e.iter().map(|s| s.to_string()).collect()));
    c.set_env(Some(env.iter().map(|s| s.to_string()).collect()));
    c.set_working_dir(Some("/srv".into()));
    c.set_volumes(Some(vec!["/data".into(), "/cache".into()]));
    c.set_stop_signal(Some("SIGQUIT".into()));
    ImageConfigurationBuilder::default()
        .config(c)
        .build()
        .unwrap()
}

fn opts() -> RunOptions {
    RunOptions {
        command: vec![],
        entrypoint: None,
        env: vec![],
        workdir: None,
        tty: false,
        hostname: "h".into(),
        binds: vec![],
        network: Network::None,
        memory: None,
        cpus: None,
        pids_limit: None,
        nofile: 1024,
        seccomp: true,
        cgroups_path: None,
    }
}

fn root() -> ResolvedUser {
    ResolvedUser {
        uid: 0,
        gid: 0,
        additional_gids: vec![],
        home: Some("/root".into()),
    }
}

#[test]
fn entrypoint_and_cmd_follow_dockers_rules() {
    let img = image(Some(&["/entry", "-x"]), Some(&["default"]), &[]);
    let mut o = opts();
    assert_eq!(process_args(&img, &o).unwrap(), ["/entry", "-x", "default"]);
    o.command = vec!["mine".into()];
    assert_eq!(process_args(&img, &o).unwrap(), ["/entry", "-x", "mine"]);
    o.entrypoint = Some(vec!["/other".into()]);
    assert_eq!(process_args(&img, &o).unwrap(), ["/other", "mine"]);
    o.command.clear();
    assert_eq!(
        process_args(&img, &o).unwrap(),
        ["/other"],
        "a new entrypoint drops the image's Cmd"
    );
    o.entrypoint = Some(vec![]);
    assert!(matches!(
        process_args(&img, &o),
        Err(RunConfigError::NoCommand)
    ));
    let bare = image(None, None, &[]);
    assert!(matches!(
        process_args(&bare, &opts()),
        Err(RunConfigError::NoCommand)
    ));
}

#[test]
fn env_layers_image_then_user() {
    let img = image(None, Some(&["sh"]), &["PATH=/img/bin", "A=1", "B=2"]);
    let mut o = opts();
    o.env = vec!["B=3".into(), "C=4".into()];
    let env = process_env(&img, &o, &root());
    assert!(env.contains(&"PATH=/img/bin".to_string()), "{env:?}");
    assert!(env.contains(&"A=1".to_string()) && env.contains(&"B=3".to_string()));
    assert!(!env.contains(&"B=2".to_string()));
    assert!(env.contains(&"HOME=/root".to_string()) && env.contains(&"HOSTNAME=h".to_string()));
    assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
}

#[test]
fn the_config_carries_defaults_and_limits() {
    let img = image(None, Some(&["sh"]), &[]);
    let mut o = opts();
    o.memory = Some(64 << 20);
    o.cpus = Some(1.5);
    o.pids_limit = Some(100);
    o.binds = vec![Bind {
        source: "/host".into(),
        destination: "/in".into(),
        readonly: true,
    }];
    let user = ResolvedUser {
        uid: 1000,
        gid: 1000,
        additional_gids: vec![10],
        home: None,
    };
    let s = runtime_config(&img, &o, &user, std::path::Path::new("/r"), &[]).unwrap();
    assert_eq!(s["process"]["cwd"], "/srv");
    assert_eq!(s["process"]["user"]["uid"], 1000);
    assert_eq!(s["process"]["user"]["additionalGids"], json!([10]));
    assert_eq!(
        s["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .len(),
        DEFAULT_CAPS.len()
    );
    assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 << 20);
    assert_eq!(s["linux"]["resources"]["cpu"]["quota"], 150000);
    assert_eq!(s["linux"]["resources"]["pids"]["limit"], 100);
    assert!(s["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!({"type": "network"})));
    assert!(s["linux"]["seccomp"]["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["action"] == "SCMP_ACT_ERRNO"
            && r["errnoRet"] == libc::EPERM
            && r["names"].as_array().unwrap().contains(&json!("mount"))));
    let bind = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/in")
        .unwrap();
    assert_eq!(bind["options"], json!(["rbind", "nosuid", "nodev", "ro"]));
    assert_eq!(s["root"]["path"], "/r");
    o.network = Network::Host;
    o.workdir = Some("/w".into());
    let s = runtime_config(&img, &o, &root(), std::path::Path::new("/r"), &[]).unwrap();
    assert!(!s["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!({"type": "network"})));
    assert_eq!(s["process"]["cwd"], "/w");
}

#[test]
fn bad_limits_are_refused() {
    let img = image(None, Some(&["sh"]), &[]);
    let mut o = opts();
    o.cpus = Some(0.0);
    assert!(matches!(
        runtime_config(&img, &o, &root(), std::path::Path::new("/r"), &[]),
        Err(RunConfigError::BadCpus(_))
    ));
    let mut o = opts();
    o.memory = Some(1024);
    assert!(matches!(
        runtime_config(&img, &o, &root(), std::path::Path::new("/r"), &[]),
        Err(RunConfigError::BadMemory(_))
    ));
    let mut o = opts();
    o.binds = vec![Bind {
        source: "/h".into(),
        destination: "rel".into(),
        readonly: false,
    }];
    assert!(matches!(
        runtime_config(&img, &o, &root(), std::path::Path::new("/r"), &[]),
        Err(RunConfigError::BadBind(_))
    ));
}

#[test]
fn stop_signal_and_volumes() {
    let img = image(None, Some(&["sh"]), &[]);
    assert_eq!(stop_signal(&img).as_deref(), Some("SIGQUIT"));
    assert_eq!(volumes(&img), ["/cache", "/data"]);
}

#[test]
fn the_seccomp_allow_and_deny_lists_are_apart() {
    use std::collections::BTreeSet;
    let allow: BTreeSet<&str> = SECCOMP_ALLOW.iter().copied().collect();
    let deny: BTreeSet<&str> = SECCOMP_DENY.iter().copied().collect();
    assert_eq!(
        allow.len(),
        SECCOMP_ALLOW.len(),
        "no name twice in the allow list"
    );
    assert_eq!(
        deny.len(),
        SECCOMP_DENY.len(),
        "no name twice in the deny list"
    );
    assert_eq!(
        allow.intersection(&deny).count(),
        0,
        "{:?}",
        allow.intersection(&deny)
    );
    // These have rules with arguments of their own.
    for n in ["clone", "clone3", "personality"] {
        assert!(!allow.contains(n) && !deny.contains(n), "{n}");
    }
    // The calls docker refuses without capabilities are not allowed.
    for n in [
        "mount",
        "unshare",
        "setns",
        "bpf",
        "ptrace",
        "init_module",
        "io_uring_setup",
    ] {
        assert!(!allow.contains(n), "{n}");
    }
    let p = default_seccomp();
    assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(p["defaultErrnoRet"], libc::ENOSYS);
}

#[test]
fn unknown_syscall_names_are_left_out_of_the_profile() {
    let mut spec = json!({"linux": {"seccomp": {"syscalls": [
        {"names": ["read", "brand_new_call"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["brand_new_call"], "action": "SCMP_ACT_ERRNO"}
    ]}}});
    retain_known_syscalls(&mut spec, |n| n != "brand_new_call");
    assert_eq!(
        spec,
        json!({"linux": {"seccomp": {"syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"}
        ]}}})
    );
    // Without a profile, nothing is added.
    let mut spec = json!({"linux": {}});
    retain_known_syscalls(&mut spec, |_| false);
    assert_eq!(spec, json!({"linux": {}}));
}
