//! podbench: times pod starts through any CRI v1 endpoint (berthd, containerd, CRI-O), as
//! the kubelet drives them: RunPodSandbox, CreateContainer and StartContainer of one
//! container per pod, wall clock per pod. `bench/pods.sh` runs it against berthd and
//! containerd; see docs/benchmark.md.
//!
//! ```text
//! podbench --endpoint /run/berth/berthd.sock --image 127.0.0.1:5000/busybox:1 --pull --pods 50
//! podbench --endpoint unix:///run/containerd/containerd.sock --cleanup
//! ```
//!
//! It prints one line per pod and, last, one line of JSON with the summary (milliseconds:
//! median, p99 by nearest rank, mean, min, max; the median of each of the three calls; the
//! engine's name and version). Pods are left running unless `--cleanup` is given, so that
//! their monitors can be measured; `--cleanup` alone stops and removes every pod podbench
//! made on that endpoint (those with the label `podbench=1`), whichever run made them.
//!
//! Not a crictl: no YAML, one fixed pod shape. The pod has the kubelet's namespace choices
//! (network and IPC shared, PID per container); the container runs `--cmd` (default
//! `sleep 3600`) of `--image`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};

/// The label every pod of podbench carries; `--cleanup` removes the pods that have it.
const LABEL: &str = "podbench";

#[derive(Parser, Debug, Clone)]
#[command(
    name = "podbench",
    about = "Times RunPodSandbox + CreateContainer + StartContainer through a CRI v1 socket"
)]
struct Args {
    /// The CRI socket: a path or unix:///path.
    #[arg(long)]
    endpoint: String,
    /// The container image (a name the engine can pull or already has).
    #[arg(long)]
    image: Option<String>,
    /// Pods to time.
    #[arg(long, default_value_t = 0)]
    pods: usize,
    /// Pods started at once (each still timed on its own).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Pods started (the same way) and removed before the timed ones, not counted.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Pull --image through the ImageService first.
    #[arg(long)]
    pull: bool,
    /// Stop and remove every pod with the label podbench=1 (after the timed pods, if any).
    #[arg(long)]
    cleanup: bool,
    /// The container's command, split at spaces.
    #[arg(long, default_value = "sleep 3600")]
    cmd: String,
    /// Pod log directories go under this directory (as the kubelet's /var/log/pods); none
    /// if absent.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Each pod's cgroup parent is DIR/pod<uid> (cgroupfs form, as the kubelet passes it);
    /// the engine's default if absent.
    #[arg(long)]
    cgroup_parent: Option<String>,
    /// The RuntimeClass handler; the engine's default if absent.
    #[arg(long, default_value = "")]
    runtime_handler: String,
    /// Limit for one CRI call, in seconds.
    #[arg(long, default_value_t = 120)]
    call_timeout: u64,
}

/// How long one pod took, per call, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Timing {
    index: usize,
    run: f64,
    create: f64,
    start: f64,
}

impl Timing {
    fn total(&self) -> f64 {
        self.run + self.create + self.start
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("podbench: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Error> {
    if args.pods == 0 && args.warmup == 0 && !args.pull && !args.cleanup {
        return Err("nothing to do: give --pods, --pull or --cleanup".into());
    }
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let channel = connect(&args)?;
    let mut rs = RuntimeServiceClient::new(channel.clone());
    let mut is = ImageServiceClient::new(channel);

    let version = rs
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .map_err(|e| format!("Version: {}", e.message()))?
        .into_inner();
    eprintln!(
        "podbench: {} {} (CRI {}) at {}",
        version.runtime_name, version.runtime_version, version.runtime_api_version, args.endpoint
    );

    if args.pull {
        let image = args.image.as_deref().ok_or("--pull needs --image")?;
        let t = Instant::now();
        let r = is
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                auth: None,
                sandbox_config: None,
            })
            .await
            .map_err(|e| format!("PullImage {image}: {}", e.message()))?
            .into_inner();
        eprintln!(
            "podbench: pulled {image} ({}) in {:.1} ms",
            r.image_ref,
            ms(t.elapsed())
        );
    }

    let mut summary = None;
    if args.pods > 0 || args.warmup > 0 {
        if args.image.is_none() {
            return Err("--pods and --warmup need --image".into());
        }
        let args = Arc::new(args.clone());
        if args.warmup > 0 {
            let (warm, _) = start_pods(&rs, &args, "w", args.warmup).await?;
            for t in &warm {
                eprintln!("warm-up pod {}: {:.1} ms", t.index, t.total());
            }
            remove_pods(&rs, args.concurrency, Some("w")).await?;
        }
        if args.pods > 0 {
            let (timings, wall) = start_pods(&rs, &args, "t", args.pods).await?;
            for t in &timings {
                println!(
                    "pod {}: {:.1} ms (run {:.1}, create {:.1}, start {:.1})",
                    t.index,
                    t.total(),
                    t.run,
                    t.create,
                    t.start
                );
            }
            summary = Some(summarise(&args, &version, &timings, wall));
        }
    }
    if args.cleanup {
        let n = remove_pods(&rs, args.concurrency, None).await?;
        eprintln!("podbench: removed {n} pods");
    }
    if let Some(s) = summary {
        println!("{s}");
    }
    Ok(())
}

/// A gRPC channel over the unix socket (one HTTP/2 connection, shared by every task).
fn connect(args: &Args) -> Result<Channel, Error> {
    let socket = PathBuf::from(
        args.endpoint
            .strip_prefix("unix://")
            .unwrap_or(&args.endpoint),
    );
    if !socket.is_absolute() {
        return Err(format!("--endpoint {}: not an absolute path", args.endpoint).into());
    }
    Ok(Endpoint::from_static("http://localhost")
        .timeout(Duration::from_secs(args.call_timeout))
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        })))
}

/// Starts `n` pods, `concurrency` at a time; returns their timings in index order and the
/// wall time of the whole batch.
async fn start_pods(
    rs: &RuntimeServiceClient<Channel>,
    args: &Arc<Args>,
    kind: &'static str,
    n: usize,
) -> Result<(Vec<Timing>, Duration), Error> {
    let run_id = run_id();
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.min(n) {
        let (rs, args, next, run_id) = (rs.clone(), args.clone(), next.clone(), run_id.clone());
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, Error>(done);
                }
                done.push(one_pod(rs.clone(), &args, &run_id, kind, i).await?);
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    let mut first_error = None;
    while let Some(r) = workers.join_next().await {
        match r {
            Ok(Ok(done)) => all.extend(done),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(e.into());
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let wall = t0.elapsed();
    all.sort_by_key(|t| t.index);
    Ok((all, wall))
}

/// A tag that keeps this run's pod names and uids apart from any other run's.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), nanos >> 8)
}

/// One pod: RunPodSandbox, CreateContainer, StartContainer, each timed.
async fn one_pod(
    mut rs: RuntimeServiceClient<Channel>,
    args: &Args,
    run_id: &str,
    kind: &str,
    index: usize,
) -> Result<Timing, Error> {
    let name = format!("podbench-{kind}{index}");
    let uid = format!("{run_id}-{kind}{index}");
    let namespace = "podbench".to_string();
    let log_directory = match &args.log_dir {
        Some(d) => {
            let d = d.join(format!("{namespace}_{name}_{uid}"));
            std::fs::create_dir_all(d.join("sleep"))
                .map_err(|e| format!("create {}: {e}", d.display()))?;
            d.display().to_string()
        }
        None => String::new(),
    };
    let labels: std::collections::HashMap<String, String> = [
        (LABEL.to_string(), "1".to_string()),
        (format!("{LABEL}.run"), run_id.to_string()),
        (format!("{LABEL}.kind"), kind.to_string()),
    ]
    .into();
    let pod_config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.clone(),
            uid: uid.clone(),
            namespace,
            attempt: 0,
        }),
        hostname: name.clone(),
        log_directory: log_directory.clone(),
        labels: labels.clone(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: args
                .cgroup_parent
                .as_deref()
                .map(|p| format!("{}/pod{uid}", p.trim_end_matches('/')))
                .unwrap_or_default(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(pid_per_container()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let container = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "sleep".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: args.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: args.cmd.split_whitespace().map(str::to_string).collect(),
        log_path: if log_directory.is_empty() {
            String::new()
        } else {
            "sleep/0.log".into()
        },
        labels,
        linux: Some(LinuxContainerConfig {
            resources: None,
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(pid_per_container()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };

    let t0 = Instant::now();
    let pod = rs
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: args.runtime_handler.clone(),
        })
        .await
        .map_err(|e| format!("pod {name}: RunPodSandbox: {}", e.message()))?
        .into_inner()
        .pod_sandbox_id;
    let t1 = Instant::now();
    let ctr = rs
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container),
            sandbox_config: Some(pod_config),
        })
        .await
        .map_err(|e| format!("pod {name}: CreateContainer: {}", e.message()))?
        .into_inner()
        .container_id;
    let t2 = Instant::now();
    rs.start_container(StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .map_err(|e| format!("pod {name}: StartContainer: {}", e.message()))?;
    let t3 = Instant::now();
    Ok(Timing {
        index,
        run: ms(t1 - t0),
        create: ms(t2 - t1),
        start: ms(t3 - t2),
    })
}

/// The kubelet's defaults: network and IPC of the pod, a PID namespace per container.
fn pid_per_container() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// Stops and removes podbench's pods (only those of `kind` when given); returns how many.
async fn remove_pods(
    rs: &RuntimeServiceClient<Channel>,
    concurrency: usize,
    kind: Option<&str>,
) -> Result<usize, Error> {
    let mut selector: std::collections::HashMap<String, String> =
        [(LABEL.to_string(), "1".to_string())].into();
    if let Some(k) = kind {
        selector.insert(format!("{LABEL}.kind"), k.to_string());
    }
    let pods = rs
        .clone()
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: selector,
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| format!("ListPodSandbox: {}", e.message()))?
        .into_inner()
        .items;
    let n = pods.len();
    let queue = Arc::new(std::sync::Mutex::new(pods));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(n) {
        let (mut rs, queue) = (rs.clone(), queue.clone());
        workers.spawn(async move {
            loop {
                let Some(p) = queue.lock().unwrap().pop() else {
                    return Ok::<_, Error>(());
                };
                rs.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: p.id.clone(),
                })
                .await
                .map_err(|e| format!("StopPodSandbox {}: {}", p.id, e.message()))?;
                rs.remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: p.id.clone(),
                })
                .await
                .map_err(|e| format!("RemovePodSandbox {}: {}", p.id, e.message()))?;
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r??;
    }
    Ok(n)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`-th percentile by nearest rank of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The JSON summary line.
fn summarise(
    args: &Args,
    version: &VersionResponse,
    timings: &[Timing],
    wall: Duration,
) -> serde_json::Value {
    let total = sorted(timings.iter().map(Timing::total).collect());
    let phase = |f: fn(&Timing) -> f64| round(median(&sorted(timings.iter().map(f).collect())));
    serde_json::json!({
        "runtime_name": version.runtime_name,
        "runtime_version": version.runtime_version,
        "endpoint": args.endpoint,
        "image": args.image,
        "pods": timings.len(),
        "concurrency": args.concurrency,
        "wall_s": round(wall.as_secs_f64()),
        "median_ms": round(median(&total)),
        "p99_ms": round(percentile(&total, 99.0)),
        "mean_ms": round(total.iter().sum::<f64>() / total.len() as f64),
        "min_ms": round(total[0]),
        "max_ms": round(total[total.len() - 1]),
        "phase_median_ms": {
            "run_pod_sandbox": phase(|t| t.run),
            "create_container": phase(|t| t.create),
            "start_container": phase(|t| t.start),
        },
        "per_pod_ms": timings.iter().map(|t| round(t.total())).collect::<Vec<_>>(),
    })
}
