//! `berth features`: what this build supports, as the runtime spec's features document.

use serde_json::{json, Value};

use crate::hooks::Kind;
use crate::spec::{OCI_VERSION_MAX, OCI_VERSION_MIN};

pub fn features() -> Value {
    let caps: Vec<String> = caps::all()
        .into_iter()
        .map(|c| c.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut opts = crate::rootfs::options::known();
    opts.sort();
    let controllers = std::fs::read_to_string("/proc/cgroups").unwrap_or_default();
    let namespaces: Vec<&str> = [
        ("cgroup", "cgroup"),
        ("ipc", "ipc"),
        ("mount", "mnt"),
        ("network", "net"),
        ("pid", "pid"),
        ("time", "time"),
        ("user", "user"),
        ("uts", "uts"),
    ]
    .into_iter()
    .filter(|(_, f)| std::path::Path::new("/proc/self/ns").join(f).exists())
    .map(|(n, _)| n)
    .collect();
    let seccomp_version = {
        let (a, b, c) = berth_seccomp::libseccomp_version();
        format!("{a}.{b}.{c}")
    };
    json!({
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": Kind::all().iter().map(|k| k.name()).collect::<Vec<_>>(),
        "mountOptions": opts,
        "linux": {
            "namespaces": namespaces,
            "capabilities": caps,
            "cgroup": {
                "v1": true,
                "v2": true,
                "systemd": std::path::Path::new("/run/systemd/system").exists(),
                "systemdUser": false,
                "rdma": controllers.lines().any(|l| l.starts_with("rdma")),
            },
            "seccomp": {
                "enabled": true,
                "actions": berth_seccomp::supported_actions(),
                "operators": berth_seccomp::supported_operators(),
                "archs": berth_seccomp::supported_archs(),
                "knownFlags": berth_seccomp::supported_flags(),
                "supportedFlags": berth_seccomp::supported_flags(),
            },
            "apparmor": {"enabled": crate::lsm::apparmor_enabled()},
            "selinux": {"enabled": crate::lsm::selinux_enabled()},
            "memoryPolicy": {
                "modes": ["MPOL_DEFAULT", "MPOL_BIND", "MPOL_INTERLEAVE",
                    "MPOL_WEIGHTED_INTERLEAVE", "MPOL_PREFERRED", "MPOL_PREFERRED_MANY",
                    "MPOL_LOCAL"],
                "flags": ["MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES",
                    "MPOL_F_STATIC_NODES"],
            },
            "intelRdt": {"enabled": false},
            "netDevices": {"enabled": true},
            "mountExtensions": {"idmap": {"enabled": true}},
        },
        "annotations": {
            "org.opencontainers.runc.checkpoint.enabled": "false",
            "io.berth.version": env!("CARGO_PKG_VERSION"),
            "io.github.seccomp.libseccomp.version": seccomp_version,
        }
    })
}
