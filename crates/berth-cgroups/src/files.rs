//! Reading and writing cgroup interface files, with the file and value in every error.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{CgroupError, Result};

/// The file listing a cgroup's processes, in both versions.
pub(crate) const PROCS: &str = "cgroup.procs";

/// Writes `value` to `path` with one `write(2)`, truncating as the kernel expects.
/// Cgroup files cannot be created, so a missing file is `NotFound`.
pub(crate) fn try_write(path: &Path, value: &str) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).truncate(true).open(path)?;
    file.write_all(value.as_bytes())
}

/// Writes `value` to `dir/file`.
pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    try_write(&path, value).map_err(|source| write_error(path, value, source))
}

/// The error for a failed write of `value` to `path`.
pub(crate) fn write_error(path: PathBuf, value: &str, source: io::Error) -> CgroupError {
    CgroupError::Write {
        path,
        value: value.to_string(),
        source,
    }
}

/// Performs `writes` in order with `write`. A write refused with `EINVAL` (often because
/// of the old value of a file written later, such as a CPU quota and its period) is
/// tried again once after all the others.
pub(crate) fn write_in_order_deferring_einval(
    writes: &[(&'static str, String)],
    mut write: impl FnMut(&str, &str) -> Result<()>,
) -> Result<()> {
    let mut deferred = Vec::new();
    for (file, value) in writes {
        match write(file, value) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && writes.len() > 1 => {
                deferred.push((file, value));
            }
            Err(e) => return Err(e),
        }
    }
    for (file, value) in deferred {
        write(file, value)?;
    }
    Ok(())
}

/// Reads `dir/file`, trimmed of surrounding white space.
pub(crate) fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().to_string()),
        Err(source) => Err(CgroupError::Read { path, source }),
    }
}

/// Reads `dir/file` as it is; `None` if the kernel does not provide the file.
pub(crate) fn read_if_present(dir: &Path, file: &str) -> Result<Option<String>> {
    let path = dir.join(file);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read { path, source }),
    }
}

/// Reads `dir/file` as a number. `max` reads as `None`.
pub(crate) fn read_number(dir: &Path, file: &str) -> Result<Option<u64>> {
    let text = read(dir, file)?;
    if text == "max" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| CgroupError::Parse {
        path: dir.join(file),
        content: text,
    })
}

/// Whether `dir/file` exists.
pub(crate) fn exists(dir: &Path, file: &str) -> bool {
    dir.join(file).exists()
}

/// `mkdir -p`.
pub(crate) fn create_dir_all(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|source| CgroupError::CreateDir {
        path: path.to_path_buf(),
        source,
    })
}

/// Lists the directories directly below `dir`; symbolic links are not followed.
fn sub_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let read_dir_error = |source| CgroupError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut dirs = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(dirs),
        Err(e) => return Err(read_dir_error(e)),
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(read_dir_error(e)),
        };
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => dirs.push(entry.path()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(read_dir_error(e)),
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// First pause between `rmdir` attempts on `EBUSY`; doubled each time up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// `rmdir`, retried on `EBUSY` until `deadline`. A directory already gone is fine.
fn remove_dir_retrying(path: &Path, deadline: Instant) -> Result<()> {
    let mut pause = FIRST_PAUSE;
    loop {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(pause);
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Err(source) => {
                return Err(CgroupError::RemoveDir {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Removes `dir` and every cgroup below it, deepest first.
pub(crate) fn remove_tree(dir: &Path, deadline: Instant) -> Result<()> {
    for child in sub_dirs(dir)? {
        remove_tree(&child, deadline)?;
    }
    remove_dir_retrying(dir, deadline)
}

/// Parses the pids in a `cgroup.procs` file.
fn parse_pids(path: &Path, text: &str, out: &mut Vec<i32>) -> Result<()> {
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let pid = line.parse().map_err(|_| CgroupError::Parse {
            path: path.to_path_buf(),
            content: line.to_string(),
        })?;
        out.push(pid);
    }
    Ok(())
}

/// Collects the processes of `dir` and of every cgroup below it. Cgroups that vanish
/// during the walk are skipped.
fn collect_pids(dir: &Path, out: &mut Vec<i32>) -> Result<()> {
    let path = dir.join(PROCS);
    match fs::read_to_string(&path) {
        Ok(text) => parse_pids(&path, &text, out)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(CgroupError::Read { path, source }),
    }
    for child in sub_dirs(dir)? {
        collect_pids(&child, out)?;
    }
    Ok(())
}

/// All processes in `dir` and below, sorted, without duplicates. `dir` must exist.
pub(crate) fn pids_recursive(dir: &Path) -> Result<Vec<i32>> {
    if let Err(source) = fs::metadata(dir) {
        return Err(CgroupError::ReadDir {
            path: dir.to_path_buf(),
            source,
        });
    }
    let mut pids = Vec::new();
    collect_pids(dir, &mut pids)?;
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_error_names_file_and_value() {
        let tmp = tempfile::tempdir().unwrap();
        let err = write(tmp.path(), "memory.max", "100").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("failed to write \"100\" to "), "{text}");
        assert!(text.ends_with("/memory.max"), "{text}");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn write_truncates() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("f"), "123456").unwrap();
        write(tmp.path(), "f", "9").unwrap();
        assert_eq!(read(tmp.path(), "f").unwrap(), "9");
    }

    #[test]
    fn einval_write_is_retried_after_the_others() {
        let writes = vec![("a", "1".to_string()), ("b", "2".to_string())];
        let mut done: Vec<String> = Vec::new();
        let mut a_failed = false;
        write_in_order_deferring_einval(&writes, |file, value| {
            if file == "a" && !a_failed {
                a_failed = true;
                return Err(write_error(
                    PathBuf::from(file),
                    value,
                    io::Error::from_raw_os_error(libc::EINVAL),
                ));
            }
            done.push(format!("{file}={value}"));
            Ok(())
        })
        .unwrap();
        assert_eq!(done, ["b=2", "a=1"]);
    }

    #[test]
    fn other_write_errors_are_not_retried() {
        let writes = vec![("a", "1".to_string()), ("b", "2".to_string())];
        let mut calls = 0;
        let err = write_in_order_deferring_einval(&writes, |file, value| {
            calls += 1;
            Err(write_error(
                PathBuf::from(file),
                value,
                io::Error::from_raw_os_error(libc::EBUSY),
            ))
        })
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY));
        assert_eq!(calls, 1);
    }

    #[test]
    fn remove_tree_removes_nested_dirs_leaf_first() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("c");
        fs::create_dir_all(top.join("a/b")).unwrap();
        fs::create_dir_all(top.join("d")).unwrap();
        remove_tree(&top, Instant::now()).unwrap();
        assert!(!top.exists());
    }

    #[test]
    fn remove_tree_of_missing_dir_is_ok() {
        let tmp = tempfile::tempdir().unwrap();
        remove_tree(&tmp.path().join("gone"), Instant::now()).unwrap();
    }

    #[test]
    fn remove_tree_reports_the_dir_it_could_not_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("c");
        fs::create_dir_all(&top).unwrap();
        fs::write(top.join("regular-file"), "").unwrap();
        let err = remove_tree(&top, Instant::now()).unwrap_err();
        assert!(matches!(err, CgroupError::RemoveDir { ref path, .. } if *path == top));
    }

    #[test]
    fn pids_are_collected_recursively() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path();
        fs::create_dir_all(top.join("sub/deeper")).unwrap();
        fs::write(top.join(PROCS), "10\n3\n").unwrap();
        fs::write(top.join("sub").join(PROCS), "7\n").unwrap();
        fs::write(top.join("sub/deeper").join(PROCS), "3\n42\n").unwrap();
        assert_eq!(pids_recursive(top).unwrap(), [3, 7, 10, 42]);
    }

    #[test]
    fn pids_of_missing_cgroup_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(pids_recursive(&tmp.path().join("gone")).is_err());
    }
}
