//! Containers: made from an image's snapshot and the OCI config of spec.rs, held by their
//! pod's shim.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use berth_shim::{CreateSpec, ExecSyncSpec, Reply, Request, Status};
use k8s_cri::v1::{
    Container, ContainerConfig, ContainerEventResponse, ContainerEventType, ContainerFilter,
    ContainerResources, ContainerState as CriState, ContainerStatus, ContainerUser, ImageSpec,
    LinuxContainerResources, LinuxContainerUser, NamespaceMode, PodSandboxConfig,
};

use super::{lock, shim_err, Engine};
use crate::error::{Error, Result};
use crate::spec::{self, container_name};
use crate::state::{new_id, now_ns, ContainerRecord, ContainerState, PodState};

/// How long a container may take to die once SIGKILLed.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// What an ExecSync gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// The key a container's name is reserved under: one per (name, pod, attempt).
pub fn reserved_name(c: &ContainerConfig, pod: &PodSandboxConfig) -> String {
    let m = c.metadata.clone().unwrap_or_default();
    let p = pod.metadata.clone().unwrap_or_default();
    format!(
        "{}_{}_{}_{}_{}",
        m.name, p.name, p.namespace, p.uid, m.attempt
    )
}

fn cri_state(s: ContainerState) -> i32 {
    match s {
        ContainerState::Created => CriState::ContainerCreated as i32,
        ContainerState::Running => CriState::ContainerRunning as i32,
        ContainerState::Exited => CriState::ContainerExited as i32,
        ContainerState::Unknown => CriState::ContainerUnknown as i32,
    }
}

/// Applies what the shim reports (live, or from its exit record) to the record.
fn apply(c: &mut ContainerRecord, s: &berth_shim::ContainerState) {
    c.pid = s.pid;
    if s.started_at > 0 {
        c.started_at = s.started_at;
    }
    match s.status {
        Status::Created => c.state = ContainerState::Created,
        Status::Running => c.state = ContainerState::Running,
        Status::Exited => {
            c.state = ContainerState::Exited;
            c.finished_at = s.finished_at;
            c.exit_code = s.exit_code;
            c.reason = if s.oom_killed {
                "OOMKilled".into()
            } else if s.exit_code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            };
        }
    }
}

/// Whether the container's recorded process still runs as it: a live pid whose cgroup
/// names the container (a pid reused after a reboot does not).
fn still_in_its_cgroup(c: &ContainerRecord) -> bool {
    c.pid > 0
        && fs::read_to_string(format!("/proc/{}/cgroup", c.pid)).is_ok_and(|t| t.contains(&c.id))
}

impl Engine {
    /// Brings a record up to date from the shim's exit record (cheap: one file read), so
    /// that exits while berthd was down or between calls show.
    pub(super) fn refresh(&self, c: &mut ContainerRecord) {
        if c.state != ContainerState::Running {
            return;
        }
        let exit = self
            .pod_paths(&c.pod_id)
            .run
            .join("exits")
            .join(format!("{}.json", c.id));
        let Ok(data) = fs::read(&exit) else {
            // No record yet: still running, unless its shim is gone (then nobody can say).
            if !self.shim_serves(&c.pod_id) {
                if still_in_its_cgroup(c) {
                    c.state = ContainerState::Unknown;
                    c.reason = "the pod's shim is gone".into();
                } else {
                    // The shim and the process are both gone (a reboot, or both killed):
                    // an exit nobody saw, as containerd reports it.
                    c.state = ContainerState::Exited;
                    c.exit_code = 255;
                    c.finished_at = now_ns();
                    c.reason = "Unknown".into();
                    c.message = "the container and its pod's shim ended unseen".into();
                    let _ = self.state.save_container(c);
                    self.emit(c, ContainerEventType::ContainerStoppedEvent);
                }
            }
            return;
        };
        if let Ok(s) = serde_json::from_slice::<berth_shim::ContainerState>(&data) {
            apply(c, &s);
            let _ = self.state.save_container(c);
            self.emit(c, ContainerEventType::ContainerStoppedEvent);
        }
    }

    /// Whether the pod's shim answers on its socket (a socket file alone may be a dead
    /// shim's).
    pub(super) fn shim_serves(&self, pod_id: &str) -> bool {
        std::os::unix::net::UnixStream::connect(self.pod_paths(pod_id).run.join(berth_shim::SOCKET))
            .is_ok()
    }

    /// Deletes a container whose shim is gone, by force, as its shim would have.
    fn delete_without_shim(&self, c: &ContainerRecord) -> Result<()> {
        let id = &c.id;
        match self.oci_binary(&c.runtime_handler) {
            Some(bin) => match bin.run(id, &["delete", "--force", id], b"") {
                Err(e) if e.to_string().contains("does not exist") => Ok(()),
                r => r.map(drop),
            },
            None => match self.builtin_runtime().delete(id, true) {
                Ok(()) | Err(libberth::Error::NotFound(_)) => Ok(()),
                Err(e) => Err(Error::Internal(format!(
                    "container {id}: remove without its shim: {}",
                    e.chain()
                ))),
            },
        }
    }

    fn emit(&self, c: &ContainerRecord, kind: ContainerEventType) {
        let _ = self.events.send(ContainerEventResponse {
            container_id: c.id.clone(),
            container_event_type: kind as i32,
            created_at: now_ns(),
            pod_sandbox_status: None,
            containers_statuses: vec![status_of(c)],
        });
    }

    pub fn create_container(&self, pod_id: &str, config: ContainerConfig) -> Result<String> {
        let pod_id = self.resolve_pod(pod_id)?;
        let name = container_name(&config).to_string();
        if config.metadata.is_none() || name.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "pod {pod_id}: container config: metadata.name is missing"
            )));
        }
        let image_ref = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .filter(|i| !i.is_empty())
            .ok_or_else(|| {
                Error::InvalidArgument(format!("container {name:?}: image is missing"))
            })?;
        let pod = self.pod(&pod_id)?;
        let p = lock(&pod);
        if p.state != PodState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "container {name:?}: pod sandbox {pod_id} is not ready"
            )));
        }
        let reserved = reserved_name(&config, &p.config);
        let id = new_id()?;
        self.reserve(&reserved, &id)?;
        let result = self.make_container(&id, &p, config, &image_ref);
        if result.is_err() {
            let _ = self.shim(&pod_id).call(&Request::Delete {
                id: id.clone(),
                force: true,
            });
            let _ = self.store.snapshots.remove(&id);
            let _ = self.state.remove_container(&id);
            self.release(&reserved, &id);
        }
        result.map(|()| id)
    }

    fn make_container(
        &self,
        id: &str,
        pod: &crate::state::PodRecord,
        config: ContainerConfig,
        image_ref: &str,
    ) -> Result<()> {
        let name = container_name(&config).to_string();
        let image = self.store.find_local(image_ref)?.ok_or_else(|| {
            Error::NotFoundIn(format!("container {name:?}: image {image_ref:?} not found"))
        })?;
        let image_config = self.store.image_config(&image)?;
        let dir = self.state.container_dir(id);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("bundle"))
            .map_err(|e| Error::internal(format!("create {}", dir.display()), e))?;
        let rootfs = {
            // Garbage collection waits while the layers are unpacked and taken.
            let _hold = self.store.images.hold_for_write()?;
            let unpacked = self
                .store
                .snapshots
                .unpack(&self.store.content, &image)
                .map_err(|e| Error::internal(format!("container {name:?}: unpack the image"), e))?;
            self.store.images.record_layer_sizes(&unpacked.sizes)?;
            self.store
                .snapshots
                .prepare(id, &self.store.content, &image)
                .map_err(|e| Error::internal(format!("container {name:?}: root file system"), e))?
        };
        // The image's volumes start with what the image has there (containerd's "copy").
        let volumes = berth_engine::volumes::image_volumes(&image_config, &rootfs, &dir, |v| {
            config.mounts.iter().any(|m| m.container_path == v)
        })
        .map_err(|e| Error::internal(format!("container {name:?}"), e))?;
        let target_pid = self.target_pid(&config);
        let cgroup_parent = pod
            .config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/berthd".into());
        let cgroups_path = format!("{}/{id}", cgroup_parent.trim_end_matches('/'));
        let mut oci = spec::container_spec(&spec::Input {
            id,
            config: &config,
            pod,
            pod_paths: &self.pod_paths(&pod.id),
            image: &image_config,
            rootfs: &rootfs,
            target_pid,
            volumes: &volumes,
            cgroups_path,
        })?;
        berth_image::runconfig::retain_known_syscalls(&mut oci, libseccomp_knows);
        if self.oci_binary(&pod.runtime_handler).is_some() {
            for_binary(&mut oci);
        }
        let user = &oci["process"]["user"];
        let uid = user["uid"].as_i64().unwrap_or(0);
        let gid = user["gid"].as_i64().unwrap_or(0);
        let groups: Vec<i64> = user["additionalGids"]
            .as_array()
            .map(|a| a.iter().filter_map(|g| g.as_i64()).collect())
            .unwrap_or_default();
        let bundle = dir.join("bundle");
        let path = bundle.join("config.json");
        fs::write(&path, serde_json::to_vec(&oci).expect("json"))
            .map_err(|e| Error::internal(format!("write {}", path.display()), e))?;
        let log_path = log_path(&pod.config, &config);
        if let Some(parent) = log_path.as_ref().and_then(|p| p.parent()) {
            fs::create_dir_all(parent).map_err(|e| {
                let what = format!("container {name:?}: create its log directory");
                Error::internal(format!("{what} {}", parent.display()), e)
            })?;
        }
        let mut record = ContainerRecord {
            id: id.to_string(),
            pod_id: pod.id.clone(),
            image: image_ref.to_string(),
            image_id: image.id.to_string(),
            image_ref: image
                .names
                .iter()
                .find_map(|n| {
                    let repo = n.rsplit_once(':').map_or(n.as_str(), |(r, _)| r);
                    (!repo.contains('@')).then(|| format!("{repo}@{}", image.manifest_digest))
                })
                .unwrap_or_else(|| image.id.to_string()),
            log_path: log_path.clone(),
            state: ContainerState::Created,
            pid: 0,
            created_at: now_ns(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            uid,
            gid,
            supplemental_groups: groups,
            runtime_handler: pod.runtime_handler.clone(),
            config,
        };
        self.state.save_container(&record)?;
        let reply = self
            .shim(&pod.id)
            .call(&Request::Create(CreateSpec {
                id: id.to_string(),
                bundle,
                log_path,
                tty: record.config.tty,
                stdin: record.config.stdin,
                stdin_once: record.config.stdin_once,
            }))
            .map_err(|e| shim_err(&pod.id, &format!("container {name:?}: create"), e))?;
        if let Reply::Created { pid } = reply {
            record.pid = pid;
        }
        self.state.save_container(&record)?;
        self.emit(&record, ContainerEventType::ContainerCreatedEvent);
        lock(&self.containers).insert(id.to_string(), Arc::new(Mutex::new(record)));
        Ok(())
    }

    /// The init pid of the container a TARGET pid namespace names, if it runs.
    fn target_pid(&self, config: &ContainerConfig) -> Option<i32> {
        let ns = config
            .linux
            .as_ref()?
            .security_context
            .as_ref()?
            .namespace_options
            .as_ref()?;
        if NamespaceMode::try_from(ns.pid) != Ok(NamespaceMode::Target) {
            return None;
        }
        let id = self.resolve_container(&ns.target_id).ok()?;
        let c = self.container(&id).ok()?;
        let c = lock(&c);
        (c.state == ContainerState::Running && c.pid > 0).then_some(c.pid)
    }

    pub fn start_container(&self, id: &str) -> Result<()> {
        let id = self.resolve_container(id)?;
        let c = self.container(&id)?;
        let mut c = lock(&c);
        if c.state != ContainerState::Created {
            return Err(Error::FailedPrecondition(format!(
                "container {id}: cannot start a container in state {:?}",
                c.state
            )));
        }
        if let Err(e) = self
            .shim(&c.pod_id)
            .call(&Request::Start { id: id.clone() })
        {
            c.state = ContainerState::Exited;
            c.finished_at = now_ns();
            c.exit_code = 128;
            c.reason = "StartError".into();
            c.message = e.to_string();
            let _ = self.state.save_container(&c);
            return Err(shim_err(&c.pod_id, &format!("container {id}: start"), e));
        }
        c.state = ContainerState::Running;
        c.started_at = now_ns();
        self.state.save_container(&c)?;
        self.emit(&c, ContainerEventType::ContainerStartedEvent);
        Ok(())
    }

    /// Sends the stop signal, waits up to `timeout` seconds, then SIGKILLs everything in it.
    pub fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let id = self.resolve_container(id)?;
        let c = self.container(&id)?;
        let mut c = lock(&c);
        self.refresh(&mut c);
        if matches!(c.state, ContainerState::Exited | ContainerState::Unknown) {
            return Ok(());
        }
        let shim = self.shim(&c.pod_id);
        if timeout > 0 && c.state == ContainerState::Running {
            let sig = self.stop_signal(&c);
            let _ = shim.call(&Request::Kill {
                id: id.clone(),
                signal: sig,
                all: false,
            });
            let wait = Duration::from_secs(timeout as u64);
            if let Ok(Reply::State(s)) =
                shim.with_timeout(wait + Duration::from_secs(5))
                    .call(&Request::Wait {
                        id: id.clone(),
                        timeout_ms: wait.as_millis() as u64,
                    })
            {
                apply(&mut c, &s);
            }
        }
        if c.state != ContainerState::Exited {
            let _ = shim.call(&Request::Kill {
                id: id.clone(),
                signal: libc::SIGKILL,
                all: true,
            });
            match shim
                .with_timeout(KILL_WAIT + Duration::from_secs(5))
                .call(&Request::Wait {
                    id: id.clone(),
                    timeout_ms: KILL_WAIT.as_millis() as u64,
                }) {
                Ok(Reply::State(s)) => apply(&mut c, &s),
                Ok(other) => {
                    return Err(Error::Internal(format!(
                        "container {id}: shim replied {other:?}"
                    )))
                }
                Err(e) => return Err(shim_err(&c.pod_id, &format!("container {id}: stop"), e)),
            }
            if c.state != ContainerState::Exited {
                return Err(Error::DeadlineExceeded(format!(
                    "container {id}: still running {}s after SIGKILL",
                    KILL_WAIT.as_secs()
                )));
            }
        }
        self.state.save_container(&c)?;
        self.emit(&c, ContainerEventType::ContainerStoppedEvent);
        Ok(())
    }

    /// The image's StopSignal, else SIGTERM.
    fn stop_signal(&self, c: &ContainerRecord) -> i32 {
        self.store
            .find_local(&c.image_id)
            .ok()
            .flatten()
            .and_then(|img| self.store.image_config(&img).ok())
            .and_then(|cfg| berth_image::runconfig::stop_signal(&cfg))
            .and_then(|s| libberth::signal::parse_signal(&s).ok())
            .unwrap_or(libc::SIGTERM)
    }

    pub fn remove_container(&self, id: &str) -> Result<()> {
        let id = match self.resolve_container(id) {
            Ok(id) => id,
            Err(Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let cell = self.container(&id)?;
        let c = lock(&cell);
        if self.shim_serves(&c.pod_id) {
            match self.shim(&c.pod_id).call(&Request::Delete {
                id: id.clone(),
                force: true,
            }) {
                Ok(_) => {}
                Err(berth_shim::ShimError::Refused(m)) if m.contains("does not exist") => {}
                Err(e) => return Err(shim_err(&c.pod_id, &format!("container {id}: remove"), e)),
            }
        } else {
            // Its shim is gone: what the shim would have deleted (the runtime's state, the
            // cgroup, any process left) is deleted here.
            self.delete_without_shim(&c)?;
        }
        self.store
            .snapshots
            .remove(&id)
            .or_else(|e| match e {
                berth_image::snapshot::SnapshotError::NoSnapshot(_) => Ok(()),
                e => Err(e),
            })
            .map_err(|e| {
                Error::internal(format!("container {id}: remove its root file system"), e)
            })?;
        self.state.remove_container(&id)?;
        if let Ok(pod) = self.pod(&c.pod_id) {
            // The pod's lock is not taken: its config does not change after creation.
            let pod_config = pod.lock().map(|p| p.config.clone()).unwrap_or_default();
            self.release(&reserved_name(&c.config, &pod_config), &id);
        }
        self.emit(&c, ContainerEventType::ContainerDeletedEvent);
        drop(c);
        lock(&self.containers).remove(&id);
        Ok(())
    }

    pub fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<(ContainerStatus, Vec<(String, String)>)> {
        let id = self.resolve_container(id)?;
        let c = self.container(&id)?;
        let mut c = lock(&c);
        self.refresh(&mut c);
        let mut info = Vec::new();
        if verbose {
            let v = serde_json::json!({
                "pid": c.pid,
                "sandboxID": c.pod_id,
                "bundle": self.state.container_dir(&id).join("bundle"),
                "rootfs": self.store.snapshots.rootfs(&id),
                "config": c.config,
            });
            info.push(("info".to_string(), v.to_string()));
        }
        Ok((status_of(&c), info))
    }

    /// Every container (brought up to date) that `keep` accepts, each under its lock.
    pub(super) fn each_container<T>(
        &self,
        mut keep: impl FnMut(&ContainerRecord) -> Option<T>,
    ) -> Vec<T> {
        let all: Vec<_> = lock(&self.containers).values().cloned().collect();
        let mut out = Vec::new();
        for cell in all {
            let mut c = lock(&cell);
            self.refresh(&mut c);
            out.extend(keep(&c));
        }
        out
    }

    pub fn list_containers(&self, filter: Option<&ContainerFilter>) -> Vec<Container> {
        let mut out = self.each_container(|c| {
            if let Some(f) = filter {
                if !selected(c, &f.id, &f.pod_sandbox_id, &f.label_selector)
                    || f.state
                        .as_ref()
                        .is_some_and(|s| s.state != cri_state(c.state))
                {
                    return None;
                }
            }
            Some(Container {
                id: c.id.clone(),
                pod_sandbox_id: c.pod_id.clone(),
                metadata: c.config.metadata.clone(),
                image: Some(ImageSpec {
                    image: c.image.clone(),
                    ..Default::default()
                }),
                image_ref: c.image_ref.clone(),
                state: cri_state(c.state),
                created_at: c.created_at,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                image_id: c.image_id.clone(),
            })
        });
        out.sort_by_key(|x| std::cmp::Reverse(x.created_at));
        out
    }

    pub fn exec_sync(&self, id: &str, cmd: Vec<String>, timeout: i64) -> Result<ExecOutput> {
        let id = self.resolve_container(id)?;
        if cmd.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "container {id}: exec: no command"
            )));
        }
        let pod_id = {
            let c = self.container(&id)?;
            let mut c = lock(&c);
            self.refresh(&mut c);
            if c.state != ContainerState::Running {
                return Err(Error::FailedPrecondition(format!(
                    "container {id}: exec: container is not running"
                )));
            }
            c.pod_id.clone()
        };
        // The container's lock is not held: an exec may last, and a stop must get through.
        let timeout = Duration::from_secs(timeout.max(0) as u64);
        let client = if timeout.is_zero() {
            self.shim(&pod_id)
                .with_timeout(Duration::from_secs(24 * 3600))
        } else {
            self.shim(&pod_id)
                .with_timeout(timeout + Duration::from_secs(10))
        };
        let reply = client
            .call(&Request::ExecSync(ExecSyncSpec {
                id: id.clone(),
                cmd: cmd.clone(),
                timeout_ms: timeout.as_millis() as u64,
            }))
            .map_err(|e| shim_err(&pod_id, &format!("container {id}: exec {cmd:?}"), e))?;
        let Reply::ExecSync(r) = reply else {
            return Err(Error::Internal(format!(
                "container {id}: shim replied {reply:?}"
            )));
        };
        if r.timed_out {
            return Err(Error::DeadlineExceeded(format!(
                "container {id}: command {cmd:?} timed out after {}s",
                timeout.as_secs()
            )));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(ExecOutput {
            stdout: b64.decode(&r.stdout).unwrap_or_default(),
            stderr: b64.decode(&r.stderr).unwrap_or_default(),
            exit_code: r.exit_code,
        })
    }

    /// The pod of a running container, for a session with its shim.
    pub(super) fn running_in(&self, id: &str, what: &str) -> Result<(String, String)> {
        let id = self.resolve_container(id)?;
        let c = self.container(&id)?;
        let mut c = lock(&c);
        self.refresh(&mut c);
        if c.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {id}: {what}: container is not running"
            )));
        }
        Ok((id, c.pod_id.clone()))
    }

    /// Checks that an Exec or Attach can start (before a streaming URL is handed out).
    pub fn check_running(&self, id: &str, what: &str) -> Result<String> {
        self.running_in(id, what).map(|(id, _)| id)
    }

    /// Starts an interactive exec: `fds` are the command's stdio (see berth-shim's
    /// `ExecSpec`); the session's stream stays open for its life.
    pub fn open_exec(
        &self,
        mut spec: berth_shim::ExecSpec,
        fds: Vec<std::os::fd::OwnedFd>,
    ) -> Result<berth_shim::Session> {
        use std::os::fd::AsFd;
        if spec.cmd.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "container {}: exec: no command",
                spec.id
            )));
        }
        let (id, pod_id) = self.running_in(&spec.id, "exec")?;
        spec.id = id.clone();
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        self.shim(&pod_id)
            .open(&Request::Exec(spec), &borrowed)
            .map_err(|e| shim_err(&pod_id, &format!("container {id}: exec"), e))
    }

    /// Attaches to a running container's streams.
    pub fn open_attach(
        &self,
        id: &str,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> Result<berth_shim::Session> {
        let (id, pod_id) = self.running_in(id, "attach")?;
        self.shim(&pod_id)
            .open(
                &Request::Attach {
                    id: id.clone(),
                    stdin,
                    stdout,
                    stderr,
                },
                &[],
            )
            .map_err(|e| shim_err(&pod_id, &format!("container {id}: attach"), e))
    }

    pub fn reopen_container_log(&self, id: &str) -> Result<()> {
        let (id, pod_id) = self.running_in(id, "reopen log")?;
        self.shim(&pod_id)
            .call(&Request::ReopenLog { id: id.clone() })
            .map_err(|e| shim_err(&pod_id, &format!("container {id}: reopen log"), e))?;
        Ok(())
    }

    pub fn update_container_resources(
        &self,
        id: &str,
        r: Option<&LinuxContainerResources>,
    ) -> Result<()> {
        let id = self.resolve_container(id)?;
        let c = self.container(&id)?;
        let mut c = lock(&c);
        let Some(r) = r else {
            return Ok(());
        };
        // The device rules stay as the container was made with: the section starts with
        // "deny all", and written alone it would take /dev/null from a running container.
        let mut v = spec::resources(Some(r));
        if let Some(o) = v.as_object_mut() {
            o.remove("devices");
        }
        let res: oci_spec::runtime::LinuxResources = serde_json::from_value(v)
            .map_err(|e| Error::InvalidArgument(format!("container {id}: resources: {e}")))?;
        match self.oci_binary(&c.runtime_handler) {
            None => {
                self.builtin_runtime().update(&id, &res).map_err(|e| {
                    Error::Internal(format!("container {id}: update: {}", e.chain()))
                })?;
            }
            Some(bin) => {
                let json = serde_json::to_vec(&res)
                    .map_err(|e| Error::Internal(format!("container {id}: resources: {e}")))?;
                bin.run(&id, &["update", "--resources", "-", &id], &json)?;
            }
        }
        if let Some(l) = c.config.linux.as_mut() {
            l.resources = Some(r.clone());
        }
        self.state.save_container(&c)?;
        Ok(())
    }
}

/// A config for an OCI runtime binary, whose pod's sandbox it did not make:
/// - the version says 1.0.2 (crun 1.8 refuses any other; the fields used are older than
///   the version berthd writes for itself, or ignored where unknown);
/// - no container-type/sandbox-id annotations: runtimes that group a pod's containers by
///   them (runsc, kata) would look for a sandbox of theirs that berthd's built-in pause is
///   not, so each container is a sandbox of its own in the pod's namespaces.
fn for_binary(oci: &mut serde_json::Value) {
    oci["ociVersion"] = "1.0.2-dev".into();
    if let Some(a) = oci["annotations"].as_object_mut() {
        a.remove("io.kubernetes.cri.container-type");
        a.remove("io.kubernetes.cri.sandbox-id");
    }
}

/// Whether a container passes a list filter: an id prefix, a pod id prefix, labels.
pub(super) fn selected(
    c: &ContainerRecord,
    id: &str,
    pod: &str,
    labels: &std::collections::HashMap<String, String>,
) -> bool {
    c.id.starts_with(id)
        && c.pod_id.starts_with(pod)
        && labels
            .iter()
            .all(|(k, v)| c.config.labels.get(k) == Some(v))
}

/// The kubelet's log path: the pod's log directory joined with the container's path.
fn log_path(pod: &PodSandboxConfig, c: &ContainerConfig) -> Option<PathBuf> {
    if c.log_path.is_empty() {
        return None;
    }
    if pod.log_directory.is_empty() {
        return Some(PathBuf::from(&c.log_path)).filter(|p| p.is_absolute());
    }
    Some(PathBuf::from(&pod.log_directory).join(&c.log_path))
}

/// Whether the linked libseccomp knows a system call (it refuses a profile naming one
/// it does not).
fn libseccomp_knows(name: &str) -> bool {
    libseccomp::ScmpSyscall::from_name(name).is_ok()
}

fn status_of(c: &ContainerRecord) -> ContainerStatus {
    ContainerStatus {
        id: c.id.clone(),
        metadata: c.config.metadata.clone(),
        state: cri_state(c.state),
        created_at: c.created_at,
        started_at: c.started_at,
        finished_at: c.finished_at,
        exit_code: c.exit_code,
        image: Some(ImageSpec {
            image: c.image.clone(),
            ..Default::default()
        }),
        image_ref: c.image_ref.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts: c.config.mounts.clone(),
        log_path: c
            .log_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        resources: c.config.linux.as_ref().map(|l| ContainerResources {
            linux: l.resources.clone(),
            windows: None,
        }),
        image_id: c.image_id.clone(),
        user: Some(ContainerUser {
            linux: Some(LinuxContainerUser {
                uid: c.uid,
                gid: c.gid,
                supplemental_groups: std::iter::once(c.gid)
                    .chain(c.supplemental_groups.iter().copied())
                    .collect(),
            }),
        }),
    }
}
