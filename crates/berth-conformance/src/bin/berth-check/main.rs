//! berth-check: the conformance checker that runs inside a container.
//!
//! ```text
//! berth-check EXPECTATIONS.json     check what this process sees; one JSON line per check
//! berth-check --hook NAME LOGFILE   as an OCI hook: append NAME and the state from stdin
//! ```
//!
//! It is copied into a busybox rootfs, so it is built static and uses only std, libc, serde and
//! serde_json. It exits 0 once every check has printed its line, whatever the verdicts; 2 when
//! the expectations file is unusable (after printing one `fail` line that says why); 3 when
//! stdout cannot be written.

mod cgroup;
mod hook;
mod probe;
mod sys;

use std::io::Write;
use std::process::ExitCode;

use berth_conformance::{judge, Expectations, Line, Status};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.as_slice() {
        [_, flag, name, log] if flag == "--hook" => hook::run(name, log),
        [_, path] if !path.starts_with('-') => run_checks(path),
        _ => {
            eprintln!("usage: berth-check EXPECTATIONS.json | berth-check --hook NAME LOGFILE");
            ExitCode::from(2)
        }
    }
}

fn run_checks(path: &str) -> ExitCode {
    let expectations = match read_expectations(path) {
        Ok(e) => e,
        Err(e) => {
            let line = Line {
                case: "?".into(),
                check: "expectations".into(),
                status: Status::Fail,
                detail: e,
            };
            return match print_line(&mut std::io::stdout().lock(), &line) {
                Ok(()) => ExitCode::from(2),
                Err(_) => ExitCode::from(3),
            };
        }
    };
    let mut ctx = probe::Context::default();
    let mut out = std::io::stdout().lock();
    for check in &expectations.checks {
        let observed = ctx.observe(&check.probe);
        let (status, detail) = judge(&check.expect, check.negate, &observed);
        let line = Line {
            case: expectations.case.clone(),
            check: check.name.clone(),
            status,
            detail,
        };
        if print_line(&mut out, &line).is_err() {
            return ExitCode::from(3);
        }
    }
    ExitCode::SUCCESS
}

fn read_expectations(path: &str) -> Result<Expectations, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read expectations file {path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("bad expectations file {path}: {e}"))
}

fn print_line(out: &mut impl Write, line: &Line) -> std::io::Result<()> {
    let text = serde_json::to_string(line).map_err(std::io::Error::other)?;
    writeln!(out, "{text}")?;
    out.flush()
}
