//! What berthd knows of pods and containers, in files it reloads at start.
//!
//! ```text
//! <state_dir>/pods/<id>/pod.json                 PodRecord
//! <state_dir>/pods/<id>/{hostname,hosts,resolv.conf}
//! <state_dir>/containers/<id>/container.json     ContainerRecord
//! <state_dir>/containers/<id>/bundle/config.json the OCI config the shim creates it from
//! <run_dir>/pods/<id>/                           the pod's shim: shim.sock, shim.log,
//!                                                ns/ (pinned namespaces), exits/, shm/
//! ```
//! Records are written atomically (temp file, fsync, rename): a `kill -9` at any moment
//! leaves the old record or the new one. berthd is a cache of them, never their owner.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use berth_engine::records::write_atomic;
use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodState {
    Ready,
    NotReady,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub config: PodSandboxConfig,
    pub runtime_handler: String,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub state: PodState,
    /// The pod's IPs, IPv4 first (none for host network).
    pub ips: Vec<String>,
    /// The pod has its own network namespace.
    pub own_netns: bool,
    /// Its path while it exists (made before the CNI ADD, removed after the DEL).
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// The pause's host pid, 0 once stopped.
    pub pause_pid: i32,
    /// RunPodSandbox finished (the pod was Ready once). A record without it is what a
    /// crash in the middle of RunPodSandbox left: its id never reached the kubelet.
    #[serde(default = "yes")]
    pub made: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub config: ContainerConfig,
    /// The image as the kubelet named it, and the ID it resolved to.
    pub image: String,
    pub image_id: String,
    /// The image's repo digest, where it has one (else its ID).
    pub image_ref: String,
    pub log_path: Option<PathBuf>,
    pub state: ContainerState,
    pub pid: i32,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// The process's user, as the OCI config has it.
    #[serde(default)]
    pub uid: i64,
    #[serde(default)]
    pub gid: i64,
    #[serde(default)]
    pub supplemental_groups: Vec<i64>,
    /// Its pod's RuntimeClass handler ("" or "berth": libberth in the shim).
    #[serde(default)]
    pub runtime_handler: String,
}

/// The two record directories.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

fn mkdir(p: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .map_err(|e| Error::internal(format!("create {}", p.display()), e))
}

impl StateDir {
    pub fn open(root: &Path) -> Result<StateDir> {
        mkdir(&root.join("pods"))?;
        mkdir(&root.join("containers"))?;
        Ok(StateDir {
            root: root.to_path_buf(),
        })
    }

    pub fn pod_dir(&self, id: &str) -> PathBuf {
        self.root.join("pods").join(id)
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    pub fn save_pod(&self, p: &PodRecord) -> Result<()> {
        let dir = self.pod_dir(&p.id);
        mkdir(&dir)?;
        save(&dir.join("pod.json"), p)
    }

    pub fn save_container(&self, c: &ContainerRecord) -> Result<()> {
        let dir = self.container_dir(&c.id);
        mkdir(&dir)?;
        save(&dir.join("container.json"), c)
    }

    pub fn remove_pod(&self, id: &str) -> Result<()> {
        remove_dir(&self.pod_dir(id))
    }

    pub fn remove_container(&self, id: &str) -> Result<()> {
        remove_dir(&self.container_dir(id))
    }

    /// Every pod record; unreadable ones are reported and skipped (returned apart).
    pub fn load_pods(&self) -> Result<(Vec<PodRecord>, Vec<String>)> {
        load_all(&self.root.join("pods"), "pod.json")
    }

    pub fn load_containers(&self) -> Result<(Vec<ContainerRecord>, Vec<String>)> {
        load_all(&self.root.join("containers"), "container.json")
    }
}

fn save<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let data = serde_json::to_vec(v).map_err(|e| Error::internal("encode a record", e))?;
    write_atomic(path, &data).map_err(|e| Error::internal(format!("write {}", path.display()), e))
}

fn remove_dir(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::internal(format!("remove {}", p.display()), e)),
    }
}

fn load_all<T: for<'de> Deserialize<'de>>(dir: &Path, file: &str) -> Result<(Vec<T>, Vec<String>)> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    let rd =
        fs::read_dir(dir).map_err(|e| Error::internal(format!("read {}", dir.display()), e))?;
    for e in rd.flatten() {
        let path = e.path().join(file);
        match fs::read(&path) {
            Ok(data) => match serde_json::from_slice(&data) {
                Ok(v) => out.push(v),
                Err(err) => bad.push(format!("{}: {err}", path.display())),
            },
            // A directory whose record was never written: an interrupted create.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => bad.push(format!(
                "{}: no record (an interrupted create)",
                e.path().display()
            )),
            Err(err) => bad.push(format!("{}: {err}", path.display())),
        }
    }
    Ok((out, bad))
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// 64 hex digits from the kernel's random source.
pub fn new_id() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::internal("read /dev/urandom", e))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::open(tmp.path()).unwrap();
        let pod = PodRecord {
            id: "p1".into(),
            config: PodSandboxConfig {
                hostname: "h".into(),
                ..Default::default()
            },
            runtime_handler: String::new(),
            created_at: 5,
            state: PodState::Ready,
            ips: vec!["10.0.0.2".into()],
            own_netns: true,
            netns: None,
            pause_pid: 42,
            made: true,
        };
        s.save_pod(&pod).unwrap();
        fs::create_dir_all(s.pod_dir("p2")).unwrap();
        fs::create_dir_all(s.pod_dir("p3")).unwrap();
        fs::write(s.pod_dir("p3").join("pod.json"), "{").unwrap();
        let (pods, bad) = s.load_pods().unwrap();
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].config.hostname, "h");
        assert_eq!(pods[0].state, PodState::Ready);
        assert_eq!(bad.len(), 2, "{bad:?}");
        s.remove_pod("p1").unwrap();
        s.remove_pod("p1").unwrap();
        assert!(!s.pod_dir("p1").exists());
    }

    #[test]
    fn ids_are_64_hex_digits_and_differ() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
