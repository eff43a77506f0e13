//! Platforms (`os/architecture[/variant]`) and picking one manifest out of an index.

use serde_json::Value;

/// An OCI platform, as `--platform` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/arm64`, `linux/arm64/v8`, `linux/amd64`.
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &&str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(format!("{s:?} is not os/architecture[/variant]")),
        }
    }

    /// This host: linux and its architecture as OCI names it.
    pub fn host() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: crate::builtin::host_architecture().into(),
            variant: None,
        }
    }

    /// True when an index entry's `platform` object is this platform. A variant is
    /// compared only when this platform names one.
    pub fn matches(&self, p: &Value) -> bool {
        p["os"].as_str() == Some(self.os.as_str())
            && p["architecture"].as_str() == Some(self.architecture.as_str())
            && self
                .variant
                .as_deref()
                .is_none_or(|v| p["variant"].as_str() == Some(v))
    }

    fn describe(p: &Value) -> String {
        let mut s = format!(
            "{}/{}",
            p["os"].as_str().unwrap_or("?"),
            p["architecture"].as_str().unwrap_or("?")
        );
        if let Some(v) = p["variant"].as_str() {
            s.push('/');
            s.push_str(v);
        }
        s
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Media types of image indexes (OCI and Docker's manifest list).
pub const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Media types of image manifests (OCI and Docker schema 2).
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// The descriptor in `index` (its `manifests` array) for `platform`; an error lists the
/// platforms there are. Entries without a platform (attestations) are skipped.
pub fn select<'a>(index: &'a Value, platform: &Platform) -> Result<&'a Value, String> {
    let list = index["manifests"]
        .as_array()
        .ok_or_else(|| "the index has no manifests".to_string())?;
    if let Some(d) = list.iter().find(|d| platform.matches(&d["platform"])) {
        return Ok(d);
    }
    let have: Vec<String> = list
        .iter()
        .filter(|d| d["platform"].is_object())
        .map(|d| Platform::describe(&d["platform"]))
        .collect();
    Err(format!(
        "no manifest for {platform}; the index has {}",
        if have.is_empty() {
            "none with a platform".to_string()
        } else {
            have.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_and_select() {
        assert_eq!(
            Platform::parse("linux/arm64/v8")
                .unwrap()
                .variant
                .as_deref(),
            Some("v8")
        );
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//x").is_err());
        let idx = json!({"manifests": [
            {"digest": "a", "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": "b", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"digest": "att", "annotations": {}}
        ]});
        assert_eq!(
            select(&idx, &Platform::parse("linux/amd64").unwrap()).unwrap()["digest"],
            "a"
        );
        assert_eq!(
            select(&idx, &Platform::parse("linux/arm64").unwrap()).unwrap()["digest"],
            "b"
        );
        assert_eq!(
            select(&idx, &Platform::parse("linux/arm64/v8").unwrap()).unwrap()["digest"],
            "b"
        );
        let e = select(&idx, &Platform::parse("linux/s390x").unwrap()).unwrap_err();
        assert!(
            e.contains("linux/s390x") && e.contains("linux/amd64, linux/arm64/v8"),
            "{e}"
        );
    }
}
