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
    assert!(s["linux"]["seccomp"]["syscalls"][0]["names"]
        .as_array()
        .unwrap()
        .contains(&json!("mount")));
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
