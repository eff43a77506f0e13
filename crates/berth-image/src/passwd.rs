//! Resolving an image's `User` (`name`, `uid`, `name:group`, `uid:gid`) against the image's
//! own /etc/passwd and /etc/group. The files come from the image, which is hostile, and are
//! read by the host (as root) from the container's root file system:
//! - they are found with openat2(RESOLVE_IN_ROOT), so a link in the image cannot point the
//!   read at a host file;
//! - they are found with `O_PATH`, which opens nothing: a fifo or a device node shipped as
//!   /etc/passwd is seen for what it is (fstat) and refused without being opened. A host
//!   open of a device node from an image would reach a host driver (the container's rootfs
//!   is not mounted `nodev`: the container may need its image's nodes), and a fifo could
//!   block. Only a regular file is then opened for reading, through `/proc/self/fd` (the same
//!   inode, checked);
//! - they are read only up to [`MAX_FILE`] bytes.

use std::io::{self, Read};
use std::path::Path;

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};

/// The user and groups a container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// The home directory from /etc/passwd, if the user is listed.
    pub home: Option<String>,
}

/// Why a user spec cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user {user:?}: no such user in the image's /etc/passwd")]
    NoUser { user: String },
    #[error("user {user:?}: no such group {group:?} in the image's /etc/group")]
    NoGroup { user: String, group: String },
    #[error("user {user:?}: read the image's {file}: {source}")]
    Read {
        user: String,
        file: &'static str,
        #[source]
        source: io::Error,
    },
    /// A fifo, device, socket or directory where a regular file belongs; never opened.
    #[error("user {user:?}: the image's {file} is {kind}, not a regular file")]
    NotRegular {
        user: String,
        file: &'static str,
        kind: &'static str,
    },
    #[error("user {user:?}: the image's {file} is larger than {limit} bytes")]
    TooLarge {
        user: String,
        file: &'static str,
        limit: u64,
    },
}

/// Larger account files than this are not believed.
pub const MAX_FILE: u64 = 4 << 20;

/// Why [`read_in_root`] read nothing.
enum ReadError {
    Io(io::Error),
    NotRegular(&'static str),
    TooLarge,
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl From<nix::errno::Errno> for ReadError {
    fn from(e: nix::errno::Errno) -> Self {
        ReadError::Io(e.into())
    }
}

/// What a file type is called in messages.
fn kind_of(mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFIFO => "a fifo",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symbolic link",
        _ => "not a regular file",
    }
}

/// Reads `file` (an absolute path inside the image) from `rootfs`, or `None` if absent.
fn read_in_root(rootfs: &Path, file: &str) -> Result<Option<String>, ReadError> {
    let root = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .mode(Mode::empty())
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(&root, file, how) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let st = fstat(&fd)?;
    if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
        return Err(ReadError::NotRegular(kind_of(st.st_mode)));
    }
    if st.st_size as u64 > MAX_FILE {
        return Err(ReadError::TooLarge);
    }
    let mut data = Vec::new();
    crate::fsutil::reopen_regular(&fd)?
        .take(MAX_FILE + 1)
        .read_to_end(&mut data)?;
    if data.len() as u64 > MAX_FILE {
        return Err(ReadError::TooLarge);
    }
    String::from_utf8(data)
        .map(Some)
        .map_err(|_| ReadError::Io(io::Error::other("not UTF-8 text")))
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn passwd_entries(data: &str) -> Vec<PasswdEntry> {
    data.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 || f[0].starts_with('#') {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

/// (name, gid, members)
fn group_entries(data: &str) -> Vec<(String, u32, Vec<String>)> {
    data.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 || f[0].starts_with('#') {
                return None;
            }
            let members = f[3]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect();
            Some((f[0].to_string(), f[2].parse().ok()?, members))
        })
        .collect()
}

/// Resolves `spec` (empty means root) inside `rootfs`, as docker and podman do: a name must
/// be in /etc/passwd; a number need not be (its group is then 0, or the passwd entry's);
/// supplementary groups are the /etc/group entries that list the user by name.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ResolvedUser, UserError> {
    let read = |file: &'static str| {
        let user = spec.to_string();
        read_in_root(rootfs, file).map_err(|e| match e {
            ReadError::Io(source) => UserError::Read { user, file, source },
            ReadError::NotRegular(kind) => UserError::NotRegular { user, file, kind },
            ReadError::TooLarge => UserError::TooLarge {
                user,
                file,
                limit: MAX_FILE,
            },
        })
    };
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let passwd = read("/etc/passwd")?.unwrap_or_default();
    let entries = passwd_entries(&passwd);
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => entries.into_iter().find(|e| e.uid == uid),
        Err(_) => Some(
            entries
                .into_iter()
                .find(|e| e.name == user_part)
                .ok_or_else(|| UserError::NoUser {
                    user: spec.to_string(),
                })?,
        ),
    };
    let uid = match &entry {
        Some(e) => e.uid,
        None => user_part.parse().unwrap_or(0),
    };
    let groups = group_entries(&read("/etc/group")?.unwrap_or_default());
    let gid = match group_part {
        None | Some("") => entry.as_ref().map(|e| e.gid).unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|(name, _, _)| name == g)
                .map(|(_, id, _)| *id)
                .ok_or_else(|| UserError::NoGroup {
                    user: spec.to_string(),
                    group: g.to_string(),
                })?,
        },
    };
    let mut additional_gids = Vec::new();
    if group_part.is_none() {
        if let Some(e) = &entry {
            for (_, id, members) in &groups {
                if members.contains(&e.name) && *id != gid && !additional_gids.contains(id) {
                    additional_gids.push(*id);
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: entry.map(|e| e.home),
    })
}

#[cfg(test)]
mod tests;
