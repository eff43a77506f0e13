use std::collections::HashMap;
use std::fs;

use k8s_cri::v1::{
    Capability, ContainerMetadata, Device, Int64Value, KeyValue, LinuxContainerConfig,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, SeLinuxOption,
};

use super::*;
use crate::state::PodState;

struct Fixture {
    tmp: tempfile::TempDir,
    pod: PodRecord,
    paths: PodPaths,
    image: ImageConfiguration,
}

fn image(entry: &[&str], cmd: &[&str], user: &str) -> ImageConfiguration {
    serde_json::from_value(json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entry, "Cmd": cmd, "Env": ["PATH=/bin", "A=image"],
                   "User": user, "WorkingDir": "/work"},
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap()
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:u:/home/user:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nuser:x:1000:\nvideo:x:44:user\naudio:x:29:user\n",
    )
    .unwrap();
    let state = tmp.path().join("pod-state");
    fs::create_dir_all(&state).unwrap();
    for f in ["hostname", "hosts", "resolv.conf"] {
        fs::write(state.join(f), "x\n").unwrap();
    }
    let pod = PodRecord {
        id: "pod1".into(),
        config: PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                uid: "uid-1".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: "web-0".into(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: "/kubepods/pod-uid-1".into(),
                sysctls: HashMap::from([("net.ipv4.ip_forward".into(), "1".into())]),
                ..Default::default()
            }),
            ..Default::default()
        },
        runtime_handler: String::new(),
        created_at: 1,
        state: PodState::Ready,
        ips: vec![],
        own_netns: true,
        netns: Some(tmp.path().join("netns/pod1")),
        pause_pid: 1,
        made: true,
    };
    Fixture {
        paths: PodPaths {
            run: tmp.path().join("pod-run"),
            state,
        },
        pod,
        image: image(&["/entry"], &["default-cmd"], ""),
        tmp,
    }
}

fn config() -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        ..Default::default()
    }
}

fn with_sc(mut c: ContainerConfig, sc: LinuxContainerSecurityContext) -> ContainerConfig {
    c.linux = Some(LinuxContainerConfig {
        resources: c.linux.take().and_then(|l| l.resources),
        security_context: Some(sc),
    });
    c
}

fn make(f: &Fixture, c: &ContainerConfig) -> Result<Value> {
    make_with(f, c, None)
}

fn make_with(f: &Fixture, c: &ContainerConfig, target_pid: Option<i32>) -> Result<Value> {
    let rootfs = f.tmp.path().join("rootfs");
    container_spec(&Input {
        id: "c1",
        config: c,
        pod: &f.pod,
        pod_paths: &f.paths,
        image: &f.image,
        rootfs: &rootfs,
        target_pid,
        volumes: &[],
        cgroups_path: "/kubepods/pod-uid-1/c1".into(),
    })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn command_and_args_follow_kubernetes_over_entrypoint_and_cmd() {
    let f = fixture();
    let mut c = config();
    assert_eq!(process_args(&c, &f.image), ["/entry", "default-cmd"]);
    c.args = vec!["a1".into()];
    assert_eq!(process_args(&c, &f.image), ["/entry", "a1"]);
    c.command = vec!["/cmd".into()];
    assert_eq!(process_args(&c, &f.image), ["/cmd", "a1"]);
    c.args.clear();
    assert_eq!(
        process_args(&c, &f.image),
        ["/cmd"],
        "command drops the image's Cmd"
    );
    let empty = image(&[], &[], "");
    let err = container_spec(&Input {
        id: "c1",
        config: &config(),
        pod: &f.pod,
        pod_paths: &f.paths,
        image: &empty,
        rootfs: &f.tmp.path().join("rootfs"),
        target_pid: None,
        volumes: &[],
        cgroups_path: String::new(),
    })
    .unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument(ref m) if m.contains("\"app\"") && m.contains("no command")),
        "{err}"
    );
}

#[test]
fn env_workdir_and_defaults() {
    let f = fixture();
    let mut c = config();
    c.envs = vec![KeyValue {
        key: "A".into(),
        value: "config".into(),
    }];
    let s = make(&f, &c).unwrap();
    let env = strings(&s["process"]["env"]);
    assert!(env.contains(&"A=config".to_string()), "{env:?}");
    assert!(!env.contains(&"A=image".to_string()));
    assert!(env.contains(&"HOSTNAME=web-0".to_string()));
    assert!(
        env.contains(&"PATH=/bin".to_string()),
        "the image's PATH wins"
    );
    assert_eq!(s["process"]["cwd"], "/work");
    assert_eq!(s["process"]["user"]["uid"], 0);
    assert_eq!(s["linux"]["cgroupsPath"], "/kubepods/pod-uid-1/c1");
    assert_eq!(s["linux"]["sysctl"]["net.ipv4.ip_forward"], "1");
    assert_eq!(s["annotations"]["io.kubernetes.cri.sandbox-id"], "pod1");
    assert_eq!(
        s["annotations"]["io.kubernetes.cri.container-type"],
        "container"
    );
    assert_eq!(strings(&s["linux"]["maskedPaths"]), MASKED_PATHS);
    assert!(
        s["linux"].get("seccomp").is_none(),
        "the CRI's default is unconfined"
    );
}

#[test]
fn capabilities_add_drop_all_and_unknown() {
    let f = fixture();
    let s = make(&f, &config()).unwrap();
    let mut want: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(strings(&s["process"]["capabilities"]["bounding"]), want);
    assert_eq!(strings(&s["process"]["capabilities"]["effective"]), want);

    let c = with_sc(
        config(),
        LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_capabilities: vec!["NET_ADMIN".into()],
                drop_capabilities: vec!["ALL".into()],
                add_ambient_capabilities: vec![],
            }),
            ..Default::default()
        },
    );
    let s = make(&f, &c).unwrap();
    assert_eq!(
        strings(&s["process"]["capabilities"]["bounding"]),
        ["CAP_NET_ADMIN"]
    );

    let c = with_sc(
        config(),
        LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_capabilities: vec!["CAP_FLY".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let err = make(&f, &c).unwrap_err();
    assert!(err.to_string().contains("CAP_FLY"), "{err}");
}

#[test]
fn privileged_needs_a_privileged_pod_and_gets_every_capability() {
    let mut f = fixture();
    let c = with_sc(
        config(),
        LinuxContainerSecurityContext {
            privileged: true,
            seccomp: Some(SecurityProfile {
                profile_type: ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        },
    );
    let err = make(&f, &c).unwrap_err();
    assert!(err.to_string().contains("privileged"), "{err}");
    f.pod.config.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
        privileged: true,
        ..Default::default()
    });
    let s = make(&f, &c).unwrap();
    let caps = strings(&s["process"]["capabilities"]["bounding"]);
    assert!(caps.contains(&"CAP_SYS_ADMIN".to_string()), "{caps:?}");
    // Exactly what this process may hold: a host without CAP_SYS_RESOURCE (this
    // machine) must not hand it to the container, or its capset fails.
    let mut held: Vec<String> = caps::read(None, caps::CapSet::Bounding)
        .unwrap()
        .into_iter()
        .map(|c| c.to_string())
        .collect();
    held.sort();
    assert_eq!(caps, held);
    assert!(
        s["linux"].get("seccomp").is_none(),
        "privileged: no seccomp"
    );
    assert!(s["linux"].get("maskedPaths").is_none());
    let sys = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/sys")
        .unwrap();
    assert!(!strings(&sys["options"]).contains(&"ro".to_string()));
}

#[test]
fn users_groups_and_their_capabilities() {
    let f = fixture();
    let c = with_sc(
        config(),
        LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            supplemental_groups: vec![5555],
            ..Default::default()
        },
    );
    let s = make(&f, &c).unwrap();
    assert_eq!(s["process"]["user"]["uid"], 1000);
    assert_eq!(s["process"]["user"]["gid"], 1000);
    assert_eq!(
        s["process"]["user"]["additionalGids"],
        json!([29, 44, 5555])
    );
    assert_eq!(s["process"]["capabilities"]["effective"], json!([]));
    assert!(!s["process"]["capabilities"]["bounding"]
        .as_array()
        .unwrap()
        .is_empty());

    let c = with_sc(
        config(),
        LinuxContainerSecurityContext {
            run_as_username: "user".into(),
            run_as_group: Some(Int64Value { value: 44 }),
            ..Default::default()
        },
    );
    let s = make(&f, &c).unwrap();
    assert_eq!(
        (&s["process"]["user"]["uid"], &s["process"]["user"]["gid"]),
        (&json!(1000), &json!(44))
    );

    let c = with_sc(
        config(),
        LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 44 }),
            ..Default::default()
        },
    );
    let err = make(&f, &c).unwrap_err();
    assert!(err.to_string().contains("run_as_group"), "{err}");

    let c = with_sc(
        config(),
        LinuxContainerSecurityContext {
            run_as_username: "nobody-here".into(),
            ..Default::default()
        },
    );
    let err = make(&f, &c).unwrap_err();
    assert!(err.to_string().contains("nobody-here"), "{err}");
}

#[test]
fn namespaces_follow_the_pod_and_the_container_options() {
    let mut f = fixture();
    let s = make(&f, &config()).unwrap();
    let ns = s["linux"]["namespaces"].as_array().unwrap().clone();
    let path = |ns: &[Value], t: &str| {
        ns.iter()
            .find(|n| n["type"] == t)
            .map(|n| n["path"].as_str().unwrap_or("").to_string())
    };
    let pinned = |k: &str| f.paths.run.join("ns").join(k).display().to_string();
    assert_eq!(
        path(&ns, "network"),
        Some(f.tmp.path().join("netns/pod1").display().to_string())
    );
    assert_eq!(path(&ns, "ipc"), Some(pinned("ipc")));
    assert_eq!(path(&ns, "uts"), Some(pinned("uts")));
    assert_eq!(path(&ns, "pid"), Some(pinned("pid")));
    assert_eq!(path(&ns, "mount"), Some(String::new()));

    // Host network and IPC, container PID.
    f.pod.config.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
        namespace_options: Some(NamespaceOption {
            network: NamespaceMode::Node as i32,
            ipc: NamespaceMode::Node as i32,
            pid: NamespaceMode::Container as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let c = with_sc(
        config(),
        LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Node as i32,
                ipc: NamespaceMode::Node as i32,
                pid: NamespaceMode::Container as i32,
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let s = make(&f, &c).unwrap();
    let ns = s["linux"]["namespaces"].as_array().unwrap().clone();
    assert_eq!(path(&ns, "network"), None);
    assert_eq!(path(&ns, "uts"), None);
    assert_eq!(path(&ns, "ipc"), None);
    assert_eq!(path(&ns, "pid"), Some(String::new()), "a new one");
    let shm = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/dev/shm")
        .unwrap();
    assert_eq!(shm["source"], "/dev/shm", "host IPC: the host's /dev/shm");

    // TARGET: the target's pid namespace, and an error without it.
    let c = with_sc(
        config(),
        LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: NamespaceMode::Target as i32,
                target_id: "t".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let s = make_with(&f, &c, Some(4242)).unwrap();
    let ns = s["linux"]["namespaces"].as_array().unwrap().clone();
    assert_eq!(path(&ns, "pid"), Some("/proc/4242/ns/pid".into()));
    let err = make_with(&f, &c, None).unwrap_err();
    assert!(err.to_string().contains("TARGET"), "{err}");
}

#[test]
fn mounts_resolve_links_and_take_propagation_and_readonly() {
    let f = fixture();
    let host = f.tmp.path().join("data");
    fs::create_dir_all(&host).unwrap();
    std::os::unix::fs::symlink(&host, f.tmp.path().join("link")).unwrap();
    let mut c = config();
    c.mounts = vec![
        Mount {
            container_path: "/data".into(),
            host_path: f.tmp.path().join("link").display().to_string(),
            readonly: true,
            propagation: MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        },
        Mount {
            container_path: "/etc/hosts".into(),
            host_path: f.tmp.path().join("data").display().to_string(),
            ..Default::default()
        },
    ];
    let s = make(&f, &c).unwrap();
    let mounts = s["mounts"].as_array().unwrap();
    let data = mounts.iter().find(|m| m["destination"] == "/data").unwrap();
    assert_eq!(data["source"], json!(host));
    assert_eq!(strings(&data["options"]), ["rbind", "rslave", "ro"]);
    let hosts: Vec<_> = mounts
        .iter()
        .filter(|m| m["destination"] == "/etc/hosts")
        .collect();
    assert_eq!(hosts.len(), 1, "the config's mount replaces the pod's file");
    assert_eq!(hosts[0]["source"], json!(host));
    let resolv = mounts
        .iter()
        .find(|m| m["destination"] == "/etc/resolv.conf")
        .unwrap();
    assert_eq!(resolv["source"], json!(f.paths.state.join("resolv.conf")));

    c.mounts = vec![Mount {
        container_path: "/x".into(),
        host_path: "/no/such/berth/path".into(),
        ..Default::default()
    }];
    let err = make(&f, &c).unwrap_err();
    assert!(err.to_string().contains("/no/such/berth/path"), "{err}");
    c.mounts = vec![Mount {
        container_path: "/x".into(),
        host_path: host.display().to_string(),
        propagation: MountPropagation::PropagationBidirectional as i32,
        ..Default::default()
    }];
    let err = make(&f, &c).unwrap_err();
    assert!(err.to_string().contains("bidirectional"), "{err}");
}

#[test]
fn seccomp_profiles() {
    let f = fixture();
    let p = |t: ProfileType, r: &str| {
        with_sc(
            config(),
            LinuxContainerSecurityContext {
                seccomp: Some(SecurityProfile {
                    profile_type: t as i32,
                    localhost_ref: r.into(),
                }),
                ..Default::default()
            },
        )
    };
    let s = make(&f, &p(ProfileType::RuntimeDefault, "")).unwrap();
    assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    let s = make(&f, &p(ProfileType::Unconfined, "")).unwrap();
    assert!(s["linux"].get("seccomp").is_none());
    let profile = f.tmp.path().join("profile.json");
    fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let s = make(&f, &p(ProfileType::Localhost, profile.to_str().unwrap())).unwrap();
    assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
    let err = make(&f, &p(ProfileType::Localhost, "/no/such/profile.json")).unwrap_err();
    assert!(err.to_string().contains("/no/such/profile.json"), "{err}");
    let err = make(&f, &p(ProfileType::Localhost, "relative.json")).unwrap_err();
    assert!(err.to_string().contains("absolute"), "{err}");
    #[allow(deprecated)]
    let c = with_sc(
        config(),
        LinuxContainerSecurityContext {
            seccomp_profile_path: "docker/default".into(),
            ..Default::default()
        },
    );
    let s = make(&f, &c).unwrap();
    assert!(s["linux"].get("seccomp").is_some());
}

#[test]
fn selinux_and_apparmor_requests_fail_clearly_without_them() {
    let f = fixture();
    let c = with_sc(
        config(),
        LinuxContainerSecurityContext {
            selinux_options: Some(SeLinuxOption {
                level: "s0:c1,c2".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let err = make(&f, &c).unwrap_err();
    assert!(
        matches!(err, Error::FailedPrecondition(ref m) if m.contains("SELinux")),
        "{err}"
    );
    let c = with_sc(
        config(),
        LinuxContainerSecurityContext {
            apparmor: Some(SecurityProfile {
                profile_type: ProfileType::Localhost as i32,
                localhost_ref: "my-profile".into(),
            }),
            ..Default::default()
        },
    );
    let err = make(&f, &c).unwrap_err();
    assert!(
        matches!(err, Error::FailedPrecondition(ref m) if m.contains("AppArmor")),
        "{err}"
    );
}

#[test]
fn resources_devices_and_oom_score() {
    let f = fixture();
    let mut c = config();
    c.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0".into(),
            oom_score_adj: 500,
            ..Default::default()
        }),
        security_context: None,
    });
    c.devices = vec![Device {
        container_path: "/dev/mynull".into(),
        host_path: "/dev/null".into(),
        permissions: "rw".into(),
    }];
    let s = make(&f, &c).unwrap();
    let r = &s["linux"]["resources"];
    assert_eq!(r["cpu"]["shares"], 512);
    assert_eq!(r["cpu"]["quota"], 50_000);
    assert_eq!(r["cpu"]["cpus"], "0");
    assert_eq!(r["memory"]["limit"], 64 << 20);
    assert_eq!(s["process"]["oomScoreAdj"], 500);
    assert_eq!(s["linux"]["devices"][0]["path"], "/dev/mynull");
    assert_eq!(s["linux"]["devices"][0]["major"], 1);
    assert_eq!(s["linux"]["devices"][0]["minor"], 3);
    let rules = r["devices"].as_array().unwrap();
    assert_eq!(rules.last().unwrap()["access"], "rw");
    c.devices[0].host_path = "/etc/hostname".into();
    assert!(make(&f, &c)
        .unwrap_err()
        .to_string()
        .contains("not a character"));
    assert_eq!(oom_score_adj(-2000), oom_score_adj(-1000));
    assert_eq!(oom_score_adj(2000), 1000);
}
