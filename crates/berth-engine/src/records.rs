//! Container records: what a front end knows of each container beyond the runtime's state.
//!
//! ```text
//! <dir>/<id>/record.json   the record, replaced atomically (temp file, fsync, rename)
//! <dir>/.lock              taken while a record is created, so two cannot take one name
//! ```
//! Each container's directory also holds what its front end keeps for it (bundle, logs,
//! /etc files, volumes); removing the record removes the directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use berth_image::Digest;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::{io_ctx, Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    pub image_id: Digest,
    pub command: Vec<String>,
    /// Seconds since the epoch.
    pub created: u64,
    pub stop_signal: Option<String>,
    pub auto_remove: bool,
    pub detached: bool,
    pub exit_code: Option<i32>,
    pub finished: Option<u64>,
    /// "vm" for a container in a VM of its own (docs/vm.md); absent for a process one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
}

/// The directory of container records.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn open(dir: &Path) -> Result<Records> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_ctx(format!("create {}", dir.display())))?;
        Ok(Records {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory of container `id`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Serialises record creation (names are unique).
    pub fn lock(&self) -> Result<Flock<File>> {
        let p = self.dir.join(".lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&p)
            .map_err(io_ctx(format!("open {}", p.display())))?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| Error::Io {
            context: format!("lock {}", p.display()),
            source: e.into(),
        })
    }

    /// Creates the directory and first record of a new container; fails when its name is
    /// taken. Holds the lock throughout.
    pub fn create(&self, r: &Record) -> Result<()> {
        let _lock = self.lock()?;
        if self.list()?.iter().any(|o| o.name == r.name) {
            return Err(Error::NameTaken(r.name.clone()));
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(self.dir(&r.id))
            .map_err(io_ctx(format!(
                "container {}: create its directory",
                r.name
            )))?;
        self.save_locked(r)
    }

    /// Writes a container's record. Under the lock, so that it cannot interleave with
    /// [`Records::remove`] (a detached container's monitor records the exit while `rm -f`
    /// removes the directory: a record written in the middle left the directory not empty).
    pub fn save(&self, r: &Record) -> Result<()> {
        let _lock = self.lock()?;
        self.save_locked(r)
    }

    fn save_locked(&self, r: &Record) -> Result<()> {
        let dir = self.dir(&r.id);
        let data = serde_json::to_vec_pretty(r).expect("records serialize");
        write_atomic(&dir.join("record.json"), &data)
            .map_err(io_ctx(format!("container {}: write its record", r.name)))
    }

    pub fn load(&self, id: &str) -> Result<Record> {
        let p = self.dir(id).join("record.json");
        let data = fs::read(&p).map_err(io_ctx(format!("read {}", p.display())))?;
        serde_json::from_slice(&data).map_err(|e| Error::Parse {
            path: p,
            reason: e.to_string(),
        })
    }

    /// Every readable record, newest first.
    pub fn list(&self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.dir).map_err(io_ctx(format!("read {}", self.dir.display())))?;
        for e in rd {
            let e = e.map_err(io_ctx(format!("read {}", self.dir.display())))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if let Ok(r) = self.load(&name) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// By name, full ID, or unique ID prefix.
    pub fn find(&self, query: &str) -> Result<Record> {
        let all = self.list()?;
        if let Some(r) = all.iter().find(|r| r.name == query || r.id == query) {
            return Ok(r.clone());
        }
        let m: Vec<&Record> = all.iter().filter(|r| r.id.starts_with(query)).collect();
        match m.len() {
            1 => Ok(m[0].clone()),
            0 => Err(Error::ContainerNotFound(query.to_string())),
            count => Err(Error::AmbiguousContainer {
                query: query.to_string(),
                count,
            }),
        }
    }

    /// Removes a container's directory and record; gone already is fine.
    pub fn remove(&self, id: &str) -> Result<()> {
        let _lock = self.lock()?;
        let d = self.dir(id);
        match fs::remove_dir_all(&d) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_ctx(format!("remove {}", d.display()))(e)),
        }
    }
}

/// Temp file (mode 0600, never through a link), fsync, rename: a crash leaves the old
/// file or the new one, never half of one.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str, created: u64) -> Record {
        Record {
            id: id.into(),
            name: name.into(),
            image: "busybox".into(),
            image_id: format!("sha256:{}", "a".repeat(64)).parse().unwrap(),
            command: vec!["sh".into()],
            created,
            stop_signal: None,
            auto_remove: false,
            detached: true,
            exit_code: None,
            finished: None,
            isolation: None,
        }
    }

    #[test]
    fn names_are_unique_and_lookups_take_name_id_or_unique_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Records::open(&tmp.path().join("containers")).unwrap();
        r.create(&record("abc123", "web", 1)).unwrap();
        r.create(&record("abd456", "db", 2)).unwrap();
        assert!(matches!(
            r.create(&record("ffff", "web", 3)),
            Err(Error::NameTaken(n)) if n == "web"
        ));
        assert!(
            !r.dir("ffff").exists(),
            "a refused create leaves no directory"
        );
        assert_eq!(r.find("web").unwrap().id, "abc123");
        assert_eq!(r.find("abd456").unwrap().name, "db");
        assert_eq!(r.find("abc").unwrap().name, "web");
        assert!(matches!(
            r.find("ab"),
            Err(Error::AmbiguousContainer { count: 2, .. })
        ));
        assert!(matches!(r.find("zz"), Err(Error::ContainerNotFound(_))));
        let names: Vec<String> = r.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["db", "web"], "newest first");
        r.remove("abc123").unwrap();
        r.remove("abc123").unwrap();
        assert!(matches!(r.find("web"), Err(Error::ContainerNotFound(_))));
    }

    #[test]
    fn a_save_replaces_the_record_whole_and_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Records::open(tmp.path()).unwrap();
        let mut rec = record("c1", "one", 1);
        r.create(&rec).unwrap();
        rec.exit_code = Some(3);
        r.save(&rec).unwrap();
        assert_eq!(r.load("c1").unwrap().exit_code, Some(3));
        let files: Vec<_> = fs::read_dir(r.dir("c1"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, ["record.json"]);
    }
}
