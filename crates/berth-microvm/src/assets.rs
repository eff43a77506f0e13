//! What a guest boots: the kernel (from scripts/vm-kernel.sh's cache) and an initramfs made
//! of berth-agent (static, as /init) and the kernel's modules, built once per agent and
//! kernel and kept in a cache directory.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use berth_vm::initramfs::Initramfs;
use berth_vm::kernel::GuestKernel;
use sha2::{Digest as _, Sha256};

use crate::Error;

/// Where berth-agent is looked for when `BERTH_AGENT` is not set, in order.
pub const AGENT_PATHS: &[&str] = &[
    "/usr/local/lib/berth/berth-agent",
    "/usr/lib/berth/berth-agent",
];

/// The agent binary: `BERTH_AGENT`, else the first of [`AGENT_PATHS`] that exists. It must
/// be a static executable (the initramfs has no libc).
pub fn agent_binary() -> Result<PathBuf, Error> {
    let path = match std::env::var_os("BERTH_AGENT") {
        Some(p) => PathBuf::from(p),
        None => AGENT_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| {
                Error::new(format!(
                    "no berth-agent for the VM guest in {}: build and install it with \
                     scripts/build-agent.sh (or set BERTH_AGENT)",
                    AGENT_PATHS.join(" or ")
                ))
            })?,
    };
    check_static(&path)?;
    Ok(path)
}

/// Refuses a file that is not an x86-64 ELF executable without a program interpreter.
pub fn check_static(path: &Path) -> Result<(), Error> {
    let mut head = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut head))
        .map_err(|e| Error::new(format!("berth-agent {}: {e}", path.display())))?;
    match elf_interp(&head) {
        Err(why) => Err(Error::new(format!("berth-agent {}: {why}", path.display()))),
        Ok(true) => Err(Error::new(format!(
            "berth-agent {} is linked dynamically, and the guest has no libc: build it with \
             scripts/build-agent.sh",
            path.display()
        ))),
        Ok(false) => Ok(()),
    }
}

/// Whether an ELF64 little-endian x86-64 executable has a PT_INTERP program header.
fn elf_interp(b: &[u8]) -> Result<bool, String> {
    if b.len() < 64 || &b[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if b[4] != 2 || b[5] != 1 || u16::from_le_bytes([b[18], b[19]]) != 62 {
        return Err("not an x86-64 ELF64 little-endian file".into());
    }
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64_at(32) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    if phentsize < 56 {
        return Err("program header entries too short".into());
    }
    for i in 0..phnum {
        let o = phoff
            .checked_add(i * phentsize)
            .filter(|o| o.checked_add(4).is_some_and(|end| end <= b.len()))
            .ok_or("program headers beyond the first 64 KiB")?;
        if u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes")) == 3 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The modules every guest loads at boot: the transports, the control port, the layer
/// disks and the file systems stacked on them.
pub const BOOT_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "erofs",
    "overlay",
];

/// Modules loaded only when a container has volumes (virtio-fs), and not already at boot.
pub const VOLUME_MODULES: &[&str] = &["virtiofs"];

/// The initramfs for `agent` on `kernel`, from `cache` (made there once, atomically):
/// `/init` is the agent, the kernel's modules are under /lib/modules/<version>,
/// /etc/modules lists those of [`BOOT_MODULES`] in load order, and /etc/modules.volumes
/// those of [`VOLUME_MODULES`] that boot does not load (the agent keeps them in memory and
/// loads them at the first volume).
pub fn initramfs(cache: &Path, kernel: &GuestKernel, agent: &Path) -> Result<PathBuf, Error> {
    let kerr = |e: berth_vm::kernel::KernelError| {
        Error::new(format!("guest kernel {}: {e}", kernel.dir().display()))
    };
    let boot = kernel.module_load_order_of(BOOT_MODULES).map_err(kerr)?;
    let volumes: Vec<PathBuf> = kernel
        .module_load_order_of(VOLUME_MODULES)
        .map_err(kerr)?
        .into_iter()
        .filter(|m| !boot.contains(m))
        .collect();
    let order: Vec<PathBuf> = boot.iter().chain(&volumes).cloned().collect();
    let agent_bytes = fs::read(agent)
        .map_err(|e| Error::new(format!("read berth-agent {}: {e}", agent.display())))?;
    let mut h = Sha256::new();
    h.update(&agent_bytes);
    h.update(kernel.version().as_bytes());
    for m in &order {
        h.update(m.as_os_str().as_encoded_bytes());
        h.update(b"\n");
    }
    h.update(format!("boot={}", boot.len()).as_bytes());
    let key: String = h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = cache.join(format!("initramfs-{key}.gz"));
    if path.is_file() {
        return Ok(path);
    }
    fs::create_dir_all(cache)
        .map_err(|e| Error::new(format!("create {}: {e}", cache.display())))?;
    let mut i = Initramfs::new();
    let err = |e: berth_vm::initramfs::InitramfsError| Error::new(format!("initramfs: {e}"));
    i.console_and_null().map_err(err)?;
    i.bytes("init", 0o755, agent_bytes).map_err(err)?;
    let mods = format!("lib/modules/{}", kernel.version());
    for rel in &order {
        i.file(
            &format!("{mods}/{}", rel.display()),
            0o644,
            kernel.modules_dir().join(rel),
        )
        .map_err(err)?;
    }
    let list = |ms: &[PathBuf]| -> String {
        let v: Vec<String> = ms.iter().map(|p| p.display().to_string()).collect();
        v.join("\n")
    };
    i.bytes("etc/modules", 0o644, list(&boot)).map_err(err)?;
    i.bytes("etc/modules.volumes", 0o644, list(&volumes))
        .map_err(err)?;
    let tmp = cache.join(format!(".initramfs-{key}.{}.tmp", std::process::id()));
    let written = (|| -> Result<(), Error> {
        let f = fs::File::create(&tmp)
            .map_err(|e| Error::new(format!("create {}: {e}", tmp.display())))?;
        let mut f = i.write_gz(f).map_err(err)?;
        f.flush()
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::new(format!("write {}: {e}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(|e| {
            Error::new(format!(
                "rename {} to {}: {e}",
                tmp.display(),
                path.display()
            ))
        })
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written.map(|_| path);
    }
    // Those of other agents or kernels: a VM that booted one has it in guest memory.
    if let Ok(rd) = fs::read_dir(cache) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("initramfs-") && n.ends_with(".gz") && e.path() != path {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_is_dynamic_and_a_script_is_not_elf() {
        let me = std::env::current_exe().unwrap();
        let e = check_static(&me).unwrap_err().to_string();
        assert!(e.contains("linked dynamically"), "{e}");
        let t = tempfile::tempdir().unwrap();
        let script = t.path().join("agent");
        fs::write(&script, "#!/bin/sh\n".repeat(10)).unwrap();
        let e = check_static(&script).unwrap_err().to_string();
        assert!(e.contains("not an ELF file"), "{e}");
    }

    #[test]
    fn a_truncated_elf_is_refused_without_panicking() {
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        for n in [0, 4, 20, 63, 64, 100] {
            let _ = elf_interp(&me[..n]);
        }
        let mut bad = me[..64].to_vec();
        bad[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(elf_interp(&bad).is_err());
    }
}
