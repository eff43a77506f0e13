//! The hooks case: every kind of hook runs berth-check in hook mode, which appends the hook's
//! name and the state it got on stdin to one log. The log then shows the order the hooks ran
//! in and what each was told.

use std::fs;

use berth_conformance::Observed;
use serde_json::{json, Value};

use super::{Case, Driver, Kind};
use crate::bundle::CHECKER_IN_ROOTFS;

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "hooks-order",
            about: "the six hook kinds run in lifecycle order: three in create, two in start, \
                    poststop in delete",
            kind: Kind::Driven(hooks_order),
        },
        Case {
            name: "hooks-state",
            about: "each hook gets the state on stdin: its status, the id, the bundle, the pid",
            kind: Kind::Driven(hooks_state),
        },
    ]
}

/// Hook kinds in the order the runtime-spec's lifecycle runs them, and the status each
/// should see in the state on its stdin. The create-time hooks run after the runtime
/// environment is built (lifecycle step 2), which is what "created" means; OCI
/// runtime-tools' hooks_stdin checks the same (runc reports "creating" and fails it).
const ORDER: &[(&str, &str)] = &[
    ("prestart", "created"),
    ("createRuntime", "created"),
    ("createContainer", "created"),
    ("startContainer", "created"),
    ("poststart", "running"),
    ("poststop", "stopped"),
];

/// Where the log is inside the container, for startContainer (which runs after pivot_root).
const LOG_DIR_INSIDE: &str = "/hooklog";

/// The hook entries read back from the log.
fn read_log(path: &std::path::Path) -> Result<Vec<Value>, String> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read the hook log {}: {e}", path.display())),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("bad hook log line {l:?}: {e}")))
        .collect()
}

fn names(entries: &[Value]) -> String {
    let list: Vec<&str> = entries.iter().filter_map(|e| e["hook"].as_str()).collect();
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(",")
    }
}

/// One container's life with every hook, and the hook log read back at each step.
struct HookedRun {
    id: String,
    bundle: String,
    /// The init pid `state` reported after create, 0 if none.
    pid: i64,
    after_create: Result<Vec<Value>, String>,
    before_delete: Result<Vec<Value>, String>,
    after_delete: Result<Vec<Value>, String>,
}

fn hooked_run(d: &mut Driver<'_>) -> Result<HookedRun, String> {
    let mut b = d.bundle(&["/bin/sleep", "600"])?;
    let log_dir = b.dir.join("hooklog");
    fs::create_dir_all(&log_dir)
        .map_err(|e| format!("cannot create {}: {e}", log_dir.display()))?;
    let log = log_dir.join("hooks.log");
    let host_checker = b.rootfs_path(CHECKER_IN_ROOTFS).display().to_string();
    let host_log = log.display().to_string();
    let inside_log = format!("{LOG_DIR_INSIDE}/hooks.log");
    let mut hooks = serde_json::Map::new();
    for (kind, _) in ORDER {
        // startContainer's path resolves in the container; every other hook's in the runtime
        // namespace (createContainer runs in the container's namespaces before pivot_root).
        let (path, log) = if *kind == "startContainer" {
            (CHECKER_IN_ROOTFS, inside_log.as_str())
        } else {
            (host_checker.as_str(), host_log.as_str())
        };
        hooks.insert(
            kind.to_string(),
            json!([{"path": path, "args": ["berth-check", "--hook", kind, log], "timeout": 20}]),
        );
    }
    b.config["hooks"] = Value::Object(hooks);
    b.add_mount(json!({"destination": LOG_DIR_INSIDE, "type": "bind",
        "source": log_dir.display().to_string(), "options": ["rbind", "rw"]}));
    b.save()?;
    let bundle = b.dir.display().to_string();
    let id = d.new_id();

    d.expect_cmd("create", &["create", "--bundle", &bundle, &id], true);
    let after_create = read_log(&log);
    let pid = d
        .rt()
        .state(&id)
        .ok()
        .and_then(|s| s["pid"].as_i64())
        .unwrap_or(0);
    d.expect_cmd("start", &["start", &id], true);
    d.expect_cmd("kill", &["kill", &id, "KILL"], true);
    d.expect_reaches("stopped", &id, "stopped");
    let before_delete = read_log(&log);
    d.expect_cmd("delete", &["delete", &id], true);
    let after_delete = read_log(&log);
    Ok(HookedRun {
        id,
        bundle,
        pid,
        after_create,
        before_delete,
        after_delete,
    })
}

fn observe_names(log: &Result<Vec<Value>, String>) -> Observed {
    match log {
        Ok(entries) => Observed::value(names(entries), "hook log"),
        Err(e) => Observed::Error(e.clone()),
    }
}

fn hooks_order(d: &mut Driver<'_>) -> Result<(), String> {
    let run = hooked_run(d)?;
    let all: Vec<&str> = ORDER.iter().map(|(k, _)| *k).collect();
    d.expect(
        "hooks run by create",
        observe_names(&run.after_create),
        &all[..3].join(","),
    );
    d.expect(
        "hooks run by start",
        observe_names(&run.before_delete),
        &all[..5].join(","),
    );
    d.expect(
        "hooks run by delete",
        observe_names(&run.after_delete),
        &all.join(","),
    );
    Ok(())
}

fn hooks_state(d: &mut Driver<'_>) -> Result<(), String> {
    let run = hooked_run(d)?;
    let entries = match &run.after_delete {
        Ok(e) => e.clone(),
        Err(e) => return Err(e.clone()),
    };
    for (kind, status) in ORDER {
        let entry = entries.iter().find(|e| e["hook"] == *kind);
        let field = |f: &str| match entry {
            Some(e) => match &e["state"][f] {
                Value::Null => Observed::value("<absent>", format!("{kind} state")),
                Value::String(s) => Observed::value(s.as_str(), format!("{kind} state")),
                v => Observed::value(v.to_string(), format!("{kind} state")),
            },
            None => Observed::Error(format!("the {kind} hook did not run")),
        };
        d.expect(format!("{kind} status"), field("status"), status);
        d.expect(format!("{kind} id"), field("id"), &run.id);
        d.expect(format!("{kind} bundle"), field("bundle"), &run.bundle);
        // Hooks in the runtime namespace are told the init's pid as the host sees it.
        if matches!(*kind, "prestart" | "createRuntime" | "poststart") {
            d.expect(format!("{kind} pid"), field("pid"), &run.pid.to_string());
        }
    }
    Ok(())
}
