//! The README's berthctl commands that the tests in cli.rs do not already run, one test
//! each, and the `images` table.

use super::*;

/// `n` bytes as podman and berthctl show sizes: decimal units, one decimal.
fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// Where each of `words` starts in `line` (the first match after the previous one).
fn offsets(line: &str, words: &[&str]) -> Vec<usize> {
    let mut at = 0;
    words
        .iter()
        .map(|w| {
            let i = at
                + line[at..]
                    .find(w)
                    .unwrap_or_else(|| panic!("{w:?} in {line:?}"));
            at = i + w.len();
            i
        })
        .collect()
}

#[test]
fn images_columns_line_up_and_size_is_the_unpacked_size() {
    let ctl = Ctl::new();
    // A gzip rootfs: its layer blob is compressed, its unpacked (tar) size is larger.
    let tgz = busybox_rootfs_tar(ctl.dir.path());
    let plain = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc {} | wc -c", tgz.display()))
        .output()
        .unwrap();
    let unpacked: u64 = String::from_utf8_lossy(&plain.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(unpacked > std::fs::metadata(&tgz).unwrap().len() * 3 / 2);
    let id = ctl.ok(&["import", tgz.to_str().unwrap(), "short:1"]);
    let short = &id.trim().trim_start_matches("sha256:")[..12];
    let long = "localhost/a-repository-name-well-over-forty-eight-characters/and-more";
    let tag = "a-long-tag-1.2.3";
    ctl.ok(&["tag", "short:1", &format!("{long}:{tag}")]);
    let table = ctl.ok(&["images"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let head = offsets(lines[0], &["REPOSITORY", "TAG", "IMAGE ID", "SIZE"]);
    let size = human(unpacked);
    for (repo, t) in [(long, tag), ("localhost/short", "1")] {
        let line = lines[1..]
            .iter()
            .find(|l| l.starts_with(&format!("{repo} ")))
            .unwrap_or_else(|| panic!("a row for {repo}:\n{table}"));
        assert_eq!(
            offsets(line, &[repo, t, short, &size]),
            head,
            "each value starts under its header:\n{table}"
        );
    }
    let v: serde_json::Value =
        serde_json::from_str(&ctl.ok(&["images", "--format", "json"])).unwrap();
    assert_eq!(
        v[0]["Size"], unpacked,
        "the unpacked size, as podman gives it"
    );
    assert_clean(&ctl);
}
