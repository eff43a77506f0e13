//! The CRI security context as containers get it: privileged, capabilities, seccomp
//! profiles by capability, and mount propagation both ways. Root only.

mod common;

use std::fs;

use common::*;
use k8s_cri::v1::*;

/// The `CapBnd` mask of `/proc/self/status` as ExecSync in `ctr` sees it.
fn cap_bnd(b: &Berthd, ctr: &str) -> u64 {
    let r = b.exec_sync(ctr, &["cat", "/proc/self/status"], 10).unwrap();
    let text = String::from_utf8_lossy(&r.stdout).to_string();
    let hex = text
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap_or_else(|| panic!("no CapBnd in {text}"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

/// This process's own bounding set, as the same mask.
fn own_cap_bnd() -> u64 {
    caps::read(None, caps::CapSet::Bounding)
        .unwrap()
        .into_iter()
        .fold(0, |m, c| m | c.bitmask())
}

#[test]
fn security_contexts_privileged_capabilities_and_seccomp() {
    if skip_unless_root("security_contexts_privileged_capabilities_and_seccomp") {
        return;
    }
    let b = Berthd::start();
    let logs = b.dir.path().join("logs");
    let mut pc = pod_config("secctx", &logs);
    pc.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .privileged = true;
    let pod = b.run_pod(&pc).unwrap();
    let block_hostname = b.dir.path().join("block-hostname.json");
    fs::write(
        &block_hostname,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sethostname"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let localhost = Some(SecurityProfile {
        profile_type: security_profile::ProfileType::Localhost as i32,
        localhost_ref: block_hostname.display().to_string(),
    });
    let unconfined = Some(SecurityProfile {
        profile_type: security_profile::ProfileType::Unconfined as i32,
        localhost_ref: String::new(),
    });
    let run = |name: &str, sc: LinuxContainerSecurityContext| -> String {
        let mut cc = container_config(name, "exec sleep 1000");
        cc.linux = Some(LinuxContainerConfig {
            security_context: Some(sc),
            ..Default::default()
        });
        let id = b.create(&pod, &cc, &pc).unwrap();
        b.start_ctr(&id).unwrap();
        id
    };
    let sethostname = |ctr: &str| b.exec_sync(ctr, &["hostname", "ANewHostName"], 10).unwrap();

    // Privileged: every capability berthd holds (this host lacks CAP_SYS_RESOURCE, so
    // "every capability the kernel knows" would fail capset), and no seccomp at all,
    // even with a profile that blocks sethostname.
    let privileged = run(
        "privileged",
        LinuxContainerSecurityContext {
            privileged: true,
            seccomp: localhost.clone(),
            ..Default::default()
        },
    );
    assert_eq!(cap_bnd(&b, &privileged), own_cap_bnd());
    let r = sethostname(&privileged);
    assert_eq!(r.exit_code, 0, "{r:?}");

    // Adding "ALL" is the same set.
    let all = run(
        "all",
        LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_capabilities: vec!["ALL".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    assert_eq!(cap_bnd(&b, &all), own_cap_bnd());

    // SYS_ADMIN allows sethostname (the pod's own UTS namespace); a profile blocks it.
    let sys_admin = Some(Capability {
        add_capabilities: vec!["SYS_ADMIN".into()],
        ..Default::default()
    });
    let open = run(
        "sysadmin",
        LinuxContainerSecurityContext {
            capabilities: sys_admin.clone(),
            seccomp: unconfined,
            ..Default::default()
        },
    );
    let r = sethostname(&open);
    assert_eq!(r.exit_code, 0, "{r:?}");
    let blocked = run(
        "blocked",
        LinuxContainerSecurityContext {
            capabilities: sys_admin,
            seccomp: localhost,
            ..Default::default()
        },
    );
    let r = sethostname(&blocked);
    assert_ne!(r.exit_code, 0, "{r:?}");
    // The built-in profile grants what a capability allows, as docker's does: with
    // SYS_ADMIN added, sethostname passes it.
    let runtime_default = Some(SecurityProfile {
        profile_type: security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    let default_admin = run(
        "default-admin",
        LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_capabilities: vec!["SYS_ADMIN".into()],
                ..Default::default()
            }),
            seccomp: runtime_default.clone(),
            ..Default::default()
        },
    );
    let r = sethostname(&default_admin);
    assert_eq!(r.exit_code, 0, "{r:?}");
    let default_plain = run(
        "default-plain",
        LinuxContainerSecurityContext {
            seccomp: runtime_default,
            ..Default::default()
        },
    );
    let r = sethostname(&default_plain);
    assert_ne!(r.exit_code, 0, "{r:?}");
    // Default capabilities hold no SYS_ADMIN: the call is refused by the kernel.
    let plain = run("plain", LinuxContainerSecurityContext::default());
    let r = sethostname(&plain);
    assert_ne!(r.exit_code, 0, "{r:?}");
    b.stop_pod(&pod).unwrap();
    b.remove_pod(&pod).unwrap();
}

#[test]
fn mount_propagation_both_ways_and_host_to_container() {
    if skip_unless_root("mount_propagation_both_ways_and_host_to_container") {
        return;
    }
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let b = Berthd::start();
    let logs = b.dir.path().join("logs");
    let mut pc = pod_config("propagation", &logs);
    pc.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .privileged = true;
    let pod = b.run_pod(&pc).unwrap();
    /// Detaches a volume (and what was mounted below it) however the test ends.
    struct Detach(std::path::PathBuf);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = umount2(&self.0, MntFlags::MNT_DETACH);
        }
    }
    let mut cases = Vec::new();
    let mut volumes = Vec::new();
    for (name, flag, prop) in [
        (
            "shared",
            MsFlags::MS_SHARED,
            MountPropagation::PropagationBidirectional,
        ),
        (
            "slave",
            MsFlags::MS_SHARED,
            MountPropagation::PropagationHostToContainer,
        ),
    ] {
        // As the kubelet's volume: a bind of itself with the propagation set.
        let src = b.dir.path().join(format!("vol-{name}"));
        fs::create_dir_all(src.join("from-host")).unwrap();
        mount(
            Some(&src),
            &src,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap();
        volumes.push(Detach(src.clone()));
        mount(
            None::<&str>,
            &src,
            None::<&str>,
            flag | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap();
        let mut cc = container_config(name, "exec sleep 1000");
        cc.mounts = vec![Mount {
            container_path: src.display().to_string(),
            host_path: src.display().to_string(),
            propagation: prop as i32,
            ..Default::default()
        }];
        cc.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        });
        let ctr = b.create(&pod, &cc, &pc).unwrap();
        b.start_ctr(&ctr).unwrap();
        cases.push((name, src, ctr));
    }
    for (name, src, ctr) in &cases {
        // Host to container: a mount made on the host after the start shows inside.
        let tmp = src.join("from-host");
        mount(
            Some("tmpfs"),
            &tmp,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        fs::write(tmp.join("flag"), "host").unwrap();
        let r = b
            .exec_sync(ctr, &["cat", &tmp.join("flag").display().to_string()], 10)
            .unwrap();
        assert_eq!(r.stdout, b"host", "{name}: {r:?}");
        // Container to host: only the bidirectional mount carries it back.
        let inner = src.join("from-container");
        let script = format!("mkdir -p {0} && mount --bind /etc {0}", inner.display());
        let r = b.exec_sync(ctr, &["sh", "-c", &script], 10).unwrap();
        assert_eq!(r.exit_code, 0, "{name}: {r:?}");
        let seen = inner.join("passwd").exists();
        assert_eq!(
            seen,
            *name == "shared",
            "{name}: the container's mount on the host"
        );
        let _ = umount2(&inner, MntFlags::MNT_DETACH);
        let _ = umount2(&tmp, MntFlags::MNT_DETACH);
    }
    b.remove_pod(&pod).unwrap();
    drop(volumes);
}
