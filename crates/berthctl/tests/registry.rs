//! berthctl against a real registry on 127.0.0.1: login, pull, run, logout.

#[path = "../../berth-image/tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};

use support::{busybox_layout, Mode, Registry, PASSWORD, USER};

fn ctl(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let o = Command::new(env!("CARGO_BIN_EXE_berthctl"))
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .arg("--registries-conf")
        .arg(dir.join("registries.toml"))
        .args(args)
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    eprintln!(
        "berthctl {args:?} -> {:?}\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
fn login_pull_run_logout() {
    support::require_tools();
    let reg = Registry::start(Mode::Basic);
    reg.push(
        &busybox_layout("pulled by berthctl").path(),
        "t",
        "test/app:1",
        &["--dest-compress-format", "zstd"],
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let d = dir.path();
    let image = format!("{}/test/app:1", reg.host());
    let o = ctl(d, &["pull", "-q", &image]);
    assert_eq!(o.status.code(), Some(125));
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        e.contains("refused the credentials") && e.lines().count() == 1,
        "one clear line: {e}"
    );
    assert!(!ctl(d, &["login", "-u", USER, "-p", "wrong", &reg.host()])
        .status
        .success());
    assert!(!d.join("auth.json").exists());
    assert!(ctl(d, &["login", "-u", USER, "-p", PASSWORD, &reg.host()])
        .status
        .success());
    let o = ctl(d, &["pull", "-q", &image]);
    assert!(o.status.success());
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        id.starts_with("sha256:") && id.lines().count() == 1,
        "-q prints only the ID: {id}"
    );
    let o = ctl(d, &["run", "--rm", &image, "cat", "/marker"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "pulled by berthctl");
    let o = ctl(d, &["images", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["Names"][0], image.as_str());
    assert!(ctl(d, &["logout", &reg.host()]).status.success());
    assert!(
        !ctl(d, &["logout", &reg.host()]).status.success(),
        "nothing left to log out of"
    );
    // Plain lines, not bars, when stderr is not a terminal.
    assert!(ctl(d, &["rmi", &image]).status.success());
    assert!(ctl(d, &["login", "-u", USER, "-p", PASSWORD, &reg.host()])
        .status
        .success());
    let o = ctl(d, &["pull", &image]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Copying blob") && err.contains("done"),
        "{err}"
    );
    // One bar per layer on a terminal: script(1) gives berthctl a pty for its stderr.
    assert!(ctl(d, &["rmi", &image]).status.success());
    let line = [
        env!("CARGO_BIN_EXE_berthctl").to_string(),
        format!("--root={}", d.join("root").display()),
        format!("--runroot={}", d.join("run").display()),
        format!("--registries-conf={}", d.join("registries.toml").display()),
        "pull".into(),
        image.clone(),
    ]
    .join(" ");
    let o = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("REGISTRY_AUTH_FILE", d.join("auth.json"))
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("script(1) from util-linux");
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{tty}");
    assert!(
        tty.contains("blob ") && tty.contains("[==") && !tty.contains("Copying blob"),
        "a progress bar, not plain lines: {tty:?}"
    );
}

#[test]
fn login_with_password_stdin_then_pull_by_platform() {
    support::require_tools();
    let reg = Registry::start(Mode::Basic);
    support::push_two_platforms(&reg, &busybox_layout("amd64"), "test/multi:1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let d = dir.path();
    // The password from standard input (its newline dropped), as `podman login` reads it.
    let mut login = Command::new(env!("CARGO_BIN_EXE_berthctl"))
        .arg("--root")
        .arg(d.join("root"))
        .args(["login", "-u", USER, "--password-stdin", &reg.host()])
        .env("REGISTRY_AUTH_FILE", d.join("auth.json"))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = login.stdin.take().unwrap();
        writeln!(stdin, "{PASSWORD}").unwrap();
    }
    let o = login.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.starts_with("Login Succeeded"), "{err}");
    let image = format!("{}/test/multi:1", reg.host());
    // --platform picks the arm64 manifest of the index.
    let o = ctl(d, &["pull", "-q", "--platform", "linux/arm64", &image]);
    assert!(o.status.success());
    let v: serde_json::Value =
        serde_json::from_slice(&ctl(d, &["inspect", &image]).stdout).unwrap();
    assert_eq!(v["Image"]["architecture"], "arm64");
    assert_eq!(v["Config"]["architecture"], "arm64");
    // Without it, the host's platform (this test runs on amd64): a busybox that runs.
    assert!(ctl(d, &["rmi", &image]).status.success());
    if std::env::consts::ARCH == "x86_64" {
        assert!(ctl(d, &["pull", "-q", &image]).status.success());
        let o = ctl(d, &["run", "--rm", &image, "cat", "/marker"]);
        assert_eq!(String::from_utf8_lossy(&o.stdout), "amd64");
    }
    let e = ctl(d, &["pull", "--platform", "linux/s390x", &image]);
    assert_eq!(e.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&e.stderr).contains("no manifest for linux/s390x"),
        "{}",
        String::from_utf8_lossy(&e.stderr)
    );
}
