//! A small blocking CRI v1 client over containerd's unix socket, for the cri
//! test. Every call has a deadline: it is sent to containerd as the gRPC
//! timeout, and the client gives up a little later on its own, so that a hung
//! runtime makes a call fail with its name and duration, never hangs the test.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerFilter, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ExecSyncResponse, ImageSpec, ImageStatusRequest,
    ListContainersRequest, ListPodSandboxRequest, PodSandbox, PodSandboxConfig, PodSandboxFilter,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest, VersionRequest, VersionResponse,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Response, Status};
use tower::service_fn;

/// How much longer than the deadline it gave containerd the client waits for
/// an answer before it gives up itself.
const CLIENT_GRACE: Duration = Duration::from_secs(5);

/// A failed CRI call: which one, after how long, and containerd's status.
pub(crate) struct RpcError {
    what: String,
    elapsed: Duration,
    status: Status,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CRI {} failed after {:.1}s: {:?}: {}",
            self.what,
            self.elapsed.as_secs_f64(),
            self.status.code(),
            self.status.message()
        )
    }
}

/// Panics with the call's own message; for calls that must succeed.
pub(crate) fn ok<T>(result: Result<T, RpcError>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) struct CriClient {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// Dropped last: the channel's worker task lives on it.
    rt: tokio::runtime::Runtime,
}

impl CriClient {
    /// A client of the CRI server on `socket`. The connection is made by the
    /// first call.
    pub(crate) fn new(socket: &Path) -> CriClient {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime for the CRI client");
        let socket = socket.to_path_buf();
        // The URI is required by tonic but unused: the connector ignores it.
        let endpoint = Endpoint::from_static("http://localhost").connect_timeout(CLIENT_GRACE);
        let channel = {
            // The channel's worker task is spawned on the runtime.
            let _entered = rt.enter();
            endpoint.connect_with_connector_lazy(service_fn(move |_: Uri| {
                let socket: PathBuf = socket.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
            }))
        };
        CriClient {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            rt,
        }
    }

    /// Runs one call to completion within `deadline` (plus the client's grace).
    fn call<T>(
        &self,
        what: String,
        deadline: Duration,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, RpcError> {
        let start = Instant::now();
        // The timer must be made inside the runtime.
        let result = self
            .rt
            .block_on(async { tokio::time::timeout(deadline + CLIENT_GRACE, call).await });
        let elapsed = start.elapsed();
        let result = match result {
            // tonic enforces the deadline it sends: it reports it as Cancelled.
            Ok(Err(status)) if status.code() == Code::Cancelled && elapsed >= deadline => {
                Err(Status::deadline_exceeded(format!(
                    "no answer within the {deadline:?} deadline ({})",
                    status.message()
                )))
            }
            Ok(answer) => answer.map(Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer from containerd within {:?} (client-side deadline)",
                deadline + CLIENT_GRACE
            ))),
        };
        match &result {
            Ok(_) => eprintln!("cri: {what} -> ok in {:.2}s", elapsed.as_secs_f64()),
            Err(status) => eprintln!(
                "cri: {what} -> {:?} in {:.2}s: {}",
                status.code(),
                elapsed.as_secs_f64(),
                status.message()
            ),
        }
        result.map_err(|status| RpcError {
            what,
            elapsed,
            status,
        })
    }

    pub(crate) fn version(&self, deadline: Duration) -> Result<VersionResponse, RpcError> {
        let mut c = self.runtime.clone();
        let req = request(
            VersionRequest {
                version: "v1".into(),
            },
            deadline,
        );
        self.call(
            "Version".into(),
            deadline,
            async move { c.version(req).await },
        )
    }

    /// Whether the image service knows `image` (imported, never pulled).
    pub(crate) fn image_present(&self, image: &str, deadline: Duration) -> Result<bool, RpcError> {
        let mut c = self.images.clone();
        let req = request(
            ImageStatusRequest {
                image: Some(image_spec(image)),
                verbose: false,
            },
            deadline,
        );
        self.call(format!("ImageStatus {image}"), deadline, async move {
            c.image_status(req).await
        })
        .map(|r| r.image.is_some())
    }

    pub(crate) fn run_pod_sandbox(
        &self,
        config: &PodSandboxConfig,
        deadline: Duration,
    ) -> Result<String, RpcError> {
        let mut c = self.runtime.clone();
        let req = request(
            RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            },
            deadline,
        );
        self.call("RunPodSandbox".into(), deadline, async move {
            c.run_pod_sandbox(req).await
        })
        .map(|r| r.pod_sandbox_id)
    }

    pub(crate) fn create_container(
        &self,
        pod: &str,
        config: ContainerConfig,
        pod_config: &PodSandboxConfig,
        deadline: Duration,
    ) -> Result<String, RpcError> {
        let mut c = self.runtime.clone();
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let req = request(
            CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config),
                sandbox_config: Some(pod_config.clone()),
            },
            deadline,
        );
        self.call(format!("CreateContainer {name}"), deadline, async move {
            c.create_container(req).await
        })
        .map(|r| r.container_id)
    }

    pub(crate) fn start_container(&self, id: &str, deadline: Duration) -> Result<(), RpcError> {
        let mut c = self.runtime.clone();
        let req = request(
            StartContainerRequest {
                container_id: id.into(),
            },
            deadline,
        );
        self.call(
            format!("StartContainer {}", short(id)),
            deadline,
            async move { c.start_container(req).await },
        )
        .map(drop)
    }

    /// The container's status and, as containerd's verbose info, its pid
    /// (`None` once it has none).
    pub(crate) fn container_status(
        &self,
        id: &str,
        deadline: Duration,
    ) -> Result<(ContainerStatus, Option<i64>), RpcError> {
        let mut c = self.runtime.clone();
        let req = request(
            ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            },
            deadline,
        );
        let answer = self.call(
            format!("ContainerStatus {}", short(id)),
            deadline,
            async move { c.container_status(req).await },
        )?;
        let pid = answer
            .info
            .get("info")
            .and_then(|info| serde_json::from_str::<serde_json::Value>(info).ok())
            .and_then(|info| info["pid"].as_i64())
            .filter(|&pid| pid > 0);
        let status = answer.status.unwrap_or_else(|| {
            panic!("ContainerStatus {id}: containerd answered without a status")
        });
        Ok((status, pid))
    }

    /// Runs `cmd` in the container; `timeout` is the CRI's own (whole seconds).
    pub(crate) fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: Duration,
    ) -> Result<ExecSyncResponse, RpcError> {
        let mut c = self.runtime.clone();
        let req = request(
            ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: timeout.as_secs() as i64,
            },
            timeout,
        );
        self.call(
            format!("ExecSync {} {cmd:?}", short(id)),
            timeout,
            async move { c.exec_sync(req).await },
        )
    }

    /// StopContainer: the stop signal, SIGKILL after `grace`.
    pub(crate) fn stop_container(
        &self,
        id: &str,
        grace: Duration,
        deadline: Duration,
    ) -> Result<(), RpcError> {
        let mut c = self.runtime.clone();
        let req = request(
            StopContainerRequest {
                container_id: id.into(),
                timeout: grace.as_secs() as i64,
            },
            deadline,
        );
        self.call(
            format!("StopContainer {}", short(id)),
            deadline,
            async move { c.stop_container(req).await },
        )
        .map(drop)
    }

    pub(crate) fn remove_container(&self, id: &str, deadline: Duration) -> Result<(), RpcError> {
        let mut c = self.runtime.clone();
        let req = request(
            RemoveContainerRequest {
                container_id: id.into(),
            },
            deadline,
        );
        self.call(
            format!("RemoveContainer {}", short(id)),
            deadline,
            async move { c.remove_container(req).await },
        )
        .map(drop)
    }

    /// Ids of the containers of `pod` (of every pod with `None`).
    pub(crate) fn list_containers(
        &self,
        pod: Option<&str>,
        deadline: Duration,
    ) -> Result<Vec<String>, RpcError> {
        let mut c = self.runtime.clone();
        let req = request(
            ListContainersRequest {
                filter: pod.map(|pod| ContainerFilter {
                    pod_sandbox_id: pod.into(),
                    ..ContainerFilter::default()
                }),
            },
            deadline,
        );
        self.call("ListContainers".into(), deadline, async move {
            c.list_containers(req).await
        })
        .map(|r| r.containers.into_iter().map(|c| c.id).collect())
    }

    pub(crate) fn stop_pod_sandbox(&self, id: &str, deadline: Duration) -> Result<(), RpcError> {
        let mut c = self.runtime.clone();
        let req = request(
            StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            },
            deadline,
        );
        self.call(
            format!("StopPodSandbox {}", short(id)),
            deadline,
            async move { c.stop_pod_sandbox(req).await },
        )
        .map(drop)
    }

    pub(crate) fn remove_pod_sandbox(&self, id: &str, deadline: Duration) -> Result<(), RpcError> {
        let mut c = self.runtime.clone();
        let req = request(
            RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            },
            deadline,
        );
        self.call(
            format!("RemovePodSandbox {}", short(id)),
            deadline,
            async move { c.remove_pod_sandbox(req).await },
        )
        .map(drop)
    }

    /// The pods, all of them or only the one with id `only`.
    pub(crate) fn list_pod_sandboxes(
        &self,
        only: Option<&str>,
        deadline: Duration,
    ) -> Result<Vec<PodSandbox>, RpcError> {
        let mut c = self.runtime.clone();
        let req = request(
            ListPodSandboxRequest {
                filter: only.map(|id| PodSandboxFilter {
                    id: id.into(),
                    ..PodSandboxFilter::default()
                }),
            },
            deadline,
        );
        self.call("ListPodSandbox".into(), deadline, async move {
            c.list_pod_sandbox(req).await
        })
        .map(|r| r.items)
    }
}

/// A request that carries its deadline to containerd (`grpc-timeout`).
fn request<T>(message: T, deadline: Duration) -> Request<T> {
    let mut req = Request::new(message);
    req.set_timeout(deadline);
    req
}

pub(crate) fn image_spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.into(),
        ..ImageSpec::default()
    }
}

/// The first 12 characters of an id, as clients print them.
pub(crate) fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
