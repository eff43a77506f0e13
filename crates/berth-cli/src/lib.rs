//! Command-line argument structs for `berth`, mirroring runc's names, flags and defaults.
//!
//! The binary stays thin: it parses these and calls into `libberth`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Log line format, as runc accepts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Output format of `list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

/// Global options, accepted before the subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "berth: an OCI runtime, a drop-in replacement for runc",
    disable_version_flag = true
)]
pub struct GlobalOpts {
    /// Enable debug logging.
    #[arg(long, global = true)]
    pub debug: bool,

    /// Write the log to this file instead of stderr.
    #[arg(long, global = true, value_name = "PATH")]
    pub log: Option<PathBuf>,

    /// Log format: text or json.
    #[arg(long = "log-format", global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Root directory for container state (tmpfs recommended).
    #[arg(long, global = true, default_value = "/run/berth", env = "BERTH_ROOT")]
    pub root: PathBuf,

    /// Path to the criu binary (accepted for runc compatibility).
    #[arg(long, global = true, hide = true)]
    pub criu: Option<PathBuf>,

    /// Treat cgroupsPath as "slice:prefix:name" and manage the cgroup as systemd would.
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,

    /// Ignore cgroup permission errors: true, false or auto (accepted for runc compatibility).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub rootless: Option<String>,

    /// Print the version.
    #[arg(short = 'v', long = "version")]
    pub version: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands, named as runc names them.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container: set it up and leave its process waiting for `start`.
    Create(Create),
    /// Start the user process of a created container.
    Start(Start),
    /// Output the state of a container as JSON.
    State(State),
    /// Send a signal to the container's init process (or to all its processes).
    Kill(Kill),
    /// Delete a container and release its resources.
    Delete(Delete),
    /// Create and start a container, then wait for it unless detached.
    Run(Run),
    /// List the containers under --root.
    List(List),
    /// Write a default config.json into the bundle.
    Spec(Spec),
    /// Show what this build of berth supports, as JSON.
    Features(Features),
    /// Run a new process inside a running container.
    Exec(Box<Exec>),
    /// Change the cgroup limits of a container.
    Update(Box<Update>),
    /// Suspend every process of the container (cgroup freezer).
    Pause(Pause),
    /// Resume a paused container.
    Resume(Resume),
    /// List the container's processes (ps output filtered to them, or JSON pids).
    Ps(Ps),
}

#[derive(Debug, Args)]
pub struct Exec {
    /// AF_UNIX socket that receives the pty master when a terminal is asked for.
    #[arg(long = "console-socket", value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Working directory of the new process.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Set an environment variable (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// UID[:GID] to run as.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Additional group ids (repeatable).
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// A process.json to run instead of the command line (other process flags are ignored).
    #[arg(short = 'p', long)]
    pub process: Option<PathBuf>,
    /// Do not wait for the process.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Write the process's host pid to this file.
    #[arg(long = "pid-file", value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// SELinux label of the process.
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    /// AppArmor profile of the process.
    #[arg(long)]
    pub apparmor: Option<String>,
    /// Set no_new_privs.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Add a capability (repeatable).
    #[arg(short = 'c', long = "cap")]
    pub cap: Vec<String>,
    /// Pass N additional file descriptors to the process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Run in a sub-cgroup (cgroup v2; not supported yet).
    #[arg(long = "cgroup")]
    pub cgroup: Vec<String>,
    /// Allow exec in a paused container.
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    pub container_id: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct Update {
    /// A linux.resources JSON file ("-" for stdin); the flags below are ignored with it.
    #[arg(short = 'r', long = "resources", value_name = "PATH")]
    pub resources: Option<PathBuf>,
    /// Block IO weight, 10-1000.
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period (µs).
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota (µs); -1 for none.
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(long = "cpu-share")]
    pub cpu_share: Option<u64>,
    /// CPU realtime period (µs).
    #[arg(long = "cpu-rt-period")]
    pub cpu_rt_period: Option<u64>,
    /// CPU realtime runtime (µs).
    #[arg(long = "cpu-rt-runtime", allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPUs allowed (cpuset), e.g. 0-3 or 0,1.
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes allowed (cpuset).
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// Memory limit, bytes or with a unit (k, m, g, t); -1 for none.
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory soft limit.
    #[arg(long = "memory-reservation", allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit; -1 for unlimited swap.
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Kernel memory limit (cgroup v1, deprecated).
    #[arg(long = "kernel-memory", allow_hyphen_values = true)]
    pub kernel_memory: Option<String>,
    /// Kernel TCP memory limit (cgroup v1).
    #[arg(long = "kernel-memory-tcp", allow_hyphen_values = true)]
    pub kernel_memory_tcp: Option<String>,
    /// Maximum number of processes; 0 or -1 for none.
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Intel RDT L3 cache schema (not supported).
    #[arg(long = "l3-cache-schema")]
    pub l3_cache_schema: Option<String>,
    /// Intel RDT memory bandwidth schema (not supported).
    #[arg(long = "mem-bw-schema")]
    pub mem_bw_schema: Option<String>,
    pub container_id: String,
}

#[derive(Debug, Args)]
pub struct Pause {
    pub container_id: String,
}

#[derive(Debug, Args)]
pub struct Resume {
    pub container_id: String,
}

#[derive(Debug, Args)]
pub struct Ps {
    /// Output format: table (runs ps) or json (an array of pids).
    #[arg(short = 'f', long, value_enum, default_value = "table")]
    pub format: ListFormat,
    pub container_id: String,
    /// Arguments for ps (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// Options shared by `create` and `run`.
#[derive(Debug, Args)]
pub struct CreateOpts {
    /// Path to the bundle directory holding config.json.
    #[arg(short = 'b', long, default_value = ".")]
    pub bundle: PathBuf,

    /// AF_UNIX socket that receives the pty master when process.terminal is true.
    #[arg(long = "console-socket", value_name = "PATH")]
    pub console_socket: Option<PathBuf>,

    /// Write the container init's host pid to this file.
    #[arg(long = "pid-file", value_name = "PATH")]
    pub pid_file: Option<PathBuf>,

    /// Do not use pivot_root to jail the process inside the rootfs.
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,

    /// Do not create a new session keyring for the container.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,

    /// Pass N additional file descriptors (3 .. 3+N-1) to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
}

#[derive(Debug, Args)]
pub struct Create {
    #[command(flatten)]
    pub opts: CreateOpts,
    /// Container id.
    pub container_id: String,
}

#[derive(Debug, Args)]
pub struct Start {
    pub container_id: String,
}

#[derive(Debug, Args)]
pub struct State {
    pub container_id: String,
}

#[derive(Debug, Args)]
pub struct Kill {
    /// Send the signal to every process of the container.
    #[arg(short = 'a', long)]
    pub all: bool,
    pub container_id: String,
    /// Signal name (TERM, SIGTERM) or number; default SIGTERM.
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

#[derive(Debug, Args)]
pub struct Delete {
    /// Kill the container first if it is still running.
    #[arg(short = 'f', long)]
    pub force: bool,
    pub container_id: String,
}

#[derive(Debug, Args)]
pub struct Run {
    #[command(flatten)]
    pub opts: CreateOpts,
    /// Detach from the container's process.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep the container's state after it exits (no delete).
    #[arg(long)]
    pub keep: bool,
    /// Do not become a subreaper (accepted for runc compatibility).
    #[arg(long = "no-subreaper")]
    pub no_subreaper: bool,
    pub container_id: String,
}

#[derive(Debug, Args)]
pub struct List {
    /// Output format: table or json.
    #[arg(short = 'f', long, value_enum, default_value = "table")]
    pub format: ListFormat,
    /// Print only container ids.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct Spec {
    /// Directory to write config.json into.
    #[arg(short = 'b', long, default_value = ".")]
    pub bundle: PathBuf,
    /// Generate a configuration for a rootless container.
    #[arg(long)]
    pub rootless: bool,
}

#[derive(Debug, Args)]
pub struct Features {}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> GlobalOpts {
        GlobalOpts::try_parse_from(args).expect("parse")
    }

    #[test]
    fn global_flags_before_subcommand() {
        let o = parse(&[
            "berth",
            "--root",
            "/tmp/r",
            "--log",
            "/tmp/l.json",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "c1",
        ]);
        assert_eq!(o.root, PathBuf::from("/tmp/r"));
        assert_eq!(o.log_format, LogFormat::Json);
        match o.command {
            Some(Command::Create(c)) => {
                assert_eq!(c.container_id, "c1");
                assert_eq!(c.opts.bundle, PathBuf::from("/b"));
                assert_eq!(c.opts.pid_file, Some(PathBuf::from("/p")));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn kill_defaults_to_sigterm() {
        match parse(&["berth", "kill", "c1"]).command {
            Some(Command::Kill(k)) => {
                assert_eq!(k.signal, "SIGTERM");
                assert!(!k.all);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rootless_takes_optional_value() {
        assert_eq!(
            parse(&["berth", "--rootless", "list"]).rootless.as_deref(),
            Some("true")
        );
        assert_eq!(
            parse(&["berth", "--rootless=false", "list"])
                .rootless
                .as_deref(),
            Some("false")
        );
        assert!(matches!(
            parse(&["berth", "--rootless", "list"]).command,
            Some(Command::List(_))
        ));
    }

    #[test]
    fn spec_rootless_is_its_own_flag() {
        match parse(&["berth", "spec", "--rootless", "-b", "/x"]).command {
            Some(Command::Spec(s)) => assert!(s.rootless),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn every_command_parses() {
        use clap::CommandFactory;
        GlobalOpts::command().debug_assert();
    }

    #[test]
    fn exec_takes_runc_flags_and_a_command() {
        match parse(&[
            "berth", "exec", "-t", "-e", "A=1", "--env", "B=2", "-u", "1000:100", "--cap",
            "CAP_KILL", "-d", "c1", "sh", "-c", "ls -l",
        ])
        .command
        {
            Some(Command::Exec(e)) => {
                assert!(e.tty && e.detach);
                assert_eq!(e.env, ["A=1", "B=2"]);
                assert_eq!(e.user.as_deref(), Some("1000:100"));
                assert_eq!(e.cap, ["CAP_KILL"]);
                assert_eq!(e.container_id, "c1");
                assert_eq!(e.command, ["sh", "-c", "ls -l"]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn run_flags() {
        match parse(&[
            "berth",
            "run",
            "-d",
            "--no-pivot",
            "--preserve-fds",
            "2",
            "-b",
            "x",
            "c",
        ])
        .command
        {
            Some(Command::Run(r)) => {
                assert!(r.detach);
                assert!(r.opts.no_pivot);
                assert_eq!(r.opts.preserve_fds, 2);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
