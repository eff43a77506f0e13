//! Command-line argument structs for `berth`, mirroring runc's names, flags and defaults.
//!
//! The binary stays thin: it parses these and calls into `libberth`.

use std::path::PathBuf;
use std::time::Duration;

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

    /// Root directory for container state (tmpfs recommended) [default: /run/berth, or
    /// $XDG_RUNTIME_DIR/berth for a user other than root].
    #[arg(long, global = true, env = "BERTH_ROOT")]
    pub root: Option<PathBuf>,

    /// Path to the criu binary that checkpoint and restore run (default: criu on PATH).
    #[arg(long, global = true, hide = true)]
    pub criu: Option<PathBuf>,

    /// Treat cgroupsPath as "slice:prefix:name" and manage the cgroup as systemd would.
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,

    /// Rootless mode: true, false or auto (rootless when not root or in a user namespace).
    /// Rootless, user namespace maps need no privilege or go through newuidmap/newgidmap,
    /// and a cgroup is used only where this user may create it.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub rootless: Option<String>,

    /// Print the version.
    #[arg(short = 'v', long = "version")]
    pub version: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands, named as runc names them. Each one's arguments are built only when it
/// is the one invoked (`defer`): building all of them for every call cost memory and time.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
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
    /// Checkpoint a running container with CRIU.
    Checkpoint(Box<Checkpoint>),
    /// Restore a container from a CRIU checkpoint.
    Restore(Box<Restore>),
    /// Display container events: resource statistics every interval, and OOM notices.
    Events(Events),
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
    /// Run in an existing sub-cgroup of the container's: [CONTROLLER[,CONTROLLER]:]PATH
    /// (repeatable; without a controller, in every hierarchy).
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

#[derive(Debug, Args)]
pub struct Events {
    /// Time between two statistics, as a Go duration (5s, 500ms, 1m30s).
    #[arg(long, default_value = "5s", value_parser = parse_go_duration, value_name = "DURATION")]
    pub interval: Duration,
    /// Display the container's statistics once, then exit.
    #[arg(long)]
    pub stats: bool,
    pub container_id: String,
}

/// Parses a duration as Go's `time.ParseDuration` does: a sequence of decimal numbers, each
/// with an optional fraction and a unit (`ns`, `us` or `µs`, `ms`, `s`, `m`, `h`), such as
/// `1m30s` or `1.5h`; `0` alone needs no unit. A negative duration is refused.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    const UNITS: &[(&str, u128)] = &[
        ("ns", 1),
        ("us", 1_000),
        ("\u{b5}s", 1_000),
        ("\u{3bc}s", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    let invalid = || format!("invalid duration {text:?}");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(after) => after.split_at(after.bytes().take_while(u8::is_ascii_digit).count()),
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(|| match unit {
                "" => format!("missing unit in duration {text:?}"),
                _ => format!("unknown unit {unit:?} in duration {text:?}"),
            })?;
        // At most 20 digits of fraction matter at nanosecond resolution.
        let frac = &frac[..frac.len().min(20)];
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| invalid())?
        };
        let part: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse::<u128>().map_err(|_| invalid())? * scale / 10u128.pow(frac.len() as u32)
        };
        nanos = whole
            .checked_mul(scale)
            .and_then(|n| n.checked_add(part))
            .and_then(|n| n.checked_add(nanos))
            .filter(|n| *n <= i64::MAX as u128)
            .ok_or_else(invalid)?;
        rest = after;
    }
    if negative && nanos > 0 {
        return Err("duration interval must be greater than 0".to_string());
    }
    Ok(Duration::from_nanos(nanos as u64))
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

/// CRIU options that `checkpoint` and `restore` share.
#[derive(Debug, Args)]
pub struct CriuOpts {
    /// Directory of the CRIU image files (default: ./checkpoint).
    #[arg(long = "image-path", value_name = "PATH")]
    pub image_path: Option<PathBuf>,
    /// Directory for CRIU's work files and log (default: the image path).
    #[arg(long = "work-path", value_name = "PATH")]
    pub work_path: Option<PathBuf>,
    /// Allow open TCP connections.
    #[arg(long = "tcp-established")]
    pub tcp_established: bool,
    /// Allow external unix sockets.
    #[arg(long = "ext-unix-sk")]
    pub ext_unix_sk: bool,
    /// Allow shell jobs.
    #[arg(long = "shell-job")]
    pub shell_job: bool,
    /// Handle file locks.
    #[arg(long = "file-locks")]
    pub file_locks: bool,
    /// Cgroups mode: soft, full, strict or ignore (default: CRIU's, soft).
    #[arg(long = "manage-cgroups-mode", value_name = "MODE")]
    pub manage_cgroups_mode: Option<String>,
    /// Create a namespace but do not restore its properties (only "network"; repeatable).
    #[arg(long = "empty-ns", value_name = "NS")]
    pub empty_ns: Vec<String>,
    /// Deduplicate memory images automatically.
    #[arg(long = "auto-dedup")]
    pub auto_dedup: bool,
    /// Restore memory pages lazily with userfaultfd.
    #[arg(long = "lazy-pages")]
    pub lazy_pages: bool,
}

#[derive(Debug, Args)]
pub struct Checkpoint {
    #[command(flatten)]
    pub criu: CriuOpts,
    /// Previous images (from --pre-dump), relative to the image path.
    #[arg(long = "parent-path", value_name = "PATH")]
    pub parent_path: Option<PathBuf>,
    /// Leave the container running after the checkpoint.
    #[arg(long = "leave-running")]
    pub leave_running: bool,
    /// Skip in-flight TCP connections.
    #[arg(long = "tcp-skip-in-flight")]
    pub tcp_skip_in_flight: bool,
    /// Link unlinked files back where possible.
    #[arg(long = "link-remap")]
    pub link_remap: bool,
    /// With --lazy-pages, CRIU writes \0 to this fd once its page server is ready (-1: none).
    #[arg(long = "status-fd", value_name = "FD", allow_negative_numbers = true)]
    pub status_fd: Option<i32>,
    /// ADDRESS:PORT of a CRIU page server to send the memory pages to.
    #[arg(long = "page-server", value_name = "ADDRESS:PORT")]
    pub page_server: Option<String>,
    /// Dump the memory only and leave the container running (for a later --parent-path).
    #[arg(long = "pre-dump")]
    pub pre_dump: bool,
    pub container_id: String,
}

#[derive(Debug, Args)]
pub struct Restore {
    #[command(flatten)]
    pub criu: CriuOpts,
    /// Path to the bundle directory holding config.json.
    #[arg(short = 'b', long, default_value = ".")]
    pub bundle: PathBuf,
    /// AF_UNIX socket for the pty master (refused: a terminal cannot be restored).
    #[arg(long = "console-socket", value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Do not wait for the restored container.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Write the restored init's host pid to this file.
    #[arg(long = "pid-file", value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Do not become a subreaper while waiting for the container.
    #[arg(long = "no-subreaper")]
    pub no_subreaper: bool,
    /// Do not use pivot_root (refused: CRIU always pivots into the restored root).
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// LSM profile of the restored processes, TYPE:NAME (apparmor or selinux).
    #[arg(long = "lsm-profile", value_name = "TYPE:NAME")]
    pub lsm_profile: Option<String>,
    /// LSM mount context for the restored mounts.
    #[arg(long = "lsm-mount-context", value_name = "CONTEXT")]
    pub lsm_mount_context: Option<String>,
    pub container_id: String,
}

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
        assert_eq!(o.root, Some(PathBuf::from("/tmp/r")));
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
    fn checkpoint_takes_runc_flags() {
        match parse(&[
            "berth",
            "--criu",
            "/opt/criu",
            "checkpoint",
            "--image-path",
            "/img",
            "--work-path",
            "/work",
            "--parent-path",
            "../pre",
            "--leave-running",
            "--tcp-established",
            "--ext-unix-sk",
            "--shell-job",
            "--lazy-pages",
            "--status-fd",
            "5",
            "--page-server",
            "h:1",
            "--file-locks",
            "--pre-dump",
            "--manage-cgroups-mode",
            "soft",
            "--empty-ns",
            "network",
            "--auto-dedup",
            "c1",
        ])
        .command
        {
            Some(Command::Checkpoint(c)) => {
                assert_eq!(c.container_id, "c1");
                assert_eq!(c.criu.image_path, Some(PathBuf::from("/img")));
                assert_eq!(c.criu.work_path, Some(PathBuf::from("/work")));
                assert_eq!(c.parent_path, Some(PathBuf::from("../pre")));
                assert!(c.leave_running && c.pre_dump && c.criu.lazy_pages);
                assert!(c.criu.tcp_established && c.criu.ext_unix_sk && c.criu.shell_job);
                assert!(c.criu.file_locks && c.criu.auto_dedup);
                assert_eq!(c.status_fd, Some(5));
                assert_eq!(c.page_server.as_deref(), Some("h:1"));
                assert_eq!(c.criu.manage_cgroups_mode.as_deref(), Some("soft"));
                assert_eq!(c.criu.empty_ns, ["network"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse(&["berth", "checkpoint", "--status-fd", "-1", "c1"]).command {
            Some(Command::Checkpoint(c)) => assert_eq!(c.status_fd, Some(-1)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn restore_takes_runc_flags() {
        match parse(&[
            "berth",
            "restore",
            "--console-socket",
            "/s",
            "--image-path",
            "/img",
            "--work-path",
            "/w",
            "--tcp-established",
            "--ext-unix-sk",
            "--shell-job",
            "--file-locks",
            "--manage-cgroups-mode",
            "full",
            "-b",
            "/b",
            "-d",
            "--pid-file",
            "/p",
            "--no-subreaper",
            "--no-pivot",
            "--empty-ns",
            "network",
            "--auto-dedup",
            "--lazy-pages",
            "--lsm-profile",
            "apparmor:x",
            "--lsm-mount-context",
            "ctx",
            "c2",
        ])
        .command
        {
            Some(Command::Restore(r)) => {
                assert_eq!(r.container_id, "c2");
                assert_eq!(r.bundle, PathBuf::from("/b"));
                assert_eq!(r.console_socket, Some(PathBuf::from("/s")));
                assert!(r.detach && r.no_subreaper && r.no_pivot);
                assert_eq!(r.pid_file, Some(PathBuf::from("/p")));
                assert_eq!(r.lsm_profile.as_deref(), Some("apparmor:x"));
                assert_eq!(r.lsm_mount_context.as_deref(), Some("ctx"));
                assert!(r.criu.lazy_pages && r.criu.auto_dedup && r.criu.file_locks);
                assert_eq!(r.criu.manage_cgroups_mode.as_deref(), Some("full"));
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse(&["berth", "restore", "c3"]).command {
            Some(Command::Restore(r)) => {
                assert_eq!(r.bundle, PathBuf::from("."));
                assert!(!r.detach && r.criu.image_path.is_none());
            }
            other => panic!("unexpected {other:?}"),
        }
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
    fn go_durations() {
        let ok = |t: &str| parse_go_duration(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(ok("5s"), Duration::from_secs(5));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1m"), Duration::from_secs(60));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("2.s"), Duration::from_secs(2));
        assert_eq!(ok("+10us"), Duration::from_micros(10));
        assert_eq!(ok("10\u{b5}s"), Duration::from_micros(10));
        assert_eq!(ok("1h2m3s4ms5us6ns"), Duration::new(3723, 4_005_006));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        for bad in [
            "",
            "5",
            "s",
            ".s",
            "5x",
            "1.2.3s",
            "-",
            "9999999999h",
            "1s2",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            parse_go_duration("-1s").unwrap_err(),
            "duration interval must be greater than 0"
        );
    }

    #[test]
    fn events_flags_and_defaults() {
        match parse(&["berth", "events", "c1"]).command {
            Some(Command::Events(e)) => {
                assert_eq!(e.interval, Duration::from_secs(5));
                assert!(!e.stats);
                assert_eq!(e.container_id, "c1");
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse(&["berth", "events", "--stats", "--interval", "200ms", "c1"]).command {
            Some(Command::Events(e)) => {
                assert_eq!(e.interval, Duration::from_millis(200));
                assert!(e.stats);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(GlobalOpts::try_parse_from(["berth", "events", "--interval", "5", "c1"]).is_err());
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
