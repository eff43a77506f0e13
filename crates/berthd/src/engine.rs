//! The engine: pods and containers as the CRI sees them, on berth-shim and the shared store.
//!
//! Every method is blocking (files, the shim's socket, mounts); the gRPC adapter runs them
//! on tokio's blocking pool. Calls on one pod or one container are serialised by that
//! object's lock; the maps are locked only to find or insert an object. Lock order: the
//! pod's, then its containers'.

mod checkpoint;
mod container;
mod handler;
mod images;
mod pod;
mod stats;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use berth_engine::{Store, StoreOptions};
use berth_shim::Client;
use k8s_cri::v1::ContainerEventResponse;
use tokio::sync::broadcast;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::spec::PodPaths;
use crate::state::{ContainerRecord, PodRecord, StateDir};

pub use container::ExecOutput;

/// How many container events a slow GetContainerEvents listener may fall behind.
const EVENT_BACKLOG: usize = 1024;

pub struct Engine {
    pub cfg: Config,
    pub store: Store,
    state: StateDir,
    shim_bin: PathBuf,
    /// libberth's state root, shared by every shim.
    runtime_root: PathBuf,
    pods: Mutex<BTreeMap<String, Arc<Mutex<PodRecord>>>>,
    containers: Mutex<BTreeMap<String, Arc<Mutex<ContainerRecord>>>>,
    /// Reserved names (the kubelet's pod and container names) to the id holding them.
    names: Mutex<HashMap<String, String>>,
    events: broadcast::Sender<ContainerEventResponse>,
    cni: berth_cni::Cni,
    /// Where pods' network namespaces are pinned (`<run_dir>/netns`).
    netns: berth_cni::NetnsDir,
    cpu_samples: stats::CpuSamples,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves consistent data here (records are written whole):
    // keep serving rather than poisoning every later call.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    /// Opens the stores and reloads every pod and container from their records.
    pub fn open(cfg: Config) -> Result<Engine> {
        let driver = match cfg.storage_driver.as_deref() {
            None => None,
            Some(s) => Some(berth_image::snapshot::Driver::parse(s).ok_or_else(|| {
                Error::InvalidArgument(format!("storage_driver {s:?}: use overlay or copy"))
            })?),
        };
        let store = Store::open(&StoreOptions {
            root: cfg.root.clone(),
            runroot: cfg.run_dir.join("runtime"),
            driver,
            max_layer_size: 64 << 30,
            registries_conf: cfg.registries_conf.clone(),
        })?;
        let state = StateDir::open(&cfg.state_dir)?;
        std::fs::create_dir_all(cfg.run_dir.join("pods"))
            .map_err(|e| Error::internal(format!("create {}", cfg.run_dir.display()), e))?;
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let cni = berth_cni::Cni::new(berth_cni::CniOptions {
            conf_dir: cfg.cni_conf_dir.clone(),
            plugin_dirs: cfg.cni_bin_dirs.clone(),
            cache_dir: cfg.state_dir.join("cni"),
            ..Default::default()
        });
        let e = Engine {
            cni,
            netns: berth_cni::NetnsDir::new(cfg.run_dir.join("netns")),
            cpu_samples: Default::default(),
            shim_bin: cfg.shim_binary(),
            runtime_root: cfg.run_dir.join("runtime"),
            store,
            state,
            pods: Mutex::new(BTreeMap::new()),
            containers: Mutex::new(BTreeMap::new()),
            names: Mutex::new(HashMap::new()),
            events,
            cfg,
        };
        e.reload()?;
        Ok(e)
    }

    /// Reads the records back: pods, containers, name reservations; exits recorded by the
    /// shims while berthd was down become the containers' states.
    fn reload(&self) -> Result<()> {
        let (pods, bad) = self.state.load_pods()?;
        for b in bad {
            tracing::warn!("skipping a pod record: {b}");
        }
        let (containers, bad) = self.state.load_containers()?;
        for b in bad {
            tracing::warn!("skipping a container record: {b}");
        }
        let mut names = lock(&self.names);
        for p in pods {
            names.insert(pod::reserved_name(&p.config), p.id.clone());
            lock(&self.pods).insert(p.id.clone(), Arc::new(Mutex::new(p)));
        }
        for mut c in containers {
            let Some(pod) = self.pod(&c.pod_id).ok() else {
                tracing::warn!(container = %c.id, pod = %c.pod_id, "container of an unknown pod; skipping");
                continue;
            };
            let pod_config = lock(&pod).config.clone();
            names.insert(
                container::reserved_name(&c.config, &pod_config),
                c.id.clone(),
            );
            self.refresh(&mut c);
            lock(&self.containers).insert(c.id.clone(), Arc::new(Mutex::new(c)));
        }
        tracing::info!(
            pods = lock(&self.pods).len(),
            containers = lock(&self.containers).len(),
            "state reloaded"
        );
        Ok(())
    }

    /// Whether pods can get a network: the CNI configuration is read again each time, so
    /// that one installed after berthd started is taken (as the kubelet expects).
    pub fn network_status(&self) -> berth_cni::NetworkStatus {
        let _ = self.cni.reload();
        self.cni.status()
    }

    pub fn events(&self) -> broadcast::Receiver<ContainerEventResponse> {
        self.events.subscribe()
    }

    fn pod(&self, id: &str) -> Result<Arc<Mutex<PodRecord>>> {
        lock(&self.pods)
            .get(id)
            .cloned()
            .ok_or_else(|| Error::pod_not_found(id))
    }

    fn container(&self, id: &str) -> Result<Arc<Mutex<ContainerRecord>>> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| Error::container_not_found(id))
    }

    /// The full id of a pod from an id or a unique prefix of one.
    pub fn resolve_pod(&self, id: &str) -> Result<String> {
        resolve(&lock(&self.pods), id, "pod sandbox")
    }

    pub fn resolve_container(&self, id: &str) -> Result<String> {
        resolve(&lock(&self.containers), id, "container")
    }

    fn reserve(&self, name: &str, id: &str) -> Result<()> {
        let mut names = lock(&self.names);
        if let Some(holder) = names.get(name) {
            return Err(Error::AlreadyExists(format!(
                "the name {name:?} is reserved for {holder}"
            )));
        }
        names.insert(name.to_string(), id.to_string());
        Ok(())
    }

    fn release(&self, name: &str, id: &str) {
        let mut names = lock(&self.names);
        if names.get(name).is_some_and(|h| h == id) {
            names.remove(name);
        }
    }

    fn pod_paths(&self, id: &str) -> PodPaths {
        PodPaths {
            run: self.cfg.run_dir.join("pods").join(id),
            state: self.state.pod_dir(id),
        }
    }

    fn shim(&self, pod_id: &str) -> Client {
        Client::new(self.pod_paths(pod_id).run.join(berth_shim::SOCKET))
    }

    pub fn runtime_root(&self) -> &Path {
        &self.runtime_root
    }
}

fn resolve<T>(map: &BTreeMap<String, T>, id: &str, kind: &'static str) -> Result<String> {
    if id.is_empty() {
        return Err(Error::InvalidArgument(format!("{kind} id: empty")));
    }
    if map.contains_key(id) {
        return Ok(id.to_string());
    }
    let mut m = map
        .range(id.to_string()..)
        .take_while(|(k, _)| k.starts_with(id));
    match (m.next(), m.next()) {
        (Some((k, _)), None) => Ok(k.clone()),
        (None, _) => Err(Error::NotFound {
            kind,
            id: id.to_string(),
        }),
        (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
            "{kind} id {id:?}: matches more than one; give more of it"
        ))),
    }
}

/// A shim error as the engine's, naming the pod.
fn shim_err(pod: &str, what: &str, e: berth_shim::ShimError) -> Error {
    match e {
        berth_shim::ShimError::Refused(m) => Error::Internal(format!("{what}: {m}")),
        other => Error::Internal(format!("pod {pod}: {what}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resolve_in_full_or_by_a_unique_prefix() {
        let mut m = BTreeMap::new();
        m.insert("abc123".to_string(), ());
        m.insert("abd456".to_string(), ());
        assert_eq!(resolve(&m, "abc123", "pod").unwrap(), "abc123");
        assert_eq!(resolve(&m, "abc", "pod").unwrap(), "abc123");
        assert!(matches!(
            resolve(&m, "ab", "pod"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            resolve(&m, "zz", "pod"),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            resolve(&m, "", "pod"),
            Err(Error::InvalidArgument(_))
        ));
    }
}
