//! Bundles: a busybox rootfs with the checker in it, and a config.json every case edits.
//!
//! The rootfs is made the way tests/support/busybox-rootfs.sh makes one: the host's static
//! busybox, one symlink per applet, the usual mount points and a small /etc/passwd and
//! /etc/group. It is built once per run as a template and copied for every bundle, so no
//! container can change what another one sees.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::runtime::run_bounded;

/// Where the checker is inside every rootfs, and its expectations file.
pub const CHECKER_IN_ROOTFS: &str = "/berth-check";
pub const EXPECT_IN_ROOTFS: &str = "/berth-expect.json";

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      user:x:1000:1000:user:/tmp:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/:/bin/false\n";
const GROUP: &str = "root:x:0:\ntty:x:5:\nuser:x:1000:\nextra1:x:2000:\nextra2:x:3000:\n\
                     nogroup:x:65534:\n";
const DIRS: &[&str] = &[
    "bin", "dev", "proc", "sys", "etc", "tmp", "run", "root", "mnt",
];

/// A rootfs built once, copied into every bundle.
pub struct Template {
    dir: PathBuf,
}

impl Template {
    /// Builds the template in `dir` from `busybox` (which must be static) and `checker`.
    pub fn build(dir: &Path, busybox: &Path, checker: &Path) -> Result<Template, String> {
        if !is_static_elf(busybox)? {
            return Err(format!(
                "{} is dynamically linked; a static busybox is needed (busybox-static)",
                busybox.display()
            ));
        }
        for d in DIRS {
            fs::create_dir_all(dir.join(d))
                .map_err(|e| format!("cannot create {}: {e}", dir.join(d).display()))?;
        }
        set_mode(dir, 0o755)?;
        set_mode(&dir.join("tmp"), 0o1777)?;
        copy_file(busybox, &dir.join("bin/busybox"))?;
        let mut cmd = Command::new(busybox);
        cmd.arg("--list");
        let listed = run_bounded(
            cmd,
            "`busybox --list`",
            &dir.with_extension("applets"),
            Duration::from_secs(30),
        )?;
        if !listed.ok() {
            return Err(format!("`busybox --list` failed: {}", listed.summary()));
        }
        for applet in listed.stdout.lines().map(str::trim) {
            if applet.is_empty() || applet == "busybox" || applet.contains('/') {
                continue;
            }
            let link = dir.join("bin").join(applet);
            symlink("busybox", &link)
                .map_err(|e| format!("cannot link {}: {e}", link.display()))?;
        }
        write(&dir.join("etc/passwd"), PASSWD)?;
        write(&dir.join("etc/group"), GROUP)?;
        let inside = dir.join(CHECKER_IN_ROOTFS.trim_start_matches('/'));
        copy_file(checker, &inside)?;
        set_mode(&inside, 0o755)?;
        Ok(Template {
            dir: dir.to_path_buf(),
        })
    }

    /// Copies the template to `dest` (which must not exist).
    pub fn copy_to(&self, dest: &Path) -> Result<(), String> {
        copy_tree(&self.dir, dest)
    }
}

/// A bundle directory: `config.json` and `rootfs/`.
pub struct Bundle {
    pub dir: PathBuf,
    pub config: Value,
}

impl Bundle {
    /// A new bundle in `dir` with a copy of the template and the base config running `args`.
    pub fn new(template: &Template, dir: &Path, args: &[&str]) -> Result<Bundle, String> {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        set_mode(dir, 0o755)?;
        template.copy_to(&dir.join("rootfs"))?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            config: base_config(args),
        })
    }

    /// A path inside the rootfs, on the host.
    pub fn rootfs_path(&self, inside: &str) -> PathBuf {
        self.dir.join("rootfs").join(inside.trim_start_matches('/'))
    }

    /// Creates a directory in the rootfs (mode 0755).
    pub fn mkdir(&self, inside: &str) -> Result<(), String> {
        let p = self.rootfs_path(inside);
        fs::create_dir_all(&p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
        set_mode(&p, 0o755)
    }

    /// Writes a file in the rootfs (mode 0644), creating its directory.
    pub fn write(&self, inside: &str, content: &str) -> Result<(), String> {
        let p = self.rootfs_path(inside);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        write(&p, content)?;
        set_mode(&p, 0o644)
    }

    pub fn save(&self) -> Result<(), String> {
        let text = serde_json::to_string_pretty(&self.config)
            .map_err(|e| format!("cannot serialise config.json: {e}"))?;
        write(&self.dir.join("config.json"), &text)
    }

    /// Removes the namespace of `typ` from `linux.namespaces`.
    pub fn remove_namespace(&mut self, typ: &str) {
        if let Some(list) = self.config["linux"]["namespaces"].as_array_mut() {
            list.retain(|n| n["type"] != typ);
        }
    }

    /// Adds (or replaces) the namespace of `typ`, joined at `path` if given.
    pub fn set_namespace(&mut self, typ: &str, path: Option<&str>) {
        self.remove_namespace(typ);
        let entry = match path {
            Some(p) => json!({"type": typ, "path": p}),
            None => json!({"type": typ}),
        };
        if let Some(list) = self.config["linux"]["namespaces"].as_array_mut() {
            list.push(entry);
        }
    }

    /// Appends a mount.
    pub fn add_mount(&mut self, mount: Value) {
        if let Some(list) = self.config["mounts"].as_array_mut() {
            list.push(mount);
        }
    }

    /// Removes every mount of type `typ`.
    pub fn remove_mounts_of_type(&mut self, typ: &str) {
        if let Some(list) = self.config["mounts"].as_array_mut() {
            list.retain(|m| m["type"] != typ);
        }
    }
}

/// The base config.json: runc's `spec` defaults (the same mounts, namespaces, masked and
/// read-only paths and capabilities), ociVersion 1.0.2 so that every runtime accepts it,
/// no terminal, a writable rootfs, and `args` as the process.
pub fn base_config(args: &[&str]) -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "berth-conformance",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                           {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"]
        }
    })
}

/// Whether an ELF file has no program interpreter (PT_INTERP), i.e. runs without ld.so.
pub fn is_static_elf(path: &Path) -> Result<bool, String> {
    let mut head = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut head))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bad = || format!("{} is not a 64-bit ELF executable", path.display());
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 {
        return Err(bad());
    }
    let little = head[5] == 1;
    let u16_at = |o: usize| {
        let b = [head[o], head[o + 1]];
        if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    };
    let u32_at = |o: usize| {
        let b = [head[o], head[o + 1], head[o + 2], head[o + 3]];
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[o..o + 8]);
        if little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        }
    };
    let phoff = usize::try_from(u64_at(32)).map_err(|_| bad())?;
    let phentsize = usize::from(u16_at(54));
    let phnum = usize::from(u16_at(56));
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        if at + 4 > head.len() {
            return Err(bad());
        }
        if u32_at(at) == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

fn copy_tree(src: &Path, dest: &Path) -> Result<(), String> {
    let meta =
        fs::symlink_metadata(src).map_err(|e| format!("cannot stat {}: {e}", src.display()))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target =
            fs::read_link(src).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
        symlink(&target, dest).map_err(|e| format!("cannot link {}: {e}", dest.display()))
    } else if ft.is_dir() {
        fs::create_dir(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        let entries =
            fs::read_dir(src).map_err(|e| format!("cannot list {}: {e}", src.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list {}: {e}", src.display()))?;
            copy_tree(&entry.path(), &dest.join(entry.file_name()))?;
        }
        set_mode(dest, meta.permissions().mode())
    } else {
        copy_file(src, dest)
    }
}

fn copy_file(src: &Path, dest: &Path) -> Result<(), String> {
    fs::copy(src, dest)
        .map(drop)
        .map_err(|e| format!("cannot copy {} to {}: {e}", src.display(), dest.display()))
}

fn write(path: &Path, content: &str) -> Result<(), String> {
    fs::write(path, content).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_interpreter_is_found() {
        // The test binary itself is dynamically linked (no crt-static for tests).
        let me = std::env::current_exe().unwrap();
        assert_eq!(is_static_elf(&me), Ok(false));
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("script");
        fs::write(&text, "#!/bin/sh\n").unwrap();
        assert!(is_static_elf(&text).is_err());
    }

    #[test]
    fn base_config_asks_for_what_every_runtime_accepts() {
        let c = base_config(&["/berth-check", "/x.json"]);
        assert_eq!(c["ociVersion"], "1.0.2");
        assert_eq!(c["process"]["terminal"], false);
        assert_eq!(c["process"]["args"][0], "/berth-check");
        assert_eq!(c["linux"]["namespaces"].as_array().unwrap().len(), 6);
    }
}
