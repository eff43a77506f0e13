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
