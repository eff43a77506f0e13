//! Where a container's cgroup lives: `linux.cgroupsPath` resolution.
//!
//! Rules (the same as runc's cgroupfs driver, with the default chosen below):
//! - an absolute `cgroupsPath` is taken relative to each hierarchy's mount point
//!   (the root of the hierarchy as this process sees it);
//! - a relative `cgroupsPath` is taken relative to the invoking process's own cgroup in
//!   each hierarchy, as `/proc/self/cgroup` lists it;
//! - no `cgroupsPath` means the relative path `<container-id>`, so the container's
//!   cgroup is a child of the runtime's own cgroup;
//! - with `systemd: true`, `cgroupsPath` is `slice:prefix:name` and becomes the
//!   absolute path systemd would use: `a-b.slice` expands to `/a.slice/a-b.slice` and
//!   the unit is `prefix-name.scope`. No `cgroupsPath` means `system.slice:berth:<id>`.
//!
//! A path whose `..` components climb above its base, or that names the base itself,
//! is refused: the container must get a cgroup of its own, and `remove` must never
//! reach outside it.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use crate::error::{CgroupError, Result};

/// The slice a systemd cgroup goes in when `cgroupsPath` leaves it empty.
pub const DEFAULT_SYSTEMD_SLICE: &str = "system.slice";
/// The unit prefix used when `cgroupsPath` is absent under systemd.
pub const DEFAULT_SYSTEMD_PREFIX: &str = "berth";

/// Where the container's cgroup sits, before it is placed in each hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLocation {
    /// Relative to each hierarchy's mount point. Normalised, never empty, no leading `/`.
    Absolute(PathBuf),
    /// Relative to the invoking process's own cgroup. Normalised, never empty.
    Relative(PathBuf),
}

/// Checks that a container id can be one directory name.
pub fn check_container_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        Some("it is empty")
    } else if id == "." || id == ".." {
        Some("it is a relative directory name")
    } else if id.contains('/') {
        Some("it contains '/'")
    } else if id.contains('\0') {
        Some("it contains a NUL byte")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CgroupError::InvalidContainerId {
            id: id.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Resolves `..` and `.` lexically. Fails if the path climbs above its start or ends
/// at it.
fn normalize(original: &Path) -> Result<PathBuf> {
    let invalid = |reason: &str| CgroupError::InvalidCgroupsPath {
        path: original.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut parts: Vec<&OsStr> = Vec::new();
    for component in original.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Prefix(_) => return Err(invalid("path prefixes are not supported")),
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(invalid("'..' climbs above the cgroup it is relative to"));
                }
            }
            Component::Normal(name) => parts.push(name),
        }
    }
    if parts.is_empty() {
        let base = if original.is_absolute() {
            "the root of every hierarchy"
        } else {
            "the runtime's own cgroup"
        };
        return Err(invalid(&format!(
            "it names {base}; a container needs a cgroup of its own"
        )));
    }
    Ok(parts.iter().collect())
}

/// Expands a systemd slice name to its cgroup path: `a-b-c.slice` becomes
/// `/a.slice/a-b.slice/a-b-c.slice`, `-.slice` (the root slice) becomes `/`.
pub fn expand_slice(slice: &str) -> Result<PathBuf> {
    let invalid = |reason: &str| CgroupError::InvalidCgroupsPath {
        path: PathBuf::from(slice),
        reason: reason.to_string(),
    };
    let stem = slice
        .strip_suffix(".slice")
        .ok_or_else(|| invalid("a slice name must end in \".slice\""))?;
    if stem == "-" {
        return Ok(PathBuf::from("/"));
    }
    if stem.is_empty() || stem.contains('/') {
        return Err(invalid("not a valid slice name"));
    }
    if stem.starts_with('-') || stem.ends_with('-') || stem.contains("--") {
        return Err(invalid(
            "a slice name must not start or end with '-' or contain \"--\"",
        ));
    }
    let mut path = PathBuf::from("/");
    for (index, _) in stem.match_indices('-') {
        path.push(format!("{}.slice", &stem[..index]));
    }
    path.push(slice);
    Ok(path)
}

/// Converts `slice:prefix:name` to the cgroupfs path systemd would use.
pub fn systemd_path(spec: &str) -> Result<PathBuf> {
    let invalid = |reason: &str| CgroupError::InvalidCgroupsPath {
        path: PathBuf::from(spec),
        reason: reason.to_string(),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return Err(invalid(
            "with systemd cgroups the path must be \"slice:prefix:name\"",
        ));
    };
    if name.is_empty() {
        return Err(invalid("the name part of \"slice:prefix:name\" is empty"));
    }
    if name.contains('/') || prefix.contains('/') {
        return Err(invalid("unit names must not contain '/'"));
    }
    let slice = if slice.is_empty() {
        DEFAULT_SYSTEMD_SLICE
    } else {
        slice
    };
    let mut path = expand_slice(slice)?;
    let unit = if name.ends_with(".slice") || name.ends_with(".scope") {
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    path.push(unit);
    Ok(path)
}

/// Decides where the container's cgroup goes. `systemd_running` tells whether the host
/// was booted with systemd (`/run/systemd/system` exists); it matters only when
/// `systemd` is asked for.
pub fn resolve_location(
    cgroups_path: Option<&Path>,
    container_id: &str,
    systemd: bool,
    systemd_running: bool,
) -> Result<CgroupLocation> {
    check_container_id(container_id)?;
    if systemd {
        if !systemd_running {
            return Err(CgroupError::SystemdNotRunning);
        }
        let spec = match cgroups_path {
            Some(path) => path
                .to_str()
                .ok_or_else(|| CgroupError::InvalidCgroupsPath {
                    path: path.to_path_buf(),
                    reason: "it is not valid UTF-8".to_string(),
                })?
                .to_string(),
            None => format!("{DEFAULT_SYSTEMD_SLICE}:{DEFAULT_SYSTEMD_PREFIX}:{container_id}"),
        };
        let path = systemd_path(&spec)?;
        return normalize(&path).map(CgroupLocation::Absolute);
    }
    match cgroups_path {
        Some(path) if path.is_absolute() => normalize(path).map(CgroupLocation::Absolute),
        Some(path) => normalize(path).map(CgroupLocation::Relative),
        None => Ok(CgroupLocation::Relative(PathBuf::from(container_id))),
    }
}

/// True if a path from `/proc/self/cgroup` can be used as a base: absolute, no `..`.
fn is_plain(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Places a location in one hierarchy.
///
/// `mount_point` is where the hierarchy is mounted, `mount_root` the cgroup at that
/// mount point (mountinfo's root field), `own` the process's cgroup in this hierarchy.
/// For a relative location, when `own` is unknown or lies outside `mount_root` (a
/// cgroup namespace or bind mount hides it), the mount point is used as the base.
pub fn place(
    location: &CgroupLocation,
    mount_point: &Path,
    mount_root: &Path,
    own: Option<&Path>,
) -> PathBuf {
    match location {
        CgroupLocation::Absolute(path) => mount_point.join(path),
        CgroupLocation::Relative(path) => {
            let base = own
                .filter(|own| is_plain(own))
                .and_then(|own| own.strip_prefix(mount_root).ok())
                .map_or_else(|| mount_point.to_path_buf(), |rel| mount_point.join(rel));
            base.join(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(path: Option<&str>, systemd: bool) -> Result<CgroupLocation> {
        resolve_location(path.map(Path::new), "ctr", systemd, true)
    }

    #[test]
    fn absolute_path_is_normalised() {
        let location = resolve(Some("/berth/./a/../ctr"), false).unwrap();
        assert_eq!(
            location,
            CgroupLocation::Absolute(PathBuf::from("berth/ctr"))
        );
    }

    #[test]
    fn relative_path_stays_relative() {
        let location = resolve(Some("pod/ctr"), false).unwrap();
        assert_eq!(location, CgroupLocation::Relative(PathBuf::from("pod/ctr")));
    }

    #[test]
    fn absent_path_is_container_id_relative() {
        let location = resolve(None, false).unwrap();
        assert_eq!(location, CgroupLocation::Relative(PathBuf::from("ctr")));
    }

    #[test]
    fn escaping_absolute_path_is_refused() {
        let err = resolve(Some("/a/../../etc"), false).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidCgroupsPath { .. }),
            "{err}"
        );
    }

    #[test]
    fn escaping_relative_path_is_refused() {
        let err = resolve(Some("../sibling"), false).unwrap_err();
        assert!(err.to_string().contains("climbs above"), "{err}");
    }

    #[test]
    fn hierarchy_root_is_refused() {
        let err = resolve(Some("/a/.."), false).unwrap_err();
        assert!(err.to_string().contains("root of every hierarchy"), "{err}");
    }

    #[test]
    fn container_id_with_slash_is_refused() {
        let err = resolve_location(None, "a/b", false, false).unwrap_err();
        assert!(matches!(err, CgroupError::InvalidContainerId { .. }));
    }

    #[test]
    fn slice_expansion() {
        assert_eq!(
            expand_slice("a-b-c.slice").unwrap(),
            Path::new("/a.slice/a-b.slice/a-b-c.slice")
        );
        assert_eq!(
            expand_slice("system.slice").unwrap(),
            Path::new("/system.slice")
        );
        assert_eq!(expand_slice("-.slice").unwrap(), Path::new("/"));
    }

    #[test]
    fn bad_slices_are_refused() {
        for slice in ["a--b.slice", "-a.slice", "a-.slice", "a.scope", "a/b.slice"] {
            assert!(expand_slice(slice).is_err(), "{slice}");
        }
    }

    #[test]
    fn systemd_spec_becomes_scope_path() {
        let location = resolve(Some("machine-pod.slice:berth:abc"), true).unwrap();
        assert_eq!(
            location,
            CgroupLocation::Absolute(PathBuf::from(
                "machine.slice/machine-pod.slice/berth-abc.scope"
            ))
        );
    }

    #[test]
    fn systemd_default_is_system_slice() {
        let location = resolve(None, true).unwrap();
        assert_eq!(
            location,
            CgroupLocation::Absolute(PathBuf::from("system.slice/berth-ctr.scope"))
        );
    }

    #[test]
    fn systemd_empty_slice_and_prefix() {
        assert_eq!(
            systemd_path("::abc").unwrap(),
            Path::new("/system.slice/abc.scope")
        );
        assert_eq!(
            systemd_path("a.slice::sub-x.slice").unwrap(),
            Path::new("/a.slice/sub-x.slice")
        );
    }

    #[test]
    fn systemd_spec_needs_three_parts() {
        let err = resolve(Some("/plain/path"), true).unwrap_err();
        assert!(err.to_string().contains("slice:prefix:name"), "{err}");
    }

    #[test]
    fn systemd_without_systemd_is_refused() {
        let err = resolve_location(Some(Path::new("a.slice:b:c")), "ctr", true, false).unwrap_err();
        assert!(matches!(err, CgroupError::SystemdNotRunning));
        assert_eq!(
            err.to_string(),
            "systemd is not running on this host: --systemd-cgroup needs systemd as init"
        );
    }

    #[test]
    fn place_absolute_ignores_own_cgroup() {
        let location = CgroupLocation::Absolute(PathBuf::from("berth/c"));
        let dir = place(
            &location,
            Path::new("/cg/memory"),
            Path::new("/"),
            Some(Path::new("/user")),
        );
        assert_eq!(dir, Path::new("/cg/memory/berth/c"));
    }

    #[test]
    fn place_relative_uses_own_cgroup_below_mount_root() {
        let location = CgroupLocation::Relative(PathBuf::from("c"));
        let dir = place(
            &location,
            Path::new("/cg/memory"),
            Path::new("/docker/x"),
            Some(Path::new("/docker/x/runtime")),
        );
        assert_eq!(dir, Path::new("/cg/memory/runtime/c"));
    }

    #[test]
    fn place_relative_falls_back_to_mount_point() {
        let location = CgroupLocation::Relative(PathBuf::from("c"));
        let outside = place(
            &location,
            Path::new("/cg/memory"),
            Path::new("/docker/x"),
            Some(Path::new("/other")),
        );
        let escaped = place(
            &location,
            Path::new("/cg/memory"),
            Path::new("/"),
            Some(Path::new("/../..")),
        );
        assert_eq!(outside, Path::new("/cg/memory/c"));
        assert_eq!(escaped, Path::new("/cg/memory/c"));
    }
}
