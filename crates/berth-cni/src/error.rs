//! The errors of berth-cni. Each names what a user needs to find the fault: the file, the
//! network, the plugin and the command; the cause is the `source` (printed in the chain),
//! except a plugin's own CNI error, which is the message itself.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// A network configuration that cannot be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("no CNI network configuration (*.conflist, *.conf, *.json) in {}", dir.display())]
    NoConfig { dir: PathBuf },
    #[error("read the CNI configuration directory {}", dir.display())]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read the CNI configuration {}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("CNI configuration {} is larger than {limit} bytes", file.display())]
    TooLarge { file: PathBuf, limit: u64 },
    #[error("CNI configuration {origin} is not valid JSON")]
    Json {
        origin: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("CNI configuration {origin}: {reason}")]
    Invalid { origin: String, reason: String },
}

/// The CNI operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

impl Command {
    /// The value of `CNI_COMMAND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error a plugin printed on stdout as the spec defines it:
/// `{"cniVersion": .., "code": .., "msg": .., "details": ..}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PluginError {
    /// 1-99 are the spec's well-known codes (7: invalid network config, 11: try again
    /// later, ...), 100 and up the plugin's own.
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.msg.is_empty() {
            "(no message)"
        } else {
            &self.msg
        })?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        write!(f, " (CNI error code {})", self.code)
    }
}

/// Where a plugin run happened: the network, the plugin and the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub network: String,
    pub plugin: String,
    pub command: Command,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "network {}: {} of plugin {}",
            self.network, self.command, self.plugin
        )
    }
}

/// A failed CNI operation.
#[derive(Debug, Error)]
pub enum CniError {
    /// No network configuration is loaded (the CRI's NetworkReady is false).
    #[error("no CNI network is ready: {reason}")]
    NotReady { reason: String },
    /// The request itself is wrong (an id, an interface name, CNI_ARGS, the namespace).
    #[error("container {container_id}: {reason}")]
    InvalidRequest {
        container_id: String,
        reason: String,
    },
    #[error("network {network}: plugin {plugin} is not an executable file in {search_path}")]
    PluginNotFound {
        network: String,
        plugin: String,
        search_path: String,
    },
    #[error("{site}: could not start {}", path.display())]
    Spawn {
        site: Site,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{site}: talking to the plugin failed")]
    Io {
        site: Site,
        #[source]
        source: io::Error,
    },
    #[error("{site}: no answer within {timeout:?}; the plugin was killed")]
    Timeout { site: Site, timeout: Duration },
    #[error("{site}: the plugin printed more than {limit} bytes; it was killed")]
    OutputTooLarge { site: Site, limit: usize },
    /// The plugin failed and said why.
    #[error("{site} failed: {error}")]
    Failed { site: Site, error: PluginError },
    /// The plugin failed without a CNI error on stdout.
    #[error("{site} failed: {status}, without a CNI error; it said: {output}")]
    Exited {
        site: Site,
        status: String,
        output: String,
    },
    #[error("{site}: the plugin printed a malformed result: {reason}")]
    BadResult { site: Site, reason: String },
    /// A plugin does not speak the network's version (VERSION said so).
    #[error("network {network}: plugin {plugin} does not support cniVersion {version} (it supports {})", supported.join(", "))]
    VersionUnsupported {
        network: String,
        plugin: String,
        version: String,
        supported: Vec<String>,
    },
    #[error("network {network}: CHECK needs cniVersion 0.4.0 or later, the network is {version}")]
    CheckUnsupported { network: String, version: String },
    #[error("network {network}: container {container_id} has no interface {ifname} attached (no cached ADD)")]
    NotAttached {
        network: String,
        container_id: String,
        ifname: String,
    },
    #[error("network {network}: container {container_id} interface {ifname} is already attached (cached in {}); DEL it first", cache.display())]
    AlreadyAttached {
        network: String,
        container_id: String,
        ifname: String,
        cache: PathBuf,
    },
    #[error("network {network}: the result cache of container {container_id}")]
    Cache {
        network: String,
        container_id: String,
        #[source]
        source: CacheError,
    },
    /// ADD failed, and so did the DEL that was to undo it: something may be left behind,
    /// and the cache entry is kept for a later teardown.
    #[error(
        "network {network}: ADD failed, and undoing it failed too: {}",
        join(cleanup)
    )]
    AddCleanupFailed {
        network: String,
        #[source]
        add: Box<CniError>,
        cleanup: Vec<CniError>,
    },
    /// DEL failed for one or more plugins (every plugin was still run).
    #[error("network {network}: DEL failed: {}", join(errors))]
    Del {
        network: String,
        errors: Vec<CniError>,
    },
}

fn join(errors: &[CniError]) -> String {
    let mut out = String::new();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&full_message(e));
    }
    out
}

/// An error with its chain of sources, `: `-separated.
pub fn full_message(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A result cache file that cannot be read or written.
#[derive(Debug, Error)]
pub enum CacheError {
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cache file {} is larger than {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("cache file {} is malformed", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cache file {} holds an invalid network configuration", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
}

/// A network namespace that cannot be made or removed.
#[derive(Debug, Error)]
pub enum NetnsError {
    #[error("network namespace name {name:?} is not a plain file name")]
    BadName { name: String },
    #[error("network namespace {} already exists", path.display())]
    Exists { path: PathBuf },
    #[error("network namespace {}: {op}", path.display())]
    Sys {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("network namespace {}: {op}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("network namespace {}: the thread that made it panicked", path.display())]
    ThreadPanicked { path: PathBuf },
    /// Making the namespace failed, and removing what was made failed too.
    #[error("network namespace {}: making it failed, and so did removing it: {}", path.display(), full_message(cleanup.as_ref()))]
    CleanupFailed {
        path: PathBuf,
        #[source]
        source: Box<NetnsError>,
        cleanup: Box<NetnsError>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        Site {
            network: "pods".into(),
            plugin: "bridge".into(),
            command: Command::Add,
        }
    }

    #[test]
    fn a_plugin_error_names_the_network_the_plugin_and_its_message() {
        let e = CniError::Failed {
            site: site(),
            error: serde_json::from_str(
                r#"{"cniVersion":"1.0.0","code":7,"msg":"bad config","details":"no bridge"}"#,
            )
            .unwrap(),
        };
        assert_eq!(
            e.to_string(),
            "network pods: ADD of plugin bridge failed: bad config: no bridge (CNI error code 7)"
        );
    }

    #[test]
    fn del_errors_list_every_plugin_with_its_cause() {
        let e = CniError::Del {
            network: "pods".into(),
            errors: vec![
                CniError::Io {
                    site: Site {
                        command: Command::Del,
                        ..site()
                    },
                    source: io::Error::from_raw_os_error(libc::EPIPE),
                },
                CniError::Timeout {
                    site: Site {
                        plugin: "portmap".into(),
                        command: Command::Del,
                        network: "pods".into(),
                    },
                    timeout: Duration::from_secs(3),
                },
            ],
        };
        let s = e.to_string();
        assert!(s.starts_with("network pods: DEL failed: network pods: DEL of plugin bridge: talking to the plugin failed: Broken pipe"), "{s}");
        assert!(
            s.contains("; network pods: DEL of plugin portmap: no answer within 3s"),
            "{s}"
        );
    }
}
