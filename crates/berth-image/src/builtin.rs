//! The built-in image: a small root file system made on the spot from the host's static
//! busybox (Debian's busybox-static), so that Berth can run a container with no registry
//! and no network. Its layer is built deterministically (fixed owner and mtime), so one
//! busybox binary always gives the same image ID.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use oci_spec::image::ConfigBuilder;

use crate::build::{store_image, BuildError, LayerBuilder};
use crate::content::ContentStore;
use crate::FetchedImage;

/// The name the built-in image is stored under.
pub const NAME: &str = "localhost/berth-busybox:latest";

/// Where a static busybox is looked for, in order.
pub const BUSYBOX_PATHS: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

/// Why the built-in image cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum BuiltinError {
    #[error(
        "the built-in image needs a static busybox at {} (Debian: apt-get install busybox-static)",
        BUSYBOX_PATHS.join(" or ")
    )]
    NoBusybox,
    #[error("{path}: {cause}")]
    Busybox { path: PathBuf, cause: String },
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// True when `name` refers to the built-in image (`berth-busybox`, with or without
/// `localhost/` and `:latest`).
pub fn is_builtin(name: &str) -> bool {
    let n = name.strip_prefix("localhost/").unwrap_or(name);
    n == "berth-busybox" || n == "berth-busybox:latest"
}

/// The first static busybox found.
pub fn find_busybox() -> Result<PathBuf, BuiltinError> {
    for p in BUSYBOX_PATHS {
        let p = Path::new(p);
        if p.is_file() && is_static_elf(p).unwrap_or(false) {
            return Ok(p.to_path_buf());
        }
    }
    Err(BuiltinError::NoBusybox)
}

/// True for a 64-bit ELF with no program interpreter (PT_INTERP): it runs in an empty root.
fn is_static_elf(p: &Path) -> io::Result<bool> {
    let data = fs::read(p)?;
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return Ok(false);
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[o..o + 8]);
        u64::from_le_bytes(b) as usize
    };
    let (phoff, phentsize, phnum) = (u64_at(32), u16_at(54), u16_at(56));
    for i in 0..phnum {
        let o = phoff.saturating_add(i.saturating_mul(phentsize));
        if o + 4 > data.len() {
            return Ok(false);
        }
        if u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]) == 3 {
            return Ok(false);
        }
    }
    Ok(true)
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
user:x:1000:1000:user:/home/user:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\ndaemon:x:1:\nwheel:x:10:user\nuser:x:1000:\nnogroup:x:65534:\n";

/// The layer: busybox, a link per applet in /bin, account files and the usual directories.
pub fn layer(busybox: &Path) -> Result<Vec<u8>, BuiltinError> {
    let err = |cause: String| BuiltinError::Busybox {
        path: busybox.to_path_buf(),
        cause,
    };
    let bin = fs::read(busybox).map_err(|e| err(format!("read: {e}")))?;
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| err(format!("run --list: {e}")))?;
    if !out.status.success() {
        return Err(err(format!("--list failed: {}", out.status)));
    }
    let mut applets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| {
            !a.is_empty() && *a != "busybox" && a.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
        })
        .map(str::to_string)
        .collect();
    applets.sort();
    applets.dedup();
    let io = |e: io::Error| err(format!("build layer: {e}"));
    let mut l = LayerBuilder::new();
    for (d, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("home", 0o755),
        ("home/user", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("run", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("var", 0o755),
    ] {
        l.dir(d, mode).map_err(io)?;
    }
    l.file("bin/busybox", 0o755, &bin).map_err(io)?;
    for a in &applets {
        l.symlink(&format!("bin/{a}"), "busybox").map_err(io)?;
    }
    l.file_owned("home/user/.profile", 0o644, 1000, 1000, b"")
        .map_err(io)?;
    l.file("etc/passwd", 0o644, PASSWD.as_bytes()).map_err(io)?;
    l.file("etc/group", 0o644, GROUP.as_bytes()).map_err(io)?;
    l.file(
        "etc/os-release",
        0o644,
        b"NAME=\"Berth busybox\"\nID=berth-busybox\n",
    )
    .map_err(io)?;
    l.finish().map_err(io)
}

/// Builds the built-in image from `busybox` and stores it; returns it named [`NAME`].
pub fn build(content: &ContentStore, busybox: &Path) -> Result<FetchedImage, BuiltinError> {
    let layer = layer(busybox)?;
    let mut config = ConfigBuilder::default()
        .env(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ])
        .cmd(vec!["sh".to_string()])
        .working_dir("/")
        .build()
        .map_err(|e| BuildError::Spec(e.to_string()))?;
    config.set_labels(Some(
        [(
            "org.opencontainers.image.description".to_string(),
            "Berth's built-in image, made from the host's busybox-static".to_string(),
        )]
        .into_iter()
        .collect(),
    ));
    Ok(store_image(
        content,
        Some(NAME.to_string()),
        &[layer],
        config,
        host_architecture(),
    )?)
}

/// The host's architecture, as OCI names it.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "arm" => "arm",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for n in [
            "berth-busybox",
            "localhost/berth-busybox",
            "berth-busybox:latest",
            NAME,
        ] {
            assert!(is_builtin(n), "{n}");
        }
        for n in [
            "busybox",
            "localhost/berth-busybox:1",
            "docker.io/berth-busybox",
        ] {
            assert!(!is_builtin(n), "{n}");
        }
    }

    #[test]
    fn the_layer_is_deterministic_and_holds_applets() {
        let bb = find_busybox()
            .expect("a static busybox (busybox-static; scripts/install-deps.sh installs it)");
        let a = layer(&bb).unwrap();
        let b = layer(&bb).unwrap();
        assert_eq!(a, b, "same busybox, same bytes");
        let mut names = Vec::new();
        let mut ar = tar::Archive::new(&a[..]);
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            names.push(e.path().unwrap().to_string_lossy().into_owned());
        }
        for n in ["bin/busybox", "bin/sh", "bin/ls", "etc/passwd", "tmp"] {
            assert!(
                names.iter().any(|x| x.trim_end_matches('/') == n),
                "{n} in {names:?}"
            );
        }
    }

    #[test]
    fn a_dynamic_binary_is_not_taken_for_busybox() {
        assert!(!is_static_elf(Path::new("/bin/ls")).unwrap());
        if let Ok(bb) = find_busybox() {
            assert!(is_static_elf(&bb).unwrap());
        }
    }
}
