//! What the berth-cni test files share: fake plugins written as shell scripts, and the
//! re-run of a root test inside private network and mount namespaces.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_cni::{Cni, CniOptions, NetworkConfigList};

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

/// A shell-script plugin `name` in `dir`, with `body` after the shebang.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    // Written under another name and renamed, so the file never runs half-written.
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&tmp, &p).unwrap();
    p
}

/// A plugin that records each call in `<log>/log` (a line `<name> <command>`), its stdin in
/// `<log>/<name>.<command>.stdin` and its CNI_ environment in `<log>/<name>.<command>.env`,
/// prints `result` for ADD and a VERSION answer, then runs `extra` (shell).
pub fn recorder(dir: &Path, log: &Path, name: &str, result: &str, extra: &str) -> PathBuf {
    let body = format!(
        r#"d='{log}'
echo "{name} $CNI_COMMAND" >> "$d/log"
cat > "$d/{name}.$CNI_COMMAND.stdin"
env | grep '^CNI_' | sort > "$d/{name}.$CNI_COMMAND.env"
case "$CNI_COMMAND" in
ADD) printf '%s' '{result}' ;;
VERSION) printf '%s' '{{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}}' ;;
esac
{extra}"#,
        log = log.display()
    );
    script(dir, name, &body)
}

/// A plugin that fails ADD with a CNI error and succeeds at everything else.
pub fn failer(dir: &Path, name: &str, msg: &str) -> PathBuf {
    script(
        dir,
        name,
        &format!(
            r#"cat > /dev/null
if [ "$CNI_COMMAND" = ADD ]; then
  printf '%s' '{{"cniVersion":"1.0.0","code":107,"msg":"{msg}","details":"injected by the test"}}'
  exit 1
fi"#
        ),
    )
}

/// A plugin whose ADD never ends and that succeeds at everything else.
pub fn hanger(dir: &Path, name: &str) -> PathBuf {
    script(
        dir,
        name,
        r#"cat > /dev/null
if [ "$CNI_COMMAND" = ADD ]; then sleep 120; fi"#,
    )
}

/// A caller of `conflist` (written into `<dir>/net.d`) with plugins from `plugin_dirs`
/// and its cache under `<dir>/cache`.
pub fn cni(dir: &Path, conflist: &str, plugin_dirs: Vec<PathBuf>, timeout: Duration) -> Cni {
    let conf_dir = dir.join("net.d");
    fs::create_dir_all(&conf_dir).unwrap();
    fs::write(conf_dir.join("10-test.conflist"), conflist).unwrap();
    let cni = Cni::new(options(dir, plugin_dirs, timeout));
    assert!(cni.status().is_ready(), "{:?}", cni.status());
    cni
}

pub fn options(dir: &Path, plugin_dirs: Vec<PathBuf>, timeout: Duration) -> CniOptions {
    CniOptions {
        conf_dir: dir.join("net.d"),
        plugin_dirs,
        cache_dir: dir.join("cache"),
        timeout,
        ..CniOptions::default()
    }
}

/// The lines of the recorders' log.
pub fn log_lines(log: &Path) -> Vec<String> {
    fs::read_to_string(log.join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// What a recorder read on stdin for `command`.
pub fn stdin_of(log: &Path, name: &str, command: &str) -> serde_json::Value {
    let p = log.join(format!("{name}.{command}.stdin"));
    let s = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}: {s}", p.display()))
}

/// The CNI_ environment a recorder had for `command`, as `K=V` lines.
pub fn env_of(log: &Path, name: &str, command: &str) -> Vec<String> {
    let p = log.join(format!("{name}.{command}.env"));
    fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn load(json: &str) -> NetworkConfigList {
    NetworkConfigList::from_bytes(json.as_bytes(), "test").unwrap()
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
