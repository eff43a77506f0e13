//! `berth-shim --pod ID --dir DIR --runtime-root ROOT [--runtime-binary PATH
//! [--runtime-option=OPT]...]`: the monitor of one pod (containers by libberth in process,
//! or by the OCI runtime binary with those global options).
//!
//! It forks twice and returns once the grandchild serves `DIR/shim.sock`; that one is a
//! session leader and the child subreaper of everything it starts, writes its own log to
//! `DIR/shim.log`, and lives until the engine shuts the pod down and the last container is
//! deleted. See the library's docs and docs/cri.md.

mod pause;
mod server;

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;

use nix::fcntl::OFlag;
use nix::unistd::{fork, pipe2, setsid, ForkResult};

struct Args {
    pod: String,
    dir: PathBuf,
    runtime_root: PathBuf,
    runtime_binary: Option<PathBuf>,
    runtime_options: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut pod = None;
    let mut dir = None;
    let mut root = None;
    let mut binary = None;
    let mut options = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--pod" => pod = Some(value()?),
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--runtime-root" => root = Some(PathBuf::from(value()?)),
            "--runtime-binary" => binary = Some(PathBuf::from(value()?)),
            o if o.starts_with("--runtime-option=") => {
                options.push(o["--runtime-option=".len()..].to_string())
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        pod: pod.ok_or("--pod is required")?,
        dir: dir.ok_or("--dir is required")?,
        runtime_root: root.ok_or("--runtime-root is required")?,
        runtime_binary: binary,
        runtime_options: options,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-shim: error: {e}");
            return ExitCode::from(2);
        }
    };
    // Processes the shim puts into containers are forks of it: its image must not be
    // writable through them (CVE-2019-5736), as berth's own.
    if let Err(e) = libberth::sealed::ensure() {
        eprintln!("berth-shim: error: cannot protect the berth-shim binary: {e}");
        return ExitCode::from(1);
    }
    match daemonize(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-shim: error: pod {}: {e}", args.pod);
            ExitCode::from(1)
        }
    }
}

/// Forks the shim away; returns in the original process once it serves (or says why not).
fn daemonize(args: &Args) -> Result<(), String> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("create {}: {e}", args.dir.display()))?;
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the shim is single-threaded here, so the child may run any code.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { child } => {
            drop(ready_w);
            let mut said = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::fs::File::from(ready_r), &mut said);
            let _ = nix::sys::wait::waitpid(child, None);
            let said = String::from_utf8_lossy(&said);
            match said.strip_prefix("ok") {
                Some(_) => Ok(()),
                None if said.is_empty() => Err("the shim exited before it served".into()),
                None => Err(said.into_owned()),
            }
        }
        ForkResult::Child => {
            drop(ready_r);
            let _ = setsid();
            // SAFETY: still single-threaded.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => serve(args, ready_w),
                _ => {
                    // SAFETY: ending the middle process without running exit handlers.
                    unsafe { libc::_exit(0) }
                }
            }
        }
    }
}

/// The shim proper; never returns.
fn serve(args: &Args, ready: OwnedFd) -> ! {
    let code = match server::Shim::new(
        &args.pod,
        &args.dir,
        &args.runtime_root,
        args.runtime_binary
            .as_deref()
            .map(|b| (b, args.runtime_options.as_slice())),
    ) {
        Ok(mut shim) => {
            let mut w = std::fs::File::from(ready);
            let _ = w.write_all(b"ok");
            drop(w);
            shim.run();
            0
        }
        Err(e) => {
            let _ = nix::unistd::write(&ready, e.as_bytes());
            1
        }
    };
    // SAFETY: ending the shim without unwinding.
    unsafe { libc::_exit(code) }
}

/// Points stdin and stdout at /dev/null and stderr at `log`, so that nothing of the caller's
/// stays open in the shim.
pub(crate) fn redirect_stdio(log: &std::fs::File) -> Result<(), String> {
    let null = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("open /dev/null: {e}"))?;
    for (src, dst) in [
        (null.as_raw_fd(), 0),
        (null.as_raw_fd(), 1),
        (log.as_raw_fd(), 2),
    ] {
        // SAFETY: dup2 of descriptors this process owns onto its own stdio.
        if unsafe { libc::dup2(src, dst) } < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
