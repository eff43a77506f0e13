//! What Berth's test suites share.
//!
//! [`skip`] is the one way a test reports that it did not run its check. libtest has no
//! skip at run time: such a test returns early and is counted as passed. So the line goes
//! straight to stderr, past libtest's output capture, where a passing run shows it, and
//! `scripts/test.sh` lists every one of them at the end of the run.
//!
//! A test may skip only where the machine truly lacks what it checks (a kernel feature, a
//! controller, root); a test that cannot run on the CI machine at all is `#[ignore]`d
//! with the reason instead, so that it is never counted as passing, and README says so.
//!
//! [`limit_address_space`] and [`rerun_limited`] are for tests of hostile input that tries
//! to exhaust memory: the code under test runs in a child whose address space is bounded,
//! so that it dies of the bound instead of taking the machine's memory.

use std::io::Write;

mod limited;

pub use limited::{limit_address_space, rerun_limited, result_line, Rerun};

/// The prefix `scripts/test.sh` collects.
pub const PREFIX: &str = "SKIPPED";

/// Reports that `test` skipped its check, and why; the caller then returns.
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "{PREFIX} {test}: {reason}");
}

/// berth-agent linked statically, as a VM guest's init needs it: built once per test process
/// by `scripts/build-agent.sh` into `<target>/agent-static/berth-agent` (a target directory of
/// its own: its flags differ from the workspace's build). Tests hand it to berthctl and berthd
/// as `BERTH_AGENT`.
pub fn static_agent() -> std::path::PathBuf {
    static AGENT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    AGENT
        .get_or_init(|| {
            let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| repo.join("target"));
            let dest = target.join("agent-static/berth-agent");
            let st = std::process::Command::new("bash")
                .arg(repo.join("scripts/build-agent.sh"))
                .env("CARGO_TARGET_DIR", &target)
                .env("DEST", &dest)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("run scripts/build-agent.sh");
            assert!(st.success(), "scripts/build-agent.sh failed");
            dest
        })
        .clone()
}

/// The guest kernel cache scripts/vm-kernel.sh makes (`BERTH_VM_KERNEL_DIR` moves it), or
/// None after reporting `test` skipped: VM tests need it, and a machine without it (no
/// Debian apt) cannot run them.
pub fn vm_kernel_or_skip(test: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("BERTH_VM_KERNEL_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/cache/berth/vm-kernel".into());
    if dir.join("vmlinuz").exists() {
        return Some(dir);
    }
    skip(
        test,
        &format!(
            "no guest kernel cache at {} (scripts/vm-kernel.sh makes it)",
            dir.display()
        ),
    );
    None
}
