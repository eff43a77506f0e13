//! Cases checked from inside the container by berth-check.

use std::fs;
use std::path::Path;

use berth_conformance::{caps, Probe};
use serde_json::json;

use super::{Case, Kind, Plan};
use crate::host::Host;

pub fn cases() -> Vec<Case> {
    let case = |name, about, build| Case {
        name,
        about,
        kind: Kind::Checker(build),
    };
    vec![
        case(
            "namespaces",
            "pid, net, ipc, uts, mnt and cgroup namespaces are new; user and time stay the host's",
            namespaces,
        ),
        case(
            "namespaces-shared",
            "a namespace joined by path (the host's net) or left out (ipc) is the host's",
            namespaces_shared,
        ),
        case(
            "user-namespace",
            "a user namespace with uid/gid maps: the maps, uid 0 inside, host files unmapped",
            user_namespace,
        ),
        case("hostname", "hostname in a new uts namespace", hostname),
        case(
            "domainname",
            "domainname (runtime-spec 1.1) in a new uts namespace",
            domainname,
        ),
        case(
            "mounts",
            "default mounts' types and flags; tmpfs and bind mounts with ro/nosuid/nodev/noexec",
            mounts,
        ),
        case(
            "rootfs-readonly",
            "root.readonly: / is mounted ro and refuses writes; mounts on it stay writable",
            rootfs_readonly,
        ),
        case(
            "devices",
            "default device nodes and /dev links; linux.devices with type, numbers, mode, owner",
            devices,
        ),
        case(
            "rlimits",
            "process.rlimits as getrlimit(2) reports them",
            rlimits,
        ),
        case(
            "capabilities",
            "all five capability sets of a non-root process with ambient capabilities",
            capabilities,
        ),
        case(
            "capabilities-root",
            "capability sets of uid 0 under no_new_privs: no more than the permitted set",
            capabilities_root,
        ),
        case(
            "seccomp",
            "seccomp filter mode; blocked syscalls return errnoRet or EPERM, others work",
            seccomp,
        ),
        case(
            "cgroups",
            "memory limit, pids.max and CPU quota read from the container's own cgroup",
            cgroups,
        ),
        case("user", "uid, gid, additionalGids and umask", user),
        case(
            "no-new-privileges",
            "noNewPrivileges true sets NoNewPrivs",
            no_new_privs_on,
        ),
        case(
            "no-new-privileges-off",
            "noNewPrivileges false leaves NoNewPrivs clear",
            no_new_privs_off,
        ),
        case("cwd", "process.cwd is the working directory", cwd),
        case(
            "env",
            "process.env, including empty values and values with = and spaces",
            env,
        ),
        case(
            "masked-paths",
            "maskedPaths: files read as /dev/null, directories are empty tmpfs",
            masked_paths,
        ),
        case(
            "readonly-paths",
            "readonlyPaths: writes fail with EROFS; paths not listed stay writable",
            readonly_paths,
        ),
        case("sysctl", "linux.sysctl values in /proc/sys", sysctl),
        case("oom-score-adj", "process.oomScoreAdj", oom_score_adj),
    ]
}

/// /proc/self/ns names and their config.json types.
pub(super) const NS_TYPES: &[(&str, &str)] = &[
    ("pid", "pid"),
    ("net", "network"),
    ("ipc", "ipc"),
    ("uts", "uts"),
    ("mnt", "mount"),
    ("cgroup", "cgroup"),
    ("user", "user"),
    ("time", "time"),
];

/// Checks that namespace `ns` is `new` or `host`, or records that the kernel lacks it.
fn ns_check(p: &mut Plan<'_>, ns: &str, expect: &str) {
    let name = format!("{ns} namespace");
    match p.host_ns(ns) {
        Some(inode) => p.check(
            name,
            Probe::Namespace {
                ns: ns.to_string(),
                host_inode: inode,
            },
            expect,
        ),
        None => p.skip(name, format!("this kernel has no {ns} namespace")),
    }
}

fn namespaces(p: &mut Plan<'_>) -> Result<(), String> {
    for (ns, _) in &NS_TYPES[..6] {
        ns_check(p, ns, "new");
    }
    ns_check(p, "user", "host");
    ns_check(p, "time", "host");
    Ok(())
}

fn namespaces_shared(p: &mut Plan<'_>) -> Result<(), String> {
    let net = format!("/proc/{}/ns/net", p.host.pid);
    p.bundle.set_namespace("network", Some(&net));
    p.bundle.remove_namespace("ipc");
    ns_check(p, "net", "host");
    ns_check(p, "ipc", "host");
    ns_check(p, "pid", "new");
    ns_check(p, "uts", "new");
    Ok(())
}

fn user_namespace(p: &mut Plan<'_>) -> Result<(), String> {
    if p.host_ns("user").is_none() {
        p.skip("user namespace", "this kernel has no user namespace");
        return Ok(());
    }
    let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    p.bundle.set_namespace("user", None);
    p.bundle.config["linux"]["uidMappings"] = map.clone();
    p.bundle.config["linux"]["gidMappings"] = map;
    // cgroup v1 cannot be mounted from a user namespace, and runtimes differ in how they
    // stand in for it; this case is about the user namespace.
    p.bundle.remove_mounts_of_type("cgroup");
    ns_check(p, "user", "new");
    let file = |path: &str| Probe::FileContent {
        path: path.to_string(),
    };
    p.check("uid_map", file("/proc/self/uid_map"), "0 100000 65536");
    p.check("gid_map", file("/proc/self/gid_map"), "0 100000 65536");
    p.check("uid inside", Probe::Uid, "0");
    // Files owned by host root are outside the map: they show as the overflow ids.
    let overflow = |f: &str| {
        fs::read_to_string(format!("/proc/sys/kernel/{f}"))
            .map(|t| t.trim().to_string())
            .unwrap_or_else(|_| "65534".to_string())
    };
    p.check(
        "host root's file is unmapped",
        Probe::Owner {
            path: "/berth-check".into(),
        },
        format!("{}:{}", overflow("overflowuid"), overflow("overflowgid")),
    );
    Ok(())
}

fn hostname(p: &mut Plan<'_>) -> Result<(), String> {
    p.bundle.config["hostname"] = json!("conformance-host");
    p.check("hostname", Probe::Hostname, "conformance-host");
    Ok(())
}

fn domainname(p: &mut Plan<'_>) -> Result<(), String> {
    p.bundle.config["domainname"] = json!("conformance.test");
    p.check("domainname", Probe::Domainname, "conformance.test");
    Ok(())
}

fn mount_type(p: &mut Plan<'_>, dest: &str, fstype: &str) {
    p.check(
        format!("mount {dest} type"),
        Probe::MountType {
            destination: dest.into(),
        },
        fstype,
    );
}

fn mount_opt(p: &mut Plan<'_>, dest: &str, option: &str, set: bool) {
    p.check(
        format!("mount {dest} {option}"),
        Probe::MountOption {
            destination: dest.into(),
            option: option.into(),
        },
        if set { "set" } else { "unset" },
    );
}

fn mounts(p: &mut Plan<'_>) -> Result<(), String> {
    let src = p.bundle.dir.join("bind-src");
    fs::create_dir_all(&src).map_err(|e| format!("cannot create {}: {e}", src.display()))?;
    fs::write(src.join("marker"), "bind-marker\n")
        .map_err(|e| format!("cannot write {}: {e}", src.join("marker").display()))?;
    p.bundle.add_mount(
        json!({"destination": "/mnt/tmpfs-ro", "type": "tmpfs", "source": "tmpfs",
        "options": ["ro", "nosuid", "nodev", "noexec", "mode=755"]}),
    );
    p.bundle.add_mount(
        json!({"destination": "/mnt/tmpfs-rw", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "mode=755"]}),
    );
    p.bundle
        .add_mount(json!({"destination": "/mnt/bind-ro", "type": "bind",
        "source": src.display().to_string(), "options": ["rbind", "ro", "nosuid", "nodev"]}));
    for (dest, fstype) in [
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
        ("/mnt/tmpfs-ro", "tmpfs"),
        ("/mnt/tmpfs-rw", "tmpfs"),
    ] {
        mount_type(p, dest, fstype);
    }
    mount_opt(p, "/", "ro", false);
    mount_opt(p, "/dev", "nosuid", true);
    mount_opt(p, "/dev/pts", "noexec", true);
    for opt in ["nosuid", "nodev", "noexec"] {
        mount_opt(p, "/dev/shm", opt, true);
    }
    for opt in ["ro", "nosuid", "nodev", "noexec"] {
        mount_opt(p, "/sys", opt, true);
        mount_opt(p, "/mnt/tmpfs-ro", opt, true);
    }
    mount_opt(p, "/mnt/tmpfs-rw", "nosuid", true);
    for opt in ["ro", "nodev", "noexec"] {
        mount_opt(p, "/mnt/tmpfs-rw", opt, false);
    }
    for opt in ["ro", "nosuid", "nodev"] {
        mount_opt(p, "/mnt/bind-ro", opt, true);
    }
    mount_opt(p, "/mnt/bind-ro", "noexec", false);
    p.check(
        "bind mount shows its source",
        Probe::FileContent {
            path: "/mnt/bind-ro/marker".into(),
        },
        "bind-marker",
    );
    p.check(
        "bind mount refuses writes",
        Probe::Writable {
            path: "/mnt/bind-ro".into(),
        },
        "read-only",
    );
    Ok(())
}

fn writable(p: &mut Plan<'_>, path: &str, expect: &str) {
    p.check(
        format!("{path} {expect}"),
        Probe::Writable { path: path.into() },
        expect,
    );
}

fn rootfs_readonly(p: &mut Plan<'_>) -> Result<(), String> {
    p.bundle.config["root"]["readonly"] = json!(true);
    p.bundle.add_mount(
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "mode=755"]}),
    );
    mount_opt(p, "/", "ro", true);
    writable(p, "/", "read-only");
    writable(p, "/tmp", "read-only");
    writable(p, "/run", "writable");
    writable(p, "/dev/shm", "writable");
    Ok(())
}

fn devices(p: &mut Plan<'_>) -> Result<(), String> {
    p.bundle.config["linux"]["devices"] = json!([
        {"path": "/dev/conf-char", "type": "c", "major": 1, "minor": 5, "fileMode": 0o640,
         "uid": 0, "gid": 0},
        {"path": "/dev/conf-block", "type": "b", "major": 7, "minor": 0, "fileMode": 0o600,
         "uid": 1000, "gid": 1000}
    ]);
    let node = |p: &mut Plan<'_>, path: &str, dev: &str, mode: &str| {
        p.check(
            format!("{path} node"),
            Probe::Device { path: path.into() },
            dev,
        );
        p.check(
            format!("{path} mode"),
            Probe::FileMode { path: path.into() },
            mode,
        );
    };
    for (path, dev) in [
        ("/dev/null", "c 1:3"),
        ("/dev/zero", "c 1:5"),
        ("/dev/full", "c 1:7"),
        ("/dev/random", "c 1:8"),
        ("/dev/urandom", "c 1:9"),
        ("/dev/tty", "c 5:0"),
    ] {
        node(p, path, dev, "0666");
    }
    node(p, "/dev/conf-char", "c 1:5", "0640");
    node(p, "/dev/conf-block", "b 7:0", "0600");
    p.check(
        "/dev/conf-char owner",
        Probe::Owner {
            path: "/dev/conf-char".into(),
        },
        "0:0",
    );
    p.check(
        "/dev/conf-block owner",
        Probe::Owner {
            path: "/dev/conf-block".into(),
        },
        "1000:1000",
    );
    for (path, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/ptmx", "pts/ptmx"),
    ] {
        p.check(
            format!("{path} link"),
            Probe::Symlink { path: path.into() },
            target,
        );
    }
    Ok(())
}

fn rlimits(p: &mut Plan<'_>) -> Result<(), String> {
    // No limit may exceed the harness's own hard limit: raising one needs CAP_SYS_RESOURCE.
    let wanted = [
        ("RLIMIT_NOFILE", libc::RLIMIT_NOFILE, 512u64, 1024u64),
        ("RLIMIT_CORE", libc::RLIMIT_CORE, 4096, 8192),
        ("RLIMIT_NPROC", libc::RLIMIT_NPROC, 1000, 2000),
    ];
    let mut list = Vec::new();
    for (name, resource, soft, hard) in wanted {
        let cap = Host::rlimit_hard(resource).unwrap_or(u64::MAX);
        let (soft, hard) = (soft.min(cap), hard.min(cap));
        list.push(json!({"type": name, "soft": soft, "hard": hard}));
        p.check(
            name,
            Probe::Rlimit {
                resource: name.into(),
            },
            format!("{soft} {hard}"),
        );
    }
    p.bundle.config["process"]["rlimits"] = json!(list);
    Ok(())
}

/// Sets `process.capabilities` and checks every set; skips if the harness itself lacks a
/// capability, since no runtime can grant more than its caller has.
fn caps_case(p: &mut Plan<'_>, sets: [(&str, &str, &[&str]); 5]) -> Result<(), String> {
    let bounding = sets
        .iter()
        .find(|(key, _, _)| *key == "bounding")
        .map(|(_, _, names)| caps::names_to_mask(names))
        .transpose()?
        .unwrap_or(0);
    if bounding & !p.host.bounding != 0 {
        let missing = caps::mask_to_text(bounding & !p.host.bounding);
        p.skip(
            "capabilities",
            format!("the harness's own bounding set lacks {missing}"),
        );
        return Ok(());
    }
    for (key, field, names) in sets {
        p.bundle.config["process"]["capabilities"][key] = json!(names);
        p.check(
            format!("{field} ({key})"),
            Probe::Capabilities {
                set: field.to_string(),
            },
            caps::names_to_text(names)?,
        );
    }
    Ok(())
}

fn capabilities(p: &mut Plan<'_>) -> Result<(), String> {
    p.bundle.config["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    let some: &[&str] = &["CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let bounding: &[&str] = &[
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_AUDIT_WRITE",
    ];
    // For a non-root process without file capabilities, execve keeps exactly the ambient
    // set as permitted and effective, so every set is observable as configured.
    caps_case(
        p,
        [
            ("bounding", "CapBnd", bounding),
            ("effective", "CapEff", some),
            ("permitted", "CapPrm", some),
            ("inheritable", "CapInh", some),
            ("ambient", "CapAmb", some),
        ],
    )
}

fn capabilities_root(p: &mut Plan<'_>) -> Result<(), String> {
    p.bundle.config["process"]["noNewPrivileges"] = json!(true);
    let bounding: &[&str] = &[
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_KILL",
        "CAP_SETUID",
        "CAP_SETGID",
    ];
    let some: &[&str] = &["CAP_CHOWN", "CAP_KILL"];
    // execve as uid 0 would raise permitted and effective to the bounding set; with
    // no_new_privs the kernel caps them at the permitted set the runtime gave before exec.
    caps_case(
        p,
        [
            ("bounding", "CapBnd", bounding),
            ("effective", "CapEff", some),
            ("permitted", "CapPrm", some),
            ("inheritable", "CapInh", &[]),
            ("ambient", "CapAmb", &[]),
        ],
    )
}

fn seccomp(p: &mut Plan<'_>) -> Result<(), String> {
    if !p.host.seccomp {
        p.skip(
            "seccomp",
            "this kernel has no seccomp (no Seccomp field in /proc/self/status)",
        );
        return Ok(());
    }
    p.bundle.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["getsid"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EXDEV},
            {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO"}
        ]
    });
    p.check("seccomp mode", Probe::SeccompMode, "2");
    let call = |name: &str| Probe::SyscallErrno {
        syscall: name.into(),
    };
    p.check(
        "getsid returns errnoRet",
        call("getsid"),
        format!("errno {}", libc::EXDEV),
    );
    p.check(
        "getpriority returns EPERM",
        call("getpriority"),
        format!("errno {}", libc::EPERM),
    );
    p.check("getpgid is allowed", call("getpgid"), "ok");
    Ok(())
}

fn cgroups(p: &mut Plan<'_>) -> Result<(), String> {
    p.bundle.config["linux"]["cgroupsPath"] = json!(format!("/berth-conformance-{}", p.id));
    let mut resources = p.bundle.config["linux"]["resources"].clone();
    if p.host.has_controller("memory") {
        resources["memory"] = json!({"limit": 64 * 1024 * 1024});
        p.check(
            "memory limit",
            Probe::CgroupMemoryMax,
            (64 * 1024 * 1024).to_string(),
        );
    } else {
        let why = p.host.controller_missing("memory");
        p.skip("memory limit", why);
    }
    if p.host.has_controller("pids") {
        resources["pids"] = json!({"limit": 64});
        p.check("pids.max", Probe::CgroupPidsMax, "64");
    } else {
        let why = p.host.controller_missing("pids");
        p.skip("pids.max", why);
    }
    if p.host.has_controller("cpu") && p.host.cpu_bandwidth {
        resources["cpu"] = json!({"quota": 50000, "period": 100000});
        p.check("cpu quota", Probe::CgroupCpuMax, "50000 100000");
    } else if p.host.has_controller("cpu") {
        p.skip(
            "cpu quota",
            "this kernel has no CPU bandwidth control (no cpu.cfs_quota_us)",
        );
    } else {
        let why = p.host.controller_missing("cpu");
        p.skip("cpu quota", why);
    }
    p.bundle.config["linux"]["resources"] = resources;
    Ok(())
}

fn user(p: &mut Plan<'_>) -> Result<(), String> {
    p.bundle.config["process"]["user"] =
        json!({"uid": 1000, "gid": 1000, "additionalGids": [2000, 3000], "umask": 0o027});
    p.check("uid", Probe::Uid, "1000");
    p.check("gid", Probe::Gid, "1000");
    p.check("additional groups", Probe::Groups, "2000,3000");
    p.check("umask", Probe::Umask, "0027");
    Ok(())
}

fn no_new_privs_on(p: &mut Plan<'_>) -> Result<(), String> {
    p.bundle.config["process"]["noNewPrivileges"] = json!(true);
    p.check("NoNewPrivs", Probe::NoNewPrivs, "1");
    Ok(())
}

fn no_new_privs_off(p: &mut Plan<'_>) -> Result<(), String> {
    p.bundle.config["process"]["noNewPrivileges"] = json!(false);
    p.check("NoNewPrivs", Probe::NoNewPrivs, "0");
    Ok(())
}

fn cwd(p: &mut Plan<'_>) -> Result<(), String> {
    p.bundle.mkdir("/work/dir")?;
    p.bundle.config["process"]["cwd"] = json!("/work/dir");
    p.check("cwd", Probe::Cwd, "/work/dir");
    Ok(())
}

fn env(p: &mut Plan<'_>) -> Result<(), String> {
    p.bundle.config["process"]["env"] = json!([
        "PATH=/bin",
        "CONF_PLAIN=plain",
        "CONF_SPACES=a b  c",
        "CONF_EQUALS=k=v=w",
        "CONF_EMPTY="
    ]);
    for (name, value) in [
        ("PATH", "/bin"),
        ("CONF_PLAIN", "plain"),
        ("CONF_SPACES", "a b  c"),
        ("CONF_EQUALS", "k=v=w"),
        ("CONF_EMPTY", ""),
        ("CONF_ABSENT", "<unset>"),
    ] {
        p.check(
            format!("env {name}"),
            Probe::Env { name: name.into() },
            value,
        );
    }
    Ok(())
}

fn masked(p: &mut Plan<'_>, path: &str, expect: &str) {
    p.check(
        format!("{path} {expect}"),
        Probe::Masked { path: path.into() },
        expect,
    );
}

fn masked_paths(p: &mut Plan<'_>) -> Result<(), String> {
    p.bundle.write("/conf/secret-file", "secret\n")?;
    p.bundle.write("/conf/secret-dir/inner", "secret\n")?;
    p.bundle.write("/conf/visible", "visible\n")?;
    let mut list = vec![
        "/conf/secret-file".to_string(),
        "/conf/secret-dir".to_string(),
        "/conf/does-not-exist".to_string(),
    ];
    masked(p, "/conf/secret-file", "masked file");
    masked(p, "/conf/secret-dir", "masked dir");
    masked(p, "/conf/does-not-exist", "missing");
    masked(p, "/conf/visible", "visible");
    // The kernel's files: masked as the host has them (the container's /proc and /sys are of
    // the same kernel). One that is missing here must not stop the container.
    for path in [
        "/proc/keys",
        "/proc/timer_list",
        "/proc/acpi",
        "/sys/firmware",
        "/proc/kcore",
    ] {
        list.push(path.to_string());
        match fs::metadata(path) {
            Ok(m) if m.is_dir() => masked(p, path, "masked dir"),
            Ok(_) => masked(p, path, "masked file"),
            Err(_) => masked(p, path, "missing"),
        }
    }
    p.bundle.config["linux"]["maskedPaths"] = json!(list);
    Ok(())
}

fn readonly_paths(p: &mut Plan<'_>) -> Result<(), String> {
    p.bundle.mkdir("/conf/ro-dir")?;
    p.bundle.mkdir("/conf/rw-dir")?;
    p.bundle.write("/conf/ro-file", "x\n")?;
    p.bundle.config["linux"]["readonlyPaths"] = json!([
        "/proc/sys",
        "/proc/sysrq-trigger",
        "/conf/ro-dir",
        "/conf/ro-file"
    ]);
    writable(p, "/proc/sys/kernel/hostname", "read-only");
    if Path::new("/proc/sysrq-trigger").exists() {
        writable(p, "/proc/sysrq-trigger", "read-only");
    } else {
        p.skip(
            "/proc/sysrq-trigger read-only",
            "this kernel has no /proc/sysrq-trigger",
        );
    }
    writable(p, "/conf/ro-dir", "read-only");
    writable(p, "/conf/ro-file", "read-only");
    writable(p, "/conf/rw-dir", "writable");
    mount_opt(p, "/conf/ro-dir", "ro", true);
    Ok(())
}

fn sysctl(p: &mut Plan<'_>) -> Result<(), String> {
    let values = [
        ("net.ipv4.ip_forward", "1"),
        ("kernel.shm_rmid_forced", "1"),
    ];
    let mut map = serde_json::Map::new();
    for (key, value) in values {
        let host_path = format!("/proc/sys/{}", key.replace('.', "/"));
        if !Path::new(&host_path).exists() {
            p.skip(key, format!("this kernel has no {host_path}"));
            continue;
        }
        map.insert(key.to_string(), json!(value));
        p.check(key, Probe::Sysctl { key: key.into() }, value);
    }
    p.bundle.config["linux"]["sysctl"] = serde_json::Value::Object(map);
    Ok(())
}

fn oom_score_adj(p: &mut Plan<'_>) -> Result<(), String> {
    // Lowering the score below the caller's needs CAP_SYS_RESOURCE: only raise it.
    let own: i64 = fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let want = (own.max(0) + 123).min(1000);
    p.bundle.config["process"]["oomScoreAdj"] = json!(want);
    p.check("oom_score_adj", Probe::OomScoreAdj, want.to_string());
    Ok(())
}
