//! The cases, and how each kind is run.
//!
//! - A *checker case* edits config.json and lists checks; the harness writes the checks into
//!   the rootfs, runs the container with `run`, and reads one verdict line per check from the
//!   checker's stdout.
//! - A *driven case* runs runtime commands itself (`create`, `start`, `state`, `kill`,
//!   `delete`) and checks their outcomes and the `state` JSON.
//!
//! In both, the actions never depend on the expectations, so `--negative` can negate every
//! check of a case at once and require each of them to fail.

mod checker;
mod hooks;
mod lifecycle;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_conformance::{judge, Check, Expectations, Line, Observed, Probe, Status};

use crate::bundle::{Bundle, Template, CHECKER_IN_ROOTFS, EXPECT_IN_ROOTFS};
use crate::host::Host;
use crate::runtime::{Outcome, Runtime};

/// How long a container may take to reach a status.
pub const WAIT_LIMIT: Duration = Duration::from_secs(20);

pub struct Case {
    pub name: &'static str,
    pub about: &'static str,
    pub kind: Kind,
}

pub enum Kind {
    /// Edits the bundle and lists the checks the checker makes inside.
    Checker(fn(&mut Plan<'_>) -> Result<(), String>),
    /// Drives the runtime and checks what it does.
    Driven(fn(&mut Driver<'_>) -> Result<(), String>),
}

/// Every case, in the order they run.
pub fn all() -> Vec<Case> {
    let mut cases = checker::cases();
    cases.extend(lifecycle::cases());
    cases.extend(hooks::cases());
    cases
}

/// What one run shares with every case.
pub struct Env<'a> {
    pub runtime: &'a Runtime,
    pub host: &'a Host,
    pub template: &'a Template,
    /// The run's work directory; each case gets a subdirectory.
    pub work: PathBuf,
    pub negative: bool,
    pub keep: bool,
}

#[derive(Debug, Clone)]
pub struct CheckResult {
    pub check: String,
    pub status: Status,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub checks: Vec<CheckResult>,
    /// Why the case could not be carried out (a runtime error, a setup failure).
    pub error: Option<String>,
    pub seconds: f64,
}

impl CaseResult {
    /// The case's status. Normally a case fails if any check fails. As a negative control
    /// (`negative`) a case must fail *every* check, so it counts as failed only when no
    /// negated check passed; a negated check that passes cannot tell right from wrong.
    pub fn status(&self, negative: bool) -> Status {
        if self.error.is_some() {
            return Status::Fail;
        }
        let run: Vec<&CheckResult> = self
            .checks
            .iter()
            .filter(|c| c.status != Status::Skip)
            .collect();
        if run.is_empty() {
            return Status::Skip;
        }
        let failed = run.iter().filter(|c| c.status == Status::Fail).count();
        let fail = if negative {
            failed == run.len()
        } else {
            failed > 0
        };
        if fail {
            Status::Fail
        } else {
            Status::Pass
        }
    }

    /// One line that says why the case has its status.
    pub fn detail(&self, negative: bool) -> String {
        if let Some(e) = &self.error {
            return format!("case {}: {e}", self.name);
        }
        let of = |s: Status| self.checks.iter().filter(move |c| c.status == s);
        let skipped: Vec<String> = of(Status::Skip)
            .map(|c| format!("{} skipped: {}", c.check, c.detail))
            .collect();
        let run = self.checks.len() - skipped.len();
        let mut parts = Vec::new();
        match (self.status(negative), negative) {
            (Status::Skip, _) => {}
            (Status::Pass, false) => parts.push(format!("{run} checks passed")),
            (Status::Fail, false) => {
                parts.extend(of(Status::Fail).map(|c| format!("{}: {}", c.check, c.detail)))
            }
            (Status::Fail, true) => {
                parts.push(format!("all {run} negated checks failed, as required"))
            }
            (Status::Pass, true) => parts.extend(
                of(Status::Pass)
                    .map(|c| format!("negated check passed: {}: {}", c.check, c.detail)),
            ),
        }
        parts.extend(skipped);
        parts.join("; ")
    }
}

/// Runs one case and cleans up after it; never panics on runtime behaviour.
pub fn run(case: &Case, index: usize, env: &Env<'_>) -> CaseResult {
    let start = Instant::now();
    let dir = env.work.join(format!("{index:02}-{}", case.name));
    let mut result = CaseResult {
        name: case.name.to_string(),
        checks: Vec::new(),
        error: None,
        seconds: 0.0,
    };
    let (checks, error, ids) = match &case.kind {
        Kind::Checker(build) => {
            let mut out = Collected::default();
            let r = run_checker(case, *build, index, &dir, env, &mut out);
            (out.results, r.err(), out.ids)
        }
        Kind::Driven(drive) => {
            let mut d = Driver {
                env,
                dir: dir.clone(),
                index,
                results: Vec::new(),
                ids: Vec::new(),
                bundles: 0,
            };
            let r = drive(&mut d);
            (d.results, r.err(), d.ids)
        }
    };
    result.checks = checks;
    result.error = error;
    for id in &ids {
        env.runtime.force_delete(id);
    }
    if !env.keep {
        let _ = fs::remove_dir_all(&dir);
    }
    result.seconds = start.elapsed().as_secs_f64();
    result
}

/// Leaves out of the base config the namespaces this kernel does not have.
fn fit_host(bundle: &mut Bundle, host: &Host) {
    for (ns, typ) in checker::NS_TYPES {
        if !host.ns_inodes.contains_key(*ns) {
            bundle.remove_namespace(typ);
        }
    }
}

/// A unique container id for case `index`: the harness pid keeps concurrent runs apart.
fn container_id(index: usize, n: usize) -> String {
    format!("bc{}-{index:02}-{n}", std::process::id())
}

/// A checker case being prepared: its bundle and its checks.
pub struct Plan<'a> {
    pub host: &'a Host,
    pub bundle: Bundle,
    pub id: String,
    checks: Vec<Check>,
    skipped: Vec<CheckResult>,
}

impl Plan<'_> {
    /// Adds a check.
    pub fn check(&mut self, name: impl Into<String>, probe: Probe, expect: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            probe,
            expect: expect.into(),
            negate: false,
        });
    }

    /// Records a check that cannot be made on this host, and why.
    pub fn skip(&mut self, name: impl Into<String>, reason: impl Into<String>) {
        self.skipped.push(CheckResult {
            check: name.into(),
            status: Status::Skip,
            detail: reason.into(),
        });
    }

    /// The host inode of a namespace, for [`Probe::Namespace`].
    pub fn host_ns(&self, ns: &str) -> Option<u64> {
        self.host.ns_inodes.get(ns).copied()
    }
}

/// What a checker case leaves behind, even when it ends in an error: the containers to
/// delete and the results so far.
#[derive(Default)]
struct Collected {
    ids: Vec<String>,
    results: Vec<CheckResult>,
}

fn run_checker(
    case: &Case,
    build: fn(&mut Plan<'_>) -> Result<(), String>,
    index: usize,
    dir: &std::path::Path,
    env: &Env<'_>,
    out: &mut Collected,
) -> Result<(), String> {
    let mut bundle = Bundle::new(
        env.template,
        &dir.join("bundle"),
        &[CHECKER_IN_ROOTFS, EXPECT_IN_ROOTFS],
    )?;
    fit_host(&mut bundle, env.host);
    let mut plan = Plan {
        host: env.host,
        bundle,
        id: container_id(index, 0),
        checks: Vec::new(),
        skipped: Vec::new(),
    };
    build(&mut plan)?;
    out.results.extend(plan.skipped.iter().cloned());
    if plan.checks.is_empty() {
        return Ok(());
    }
    for c in &mut plan.checks {
        c.negate = env.negative;
    }
    let expectations = Expectations {
        case: case.name.to_string(),
        checks: plan.checks.clone(),
    };
    let text = serde_json::to_string_pretty(&expectations)
        .map_err(|e| format!("cannot serialise the expectations: {e}"))?;
    plan.bundle.write(EXPECT_IN_ROOTFS, &text)?;
    plan.bundle.save()?;
    out.ids.push(plan.id.clone());
    let bundle_arg = plan.bundle.dir.display().to_string();
    let ran = env
        .runtime
        .cmd(&["run", "--bundle", &bundle_arg, &plan.id])?;
    let lines: Vec<Line> = ran
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .collect();
    if let Some(bad) = lines.iter().find(|l| l.check == "expectations") {
        return Err(format!(
            "the checker refused its expectations: {}",
            bad.detail
        ));
    }
    for check in &plan.checks {
        match lines.iter().find(|l| l.check == check.name) {
            Some(l) => out.results.push(CheckResult {
                check: l.check.clone(),
                status: l.status,
                detail: l.detail.clone(),
            }),
            None => out.results.push(CheckResult {
                check: check.name.clone(),
                status: Status::Fail,
                detail: format!("the checker printed no result ({})", runtime_said(&ran)),
            }),
        }
    }
    if !ran.ok() {
        return Err(format!(
            "`{} run` failed after the checker printed {} of {} results: {}",
            env.runtime.name(),
            lines.len(),
            plan.checks.len(),
            ran.summary()
        ));
    }
    Ok(())
}

fn runtime_said(o: &Outcome) -> String {
    if o.ok() {
        "the container exited 0".to_string()
    } else {
        format!("run: {}", o.summary())
    }
}

/// A driven case in progress.
pub struct Driver<'a> {
    pub env: &'a Env<'a>,
    dir: PathBuf,
    index: usize,
    results: Vec<CheckResult>,
    ids: Vec<String>,
    bundles: usize,
}

impl Driver<'_> {
    pub fn rt(&self) -> &Runtime {
        self.env.runtime
    }

    /// A fresh container id, deleted (forcibly) when the case ends.
    pub fn new_id(&mut self) -> String {
        let id = container_id(self.index, self.ids.len() + 1);
        self.ids.push(id.clone());
        id
    }

    /// An id that is never created.
    pub fn unused_id(&self) -> String {
        format!("{}-never", container_id(self.index, 0))
    }

    /// A new bundle running `args`; call [`Bundle::save`] after editing it.
    pub fn bundle(&mut self, args: &[&str]) -> Result<Bundle, String> {
        self.bundles += 1;
        let mut b = Bundle::new(
            self.env.template,
            &self.dir.join(format!("bundle{}", self.bundles)),
            args,
        )?;
        fit_host(&mut b, self.env.host);
        b.save()?;
        Ok(b)
    }

    /// Records a check of an observation; negated as a negative control.
    pub fn expect(&mut self, check: impl Into<String>, observed: Observed, expect: &str) {
        let (status, detail) = judge(expect, self.env.negative, &observed);
        self.results.push(CheckResult {
            check: check.into(),
            status,
            detail,
        });
    }

    /// Runs a runtime command and checks whether it succeeded (`succeeds`/`fails`).
    pub fn expect_cmd(&mut self, check: &str, args: &[&str], succeed: bool) -> Option<Outcome> {
        let ran = self.rt().cmd(args);
        let observed = match &ran {
            Ok(o) => Observed::value(if o.ok() { "succeeds" } else { "fails" }, o.summary()),
            Err(e) => Observed::Error(e.clone()),
        };
        self.expect(check, observed, if succeed { "succeeds" } else { "fails" });
        ran.ok()
    }

    /// Checks `state ID`'s status.
    pub fn expect_status(&mut self, check: &str, id: &str, want: &str) {
        let observed = match self.rt().state(id) {
            Ok(s) => match s["status"].as_str() {
                Some(st) => Observed::value(st, "state"),
                None => Observed::Error(format!("`state {id}` has no status: {s}")),
            },
            Err(e) => Observed::Error(e),
        };
        self.expect(check, observed, want);
    }

    /// Waits (bounded) for `status` and checks it was reached.
    pub fn expect_reaches(&mut self, check: &str, id: &str, want: &str) {
        let observed = match self.rt().wait_status(id, want, WAIT_LIMIT) {
            Ok(st) => Observed::value(st, format!("state, waited up to {}s", WAIT_LIMIT.as_secs())),
            Err(e) => Observed::Error(e),
        };
        self.expect(check, observed, want);
    }
}

/// `alive` if a process with this pid exists (and is not a zombie), else `gone`; an error
/// when `state` gave no pid, so that a missing pid never passes as `gone`.
pub fn pid_liveness(pid: i64) -> Observed {
    if pid <= 0 {
        return Observed::Error(format!("no init pid to look at (state gave {pid})"));
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state letter follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?");
            let seen = if state == "Z" || state == "X" {
                "gone"
            } else {
                "alive"
            };
            Observed::value(seen, format!("pid {pid} state {state}"))
        }
        Err(_) => Observed::value("gone", format!("pid {pid}: no /proc entry")),
    }
}
