//! Pod sandboxes: a shim with its pause, the pod's files and shared /dev/shm.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_shim::{Reply, Request, SandboxSpec};
use k8s_cri::v1::{
    LinuxPodSandboxStatus, Namespace, NamespaceMode, NamespaceOption, PodIp, PodSandbox,
    PodSandboxConfig, PodSandboxFilter, PodSandboxNetworkStatus, PodSandboxState, PodSandboxStatus,
};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::{lock, shim_err, Engine};
use crate::config::DEFAULT_HANDLER;
use crate::error::{Error, Result};
use crate::state::{new_id, now_ns, PodRecord, PodState};

/// How long a shim may take to end once its pod is removed.
const SHIM_EXIT_WAIT: Duration = Duration::from_secs(10);

/// The key a pod's name is reserved under: one sandbox per (name, namespace, uid, attempt).
pub fn reserved_name(c: &PodSandboxConfig) -> String {
    let m = c.metadata.clone().unwrap_or_default();
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

fn ns_options(c: &PodSandboxConfig) -> NamespaceOption {
    c.linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default()
}

fn is_node(mode: i32) -> bool {
    NamespaceMode::try_from(mode) == Ok(NamespaceMode::Node)
}

fn host_network(c: &PodSandboxConfig) -> bool {
    is_node(ns_options(c).network)
}

/// resolv.conf from the pod's DNS config, or the host's.
fn resolv_conf(c: &PodSandboxConfig) -> String {
    match &c.dns_config {
        Some(d) if !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()) => {
            let mut out = String::new();
            if !d.searches.is_empty() {
                out.push_str(&format!("search {}\n", d.searches.join(" ")));
            }
            for s in &d.servers {
                out.push_str(&format!("nameserver {s}\n"));
            }
            if !d.options.is_empty() {
                out.push_str(&format!("options {}\n", d.options.join(" ")));
            }
            out
        }
        _ => fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    }
}

fn hosts_file(c: &PodSandboxConfig, hostname: &str) -> String {
    if host_network(c) {
        return fs::read_to_string("/etc/hosts").unwrap_or_default();
    }
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    if !hostname.is_empty() {
        out.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    out
}

fn validate(c: &PodSandboxConfig) -> Result<()> {
    let m = c
        .metadata
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("pod sandbox config: metadata is missing".into()))?;
    for (field, v) in [
        ("name", &m.name),
        ("namespace", &m.namespace),
        ("uid", &m.uid),
    ] {
        if v.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "pod sandbox {:?}: metadata.{field} is empty",
                m.name
            )));
        }
    }
    if let Some(d) = &c.dns_config {
        for s in &d.servers {
            if s.parse::<std::net::IpAddr>().is_err() {
                return Err(Error::InvalidArgument(format!(
                    "pod sandbox {:?}: DNS server {s:?} is not an IP address",
                    m.name
                )));
            }
        }
        for (what, list) in [("search domain", &d.searches), ("option", &d.options)] {
            let bad = |v: &&String| {
                v.is_empty() || v.chars().any(|ch| ch.is_whitespace() || ch.is_control())
            };
            if let Some(v) = list.iter().find(bad) {
                return Err(Error::InvalidArgument(format!(
                    "pod sandbox {:?}: DNS {what} {v:?}: must be one word",
                    m.name
                )));
            }
        }
    }
    for key in c.linux.iter().flat_map(|l| l.sysctls.keys()) {
        let bad = |why: &str| {
            Err(Error::InvalidArgument(format!(
                "pod sandbox {:?}: sysctl {key:?}: {why}",
                m.name
            )))
        };
        if libberth::spec::sysctl_namespace(key).is_none() {
            return bad("not isolated by a namespace; setting it would change the host");
        }
        if !std::path::Path::new("/proc/sys")
            .join(key.replace('.', "/"))
            .exists()
        {
            return bad("the kernel has no such sysctl");
        }
    }
    if c.hostname.contains('/') || c.hostname.len() > 64 {
        return Err(Error::InvalidArgument(format!(
            "pod sandbox {:?}: hostname {:?} is not a valid host name",
            m.name, c.hostname
        )));
    }
    Ok(())
}

/// What a failed RunPodSandbox must undo, in reverse order.
#[derive(Default)]
struct Undo {
    name: Option<String>,
    state_dir: bool,
    shm: bool,
    netns: Option<std::path::PathBuf>,
    network: Option<berth_cni::PodNetwork>,
    shim: bool,
}

/// The pod's attachment as the CNI plugins see it.
fn pod_network(id: &str, netns: &Path, c: &PodSandboxConfig) -> Result<berth_cni::PodNetwork> {
    let m = c.metadata.clone().unwrap_or_default();
    let mut ports = Vec::new();
    for p in &c.port_mappings {
        if p.host_port <= 0 {
            // Without a host port there is nothing to forward (the kubelet sends these).
            continue;
        }
        let port = |v: i32, what: &str| {
            u16::try_from(v).map_err(|_| {
                Error::InvalidArgument(format!(
                    "pod {:?}: port mapping {what} {v}: out of range",
                    m.name
                ))
            })
        };
        ports.push(berth_cni::PortMapping {
            host_port: port(p.host_port, "host port")?,
            container_port: port(p.container_port, "container port")?,
            protocol: match k8s_cri::v1::Protocol::try_from(p.protocol) {
                Ok(k8s_cri::v1::Protocol::Udp) => berth_cni::Protocol::Udp,
                Ok(k8s_cri::v1::Protocol::Sctp) => berth_cni::Protocol::Sctp,
                _ => berth_cni::Protocol::Tcp,
            },
            host_ip: if p.host_ip.is_empty() {
                None
            } else {
                Some(p.host_ip.parse().map_err(|_| {
                    Error::InvalidArgument(format!(
                        "pod {:?}: port mapping host IP {:?}: not an address",
                        m.name, p.host_ip
                    ))
                })?)
            },
        });
    }
    let mut n = berth_cni::PodNetwork::new(id, netns);
    n.pod_namespace = m.namespace;
    n.pod_name = m.name;
    n.pod_uid = m.uid;
    n.extra_args = vec![("K8S_POD_INFRA_CONTAINER_ID".into(), id.to_string())];
    n.runtime.port_mappings = ports;
    Ok(n)
}

impl Engine {
    pub fn run_pod_sandbox(&self, config: PodSandboxConfig, handler: &str) -> Result<String> {
        validate(&config)?;
        let known = handler.is_empty()
            || handler == DEFAULT_HANDLER
            || self.cfg.runtimes.contains_key(handler);
        if !known {
            return Err(Error::InvalidArgument(format!(
                "runtime handler {handler:?} is not configured (known: {})",
                std::iter::once(DEFAULT_HANDLER)
                    .chain(self.cfg.runtimes.keys().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let name = reserved_name(&config);
        // A kubelet retrying after a timeout gets the sandbox it asked for.
        let holder = lock(&self.names).get(&name).cloned();
        if let Some(existing) = holder {
            if let Ok(p) = self.pod(&existing) {
                let (state, made) = {
                    let p = lock(&p);
                    (p.state, p.made)
                };
                if state == PodState::Ready {
                    return Ok(existing);
                }
                if !made {
                    // A crash in the middle of RunPodSandbox left it, and the kubelet never
                    // got its id: undo it and make the pod anew.
                    self.remove_pod_sandbox(&existing)?;
                }
            }
        }
        let id = new_id()?;
        self.reserve(&name, &id)?;
        let mut undo = Undo {
            name: Some(name),
            ..Default::default()
        };
        match self.make_pod(&id, config, handler, &mut undo) {
            Ok(()) => Ok(id),
            Err(e) => {
                self.undo_pod(&id, undo);
                Err(e)
            }
        }
    }

    fn make_pod(
        &self,
        id: &str,
        config: PodSandboxConfig,
        handler: &str,
        undo: &mut Undo,
    ) -> Result<()> {
        let paths = self.pod_paths(id);
        let ns = ns_options(&config);
        let host_net = is_node(ns.network);
        let host_ipc = is_node(ns.ipc);
        let hostname = if config.hostname.is_empty() && host_net {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            config.hostname.clone()
        };
        let mut record = PodRecord {
            id: id.to_string(),
            config,
            runtime_handler: handler.to_string(),
            created_at: now_ns(),
            state: PodState::NotReady,
            ips: Vec::new(),
            own_netns: !host_net,
            netns: None,
            pause_pid: 0,
            made: false,
        };
        // The record first: a crash from here on leaves something a restart can clean.
        undo.state_dir = true;
        self.state.save_pod(&record)?;
        for (file, data) in [
            ("hostname", format!("{hostname}\n")),
            ("hosts", hosts_file(&record.config, &hostname)),
            ("resolv.conf", resolv_conf(&record.config)),
        ] {
            let p = paths.state.join(file);
            fs::write(&p, data)
                .map_err(|e| Error::internal(format!("write {}", p.display()), e))?;
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&paths.run)
            .map_err(|e| Error::internal(format!("create {}", paths.run.display()), e))?;
        if !host_ipc {
            let shm = paths.run.join("shm");
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&shm)
                .map_err(|e| Error::internal(format!("create {}", shm.display()), e))?;
            mount(
                Some("shm"),
                &shm,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=1777,size=65536k"),
            )
            .map_err(|e| Error::internal(format!("mount the pod's shm on {}", shm.display()), e))?;
            undo.shm = true;
        }
        if !host_net {
            if let berth_cni::NetworkStatus::NotReady { reason } = self.network_status() {
                return Err(Error::FailedPrecondition(format!(
                    "pod {id}: the network is not ready: {reason}"
                )));
            }
            let ns = self
                .netns
                .create(id)
                .map_err(|e| Error::internal(format!("pod {id}: network namespace"), e))?;
            let path = ns.path().to_path_buf();
            undo.netns = Some(path.clone());
            record.netns = Some(path.clone());
            // Recorded before the ADD: a crash during it leaves a record whose removal runs
            // the DEL (berth-cni cached the ADD's arguments first) and removes the namespace.
            self.state.save_pod(&record)?;
            let net = pod_network(id, &path, &record.config)?;
            // A failed ADD undoes itself: nothing of the network is left to tear down.
            let attached = self.cni.setup(&net).map_err(|e| {
                Error::Internal(format!(
                    "pod {id}: network setup: {}",
                    berth_cni::full_message(&e)
                ))
            })?;
            undo.network = Some(net);
            record.ips = attached.pod_ips().iter().map(|ip| ip.to_string()).collect();
            self.state.save_pod(&record)?;
        }
        undo.shim = true;
        let oci = self.oci_binary(handler);
        let client = berth_shim::spawn(
            &self.shim_bin,
            id,
            &paths.run,
            oci.as_ref().map_or(&self.runtime_root, |b| &b.root),
            oci.as_ref()
                .map(|b| (b.path.as_path(), b.options.as_slice())),
        )
        .map_err(|e| Error::Internal(format!("pod {id}: {e}")))?;
        let spec = SandboxSpec {
            netns: record.netns.clone(),
            net: false,
            ipc: !host_ipc,
            hostname: (!host_net).then(|| hostname.clone()),
            pid: NamespaceMode::try_from(ns.pid) == Ok(NamespaceMode::Pod),
        };
        let pid = match client.call(&Request::Sandbox(spec)) {
            Ok(Reply::Sandbox { pid }) => pid,
            Ok(other) => return Err(Error::Internal(format!("pod {id}: shim replied {other:?}"))),
            Err(e) => return Err(shim_err(id, "start the pause", e)),
        };
        record.pause_pid = pid;
        record.state = PodState::Ready;
        record.made = true;
        self.state.save_pod(&record)?;
        lock(&self.pods).insert(id.to_string(), Arc::new(Mutex::new(record)));
        Ok(())
    }

    /// Undoes a RunPodSandbox that failed part way.
    fn undo_pod(&self, id: &str, undo: Undo) {
        let paths = self.pod_paths(id);
        if undo.shim {
            self.end_shim(id);
        }
        if let Some(net) = &undo.network {
            if let Err(e) = self.cni.teardown(net) {
                tracing::warn!(
                    pod = id,
                    "undo the network setup: {}",
                    berth_cni::full_message(&e)
                );
            }
        }
        if let Some(ns) = &undo.netns {
            let _ = berth_cni::remove_netns(ns);
        }
        if undo.shm {
            let _ = umount2(&paths.run.join("shm"), MntFlags::MNT_DETACH);
        }
        let _ = fs::remove_dir_all(&paths.run);
        if undo.state_dir {
            let _ = self.state.remove_pod(id);
        }
        if let Some(n) = undo.name {
            self.release(&n, id);
        }
        lock(&self.pods).remove(id);
    }

    /// Asks the pod's shim to end (it kills the pause and exits once it holds no
    /// container) and waits a while for its socket to go.
    fn end_shim(&self, id: &str) {
        let sock = self.pod_paths(id).run.join(berth_shim::SOCKET);
        if !sock.exists() {
            return;
        }
        if self.shim(id).call(&Request::Shutdown).is_err() && !self.shim_serves(id) {
            // A dead shim's socket file: nobody will remove it.
            return;
        }
        let deadline = std::time::Instant::now() + SHIM_EXIT_WAIT;
        while sock.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let id = match self.resolve_pod(id) {
            Ok(id) => id,
            // Stopping what is gone is done.
            Err(Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let pod = self.pod(&id)?;
        let mut p = lock(&pod);
        for c in self.containers_of(&id) {
            self.stop_container(&c, 0)?;
        }
        // The network goes first (DEL needs the namespace to find the interface); a failed
        // DEL fails the call, and the kubelet's retry tries again.
        if let Some(ns) = p.netns.clone() {
            let net = pod_network(&id, &ns, &p.config)?;
            self.cni.teardown(&net).map_err(|e| {
                Error::Internal(format!(
                    "pod {id}: network teardown: {}",
                    berth_cni::full_message(&e)
                ))
            })?;
            berth_cni::remove_netns(&ns).map_err(|e| {
                Error::internal(format!("pod {id}: remove its network namespace"), e)
            })?;
            p.netns = None;
            self.state.save_pod(&p)?;
        }
        if p.state == PodState::Ready || p.pause_pid != 0 {
            let _ = self.shim(&id).call(&Request::Shutdown);
            let _ = umount2(&self.pod_paths(&id).run.join("shm"), MntFlags::MNT_DETACH);
            p.state = PodState::NotReady;
            p.pause_pid = 0;
            self.state.save_pod(&p)?;
        }
        Ok(())
    }

    pub fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let id = match self.resolve_pod(id) {
            Ok(id) => id,
            Err(Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop_pod_sandbox(&id)?;
        for c in self.containers_of(&id) {
            self.remove_container(&c)?;
        }
        let pod = self.pod(&id)?;
        let p = lock(&pod);
        self.end_shim(&id);
        let run = self.pod_paths(&id).run;
        // /dev/shm, and the namespaces the shim pinned if it died before it could let go.
        libberth::rootfs::hostns::unmount_new_below(&run, &[]).map_err(|e| {
            Error::Internal(format!(
                "pod {id}: unmount below {}: {}",
                run.display(),
                e.chain()
            ))
        })?;
        if let Err(e) = fs::remove_dir_all(&run) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(Error::internal(
                    format!("pod {id}: remove {}", run.display()),
                    e,
                ));
            }
        }
        self.state.remove_pod(&id)?;
        self.release(&reserved_name(&p.config), &id);
        lock(&self.pods).remove(&id);
        Ok(())
    }

    /// The pod's network namespace (None: the host's), for port-forward; a pod that is not
    /// ready has none to forward into.
    pub fn pod_netns(&self, id: &str) -> Result<Option<std::path::PathBuf>> {
        let id = self.resolve_pod(id)?;
        let pod = self.pod(&id)?;
        let p = lock(&pod);
        if p.state != PodState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod {id}: port-forward: the pod sandbox is not ready"
            )));
        }
        Ok(p.netns.clone())
    }

    /// The ids of the pod's containers.
    pub(super) fn containers_of(&self, pod_id: &str) -> Vec<String> {
        lock(&self.containers)
            .iter()
            .filter(|(_, c)| lock(c).pod_id == pod_id)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<(PodSandboxStatus, Vec<(String, String)>)> {
        let id = self.resolve_pod(id)?;
        let pod = self.pod(&id)?;
        let p = lock(&pod);
        let status = pod_status(&p, &self.pod_paths(&id).run.join("ns"));
        let mut info = Vec::new();
        if verbose {
            let v = serde_json::json!({
                "pid": p.pause_pid,
                "runtimeHandler": p.runtime_handler,
                "runDir": self.pod_paths(&id).run,
                "stateDir": self.pod_paths(&id).state,
                "ownNetworkNamespace": p.own_netns,
                "netns": p.netns,
            });
            info.push(("info".to_string(), v.to_string()));
        }
        Ok((status, info))
    }

    pub fn list_pod_sandbox(&self, filter: Option<&PodSandboxFilter>) -> Vec<PodSandbox> {
        let pods: Vec<_> = lock(&self.pods).values().cloned().collect();
        let mut out = Vec::new();
        for pod in pods {
            let p = lock(&pod);
            if let Some(f) = filter {
                if !f.id.is_empty() && !p.id.starts_with(&f.id) {
                    continue;
                }
                if f.state
                    .as_ref()
                    .is_some_and(|s| s.state != state_value(p.state))
                {
                    continue;
                }
                if !f
                    .label_selector
                    .iter()
                    .all(|(k, v)| p.config.labels.get(k) == Some(v))
                {
                    continue;
                }
            }
            out.push(PodSandbox {
                id: p.id.clone(),
                metadata: p.config.metadata.clone(),
                state: state_value(p.state),
                created_at: p.created_at,
                labels: p.config.labels.clone(),
                annotations: p.config.annotations.clone(),
                runtime_handler: p.runtime_handler.clone(),
            });
        }
        out.sort_by_key(|x| std::cmp::Reverse(x.created_at));
        out
    }
}

fn state_value(s: PodState) -> i32 {
    match s {
        PodState::Ready => PodSandboxState::SandboxReady as i32,
        PodState::NotReady => PodSandboxState::SandboxNotready as i32,
    }
}

fn pod_status(p: &PodRecord, _ns_dir: &Path) -> PodSandboxStatus {
    let mut ips = p.ips.iter();
    let network = p.own_netns.then(|| PodSandboxNetworkStatus {
        ip: ips.next().cloned().unwrap_or_default(),
        additional_ips: ips.map(|ip| PodIp { ip: ip.clone() }).collect(),
    });
    PodSandboxStatus {
        id: p.id.clone(),
        metadata: p.config.metadata.clone(),
        state: state_value(p.state),
        created_at: p.created_at,
        network,
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(ns_options(&p.config)),
            }),
        }),
        labels: p.config.labels.clone(),
        annotations: p.config.annotations.clone(),
        runtime_handler: p.runtime_handler.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{DnsConfig, PodSandboxMetadata};

    #[test]
    fn dns_config_makes_resolv_conf() {
        let c = PodSandboxConfig {
            dns_config: Some(DnsConfig {
                servers: vec!["10.0.0.10".into(), "10.0.0.11".into()],
                searches: vec!["ns.svc.cluster.local".into(), "cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            ..Default::default()
        };
        assert_eq!(
            resolv_conf(&c),
            "search ns.svc.cluster.local cluster.local\nnameserver 10.0.0.10\n\
             nameserver 10.0.0.11\noptions ndots:5\n"
        );
    }

    #[test]
    fn metadata_is_required_and_named() {
        let mut c = PodSandboxConfig::default();
        assert!(validate(&c).unwrap_err().to_string().contains("metadata"));
        c.metadata = Some(PodSandboxMetadata {
            name: "web".into(),
            namespace: "default".into(),
            uid: String::new(),
            attempt: 0,
        });
        let e = validate(&c).unwrap_err().to_string();
        assert!(e.contains("\"web\"") && e.contains("uid"), "{e}");
        assert_eq!(
            reserved_name(&PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "a".into(),
                    namespace: "b".into(),
                    uid: "c".into(),
                    attempt: 2
                }),
                ..Default::default()
            }),
            "a_b_c_2"
        );
    }
}
