//! A container's root file system in the guest: the image's layers arrive as read-only
//! block devices, each an erofs image of one unpacked layer (overlay whiteouts included),
//! found by their serial; the agent mounts each once and stacks them with overlayfs under a
//! writable directory of the container's own.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Where the agent finds devices and mounts layers (the guest's paths, or a test's).
#[derive(Debug, Clone)]
pub struct Paths {
    /// libberth's state root.
    pub state: PathBuf,
    /// One directory per container: bundle, rootfs, upper, work, files.
    pub containers: PathBuf,
    /// One mount point per layer, named by the layer's serial.
    pub layers: PathBuf,
    /// `/sys/block`: `vdX/serial` names each disk.
    pub sys_block: PathBuf,
    pub dev: PathBuf,
}

impl Paths {
    /// The guest's own paths (all under /run, a tmpfs, but /sys and /dev).
    pub fn guest() -> Paths {
        Paths {
            state: "/run/berth/state".into(),
            containers: "/run/berth/c".into(),
            layers: "/run/berth/layers".into(),
            sys_block: "/sys/block".into(),
            dev: "/dev".into(),
        }
    }
}

/// How long a disk may take to show up after boot (they are probed as the agent starts).
const DEVICE_WAIT: Duration = Duration::from_secs(20);

/// A serial as the host gives it: 1 to 20 of `[A-Za-z0-9_-]` (so it is a plain file name).
pub fn valid_serial(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 20
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The device node of the disk whose serial is `serial`, waiting for it to be probed.
pub fn device_by_serial(paths: &Paths, serial: &str) -> Result<PathBuf, String> {
    let deadline = Instant::now() + DEVICE_WAIT;
    loop {
        if let Ok(entries) = fs::read_dir(&paths.sys_block) {
            for e in entries.flatten() {
                let found = fs::read_to_string(e.path().join("serial")).unwrap_or_default();
                if found.trim_end() == serial {
                    let dev = paths.dev.join(e.file_name());
                    if dev.exists() {
                        return Ok(dev);
                    }
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no disk with serial {serial:?} in {} within {DEVICE_WAIT:?}",
                paths.sys_block.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The layers mounted so far, by serial: a pod's containers share them.
#[derive(Debug, Default)]
pub struct Layers {
    mounted: BTreeMap<String, PathBuf>,
}

impl Layers {
    /// Mounts the erofs on the disk with `serial` read-only (once) and returns where.
    pub fn mount(&mut self, paths: &Paths, serial: &str) -> Result<PathBuf, String> {
        if !valid_serial(serial) {
            return Err(format!(
                "layer serial {serial:?} is not 1 to 20 of [A-Za-z0-9_-]"
            ));
        }
        if let Some(p) = self.mounted.get(serial) {
            return Ok(p.clone());
        }
        let dev = device_by_serial(paths, serial)?;
        let target = paths.layers.join(serial);
        fs::create_dir_all(&target).map_err(|e| format!("create {}: {e}", target.display()))?;
        mount(
            Some(&dev),
            &target,
            Some("erofs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| {
            format!(
                "mount layer {serial} ({}) as erofs on {}: {e}",
                dev.display(),
                target.display()
            )
        })?;
        self.mounted.insert(serial.to_string(), target.clone());
        Ok(target)
    }
}

/// Stacks `lowers` (bottom first) under `dir/upper` at `dir/rootfs` with overlayfs. With no
/// lower layer at all, the rootfs is the writable directory alone.
pub fn mount_overlay(lowers: &[PathBuf], dir: &Path) -> Result<PathBuf, String> {
    let rootfs = dir.join("rootfs");
    let upper = dir.join("upper");
    let work = dir.join("work");
    for d in [&rootfs, &upper, &work] {
        fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
    }
    if lowers.is_empty() {
        // An image without layers (scratch): a bind of the writable directory.
        mount(
            Some(&upper),
            &rootfs,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind {} on {}: {e}", upper.display(), rootfs.display()))?;
        return Ok(rootfs);
    }
    // overlayfs lists lower directories top first. The paths are the agent's own
    // (/run/berth/layers/<serial>): no ':' or ',' can occur in them.
    let lower: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| format!("mount overlay on {}: {e}", rootfs.display()))?;
    Ok(rootfs)
}

/// The modules volumes need (fuse, virtiofs), read into memory before the initramfs went,
/// in load order; loaded at the first volume, so that guests without volumes skip them.
static VOLUME_MODULES: std::sync::Mutex<Option<Vec<Module>>> = std::sync::Mutex::new(None);

/// A kernel module: its path (for messages) and its bytes.
pub type Module = (String, Vec<u8>);

/// Keeps the volume modules for [`mount_volume`].
pub fn set_volume_modules(modules: Vec<Module>) {
    *VOLUME_MODULES.lock().unwrap_or_else(|p| p.into_inner()) = Some(modules);
}

/// Loads the kept volume modules, once.
fn load_volume_modules() -> Result<(), String> {
    let taken = VOLUME_MODULES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    for (name, image) in taken.unwrap_or_default() {
        // SAFETY: init_module reads `image.len()` bytes from a live buffer we own and a
        // NUL-terminated empty parameter string; it writes no memory of ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_init_module,
                image.as_ptr(),
                image.len(),
                c"".as_ptr(),
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!("load module {name}: {e}"));
            }
        }
    }
    Ok(())
}

/// Mounts the host directory shared with tag `tag` (virtio-fs) at `dir/volumes/TAG`.
pub fn mount_volume(dir: &Path, tag: &str) -> Result<PathBuf, String> {
    if !valid_serial(tag) {
        return Err(format!(
            "volume tag {tag:?} is not 1 to 20 of [A-Za-z0-9_-]"
        ));
    }
    load_volume_modules()?;
    let target = dir.join("volumes").join(tag);
    fs::create_dir_all(&target).map_err(|e| format!("create {}: {e}", target.display()))?;
    mount(
        Some(tag),
        &target,
        Some("virtiofs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| format!("mount volume {tag} (virtiofs) on {}: {e}", target.display()))?;
    Ok(target)
}

/// Unmounts a container's rootfs and volumes (detached if busy) and removes its directory.
pub fn remove_container_dir(dir: &Path) -> Result<(), String> {
    let mut targets = vec![dir.join("rootfs")];
    if let Ok(rd) = fs::read_dir(dir.join("volumes")) {
        targets.extend(rd.flatten().map(|e| e.path()));
    }
    for t in &targets {
        match umount2(t, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(format!("unmount {}: {e}", t.display())),
        }
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("remove {}: {e}", dir.display())),
    }
}

/// A name for a file of [`berth_agent_proto::Request::Create`]'s `files`: one plain path
/// component.
pub fn valid_file_name(n: &str) -> bool {
    !n.is_empty() && n != "." && n != ".." && !n.contains('/') && !n.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_and_file_names_are_plain() {
        assert!(valid_serial("berth-l0"));
        assert!(!valid_serial("../x"));
        assert!(!valid_serial(""));
        assert!(!valid_serial("a,b"));
        assert!(valid_file_name("hosts"));
        for bad in ["", ".", "..", "a/b", "/etc"] {
            assert!(!valid_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_disk_is_found_by_its_serial() {
        let t = tempfile::tempdir().unwrap();
        let paths = Paths {
            state: t.path().join("state"),
            containers: t.path().join("c"),
            layers: t.path().join("layers"),
            sys_block: t.path().join("sys"),
            dev: t.path().join("dev"),
        };
        for (name, serial) in [("vda", "other"), ("vdb", "berth-l0")] {
            fs::create_dir_all(paths.sys_block.join(name)).unwrap();
            fs::write(paths.sys_block.join(name).join("serial"), serial).unwrap();
            fs::create_dir_all(&paths.dev).unwrap();
            fs::write(paths.dev.join(name), b"").unwrap();
        }
        assert_eq!(
            device_by_serial(&paths, "berth-l0").unwrap(),
            paths.dev.join("vdb")
        );
    }
}
