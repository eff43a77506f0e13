//! Log lines as runc writes them: `{"level":"error","msg":"...","time":"..."}` with
//! --log-format json (containerd and podman parse these), logfmt-like text otherwise.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use berth_cli::LogFormat;

pub struct Logger {
    file: Option<File>,
    format: LogFormat,
    debug: bool,
}

impl Logger {
    pub fn new(path: Option<&Path>, format: LogFormat, debug: bool) -> Logger {
        let file = path.and_then(|p| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| eprintln!("berth: cannot open log file {}: {e}", p.display()))
                .ok()
        });
        Logger {
            file,
            format,
            debug,
        }
    }

    fn line(&self, level: &str, msg: &str) -> String {
        let time = libberth::state::now_rfc3339();
        match self.format {
            LogFormat::Json => {
                let v = serde_json::json!({"level": level, "msg": msg, "time": time});
                format!("{v}\n")
            }
            LogFormat::Text => text_line(&time, level, msg),
        }
    }

    fn write(&self, level: &str, msg: &str) {
        if let Some(mut f) = self.file.as_ref() {
            let _ = f.write_all(self.line(level, msg).as_bytes());
        }
    }

    pub fn debug(&self, msg: &str) {
        if self.debug {
            self.write("debug", msg);
            if self.file.is_none() {
                eprint!("{}", self.line("debug", msg));
            }
        }
    }

    pub fn warn(&self, msg: &str) {
        self.write("warning", msg);
    }

    /// Errors go to the log file and always to stderr, as runc does: the bare message
    /// when there is a log file, runc's logfmt line otherwise (engines and conformance
    /// suites read stderr and look for "error"), and a plain line on a terminal.
    pub fn error(&self, msg: &str) {
        self.write("error", msg);
        if self.file.is_some() {
            eprintln!("{msg}");
        } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!("berth: error: {msg}");
        } else {
            eprint!(
                "{}",
                text_line(&libberth::state::now_rfc3339(), "error", msg)
            );
        }
    }
}

/// runc's (logrus's) text line: `time="..." level=error msg="..."`.
fn text_line(time: &str, level: &str, msg: &str) -> String {
    format!("time=\"{time}\" level={level} msg={msg:?}\n")
}
