//! `berth events`: runc's JSON lines on stdout. `{"type":"stats","id":ID,"data":{...}}`
//! every interval, or once with `--stats`, and `{"type":"oom","id":ID}` on each OOM kill.
//! Ends with status 0 when the container stops, and on SIGINT or SIGTERM.

use std::io::Write;
use std::os::fd::AsFd;
use std::process::ExitCode;

use berth_cli::Events;
use libberth::events::{Event, Stats};
use libberth::{Error, Runtime};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::Serialize;

use crate::log::Logger;

type CmdResult = Result<ExitCode, (Option<String>, Error)>;

/// One line of output, as runc's `types.Event` encodes it.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Stats>,
}

/// Writes one event as a JSON line and flushes it, so a reader sees it at once.
fn print(id: &str, event: &Event) -> Result<(), Error> {
    let line = match event {
        Event::Stats(stats) => Line {
            kind: "stats",
            id,
            data: Some(stats),
        },
        Event::Oom => Line {
            kind: "oom",
            id,
            data: None,
        },
    };
    let text = serde_json::to_string(&line).expect("events serialize");
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| Error::Io {
            context: "write events to stdout".into(),
            source: e,
        })
}

/// SIGINT and SIGTERM, blocked and readable from a signalfd, so that they end the loop
/// between two events instead of in the middle of a line.
fn stop_signals() -> Result<SignalFd, Error> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).map_err(|e| {
        Error::Sys {
            context: "block SIGINT and SIGTERM".into(),
            source: e,
        }
    })?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).map_err(|e| {
        Error::Sys {
            context: "signalfd for SIGINT and SIGTERM".into(),
            source: e,
        }
    })
}

pub fn events(rt: &Runtime, e: &Events, logger: &Logger) -> CmdResult {
    let id = e.container_id.as_str();
    let fail = |err: Error| (Some(id.to_string()), err);
    if e.stats {
        if e.interval.is_zero() {
            return Err(fail(Error::Unsupported(
                "duration interval must be greater than 0".into(),
            )));
        }
        let stats = rt.stats(id).map_err(fail)?;
        print(id, &Event::Stats(Box::new(stats))).map_err(fail)?;
        return Ok(ExitCode::SUCCESS);
    }
    let signals = stop_signals().map_err(fail)?;
    let mut stream = rt.events(id, e.interval).map_err(fail)?;
    loop {
        match stream.next(Some(signals.as_fd())) {
            Ok(Some(event)) => print(id, &event).map_err(fail)?,
            Ok(None) => return Ok(ExitCode::SUCCESS),
            // As runc: a failed sample is logged, and the next one tried.
            Err(err) => logger.error(&format!("container {id:?}: {}", err.chain())),
        }
    }
}
