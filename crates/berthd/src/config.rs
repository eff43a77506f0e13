//! `/etc/berth/berthd.toml`: where berthd keeps things and what it runs.
//!
//! Every key is optional; an unknown key is an error (a typo must not be ignored).
//!
//! ```toml
//! socket = "/run/berth/berthd.sock"
//! state_dir = "/var/lib/berth/cri"     # pod and container records (persistent)
//! run_dir = "/run/berth/cri"           # shims, pinned namespaces, exit records
//! root = "/var/lib/berth"              # images and snapshots, shared with berthctl
//! registries_conf = "/etc/berth/registries.toml"
//! log_format = "text"                  # or "json"
//! cgroup_driver = "cgroupfs"
//!
//! [runtimes.runc]                      # RuntimeClass handlers besides the built-in "berth"
//! path = "/usr/sbin/runc"
//! [runtimes.runsc]
//! path = "/usr/bin/runsc"
//! options = ["--network=host"]         # global options before each subcommand
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The name of the built-in runtime handler (libberth in the shim, no exec).
pub const DEFAULT_HANDLER: &str = "berth";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

/// An OCI runtime binary offered as a RuntimeClass handler.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeHandler {
    pub path: PathBuf,
    /// Its `--root`; default `<run_dir>/runtimes/<name>`.
    pub root: Option<PathBuf>,
    /// Global options given before every subcommand (runsc's `--network=host`,
    /// `--platform=ptrace`; runc's `--systemd-cgroup`).
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub root: PathBuf,
    pub registries_conf: PathBuf,
    /// overlay or copy; detected when absent.
    pub storage_driver: Option<String>,
    /// The berth-shim binary; default: beside berthd, else on PATH.
    pub shim: Option<PathBuf>,
    pub log_format: LogFormat,
    /// A tracing filter, e.g. "info" or "berthd=debug".
    pub log_level: String,
    pub cgroup_driver: CgroupDriver,
    /// Where the exec/attach/port-forward server listens.
    pub stream_address: String,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub runtimes: BTreeMap<String, RuntimeHandler>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            socket: "/run/berth/berthd.sock".into(),
            state_dir: "/var/lib/berth/cri".into(),
            run_dir: "/run/berth/cri".into(),
            root: "/var/lib/berth".into(),
            registries_conf: "/etc/berth/registries.toml".into(),
            storage_driver: None,
            shim: None,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            cgroup_driver: CgroupDriver::Cgroupfs,
            stream_address: "127.0.0.1:0".into(),
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            runtimes: BTreeMap::new(),
        }
    }
}

/// Why the config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl Config {
    /// Reads `path`; a missing file at the default path gives the defaults.
    pub fn load(path: &Path, must_exist: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                return Ok(Config::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Config::parse(&text).map_err(|reason| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), String> {
        for (key, p) in [
            ("socket", &self.socket),
            ("state_dir", &self.state_dir),
            ("run_dir", &self.run_dir),
            ("root", &self.root),
        ] {
            if !p.is_absolute() {
                return Err(format!("{key} {}: must be an absolute path", p.display()));
            }
        }
        // Each pod's shim serves <run_dir>/pods/<64-hex id>/shim.sock, and a unix socket's
        // path must fit in sun_path (107 bytes and the NUL).
        let shim_socket = self
            .run_dir
            .join("pods")
            .join("0".repeat(64))
            .join("shim.sock");
        if shim_socket.as_os_str().len() > 107 {
            return Err(format!(
                "run_dir {}: too long; the pods' shim sockets ({}) must fit in 107 bytes",
                self.run_dir.display(),
                shim_socket.display()
            ));
        }
        if self.cgroup_driver == CgroupDriver::Systemd {
            return Err("cgroup_driver \"systemd\": not supported yet; use \"cgroupfs\"".into());
        }
        for (name, h) in &self.runtimes {
            if name == DEFAULT_HANDLER {
                return Err(format!(
                    "runtimes.{name}: the name is the built-in handler's; pick another"
                ));
            }
            if !h.path.is_absolute() {
                return Err(format!(
                    "runtimes.{name}.path {}: must be an absolute path",
                    h.path.display()
                ));
            }
            if let Some(o) = h.options.iter().find(|o| !o.starts_with('-')) {
                return Err(format!(
                    "runtimes.{name}.options: {o:?} is not an option (they start with '-')"
                ));
            }
        }
        Ok(())
    }

    /// The shim binary: configured, beside this executable, or on PATH.
    pub fn shim_binary(&self) -> PathBuf {
        if let Some(p) = &self.shim {
            return p.clone();
        }
        if let Some(beside) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("berth-shim")))
            .filter(|p| p.is_file())
        {
            return beside;
        }
        PathBuf::from("berth-shim")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.socket, Path::new("/run/berth/berthd.sock"));
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(c.runtimes.is_empty());
    }

    #[test]
    fn a_run_dir_too_long_for_shim_sockets_is_refused() {
        let long = format!("run_dir = \"/{}\"", "r".repeat(40));
        let e = Config::parse(&long).unwrap_err();
        assert!(e.contains("too long") && e.contains("107"), "{e}");
        assert!(Config::parse("run_dir = \"/run/berth/cri\"").is_ok());
    }

    #[test]
    fn runtimes_and_log_format_are_read() {
        let c =
            Config::parse("log_format = \"json\"\n[runtimes.runc]\npath = \"/usr/sbin/runc\"\n")
                .unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.runtimes["runc"].path, Path::new("/usr/sbin/runc"));
    }

    #[test]
    fn mistakes_are_named() {
        let e = Config::parse("sockett = \"/x\"").unwrap_err();
        assert!(e.contains("sockett"), "{e}");
        let e = Config::parse("state_dir = \"relative\"").unwrap_err();
        assert!(e.contains("state_dir") && e.contains("absolute"), "{e}");
        let e = Config::parse("[runtimes.berth]\npath = \"/bin/true\"").unwrap_err();
        assert!(e.contains("built-in"), "{e}");
        let e = Config::parse("[runtimes.x]\npath = \"/bin/true\"\nflavour = 1").unwrap_err();
        assert!(e.contains("flavour"), "{e}");
    }
}
