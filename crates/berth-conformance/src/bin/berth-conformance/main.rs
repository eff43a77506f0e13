//! berth-conformance: runs the conformance cases against an OCI runtime.
//!
//! ```text
//! berth-conformance --runtime PATH [--filter SUBSTR] [--list] [--json] [--negative]
//! ```
//!
//! Exit status: 0 when every case passed or skipped (with `--negative`: when every case that
//! ran failed), 1 otherwise, 2 when the run could not be set up.

mod bundle;
mod cases;
mod cli;
mod host;
mod report;
mod runtime;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::bundle::{is_static_elf, Template};
use crate::cases::Env;
use crate::cli::Cli;
use crate::host::Host;
use crate::runtime::Runtime;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let all = cases::all();
    let selected: Vec<(usize, &cases::Case)> = all
        .iter()
        .enumerate()
        .filter(|(_, c)| cli.filter.as_deref().is_none_or(|f| c.name.contains(f)))
        .collect();
    if cli.list {
        for (_, c) in &selected {
            println!("{:<22} {}", c.name, c.about);
        }
        return ExitCode::SUCCESS;
    }
    match run(&cli, &selected) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("berth-conformance: {e}");
            ExitCode::from(2)
        }
    }
}

/// Sets up, runs the selected cases and reports; `Ok(false)` when a case failed.
fn run(cli: &Cli, selected: &[(usize, &cases::Case)]) -> Result<bool, String> {
    let runtime_path = cli.runtime.clone().ok_or("--runtime PATH is required")?;
    let runtime_path = std::fs::canonicalize(&runtime_path)
        .map_err(|e| format!("runtime {}: {e}", runtime_path.display()))?;
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("must run as root: the runtimes create namespaces, mounts and cgroups".into());
    }
    if selected.is_empty() {
        return Err(format!(
            "no case matches --filter {:?} (see --list)",
            cli.filter.as_deref().unwrap_or("")
        ));
    }
    let checker = find_checker(cli.checker.as_deref())?;
    runtime::become_subreaper()?;
    let work = tempfile::Builder::new()
        .prefix("berth-conformance-")
        .tempdir()
        .map_err(|e| format!("cannot create a work directory: {e}"))?;
    let work_path = std::fs::canonicalize(work.path())
        .map_err(|e| format!("work directory {}: {e}", work.path().display()))?;
    // Containers in a user namespace, and hooks, must reach bundles below it.
    bundle::set_mode(&work_path, 0o755)?;
    for d in ["state", "scratch"] {
        std::fs::create_dir(work_path.join(d))
            .map_err(|e| format!("cannot create {}: {e}", work_path.join(d).display()))?;
    }
    let rt = Runtime::new(
        runtime_path.clone(),
        work_path.join("state"),
        work_path.join("scratch"),
        Duration::from_secs(cli.timeout),
    );
    let host = Host::probe()?;
    let template = Template::build(&work_path.join("template"), &cli.busybox, &checker)?;
    let env = Env {
        runtime: &rt,
        host: &host,
        template: &template,
        work: work_path.clone(),
        negative: cli.negative,
        keep: cli.keep,
    };
    let header = format!(
        "berth-conformance: {} ({}){}",
        runtime_path.display(),
        rt.version(),
        if cli.negative {
            ", negative controls: every check negated, every case must fail"
        } else {
            ""
        }
    );
    // Progress on a terminal only: the table on stdout says it all again.
    let progress = !cli.json && std::io::stderr().is_terminal();
    if progress {
        eprintln!("{header}");
    }
    let start = Instant::now();
    let mut results = Vec::new();
    for (index, case) in selected {
        let r = cases::run(case, *index, &env);
        if progress {
            eprintln!("  {:<22} {}", r.name, r.status(cli.negative).as_str());
        }
        results.push(r);
    }
    let summary = report::summary_line(
        &rt.name(),
        &results,
        cli.negative,
        start.elapsed().as_secs_f64(),
    );
    if cli.json {
        report::print_json(&rt.name(), &results, cli.negative, &summary);
    } else {
        report::print_table(&header, &results, cli.negative, &summary);
    }
    if cli.keep {
        let kept = work.keep();
        eprintln!("berth-conformance: kept {}", kept.display());
    }
    Ok(report::Tally::of(&results, cli.negative).ok(cli.negative))
}

/// The static checker: `--checker`/`BERTH_CHECK`, else next to this binary, else the
/// release build for this host's target in the same target directory.
fn find_checker(given: Option<&Path>) -> Result<PathBuf, String> {
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let build = format!(
        "RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p berth-conformance \
         --bin berth-check --target {triple}"
    );
    if let Some(path) = given {
        return if is_static_elf(path)? {
            Ok(path.to_path_buf())
        } else {
            Err(format!(
                "checker {} is dynamically linked and cannot run in a busybox rootfs; build it \
                 with: {build}",
                path.display()
            ))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.join("berth-check"));
        // target/debug/berth-conformance -> target/<triple>/release/berth-check
        if let Some(target) = dir.parent() {
            candidates.push(target.join(&triple).join("release/berth-check"));
            // target/<triple>/debug/berth-conformance -> target/<triple>/release/berth-check
            candidates.push(target.join("release/berth-check"));
        }
    }
    for c in &candidates {
        if c.is_file() && is_static_elf(c).unwrap_or(false) {
            return Ok(c.clone());
        }
    }
    Err(format!(
        "no static berth-check found (looked at {}); build it with: {build}, or pass --checker",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
