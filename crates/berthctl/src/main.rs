//! berthctl: Berth's human CLI. It links berth-image and libberth and never shells out to
//! `berth`. Exit status: the container's for `run` and `exec`, 125 when berthctl itself
//! fails (as podman does).

mod cli;
mod containers;
mod images_cmd;
mod pull;
mod run;
mod vm;
mod vmexec;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, ImageCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The monitor of a detached container is started from this binary's path, which a
    // protected (re-executed) copy no longer knows: remember it across the re-exec.
    if std::env::var_os(run::EXE_ENV).is_none() {
        if let Ok(exe) = std::env::current_exe() {
            std::env::set_var(run::EXE_ENV, exe);
        }
    }
    // Commands whose processes enter a container run from a protected copy of berthctl
    // (CVE-2019-5736): a container must not be able to rewrite this binary.
    if matches!(
        cli.command,
        Command::Run(_) | Command::Exec(_) | Command::Monitor { .. }
    ) {
        if let Err(e) = libberth::sealed::ensure() {
            eprintln!("berthctl: cannot protect the berthctl binary (CVE-2019-5736): {e}");
            return ExitCode::from(125);
        }
    }
    match dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berthctl: {}", one_line(&e));
            ExitCode::from(125)
        }
    }
}

/// An error and its causes on one line, each cause once: library errors often carry their
/// source's text in their own message as well as in the chain.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// The stores under `--root`, shared with berthd.
fn open_store(cli: &Cli) -> anyhow::Result<berth_engine::Store> {
    use anyhow::Context;
    let driver = match cli.storage_driver.as_deref() {
        None => None,
        Some(s) => Some(
            berth_image::snapshot::Driver::parse(s)
                .with_context(|| format!("--storage-driver {s:?}: use overlay or copy"))?,
        ),
    };
    let max_layer_size = run::parse_size("--max-layer-size", &cli.max_layer_size)? as u64;
    Ok(berth_engine::Store::open(&berth_engine::StoreOptions {
        root: cli.root.clone(),
        runroot: cli.runroot.clone(),
        driver,
        max_layer_size,
        registries_conf: cli.registries_conf.clone(),
    })?)
}

fn dispatch(cli: &Cli) -> anyhow::Result<ExitCode> {
    let s = open_store(cli)?;
    match &cli.command {
        Command::Pull(p) => images_cmd::pull(&s, p),
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => images_cmd::images(&s, a),
        Command::Inspect(a) => images_cmd::inspect(&s, a),
        Command::Tag { source, target } => images_cmd::tag(&s, source, target),
        Command::Rmi(a) => images_cmd::rmi(&s, a),
        Command::Image(ImageCommand::Prune { all }) => images_cmd::prune(&s, *all),
        Command::Import(a) => images_cmd::import(&s, a),
        Command::Load(a) => images_cmd::load(&s, a),
        Command::Save(a) => images_cmd::save(&s, a),
        Command::Login(a) => images_cmd::login(&s, a),
        Command::Logout { registry } => images_cmd::logout(&s, registry),
        Command::Run(a) => run::run(&s, a),
        Command::Ps(a) => containers::ps(&s, a),
        Command::Stop(a) => containers::stop(&s, a),
        Command::Kill(a) => containers::kill(&s, a),
        Command::Rm(a) => containers::rm(&s, a),
        Command::Exec(a) => containers::exec(&s, a),
        Command::Logs(a) => containers::logs(&s, a),
        Command::Monitor { id } => run::monitor(&s, id),
        Command::Info { format } => vm::info(&s, format),
    }
}
