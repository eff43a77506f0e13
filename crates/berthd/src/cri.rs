//! The gRPC adapters: each CRI call checks its request, runs the engine's blocking method on
//! tokio's blocking pool and maps the result. No engine logic lives here.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use k8s_cri::v1::*;
use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::error::Result;

/// The CRI version berthd speaks.
pub const CRI_VERSION: &str = "v1";

#[derive(Clone)]
pub struct Cri {
    pub engine: Arc<Engine>,
    /// The exec/attach/port-forward server whose URLs Exec, Attach and PortForward return.
    pub stream: berth_stream::Server<crate::stream::Streams>,
}

fn url_error(what: &str, e: berth_stream::RequestError) -> Status {
    match e {
        berth_stream::RequestError::Cache(c) => Status::resource_exhausted(format!("{what}: {c}")),
        other => Status::invalid_argument(format!("{what}: {other}")),
    }
}

impl Cri {
    /// Runs `f` on the blocking pool, with a trace line for the call.
    async fn run<T, F>(&self, what: &'static str, f: F) -> std::result::Result<Response<T>, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T> + Send + 'static,
    {
        let engine = self.engine.clone();
        let start = std::time::Instant::now();
        let r = tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|e| Status::internal(format!("{what}: the call panicked: {e}")))?;
        match &r {
            Ok(_) => tracing::debug!(call = what, ms = start.elapsed().as_millis() as u64, "ok"),
            Err(e) => {
                tracing::info!(call = what, ms = start.elapsed().as_millis() as u64, error = %e, "failed")
            }
        }
        r.map(Response::new).map_err(Status::from)
    }
}

type EventStream =
    Pin<Box<dyn Stream<Item = std::result::Result<ContainerEventResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(
        &self,
        _req: Request<VersionRequest>,
    ) -> std::result::Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "berth".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_VERSION.into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<RunPodSandboxRequest>,
    ) -> std::result::Result<Response<RunPodSandboxResponse>, Status> {
        let r = req.into_inner();
        let config = r
            .config
            .ok_or_else(|| Status::invalid_argument("RunPodSandbox: config is missing"))?;
        self.run("RunPodSandbox", move |e| {
            e.run_pod_sandbox(config, &r.runtime_handler)
                .map(|pod_sandbox_id| RunPodSandboxResponse { pod_sandbox_id })
        })
        .await
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<StopPodSandboxRequest>,
    ) -> std::result::Result<Response<StopPodSandboxResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        self.run("StopPodSandbox", move |e| {
            e.stop_pod_sandbox(&id).map(|()| StopPodSandboxResponse {})
        })
        .await
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<RemovePodSandboxRequest>,
    ) -> std::result::Result<Response<RemovePodSandboxResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        self.run("RemovePodSandbox", move |e| {
            e.remove_pod_sandbox(&id)
                .map(|()| RemovePodSandboxResponse {})
        })
        .await
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<PodSandboxStatusRequest>,
    ) -> std::result::Result<Response<PodSandboxStatusResponse>, Status> {
        let r = req.into_inner();
        self.run("PodSandboxStatus", move |e| {
            let (status, info) = e.pod_sandbox_status(&r.pod_sandbox_id, r.verbose)?;
            Ok(PodSandboxStatusResponse {
                status: Some(status),
                info: info.into_iter().collect(),
                containers_statuses: Vec::new(),
                timestamp: crate::state::now_ns(),
            })
        })
        .await
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<ListPodSandboxRequest>,
    ) -> std::result::Result<Response<ListPodSandboxResponse>, Status> {
        let filter = req.into_inner().filter;
        self.run("ListPodSandbox", move |e| {
            Ok(ListPodSandboxResponse {
                items: e.list_pod_sandbox(filter.as_ref()),
            })
        })
        .await
    }

    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> std::result::Result<Response<CreateContainerResponse>, Status> {
        let r = req.into_inner();
        let config = r
            .config
            .ok_or_else(|| Status::invalid_argument("CreateContainer: config is missing"))?;
        self.run("CreateContainer", move |e| {
            e.create_container(&r.pod_sandbox_id, config)
                .map(|container_id| CreateContainerResponse { container_id })
        })
        .await
    }

    async fn start_container(
        &self,
        req: Request<StartContainerRequest>,
    ) -> std::result::Result<Response<StartContainerResponse>, Status> {
        let id = req.into_inner().container_id;
        self.run("StartContainer", move |e| {
            e.start_container(&id).map(|()| StartContainerResponse {})
        })
        .await
    }

    async fn stop_container(
        &self,
        req: Request<StopContainerRequest>,
    ) -> std::result::Result<Response<StopContainerResponse>, Status> {
        let r = req.into_inner();
        self.run("StopContainer", move |e| {
            e.stop_container(&r.container_id, r.timeout)
                .map(|()| StopContainerResponse {})
        })
        .await
    }

    async fn remove_container(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> std::result::Result<Response<RemoveContainerResponse>, Status> {
        let id = req.into_inner().container_id;
        self.run("RemoveContainer", move |e| {
            e.remove_container(&id).map(|()| RemoveContainerResponse {})
        })
        .await
    }

    async fn list_containers(
        &self,
        req: Request<ListContainersRequest>,
    ) -> std::result::Result<Response<ListContainersResponse>, Status> {
        let filter = req.into_inner().filter;
        self.run("ListContainers", move |e| {
            Ok(ListContainersResponse {
                containers: e.list_containers(filter.as_ref()),
            })
        })
        .await
    }

    async fn container_status(
        &self,
        req: Request<ContainerStatusRequest>,
    ) -> std::result::Result<Response<ContainerStatusResponse>, Status> {
        let r = req.into_inner();
        self.run("ContainerStatus", move |e| {
            let (status, info) = e.container_status(&r.container_id, r.verbose)?;
            Ok(ContainerStatusResponse {
                status: Some(status),
                info: info.into_iter().collect(),
            })
        })
        .await
    }

    async fn update_container_resources(
        &self,
        req: Request<UpdateContainerResourcesRequest>,
    ) -> std::result::Result<Response<UpdateContainerResourcesResponse>, Status> {
        let r = req.into_inner();
        self.run("UpdateContainerResources", move |e| {
            e.update_container_resources(&r.container_id, r.linux.as_ref())
                .map(|()| UpdateContainerResourcesResponse {})
        })
        .await
    }

    async fn reopen_container_log(
        &self,
        req: Request<ReopenContainerLogRequest>,
    ) -> std::result::Result<Response<ReopenContainerLogResponse>, Status> {
        let id = req.into_inner().container_id;
        self.run("ReopenContainerLog", move |e| {
            e.reopen_container_log(&id)
                .map(|()| ReopenContainerLogResponse {})
        })
        .await
    }

    async fn exec_sync(
        &self,
        req: Request<ExecSyncRequest>,
    ) -> std::result::Result<Response<ExecSyncResponse>, Status> {
        let r = req.into_inner();
        self.run("ExecSync", move |e| {
            let out = e.exec_sync(&r.container_id, r.cmd, r.timeout)?;
            Ok(ExecSyncResponse {
                stdout: out.stdout,
                stderr: out.stderr,
                exit_code: out.exit_code,
            })
        })
        .await
    }

    async fn exec(
        &self,
        req: Request<ExecRequest>,
    ) -> std::result::Result<Response<ExecResponse>, Status> {
        let r = req.into_inner();
        if r.cmd.is_empty() {
            return Err(Status::invalid_argument("Exec: cmd is empty"));
        }
        let id = r.container_id.clone();
        let id = self
            .run("Exec", move |e| e.check_running(&id, "exec"))
            .await?
            .into_inner();
        let url = self
            .stream
            .exec_url(berth_stream::ExecRequest {
                container_id: id,
                cmd: r.cmd,
                tty: r.tty,
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
            })
            .map_err(|e| url_error("Exec", e))?;
        Ok(Response::new(ExecResponse { url }))
    }

    async fn attach(
        &self,
        req: Request<AttachRequest>,
    ) -> std::result::Result<Response<AttachResponse>, Status> {
        let r = req.into_inner();
        let id = r.container_id.clone();
        let id = self
            .run("Attach", move |e| e.check_running(&id, "attach"))
            .await?
            .into_inner();
        let url = self
            .stream
            .attach_url(berth_stream::AttachRequest {
                container_id: id,
                tty: r.tty,
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
            })
            .map_err(|e| url_error("Attach", e))?;
        Ok(Response::new(AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        req: Request<PortForwardRequest>,
    ) -> std::result::Result<Response<PortForwardResponse>, Status> {
        let r = req.into_inner();
        let mut ports = Vec::new();
        for p in &r.port {
            ports.push(u16::try_from(*p).ok().filter(|p| *p > 0).ok_or_else(|| {
                Status::invalid_argument(format!("PortForward: port {p}: out of range"))
            })?);
        }
        let pod = r.pod_sandbox_id.clone();
        let pod = self
            .run("PortForward", move |e| {
                let id = e.resolve_pod(&pod)?;
                e.pod_netns(&id).map(|_| id)
            })
            .await?
            .into_inner();
        let url = self
            .stream
            .port_forward_url(berth_stream::PortForwardRequest {
                pod_sandbox_id: pod,
                ports,
            })
            .map_err(|e| url_error("PortForward", e))?;
        Ok(Response::new(PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        req: Request<ContainerStatsRequest>,
    ) -> std::result::Result<Response<ContainerStatsResponse>, Status> {
        let id = req.into_inner().container_id;
        self.run("ContainerStats", move |e| {
            e.container_stats(&id)
                .map(|s| ContainerStatsResponse { stats: Some(s) })
        })
        .await
    }

    async fn list_container_stats(
        &self,
        req: Request<ListContainerStatsRequest>,
    ) -> std::result::Result<Response<ListContainerStatsResponse>, Status> {
        let filter = req.into_inner().filter;
        self.run("ListContainerStats", move |e| {
            Ok(ListContainerStatsResponse {
                stats: e.list_container_stats(filter.as_ref()),
            })
        })
        .await
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<PodSandboxStatsRequest>,
    ) -> std::result::Result<Response<PodSandboxStatsResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        self.run("PodSandboxStats", move |e| {
            e.pod_sandbox_stats(&id)
                .map(|s| PodSandboxStatsResponse { stats: Some(s) })
        })
        .await
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<ListPodSandboxStatsRequest>,
    ) -> std::result::Result<Response<ListPodSandboxStatsResponse>, Status> {
        let filter = req.into_inner().filter;
        self.run("ListPodSandboxStats", move |e| {
            Ok(ListPodSandboxStatsResponse {
                stats: e.list_pod_sandbox_stats(filter.as_ref()),
            })
        })
        .await
    }

    async fn update_runtime_config(
        &self,
        req: Request<UpdateRuntimeConfigRequest>,
    ) -> std::result::Result<Response<UpdateRuntimeConfigResponse>, Status> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        tracing::info!(pod_cidr = %cidr, "UpdateRuntimeConfig");
        Ok(Response::new(UpdateRuntimeConfigResponse {}))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> std::result::Result<Response<StatusResponse>, Status> {
        let verbose = req.into_inner().verbose;
        let engine = self.engine.clone();
        let network = tokio::task::spawn_blocking(move || engine.network_status())
            .await
            .map_err(|e| Status::internal(format!("Status: {e}")))?;
        let (net_ok, net_reason, net_message) = match &network {
            berth_cni::NetworkStatus::Ready { .. } => (true, String::new(), String::new()),
            berth_cni::NetworkStatus::NotReady { reason } => (
                false,
                "NetworkPluginNotReady".to_string(),
                format!("Network plugin returns error: {reason}"),
            ),
        };
        let conditions = vec![
            RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: net_ok,
                reason: net_reason,
                message: net_message,
            },
        ];
        let mut info = std::collections::HashMap::new();
        if verbose {
            let cfg = &self.engine.cfg;
            info.insert(
                "config".to_string(),
                serde_json::json!({
                    "stateDir": cfg.state_dir, "runDir": cfg.run_dir, "root": cfg.root,
                    "runtimes": cfg.runtimes.keys().collect::<Vec<_>>(),
                    "cni": match &network {
                        berth_cni::NetworkStatus::Ready { network, file } =>
                            serde_json::json!({"network": network, "file": file}),
                        berth_cni::NetworkStatus::NotReady { reason } =>
                            serde_json::json!({"error": reason}),
                    },
                })
                .to_string(),
            );
        }
        // The built-in handler does recursive read-only mounts; what a binary does, berthd
        // does not know, so it claims nothing for it.
        let handlers = std::iter::once((crate::config::DEFAULT_HANDLER.to_string(), true))
            .chain(
                self.engine
                    .cfg
                    .runtimes
                    .keys()
                    .map(|name| (name.clone(), false)),
            )
            .map(|(name, builtin)| RuntimeHandler {
                name,
                features: Some(RuntimeHandlerFeatures {
                    recursive_read_only_mounts: builtin,
                    user_namespaces: false,
                }),
            })
            .collect();
        Ok(Response::new(StatusResponse {
            status: Some(RuntimeStatus { conditions }),
            info,
            runtime_handlers: handlers,
            features: Some(RuntimeFeatures {
                supplemental_groups_policy: true,
            }),
        }))
    }

    async fn checkpoint_container(
        &self,
        req: Request<CheckpointContainerRequest>,
    ) -> std::result::Result<Response<CheckpointContainerResponse>, Status> {
        let r = req.into_inner();
        self.run("CheckpointContainer", move |e| {
            e.checkpoint_container(&r.container_id, &r.location)
                .map(|()| CheckpointContainerResponse {})
        })
        .await
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _req: Request<GetEventsRequest>,
    ) -> std::result::Result<Response<Self::GetContainerEventsStream>, Status> {
        let rx = self.engine.events();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => return Some((Ok(ev), rx)),
                    // A slow listener misses events rather than holding the engine back.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "a container event listener fell behind");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<ListMetricDescriptorsRequest>,
    ) -> std::result::Result<Response<ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(ListMetricDescriptorsResponse {
            descriptors: Vec::new(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<ListPodSandboxMetricsRequest>,
    ) -> std::result::Result<Response<ListPodSandboxMetricsResponse>, Status> {
        Ok(Response::new(ListPodSandboxMetricsResponse {
            pod_metrics: Vec::new(),
        }))
    }

    async fn runtime_config(
        &self,
        _req: Request<RuntimeConfigRequest>,
    ) -> std::result::Result<Response<RuntimeConfigResponse>, Status> {
        Ok(Response::new(RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }
}

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(
        &self,
        req: Request<ListImagesRequest>,
    ) -> std::result::Result<Response<ListImagesResponse>, Status> {
        let filter = req.into_inner().filter.and_then(|f| f.image);
        self.run("ListImages", move |e| {
            e.list_images(filter.as_ref())
                .map(|images| ListImagesResponse { images })
        })
        .await
    }

    async fn image_status(
        &self,
        req: Request<ImageStatusRequest>,
    ) -> std::result::Result<Response<ImageStatusResponse>, Status> {
        let r = req.into_inner();
        self.run("ImageStatus", move |e| {
            let image = e.image_status(r.image.as_ref())?;
            let mut info = std::collections::HashMap::new();
            if r.verbose {
                if let Some(i) = &image {
                    info.insert("info".into(), serde_json::json!({"id": i.id}).to_string());
                }
            }
            Ok(ImageStatusResponse { image, info })
        })
        .await
    }

    async fn pull_image(
        &self,
        req: Request<PullImageRequest>,
    ) -> std::result::Result<Response<PullImageResponse>, Status> {
        let r = req.into_inner();
        self.run("PullImage", move |e| {
            e.pull_image(r.image.as_ref(), r.auth.as_ref())
                .map(|image_ref| PullImageResponse { image_ref })
        })
        .await
    }

    async fn remove_image(
        &self,
        req: Request<RemoveImageRequest>,
    ) -> std::result::Result<Response<RemoveImageResponse>, Status> {
        let r = req.into_inner();
        self.run("RemoveImage", move |e| {
            e.remove_image(r.image.as_ref())
                .map(|()| RemoveImageResponse {})
        })
        .await
    }

    async fn image_fs_info(
        &self,
        _req: Request<ImageFsInfoRequest>,
    ) -> std::result::Result<Response<ImageFsInfoResponse>, Status> {
        self.run("ImageFsInfo", move |e| {
            let fs = e.image_fs_info()?;
            Ok(ImageFsInfoResponse {
                image_filesystems: fs,
                container_filesystems: Vec::new(),
            })
        })
        .await
    }
}
