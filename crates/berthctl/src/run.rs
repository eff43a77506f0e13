//! `berthctl run`: an image's config and the user's flags become an OCI bundle, the image's
//! layers become the container's root file system, and libberth runs it, in the
//! foreground, or detached under a monitor process (`berthctl monitor`, hidden) that holds
//! its output in a log, reaps it and records its exit status.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context, Result};
use berth_image::images::ImageRecord;
use berth_image::passwd::resolve_user;
use berth_image::runconfig::{self, Bind, Network, RunOptions};

use crate::cli;
use berth_engine::records::now;
use berth_engine::{Record, Store};

use crate::containers::remove_container;

/// Holds berthctl's own path for the re-executed, protected copy (see main).
pub const EXE_ENV: &str = "BERTHCTL_EXE";

/// The fd a detached container's monitor reports its start on.
const READY_FD: i32 = 3;

/// `KEY=VALUE` as is; a bare `KEY` takes this process's value (dropped when unset).
pub fn env_entry(e: &str) -> String {
    if e.contains('=') {
        e.to_string()
    } else {
        format!("{e}={}", std::env::var(e).unwrap_or_default())
    }
}

fn parse_env(a: &cli::Run) -> Result<Vec<String>> {
    let mut env = Vec::new();
    for f in &a.env_file {
        let text = fs::read_to_string(f).with_context(|| format!("--env-file {}", f.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('=') {
                bail!(
                    "--env-file {} line {}: no variable name",
                    f.display(),
                    n + 1
                );
            }
            env.push(env_entry(line));
        }
    }
    for e in &a.env {
        if e.starts_with('=') || e.is_empty() {
            bail!("-e {e:?}: no variable name");
        }
        env.push(env_entry(e));
    }
    Ok(env)
}

/// `64m`, `1g`, `512k`, `1024`, `100b`, for `--memory`.
pub fn parse_memory(s: &str) -> Result<i64> {
    parse_size("--memory", s)
}

/// A size for `flag`: `64m`, `1g`, `512k`, `1024`, `100b`.
pub fn parse_size(flag: &str, s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix('b')
        .filter(|r| !r.is_empty() && r.chars().last().is_some_and(|c| c.is_ascii_alphabetic()))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('b') => (&t[..t.len() - 1], 1),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("{flag} {s:?}: use a number with b, k, m or g"))?;
    if !(n.is_finite() && n > 0.0) {
        bail!("{flag} {s:?}: must be above 0");
    }
    Ok((n * mult as f64) as i64)
}

/// `--pids-limit`: podman's default of 2048 when not given; 0 or -1 mean no limit, as
/// with podman.
fn parse_pids_limit(flag: Option<i64>) -> Result<Option<i64>> {
    match flag {
        None => Ok(Some(runconfig::DEFAULT_PIDS_LIMIT)),
        Some(0 | -1) => Ok(None),
        Some(n) if n > 0 => Ok(Some(n)),
        Some(n) => bail!("--pids-limit {n}: use a positive number, or 0 or -1 for no limit"),
    }
}

pub(crate) fn parse_volume(v: &str) -> Result<Bind> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [s, d] => (*s, *d, "rw"),
        [s, d, m] => (*s, *d, *m),
        _ => bail!("-v {v:?}: use HOST:CONTAINER[:ro|rw]"),
    };
    if !src.starts_with('/') {
        bail!("-v {v:?}: the host path must be absolute (named volumes are not supported)");
    }
    if !dst.starts_with('/') {
        bail!("-v {v:?}: the container path must be absolute");
    }
    let readonly = match mode {
        "ro" => true,
        "rw" => false,
        m => bail!("-v {v:?}: unknown option {m:?} (ro or rw)"),
    };
    if !Path::new(src).exists() {
        bail!("-v {v:?}: {src} does not exist");
    }
    Ok(Bind {
        source: PathBuf::from(src),
        destination: dst.to_string(),
        readonly,
    })
}

fn parse_entrypoint(e: &str) -> Result<Vec<String>> {
    if e.is_empty() {
        return Ok(vec![]);
    }
    if e.trim_start().starts_with('[') {
        return serde_json::from_str(e)
            .with_context(|| format!("--entrypoint {e:?}: not a JSON array of strings"));
    }
    Ok(vec![e.to_string()])
}

fn random_id() -> Result<String> {
    let mut b = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("read /dev/urandom")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_alphanumeric())
        && n.len() <= 128
        && n.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch))
}

/// The RLIMIT_NOFILE a container gets: podman's 1048576, capped at what this process may
/// set (raising a hard limit needs CAP_SYS_RESOURCE).
fn nofile_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard.min(1 << 20))
        .unwrap_or(1024)
}

pub fn run(s: &Store, a: &cli::Run) -> Result<ExitCode> {
    let network = match a.network.as_str() {
        "none" => Network::None,
        "host" => Network::Host,
        n => bail!("--network {n:?}: use none or host"),
    };
    let vm = match a.isolation.as_str() {
        "process" => false,
        "vm" => {
            crate::vm::check_flags(a)?;
            true
        }
        i => bail!("--isolation {i:?}: use process or vm"),
    };
    if a.detach && a.rm && a.interactive {
        bail!("-d with -i: a detached container has no input to keep open");
    }
    let env = parse_env(a)?;
    let binds = a
        .volume
        .iter()
        .map(|v| parse_volume(v))
        .collect::<Result<Vec<_>>>()?;
    let memory = a.memory.as_deref().map(parse_memory).transpose()?;
    let pids_limit = parse_pids_limit(a.pids_limit)?;
    let entrypoint = a.entrypoint.as_deref().map(parse_entrypoint).transpose()?;
    if let Some(n) = &a.name {
        if !valid_name(n) {
            bail!("--name {n:?}: use letters, digits, _ . - (starting with a letter or digit)");
        }
    }
    let image = crate::pull::ensure_image(s, &a.image, &a.pull, a.platform.as_deref())?;
    let config = s.image_config(&image)?;
    let id = random_id()?;
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("berth_{}", &id[..8]));
    let hostname = a.hostname.clone().unwrap_or_else(|| id[..12].to_string());
    let mut opts = RunOptions {
        command: a.command.clone(),
        entrypoint,
        env,
        workdir: a.workdir.clone(),
        tty: a.tty,
        hostname: hostname.clone(),
        binds,
        network,
        memory,
        cpus: a.cpus,
        pids_limit,
        nofile: nofile_limit(),
        seccomp: !a.no_seccomp,
        cgroups_path: Some(format!("/berthctl/{id}")),
    };
    let args = runconfig::process_args(&config, &opts)?;
    let record = Record {
        id: id.clone(),
        name: name.clone(),
        image: a.image.clone(),
        image_id: image.id.clone(),
        command: args,
        created: now(),
        stop_signal: runconfig::stop_signal(&config),
        auto_remove: a.rm,
        detached: a.detach,
        exit_code: None,
        finished: None,
        isolation: vm.then(|| "vm".to_string()),
    };
    match s.records.create(&record) {
        Err(berth_engine::Error::NameTaken(n)) => {
            bail!("the name {n:?} is taken by another container (berthctl ps -a)")
        }
        r => r?,
    }
    if let Err(e) = prepare(s, &record, &image, &config, &mut opts, a.user.as_deref()) {
        let _ = remove_container(s, &record);
        return Err(e.context(format!("container {name}")));
    }
    if vm {
        let opts = crate::vm::VmOptions::from_cli(a);
        if a.detach {
            opts.save(s, &record)?;
            return start_detached(s, &record);
        }
        let code = crate::vm::run(s, &record, &opts, None)?;
        return Ok(ExitCode::from(code));
    }
    if a.detach {
        return start_detached(s, &record);
    }
    if !a.interactive && !a.tty {
        // No -i: the container reads nothing (as with podman).
        if let Ok(null) = File::open("/dev/null") {
            // SAFETY: dup2 onto fd 0 of an fd we own; both are valid.
            unsafe { libc::dup2(null.as_raw_fd(), 0) };
        }
    }
    let code = supervise(s, &record, a.tty, None)?;
    Ok(ExitCode::from(code))
}

/// Root file system, /etc files, volumes and config.json.
fn prepare(
    s: &Store,
    r: &Record,
    image: &ImageRecord,
    config: &oci_spec::image::ImageConfiguration,
    opts: &mut RunOptions,
    user_flag: Option<&str>,
) -> Result<()> {
    let dir = s.records.dir(&r.id);
    let unpacked = s.snapshots.unpack(&s.content, image)?;
    s.images.record_layer_sizes(&unpacked.sizes)?;
    let rootfs = s.snapshots.prepare(&r.id, &s.content, image)?;
    // -u wins over the image's User.
    let user_spec = user_flag
        .map(str::to_string)
        .or_else(|| config.config().as_ref().and_then(|c| c.user().clone()))
        .unwrap_or_default();
    let user = resolve_user(&rootfs, &user_spec)?;
    let etc = dir.join("etc");
    fs::DirBuilder::new().mode(0o755).create(&etc)?;
    let (hosts, resolv) = match opts.network {
        Network::None => (
            format!(
                "127.0.0.1\tlocalhost {h}\n::1\tlocalhost {h}\n",
                h = opts.hostname
            ),
            String::new(),
        ),
        Network::Host => (
            format!(
                "{}127.0.1.1\t{}\n",
                fs::read_to_string("/etc/hosts").unwrap_or_default(),
                opts.hostname
            ),
            fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        ),
    };
    let mut extra = Vec::new();
    for (file, data) in [
        ("hosts", hosts),
        ("hostname", format!("{}\n", opts.hostname)),
        ("resolv.conf", resolv),
    ] {
        let p = etc.join(file);
        fs::write(&p, data).with_context(|| format!("write {}", p.display()))?;
        extra.push(Bind {
            source: p,
            destination: format!("/etc/{file}"),
            readonly: false,
        });
    }
    let volumes = berth_engine::volumes::image_volumes(config, &rootfs, &dir, |v| {
        opts.binds.iter().any(|b| b.destination == v)
    })?;
    for (destination, source) in volumes {
        extra.push(Bind {
            source,
            destination,
            readonly: false,
        });
    }
    let mut spec = runconfig::runtime_config(config, opts, &user, &rootfs, &extra)?;
    // The profile lists system calls of newer kernels too; the runtime's libseccomp refuses
    // a profile naming one it does not know, so those are left out here.
    runconfig::retain_known_syscalls(&mut spec, |n| libseccomp::ScmpSyscall::from_name(n).is_ok());
    let bundle = dir.join("bundle");
    fs::DirBuilder::new().mode(0o700).create(&bundle)?;
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&spec)?,
    )
    .with_context(|| format!("write {}", bundle.join("config.json").display()))?;
    Ok(())
}

/// Creates and starts the container, waits for it, records its exit status, and cleans up:
/// the runtime state and mounts always, everything with --rm. `ready` (the monitor's
/// report fd) hears "ok" once the container runs, or the error.
pub fn supervise(s: &Store, r: &Record, tty: bool, ready: Option<OwnedFd>) -> Result<u8> {
    use libberth::foreground::{forward_signals, wait_loop, RawMode};
    let bundle = s.records.dir(&r.id).join("bundle");
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let co = libberth::CreateOptions {
        id: r.id.clone(),
        bundle,
        console: tty.then_some(libberth::ConsoleTarget::Return),
        pid_file: None,
        no_pivot: false,
        no_new_keyring: false,
        preserve_fds: 0,
        stdio: Default::default(),
    };
    let report = |fd: &Option<OwnedFd>, msg: &str| {
        if let Some(fd) = fd {
            // SAFETY: the fd is ours and open; writing a short message from a live buffer.
            unsafe { libc::write(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
        }
    };
    let started = (|| -> Result<(libberth::Created, nix::sys::signalfd::SignalFd)> {
        let sfd = forward_signals().map_err(|e| anyhow::anyhow!("{}", e.chain()))?;
        let created = s
            .runtime
            .create(&co)
            .map_err(|e| anyhow::anyhow!("create: {}", e.chain()))?;
        if let Err(e) = s.runtime.start(&r.id) {
            let _ = s.runtime.delete(&r.id, true);
            bail!("start: {}", e.chain());
        }
        Ok((created, sfd))
    })();
    let (created, sfd) = match started {
        Ok(x) => x,
        Err(e) => {
            report(&ready, &format!("{e:#}"));
            let _ = remove_container(s, r);
            return Err(e.context(format!("container {}", r.name)));
        }
    };
    report(&ready, "ok");
    drop(ready);
    let raw = if ready_is_terminal(tty) {
        created
            .console_master
            .as_ref()
            .and_then(|_| RawMode::enter())
    } else {
        None
    };
    let code = wait_loop(created.pid, &sfd, created.console_master.as_ref());
    drop(raw);
    finish(s, r, code);
    Ok(code)
}

fn ready_is_terminal(tty: bool) -> bool {
    // SAFETY: isatty only inspects fd 0.
    tty && unsafe { libc::isatty(0) } == 1
}

/// After the init exits: record, drop runtime state and mounts, or everything with --rm.
fn finish(s: &Store, r: &Record, code: u8) {
    if let Err(e) = s.runtime.delete(&r.id, true) {
        eprintln!("berthctl: container {}: delete: {}", r.name, e.chain());
    }
    conclude(s, r, Some(code));
}

/// After a container has ended: everything removed with --rm, or when it failed (`None`);
/// else its snapshot unmounted and its exit status recorded. Process and VM containers.
pub(crate) fn conclude(s: &Store, r: &Record, code: Option<u8>) {
    match code {
        Some(code) if !r.auto_remove => {
            let _ = s.snapshots.unmount(&r.id);
            if let Ok(mut rec) = s.records.load(&r.id) {
                rec.exit_code = Some(code as i32);
                rec.finished = Some(now());
                if let Err(e) = s.records.save(&rec) {
                    eprintln!("berthctl: {e:#}");
                }
            }
        }
        _ => {
            if let Err(e) = remove_container(s, r) {
                eprintln!("berthctl: container {}: remove: {e:#}", r.name);
            }
        }
    }
}

/// Starts `berthctl monitor ID` in a new session with its output going to the log, waits
/// for its report, and prints the container ID.
fn start_detached(s: &Store, r: &Record) -> Result<ExitCode> {
    let log_path = s.records.dir(&r.id).join("ctr.log");
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let exe = std::env::var_os(EXE_ENV)
        .map(PathBuf::from)
        .map(Ok)
        .unwrap_or_else(std::env::current_exe)
        .context("find the berthctl binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--root")
        .arg(&s.root)
        .arg("--runroot")
        .arg(&s.runtime.root)
        .arg("--storage-driver")
        .arg(s.snapshots.driver().name())
        .arg("monitor")
        .arg(&r.id)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let wr_raw = wr.as_raw_fd();
    // SAFETY: between fork and exec the closure calls only async-signal-safe functions
    // (dup2, setsid) on fds that are open.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(wr_raw, READY_FD) < 0 || libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("start the container's monitor")?;
    drop(wr);
    let mut msg = String::new();
    File::from(rd).read_to_string(&mut msg)?;
    if msg != "ok" {
        let _ = child.wait();
        let _ = remove_container(s, r);
        if msg.is_empty() {
            bail!(
                "container {}: the monitor exited before starting it (see {})",
                r.name,
                log_path.display()
            );
        }
        bail!("container {}: {msg}", r.name);
    }
    // The monitor lives on in its own session; nobody here waits for it.
    std::mem::forget(child);
    println!("{}", r.id);
    std::io::stdout().flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The hidden `monitor` command.
pub fn monitor(s: &Store, id: &str) -> Result<ExitCode> {
    // SAFETY: fd 3 was set up by start_detached; we take ownership of it once.
    let ready = unsafe { OwnedFd::from_raw_fd(READY_FD) };
    let _ = nix::fcntl::fcntl(
        &ready,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let r = s.records.load(id)?;
    if crate::vm::is_vm(&r) {
        let opts = crate::vm::VmOptions::load(s, &r)?;
        let code = crate::vm::run(s, &r, &opts, Some(File::from(ready)))?;
        return Ok(ExitCode::from(code));
    }
    let tty = fs::read(s.records.dir(id).join("bundle/config.json"))
        .ok()
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
        .and_then(|v| v["process"]["terminal"].as_bool())
        .unwrap_or(false);
    let code = supervise(s, &r, tty, Some(ready))?;
    Ok(ExitCode::from(code))
}
