//! The registries config: where names are searched, mirrors, insecure registries and CA
//! certificates. TOML, default path `/etc/berth/registries.toml`; a missing file means the
//! defaults. A complete example:
//!
//! ```toml
//! # Registries a short name (`alpine`, `me/app`) is looked up in, in order.
//! # Default: ["docker.io"].
//! unqualified-search-registries = ["docker.io", "quay.io"]
//!
//! # CA certificates per registry: <ca-dir>/<host[:port]>/*.crt are trusted for that
//! # registry, besides the system's roots (containers' certs.d layout).
//! # Default: "/etc/berth/certs.d".
//! ca-dir = "/etc/berth/certs.d"
//!
//! [[registry]]
//! # Names starting with this (host[:port], or host[:port]/namespace) use this entry; the
//! # longest matching prefix wins.
//! prefix = "docker.io"
//! # Fetch from here instead (the rest of the name is kept).   Optional.
//! location = "registry-1.docker.io"
//! # true: plain http is allowed and TLS certificates are not verified.   Default false.
//! insecure = false
//! # true: pulling from it is refused.   Default false.
//! blocked = false
//!
//! # Mirrors, tried in order before the registry itself.
//! [[registry.mirror]]
//! location = "mirror.internal:5000"
//! insecure = true
//!
//! [[registry]]
//! prefix = "registry.internal:5000"
//! insecure = true
//! ```
//!
//! Registries on loopback addresses (`localhost`, `127.0.0.0/8`, `[::1]`) that have no
//! `[[registry]]` entry are insecure, as docker treats them: a registry on this machine is
//! reached over plain http or an unverified certificate. An entry decides for itself.
//! Unknown keys are errors.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::reference::ImageName;

/// Why the config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read or parsed, or holds a bad value.
    #[error("{file}: {cause}")]
    Bad { file: PathBuf, cause: String },
    /// A search registry that makes no valid name with the short name given.
    #[error("{0}")]
    Name(#[from] super::reference::NameError),
    /// The name falls under a `blocked = true` entry.
    #[error("{name}: the registry {registry} is blocked by {file}")]
    Blocked {
        name: String,
        registry: String,
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    #[serde(default)]
    unqualified_search_registries: Option<Vec<String>>,
    #[serde(default)]
    ca_dir: Option<PathBuf>,
    #[serde(default)]
    registry: Vec<RegistryEntry>,
}

/// One `[[registry]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    /// `host[:port]` or `host[:port]/namespace`: the names this entry is for.
    pub prefix: String,
    /// Where to fetch those names instead (the prefix replaced by this).
    #[serde(default)]
    pub location: Option<String>,
    /// Plain http is allowed and TLS certificates are not verified.
    #[serde(default)]
    pub insecure: bool,
    /// Pulls from it are refused.
    #[serde(default)]
    pub blocked: bool,
    /// Tried in order before the registry.
    #[serde(default)]
    pub mirror: Vec<Mirror>,
}

/// One `[[registry.mirror]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// `host[:port]` or `host[:port]/namespace`: replaces the entry's prefix.
    pub location: String,
    /// As [`RegistryEntry::insecure`], for this mirror.
    #[serde(default)]
    pub insecure: bool,
}

/// Where to fetch a repository from: a host and the repository path there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// host[:port]
    pub host: String,
    /// The repository path on that host.
    pub repository: String,
    /// Plain http and unverified certificates are allowed.
    pub insecure: bool,
    /// True for a mirror (its failures fall through to the next endpoint).
    pub mirror: bool,
}

/// The loaded config.
#[derive(Debug, Clone)]
pub struct RegistriesConfig {
    /// The file it was read from (named in errors), whether or not it exists.
    pub file: PathBuf,
    /// `unqualified-search-registries`.
    pub search: Vec<String>,
    /// `ca-dir`: `<ca-dir>/<host[:port]>/*.crt`.
    pub ca_dir: PathBuf,
    /// The `[[registry]]` entries.
    pub registries: Vec<RegistryEntry>,
}

/// The defaults: search docker.io, CA certificates in `/etc/berth/certs.d`, no entries.
impl Default for RegistriesConfig {
    fn default() -> Self {
        RegistriesConfig {
            file: PathBuf::from("/etc/berth/registries.toml"),
            search: vec!["docker.io".into()],
            ca_dir: PathBuf::from("/etc/berth/certs.d"),
            registries: Vec::new(),
        }
    }
}

/// True for registries on this machine: `localhost`, an IPv4 address in 127.0.0.0/8 or
/// `[::1]`, each with or without a port. The host is parsed as an address, never matched by
/// prefix: `127.evil.example` is a name anyone can register, not loopback.
fn loopback(host: &str) -> bool {
    let port_ok = |p: &str| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    };
    if let Some(rest) = host.strip_prefix('[') {
        let Some((addr, tail)) = rest.split_once(']') else {
            return false;
        };
        if !(tail.is_empty() || tail.strip_prefix(':').is_some_and(port_ok)) {
            return false;
        }
        return addr.parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback());
    }
    let h = match host.split_once(':') {
        Some((h, p)) if port_ok(p) => h,
        Some(_) => return false,
        None => host,
    };
    h.eq_ignore_ascii_case("localhost") || h.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

impl RegistriesConfig {
    /// Reads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<RegistriesConfig, ConfigError> {
        let bad = |cause: String| ConfigError::Bad {
            file: path.to_path_buf(),
            cause,
        };
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RegistriesConfig {
                    file: path.to_path_buf(),
                    ..Default::default()
                })
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        let f: File = toml::from_str(&text).map_err(|e| bad(e.to_string().trim().to_string()))?;
        for r in &f.registry {
            if r.prefix.is_empty() || r.prefix.contains("://") {
                return Err(bad(format!(
                    "registry prefix {:?}: use host[:port][/namespace]",
                    r.prefix
                )));
            }
        }
        let d = RegistriesConfig::default();
        Ok(RegistriesConfig {
            file: path.to_path_buf(),
            search: f.unqualified_search_registries.unwrap_or(d.search),
            ca_dir: f.ca_dir.unwrap_or(d.ca_dir),
            registries: f.registry,
        })
    }

    /// The full names a user's name may mean, in the order to try: a fully qualified name
    /// is itself; a short one is tried in each search registry.
    pub fn candidates(&self, name: &str) -> Result<Vec<ImageName>, ConfigError> {
        if ImageName::is_fully_qualified(name) {
            return Ok(vec![ImageName::parse(name)?]);
        }
        let mut out = Vec::new();
        for r in &self.search {
            out.push(ImageName::parse(&format!("{r}/{name}"))?);
        }
        if out.is_empty() {
            // No search registry: docker.io, as documented.
            out.push(ImageName::parse(name)?);
        }
        Ok(out)
    }

    /// The entry whose prefix matches `repo_path` (registry/repository) best.
    pub fn entry_for(&self, repo_path: &str) -> Option<&RegistryEntry> {
        self.registries
            .iter()
            .filter(|e| {
                repo_path == e.prefix
                    || repo_path
                        .strip_prefix(e.prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|e| e.prefix.len())
    }

    /// Where to fetch `name` from: its mirrors in order, then the registry (or its
    /// location). A blocked registry is an error.
    pub fn endpoints(&self, name: &ImageName) -> Result<Vec<Endpoint>, ConfigError> {
        let repo_path = name.repo_path();
        let Some(e) = self.entry_for(&repo_path) else {
            return Ok(vec![Endpoint {
                host: name.registry.clone(),
                repository: name.repository.clone(),
                insecure: loopback(&name.registry),
                mirror: false,
            }]);
        };
        if e.blocked {
            return Err(ConfigError::Blocked {
                name: name.to_string(),
                registry: e.prefix.clone(),
                file: self.file.clone(),
            });
        }
        let rest = &repo_path[e.prefix.len()..];
        let at = |location: &str, insecure: bool, mirror: bool| {
            let full = format!("{location}{rest}");
            let (host, repo) = full.split_once('/').unwrap_or((&full, ""));
            Endpoint {
                host: host.to_string(),
                repository: repo.to_string(),
                insecure,
                mirror,
            }
        };
        let mut out: Vec<Endpoint> = e
            .mirror
            .iter()
            .map(|m| at(&m.location, m.insecure, true))
            .collect();
        out.push(at(
            e.location.as_deref().unwrap_or(&e.prefix),
            e.insecure,
            false,
        ));
        Ok(out)
    }

    /// PEM certificates trusted for `host` (from `<ca-dir>/<host>/*.crt`).
    pub fn ca_certs(&self, host: &str) -> Vec<Vec<u8>> {
        let dir = self.ca_dir.join(host);
        let mut out = Vec::new();
        if let Ok(rd) = fs::read_dir(&dir) {
            let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            files.sort();
            for f in files {
                if f.extension().is_some_and(|x| x == "crt") {
                    if let Ok(data) = fs::read(&f) {
                        out.push(data);
                    }
                }
            }
        }
        out
    }

    /// Whether a bare host (login) may be reached insecurely.
    pub fn insecure_host(&self, host: &str) -> bool {
        match self.entry_for(host) {
            Some(e) => e.insecure,
            None => loopback(host),
        }
    }
}

#[cfg(test)]
mod tests;
