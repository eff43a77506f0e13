//! The README's berthctl commands that the tests in cli.rs do not already run, one test
//! each, and the `images` table.

use super::*;

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
    // A gzip rootfs: its layer blob is compressed, its unpacked (tar) size is larger. Its
    // one file is 2,349,000 zero bytes; the tar is 2,350,592 (a header, the data padded to
    // 512 bytes, two end blocks), which podman shows as "2.4 MB": decimal units, one
    // decimal (the file alone would show as 2.3 MB, the tar in binary units as 2.2 MB).
    let size = "2.4 MB";
    let rootfs = ctl.dir.path().join("rootfs.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&rootfs).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(2_349_000);
        let zeros = std::io::Read::take(std::io::repeat(0), 2_349_000);
        b.append_data(&mut h, "zeros", zeros).unwrap();
        b.into_inner().unwrap();
    }
    let st = Command::new("gzip")
        .arg("-n")
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(st.success());
    let tgz = ctl.dir.path().join("rootfs.tar.gz");
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
    for (repo, t) in [(long, tag), ("localhost/short", "1")] {
        let line = lines[1..]
            .iter()
            .find(|l| l.starts_with(&format!("{repo} ")))
            .unwrap_or_else(|| panic!("a row for {repo}:\n{table}"));
        assert_eq!(
            offsets(line, &[repo, t, short, size]),
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

#[test]
fn inspect_an_image_and_a_container() {
    let ctl = Ctl::new();
    ctl.ok(&["run", "--rm", BB, "true"]);
    let id = ctl.ok(&["images", "--format", "json"]);
    let images: serde_json::Value = serde_json::from_str(&id).unwrap();
    let image_id = images[0]["Id"].as_str().unwrap().to_string();
    let v: serde_json::Value = serde_json::from_str(&ctl.ok(&["inspect", BB])).unwrap();
    assert_eq!(v["Image"]["id"], image_id.as_str());
    assert_eq!(v["Image"]["names"][0], "localhost/berth-busybox:latest");
    assert_eq!(v["Manifest"]["schemaVersion"], 2);
    assert_eq!(
        v["Manifest"]["config"]["digest"],
        image_id.as_str(),
        "the manifest names the config the ID is the digest of"
    );
    assert_eq!(v["Config"]["os"], "linux");
    assert_eq!(v["Config"]["config"]["Cmd"][0], "sh");
    // A container, by name.
    let cid = ctl.ok(&["run", "-d", "--name", "looked-at", BB, "sleep", "1000"]);
    let cid = cid.trim();
    let v: serde_json::Value = serde_json::from_str(&ctl.ok(&["inspect", "looked-at"])).unwrap();
    assert_eq!(v["id"], cid);
    assert_eq!(v["name"], "looked-at");
    assert_eq!(v["image_id"], image_id.as_str());
    assert_eq!(v["command"], serde_json::json!(["sleep", "1000"]));
    assert_eq!(v["Status"], "Up");
    assert!(
        v["Rootfs"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{cid}/rootfs")),
        "{v}"
    );
    ctl.ok(&["rm", "-f", "looked-at"]);
    let e = ctl.fails(&["inspect", "looked-at"], 125);
    assert!(
        e.contains("no image or container named \"looked-at\""),
        "{e}"
    );
    assert_clean(&ctl);
}

#[test]
fn logs_follow_prints_new_output_and_ends_with_the_container() {
    use std::io::BufRead;
    let ctl = Ctl::new();
    ctl.ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        BB,
        "sh",
        "-c",
        "echo one; sleep 2; echo two; sleep 1; echo three",
    ]);
    let mut follow = ctl
        .cmd(&["logs", "-f", "talker"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("logs -f printed no {what}"))
    };
    assert_eq!(next("first line"), "one");
    // The container still runs: what comes next is new output, followed.
    assert!(
        ctl.ok(&["ps"]).contains("talker"),
        "still running after the first line"
    );
    assert_eq!(next("second line"), "two");
    assert_eq!(next("third line"), "three");
    // It ends by itself once the container has exited.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = follow.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "logs -f did not end with the container"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    assert!(
        rx.recv_timeout(Duration::from_secs(1)).is_err(),
        "nothing more"
    );
    ctl.ok(&["rm", "talker"]);
    assert_clean(&ctl);
}

#[test]
fn exec_it_gets_a_terminal() {
    let ctl = Ctl::new();
    ctl.ok(&["run", "-d", "--name", "shell", BB, "sleep", "1000"]);
    let o = ctl.on_terminal("exec -it shell sh -c 'tty; test -t 0 && echo stdin-is-a-tty'");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("/dev/pts/") && out.contains("stdin-is-a-tty"),
        "{out}"
    );
    // Without -t, no terminal.
    let o = ctl.out(&["exec", "shell", "sh", "-c", "tty || true"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "not a tty\n");
    ctl.ok(&["rm", "-f", "shell"]);
    assert_clean(&ctl);
}

/// A busybox image (umoci) whose entrypoint is `/bin/echo ep`; its ID.
fn image_with_entrypoint(ctl: &Ctl) -> Option<String> {
    busybox_rootfs_tar(ctl.dir.path());
    let tree = ctl.dir.path().join("tree");
    let _ = std::os::unix::fs::symlink("busybox", tree.join("bin/echo"));
    let layout = Layout::new("1");
    layout.insert("1", &tree, "/");
    layout.config(
        "1",
        &[
            "--config.entrypoint",
            "/bin/echo",
            "--config.entrypoint",
            "ep",
        ],
    );
    ctl.ok(&["load", "-i", layout.path().to_str().unwrap()]);
    Some(ctl.ok(&["images", "-q"]).trim().to_string())
}

#[test]
fn run_with_an_empty_entrypoint_clears_the_images() {
    let ctl = Ctl::new();
    let Some(id) = image_with_entrypoint(&ctl) else {
        return;
    };
    assert_eq!(ctl.ok(&["run", "--rm", &id, "x"]), "ep x\n");
    assert_eq!(
        ctl.ok(&["run", "--rm", "--entrypoint", "", &id, "/bin/echo", "x"]),
        "x\n",
        "--entrypoint \"\": the command runs by itself"
    );
    assert_clean(&ctl);
}

#[test]
fn rmi_by_id() {
    let ctl = Ctl::new();
    let tar = busybox_rootfs_tar(ctl.dir.path());
    let full = ctl.ok(&["import", tar.to_str().unwrap(), "by-id:1"]);
    let full = full.trim().to_string();
    let short = &full.trim_start_matches("sha256:")[..12];
    assert_eq!(ctl.ok(&["images", "-q"]).trim(), short);
    // By ID, an image with one name is deleted (not just untagged).
    assert_eq!(ctl.ok(&["rmi", short]).trim(), format!("Deleted: {full}"));
    assert_eq!(ctl.ok(&["images", "-q"]), "");
    assert_eq!(
        std::fs::read_dir(ctl.root().join("content/blobs/sha256"))
            .unwrap()
            .count(),
        0,
        "its blobs go too"
    );
    // And by the full ID.
    ctl.ok(&["import", tar.to_str().unwrap(), "by-id:1"]);
    assert_eq!(ctl.ok(&["rmi", &full]).trim(), format!("Deleted: {full}"));
    let e = ctl.fails(&["rmi", short], 125);
    assert!(e.contains(short), "{e}");
    assert_clean(&ctl);
}
