//! Hook mode: record that a hook ran and the container state it was given.
//!
//! Each run appends one JSON line `{"hook": NAME, "state": STATE}` to the log with a single
//! `write(2)` on an `O_APPEND` file, so hooks that run one after another leave their lines in
//! the order they ran. A state that is not JSON is kept as `{"raw": TEXT}`.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::process::ExitCode;

use serde_json::{json, Value};

pub fn run(name: &str, log: &str) -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("berth-check hook {name}: cannot read the state from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let state = match serde_json::from_str::<Value>(&input) {
        Ok(v) => v,
        Err(_) => json!({ "raw": input }),
    };
    let mut line = json!({ "hook": name, "state": state }).to_string();
    line.push('\n');
    let written = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-check hook {name}: cannot append to {log}: {e}");
            ExitCode::FAILURE
        }
    }
}
