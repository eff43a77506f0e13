//! OCI image layouts built with umoci, for tests that load or push an image they made.
//! support/mod.rs includes this file; berthctl's cli tests include it alone with `#[path]`.

#![allow(dead_code)] // each test crate that includes this uses a part of it

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `cmd` and requires success; its stdout.
pub fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An OCI layout built with umoci from file trees, one layer per tree, in a directory of
/// its own (removed on drop).
pub struct Layout {
    pub dir: tempfile::TempDir,
}

impl Layout {
    /// A layout holding one empty image, `tag`. Fails the test when umoci is missing: CI
    /// installs it, so a missing one is a broken setup, not a reason to pass.
    pub fn new(tag: &str) -> Layout {
        if Command::new("umoci").arg("--version").output().is_err() {
            panic!("umoci is not installed (scripts/install-deps.sh installs it)");
        }
        let dir = tempfile::tempdir().unwrap();
        let l = Layout { dir };
        run(Command::new("umoci")
            .args(["init", "--layout"])
            .arg(l.path()));
        l.add_image(tag);
        l
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("oci")
    }

    /// Adds an empty image, `tag`.
    pub fn add_image(&self, tag: &str) {
        run(Command::new("umoci")
            .args(["new", "--image"])
            .arg(format!("{}:{tag}", self.path().display())));
    }

    /// Names the image `tag` `new_tag` too.
    pub fn tag(&self, tag: &str, new_tag: &str) {
        run(Command::new("umoci")
            .args(["tag", "--image"])
            .arg(format!("{}:{tag}", self.path().display()))
            .arg(new_tag));
    }

    /// Adds `src` (file or directory) at `dest` as a new layer.
    pub fn insert(&self, tag: &str, src: &Path, dest: &str) {
        run(Command::new("umoci")
            .args(["insert", "--image"])
            .arg(format!("{}:{tag}", self.path().display()))
            .arg(src)
            .arg(dest));
    }

    /// Adds a layer that removes `target` (a whiteout).
    pub fn insert_whiteout(&self, tag: &str, target: &str) {
        run(Command::new("umoci")
            .args(["insert", "--image"])
            .arg(format!("{}:{tag}", self.path().display()))
            .arg("--whiteout")
            .arg(target));
    }

    /// Adds `src` at `dest` as a new layer that hides what the layers below have there.
    pub fn insert_opaque(&self, tag: &str, src: &Path, dest: &str) {
        run(Command::new("umoci")
            .args(["insert", "--image"])
            .arg(format!("{}:{tag}", self.path().display()))
            .arg("--opaque")
            .arg(src)
            .arg(dest));
    }

    /// Adds a layer whose tar is `tar` (for whiteouts and hostile entries umoci would not write).
    pub fn raw_layer(&self, tag: &str, tar: &Path) {
        run(Command::new("umoci")
            .args(["raw", "add-layer", "--image"])
            .arg(format!("{}:{tag}", self.path().display()))
            .arg(tar));
    }

    /// Sets the image config of `tag`: `args` are umoci's `--config.*` (and the like) flags.
    pub fn config(&self, tag: &str, args: &[&str]) {
        run(Command::new("umoci")
            .args(["config", "--image"])
            .arg(format!("{}:{tag}", self.path().display()))
            .args(args));
    }
}
