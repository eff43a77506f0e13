//! The commands on containers: ps, stop, kill, rm, exec, logs. Records are berth-engine's
//! (shared with berthd); each container's directory holds:
//!
//! ```text
//! <root>/containers/<id>/record.json   what berthctl knows (name, image, exit status)
//! <root>/containers/<id>/bundle/       the OCI bundle handed to the runtime
//! <root>/containers/<id>/ctr.log       a detached container's output
//! <root>/containers/<id>/etc/          its hosts, hostname and resolv.conf
//! <root>/containers/<id>/volumes/      anonymous volumes for the image's Volumes
//! ```

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cli;
use berth_engine::{Record, Store};

/// A container by name, ID or unique ID prefix.
pub fn find_record(s: &Store, query: &str) -> Result<Record> {
    Ok(s.records.find(query)?)
}

/// What the runtime says: created, running, paused, stopped; `None` when it has no state.
pub fn runtime_status(s: &Store, id: &str) -> Option<String> {
    let st = s.runtime.state(id).ok()?;
    let v: serde_json::Value = serde_json::from_str(&st).ok()?;
    v["status"].as_str().map(str::to_string)
}

fn runtime_pid(s: &Store, id: &str) -> Option<i32> {
    let st = s.runtime.state(id).ok()?;
    let v: serde_json::Value = serde_json::from_str(&st).ok()?;
    v["pid"].as_i64().map(|p| p as i32)
}

/// A status line as podman shows it.
pub fn status_text(s: &Store, r: &Record) -> (String, bool) {
    if crate::vm::is_vm(r) && crate::vm::monitor(s, r).is_some() {
        return ("Up".into(), true);
    }
    match runtime_status(s, &r.id).as_deref() {
        Some("running") => ("Up".into(), true),
        Some("paused") => ("Paused".into(), true),
        Some("created") => ("Created".into(), false),
        _ => match r.exit_code {
            Some(c) => (format!("Exited ({c})"), false),
            None => ("Exited".into(), false),
        },
    }
}

pub fn ps(s: &Store, p: &cli::Ps) -> Result<ExitCode> {
    let mut rows = Vec::new();
    for r in s.records.list()? {
        let (status, running) = status_text(s, &r);
        if !p.all && !running {
            continue;
        }
        rows.push((r, status));
    }
    if p.quiet {
        for (r, _) in &rows {
            println!("{}", &r.id[..12]);
        }
    } else if p.format == "json" {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(r, st)| {
                serde_json::json!({
                    "Id": r.id, "Names": [r.name], "Image": r.image, "ImageID": r.image_id.to_string(),
                    "Command": r.command, "Created": r.created, "Status": st,
                    "ExitCode": r.exit_code,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if p.format == "table" {
        println!(
            "{:<12}  {:<32}  {:<24}  {:<14}  NAMES",
            "CONTAINER ID", "IMAGE", "COMMAND", "STATUS"
        );
        for (r, st) in &rows {
            let cmd = r.command.join(" ");
            println!(
                "{:<12}  {:<32}  {:<24}  {:<14}  {}",
                &r.id[..12],
                clip(&r.image, 32),
                clip(&cmd, 24),
                st,
                r.name
            );
        }
    } else {
        bail!("--format {:?}: use table or json", p.format);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        bail!("signal {s}: out of range");
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as i32)
        .map_err(|_| anyhow::anyhow!("unknown signal {s:?}"))
}

/// Waits until the container's init is gone and its exit is recorded (by its monitor or
/// the foreground berthctl, just after the runtime lets it go), up to `limit`.
fn wait_stopped(s: &Store, id: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match runtime_status(s, id).as_deref() {
            Some("running") | Some("paused") | Some("created") => {}
            _ => {
                // The record follows the runtime within moments; a --rm container's goes.
                let recorded = match s.records.load(id) {
                    Ok(r) => r.exit_code.is_some(),
                    Err(_) => true,
                };
                if recorded || Instant::now() >= deadline {
                    return true;
                }
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends the stop signal, then SIGKILL to all after `timeout`.
pub fn stop_one(s: &Store, r: &Record, timeout: Duration) -> Result<()> {
    if crate::vm::is_vm(r) {
        let sig = parse_signal(r.stop_signal.as_deref().unwrap_or("TERM"))?;
        return crate::vm::stop(s, r, sig, timeout);
    }
    match runtime_status(s, &r.id).as_deref() {
        Some("running") | Some("paused") | Some("created") => {}
        _ => return Ok(()),
    }
    if runtime_status(s, &r.id).as_deref() == Some("paused") {
        let _ = s.runtime.resume(&r.id);
    }
    let sig = parse_signal(r.stop_signal.as_deref().unwrap_or("TERM"))?;
    let _ = s.runtime.kill(&r.id, sig, false);
    if wait_stopped(s, &r.id, timeout) {
        return Ok(());
    }
    let _ = s.runtime.kill(&r.id, libc::SIGKILL, true);
    if !wait_stopped(s, &r.id, Duration::from_secs(10)) {
        bail!("container {}: still running 10 s after SIGKILL", r.name);
    }
    Ok(())
}

pub fn stop(s: &Store, a: &cli::Stop) -> Result<ExitCode> {
    let mut failed = false;
    for c in &a.containers {
        match find_record(s, c).and_then(|r| stop_one(s, &r, Duration::from_secs(a.time))) {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("berthctl: stop {c}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(125)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn kill(s: &Store, a: &cli::Kill) -> Result<ExitCode> {
    let sig = parse_signal(&a.signal)?;
    let mut failed = false;
    for c in &a.containers {
        let r = find_record(s, c).and_then(|r| {
            if crate::vm::is_vm(&r) {
                return crate::vm::signal(s, &r, sig);
            }
            match runtime_status(s, &r.id).as_deref() {
                Some("running") | Some("paused") | Some("created") => {}
                _ => bail!("container {} is not running", r.name),
            }
            s.runtime
                .kill(&r.id, sig, false)
                .map_err(|e| anyhow::anyhow!("{}", e.chain()))
        });
        match r {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("berthctl: kill {c}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(125)
    } else {
        ExitCode::SUCCESS
    })
}

/// Removes every trace of a container: runtime state, mounts, snapshot, record.
pub fn remove_container(s: &Store, r: &Record) -> Result<()> {
    if s.runtime.state(&r.id).is_ok() {
        s.runtime
            .delete(&r.id, true)
            .map_err(|e| anyhow::anyhow!("container {}: delete: {}", r.name, e.chain()))?;
    }
    match s.snapshots.remove(&r.id) {
        Ok(()) => {}
        Err(berth_image::snapshot::SnapshotError::NoSnapshot(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let dir = s.records.dir(&r.id);
    // Bound files and volumes may still be mount targets of nothing; plain removal.
    s.records
        .remove(&r.id)
        .with_context(|| format!("remove {}", dir.display()))
}

pub fn rm(s: &Store, a: &cli::Rm) -> Result<ExitCode> {
    let mut failed = false;
    for c in &a.containers {
        let res = find_record(s, c).and_then(|r| {
            if crate::vm::is_vm(&r) && crate::vm::monitor(s, &r).is_some() {
                if !a.force {
                    bail!(
                        "container {} is running: stop it first, or use --force",
                        r.name
                    );
                }
                crate::vm::stop(s, &r, libc::SIGKILL, Duration::ZERO)?;
                // With --rm its monitor has removed it already.
                if s.records.load(&r.id).is_err() {
                    return Ok(());
                }
            }
            let running = matches!(
                runtime_status(s, &r.id).as_deref(),
                Some("running") | Some("paused")
            );
            if running && !a.force {
                bail!(
                    "container {} is running: stop it first, or use --force",
                    r.name
                );
            }
            if running {
                let _ = s.runtime.kill(&r.id, libc::SIGKILL, true);
                wait_stopped(s, &r.id, Duration::from_secs(10));
            }
            remove_container(s, &r)
        });
        match res {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("berthctl: rm {c}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(125)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn exec(s: &Store, a: &cli::Exec) -> Result<ExitCode> {
    use libberth::foreground::{forward_signals, wait_loop, RawMode};
    let r = find_record(s, &a.container)?;
    if crate::vm::is_vm(&r) {
        return crate::vm::exec(s, &r, a);
    }
    if runtime_status(s, &r.id).as_deref() != Some("running") {
        bail!("container {} is not running", r.name);
    }
    let mut ov = libberth::ProcessOverrides {
        args: a.command.clone(),
        env: a.env.iter().map(|e| crate::run::env_entry(e)).collect(),
        cwd: a.workdir.as_ref().map(PathBuf::from),
        terminal: a.tty,
        ..Default::default()
    };
    if let Some(u) = &a.user {
        let rootfs = s.snapshots.rootfs(&r.id);
        let pid = runtime_pid(s, &r.id).context("container has no init pid")?;
        // Resolve inside the container's own view of its root.
        let root = if rootfs.is_dir() {
            rootfs
        } else {
            PathBuf::from(format!("/proc/{pid}/root"))
        };
        let ru = berth_image::passwd::resolve_user(&root, u)?;
        ov.user = Some((ru.uid, Some(ru.gid)));
        ov.additional_gids = ru.additional_gids;
    }
    let process = s
        .runtime
        .exec_process(&r.id, &ov)
        .map_err(|e| anyhow::anyhow!("container {}: {}", r.name, e.chain()))?;
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let opts = libberth::ExecOptions {
        id: r.id.clone(),
        process,
        console: a.tty.then_some(libberth::ConsoleTarget::Return),
        pid_file: None,
        preserve_fds: 0,
        ignore_paused: false,
        sub_cgroups: vec![],
        stdio: Default::default(),
        new_session: false,
    };
    let sfd = forward_signals().map_err(|e| anyhow::anyhow!("{}", e.chain()))?;
    let execed = s
        .runtime
        .exec(&opts)
        .map_err(|e| anyhow::anyhow!("container {}: exec: {}", r.name, e.chain()))?;
    let raw = execed
        .console_master
        .as_ref()
        .and_then(|_| RawMode::enter());
    let code = wait_loop(execed.pid, &sfd, execed.console_master.as_ref());
    drop(raw);
    Ok(ExitCode::from(code))
}

pub fn logs(s: &Store, a: &cli::Logs) -> Result<ExitCode> {
    let r = find_record(s, &a.container)?;
    let path = s.records.dir(&r.id).join("ctr.log");
    let mut f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "container {} has no log: only detached containers write one",
                r.name
            )
        }
        Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
    };
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n > 0 {
            out.write_all(&buf[..n])?;
            continue;
        }
        out.flush()?;
        if !a.follow {
            break;
        }
        let live = matches!(
            runtime_status(s, &r.id).as_deref(),
            Some("running") | Some("paused") | Some("created")
        );
        if !live {
            // One last read for what came just before the exit.
            let pos = f.stream_position()?;
            f.seek(SeekFrom::Start(pos))?;
            let n = f.read(&mut buf)?;
            out.write_all(&buf[..n])?;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(ExitCode::SUCCESS)
}
