//! Image layers as guest disks: one read-only erofs image per unpacked layer, made with
//! mkfs.erofs (erofs-utils) from the snapshotter's layer directory and cached by chain ID.
//! The directory holds overlay whiteouts (0/0 character devices, `trusted.overlay.opaque`),
//! which erofs keeps, so the guest's overlayfs stacks the images as the host's stacks the
//! directories.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_image::digest::Digest;

use crate::Error;

/// The erofs images of layers, in one directory: `<chain-id hex>.erofs`.
#[derive(Debug, Clone)]
pub struct LayerImages {
    dir: PathBuf,
}

impl LayerImages {
    pub fn new(dir: impl Into<PathBuf>) -> LayerImages {
        LayerImages { dir: dir.into() }
    }

    pub fn path(&self, chain: &Digest) -> PathBuf {
        self.dir.join(format!("{}.erofs", chain.hex()))
    }

    /// The image of the layer `chain`, unpacked at `layer_dir`: made now if not cached.
    /// Two makers of one layer race harmlessly: each writes its own file and renames it.
    pub fn image(&self, chain: &Digest, layer_dir: &Path) -> Result<PathBuf, Error> {
        let path = self.path(chain);
        if path.is_file() {
            return Ok(path);
        }
        fs::create_dir_all(&self.dir)
            .map_err(|e| Error::new(format!("create {}: {e}", self.dir.display())))?;
        let tmp = self
            .dir
            .join(format!(".{}.{}.tmp", chain.hex(), std::process::id()));
        let made = (|| {
            let out = Command::new("mkfs.erofs")
                .arg("--quiet")
                .arg(&tmp)
                .arg(layer_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .map_err(|e| {
                    Error::new(if e.kind() == std::io::ErrorKind::NotFound {
                        "mkfs.erofs not found: install erofs-utils (VM mode makes a disk per layer with it)"
                            .to_string()
                    } else {
                        format!("run mkfs.erofs: {e}")
                    })
                })?;
            if !out.status.success() {
                let said = String::from_utf8_lossy(&out.stderr);
                return Err(Error::new(format!(
                    "layer {chain}: mkfs.erofs {} failed ({}): {}",
                    layer_dir.display(),
                    out.status,
                    said.trim()
                )));
            }
            fs::rename(&tmp, &path).map_err(|e| {
                Error::new(format!(
                    "rename {} to {}: {e}",
                    tmp.display(),
                    path.display()
                ))
            })
        })();
        if made.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        made.map(|_| path)
    }

    /// Removes the images of layers not in `keep`, and leftovers of interrupted makes.
    /// Returns how many files went.
    pub fn prune(&self, keep: &BTreeSet<Digest>) -> Result<usize, Error> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::new(format!("read {}: {e}", self.dir.display()))),
        };
        let keep: BTreeSet<String> = keep.iter().map(|d| format!("{}.erofs", d.hex())).collect();
        let mut removed = 0;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale_tmp = name.starts_with('.') && name.ends_with(".tmp") && !tmp_is_live(&name);
            if (name.ends_with(".erofs") && !keep.contains(&name)) || stale_tmp {
                fs::remove_file(e.path())
                    .map_err(|err| Error::new(format!("remove {}: {err}", e.path().display())))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Whether the process that writes temporary file `.HEX.PID.tmp` still runs.
fn tmp_is_live(name: &str) -> bool {
    name.trim_end_matches(".tmp")
        .rsplit('.')
        .next()
        .and_then(|p| p.parse::<i32>().ok())
        .is_some_and(|pid| pid > 0 && Path::new(&format!("/proc/{pid}")).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    #[test]
    fn prune_keeps_what_is_asked_and_live_makes() {
        let t = tempfile::tempdir().unwrap();
        let li = LayerImages::new(t.path());
        let (a, b) = (digest('a'), digest('b'));
        fs::write(li.path(&a), b"").unwrap();
        fs::write(li.path(&b), b"").unwrap();
        let live = t
            .path()
            .join(format!(".{}.{}.tmp", b.hex(), std::process::id()));
        let dead = t.path().join(format!(".{}.{}.tmp", b.hex(), i32::MAX));
        fs::write(&live, b"").unwrap();
        fs::write(&dead, b"").unwrap();
        let n = li.prune(&[a.clone()].into()).unwrap();
        assert_eq!(n, 2);
        assert!(li.path(&a).exists() && live.exists());
        assert!(!li.path(&b).exists() && !dead.exists());
    }

    #[test]
    fn a_failing_mkfs_leaves_nothing_and_names_the_layer() {
        if Command::new("mkfs.erofs").arg("--help").output().is_err() {
            eprintln!("SKIP a_failing_mkfs_leaves_nothing_and_names_the_layer: no mkfs.erofs");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let li = LayerImages::new(t.path().join("images"));
        let e = li
            .image(&digest('c'), &t.path().join("no-such-dir"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&digest('c').to_string()), "{e}");
        assert_eq!(fs::read_dir(t.path().join("images")).unwrap().count(), 0);
    }

    #[test]
    fn an_image_is_made_once() {
        if Command::new("mkfs.erofs").arg("--help").output().is_err() {
            eprintln!("SKIP an_image_is_made_once: no mkfs.erofs");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let layer = t.path().join("layer");
        fs::create_dir_all(layer.join("etc")).unwrap();
        fs::write(layer.join("etc/motd"), b"hi\n").unwrap();
        let li = LayerImages::new(t.path().join("images"));
        let p = li.image(&digest('d'), &layer).unwrap();
        let m1 = fs::metadata(&p).unwrap();
        assert!(m1.len() > 0);
        // erofs's superblock magic at 1024.
        let data = fs::read(&p).unwrap();
        assert_eq!(&data[1024..1028], &0xE0F5E1E2u32.to_le_bytes());
        let p2 = li.image(&digest('d'), &layer).unwrap();
        assert_eq!(p, p2);
        assert_eq!(
            fs::metadata(&p2).unwrap().modified().unwrap(),
            m1.modified().unwrap()
        );
    }
}
