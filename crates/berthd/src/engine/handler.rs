//! RuntimeClass handlers served by an OCI runtime binary (runc, crun, runsc): the shim
//! makes and runs their containers; berthd itself calls the binary for what it does
//! outside the shim (resource updates and statistics).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::Engine;
use crate::config::DEFAULT_HANDLER;
use crate::error::{Error, Result};

/// An OCI runtime binary with its state root.
#[derive(Debug, Clone)]
pub(crate) struct OciBinary {
    pub path: PathBuf,
    pub root: PathBuf,
    pub options: Vec<String>,
}

impl OciBinary {
    /// Runs `<binary> --root <root> args...` with `input` on its stdin; its stdout, or an
    /// error naming the container, the binary and what it said.
    pub fn run(&self, id: &str, args: &[&str], input: &[u8]) -> Result<Vec<u8>> {
        let fail = |why: String| {
            Error::Internal(format!(
                "container {id}: {} {}: {why}",
                self.path.display(),
                args.first().copied().unwrap_or("")
            ))
        };
        let mut child = Command::new(&self.path)
            .arg("--root")
            .arg(&self.root)
            .args(&self.options)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(e.to_string()))?;
        if let Some(mut w) = child.stdin.take() {
            // A runtime that does not read its stdin closes it: not an error of ours.
            let _ = w.write_all(input);
        }
        let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(fail(if said.is_empty() {
                out.status.to_string()
            } else {
                said
            }));
        }
        Ok(out.stdout)
    }

    /// One statistics sample of the container's cgroup (`events --stats`, whose `data` is
    /// runc's stats shape, the one libberth writes too).
    pub fn stats(&self, id: &str) -> Result<libberth::events::Stats> {
        let out = self.run(id, &["events", "--stats", id], b"")?;
        let v: serde_json::Value = serde_json::from_slice(&out)
            .map_err(|e| Error::Internal(format!("container {id}: events --stats: {e}")))?;
        serde_json::from_value(v["data"].clone())
            .map_err(|e| Error::Internal(format!("container {id}: events --stats: {e}")))
    }
}

impl Engine {
    /// libberth on berthd's runtime root: what the built-in handler's shims create with.
    pub(crate) fn builtin_runtime(&self) -> libberth::Runtime {
        libberth::Runtime {
            root: self.runtime_root.clone(),
            systemd_cgroup: false,
            rootless: false,
        }
    }

    /// The OCI runtime binary serving `handler`; None for the built-in handler.
    pub(crate) fn oci_binary(&self, handler: &str) -> Option<OciBinary> {
        if handler.is_empty() || handler == DEFAULT_HANDLER {
            return None;
        }
        let h = self.cfg.runtimes.get(handler)?;
        Some(OciBinary {
            path: h.path.clone(),
            root: h
                .root
                .clone()
                .unwrap_or_else(|| self.cfg.run_dir.join("runtimes").join(handler)),
            options: h.options.clone(),
        })
    }
}
