//! The result cache: what DEL and CHECK need of an ADD, on disk, so that they work after
//! the engine restarted and even after the configuration file went away.
//!
//! One file per attachment, `<dir>/<network>/<container id>/<ifname>.json`: the three parts
//! are checked to be plain file names (the spec's grammar for the first two, the kernel's
//! for the third), so the path is unambiguous and stays under `<dir>`. A file is written
//! before the first plugin's ADD (with no result yet), so that a crash during ADD still
//! leaves what DEL needs, and rewritten with the result after the last plugin's ADD. Each
//! write is atomic: a temporary file in the same directory, fsync, rename, fsync of the
//! directory.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::args::RuntimeConfig;
use crate::config::NetworkConfigList;
use crate::error::CacheError;

/// The default cache directory (berthd passes its own, under its state directory).
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/berth/cni";

/// The largest cache file read back.
const MAX_CACHE_BYTES: u64 = 8 << 20;

/// Tells our cache files from anything else.
const KIND: &str = "berth-cni-attachment/v1";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// One cached attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    kind: String,
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: PathBuf,
    /// The configuration list the ADD ran with.
    pub config: Value,
    /// The `CNI_ARGS` pairs of the ADD.
    pub cni_args: Vec<(String, String)>,
    /// The capability arguments of the ADD.
    pub runtime_config: RuntimeConfig,
    /// The last plugin's ADD result, as it printed it; none while the ADD runs.
    pub result: Option<Value>,
}

impl CacheEntry {
    pub(crate) fn new(
        list: &NetworkConfigList,
        container_id: &str,
        ifname: &str,
        netns: &Path,
        cni_args: Vec<(String, String)>,
        runtime_config: RuntimeConfig,
    ) -> CacheEntry {
        CacheEntry {
            kind: KIND.to_string(),
            network: list.name().to_string(),
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            netns: netns.to_path_buf(),
            config: list.to_value(),
            cni_args,
            runtime_config,
            result: None,
        }
    }
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct ResultCache {
    dir: PathBuf,
}

impl ResultCache {
    pub fn new(dir: impl Into<PathBuf>) -> ResultCache {
        ResultCache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of an attachment. The parts must have been checked (see the module docs).
    pub fn path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.dir
            .join(network)
            .join(container_id)
            .join(format!("{ifname}.json"))
    }

    /// Writes `entry` atomically.
    pub fn write(&self, entry: &CacheEntry) -> Result<PathBuf, CacheError> {
        let path = self.path(&entry.network, &entry.container_id, &entry.ifname);
        let dir = path.parent().unwrap_or(&self.dir).to_path_buf();
        let io = |op: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| CacheError::Io {
                op,
                path: p,
                source,
            }
        };
        fs::create_dir_all(&dir).map_err(io("create the cache directory", &dir))?;
        let bytes = serde_json::to_vec_pretty(entry).map_err(|source| CacheError::Json {
            path: path.clone(),
            source,
        })?;
        let tmp = dir.join(format!(
            ".{}.{}.{}.tmp",
            entry.ifname,
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("create", &tmp))?;
            f.write_all(&bytes).map_err(io("write", &tmp))?;
            f.sync_all().map_err(io("fsync", &tmp))?;
            fs::rename(&tmp, &path).map_err(io("rename into place", &path))
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(&dir)?;
        Ok(path)
    }

    /// The entry of an attachment, if cached.
    pub fn read(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<CacheEntry>, CacheError> {
        read_entry(&self.path(network, container_id, ifname))
    }

    /// Every cached attachment of `container_id` on `ifname`, whatever its network, in
    /// the order of the networks' names.
    pub fn find(&self, container_id: &str, ifname: &str) -> Result<Vec<CacheEntry>, CacheError> {
        let networks = match fs::read_dir(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(CacheError::Io {
                    op: "list",
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut names = Vec::new();
        for n in networks {
            let n = n.map_err(|source| CacheError::Io {
                op: "list",
                path: self.dir.clone(),
                source,
            })?;
            if let Some(name) = n.file_name().to_str() {
                if crate::config::check_network_name(name).is_ok() {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        let mut out = Vec::new();
        for n in names {
            if let Some(e) = self.read(&n, container_id, ifname)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Removes an attachment's entry, and its container's directory once empty. Removing
    /// what is not there is not an error.
    pub fn remove(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), CacheError> {
        let path = self.path(network, container_id, ifname);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(CacheError::Io {
                    op: "remove",
                    path,
                    source,
                })
            }
        }
        if let Some(dir) = path.parent() {
            // Fails while another interface of the container is cached: that is fine.
            let _ = fs::remove_dir(dir);
            sync_dir(dir.parent().unwrap_or(&self.dir))?;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), CacheError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| CacheError::Io {
            op: "fsync",
            path: dir.to_path_buf(),
            source,
        })
}

fn read_entry(path: &Path) -> Result<Option<CacheEntry>, CacheError> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CacheError::Io {
                op: "open",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    f.take(MAX_CACHE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| CacheError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_CACHE_BYTES {
        return Err(CacheError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_CACHE_BYTES,
        });
    }
    let entry: CacheEntry = serde_json::from_slice(&bytes).map_err(|source| CacheError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    if entry.kind != KIND {
        return Err(CacheError::Json {
            path: path.to_path_buf(),
            source: serde::de::Error::custom(format!("kind {:?} is not {KIND:?}", entry.kind)),
        });
    }
    Ok(Some(entry))
}

/// The configuration list an entry holds.
pub(crate) fn entry_config(
    cache: &ResultCache,
    e: &CacheEntry,
) -> Result<NetworkConfigList, CacheError> {
    let path = cache.path(&e.network, &e.container_id, &e.ifname);
    NetworkConfigList::from_value(e.config.clone(), &path.display().to_string())
        .map_err(|source| CacheError::Config { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(id: &str) -> CacheEntry {
        let list = NetworkConfigList::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"pods","plugins":[{"type":"bridge"}]}"#,
            "t",
        )
        .unwrap();
        CacheEntry::new(
            &list,
            id,
            "eth0",
            Path::new("/run/berth/netns/x"),
            vec![("IgnoreUnknown".into(), "1".into())],
            RuntimeConfig::default(),
        )
    }

    #[test]
    fn an_entry_round_trips_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::new(dir.path());
        let mut e = entry("c1");
        e.result = Some(json!({"cniVersion":"1.0.0"}));
        let path = cache.write(&e).unwrap();
        assert_eq!(path, dir.path().join("pods/c1/eth0.json"));
        assert_eq!(cache.read("pods", "c1", "eth0").unwrap(), Some(e.clone()));
        let names: Vec<_> = fs::read_dir(dir.path().join("pods/c1"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["eth0.json"]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(entry_config(&cache, &e).unwrap().name(), "pods");
    }

    #[test]
    fn find_looks_in_every_network_and_remove_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::new(dir.path());
        assert!(cache.find("c1", "eth0").unwrap().is_empty());
        let mut other = entry("c1");
        other.network = "other".into();
        cache.write(&entry("c1")).unwrap();
        cache.write(&other).unwrap();
        cache.write(&entry("c2")).unwrap();
        let found: Vec<_> = cache
            .find("c1", "eth0")
            .unwrap()
            .into_iter()
            .map(|e| e.network)
            .collect();
        assert_eq!(found, ["other", "pods"]);
        cache.remove("pods", "c1", "eth0").unwrap();
        cache.remove("pods", "c1", "eth0").unwrap();
        assert!(!dir.path().join("pods/c1").exists());
        assert!(dir.path().join("pods/c2/eth0.json").exists());
        assert_eq!(cache.find("c1", "eth0").unwrap().len(), 1);
    }

    #[test]
    fn a_corrupt_entry_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::new(dir.path());
        let p = cache.path("pods", "c1", "eth0");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, "{").unwrap();
        let e = cache.read("pods", "c1", "eth0").unwrap_err();
        assert!(e.to_string().contains("pods/c1/eth0.json"), "{e}");
        fs::write(&p, serde_json::to_vec(&json!({"kind": "x"})).unwrap()).unwrap();
        assert!(cache.read("pods", "c1", "eth0").is_err());
    }
}
