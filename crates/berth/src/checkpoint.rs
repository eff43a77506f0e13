//! `berth checkpoint` and `berth restore`: runc's flags to libberth's typed options. Flags
//! that CRIU's command line cannot honour are refused by name. Without `--detach`, restore
//! waits for the container like `run` does and exits with its status.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use berth_cli::{Checkpoint, CriuOpts, Restore};
use libberth::checkpoint::{
    check_empty_ns, CgroupsMode, CheckpointError, CheckpointOptions, CriuCommon, PageServer,
    RestoreOptions,
};
use libberth::{Error, Runtime};

use crate::log::Logger;
use libberth::foreground::{forward_signals, wait_loop};

type CmdResult = Result<ExitCode, (Option<String>, Error)>;

/// A checkpoint error as the runtime error `main` prints after the container id.
fn runtime_error(e: CheckpointError) -> Error {
    match e {
        CheckpointError::Runtime(e) => e,
        other => Error::Unsupported(other.chain()),
    }
}

/// A path as given, made absolute against the working directory.
fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    }
}

fn common(c: &CriuOpts, criu: Option<&Path>) -> Result<CriuCommon, CheckpointError> {
    check_empty_ns(&c.empty_ns)?;
    let image_path = match &c.image_path {
        Some(p) => absolute(p),
        // runc's default: ./checkpoint
        None => absolute(Path::new("checkpoint")),
    };
    Ok(CriuCommon {
        criu: criu.map(absolute),
        image_path,
        work_path: c.work_path.as_deref().map(absolute),
        tcp_established: c.tcp_established,
        ext_unix_sk: c.ext_unix_sk,
        shell_job: c.shell_job,
        file_locks: c.file_locks,
        cgroups_mode: CgroupsMode::parse(c.manage_cgroups_mode.as_deref().unwrap_or(""))?,
        auto_dedup: c.auto_dedup,
        lazy_pages: c.lazy_pages,
    })
}

fn checkpoint_options(
    c: &Checkpoint,
    criu: Option<&Path>,
) -> Result<CheckpointOptions, CheckpointError> {
    Ok(CheckpointOptions {
        id: c.container_id.clone(),
        common: common(&c.criu, criu)?,
        parent_path: c.parent_path.clone(),
        leave_running: c.leave_running,
        pre_dump: c.pre_dump,
        tcp_skip_in_flight: c.tcp_skip_in_flight,
        link_remap: c.link_remap,
        page_server: c
            .page_server
            .as_deref()
            .map(PageServer::parse)
            .transpose()?,
        status_fd: c.status_fd.filter(|fd| *fd >= 0),
    })
}

pub fn checkpoint(rt: &Runtime, c: &Checkpoint, criu: Option<&Path>) -> CmdResult {
    let fail = |e: CheckpointError| (Some(c.container_id.clone()), runtime_error(e));
    let o = checkpoint_options(c, criu).map_err(fail)?;
    rt.checkpoint(&o).map_err(fail)?;
    Ok(ExitCode::SUCCESS)
}

fn restore_options(r: &Restore, criu: Option<&Path>) -> Result<RestoreOptions, CheckpointError> {
    if r.console_socket.is_some() {
        return Err(CheckpointError::UnsupportedFlag {
            flag: "--console-socket",
            reason: "berth cannot restore a terminal container (criu hands the pty master \
                     back only over its RPC interface)",
        });
    }
    if r.no_pivot {
        return Err(CheckpointError::UnsupportedFlag {
            flag: "--no-pivot",
            reason: "criu always pivots into the restored root",
        });
    }
    Ok(RestoreOptions {
        id: r.container_id.clone(),
        bundle: r.bundle.clone(),
        common: common(&r.criu, criu)?,
        pid_file: r.pid_file.clone(),
        lsm_profile: r.lsm_profile.clone(),
        lsm_mount_context: r.lsm_mount_context.clone(),
    })
}

pub fn restore(rt: &Runtime, r: &Restore, criu: Option<&Path>, logger: &Logger) -> CmdResult {
    let id = r.container_id.clone();
    let fail = |e: CheckpointError| (Some(id.clone()), runtime_error(e));
    let o = restore_options(r, criu).map_err(fail)?;
    if !r.detach && !r.no_subreaper {
        // Orphans of the container come to us while we wait for its init.
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag on this process.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let restored = rt.restore(&o).map_err(fail)?;
    if r.detach {
        return Ok(ExitCode::SUCCESS);
    }
    // criu restored the init as our child (--restore-sibling): wait for it as `run` does.
    let sfd = forward_signals().map_err(|e| (Some(id.clone()), e))?;
    let code = wait_loop(restored.pid, &sfd, None);
    if let Err(e) = rt.delete(&id, true) {
        logger.warn(&format!(
            "container {id:?}: delete after restore: {}",
            e.chain()
        ));
    }
    Ok(ExitCode::from(code))
}
