//! Pulling through berth-image's registry client, with progress on the terminal.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use berth_engine::{PullPolicy, Store};
use berth_image::images::ImageRecord;
use berth_image::registry::{Platform, Progress};
use berth_image::Digest;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

pub fn platform(p: Option<&str>) -> Result<Platform> {
    match p {
        None => Ok(Platform::host()),
        Some(s) => Platform::parse(s).map_err(|e| anyhow::anyhow!("--platform: {e}")),
    }
}

/// Progress as one bar per layer on a terminal, plain lines otherwise, nothing when quiet.
pub struct Reporter {
    quiet: bool,
    bars: Option<MultiProgress>,
    layers: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Reporter {
    pub fn new(quiet: bool) -> Reporter {
        let bars = (!quiet && std::io::stderr().is_terminal()).then(MultiProgress::new);
        Reporter {
            quiet,
            bars,
            layers: Mutex::new(HashMap::new()),
        }
    }
}

fn short(d: &Digest) -> &str {
    &d.hex()[..12.min(d.hex().len())]
}

impl Progress for Reporter {
    fn layer_start(&self, digest: &Digest, size: u64, resumed_from: u64) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some(m) => {
                let pb = m.add(ProgressBar::new(size));
                pb.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                pb.set_prefix(format!("blob {}", short(digest)));
                pb.set_position(resumed_from);
                if let Ok(mut l) = self.layers.lock() {
                    l.insert(digest.clone(), pb);
                }
            }
            None if resumed_from > 0 => eprintln!(
                "Copying blob {} ({size} bytes, resuming at {resumed_from})",
                short(digest)
            ),
            None => eprintln!("Copying blob {} ({size} bytes)", short(digest)),
        }
    }

    fn layer_bytes(&self, digest: &Digest, total_so_far: u64) {
        if let Ok(l) = self.layers.lock() {
            if let Some(pb) = l.get(digest) {
                pb.set_position(total_so_far);
            }
        }
    }

    fn layer_done(&self, digest: &Digest, already_present: bool) {
        if self.quiet {
            return;
        }
        let pb = self.layers.lock().ok().and_then(|mut l| l.remove(digest));
        match pb {
            Some(pb) => pb.finish_with_message("done"),
            None if already_present => {
                eprintln!("Copying blob {} skipped: already exists", short(digest))
            }
            None => eprintln!("Copying blob {} done", short(digest)),
        }
    }

    fn note(&self, message: &str) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some(m) => {
                let _ = m.println(message);
            }
            None => eprintln!("{message}"),
        }
    }
}

/// Pulls `name` into the stores, records and unpacks it, with progress on stderr.
pub fn pull(s: &Store, name: &str, plat: Option<&str>, quiet: bool) -> Result<ImageRecord> {
    let reporter = Arc::new(Reporter::new(quiet));
    let (record, unpacked) = s.pull(name, Some(platform(plat)?), None, reporter.clone())?;
    if !quiet && unpacked > 0 {
        reporter.note(&format!("Unpacked {unpacked} layer(s)"));
    }
    Ok(record)
}

/// The image to run: local (or built-in), else pulled, as `policy` (missing, always,
/// never) says.
pub fn ensure_image(
    s: &Store,
    name: &str,
    policy: &str,
    plat: Option<&str>,
) -> Result<ImageRecord> {
    let policy: PullPolicy = policy
        .parse()
        .map_err(|_| anyhow::anyhow!("--pull {policy:?}: use missing, always or never"))?;
    match policy {
        PullPolicy::Missing => match s.find_local(name)? {
            Some(img) => Ok(img),
            None => pull(s, name, plat, false),
        },
        PullPolicy::Always => pull(s, name, plat, false),
        PullPolicy::Never => Ok(s.image(name)?),
    }
}
