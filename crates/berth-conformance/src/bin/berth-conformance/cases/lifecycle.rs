//! Cases driven from the harness: state transitions, `state` output and the error cases.

use berth_conformance::Observed;

use super::{pid_liveness, Case, Driver, Kind};

pub fn cases() -> Vec<Case> {
    let case = |name, about, drive| Case {
        name,
        about,
        kind: Kind::Driven(drive),
    };
    vec![
        case(
            "lifecycle",
            "created -> running -> stopped -> deleted; state's id, status, pid, bundle, ociVersion",
            lifecycle,
        ),
        case(
            "run-exit-status",
            "`run` passes the container's output through and exits with its status",
            run_exit_status,
        ),
        case(
            "delete-created",
            "a created container that never started can be deleted; its init goes away",
            delete_created,
        ),
        case("start-twice", "a second `start` fails", start_twice),
        case(
            "delete-running",
            "`delete` of a running container fails without --force, works with it",
            delete_running,
        ),
        case(
            "kill-stopped",
            "`kill` of a stopped container fails",
            kill_stopped,
        ),
        case(
            "duplicate-id",
            "`create` with an id in use fails and leaves the first container alone",
            duplicate_id,
        ),
        case(
            "unknown-id",
            "`state`, `start`, `kill` and `delete` of an unknown id fail",
            unknown_id,
        ),
    ]
}

const SLEEPER: &[&str] = &["/bin/sleep", "600"];

/// A field of `state ID` as text (`<absent>` if missing).
fn state_field(d: &Driver<'_>, id: &str, field: &str) -> Observed {
    match d.rt().state(id) {
        Ok(s) => match &s[field] {
            serde_json::Value::Null => Observed::value("<absent>", "state"),
            serde_json::Value::String(v) => Observed::value(v.as_str(), "state"),
            v => Observed::value(v.to_string(), "state"),
        },
        Err(e) => Observed::Error(e),
    }
}

/// The init pid `state` reports, 0 if it cannot be had.
fn state_pid(d: &Driver<'_>, id: &str) -> i64 {
    d.rt()
        .state(id)
        .ok()
        .and_then(|s| s["pid"].as_i64())
        .unwrap_or(0)
}

fn lifecycle(d: &mut Driver<'_>) -> Result<(), String> {
    let b = d.bundle(SLEEPER)?;
    let bundle = b.dir.display().to_string();
    let id = d.new_id();
    d.expect_cmd("create", &["create", "--bundle", &bundle, &id], true);
    d.expect_status("status after create", &id, "created");
    let seen = state_field(d, &id, "id");
    d.expect("state id", seen, &id);
    let seen = state_field(d, &id, "bundle");
    d.expect("state bundle", seen, &bundle);
    let version = match state_field(d, &id, "ociVersion") {
        Observed::Value { value, source } => {
            let present = if value.is_empty() || value == "<absent>" {
                "absent"
            } else {
                "present"
            };
            Observed::value(present, format!("{source}: {value:?}"))
        }
        other => other,
    };
    d.expect("state ociVersion", version, "present");
    let pid = state_pid(d, &id);
    d.expect("init alive after create", pid_liveness(pid), "alive");
    d.expect_cmd("start", &["start", &id], true);
    d.expect_status("status after start", &id, "running");
    let seen = state_field(d, &id, "pid");
    d.expect("pid unchanged by start", seen, &pid.to_string());
    d.expect_cmd("kill KILL", &["kill", &id, "KILL"], true);
    d.expect_reaches("status after kill", &id, "stopped");
    d.expect_cmd("delete", &["delete", &id], true);
    d.expect_cmd("state after delete", &["state", &id], false);
    d.expect("init gone after delete", pid_liveness(pid), "gone");
    Ok(())
}

fn run_exit_status(d: &mut Driver<'_>) -> Result<(), String> {
    let b = d.bundle(&["/bin/sh", "-c", "echo conformance-out; exit 7"])?;
    let bundle = b.dir.display().to_string();
    let id = d.new_id();
    let (status, output) = match d.rt().cmd(&["run", "--bundle", &bundle, &id]) {
        Ok(o) => {
            let how = match (o.code, o.signal) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(s)) => format!("signal {s}"),
                _ => "unknown".to_string(),
            };
            (
                Observed::value(how, o.summary()),
                Observed::value(o.stdout.trim(), "stdout of run"),
            )
        }
        Err(e) => (Observed::Error(e.clone()), Observed::Error(e)),
    };
    d.expect("exit status", status, "exit 7");
    d.expect("output", output, "conformance-out");
    Ok(())
}

fn delete_created(d: &mut Driver<'_>) -> Result<(), String> {
    let b = d.bundle(SLEEPER)?;
    let bundle = b.dir.display().to_string();
    let id = d.new_id();
    d.expect_cmd("create", &["create", "--bundle", &bundle, &id], true);
    let pid = state_pid(d, &id);
    d.expect_cmd("delete of created", &["delete", &id], true);
    d.expect_cmd("state after delete", &["state", &id], false);
    crate::runtime::reap_orphans();
    d.expect("init gone after delete", pid_liveness(pid), "gone");
    Ok(())
}

fn start_twice(d: &mut Driver<'_>) -> Result<(), String> {
    let b = d.bundle(SLEEPER)?;
    let bundle = b.dir.display().to_string();
    let id = d.new_id();
    d.expect_cmd("create", &["create", "--bundle", &bundle, &id], true);
    d.expect_cmd("first start", &["start", &id], true);
    d.expect_cmd("second start", &["start", &id], false);
    d.expect_status("status after second start", &id, "running");
    Ok(())
}

fn delete_running(d: &mut Driver<'_>) -> Result<(), String> {
    let b = d.bundle(SLEEPER)?;
    let bundle = b.dir.display().to_string();
    let id = d.new_id();
    d.expect_cmd("create", &["create", "--bundle", &bundle, &id], true);
    d.expect_cmd("start", &["start", &id], true);
    d.expect_cmd("delete without --force", &["delete", &id], false);
    d.expect_status("status after refused delete", &id, "running");
    d.expect_cmd("delete --force", &["delete", "--force", &id], true);
    d.expect_cmd("state after delete --force", &["state", &id], false);
    Ok(())
}

fn kill_stopped(d: &mut Driver<'_>) -> Result<(), String> {
    let b = d.bundle(&["/bin/true"])?;
    let bundle = b.dir.display().to_string();
    let id = d.new_id();
    d.expect_cmd("create", &["create", "--bundle", &bundle, &id], true);
    d.expect_cmd("start", &["start", &id], true);
    d.expect_reaches("status after exit", &id, "stopped");
    d.expect_cmd("kill of stopped", &["kill", &id, "KILL"], false);
    Ok(())
}

fn duplicate_id(d: &mut Driver<'_>) -> Result<(), String> {
    let first = d.bundle(SLEEPER)?;
    let second = d.bundle(SLEEPER)?;
    let (b1, b2) = (
        first.dir.display().to_string(),
        second.dir.display().to_string(),
    );
    let id = d.new_id();
    d.expect_cmd("first create", &["create", "--bundle", &b1, &id], true);
    d.expect_cmd(
        "second create, same id",
        &["create", "--bundle", &b2, &id],
        false,
    );
    d.expect_status("first container's status", &id, "created");
    let seen = state_field(d, &id, "bundle");
    d.expect("first container's bundle", seen, &b1);
    Ok(())
}

fn unknown_id(d: &mut Driver<'_>) -> Result<(), String> {
    let id = d.unused_id();
    d.expect_cmd("state", &["state", &id], false);
    d.expect_cmd("start", &["start", &id], false);
    d.expect_cmd("kill", &["kill", &id, "KILL"], false);
    d.expect_cmd("delete", &["delete", &id], false);
    Ok(())
}
