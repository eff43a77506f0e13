//! Resolving an image's `User` (`name`, `uid`, `name:group`, `uid:gid`) against the image's
//! own /etc/passwd and /etc/group. The files come from the image, which is hostile: they are
//! opened with openat2(RESOLVE_IN_ROOT), so a link in the image cannot point the read at a
//! host file, and they are read only up to a size limit.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

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
}

/// Larger account files than this are not believed.
const MAX_FILE: u64 = 4 << 20;

/// Reads `file` (an absolute path inside the image) from `rootfs`, or `None` if absent.
fn read_in_root(rootfs: &Path, file: &str) -> io::Result<Option<String>> {
    let root = File::open(rootfs)?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
        .mode(Mode::empty())
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(&root, file, how) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let f = File::from(fd);
    if !f.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut s = String::new();
    f.take(MAX_FILE).read_to_string(&mut s)?;
    Ok(Some(s))
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
        read_in_root(rootfs, file).map_err(|source| UserError::Read {
            user: spec.to_string(),
            file,
            source,
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
