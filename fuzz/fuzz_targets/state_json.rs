//! The state the runtime saves and the state hooks receive.
//!
//! - `<root>/<id>/state.json` as every command after `create` reads it
//!   (`libberth::state::load_saved`): a parsed record must save and load again to the
//!   same value, and the state berth hands to hooks (`Saved::report`) must read as the
//!   runtime spec's `State`.
//! - The same bytes as a hook's stdin: oci-spec's `State`, which must write back and read
//!   again to the same value.
//! - The same bytes as `/proc/<pid>/stat`, from which every command derives the status
//!   (`state::parse_proc_stat`); the container names the process, and the name may hold
//!   spaces and `)`.

#![no_main]

use berth_fuzz::scratch_file;
use libberth::state::{self, Saved, Status, STATE_FILE};
use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::State;

fuzz_target!(|data: &[u8]| {
    let file = scratch_file(STATE_FILE, data);
    let dir = file.parent().expect("a scratch file has a directory");
    if let Ok(saved) = state::load_saved(dir) {
        check_saved(&saved);
    }

    if let Ok(text) = std::str::from_utf8(data) {
        let _ = state::parse_proc_stat(text);
    }

    if let Ok(hook_state) = serde_json::from_slice::<State>(data) {
        let text = serde_json::to_vec(&hook_state).expect("a parsed State writes back");
        let again: State = serde_json::from_slice(&text).expect("a written State reads again");
        assert_eq!(
            serde_json::to_value(&hook_state).expect("State to JSON"),
            serde_json::to_value(&again).expect("State to JSON"),
        );
    }
});

fn check_saved(saved: &Saved) {
    let text = serde_json::to_vec(saved).expect("a loaded state saves again");
    let again: Saved = serde_json::from_slice(&text).expect("a saved state loads again");
    assert_eq!(
        serde_json::to_value(saved).expect("Saved to JSON"),
        serde_json::to_value(&again).expect("Saved to JSON"),
    );
    let _ = state::validate_id(&saved.id);
    if let Some(manager) = &saved.cgroup {
        let _ = manager.cgroup_dirs();
    }

    // `berth state` also prints "paused", as runc does; the runtime spec's State (and
    // oci-spec's) has no such status, and no hook runs while a container is paused.
    let paused = serde_json::to_vec(&saved.report(Status::Paused)).expect("a report writes");
    assert!(serde_json::from_slice::<serde_json::Value>(&paused).is_ok());
    for status in [
        Status::Creating,
        Status::Created,
        Status::Running,
        Status::Stopped,
    ] {
        let report = serde_json::to_vec(&saved.report(status)).expect("a report writes");
        let hook_state: State = serde_json::from_slice(&report).unwrap_or_else(|e| {
            panic!(
                "hooks cannot read the state berth gives them ({e}): {}",
                String::from_utf8_lossy(&report)
            )
        });
        assert_eq!(hook_state.id(), &saved.id);
        assert_eq!(hook_state.bundle(), &saved.bundle);
    }
}
