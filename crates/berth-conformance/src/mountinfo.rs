//! /proc/self/mountinfo (proc(5)): read by the checker inside the container and by the harness on the host.

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    /// The directory of the mounted file system that is mounted here (field 4).
    pub root: String,
    pub mount_point: String,
    /// Per-mount options (`rw`/`ro`, `nosuid`, `nodev`, `noexec`, atime modes).
    pub options: Vec<String>,
    pub fstype: String,
    pub source: String,
    /// Per-superblock options; for cgroup v1 they name the controllers.
    pub super_options: Vec<String>,
}

/// Parses mountinfo text; a malformed line is an error that quotes it.
pub fn parse(text: &str) -> Result<Vec<MountEntry>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_line(l).ok_or_else(|| format!("malformed mountinfo line {l:?}")))
        .collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let id = l.next()?.parse().ok()?;
    let parent = l.next()?.parse().ok()?;
    let _dev = l.next()?;
    let root = unescape(l.next()?);
    let mount_point = unescape(l.next()?);
    let options = l.next()?.split(',').map(str::to_string).collect();
    // The optional fields (shared:N, master:N, ...) that follow are not needed.
    let mut r = right.split(' ');
    let fstype = r.next()?.to_string();
    let source = unescape(r.next()?);
    let super_options = r
        .next()
        .unwrap_or("")
        .split(',')
        .map(str::to_string)
        .collect();
    Some(MountEntry {
        id,
        parent,
        root,
        mount_point,
        options,
        fstype,
        source,
        super_options,
    })
}

/// Undoes the kernel's octal escapes of space, tab, newline and backslash (`\040`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c));
        if octal {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path without a trailing slash (except for `/` itself).
pub fn normalize(path: &str) -> &str {
    let t = path.trim_end_matches('/');
    if t.is_empty() {
        "/"
    } else {
        t
    }
}

/// The mount that is visible at `destination`: of the mounts on that directory, the one no
/// other mount there is stacked on (the last in the file if that does not decide).
pub fn topmost<'a>(mounts: &'a [MountEntry], destination: &str) -> Option<&'a MountEntry> {
    let dest = normalize(destination);
    let here: Vec<&MountEntry> = mounts.iter().filter(|m| m.mount_point == dest).collect();
    here.iter()
        .rev()
        .find(|m| !here.iter().any(|o| o.parent == m.id))
        .or(here.last())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
601 500 0:60 / / rw,relatime - overlay overlay rw,lowerdir=/l
602 601 0:61 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
603 601 0:62 / /dev rw,nosuid - tmpfs tmpfs rw,mode=755
610 601 0:70 / /mnt/with\\040space ro,nosuid shared:5 - tmpfs tmpfs ro
611 601 0:71 / /mnt/stack rw - tmpfs a rw
612 611 0:72 / /mnt/stack ro,noexec - tmpfs b rw
620 601 0:33 /sys/fs/cgroup/memory/c1 /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory
";

    #[test]
    fn fields_are_split_and_unescaped() {
        let m = parse(SAMPLE).unwrap();
        assert_eq!(m.len(), 7);
        assert_eq!(m[1].fstype, "proc");
        assert!(m[1].options.contains(&"noexec".to_string()));
        assert_eq!(m[3].mount_point, "/mnt/with space");
        assert_eq!(m[3].options, vec!["ro", "nosuid"]);
        assert_eq!(m[6].super_options, vec!["rw", "memory"]);
        assert_eq!(m[6].root, "/sys/fs/cgroup/memory/c1");
    }

    #[test]
    fn the_mount_stacked_last_is_the_visible_one() {
        let m = parse(SAMPLE).unwrap();
        assert_eq!(topmost(&m, "/mnt/stack/").unwrap().source, "b");
        assert_eq!(topmost(&m, "/").unwrap().fstype, "overlay");
        assert!(topmost(&m, "/nowhere").is_none());
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(parse("1 2 3\n").unwrap_err().contains("malformed"));
    }
}
