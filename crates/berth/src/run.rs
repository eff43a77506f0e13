//! `berth run`: create, start, and unless detached wait for the init, forwarding signals to it
//! and proxying its terminal; exits with the container's exit status.

use std::process::ExitCode;

use berth_cli::Run;
use libberth::foreground::{forward_signals, wait_loop, RawMode};
use libberth::{ConsoleTarget, Error, Runtime};

use crate::log::Logger;

type CmdResult = Result<ExitCode, (Option<String>, Error)>;

pub fn run(rt: &Runtime, r: &Run, logger: &Logger) -> CmdResult {
    let id = r.container_id.clone();
    let fail = |e: Error| (Some(id.clone()), e);
    let mut o = crate::create_options(&id, &r.opts);
    let terminal = terminal_requested(&r.opts.bundle);
    if terminal && o.console.is_none() {
        if r.detach {
            return Err(fail(Error::Unsupported(
                "a detached terminal container needs --console-socket".into(),
            )));
        }
        o.console = Some(ConsoleTarget::Return);
    }
    if !r.detach {
        // Become the init's parent once the intermediate exits, to wait for it.
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag on this process.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let created = rt.create(&o).map_err(fail)?;
    if r.detach {
        rt.start(&id).map_err(fail)?;
        return Ok(ExitCode::SUCCESS);
    }
    let sfd = forward_signals().map_err(fail)?;
    let start = rt.start(&id);
    if let Err(e) = start {
        let _ = rt.delete(&id, true);
        return Err(fail(e));
    }
    let raw_guard = created
        .console_master
        .as_ref()
        .and_then(|_| RawMode::enter());
    let code = wait_loop(created.pid, &sfd, created.console_master.as_ref());
    drop(raw_guard);
    if !r.keep {
        if let Err(e) = rt.delete(&id, true) {
            logger.warn(&format!(
                "container {id:?}: delete after run: {}",
                e.chain()
            ));
        }
    }
    Ok(ExitCode::from(code))
}

fn terminal_requested(bundle: &std::path::Path) -> bool {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
        .and_then(|v| v["process"]["terminal"].as_bool())
        .unwrap_or(false)
}
