//! berthctl's command line, podman's names and flags where they exist.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "berthctl",
    version,
    about = "Pull, store and run container images with Berth",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Where images, snapshots and container records live.
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/berth",
        env = "BERTH_ROOT"
    )]
    pub root: PathBuf,
    /// The runtime's state directory (shared with `berth`).
    #[arg(
        long,
        global = true,
        default_value = "/run/berth",
        env = "BERTH_RUNROOT"
    )]
    pub runroot: PathBuf,
    /// How container root file systems are made: overlay or copy (default: overlay where
    /// the kernel has it).
    #[arg(long, global = true, env = "BERTH_STORAGE_DRIVER")]
    pub storage_driver: Option<String>,
    /// The most one image layer may unpack to (bytes, or with a suffix k, m, g); a layer
    /// that would unpack to more is refused (decompression bombs).
    #[arg(
        long,
        global = true,
        default_value = "64g",
        env = "BERTH_MAX_LAYER_SIZE"
    )]
    pub max_layer_size: String,
    /// The registries config (docs/images.md).
    #[arg(
        long,
        global = true,
        default_value = "/etc/berth/registries.toml",
        env = "BERTH_REGISTRIES_CONF"
    )]
    pub registries_conf: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pull an image from a registry.
    Pull(Pull),
    /// List images.
    Images(Images),
    /// Show an image's or a container's record as JSON.
    Inspect(Inspect),
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Remove images.
    Rmi(Rmi),
    /// Image subcommands (prune, ls).
    #[command(subcommand)]
    Image(ImageCommand),
    /// Make an image from a root file system tarball.
    Import(Import),
    /// Load images from an OCI layout, oci-archive or docker-archive.
    Load(Load),
    /// Save images to an oci-archive, docker-archive or OCI layout directory.
    Save(Save),
    /// Store credentials for a registry.
    Login(Login),
    /// Remove stored credentials for a registry.
    Logout { registry: String },
    /// Run a command in a new container.
    Run(Box<Run>),
    /// List containers.
    Ps(Ps),
    /// Stop containers: the image's stop signal, then SIGKILL after the timeout.
    Stop(Stop),
    /// Send a signal to containers.
    Kill(Kill),
    /// Remove containers.
    Rm(Rm),
    /// Run a command in a running container.
    Exec(Exec),
    /// Show a detached container's output.
    Logs(Logs),
    /// What this host offers: the store, and VM isolation (accelerator, kernel, agent).
    Info {
        /// table or json
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Internal: the monitor of a detached container.
    #[command(hide = true)]
    Monitor { id: String },
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Remove images without a name, then blobs and layers nothing uses.
    Prune {
        /// Also remove named images that no container uses.
        #[arg(short, long)]
        all: bool,
    },
    /// List images.
    Ls(Images),
}

#[derive(Args, Debug)]
pub struct Pull {
    pub image: String,
    /// os/arch[/variant] to pick from a multi-platform image (default: the host's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image ID.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug, Default)]
pub struct Images {
    /// table or json
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Print only image IDs.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct Inspect {
    pub name: String,
}

#[derive(Args, Debug)]
pub struct Rmi {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove even if containers use the image, or it has several names.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct Import {
    /// A tar of a root file system (plain, gzip or zstd).
    pub tarball: PathBuf,
    /// The name to give the image.
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct Load {
    /// The archive or OCI layout directory.
    #[arg(short, long)]
    pub input: PathBuf,
    /// os/arch[/variant] to pick from multi-platform images.
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Args, Debug)]
pub struct Save {
    #[arg(short, long)]
    pub output: PathBuf,
    /// oci-archive, docker-archive or oci-dir
    #[arg(long, default_value = "oci-archive")]
    pub format: String,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct Login {
    pub registry: String,
    #[arg(short, long)]
    pub username: Option<String>,
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Args, Debug)]
pub struct Run {
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep standard input open.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the container a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to copy it from here).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file, one KEY=VALUE per line.
    #[arg(long)]
    pub env_file: Vec<PathBuf>,
    /// Bind a host directory or file: HOST:CONTAINER[:ro|rw].
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    #[arg(long)]
    pub name: Option<String>,
    /// User (name or uid, optionally :group) the command runs as.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Replace the image's entrypoint ("" clears it; a JSON array gives several words).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// none (loopback only) or host.
    #[arg(long, default_value = "none")]
    pub network: String,
    /// Memory limit: bytes, or with a suffix b, k, m, g.
    #[arg(short, long)]
    pub memory: Option<String>,
    /// CPU limit, as a number of CPUs (1.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Most processes the container may have (default 2048; 0 or -1: no limit).
    #[arg(long, allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    #[arg(long)]
    pub hostname: Option<String>,
    /// missing (default), always or never.
    #[arg(long, default_value = "missing")]
    pub pull: String,
    #[arg(long)]
    pub platform: Option<String>,
    /// Run without the default seccomp profile.
    #[arg(long)]
    pub no_seccomp: bool,
    /// process (default): namespaces on the host's kernel; vm: in a microVM of its own,
    /// with its own kernel (docs/vm.md).
    #[arg(long, default_value = "process")]
    pub isolation: String,
    pub image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct Ps {
    /// Show all containers, not only running ones.
    #[arg(short, long)]
    pub all: bool,
    /// Print only container IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// table or json
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(Args, Debug)]
pub struct Stop {
    /// Seconds to wait before SIGKILL.
    #[arg(short, long, default_value_t = 10)]
    pub time: u64,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct Kill {
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct Rm {
    /// Stop running containers first (SIGKILL).
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct Exec {
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(short, long)]
    pub tty: bool,
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    #[arg(short, long)]
    pub user: Option<String>,
    #[arg(short, long)]
    pub workdir: Option<String>,
    pub container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct Logs {
    /// Keep printing output as it comes, until the container exits.
    #[arg(short, long)]
    pub follow: bool,
    pub container: String,
}
