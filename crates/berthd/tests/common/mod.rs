//! berthd as the kubelet meets it: started as a process on its own directories, driven over
//! its unix socket by a CRI v1 client, checked on the host.
#![allow(dead_code)]

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Response, Status};

/// How long one CRI call may take (debug builds, two busy cores).
pub const CALL_LIMIT: Duration = Duration::from_secs(60);
/// How long berthd may take to serve after it starts.
const START_LIMIT: Duration = Duration::from_secs(30);

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True (and the skip said) when the test cannot run: these tests run berthd as root.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    berth_testkit::skip(test, "needs root");
    true
}

/// The berth-shim binary beside berthd's, built on demand: cargo builds a package's own
/// binaries for its tests, not another package's.
pub fn shim_binary() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_berthd")).parent().unwrap();
    let shim = dir.join("berth-shim");
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "berth-shim", "--bin", "berth-shim"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo to build berth-shim");
        assert!(st.success(), "building berth-shim failed");
    });
    assert!(shim.is_file(), "{} was not built", shim.display());
    shim
}

/// One berthd with its own socket, state, run and image directories. Dropping it removes
/// every pod it has (so a failed test leaves nothing running), then stops it.
pub struct Berthd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    child: Option<Child>,
    /// Runs in a network namespace of its own (so its bridges and rules stay there).
    private_net: bool,
    rt: tokio::runtime::Runtime,
    pub rs: RuntimeServiceClient<Channel>,
    pub is: ImageServiceClient<Channel>,
}

impl Berthd {
    pub fn start() -> Berthd {
        Berthd::start_with(false, |_| None, "")
    }

    /// berthd with `extra` appended to its config file (TOML: e.g. `[runtimes.runc]`).
    pub fn start_with_config(extra: &str) -> Berthd {
        Berthd::start_with(false, |_| None, extra)
    }

    /// berthd in a network namespace of its own, with the network `conflist(dir)` gives
    /// (`dir`: the test's directory, for plugin state).
    pub fn start_private_net(conflist: impl FnOnce(&Path) -> String) -> Berthd {
        Berthd::start_with(true, |d| Some(conflist(d)), "")
    }

    fn start_with(
        private_net: bool,
        conflist: impl FnOnce(&Path) -> Option<String>,
        extra: &str,
    ) -> Berthd {
        let dir = tempfile::Builder::new()
            .prefix("berthd-test-")
            .tempdir()
            .unwrap();
        let socket = dir.path().join("berthd.sock");
        let net_d = dir.path().join("net.d");
        fs::create_dir_all(&net_d).unwrap();
        // Loopback only, unless a test installs another network.
        let net = conflist(dir.path()).unwrap_or_else(|| {
            r#"{"cniVersion": "1.0.0", "name": "berth-test-lo", "plugins": [{"type": "loopback"}]}"#
                .to_string()
        });
        fs::write(net_d.join("10-test.conflist"), net).unwrap();
        let config = format!(
            "socket = {:?}\nstate_dir = {:?}\nrun_dir = {:?}\nroot = {:?}\n\
             registries_conf = {:?}\nshim = {:?}\nlog_level = \"debug\"\n\
             cni_conf_dir = {:?}\ncni_bin_dirs = [{:?}, \"/opt/cni/bin\", \"/usr/lib/cni\"]\n",
            socket,
            dir.path().join("state"),
            dir.path().join("run"),
            dir.path().join("root"),
            dir.path().join("registries.toml"),
            shim_binary(),
            net_d,
            dir.path().join("plugins"),
        );
        fs::create_dir_all(dir.path().join("plugins")).unwrap();
        fs::write(dir.path().join("berthd.toml"), config + extra).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let channel = {
            let _g = rt.enter();
            let socket = socket.clone();
            Endpoint::from_static("http://localhost").connect_with_connector_lazy(
                tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(socket).await?,
                        ))
                    }
                }),
            )
        };
        let mut b = Berthd {
            socket,
            child: None,
            private_net,
            rt,
            rs: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            is: ImageServiceClient::new(channel),
            dir,
        };
        b.spawn();
        b
    }

    /// Starts the berthd process (again) and waits until it answers.
    pub fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("berthd.log"))
            .unwrap();
        let mut cmd = if self.private_net {
            // A new network namespace has its loopback down.
            let mut c = Command::new("unshare");
            c.args([
                "--net",
                "--",
                "sh",
                "-c",
                "ip link set lo up && exec \"$0\" \"$@\"",
            ])
            .arg(env!("CARGO_BIN_EXE_berthd"));
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_berthd"))
        };
        let child = cmd
            .arg("--config")
            .arg(self.dir.path().join("berthd.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start berthd");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("berthd exited at start ({st}): {}", self.log());
            }
            let mut rs = self.rs.clone();
            let ok = self.rt.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(2),
                    rs.version(VersionRequest {
                        version: "v1".into(),
                    }),
                )
                .await
            });
            if matches!(ok, Ok(Ok(_))) {
                return;
            }
            assert!(
                start.elapsed() < START_LIMIT,
                "berthd did not serve within {START_LIMIT:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// berthd's pid (while it runs).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("berthd runs").id() as i32
    }

    /// Runs `f` on a thread inside berthd's network namespace.
    pub fn in_net<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = fs::File::open(format!("/proc/{}/ns/net", self.pid())).unwrap();
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// SIGKILLs berthd, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Runs an async block on the client's runtime, bounded.
    pub fn block_on<F: Future>(&self, what: &str, f: F) -> F::Output {
        match self
            .rt
            .block_on(async { tokio::time::timeout(CALL_LIMIT, f).await })
        {
            Ok(v) => v,
            Err(_) => panic!("{what}: not done within {CALL_LIMIT:?}"),
        }
    }

    /// One call, bounded: a hang fails the test with the call's name.
    pub fn call<T, F>(&self, what: &str, f: F) -> Result<T, Status>
    where
        F: Future<Output = Result<Response<T>, Status>>,
    {
        match self
            .rt
            .block_on(async { tokio::time::timeout(CALL_LIMIT, f).await })
        {
            Ok(r) => r.map(Response::into_inner),
            Err(_) => panic!("CRI {what}: no answer within {CALL_LIMIT:?}"),
        }
    }

    pub fn run_pod(&self, config: &PodSandboxConfig) -> Result<String, Status> {
        let mut rs = self.rs.clone();
        self.call(
            "RunPodSandbox",
            rs.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            }),
        )
        .map(|r| r.pod_sandbox_id)
    }

    pub fn create(
        &self,
        pod: &str,
        config: &ContainerConfig,
        pod_config: &PodSandboxConfig,
    ) -> Result<String, Status> {
        let mut rs = self.rs.clone();
        self.call(
            "CreateContainer",
            rs.create_container(CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config.clone()),
                sandbox_config: Some(pod_config.clone()),
            }),
        )
        .map(|r| r.container_id)
    }

    pub fn start_ctr(&self, id: &str) -> Result<(), Status> {
        let mut rs = self.rs.clone();
        self.call(
            "StartContainer",
            rs.start_container(StartContainerRequest {
                container_id: id.into(),
            }),
        )
        .map(drop)
    }

    pub fn stop_ctr(&self, id: &str, timeout: i64) -> Result<(), Status> {
        let mut rs = self.rs.clone();
        self.call(
            "StopContainer",
            rs.stop_container(StopContainerRequest {
                container_id: id.into(),
                timeout,
            }),
        )
        .map(drop)
    }

    pub fn remove_ctr(&self, id: &str) -> Result<(), Status> {
        let mut rs = self.rs.clone();
        self.call(
            "RemoveContainer",
            rs.remove_container(RemoveContainerRequest {
                container_id: id.into(),
            }),
        )
        .map(drop)
    }

    pub fn status(&self, id: &str) -> Result<ContainerStatus, Status> {
        let mut rs = self.rs.clone();
        self.call(
            "ContainerStatus",
            rs.container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            }),
        )
        .map(|r| r.status.unwrap())
    }

    pub fn pod_status(&self, id: &str) -> Result<PodSandboxStatus, Status> {
        let mut rs = self.rs.clone();
        self.call(
            "PodSandboxStatus",
            rs.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            }),
        )
        .map(|r| r.status.unwrap())
    }

    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<ExecSyncResponse, Status> {
        let mut rs = self.rs.clone();
        self.call(
            "ExecSync",
            rs.exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            }),
        )
    }

    pub fn stop_pod(&self, id: &str) -> Result<(), Status> {
        let mut rs = self.rs.clone();
        self.call(
            "StopPodSandbox",
            rs.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            }),
        )
        .map(drop)
    }

    pub fn remove_pod(&self, id: &str) -> Result<(), Status> {
        let mut rs = self.rs.clone();
        self.call(
            "RemovePodSandbox",
            rs.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            }),
        )
        .map(drop)
    }

    pub fn pods(&self) -> Vec<PodSandbox> {
        let mut rs = self.rs.clone();
        self.call(
            "ListPodSandbox",
            rs.list_pod_sandbox(ListPodSandboxRequest { filter: None }),
        )
        .map(|r| r.items)
        .unwrap_or_default()
    }

    pub fn containers(&self, filter: Option<ContainerFilter>) -> Vec<Container> {
        let mut rs = self.rs.clone();
        self.call(
            "ListContainers",
            rs.list_containers(ListContainersRequest { filter }),
        )
        .map(|r| r.containers)
        .unwrap()
    }

    /// Waits until the container's state is `want`.
    pub fn wait_state(&self, id: &str, want: ContainerState) -> ContainerStatus {
        wait_for(&format!("container {id} to be {want:?}"), || {
            let s = self.status(id).ok()?;
            (s.state == want as i32).then_some(s)
        })
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        if self.child.is_none() {
            self.spawn_quietly();
        }
        for p in self.pods() {
            let _ = self.remove_pod(&p.id);
        }
        self.kill9();
        // berthd's netns directory is a mount point of its own; the temporary directory
        // cannot go while it is.
        let _ = nix::mount::umount2(
            self.run_dir().join("netns").as_path(),
            nix::mount::MntFlags::MNT_DETACH,
        );
    }
}

impl Berthd {
    fn spawn_quietly(&mut self) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn()));
        if r.is_err() {
            eprintln!("berthd could not be restarted for the cleanup");
        }
    }
}

/// Polls `f` until it gives a value, for up to 30 s.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn pod_config(name: &str, log_dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}-{}", std::process::id()),
            namespace: "berth-test".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: log_dir.display().to_string(),
        dns_config: Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["berth-test.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: [("app".to_string(), name.to_string())].into(),
        annotations: [("note".to_string(), "kept".to_string())].into(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container of the built-in busybox image running `script` under sh.
pub fn container_config(name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: berth_image::builtin::NAME.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log"),
        labels: [("ctr".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

/// The text of a CRI log's lines (timestamps, streams and tags dropped).
pub fn log_texts(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3).map(str::to_string))
        .collect()
}

/// Mount points at or under `p`.
pub fn mounts_under(p: &Path) -> Vec<String> {
    let p = p.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&p))
        .map(str::to_string)
        .collect()
}

/// Live (not zombie) processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'));
            !zombie
                && String::from_utf8_lossy(&cmd)
                    .replace('\0', " ")
                    .contains(needle)
        })
        .collect()
}

// ---- For the fault tests (tests/faults.rs): restarts with another config, clients of
// other threads, and what a failed or removed object may have left on the host.

impl Berthd {
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("berthd.toml")
    }

    /// Stops berthd (SIGKILL, if it runs), rewrites its config file through `edit` (which
    /// gets the current text) and starts it again.
    pub fn restart_with_config(&mut self, edit: impl FnOnce(String) -> String) {
        self.kill9();
        let text = fs::read_to_string(self.config_path()).unwrap();
        fs::write(self.config_path(), edit(text)).unwrap();
        self.spawn();
    }

    pub fn root_dir(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// What berthd may have left on the host for objects that should be gone: mounts under
    /// the test directory (but the netns directory's own), network namespaces, pod run
    /// directories, pod and container records, container snapshots, libberth container
    /// state, CNI cache entries, shim (and pause) processes. Empty when nothing is left.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        let netns_dir = self.run_dir().join("netns");
        for m in mounts_under(self.dir.path()) {
            if Path::new(&m) != netns_dir {
                out.push(format!("mount {m}"));
            }
        }
        for (what, dir) in [
            ("netns", netns_dir.clone()),
            ("pod run dir", self.run_dir().join("pods")),
            ("pod record", self.state_dir().join("pods")),
            ("container record", self.state_dir().join("containers")),
            ("snapshot", self.root_dir().join("snapshots/containers")),
            ("libberth state", self.run_dir().join("runtime")),
        ] {
            for e in entries(&dir) {
                out.push(format!("{what} {}", dir.join(e).display()));
            }
        }
        for f in files_under(&self.state_dir().join("cni")) {
            out.push(format!("CNI cache entry {}", f.display()));
        }
        let pods = self.run_dir().join("pods");
        for pid in processes_with(&pods.to_string_lossy()) {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            out.push(format!(
                "shim process {pid}: {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
        out
    }

    /// Asserts that nothing is left (see `leftovers`), naming `after` and what is left.
    pub fn assert_clean(&self, after: &str) {
        let left = self.leftovers();
        assert!(left.is_empty(), "after {after}, left behind: {left:#?}");
    }
}

/// A client of `socket` for use on the tokio runtime this is called in (the harness's own
/// client only moves while its runtime is driven by the test's thread).
pub fn runtime_client(socket: &Path) -> RuntimeServiceClient<Channel> {
    let socket = socket.to_path_buf();
    let channel = Endpoint::from_static("http://localhost").connect_with_connector_lazy(
        tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }),
    );
    RuntimeServiceClient::new(channel)
}

/// The names in a directory (none when it is missing), sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every file (not directory) under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The cgroup directories named `parent` (an absolute cgroup path, as a pod's
/// `cgroup_parent`), one per mounted hierarchy that has it (v1 controllers, v2).
pub fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let rel = parent.trim_start_matches('/');
    let mut out = Vec::new();
    for line in fs::read_to_string("/proc/self/mountinfo").unwrap().lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(dash) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if !matches!(f.get(dash + 1), Some(&"cgroup") | Some(&"cgroup2")) {
            continue;
        }
        let d = Path::new(f[4]).join(rel);
        if d.is_dir() {
            out.push(d);
        }
    }
    out
}

/// The cgroups below `parent` in every hierarchy: the containers' cgroups when `parent` is
/// their pod's cgroup parent.
pub fn cgroups_under(parent: &str) -> Vec<PathBuf> {
    cgroup_dirs(parent)
        .into_iter()
        .flat_map(|d| {
            fs::read_dir(&d)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Removes the (empty) cgroup `parent` from every hierarchy: a test's own cgroup parent,
/// which the runtime makes and, like runc, leaves.
pub fn remove_cgroup_parent(parent: &str) {
    for d in cgroup_dirs(parent) {
        let _ = fs::remove_dir(d);
    }
}

/// Writes an executable (0755) script.
pub fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    // A new file under another name, renamed over: a script being run keeps its text.
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&tmp, path).unwrap();
}

impl Berthd {
    /// Runs an async block on the client's runtime, bounded by `limit` (for many calls at
    /// once, which may take longer than one call's limit).
    pub fn block_on_for<F: Future>(&self, what: &str, limit: Duration, f: F) -> F::Output {
        match self
            .rt
            .block_on(async { tokio::time::timeout(limit, f).await })
        {
            Ok(v) => v,
            Err(_) => panic!("{what}: not done within {limit:?}"),
        }
    }
}
