//! Finding the container's own cgroup from inside, on cgroup v1, v2 or hybrid.
//!
//! Nothing is assumed about where the runtime mounted what: the process's cgroups come from
//! /proc/self/cgroup and the mounts from /proc/self/mountinfo. A hierarchy mounted at `M` whose
//! mount root is `R` shows the process's cgroup `P` at `M` + (`P` without `R`); inside a cgroup
//! namespace both `P` and `R` are relative to the namespace's root, so the same rule holds.
//! A controller is looked for in a v1 hierarchy first (as the kernel does on a hybrid host,
//! a controller bound to v1 is not available on cgroup2), then on cgroup2.

use std::path::PathBuf;

use berth_conformance::mountinfo::MountEntry;

/// Where a controller's files for this process are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub dir: PathBuf,
    pub v2: bool,
}

/// One line of /proc/self/cgroup: hierarchy id, controllers (empty for cgroup2), path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub controllers: Vec<String>,
    pub path: String,
}

pub fn parse_self_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let _id = f.next()?;
            let controllers = f.next()?;
            let path = f.next()?;
            Some(Membership {
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// `own` seen from a mount whose root is `root`: the rest of the path, `None` if `own` is not
/// at or below `root`.
fn below(own: &str, root: &str) -> Option<String> {
    let root = root.trim_end_matches('/');
    if own == root || (root.is_empty() && own == "/") {
        return Some(String::new());
    }
    own.strip_prefix(root)
        .filter(|rest| rest.starts_with('/'))
        .map(|rest| rest.trim_start_matches('/').to_string())
}

/// The directory that holds `controller`'s files for this process.
pub fn locate(
    controller: &str,
    mounts: &[MountEntry],
    memberships: &[Membership],
    exists: impl Fn(&PathBuf) -> bool,
    v2_controllers: impl Fn(&PathBuf) -> Option<String>,
) -> Result<Located, String> {
    let v1_member = memberships
        .iter()
        .find(|m| m.controllers.iter().any(|c| c == controller));
    if let Some(member) = v1_member {
        for m in mounts
            .iter()
            .filter(|m| m.fstype == "cgroup" && m.super_options.iter().any(|o| o == controller))
        {
            if let Some(rest) = below(&member.path, &m.root) {
                let dir = PathBuf::from(&m.mount_point).join(rest);
                if exists(&dir) {
                    return Ok(Located { dir, v2: false });
                }
            }
        }
        return Err(format!(
            "the process is in {controller} cgroup {} (v1) but no cgroup mount in the container \
             shows it",
            member.path
        ));
    }
    let unified = memberships.iter().find(|m| m.controllers.is_empty());
    if let Some(member) = unified {
        for m in mounts.iter().filter(|m| m.fstype == "cgroup2") {
            if let Some(rest) = below(&member.path, &m.root) {
                let dir = PathBuf::from(&m.mount_point).join(rest);
                let Some(enabled) = v2_controllers(&dir) else {
                    continue;
                };
                if enabled.split_whitespace().any(|c| c == controller) {
                    return Ok(Located { dir, v2: true });
                }
                return Err(format!(
                    "controller {controller} is not enabled in {}/cgroup.controllers ({:?})",
                    dir.display(),
                    enabled.trim()
                ));
            }
        }
    }
    Err(format!(
        "no cgroup v1 hierarchy with {controller} and no cgroup2 mount in the container shows \
         this process's cgroup"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_conformance::mountinfo::parse;

    fn v2_with(list: &'static str) -> impl Fn(&PathBuf) -> Option<String> {
        move |_| Some(list.to_string())
    }

    #[test]
    fn v1_bind_of_own_cgroup_without_cgroupns() {
        let mounts = parse(
            "30 20 0:35 /c1 /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n\
             31 20 0:36 / /sys/fs/cgroup/pids ro - cgroup cgroup rw,pids\n",
        )
        .unwrap();
        let me = parse_self_cgroup("4:memory:/c1\n8:pids:/c1\n0::/\n");
        let found = locate("memory", &mounts, &me, |_| true, v2_with("")).unwrap();
        assert_eq!(found.dir, PathBuf::from("/sys/fs/cgroup/memory"));
        assert!(!found.v2);
        let pids = locate("pids", &mounts, &me, |_| true, v2_with("")).unwrap();
        assert_eq!(pids.dir, PathBuf::from("/sys/fs/cgroup/pids/c1"));
    }

    #[test]
    fn cgroupns_shows_root_everywhere() {
        let mounts =
            parse("30 20 0:35 / /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n").unwrap();
        let me = parse_self_cgroup("4:memory:/\n");
        let found = locate("memory", &mounts, &me, |_| true, v2_with("")).unwrap();
        assert_eq!(found.dir, PathBuf::from("/sys/fs/cgroup/memory"));
    }

    #[test]
    fn unified_only() {
        let mounts = parse("30 20 0:35 / /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n").unwrap();
        let me = parse_self_cgroup("0::/\n");
        let found = locate("pids", &mounts, &me, |_| true, v2_with("cpu memory pids")).unwrap();
        assert_eq!(
            found,
            Located {
                dir: PathBuf::from("/sys/fs/cgroup"),
                v2: true
            }
        );
        let err = locate("hugetlb", &mounts, &me, |_| true, v2_with("cpu memory")).unwrap_err();
        assert!(err.contains("not enabled"), "{err}");
    }

    #[test]
    fn hybrid_prefers_the_v1_hierarchy() {
        let mounts = parse(
            "30 20 0:35 / /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n\
             31 20 0:36 / /sys/fs/cgroup/unified ro - cgroup2 cgroup2 rw\n",
        )
        .unwrap();
        let me = parse_self_cgroup("4:memory:/\n0::/\n");
        let found = locate("memory", &mounts, &me, |_| true, v2_with("memory")).unwrap();
        assert!(!found.v2);
    }

    #[test]
    fn a_hierarchy_that_is_not_mounted_is_an_error() {
        let me = parse_self_cgroup("4:memory:/c1\n");
        let err = locate("memory", &[], &me, |_| true, v2_with("")).unwrap_err();
        assert!(err.contains("no cgroup mount"), "{err}");
        let err = locate("cpu", &[], &me, |_| true, v2_with("")).unwrap_err();
        assert!(err.contains("no cgroup v1 hierarchy with cpu"), "{err}");
    }

    #[test]
    fn paths_outside_the_mount_root_do_not_match() {
        assert_eq!(below("/a/b", "/a"), Some("b".to_string()));
        assert_eq!(below("/a", "/a"), Some(String::new()));
        assert_eq!(below("/ab", "/a"), None);
        assert_eq!(below("/x", "/"), Some("x".to_string()));
        assert_eq!(below("/", "/"), Some(String::new()));
    }
}
