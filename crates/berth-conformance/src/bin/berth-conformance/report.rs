//! Printing results: a table with a summary line, or JSON lines.

use berth_conformance::Status;
use serde_json::json;

use crate::cases::CaseResult;

/// Counts of case statuses.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub pass: usize,
    pub fail: usize,
    pub skip: usize,
}

impl Tally {
    pub fn of(results: &[CaseResult], negative: bool) -> Tally {
        let mut t = Tally::default();
        for r in results {
            match r.status(negative) {
                Status::Pass => t.pass += 1,
                Status::Fail => t.fail += 1,
                Status::Skip => t.skip += 1,
            }
        }
        t
    }

    /// Whether the run met its goal: no failure, or as a negative control no pass.
    pub fn ok(&self, negative: bool) -> bool {
        if negative {
            self.pass == 0
        } else {
            self.fail == 0
        }
    }
}

/// The one summary line the comparison script collects.
pub fn summary_line(runtime: &str, results: &[CaseResult], negative: bool, secs: f64) -> String {
    let t = Tally::of(results, negative);
    let n = results.len();
    if negative {
        format!(
            "summary (negative controls): {runtime}: {n} cases: {} failed as required, {} passed \
             (a negated check passed), {} skipped ({secs:.1}s)",
            t.fail, t.pass, t.skip
        )
    } else {
        format!(
            "summary: {runtime}: {n} cases: {} passed, {} failed, {} skipped ({secs:.1}s)",
            t.pass, t.fail, t.skip
        )
    }
}

pub fn print_table(header: &str, results: &[CaseResult], negative: bool, summary: &str) {
    println!("{header}");
    let width = results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!("{:<width$}  {:<6}  {:>6}  DETAIL", "CASE", "RESULT", "TIME");
    for r in results {
        println!(
            "{:<width$}  {:<6}  {:>5.2}s  {}",
            r.name,
            r.status(negative).as_str(),
            r.seconds,
            r.detail(negative)
        );
    }
    println!("{summary}");
}

pub fn print_json(runtime: &str, results: &[CaseResult], negative: bool, summary: &str) {
    for r in results {
        let checks: Vec<_> = r
            .checks
            .iter()
            .map(|c| json!({"check": c.check, "status": c.status, "detail": c.detail}))
            .collect();
        let line = json!({
            "case": r.name,
            "status": r.status(negative),
            "detail": r.detail(negative),
            "error": r.error,
            "seconds": r.seconds,
            "checks": checks,
        });
        println!("{line}");
    }
    let t = Tally::of(results, negative);
    let line = json!({"summary": {
        "runtime": runtime, "negative": negative, "cases": results.len(),
        "pass": t.pass, "fail": t.fail, "skip": t.skip, "line": summary,
    }});
    println!("{line}");
}
