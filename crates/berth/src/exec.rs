//! `berth exec`: builds the process (from --process or the container's own process and the
//! flags), starts it in the container, and unless detached waits for it like `run` does.

use std::process::ExitCode;

use berth_cli::Exec;
use libberth::{ConsoleTarget, Error, ExecOptions, ProcessOverrides, Runtime};

use libberth::foreground::{forward_signals, wait_loop, RawMode};

type CmdResult = Result<ExitCode, (Option<String>, Error)>;

pub fn exec(rt: &Runtime, e: &Exec) -> CmdResult {
    let id = e.container_id.clone();
    let fail = |err: Error| (Some(id.clone()), err);
    let process = match &e.process {
        Some(path) => {
            let data = std::fs::read(path).map_err(|err| {
                fail(Error::Unsupported(format!(
                    "read {}: {err}",
                    path.display()
                )))
            })?;
            serde_json::from_slice(&data).map_err(|err| {
                fail(Error::ConfigParse {
                    file: path.clone(),
                    source: err,
                })
            })?
        }
        None => rt
            .exec_process(&id, &overrides(e).map_err(fail)?)
            .map_err(fail)?,
    };
    let terminal = process.terminal().unwrap_or(false);
    let console = match (&e.console_socket, terminal, e.detach) {
        (Some(s), _, _) => Some(ConsoleTarget::Socket(s.clone())),
        (None, true, false) => Some(ConsoleTarget::Return),
        (None, true, true) => {
            return Err(fail(Error::Unsupported(
                "a detached exec with a terminal needs --console-socket".into(),
            )))
        }
        (None, false, _) => None,
    };
    if !e.detach {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag on this process.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let opts = ExecOptions {
        id: id.clone(),
        process,
        console,
        pid_file: e.pid_file.clone(),
        preserve_fds: e.preserve_fds,
        ignore_paused: e.ignore_paused,
        sub_cgroups: e.cgroup.clone(),
        stdio: Default::default(),
        new_session: false,
    };
    if e.detach {
        rt.exec(&opts).map_err(fail)?;
        return Ok(ExitCode::SUCCESS);
    }
    let sfd = forward_signals().map_err(fail)?;
    let execed = rt.exec(&opts).map_err(fail)?;
    let raw = execed
        .console_master
        .as_ref()
        .and_then(|_| RawMode::enter());
    let code = wait_loop(execed.pid, &sfd, execed.console_master.as_ref());
    drop(raw);
    Ok(ExitCode::from(code))
}

fn overrides(e: &Exec) -> Result<ProcessOverrides, Error> {
    if e.command.is_empty() {
        return Err(Error::Unsupported(
            "exec needs a command (or --process)".into(),
        ));
    }
    let user = match &e.user {
        None => None,
        Some(u) => {
            let (uid, gid) = match u.split_once(':') {
                Some((a, b)) => (a, Some(b)),
                None => (u.as_str(), None),
            };
            let num = |s: &str| {
                s.parse::<u32>().map_err(|_| {
                    Error::Unsupported(format!("--user {u:?}: expected UID[:GID] as numbers"))
                })
            };
            Some((num(uid)?, gid.map(num).transpose()?))
        }
    };
    Ok(ProcessOverrides {
        args: e.command.clone(),
        env: e.env.clone(),
        cwd: e.cwd.clone(),
        user,
        additional_gids: e.additional_gids.clone(),
        terminal: e.tty,
        caps: e.cap.clone(),
        no_new_privs: e.no_new_privs,
        apparmor: e.apparmor.clone(),
        process_label: e.process_label.clone(),
    })
}
