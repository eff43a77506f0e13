//! The conformance suite against this workspace's `berth`, as root.
//!
//! Builds what it needs with cargo into the same target directory (`berth`, and the static
//! `berth-check` with `-C target-feature=+crt-static`), then runs the harness twice:
//!
//! 1. every case must pass, or skip with a reason;
//! 2. with `--negative` (every check negated) every case that is not skipped must fail, which
//!    shows that each check can tell a right runtime from a wrong one.
//!
//! Not root: the test says why on stderr and returns without checking anything.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BUILD_LIMIT: Duration = Duration::from_secs(30 * 60);
const SUITE_LIMIT: Duration = Duration::from_secs(15 * 60);

/// Output of a finished command.
struct Finished {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to completion within `limit`, output into files (never a pipe that could fill).
fn run(mut cmd: Command, what: &str, limit: Duration) -> Finished {
    let dir = tempfile::tempdir().expect("tempdir for command output");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out).expect("create stdout file"))
        .stderr(File::create(&err).expect("create stderr file"));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for child") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {}s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Finished {
        ok: status.success(),
        code: status.code(),
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    }
}

/// The target directory and, if the build used `--target`, its triple: from the harness's
/// own path (`<target>/<profile>/berth-conformance` or `<target>/<triple>/<profile>/...`).
fn target_layout(profile_dir: &Path) -> (PathBuf, Option<String>) {
    let parent = profile_dir.parent().expect("profile dir has a parent");
    if parent.join("CACHEDIR.TAG").exists() || parent.parent().is_none() {
        return (parent.to_path_buf(), None);
    }
    let triple = parent.file_name().map(|n| n.to_string_lossy().into_owned());
    match parent.parent() {
        Some(root) if root.join("CACHEDIR.TAG").exists() => (root.to_path_buf(), triple),
        _ => (parent.to_path_buf(), None),
    }
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    cmd
}

/// Builds `berth` with the profile and layout of this test's build; returns its path.
fn build_berth(profile_dir: &Path) -> PathBuf {
    let (target_dir, triple) = target_layout(profile_dir);
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(p) => p.to_string(),
    };
    let mut cmd = cargo();
    cmd.args([
        "build",
        "-p",
        "berth",
        "--bin",
        "berth",
        "--profile",
        &profile,
    ])
    .arg("--target-dir")
    .arg(&target_dir);
    if let Some(t) = &triple {
        cmd.args(["--target", t]);
    }
    let built = run(cmd, "cargo build -p berth", BUILD_LIMIT);
    assert!(built.ok, "cargo build -p berth failed:\n{}", built.stderr);
    let berth = profile_dir.join("berth");
    assert!(
        berth.is_file(),
        "cargo built berth but {} is missing",
        berth.display()
    );
    berth
}

/// Builds the static checker the way scripts/conformance.sh does; returns its path.
fn build_checker(profile_dir: &Path) -> PathBuf {
    let (target_dir, _) = target_layout(profile_dir);
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let flags = std::env::var("RUSTFLAGS").unwrap_or_default();
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--release",
        "-p",
        "berth-conformance",
        "--bin",
        "berth-check",
    ])
    .args(["--target", &triple])
    .arg("--target-dir")
    .arg(&target_dir)
    .env(
        "RUSTFLAGS",
        format!("{flags} -C target-feature=+crt-static"),
    );
    let built = run(cmd, "cargo build of the static berth-check", BUILD_LIMIT);
    assert!(
        built.ok,
        "building the static berth-check failed:\n{}",
        built.stderr
    );
    target_dir.join(&triple).join("release/berth-check")
}

/// Runs the harness with `--json`; returns the case objects and the summary line.
fn suite(harness: &Path, berth: &Path, checker: &Path, negative: bool) -> (Vec<Value>, String) {
    let mut cmd = Command::new(harness);
    cmd.arg("--runtime")
        .arg(berth)
        .arg("--checker")
        .arg(checker)
        .arg("--json");
    if negative {
        cmd.arg("--negative");
    }
    let what = if negative {
        "berth-conformance --negative"
    } else {
        "berth-conformance"
    };
    let done = run(cmd, what, SUITE_LIMIT);
    assert!(
        matches!(done.code, Some(0) | Some(1)),
        "{what} could not run (exit {:?}):\n{}",
        done.code,
        done.stderr
    );
    let mut cases = Vec::new();
    let mut summary = String::new();
    for line in done.stdout.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{what} printed a line that is not JSON ({e}): {line}"));
        if let Some(s) = v.get("summary") {
            summary = s["line"].as_str().unwrap_or_default().to_string();
        } else {
            cases.push(v);
        }
    }
    assert!(
        !cases.is_empty(),
        "{what} reported no case:\n{}",
        done.stderr
    );
    (cases, summary)
}

fn field<'a>(case: &'a Value, name: &str) -> &'a str {
    case[name].as_str().unwrap_or_default()
}

#[test]
fn berth_passes_every_case_and_fails_every_negated_one() {
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "skipped: the conformance suite runs real containers and needs root \
             (run `cargo test -p berth-conformance` as root)"
        );
        return;
    }
    let harness = PathBuf::from(env!("CARGO_BIN_EXE_berth-conformance"));
    let profile_dir = harness
        .parent()
        .expect("harness has a directory")
        .to_path_buf();
    let start = Instant::now();
    let berth = build_berth(&profile_dir);
    let checker = build_checker(&profile_dir);
    eprintln!(
        "built berth and berth-check in {:.1}s",
        start.elapsed().as_secs_f64()
    );

    let (cases, summary) = suite(&harness, &berth, &checker, false);
    eprintln!("{summary}");
    let mut wrong = Vec::new();
    for c in &cases {
        match field(c, "status") {
            "pass" => {}
            "skip" if !field(c, "detail").is_empty() => {}
            other => wrong.push(format!(
                "{}: {other}: {}",
                field(c, "case"),
                field(c, "detail")
            )),
        }
    }
    let (negated, summary) = suite(&harness, &berth, &checker, true);
    eprintln!("{summary}");
    assert_eq!(negated.len(), cases.len(), "both runs cover the same cases");
    let mut passed = Vec::new();
    for c in &negated {
        match field(c, "status") {
            "fail" if c["error"].is_null() => {}
            "skip" => {}
            other => passed.push(format!(
                "{}: {other}: {}",
                field(c, "case"),
                field(c, "detail")
            )),
        }
    }
    eprintln!(
        "conformance test took {:.1}s",
        start.elapsed().as_secs_f64()
    );
    // Both runs are reported before either is asserted, so one run shows every problem.
    assert!(
        wrong.is_empty() && passed.is_empty(),
        "cases that did not pass:\n{}\n\nnegated cases that did not fail (their checks \
         passed both ways, or the case fails normally):\n{}",
        wrong.join("\n"),
        passed.join("\n")
    );
}
