//! Image names as docker and podman read them.

use std::fmt;

use crate::digest::Digest;

/// A parsed image name: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    /// `docker.io`, `quay.io`, `127.0.0.1:5000`, `localhost`.
    pub registry: String,
    /// `library/busybox`, `org/app`.
    pub repository: String,
    /// The tag given, if any (see [`ImageName::tag_or_latest`]).
    pub tag: Option<String>,
    /// The manifest digest given after `@`, if any; a pull checks the manifest against it.
    pub digest: Option<Digest>,
}

/// Why a string is not an image name.
#[derive(Debug, thiserror::Error)]
#[error("{name:?} is not a valid image name: {cause}")]
pub struct NameError {
    /// The string as given.
    pub name: String,
    /// What is wrong with it.
    pub cause: String,
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+ separated by '.', '_', '__' or '-'+
    !c.is_empty()
        && c.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && c.bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn valid_tag(t: &str) -> bool {
    t.len() <= 128
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) if !host.contains(']') || host.ends_with(']') => (host, Some(port)),
        _ => (h, None),
    };
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

impl ImageName {
    /// True when `name`'s first component names a registry: it has a `.` or a `:`, or is
    /// `localhost`.
    pub fn is_fully_qualified(name: &str) -> bool {
        match name.split_once('/') {
            Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
            None => false,
        }
    }

    /// Parses a name. A name without a registry is a docker.io name (`alpine` →
    /// `docker.io/library/alpine`); use [`super::RegistriesConfig::candidates`] to resolve
    /// short names through the configured search registries instead.
    pub fn parse(s: &str) -> Result<ImageName, NameError> {
        let err = |cause: &str| NameError {
            name: s.to_string(),
            cause: cause.to_string(),
        };
        if s.is_empty() || s.len() > 4096 {
            return Err(err("empty or too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|e| err(&e.to_string()))?),
            ),
            None => (s, None),
        };
        let (path, tag) = match rest.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => {
                if !valid_tag(t) {
                    return Err(err("the tag must be [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
                }
                (p, Some(t.to_string()))
            }
            _ => (rest, None),
        };
        let (registry, repository) = if Self::is_fully_qualified(path) {
            let (r, p) = path.split_once('/').ok_or_else(|| err("no repository"))?;
            if !valid_host(r) {
                return Err(err("the registry is not host[:port]"));
            }
            (r.to_string(), p.to_string())
        } else {
            ("docker.io".to_string(), path.to_string())
        };
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            "docker.io".to_string()
        } else {
            registry
        };
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if !repository.split('/').all(valid_component) {
            return Err(err(
                "repository components are lowercase letters, digits and . _ -",
            ));
        }
        Ok(ImageName {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The tag, or `latest` when neither tag nor digest is given.
    pub fn tag_or_latest(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, Some(_)) => None,
            (None, None) => Some("latest"),
        }
    }

    /// `registry/repository`.
    pub fn repo_path(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for ImageName {
    /// The canonical full name: `registry/repository:tag` (`latest` when neither tag nor
    /// digest was given), `@digest` appended when given.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = self.tag_or_latest() {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
