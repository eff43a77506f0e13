//! CheckpointContainer: a running container's processes dumped by CRIU (it keeps running,
//! as the kubelet's forensic checkpoint expects) into one tar archive at the location the
//! kubelet names, with the container's OCI config and record beside the images.

use std::fs;
use std::path::{Path, PathBuf};

use libberth::checkpoint::{CheckpointOptions, CriuCommon};

use super::{lock, Engine};
use crate::error::{Error, Result};

/// The archive's layout: CRIU's images, then what the container was made from.
const IMAGES: &str = "checkpoint";
const CONFIG: &str = "config.json";
const RECORD: &str = "container.json";

impl Engine {
    pub fn checkpoint_container(&self, id: &str, location: &str) -> Result<()> {
        let (id, _) = self.running_in(id, "checkpoint")?;
        let id = id.as_str();
        let location = Path::new(location);
        if !location.is_absolute() || location.file_name().is_none() {
            return Err(Error::InvalidArgument(format!(
                "container {id}: checkpoint location {location:?}: must be an absolute file path"
            )));
        }
        let record = lock(&*self.container(id)?).clone();
        let work = self
            .cfg
            .run_dir
            .join("checkpoints")
            .join(format!("{id}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&work);
        let r = self
            .dump(id, &record.runtime_handler, &work)
            .and_then(|()| {
                let record = serde_json::to_vec_pretty(&record)
                    .map_err(|e| Error::Internal(format!("container {id}: record: {e}")))?;
                let config = self.state.container_dir(id).join("bundle/config.json");
                write_archive(id, location, &work.join(IMAGES), &config, &record)
            });
        let _ = fs::remove_dir_all(&work);
        r
    }

    /// CRIU's dump of the running container into `work/checkpoint`, its logs in `work`.
    fn dump(&self, id: &str, handler: &str, work: &Path) -> Result<()> {
        let images = work.join(IMAGES);
        fs::create_dir_all(&images)
            .map_err(|e| Error::internal(format!("create {}", images.display()), e))?;
        match self.oci_binary(handler) {
            Some(bin) => {
                let (images, work) = (images.display().to_string(), work.display().to_string());
                bin.run(
                    id,
                    &[
                        "checkpoint",
                        "--leave-running",
                        "--image-path",
                        &images,
                        "--work-path",
                        &work,
                        id,
                    ],
                    b"",
                )
                .map(drop)
            }
            None => self
                .builtin_runtime()
                .checkpoint(&CheckpointOptions {
                    id: id.to_string(),
                    common: CriuCommon {
                        image_path: images,
                        work_path: Some(work.to_path_buf()),
                        ..Default::default()
                    },
                    leave_running: true,
                    ..Default::default()
                })
                .map_err(|e| {
                    Error::FailedPrecondition(format!("container {id}: checkpoint: {}", e.chain()))
                }),
        }
    }
}

/// Writes the archive beside `location` and renames it there, so that a failure leaves no
/// half-written file under the kubelet's name.
fn write_archive(
    id: &str,
    location: &Path,
    images: &Path,
    config: &Path,
    record: &[u8],
) -> Result<()> {
    let fail = |what: &str, e: std::io::Error| {
        Error::Internal(format!(
            "container {id}: checkpoint archive {}: {what}: {e}",
            location.display()
        ))
    };
    let dir = location.parent().unwrap_or(Path::new("/"));
    let tmp: PathBuf = dir.join(format!(
        ".{}.{}.tmp",
        location.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let mut tar = tar::Builder::new(file);
        tar.follow_symlinks(false);
        tar.append_dir_all(IMAGES, images)?;
        tar.append_path_with_name(config, CONFIG)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(record.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, RECORD, record)?;
        tar.into_inner()?.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(fail("write", e));
    }
    fs::rename(&tmp, location).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        fail("rename", e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_holds_images_config_and_record_and_nothing_half_written() {
        let d = tempfile::tempdir().unwrap();
        let images = d.path().join("imgs");
        fs::create_dir_all(&images).unwrap();
        fs::write(images.join("pages-1.img"), b"pages").unwrap();
        let config = d.path().join("config.json");
        fs::write(&config, b"{}").unwrap();
        let out = d.path().join("ckpt.tar");
        write_archive("c1", &out, &images, &config, b"{\"id\":\"c1\"}").unwrap();
        let mut names: Vec<String> = tar::Archive::new(fs::File::open(&out).unwrap())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert!(
            names.contains(&"checkpoint/pages-1.img".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"config.json".to_string()));
        assert!(names.contains(&"container.json".to_string()));
        // A location in a missing directory fails, naming it, and leaves nothing.
        let bad = d.path().join("no/such/dir/ckpt.tar");
        let e = write_archive("c1", &bad, &images, &config, b"{}").unwrap_err();
        assert!(e.to_string().contains("no/such/dir/ckpt.tar"), "{e}");
        let left: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 3, "{left:?}");
    }
}
