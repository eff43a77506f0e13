//! From a CRI ContainerConfig, its pod and its image to the OCI runtime config the shim
//! creates the container from.
//!
//! Defaults follow what the kubelet expects of containerd and CRI-O: docker's default
//! capability set, the default masked and read-only paths (or the kubelet's own lists),
//! the pod's network, IPC, UTS and PID namespaces joined by their pinned paths, the pod's
//! /etc/hostname, /etc/hosts and /etc/resolv.conf, a /dev/shm shared by the pod, and the
//! container's cgroup under the pod's cgroup parent.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_image::passwd::resolve_user;
use berth_image::runconfig::{default_mounts, default_seccomp_for, MASKED_PATHS};
use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{
    ContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext, MountPropagation,
    NamespaceMode, SecurityProfile,
};
use oci_spec::image::ImageConfiguration;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::state::PodRecord;

/// Docker's (and containerd's) default capabilities.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths read-only unless the kubelet gives its own list (containerd's defaults).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Where a container's pod keeps what its containers share.
#[derive(Debug, Clone)]
pub struct PodPaths {
    /// `<run_dir>/pods/<id>`: `ns/{net,ipc,uts,pid}` pinned, `shm` mounted.
    pub run: PathBuf,
    /// `<state_dir>/pods/<id>`: hostname, hosts, resolv.conf.
    pub state: PathBuf,
}

/// Everything a container's config is made from.
pub struct Input<'a> {
    pub id: &'a str,
    pub config: &'a ContainerConfig,
    pub pod: &'a PodRecord,
    pub pod_paths: &'a PodPaths,
    pub image: &'a ImageConfiguration,
    pub rootfs: &'a Path,
    /// The init pid of the target container, for NamespaceMode::Target.
    pub target_pid: Option<i32>,
    /// (container path, host directory) of the image's volumes, made by the caller.
    pub volumes: &'a [(String, PathBuf)],
    /// `cgroupsPath` of the container.
    pub cgroups_path: String,
}

fn invalid(id: &str, name: &str, what: String) -> Error {
    Error::InvalidArgument(format!("container {name:?} ({id}): {what}"))
}

/// The container's name as the kubelet gave it (for messages).
pub fn container_name(c: &ContainerConfig) -> &str {
    c.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("")
}

/// The process arguments, as Kubernetes defines `command` and `args` over the image's
/// Entrypoint and Cmd.
pub fn process_args(c: &ContainerConfig, image: &ImageConfiguration) -> Vec<String> {
    let cfg = image.config().as_ref();
    let entry = cfg.and_then(|c| c.entrypoint().clone()).unwrap_or_default();
    let cmd = cfg.and_then(|c| c.cmd().clone()).unwrap_or_default();
    match (c.command.is_empty(), c.args.is_empty()) {
        (false, _) => c.command.iter().chain(&c.args).cloned().collect(),
        (true, false) => entry.into_iter().chain(c.args.iter().cloned()).collect(),
        (true, true) => entry.into_iter().chain(cmd).collect(),
    }
}

/// The image's Env, the config's envs over it, PATH and HOSTNAME where missing.
pub fn process_env(c: &ContainerConfig, image: &ImageConfiguration, hostname: &str) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    };
    set("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    if !hostname.is_empty() {
        set(format!("HOSTNAME={hostname}"));
    }
    for kv in image
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default()
    {
        set(kv);
    }
    for kv in &c.envs {
        set(format!("{}={}", kv.key, kv.value));
    }
    env
}

/// `CAP_X` from "x", "X", "cap_x" or "CAP_X"; None for a name the kernel does not have.
fn cap_name(s: &str) -> Option<String> {
    let up = s.trim().to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    full.parse::<caps::Capability>().ok().map(|c| c.to_string())
}

/// "Every capability": those in berthd's own bounding set, sorted, as containerd and
/// CRI-O take them. A privileged container cannot hold what its engine lacks (a host
/// without CAP_SYS_RESOURCE would fail its capset); a capability named on its own is
/// still passed through, and the runtime says clearly that it cannot be had.
fn all_caps() -> Vec<String> {
    let held = caps::read(None, caps::CapSet::Bounding).unwrap_or_else(|_| caps::all());
    let mut v: Vec<String> = held.into_iter().map(|c| c.to_string()).collect();
    v.sort();
    v
}

/// The capability set: the defaults (or every one, privileged) with the config's
/// additions and drops ("ALL" stands for every one).
pub fn capabilities(
    id: &str,
    name: &str,
    sc: Option<&LinuxContainerSecurityContext>,
) -> Result<Vec<String>> {
    let all = all_caps();
    let privileged = sc.is_some_and(|s| s.privileged);
    let mut set: BTreeSet<String> = if privileged {
        all.iter().cloned().collect()
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    if let Some(c) = sc.and_then(|s| s.capabilities.as_ref()) {
        let resolve =
            |list: &[String]| -> Result<Vec<String>> {
                let mut out = Vec::new();
                for s in list {
                    if s.eq_ignore_ascii_case("ALL") {
                        out.extend(all.iter().cloned());
                    } else {
                        out.push(cap_name(s).ok_or_else(|| {
                            invalid(id, name, format!("unknown capability {s:?}"))
                        })?);
                    }
                }
                Ok(out)
            };
        // Drops first, then additions: `drop ALL, add NET_ADMIN` keeps NET_ADMIN.
        for d in resolve(&c.drop_capabilities)? {
            set.remove(&d);
        }
        set.extend(resolve(&c.add_capabilities)?);
        set.extend(resolve(&c.add_ambient_capabilities)?);
    }
    Ok(set.into_iter().collect())
}

/// The seccomp section for `profile` (None: unconfined, the CRI's default), with the
/// deprecated path form as a fallback. The built-in profile grants what `caps` (the
/// container's capabilities) allow, as docker's and containerd's do.
pub fn seccomp(
    id: &str,
    name: &str,
    profile: Option<&SecurityProfile>,
    deprecated_path: &str,
    caps: &[String],
) -> Result<Option<Value>> {
    let load = |path: &str| -> Result<Option<Value>> {
        if !path.starts_with('/') {
            return Err(invalid(
                id,
                name,
                format!("seccomp profile {path:?}: a localhost profile must be an absolute path"),
            ));
        }
        let text = std::fs::read(path)
            .map_err(|e| invalid(id, name, format!("seccomp profile {path}: {e}")))?;
        let v: Value = serde_json::from_slice(&text)
            .map_err(|e| invalid(id, name, format!("seccomp profile {path}: {e}")))?;
        serde_json::from_value::<oci_spec::runtime::LinuxSeccomp>(v.clone())
            .map_err(|e| invalid(id, name, format!("seccomp profile {path}: {e}")))?;
        Ok(Some(v))
    };
    if let Some(p) = profile {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(Some(default_seccomp_for(caps))),
            Ok(ProfileType::Unconfined) => Ok(None),
            Ok(ProfileType::Localhost) => load(&p.localhost_ref),
            Err(_) => Err(invalid(
                id,
                name,
                format!("seccomp profile type {}: unknown", p.profile_type),
            )),
        };
    }
    match deprecated_path {
        "" | "unconfined" => Ok(None),
        "runtime/default" | "docker/default" => Ok(Some(default_seccomp_for(caps))),
        p => match p.strip_prefix("localhost/") {
            Some(path) => load(path),
            None => Err(invalid(id, name, format!("seccomp profile {p:?}: unknown"))),
        },
    }
}

fn ns_mode(v: i32) -> NamespaceMode {
    NamespaceMode::try_from(v).unwrap_or(NamespaceMode::Pod)
}

/// The namespaces of a container of `pod`, by the pod's and the container's options.
fn namespaces(i: &Input<'_>, name: &str) -> Result<Vec<Value>> {
    let pod_ns = i
        .pod
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let c_ns = i
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_else(|| pod_ns.clone());
    let pinned = |kind: &str| i.pod_paths.run.join("ns").join(kind);
    let mut out = vec![json!({"type": "mount"}), json!({"type": "cgroup"})];
    if ns_mode(pod_ns.network) != NamespaceMode::Node {
        let netns = i.pod.netns.clone().ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "container {name:?} ({}): pod {} has no network namespace (stopped?)",
                i.id, i.pod.id
            ))
        })?;
        out.push(json!({"type": "network", "path": netns}));
        // The pod's hostname lives in the pod's UTS namespace (host network: the host's).
        out.push(json!({"type": "uts", "path": pinned("uts")}));
    }
    if ns_mode(pod_ns.ipc) != NamespaceMode::Node {
        out.push(json!({"type": "ipc", "path": pinned("ipc")}));
    }
    match ns_mode(c_ns.pid) {
        NamespaceMode::Pod => {
            if ns_mode(pod_ns.pid) == NamespaceMode::Pod {
                out.push(json!({"type": "pid", "path": pinned("pid")}));
            } else {
                out.push(json!({"type": "pid"}));
            }
        }
        NamespaceMode::Container => out.push(json!({"type": "pid"})),
        NamespaceMode::Node => {}
        NamespaceMode::Target => {
            let pid = i.target_pid.ok_or_else(|| {
                invalid(
                    i.id,
                    name,
                    format!(
                        "pid namespace TARGET: target container {:?} is not running",
                        c_ns.target_id
                    ),
                )
            })?;
            out.push(json!({"type": "pid", "path": format!("/proc/{pid}/ns/pid")}));
        }
    }
    if let Some(u) = &pod_ns.userns_options {
        if ns_mode(u.mode) == NamespaceMode::Pod {
            return Err(Error::Unimplemented(format!(
                "container {name:?} ({}): user namespaces (userns mode POD) are not supported yet",
                i.id
            )));
        }
    }
    Ok(out)
}

/// CRI resources as the OCI config's `linux.resources`.
pub fn resources(r: Option<&LinuxContainerResources>) -> Value {
    let mut out = json!({"devices": [{"allow": false, "access": "rwm"}]});
    let Some(r) = r else {
        return out;
    };
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(r.cpu_shares));
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), json!(r.cpu_period));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(r.cpuset_mems));
    }
    if !cpu.is_empty() {
        out["cpu"] = Value::Object(cpu);
    }
    let mut mem = serde_json::Map::new();
    if r.memory_limit_in_bytes > 0 {
        mem.insert("limit".into(), json!(r.memory_limit_in_bytes));
    }
    if r.memory_swap_limit_in_bytes > 0 {
        mem.insert("swap".into(), json!(r.memory_swap_limit_in_bytes));
    }
    if !mem.is_empty() {
        out["memory"] = Value::Object(mem);
    }
    if !r.hugepage_limits.is_empty() {
        out["hugepageLimits"] = r
            .hugepage_limits
            .iter()
            .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
            .collect();
    }
    if !r.unified.is_empty() {
        out["unified"] = json!(r.unified);
    }
    out
}

/// The OOM score the container may have: what it asks, but not below this process's own
/// (lowering it needs CAP_SYS_RESOURCE, which a host may withhold).
pub fn oom_score_adj(asked: i64) -> i64 {
    let own = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(-1000);
    asked.clamp(own.max(-1000), 1000)
}

/// The whole OCI config.
pub fn container_spec(i: &Input<'_>) -> Result<Value> {
    let c = i.config;
    let name = container_name(c).to_string();
    let sc = c.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);
    let pod_sc = i
        .pod
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    if privileged && !pod_sc.is_some_and(|s| s.privileged) {
        return Err(invalid(
            i.id,
            &name,
            "privileged: the pod sandbox was not created privileged".into(),
        ));
    }
    if let Some(se) = sc.and_then(|s| s.selinux_options.as_ref()) {
        if !(se.user.is_empty()
            && se.role.is_empty()
            && se.r#type.is_empty()
            && se.level.is_empty())
        {
            return Err(Error::FailedPrecondition(format!(
                "container {name:?} ({}): SELinux options given, but SELinux is not enabled on this host",
                i.id
            )));
        }
    }
    if let Some(a) = sc.and_then(|s| s.apparmor.as_ref()) {
        if ProfileType::try_from(a.profile_type) == Ok(ProfileType::Localhost) {
            return Err(Error::FailedPrecondition(format!(
                "container {name:?} ({}): AppArmor profile {:?} requested, but AppArmor is not enabled on this host",
                i.id, a.localhost_ref
            )));
        }
    }

    let args = process_args(c, i.image);
    if args.is_empty() {
        return Err(invalid(
            i.id,
            &name,
            "no command: neither the config nor the image gives one".into(),
        ));
    }
    let hostname = i.pod.config.hostname.as_str();
    let env = process_env(c, i.image, hostname);
    let cwd = if !c.working_dir.is_empty() {
        c.working_dir.clone()
    } else {
        i.image
            .config()
            .as_ref()
            .and_then(|c| c.working_dir().clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    };
    if !cwd.starts_with('/') {
        return Err(invalid(
            i.id,
            &name,
            format!("working_dir {cwd:?}: must be absolute"),
        ));
    }

    // The user: runAsUser / runAsUsername over the image's User, resolved in the rootfs.
    let image_user = i
        .image
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .unwrap_or_default();
    let group = sc.and_then(|s| s.run_as_group.as_ref()).map(|g| g.value);
    let user_part = match (
        sc.and_then(|s| s.run_as_user.as_ref()).map(|u| u.value),
        sc.map(|s| s.run_as_username.as_str()).unwrap_or(""),
    ) {
        (Some(uid), _) if uid < 0 => {
            return Err(invalid(
                i.id,
                &name,
                format!("run_as_user {uid}: must not be negative"),
            ))
        }
        (Some(uid), _) => Some(uid.to_string()),
        (None, u) if !u.is_empty() => Some(u.to_string()),
        _ => None,
    };
    if group.is_some() && user_part.is_none() {
        return Err(invalid(
            i.id,
            &name,
            "run_as_group is set without run_as_user or run_as_username".into(),
        ));
    }
    let user_spec = match (user_part, group) {
        (Some(u), Some(g)) => format!("{u}:{g}"),
        (Some(u), None) => u,
        (None, _) => image_user,
    };
    let user = resolve_user(i.rootfs, &user_spec)
        .map_err(|e| invalid(i.id, &name, format!("user {user_spec:?}: {e}")))?;
    let strict = sc.is_some_and(|s| s.supplemental_groups_policy == 1);
    let mut gids: BTreeSet<u32> = if strict {
        BTreeSet::new()
    } else {
        user.additional_gids.iter().copied().collect()
    };
    for g in sc.map(|s| s.supplemental_groups.as_slice()).unwrap_or(&[]) {
        let g = u32::try_from(*g)
            .map_err(|_| invalid(i.id, &name, format!("supplemental group {g}: out of range")))?;
        gids.insert(g);
    }
    gids.remove(&user.gid);

    let caps = capabilities(i.id, &name, sc)?;
    let ambient: Vec<String> = sc
        .and_then(|s| s.capabilities.as_ref())
        .map(|c| {
            c.add_ambient_capabilities
                .iter()
                .filter_map(|a| cap_name(a))
                .collect()
        })
        .unwrap_or_default();
    // A process that is not root keeps no effective capability across exec unless it is
    // ambient (as containerd 2 sets it): only the bounding set is the whole list.
    let (effective, inheritable) = if user.uid == 0 {
        (caps.clone(), Vec::new())
    } else {
        (ambient.clone(), ambient.clone())
    };
    let mut process = json!({
        "terminal": c.tty,
        "user": {"uid": user.uid, "gid": user.gid},
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {
            "bounding": caps,
            "effective": effective,
            "permitted": effective,
            "inheritable": inheritable,
            "ambient": ambient,
        },
        "noNewPrivileges": sc.is_some_and(|s| s.no_new_privs),
    });
    if !gids.is_empty() {
        process["user"]["additionalGids"] = json!(gids);
    }
    let res = c.linux.as_ref().and_then(|l| l.resources.as_ref());
    if let Some(r) = res {
        process["oomScoreAdj"] = json!(oom_score_adj(r.oom_score_adj));
    }

    let mounts = mounts(i, &name, privileged)?;
    let mut linux = json!({
        "namespaces": namespaces(i, &name)?,
        "resources": resources(res),
        "cgroupsPath": i.cgroups_path,
    });
    let devices = devices(i.id, &name, c, &mut linux)?;
    if !devices.is_empty() {
        linux["devices"] = json!(devices);
    }
    // A bidirectional mount only propagates back if the root stays a peer of the host's
    // mounts (rshared); a host-to-container one needs the root a slave, not private.
    let propagation: Vec<_> = c
        .mounts
        .iter()
        .filter_map(|m| MountPropagation::try_from(m.propagation).ok())
        .collect();
    if propagation.contains(&MountPropagation::PropagationBidirectional) {
        linux["rootfsPropagation"] = json!("rshared");
    } else if propagation.contains(&MountPropagation::PropagationHostToContainer) {
        linux["rootfsPropagation"] = json!("rslave");
    }
    if !privileged {
        let masked = sc
            .map(|s| s.masked_paths.clone())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| MASKED_PATHS.iter().map(|s| s.to_string()).collect());
        let readonly = sc
            .map(|s| s.readonly_paths.clone())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| READONLY_PATHS.iter().map(|s| s.to_string()).collect());
        linux["maskedPaths"] = json!(masked);
        linux["readonlyPaths"] = json!(readonly);
        if let Some(s) = seccomp(
            i.id,
            &name,
            sc.and_then(|s| s.seccomp.as_ref()),
            #[allow(deprecated)]
            sc.map(|s| s.seccomp_profile_path.as_str()).unwrap_or(""),
            &caps,
        )? {
            linux["seccomp"] = s;
        }
    }
    let sysctls = i
        .pod
        .config
        .linux
        .as_ref()
        .map(|l| l.sysctls.clone())
        .unwrap_or_default();
    if !sysctls.is_empty() {
        linux["sysctl"] = json!(sysctls);
    }

    let mut annotations = c.annotations.clone();
    annotations.insert(
        "io.kubernetes.cri.container-type".into(),
        "container".into(),
    );
    annotations.insert("io.kubernetes.cri.container-name".into(), name.clone());
    annotations.insert("io.kubernetes.cri.sandbox-id".into(), i.pod.id.clone());
    if let Some(m) = &i.pod.config.metadata {
        annotations.insert("io.kubernetes.cri.sandbox-name".into(), m.name.clone());
        annotations.insert(
            "io.kubernetes.cri.sandbox-namespace".into(),
            m.namespace.clone(),
        );
        annotations.insert("io.kubernetes.cri.sandbox-uid".into(), m.uid.clone());
    }
    let spec = json!({
        "ociVersion": "1.2.0",
        "process": process,
        "root": {
            "path": i.rootfs,
            "readonly": sc.is_some_and(|s| s.readonly_rootfs),
        },
        "mounts": mounts,
        "annotations": annotations,
        "linux": linux,
    });
    serde_json::from_value::<oci_spec::runtime::Spec>(spec.clone()).map_err(|e| {
        Error::Internal(format!(
            "container {name:?} ({}): the OCI config made is invalid: {e}",
            i.id
        ))
    })?;
    Ok(spec)
}

/// The default mounts, the pod's shared files, the image's volumes and the config's
/// mounts (which win over the others at the same path).
fn mounts(i: &Input<'_>, name: &str, privileged: bool) -> Result<Vec<Value>> {
    let c = i.config;
    let host_ipc = i
        .pod
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .is_some_and(|n| ns_mode(n.ipc) == NamespaceMode::Node);
    // The pod's containers share one /dev/shm (host IPC: the host's).
    let shm_source = if host_ipc {
        PathBuf::from("/dev/shm")
    } else {
        i.pod_paths.run.join("shm")
    };
    let shm = json!({"destination": "/dev/shm", "type": "bind", "source": shm_source,
                     "options": ["rbind", "nosuid", "noexec", "nodev"]});
    let mut out = default_mounts(shm, !privileged);
    let taken: BTreeSet<&str> = c.mounts.iter().map(|m| m.container_path.as_str()).collect();
    for file in ["hostname", "hosts", "resolv.conf"] {
        let dest = format!("/etc/{file}");
        let src = i.pod_paths.state.join(file);
        if taken.contains(dest.as_str()) || !src.exists() {
            continue;
        }
        let mut o = vec!["rbind", "rprivate", "nosuid", "nodev", "noexec"];
        if c.linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.readonly_rootfs)
        {
            o.push("ro");
        }
        out.push(json!({"destination": dest, "type": "bind", "source": src, "options": o}));
    }
    for (dest, src) in i.volumes {
        if taken.contains(dest.as_str()) {
            continue;
        }
        out.push(json!({"destination": dest, "type": "bind", "source": src,
                        "options": ["rbind", "rprivate"]}));
    }
    for m in &c.mounts {
        if !m.container_path.starts_with('/') {
            return Err(invalid(
                i.id,
                name,
                format!(
                    "mount {:?}: the container path must be absolute",
                    m.container_path
                ),
            ));
        }
        if m.image.is_some() {
            return Err(Error::Unimplemented(format!(
                "container {name:?} ({}): mount {}: image volumes are not supported yet",
                i.id, m.container_path
            )));
        }
        // The kubelet's host path may be a link: mount what it points to, as the CRI says.
        let src = std::fs::canonicalize(&m.host_path).map_err(|e| {
            invalid(
                i.id,
                name,
                format!(
                    "mount {}: host path {:?}: {e}",
                    m.container_path, m.host_path
                ),
            )
        })?;
        let mut o = vec!["rbind"];
        match MountPropagation::try_from(m.propagation) {
            Ok(MountPropagation::PropagationPrivate) | Err(_) => o.push("rprivate"),
            Ok(MountPropagation::PropagationHostToContainer) => o.push("rslave"),
            Ok(MountPropagation::PropagationBidirectional) => {
                if !privileged {
                    return Err(invalid(
                        i.id,
                        name,
                        format!(
                            "mount {}: bidirectional propagation needs a privileged container",
                            m.container_path
                        ),
                    ));
                }
                o.push("rshared")
            }
        }
        if m.readonly {
            o.push("ro");
        }
        if m.recursive_read_only {
            if !m.readonly || o[1] != "rprivate" {
                return Err(invalid(
                    i.id,
                    name,
                    format!(
                        "mount {}: recursive read-only needs readonly and private propagation",
                        m.container_path
                    ),
                ));
            }
            o.push("rro");
        }
        out.retain(|x| x["destination"] != json!(m.container_path));
        out.push(json!({"destination": m.container_path, "type": "bind",
                        "source": src, "options": o}));
    }
    Ok(out)
}

/// The config's devices as OCI devices, each with its cgroup allow rule.
fn devices(id: &str, name: &str, c: &ContainerConfig, linux: &mut Value) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for d in &c.devices {
        let meta = std::fs::metadata(&d.host_path)
            .map_err(|e| invalid(id, name, format!("device {:?}: {e}", d.host_path)))?;
        let ft = meta.file_type();
        let kind = if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else {
            return Err(invalid(
                id,
                name,
                format!("device {:?}: not a character or block device", d.host_path),
            ));
        };
        let rdev = meta.rdev();
        let (major, minor) = (libc::major(rdev), libc::minor(rdev));
        let perms = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if !perms.chars().all(|ch| "rwm".contains(ch)) {
            return Err(invalid(
                id,
                name,
                format!(
                    "device {:?}: permissions {perms:?}: use r, w and m",
                    d.host_path
                ),
            ));
        }
        let path = if d.container_path.is_empty() {
            &d.host_path
        } else {
            &d.container_path
        };
        out.push(
            json!({"path": path, "type": kind, "major": major, "minor": minor,
                        "fileMode": meta.mode() & 0o777, "uid": meta.uid(), "gid": meta.gid()}),
        );
        if let Some(rules) = linux["resources"]["devices"].as_array_mut() {
            rules.push(
                json!({"allow": true, "type": kind, "major": major, "minor": minor,
                              "access": perms}),
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
