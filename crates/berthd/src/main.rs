//! `berthd [--config FILE] [--socket PATH] ...`: serves the CRI v1 RuntimeService and
//! ImageService on a unix socket until SIGTERM or SIGINT. Pods and containers outlive it:
//! each pod's shim holds them, and a restarted berthd reloads its records.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use berthd::config::{Config, LogFormat};
use berthd::cri::Cri;
use berthd::engine::Engine;
use clap::Parser;
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use nix::fcntl::{Flock, FlockArg};

/// The largest gRPC message either way: an ExecSync reply carries up to 16 MiB per stream.
const MAX_MESSAGE: usize = 64 << 20;

#[derive(Parser, Debug)]
#[command(name = "berthd", version, about = "Berth's Kubernetes CRI v1 engine")]
struct Args {
    /// The config file (TOML); a missing file at the default path means the defaults.
    #[arg(long, default_value = "/etc/berth/berthd.toml")]
    config: PathBuf,
    /// The gRPC socket (overrides the config).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Pod and container records (overrides the config).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Shims, pinned namespaces, exit records (overrides the config).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Images and snapshots, shared with berthctl (overrides the config).
    #[arg(long)]
    root: Option<PathBuf>,
    /// The registries config (overrides the config).
    #[arg(long)]
    registries_conf: Option<PathBuf>,
    /// text or json (overrides the config).
    #[arg(long)]
    log_format: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let default_path = args.config == std::path::Path::new("/etc/berth/berthd.toml");
    let mut cfg = match Config::load(&args.config, !default_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berthd: error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(v) = args.socket {
        cfg.socket = v;
    }
    if let Some(v) = args.state_dir {
        cfg.state_dir = v;
    }
    if let Some(v) = args.run_dir {
        cfg.run_dir = v;
    }
    if let Some(v) = args.root {
        cfg.root = v;
    }
    if let Some(v) = args.registries_conf {
        cfg.registries_conf = v;
    }
    match args.log_format.as_deref() {
        None => {}
        Some("text") => cfg.log_format = LogFormat::Text,
        Some("json") => cfg.log_format = LogFormat::Json,
        Some(other) => {
            eprintln!("berthd: error: --log-format {other:?}: use text or json");
            return ExitCode::from(2);
        }
    }
    init_logging(&cfg);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(512)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berthd: error: start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(serve(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("berthd: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log_level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.with_ansi(false).init(),
    }
}

async fn serve(cfg: Config) -> Result<(), String> {
    std::fs::create_dir_all(&cfg.state_dir)
        .map_err(|e| format!("create {}: {e}", cfg.state_dir.display()))?;
    // One berthd per state directory: a second would race the first on every record.
    let lock_path = cfg.state_dir.join("berthd.lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("open {}: {e}", lock_path.display()))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|_| {
        format!(
            "another berthd serves {} (it holds {})",
            cfg.state_dir.display(),
            lock_path.display()
        )
    })?;
    let socket = cfg.socket.clone();
    let stream_address = cfg.stream_address.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::open(cfg))
        .await
        .map_err(|e| format!("open the engine: {e}"))?
        .map_err(|e| format!("open the engine: {e}"))?;
    let engine = Arc::new(engine);
    let stream_listener = tokio::net::TcpListener::bind(&stream_address)
        .await
        .map_err(|e| format!("stream_address {stream_address}: listen: {e}"))?;
    let stream_addr = stream_listener
        .local_addr()
        .map_err(|e| format!("stream_address {stream_address}: {e}"))?;
    let stream = berth_stream::Server::new(
        Arc::new(berthd::stream::Streams {
            engine: engine.clone(),
        }),
        berth_stream::Config::new(format!("http://{stream_addr}")),
    );
    {
        let stream = stream.clone();
        tokio::spawn(async move { stream.serve(stream_listener).await });
    }
    tracing::info!(address = %stream_addr, "streaming server (exec, attach, port-forward)");
    let cri = Cri { engine, stream };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    // The lock is ours, so a socket file left there is a dead berthd's.
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)
        .map_err(|e| format!("listen on {}: {e}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("chmod {}: {e}", socket.display()))?;
    tracing::info!(socket = %socket.display(), version = env!("CARGO_PKG_VERSION"), "serving CRI v1");
    // Every connection passes the authority mender on its way in (src/authority.rs).
    let incoming = futures_util::StreamExt::map(
        tokio_stream::wrappers::UnixListenerStream::new(listener),
        |c| c.map(berthd::authority::normalize),
    );
    let runtime = RuntimeServiceServer::new(cri.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let images = ImageServiceServer::new(cri)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    tonic::transport::Server::builder()
        .add_service(runtime)
        .add_service(images)
        .serve_with_incoming_shutdown(incoming, shutdown())
        .await
        .map_err(|e| format!("serve: {e}"))?;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped; pods and containers run on under their shims");
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
