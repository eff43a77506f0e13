//! The CNI caller a CRI engine holds: one network (the directory's first configuration),
//! ADD with undo on failure, DEL from the cache, CHECK, and the network's readiness.

use std::ffi::OsStr;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::args::{encode_cni_args, plugin_stdin, PodNetwork};
use crate::cache::{entry_config, CacheEntry, ResultCache, DEFAULT_CACHE_DIR};
use crate::config::{
    check_container_id, check_ifname, NetworkConfigList, PluginConfig, DEFAULT_CONF_DIR,
};
use crate::error::{full_message, CacheError, CniError, Command, Site};
use crate::invoke::{
    find_plugin, invoke, search_path, Invocation, VersionInfo, DEFAULT_MAX_OUTPUT,
    DEFAULT_PLUGIN_DIRS, DEFAULT_TIMEOUT,
};
use crate::netns::is_namespace;
use crate::result::CniResult;
use crate::version::CniVersion;

/// Where the configuration, the plugins and the cache are, and the limits of a plugin run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniOptions {
    /// The configuration directory; `/etc/cni/net.d`.
    pub conf_dir: PathBuf,
    /// The plugin directories, searched in order and given as `CNI_PATH`;
    /// `/opt/cni/bin`, `/usr/lib/cni`.
    pub plugin_dirs: Vec<PathBuf>,
    /// The result cache; `/var/lib/berth/cni`.
    pub cache_dir: PathBuf,
    /// How long one plugin run may take before it is killed; 60 s.
    pub timeout: Duration,
    /// How much one plugin may print on stdout before it is killed; 1 MiB.
    pub max_output: usize,
}

impl Default for CniOptions {
    fn default() -> Self {
        CniOptions {
            conf_dir: DEFAULT_CONF_DIR.into(),
            plugin_dirs: DEFAULT_PLUGIN_DIRS.iter().map(PathBuf::from).collect(),
            cache_dir: DEFAULT_CACHE_DIR.into(),
            timeout: DEFAULT_TIMEOUT,
            max_output: DEFAULT_MAX_OUTPUT,
        }
    }
}

/// Whether a network is loaded: the CRI's NetworkReady condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkStatus {
    Ready {
        network: String,
        /// The file it came from; none for a network given in memory.
        file: Option<PathBuf>,
    },
    NotReady {
        /// Why, for the condition's message: the load error with its causes.
        reason: String,
    },
}

impl NetworkStatus {
    pub fn is_ready(&self) -> bool {
        matches!(self, NetworkStatus::Ready { .. })
    }
}

/// A pod's attachment to the network: the ADD's result in the 1.0.0 shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub result: CniResult,
    /// The last plugin's result as it printed it (in the network's version).
    pub raw_result: Value,
}

impl Attachment {
    /// The pod's addresses, IPv4 first ([`CniResult::pod_ips`]).
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        self.result.pod_ips()
    }
}

/// The CNI caller. It is `Sync`: calls for different pods may run in parallel; the caller
/// must not run two for the same pod at once (the spec forbids it, and the cache assumes
/// it).
#[derive(Debug)]
pub struct Cni {
    options: CniOptions,
    cache: ResultCache,
    loaded: Mutex<Result<Arc<NetworkConfigList>, String>>,
}

/// The parameters shared by every plugin run of one operation on one attachment.
struct Call<'a> {
    list: &'a NetworkConfigList,
    container_id: &'a str,
    netns: &'a OsStr,
    ifname: &'a str,
    cni_args: String,
    capability_args: Map<String, Value>,
}

impl Cni {
    /// A caller with the network of `options.conf_dir` loaded; a load failure is not an
    /// error here but the [`status`](Cni::status) (a network may be installed later, then
    /// [`reload`](Cni::reload)).
    pub fn new(options: CniOptions) -> Cni {
        let cni = Cni {
            cache: ResultCache::new(&options.cache_dir),
            options,
            loaded: Mutex::new(Err("not loaded yet".into())),
        };
        let _ = cni.reload();
        cni
    }

    /// A caller of the network `list`, whatever `options.conf_dir` holds.
    pub fn with_network(options: CniOptions, list: NetworkConfigList) -> Cni {
        Cni {
            cache: ResultCache::new(&options.cache_dir),
            options,
            loaded: Mutex::new(Ok(Arc::new(list))),
        }
    }

    pub fn options(&self) -> &CniOptions {
        &self.options
    }

    /// Reads the configuration directory again (the first file wins). On failure the
    /// network is unloaded: a configuration that was removed or broken is not used.
    pub fn reload(&self) -> Result<Arc<NetworkConfigList>, crate::ConfigError> {
        let loaded = NetworkConfigList::load_dir(&self.options.conf_dir).map(Arc::new);
        let mut slot = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        *slot = match &loaded {
            Ok(l) => Ok(l.clone()),
            Err(e) => Err(full_message(e)),
        };
        loaded
    }

    /// Whether a network is loaded, as of the last load.
    pub fn status(&self) -> NetworkStatus {
        match &*self.loaded.lock().unwrap_or_else(|p| p.into_inner()) {
            Ok(l) => NetworkStatus::Ready {
                network: l.name().to_string(),
                file: l.file().map(Path::to_path_buf),
            },
            Err(reason) => NetworkStatus::NotReady {
                reason: reason.clone(),
            },
        }
    }

    /// The loaded network.
    pub fn network(&self) -> Option<Arc<NetworkConfigList>> {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .ok()
            .cloned()
    }

    fn require_network(&self) -> Result<Arc<NetworkConfigList>, CniError> {
        match &*self.loaded.lock().unwrap_or_else(|p| p.into_inner()) {
            Ok(l) => Ok(l.clone()),
            Err(reason) => Err(CniError::NotReady {
                reason: reason.clone(),
            }),
        }
    }

    /// Attaches the pod to the network: ADD of every plugin in order, each given the one
    /// before's result. If any step fails, DEL of every plugin in reverse order undoes
    /// what was done (an IP allocation, a veth) and the error is the ADD's; if that DEL
    /// fails too, both are returned and the cache entry stays for [`teardown`](Cni::teardown).
    pub fn setup(&self, pod: &PodNetwork) -> Result<Attachment, CniError> {
        let list = self.require_network()?;
        let cni_args = check_request(pod)?;
        if !is_namespace(&pod.netns) {
            return Err(CniError::InvalidRequest {
                container_id: pod.container_id.clone(),
                reason: format!("{} is not a network namespace", pod.netns.display()),
            });
        }
        let cache_err = |source| CniError::Cache {
            network: list.name().to_string(),
            container_id: pod.container_id.clone(),
            source,
        };
        let cache_path = self.cache.path(list.name(), &pod.container_id, &pod.ifname);
        if self
            .cache
            .read(list.name(), &pod.container_id, &pod.ifname)
            .map_err(cache_err)?
            .is_some()
        {
            return Err(CniError::AlreadyAttached {
                network: list.name().to_string(),
                container_id: pod.container_id.clone(),
                ifname: pod.ifname.clone(),
                cache: cache_path,
            });
        }
        let call = Call {
            list: &list,
            container_id: &pod.container_id,
            netns: pod.netns.as_os_str(),
            ifname: &pod.ifname,
            cni_args,
            capability_args: pod.runtime.capability_args(),
        };
        // Every plugin must be there before anything is done.
        for p in list.plugins() {
            self.plugin_path(&list, p)?;
        }
        let mut entry = CacheEntry::new(
            &list,
            &pod.container_id,
            &pod.ifname,
            &pod.netns,
            pod.cni_args(),
            pod.runtime.clone(),
        );
        self.cache.write(&entry).map_err(cache_err)?;

        let mut last = None;
        let (result, raw) = match self.add_all(&call, &mut last) {
            Ok(r) => r,
            Err(e) => return Err(self.undo(&call, e, last.as_ref())),
        };
        entry.result = Some(raw.clone());
        if let Err(e) = self.cache.write(&entry) {
            return Err(self.undo(&call, cache_err(e), Some(&raw)));
        }
        Ok(Attachment {
            network: list.name().to_string(),
            container_id: pod.container_id.clone(),
            ifname: pod.ifname.clone(),
            result,
            raw_result: raw,
        })
    }

    /// ADD of every plugin, each given the one before's result; `last` holds the last
    /// good result, for the DEL that undoes a failure.
    fn add_all(
        &self,
        call: &Call<'_>,
        last: &mut Option<Value>,
    ) -> Result<(CniResult, Value), CniError> {
        let mut parsed = None;
        for plugin in call.list.plugins() {
            let out = self.exec(call, plugin, Command::Add, last.as_ref())?;
            let (result, raw) = CniResult::from_slice(&out).map_err(|e| CniError::BadResult {
                site: self.site(call.list, plugin, Command::Add),
                reason: e.0,
            })?;
            *last = Some(raw);
            parsed = Some(result);
        }
        // The list is never empty (validated at load).
        match (parsed, last.clone()) {
            (Some(r), Some(raw)) => Ok((r, raw)),
            _ => Err(CniError::InvalidRequest {
                container_id: call.container_id.to_string(),
                reason: format!("network {} has no plugins", call.list.name()),
            }),
        }
    }

    /// DEL after a failed ADD: the error to return.
    fn undo(&self, call: &Call<'_>, add: CniError, prev: Option<&Value>) -> CniError {
        let mut cleanup = self.del_all(call, prev);
        if cleanup.is_empty() {
            if let Err(e) = self
                .cache
                .remove(call.list.name(), call.container_id, call.ifname)
            {
                cleanup.push(CniError::Cache {
                    network: call.list.name().to_string(),
                    container_id: call.container_id.to_string(),
                    source: e,
                });
            }
        }
        if cleanup.is_empty() {
            add
        } else {
            CniError::AddCleanupFailed {
                network: call.list.name().to_string(),
                add: Box::new(add),
                cleanup,
            }
        }
    }

    /// DEL of every plugin in reverse order, going on past failures; the failures.
    fn del_all(&self, call: &Call<'_>, prev: Option<&Value>) -> Vec<CniError> {
        call.list
            .plugins()
            .iter()
            .rev()
            .filter_map(|p| self.exec(call, p, Command::Del, prev).err())
            .collect()
    }

    /// Detaches the pod: DEL of every plugin in reverse order, from the cached ADD (its
    /// configuration, arguments and result), so that it works after a restart and without
    /// the configuration file; the cache entry goes once every plugin succeeded. Without a
    /// cache entry, DEL runs with the loaded network and no `prevResult` (plugins then
    /// free what they can); with neither there is nothing to do. A network namespace that
    /// is already gone is passed as an empty `CNI_NETNS`, which the spec tells plugins to
    /// take as "clean up what you can". If the pod's `netns` is empty, the cached one is
    /// used.
    pub fn teardown(&self, pod: &PodNetwork) -> Result<(), CniError> {
        let cni_args = check_request(pod)?;
        let entries = self
            .cache
            .find(&pod.container_id, &pod.ifname)
            .map_err(|source| CniError::Cache {
                network: "(any)".into(),
                container_id: pod.container_id.clone(),
                source,
            })?;
        if entries.is_empty() {
            let Some(list) = self.network() else {
                return Ok(());
            };
            let call = Call {
                list: &list,
                container_id: &pod.container_id,
                netns: live_netns(&pod.netns),
                ifname: &pod.ifname,
                cni_args,
                capability_args: pod.runtime.capability_args(),
            };
            return del_result(list.name(), self.del_all(&call, None));
        }
        let mut first_error = None;
        for entry in entries {
            if let Err(e) = self.teardown_entry(pod, &entry) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn teardown_entry(&self, pod: &PodNetwork, entry: &CacheEntry) -> Result<(), CniError> {
        let cache_err = |source| CniError::Cache {
            network: entry.network.clone(),
            container_id: pod.container_id.clone(),
            source,
        };
        let list = entry_config(&self.cache, entry).map_err(cache_err)?;
        let cni_args = encode_cni_args(&entry.cni_args).map_err(|reason| {
            cache_err(CacheError::Config {
                path: self
                    .cache
                    .path(&entry.network, &entry.container_id, &entry.ifname),
                source: crate::ConfigError::Invalid {
                    origin: "cniArgs".into(),
                    reason,
                },
            })
        })?;
        let netns = if pod.netns.as_os_str().is_empty() {
            &entry.netns
        } else {
            &pod.netns
        };
        let call = Call {
            list: &list,
            container_id: &pod.container_id,
            netns: live_netns(netns),
            ifname: &pod.ifname,
            cni_args,
            capability_args: entry.runtime_config.capability_args(),
        };
        del_result(list.name(), self.del_all(&call, entry.result.as_ref()))?;
        self.cache
            .remove(list.name(), &pod.container_id, &pod.ifname)
            .map_err(cache_err)
    }

    /// The cached attachment of the pod to the loaded network (or, with none loaded, to
    /// any network), if its ADD completed: what a restarted engine reports as the pod's
    /// addresses.
    pub fn attachment(&self, pod: &PodNetwork) -> Result<Option<Attachment>, CniError> {
        let entry = self.cached_entry(pod)?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        let Some(raw) = entry.result else {
            return Ok(None);
        };
        let result = CniResult::parse(&raw).map_err(|e| CniError::Cache {
            network: entry.network.clone(),
            container_id: pod.container_id.clone(),
            source: CacheError::Config {
                path: self
                    .cache
                    .path(&entry.network, &entry.container_id, &entry.ifname),
                source: crate::ConfigError::Invalid {
                    origin: "result".into(),
                    reason: e.0,
                },
            },
        })?;
        Ok(Some(Attachment {
            network: entry.network,
            container_id: entry.container_id,
            ifname: entry.ifname,
            result,
            raw_result: raw,
        }))
    }

    fn cached_entry(&self, pod: &PodNetwork) -> Result<Option<CacheEntry>, CniError> {
        check_request(pod)?;
        let cache_err = |network: &str| {
            let network = network.to_string();
            let container_id = pod.container_id.clone();
            move |source| CniError::Cache {
                network,
                container_id,
                source,
            }
        };
        match self.network() {
            Some(list) => self
                .cache
                .read(list.name(), &pod.container_id, &pod.ifname)
                .map_err(cache_err(list.name())),
            None => Ok(self
                .cache
                .find(&pod.container_id, &pod.ifname)
                .map_err(cache_err("(any)"))?
                .into_iter()
                .next()),
        }
    }

    /// Checks the pod's attachment: CHECK of every plugin in order with the cached ADD
    /// result, stopping at the first failure. Nothing is run for a network with
    /// `disableCheck`; a network older than 0.4.0 has no CHECK (an error).
    pub fn check(&self, pod: &PodNetwork) -> Result<(), CniError> {
        let cni_args = check_request(pod)?;
        let entry = self.cached_entry(pod)?;
        let not_attached = |network: &str| CniError::NotAttached {
            network: network.to_string(),
            container_id: pod.container_id.clone(),
            ifname: pod.ifname.clone(),
        };
        let Some(entry) = entry else {
            let network = self
                .network()
                .map_or("(none)".into(), |l| l.name().to_string());
            return Err(not_attached(&network));
        };
        let list = entry_config(&self.cache, &entry).map_err(|source| CniError::Cache {
            network: entry.network.clone(),
            container_id: pod.container_id.clone(),
            source,
        })?;
        if !list.version().has_check() {
            return Err(CniError::CheckUnsupported {
                network: list.name().to_string(),
                version: list.version().to_string(),
            });
        }
        if list.disable_check() {
            return Ok(());
        }
        let Some(result) = &entry.result else {
            return Err(not_attached(list.name()));
        };
        if !is_namespace(&pod.netns) {
            return Err(CniError::InvalidRequest {
                container_id: pod.container_id.clone(),
                reason: format!("{} is not a network namespace", pod.netns.display()),
            });
        }
        let call = Call {
            list: &list,
            container_id: &pod.container_id,
            netns: pod.netns.as_os_str(),
            ifname: &pod.ifname,
            cni_args,
            capability_args: entry.runtime_config.capability_args(),
        };
        for p in list.plugins() {
            self.exec(&call, p, Command::Check, Some(result))?;
        }
        Ok(())
    }

    /// What a plugin's VERSION says.
    pub fn plugin_version(&self, plugin_type: &str) -> Result<VersionInfo, CniError> {
        let network = self
            .network()
            .map_or_else(|| "(none)".to_string(), |l| l.name().to_string());
        let site = Site {
            network: network.clone(),
            plugin: plugin_type.to_string(),
            command: Command::Version,
        };
        let path = find_plugin(&self.options.plugin_dirs, plugin_type).ok_or_else(|| {
            CniError::PluginNotFound {
                network,
                plugin: plugin_type.to_string(),
                search_path: search_path(&self.options.plugin_dirs),
            }
        })?;
        let stdin = format!(r#"{{"cniVersion":"{}"}}"#, CniVersion::V1_0_0);
        let cni_path = search_path(&self.options.plugin_dirs);
        let out = invoke(Invocation {
            site: site.clone(),
            path: &path,
            env: vec![("CNI_PATH", OsStr::new(&cni_path))],
            stdin: stdin.as_bytes(),
            timeout: self.options.timeout,
            max_output: self.options.max_output,
        })?;
        serde_json::from_slice(&out).map_err(|e| CniError::BadResult {
            site,
            reason: e.to_string(),
        })
    }

    /// Checks that every plugin of the loaded network is installed and speaks the
    /// network's version (their VERSION).
    pub fn validate(&self) -> Result<(), CniError> {
        let list = self.require_network()?;
        for p in list.plugins() {
            let info = self.plugin_version(p.plugin_type())?;
            if !info
                .supported_versions
                .iter()
                .any(|v| v == list.version().as_str())
            {
                return Err(CniError::VersionUnsupported {
                    network: list.name().to_string(),
                    plugin: p.plugin_type().to_string(),
                    version: list.version().to_string(),
                    supported: info.supported_versions,
                });
            }
        }
        Ok(())
    }

    fn site(&self, list: &NetworkConfigList, plugin: &PluginConfig, command: Command) -> Site {
        Site {
            network: list.name().to_string(),
            plugin: plugin.plugin_type().to_string(),
            command,
        }
    }

    fn plugin_path(
        &self,
        list: &NetworkConfigList,
        plugin: &PluginConfig,
    ) -> Result<PathBuf, CniError> {
        find_plugin(&self.options.plugin_dirs, plugin.plugin_type()).ok_or_else(|| {
            CniError::PluginNotFound {
                network: list.name().to_string(),
                plugin: plugin.plugin_type().to_string(),
                search_path: search_path(&self.options.plugin_dirs),
            }
        })
    }

    /// One plugin run of `call`.
    fn exec(
        &self,
        call: &Call<'_>,
        plugin: &PluginConfig,
        command: Command,
        prev: Option<&Value>,
    ) -> Result<Vec<u8>, CniError> {
        let path = self.plugin_path(call.list, plugin)?;
        let stdin = plugin_stdin(call.list, plugin, prev, &call.capability_args);
        let cni_path = search_path(&self.options.plugin_dirs);
        invoke(Invocation {
            site: self.site(call.list, plugin, command),
            path: &path,
            env: vec![
                ("CNI_CONTAINERID", OsStr::new(call.container_id)),
                ("CNI_NETNS", call.netns),
                ("CNI_IFNAME", OsStr::new(call.ifname)),
                ("CNI_ARGS", OsStr::new(&call.cni_args)),
                ("CNI_PATH", OsStr::new(&cni_path)),
            ],
            stdin: &stdin,
            timeout: self.options.timeout,
            max_output: self.options.max_output,
        })
    }
}

/// Checks the pod's id, interface name and CNI_ARGS; the encoded CNI_ARGS.
fn check_request(pod: &PodNetwork) -> Result<String, CniError> {
    let invalid = |reason| CniError::InvalidRequest {
        container_id: pod.container_id.clone(),
        reason,
    };
    check_container_id(&pod.container_id).map_err(invalid)?;
    check_ifname(&pod.ifname).map_err(invalid)?;
    encode_cni_args(&pod.cni_args()).map_err(invalid)
}

/// `path` if a namespace is still there, else empty: the spec's way of telling DEL that
/// the namespace is gone.
fn live_netns(path: &Path) -> &OsStr {
    if is_namespace(path) {
        path.as_os_str()
    } else {
        OsStr::new("")
    }
}

fn del_result(network: &str, errors: Vec<CniError>) -> Result<(), CniError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::Del {
            network: network.to_string(),
            errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Cni>();
    }

    #[test]
    fn defaults_are_the_usual_places() {
        let o = CniOptions::default();
        assert_eq!(o.conf_dir, Path::new("/etc/cni/net.d"));
        assert_eq!(
            o.plugin_dirs,
            [Path::new("/opt/cni/bin"), Path::new("/usr/lib/cni")]
        );
        assert_eq!(o.max_output, 1 << 20);
    }
}
