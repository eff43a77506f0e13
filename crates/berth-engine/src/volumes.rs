//! The image's volumes (its `Volumes`): each gets a directory of the container's own,
//! starting with what the image has at that path (owner and mode included), as docker's
//! and containerd's default "copy" mode makes them.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;

use crate::{io_ctx, Error, Result};

/// Makes `<dir>/volumes/<n>` for each volume of `image` that `skip` does not claim (a
/// path the user mounts something else on), copied up from `rootfs`; returns (container
/// path, host directory) pairs.
pub fn image_volumes(
    image: &ImageConfiguration,
    rootfs: &Path,
    dir: &Path,
    skip: impl Fn(&str) -> bool,
) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for (n, v) in berth_image::runconfig::volumes(image).iter().enumerate() {
        if skip(v) {
            continue;
        }
        let host = dir.join("volumes").join(n.to_string());
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&host)
            .map_err(io_ctx(format!("create {}", host.display())))?;
        berth_image::copyup::copy_up(rootfs, v, &host).map_err(|e| Error::Volume {
            volume: v.clone(),
            reason: e.to_string(),
        })?;
        out.push((v.clone(), host));
    }
    Ok(out)
}
