//! What the berth-cni test files share: the re-run of a root test inside private network
//! and mount namespaces.
#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that tells a re-run test it is the inner one, and where its
/// directory is.
const INNER: &str = "BERTH_CNI_TEST_DIR";

/// Runs `body` with a scratch directory, inside network and mount namespaces of its own,
/// so that the host's links, addresses, firewall and mounts are never touched: the test
/// binary runs itself again, only this test, under `unshare --net --mount` (private
/// propagation). When the inner run ends its namespaces die with it, and with them every
/// bridge, veth, rule and mount it made, whatever failed. The directory is the outer
/// run's, removed by it once no mount of the inner one is left on it.
///
/// Without root the test is reported skipped.
pub fn in_private_namespaces(test: &str, body: impl FnOnce(&Path)) {
    if let Some(dir) = std::env::var_os(INNER) {
        body(Path::new(&dir));
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        berth_testkit::skip(
            test,
            "needs root (network namespaces, mounts, the bridge plugin)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("inner.out");
    let out = fs::File::create(&out_path).unwrap();
    let mut child = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER, dir.path())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("run unshare(1)");
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{test}: the inner run hung; its output:\n{}",
                fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = fs::read_to_string(&out_path).unwrap_or_default();
    eprintln!("---- inner run of {test} ----\n{output}---- end of inner run ----");
    assert!(status.success(), "{test}: the inner run failed: {status}");
    // The inner run must have run this one test, not matched nothing.
    assert!(
        output.contains("1 passed") && output.contains(&format!("{test} ... ok")),
        "{test}: the inner run did not run the test"
    );
}

/// Runs a command and returns its stdout; panics with its stderr on failure.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
