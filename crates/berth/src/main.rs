//! `berth`: a runc-compatible OCI runtime. Parses the command line and calls libberth.

mod checkpoint;
mod events;
mod exec;
mod log;
mod ps;
mod run;
mod update;

use std::io::Write;
use std::process::ExitCode;

use berth_cli::{Command, GlobalOpts, ListFormat};
use clap::Parser;
use libberth::{ConsoleTarget, CreateOptions, Runtime};

fn main() -> ExitCode {
    let opts = match GlobalOpts::try_parse() {
        Ok(o) => o,
        Err(e) => return usage_error(e),
    };
    // Before berth opens anything: its own descriptors must stay above the range the
    // container is to inherit.
    let preserve = match &opts.command {
        Some(Command::Create(c)) => c.opts.preserve_fds,
        Some(Command::Run(r)) => r.opts.preserve_fds,
        Some(Command::Exec(e)) => e.preserve_fds,
        _ => 0,
    };
    libberth::process::reserve_preserved_fds(preserve);
    let logger = log::Logger::new(opts.log.as_deref(), opts.log_format, opts.debug);
    if opts.version {
        print_version();
        return ExitCode::SUCCESS;
    }
    let Some(cmd) = opts.command else {
        use clap::CommandFactory;
        let _ = GlobalOpts::command().print_help();
        return ExitCode::from(1);
    };
    // Commands whose processes enter a container run from a sealed copy of berth.
    if matches!(
        cmd,
        Command::Create(_) | Command::Run(_) | Command::Exec(_) | Command::Restore(_)
    ) {
        if let Err(e) = libberth::sealed::ensure() {
            logger.error(&format!(
                "cannot protect the berth binary (CVE-2019-5736): {e}"
            ));
            return ExitCode::from(1);
        }
    }
    let rootless = match libberth::rootless::detect(opts.rootless.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            logger.error(&e);
            return ExitCode::from(1);
        }
    };
    // spec and features touch no state: they need no state directory (runc's neither).
    let stateless = matches!(cmd, Command::Spec(_) | Command::Features(_));
    let root = match opts
        .root
        .clone()
        .map(Ok)
        .unwrap_or_else(|| match stateless {
            true => Ok(std::path::PathBuf::new()),
            false => libberth::rootless::default_root(),
        }) {
        Ok(r) => r,
        Err(e) => {
            logger.error(&e);
            return ExitCode::from(1);
        }
    };
    let rt = Runtime {
        root,
        systemd_cgroup: opts.systemd_cgroup,
        rootless,
    };
    logger.debug(&format!("{cmd:?}"));
    // runc's exec fails with 255 and says so first; engines tell its failures apart by it.
    let exec = matches!(cmd, Command::Exec(_));
    match dispatch(&rt, cmd, opts.criu.as_deref(), &logger) {
        Ok(code) => code,
        Err((id, e)) => {
            let mut msg = match id {
                Some(id) => format!("container {id:?}: {}", e.chain()),
                None => e.chain(),
            };
            if exec {
                msg.insert_str(0, "exec failed: ");
            }
            logger.error(&msg);
            ExitCode::from(if exec { 255 } else { 1 })
        }
    }
}

/// A command line clap cannot take: help and version as clap prints them, anything else
/// as one line and exit status 1, as runc.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(if e.exit_code() == 0 { 0 } else { 1 });
    }
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid command line");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // "the following required arguments were not provided:" names them on the next line.
    let first = match first.strip_suffix(':') {
        Some(head) => format!("{head}: {}", lines.next().unwrap_or("")),
        None => first.to_string(),
    };
    let tip = lines.find_map(|l| l.strip_prefix("tip: "));
    match tip {
        Some(tip) => eprintln!("berth: error: {first} ({tip})"),
        None => eprintln!("berth: error: {first}"),
    }
    ExitCode::from(1)
}

fn print_version() {
    let (a, b, c) = libberth::libseccomp_version();
    println!("berth version {}", env!("CARGO_PKG_VERSION"));
    println!("spec: {}", libberth::spec::OCI_VERSION_MAX);
    println!("libseccomp: {a}.{b}.{c}");
}

type CmdResult = Result<ExitCode, (Option<String>, libberth::Error)>;

fn with_id<T>(id: &str, r: libberth::Result<T>) -> Result<T, (Option<String>, libberth::Error)> {
    r.map_err(|e| (Some(id.to_string()), e))
}

fn dispatch(
    rt: &Runtime,
    cmd: Command,
    criu: Option<&std::path::Path>,
    logger: &log::Logger,
) -> CmdResult {
    match cmd {
        Command::Create(c) => {
            let o = create_options(&c.container_id, &c.opts);
            with_id(&c.container_id, rt.create(&o))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Start(s) => {
            with_id(&s.container_id, rt.start(&s.container_id))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::State(s) => {
            let json = with_id(&s.container_id, rt.state(&s.container_id))?;
            println!("{json}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Kill(k) => {
            let sig = with_id(&k.container_id, libberth::signal::parse_signal(&k.signal))?;
            with_id(&k.container_id, rt.kill(&k.container_id, sig, k.all))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Delete(d) => {
            match rt.delete(&d.container_id, d.force) {
                // runc: deleting a missing container with --force succeeds.
                Err(libberth::Error::NotFound(_)) if d.force => Ok(ExitCode::SUCCESS),
                r => with_id(&d.container_id, r).map(|_| ExitCode::SUCCESS),
            }
        }
        Command::Run(r) => run::run(rt, &r, logger),
        Command::List(l) => {
            let list = rt.list().map_err(|e| (None, e))?;
            print_list(&list, l.format, l.quiet);
            Ok(ExitCode::SUCCESS)
        }
        Command::Spec(s) => {
            let path = s.bundle.join("config.json");
            if path.exists() {
                return Err((
                    None,
                    libberth::Error::Unsupported(format!(
                        "{} exists; remove it first",
                        path.display()
                    )),
                ));
            }
            let rootless = s.rootless.then(|| {
                (
                    nix::unistd::getuid().as_raw(),
                    nix::unistd::getgid().as_raw(),
                )
            });
            let v = libberth::default_spec::default_spec(rootless);
            let text = serde_json::to_string_pretty(&v).expect("json");
            std::fs::write(&path, text + "\n").map_err(|e| {
                (
                    None,
                    libberth::Error::Unsupported(format!("write {}: {e}", path.display())),
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec(e) => exec::exec(rt, &e),
        Command::Checkpoint(c) => checkpoint::checkpoint(rt, &c, criu),
        Command::Restore(r) => checkpoint::restore(rt, &r, criu, logger),
        Command::Update(u) => {
            let r = update::resources(&u).map_err(|e| (Some(u.container_id.clone()), e))?;
            with_id(&u.container_id, rt.update(&u.container_id, &r))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pause(p) => {
            with_id(&p.container_id, rt.pause(&p.container_id))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Resume(r) => {
            with_id(&r.container_id, rt.resume(&r.container_id))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ps(p) => {
            let pids = with_id(&p.container_id, rt.pids(&p.container_id))?;
            ps::print(&pids, p.format, &p.ps_args)
                .map_err(|e| (Some(p.container_id.clone()), e))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Events(ev) => events::events(rt, &ev, logger),
        Command::Features(_) => {
            let v = libberth::features::features();
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn create_options(id: &str, c: &berth_cli::CreateOpts) -> CreateOptions {
    CreateOptions {
        id: id.to_string(),
        bundle: c.bundle.clone(),
        console: c.console_socket.clone().map(ConsoleTarget::Socket),
        pid_file: c.pid_file.clone(),
        no_pivot: c.no_pivot,
        no_new_keyring: c.no_new_keyring,
        preserve_fds: c.preserve_fds,
        stdio: Default::default(),
    }
}

fn print_list(
    list: &[(libberth::state::Saved, libberth::Status)],
    format: ListFormat,
    quiet: bool,
) {
    let mut out = std::io::stdout().lock();
    if quiet {
        for (s, _) in list {
            let _ = writeln!(out, "{}", s.id);
        }
        return;
    }
    match format {
        ListFormat::Json => {
            if list.is_empty() {
                let _ = writeln!(out, "null");
                return;
            }
            let v: Vec<_> = list.iter().map(|(s, st)| s.report(*st)).collect();
            let _ = writeln!(out, "{}", serde_json::to_string(&v).expect("json"));
        }
        ListFormat::Table => {
            let rows: Vec<[String; 6]> = std::iter::once(
                ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from),
            )
            .chain(list.iter().map(|(s, st)| {
                let pid = if *st == libberth::Status::Stopped {
                    0
                } else {
                    s.pid
                };
                [
                    s.id.clone(),
                    pid.to_string(),
                    st.to_string(),
                    s.bundle.display().to_string(),
                    s.created.clone(),
                    s.owner.clone(),
                ]
            }))
            .collect();
            let mut widths = [0usize; 6];
            for r in &rows {
                for (i, c) in r.iter().enumerate() {
                    widths[i] = widths[i].max(c.len());
                }
            }
            for r in &rows {
                let mut line = String::new();
                for (i, c) in r.iter().enumerate() {
                    if i == 5 {
                        line.push_str(c);
                    } else {
                        line.push_str(&format!("{c:<w$}", w = (widths[i] + 3).max(12)));
                    }
                }
                let _ = writeln!(out, "{}", line.trim_end());
            }
        }
    }
}
