//! Loading a bundle's config.json and checking it against the runtime spec and this host,
//! before anything is created. Every error names the file, the field and the cause.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, PosixRlimitType, Spec};

use crate::error::{Error, Result};
use crate::namespace::Namespaces;
use crate::procattr;

/// Oldest and newest runtime-spec versions this build implements.
pub const OCI_VERSION_MIN: &str = "1.0.0";
pub const OCI_VERSION_MAX: &str = "1.3.0";

/// A loaded bundle: the spec plus the absolute paths derived from it.
#[derive(Debug)]
pub struct Bundle {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub rootfs: PathBuf,
    pub spec: Spec,
}

/// Reads `<bundle>/config.json`, parses it and validates it.
pub fn load_bundle(bundle: &Path) -> Result<Bundle> {
    let dir = fs::canonicalize(bundle)
        .map_err(|e| Error::io(format!("bundle {}", bundle.display()), e))?;
    let config_path = dir.join("config.json");
    let data = fs::read(&config_path)
        .map_err(|e| Error::io(format!("read {}", config_path.display()), e))?;
    let spec = parse_config(&config_path, &data)?;
    let root = spec.root().as_ref().expect("validated");
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        dir.join(root.path())
    };
    let rootfs = fs::canonicalize(&rootfs).map_err(|e| Error::Config {
        file: config_path.clone(),
        field: "root.path".into(),
        reason: format!("{}: {e}", rootfs.display()),
    })?;
    if !rootfs.is_dir() {
        return Err(Error::Config {
            file: config_path,
            field: "root.path".into(),
            reason: format!("{} is not a directory", rootfs.display()),
        });
    }
    Ok(Bundle {
        dir,
        config_path,
        rootfs,
        spec,
    })
}

/// Parses the bytes of a config.json and validates the spec, as [`load_bundle`] does;
/// `file` only names the config in errors. The root filesystem is not looked up, but
/// the checks against this host (joined namespace paths, rlimits, LSMs) run.
pub fn parse_config(file: &Path, data: &[u8]) -> Result<Spec> {
    let spec: Spec = serde_json::from_slice(data).map_err(|e| Error::ConfigParse {
        file: file.to_path_buf(),
        source: e,
    })?;
    Validator { file, spec: &spec }.validate()?;
    Ok(spec)
}

/// Parses "MAJOR.MINOR.PATCH[-suffix]" and checks it lies in [MIN, MAX-minor].
pub fn check_oci_version(v: &str) -> std::result::Result<(), String> {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    let nums: Option<Vec<u64>> = parts.iter().map(|p| p.parse().ok()).collect();
    match nums.as_deref() {
        Some([1, minor, _patch]) if *minor <= 3 => Ok(()),
        Some([_, _, _]) => Err(format!(
            "unsupported version {v:?} (berth implements {OCI_VERSION_MIN} to 1.3.x)"
        )),
        _ => Err(format!("{v:?} is not a semantic version")),
    }
}

struct Validator<'a> {
    file: &'a Path,
    spec: &'a Spec,
}

impl Validator<'_> {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Config {
            file: self.file.to_path_buf(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn validate(&self) -> Result<()> {
        let s = self.spec;
        check_oci_version(s.version()).map_err(|r| self.err("ociVersion", r))?;
        let root = s
            .root()
            .as_ref()
            .ok_or_else(|| self.err("root", "missing (a container needs a root filesystem)"))?;
        if root.path().as_os_str().is_empty() {
            return Err(self.err("root.path", "must not be empty"));
        }
        self.process()?;
        let linux = s
            .linux()
            .as_ref()
            .ok_or_else(|| self.err("linux", "missing (berth runs Linux containers)"))?;
        let ns = Namespaces::from_spec(linux.namespaces().as_deref().unwrap_or(&[]))
            .map_err(|r| self.err("linux.namespaces", r))?;
        self.namespaces(&ns)?;
        crate::netdev::check(linux, &ns).map_err(|(f, r)| self.err(f, r))?;
        self.mounts()?;
        self.sysctls(&ns)?;
        self.devices()?;
        self.unsupported()?;
        self.process_attributes()?;
        Ok(())
    }

    fn process(&self) -> Result<()> {
        let Some(p) = self.spec.process() else {
            return Err(self.err("process", "missing (create needs a process to run)"));
        };
        match p.args().as_deref() {
            None | Some([]) => return Err(self.err("process.args", "must not be empty")),
            Some([first, ..]) if first.is_empty() => {
                return Err(self.err("process.args[0]", "must not be empty"))
            }
            _ => {}
        }
        if !p.cwd().is_absolute() {
            return Err(self.err(
                "process.cwd",
                format!("{:?} is not an absolute path", p.cwd()),
            ));
        }
        if let Some(env) = p.env() {
            for (i, e) in env.iter().enumerate() {
                if !e.contains('=') || e.starts_with('=') {
                    return Err(self.err(
                        format!("process.env[{i}]"),
                        format!("{e:?} is not KEY=VALUE"),
                    ));
                }
            }
        }
        let mut seen = HashSet::new();
        for r in p.rlimits().as_deref().unwrap_or(&[]) {
            let name = rlimit_name(r.typ());
            if !seen.insert(name) {
                return Err(self.err("process.rlimits", format!("{name} given twice")));
            }
            if r.soft() > r.hard() {
                return Err(self.err(
                    format!("process.rlimits[{name}]"),
                    format!("soft limit {} is above hard limit {}", r.soft(), r.hard()),
                ));
            }
            crate::rlimit::check_against_host(r)
                .map_err(|reason| self.err(format!("process.rlimits[{name}]"), reason))?;
        }
        if let Some(profile) = p.apparmor_profile() {
            if !profile.is_empty() && !crate::lsm::apparmor_enabled() {
                return Err(self.err(
                    "process.apparmorProfile",
                    format!(
                        "profile {profile:?} requested but AppArmor is not enabled on this host"
                    ),
                ));
            }
        }
        if let Some(label) = p.selinux_label() {
            if !label.is_empty() && !crate::lsm::selinux_enabled() {
                return Err(self.err(
                    "process.selinuxLabel",
                    format!("label {label:?} requested but SELinux is not enabled on this host"),
                ));
            }
        }
        if let Some(score) = p.oom_score_adj() {
            if !(-1000..=1000).contains(&score) {
                return Err(self.err(
                    "process.oomScoreAdj",
                    format!("{score} is outside -1000..1000"),
                ));
            }
        }
        Ok(())
    }

    /// A container in the host's mount namespace: what would change the host's own mounts
    /// (their propagation, read-only binds over its paths) is refused, as runc refuses
    /// masked and read-only paths. A read-only root is a read-only bind of the rootfs onto
    /// itself, below the rootfs like the container's other mounts.
    fn without_mount_namespace(&self) -> Result<()> {
        let linux = self.spec.linux().as_ref().expect("checked");
        let why = "needs a private mount namespace (linux.namespaces has no mount namespace)";
        if linux.masked_paths().as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(self.err("linux.maskedPaths", why));
        }
        if linux
            .readonly_paths()
            .as_ref()
            .is_some_and(|p| !p.is_empty())
        {
            return Err(self.err("linux.readonlyPaths", why));
        }
        if linux
            .rootfs_propagation()
            .as_ref()
            .is_some_and(|p| !p.is_empty())
        {
            return Err(self.err("linux.rootfsPropagation", why));
        }
        Ok(())
    }

    fn namespaces(&self, ns: &Namespaces) -> Result<()> {
        let s = self.spec;
        let linux = s.linux().as_ref().expect("checked");
        let has_maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
            || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
        if ns.creates(LinuxNamespaceType::User) {
            if linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty())
                || linux.gid_mappings().as_ref().is_none_or(|m| m.is_empty())
            {
                return Err(self.err(
                    "linux.uidMappings",
                    "a new user namespace needs both uidMappings and gidMappings",
                ));
            }
        } else if has_maps && !ns.has(LinuxNamespaceType::User) {
            return Err(self.err(
                "linux.uidMappings",
                "id mappings given without a user namespace",
            ));
        }
        for (i, (ty, path)) in ns.joined().enumerate() {
            if !path.is_absolute() {
                return Err(self.err(
                    format!("linux.namespaces[{i}].path"),
                    format!("{path:?} is not absolute"),
                ));
            }
            if !path.exists() {
                return Err(self.err(
                    format!("linux.namespaces ({})", crate::namespace::type_name(ty)),
                    format!("{} does not exist", path.display()),
                ));
            }
        }
        if !ns.has(LinuxNamespaceType::Mount) {
            self.without_mount_namespace()?;
        }
        if s.hostname().as_ref().is_some_and(|h| !h.is_empty()) && !ns.has(LinuxNamespaceType::Uts)
        {
            return Err(self.err(
                "hostname",
                "setting a hostname needs a private uts namespace",
            ));
        }
        if s.domainname().as_ref().is_some_and(|h| !h.is_empty())
            && !ns.has(LinuxNamespaceType::Uts)
        {
            return Err(self.err(
                "domainname",
                "setting a domainname needs a private uts namespace",
            ));
        }
        if linux.time_offsets().as_ref().is_some_and(|t| !t.is_empty()) {
            if !ns.creates(LinuxNamespaceType::Time) {
                return Err(self.err(
                    "linux.timeOffsets",
                    "time offsets need a new time namespace",
                ));
            }
            for k in linux.time_offsets().as_ref().expect("checked").keys() {
                if k != "monotonic" && k != "boottime" {
                    return Err(self.err(
                        "linux.timeOffsets",
                        format!("unknown clock {k:?} (monotonic or boottime)"),
                    ));
                }
            }
        }
        if ns.creates(LinuxNamespaceType::Time) && !Path::new("/proc/self/ns/time").exists() {
            return Err(self.err("linux.namespaces", "this kernel has no time namespaces"));
        }
        Ok(())
    }

    fn mounts(&self) -> Result<()> {
        for (i, m) in self
            .spec
            .mounts()
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            let d = m.destination();
            if !d.is_absolute() {
                return Err(self.err(
                    format!("mounts[{i}].destination"),
                    format!("{d:?} is not an absolute path"),
                ));
            }
            let opts = m.options().as_deref().unwrap_or(&[]);
            let is_bind = opts.iter().any(|o| o == "bind" || o == "rbind")
                || m.typ().as_deref() == Some("bind");
            if is_bind && m.source().is_none() {
                return Err(self.err(format!("mounts[{i}].source"), "a bind mount needs a source"));
            }
            if !is_bind && m.typ().as_ref().is_none_or(|t| t.is_empty()) {
                return Err(self.err(
                    format!("mounts[{i}].type"),
                    "missing (only bind mounts may omit it)",
                ));
            }
            if crate::rootfs::idmap::wanted(m) {
                self.idmapped_mount(i, m, is_bind)?;
            }
            for o in opts {
                if crate::rootfs::options::is_unsupported(o) {
                    return Err(self.err(
                        format!("mounts[{i}].options"),
                        format!("option {o:?} is not supported by this version of berth"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// idmap, ridmap, uidMappings and gidMappings of one mount.
    fn idmapped_mount(&self, i: usize, m: &oci_spec::runtime::Mount, is_bind: bool) -> Result<()> {
        let field = format!("mounts[{i}]");
        if !is_bind {
            return Err(self.err(
                format!("{field}.options"),
                "an idmap applies to bind mounts only",
            ));
        }
        match (m.uid_mappings(), m.gid_mappings()) {
            (Some(u), Some(g)) => {
                for (name, maps) in [("uidMappings", u), ("gidMappings", g)] {
                    if maps.is_empty() || maps.iter().any(|e| e.size() == 0) {
                        return Err(self.err(
                            format!("{field}.{name}"),
                            "needs at least one mapping, each of a non-zero size",
                        ));
                    }
                }
                Ok(())
            }
            (None, None) => {
                let linux = self.spec.linux().as_ref().expect("checked");
                let userns = linux
                    .namespaces()
                    .as_deref()
                    .unwrap_or(&[])
                    .iter()
                    .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
                let maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
                    && linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
                if userns && maps {
                    Ok(())
                } else {
                    Err(self.err(
                        format!("{field}.options"),
                        "idmap without uidMappings and gidMappings takes the container's user \
                         namespace mappings, and this container has none",
                    ))
                }
            }
            _ => Err(self.err(field, "uidMappings and gidMappings must be given together")),
        }
    }

    fn sysctls(&self, ns: &Namespaces) -> Result<()> {
        let linux = self.spec.linux().as_ref().expect("checked");
        for key in linux
            .sysctl()
            .as_ref()
            .map(|m| m.keys().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let field = format!("linux.sysctl[{key:?}]");
            if key.contains("..") || key.contains('/') && key.contains('.') || key.is_empty() {
                return Err(self.err(field, "not a valid sysctl name"));
            }
            let need = sysctl_namespace(key);
            match need {
                // Joined by path: that namespace must not be the host's (threat model F14).
                Some(ty) if ns.path(ty).is_some_and(|p| same_namespace_as_ours(p, ty)) => {
                    return Err(self.err(
                        field,
                        format!(
                            "the {} namespace joined by path is the host's; setting it would \
                             change the host",
                            crate::namespace::type_name(ty)
                        ),
                    ))
                }
                Some(ty) if ns.has(ty) => {}
                Some(ty) => {
                    return Err(self.err(
                        field,
                        format!(
                            "needs a private {} namespace, but the container shares the host's",
                            crate::namespace::type_name(ty)
                        ),
                    ))
                }
                None => {
                    return Err(
                        self.err(field, "is not namespaced; setting it would change the host")
                    )
                }
            }
        }
        Ok(())
    }

    fn devices(&self) -> Result<()> {
        let linux = self.spec.linux().as_ref().expect("checked");
        for (i, d) in linux.devices().as_deref().unwrap_or(&[]).iter().enumerate() {
            let p = d.path();
            if !p.is_absolute() || escapes(p) {
                return Err(self.err(
                    format!("linux.devices[{i}].path"),
                    format!("{p:?} is not an absolute path inside the container"),
                ));
            }
            if !p.starts_with("/dev") {
                return Err(self.err(
                    format!("linux.devices[{i}].path"),
                    format!("{p:?} is not under /dev"),
                ));
            }
        }
        Ok(())
    }

    /// Spec 1.1–1.3 process attributes: checked here, applied by `procattr` in the process
    /// about to exec.
    fn process_attributes(&self) -> Result<()> {
        let linux = self.spec.linux().as_ref().expect("checked");
        let p = self.spec.process().as_ref().expect("checked");
        let check = |field: &str, r: std::result::Result<(), String>| {
            r.map_err(|reason| self.err(field.to_string(), reason))
        };
        if let Some(x) = linux.personality() {
            check("linux.personality", procattr::check_personality(x))?;
        }
        if let Some(x) = linux.memory_policy() {
            check("linux.memoryPolicy", procattr::check_memory_policy(x))?;
        }
        if let Some(x) = p.scheduler() {
            check("process.scheduler", procattr::check_scheduler(x))?;
        }
        if let Some(x) = p.io_priority() {
            check("process.ioPriority", procattr::check_io_priority(x))?;
        }
        if let Some(x) = p.exec_cpu_affinity() {
            if let Some(l) = x.initial() {
                check(
                    "process.execCPUAffinity.initial",
                    procattr::check_cpu_affinity(l),
                )?;
            }
            if let Some(l) = x.cpu_affinity_final() {
                check(
                    "process.execCPUAffinity.final",
                    procattr::check_cpu_affinity(l),
                )?;
            }
        }
        Ok(())
    }

    /// Spec fields this build does not implement yet: refused, never silently ignored.
    fn unsupported(&self) -> Result<()> {
        let linux = self.spec.linux().as_ref().expect("checked");
        if linux.intel_rdt().is_some() {
            let mounted = fs::read_to_string("/proc/self/mountinfo")
                .map(|m| m.lines().any(|l| l.contains(" - resctrl ")))
                .unwrap_or(false);
            if !mounted {
                return Err(self.err(
                    "linux.intelRdt",
                    "this host has no resctrl filesystem mounted at /sys/fs/resctrl: the CPU \
                     lacks Intel RDT (or AMD QoS), or the kernel lacks CONFIG_X86_CPU_RESCTRL",
                ));
            }
            return Err(self.err(
                "linux.intelRdt",
                "resctrl is mounted, but this version of berth does not manage RDT groups yet",
            ));
        }
        Ok(())
    }
}

/// True if the path climbs above its start with `..`.
pub fn escapes(p: &Path) -> bool {
    let mut depth: i64 = 0;
    for c in p.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    false
}

/// Which namespace isolates a sysctl; `None` for host-global ones.
/// Whether `path` names the very namespace of type `ty` this process is in.
fn same_namespace_as_ours(path: &Path, ty: LinuxNamespaceType) -> bool {
    let name = match ty {
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        _ => return false,
    };
    let id = |p: &Path| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let ours = id(Path::new(&format!("/proc/self/ns/{name}")));
    ours.is_some() && id(path) == ours
}

pub fn sysctl_namespace(key: &str) -> Option<LinuxNamespaceType> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        return Some(LinuxNamespaceType::Ipc);
    }
    if key.starts_with("net.") {
        return Some(LinuxNamespaceType::Network);
    }
    if key == "kernel.hostname" || key == "kernel.domainname" {
        return Some(LinuxNamespaceType::Uts);
    }
    None
}

pub fn rlimit_name(t: PosixRlimitType) -> &'static str {
    use PosixRlimitType::*;
    match t {
        RlimitCpu => "RLIMIT_CPU",
        RlimitFsize => "RLIMIT_FSIZE",
        RlimitData => "RLIMIT_DATA",
        RlimitStack => "RLIMIT_STACK",
        RlimitCore => "RLIMIT_CORE",
        RlimitRss => "RLIMIT_RSS",
        RlimitNproc => "RLIMIT_NPROC",
        RlimitNofile => "RLIMIT_NOFILE",
        RlimitMemlock => "RLIMIT_MEMLOCK",
        RlimitAs => "RLIMIT_AS",
        RlimitLocks => "RLIMIT_LOCKS",
        RlimitSigpending => "RLIMIT_SIGPENDING",
        RlimitMsgqueue => "RLIMIT_MSGQUEUE",
        RlimitNice => "RLIMIT_NICE",
        RlimitRtprio => "RLIMIT_RTPRIO",
        RlimitRttime => "RLIMIT_RTTIME",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        for ok in [
            "1.0.0",
            "1.0.2",
            "1.0.2-dev",
            "1.1.0",
            "1.2.1",
            "1.3.0",
            "1.1.0-rc.1",
        ] {
            check_oci_version(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["2.0.0", "1.4.0", "0.9.0", "1.0", "abc", ""] {
            assert!(check_oci_version(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn sysctl_namespaces() {
        assert_eq!(
            sysctl_namespace("net.ipv4.ip_forward"),
            Some(LinuxNamespaceType::Network)
        );
        assert_eq!(
            sysctl_namespace("kernel.shmmax"),
            Some(LinuxNamespaceType::Ipc)
        );
        assert_eq!(
            sysctl_namespace("fs.mqueue.msg_max"),
            Some(LinuxNamespaceType::Ipc)
        );
        assert_eq!(
            sysctl_namespace("kernel.domainname"),
            Some(LinuxNamespaceType::Uts)
        );
        assert_eq!(sysctl_namespace("vm.swappiness"), None);
        assert_eq!(sysctl_namespace("kernel.pid_max"), None);
    }

    #[test]
    fn escaping_paths() {
        assert!(escapes(Path::new("../x")));
        assert!(escapes(Path::new("/a/../../x")));
        assert!(!escapes(Path::new("/a/../x")));
        assert!(!escapes(Path::new("/dev/null")));
    }
}
