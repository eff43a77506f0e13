//! `berth update`: the `-r` JSON and runc's size flags.
//!
//! `update.rs` lives in the `berth` binary crate, which a fuzz crate cannot depend on;
//! it is compiled in here from its own source file, so the code fuzzed is the code
//! shipped. Its `resources` takes the parsed command line (`berth_cli::Update`), so the
//! input goes through clap as `berth update` would see it:
//! - the whole input as the file of `berth update -r FILE`, then the resources
//!   validated (`Manager::validate`, the first step of `Manager::apply_resources`)
//!   against a fake host in each cgroup layout;
//! - each line as a size for `parse_bytes`, and the first lines as
//!   `--memory`, `--memory-reservation`, `--memory-swap`, `--kernel-memory` and
//!   `--kernel-memory-tcp`.

#![no_main]

// Whatever else update.rs comes to hold need not be used here.
#[path = "../../crates/berth/src/update.rs"]
#[allow(dead_code)]
mod update;

use std::ffi::OsString;

use berth_cgroups::{CgroupSetup, Manager};
use berth_cli::Update;
use berth_fuzz::{scratch_file, FakeHost, Layout};
use clap::{Args, Command, FromArgMatches};
use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::LinuxResources;

const SIZE_FLAGS: [&str; 5] = [
    "--memory",
    "--memory-reservation",
    "--memory-swap",
    "--kernel-memory",
    "--kernel-memory-tcp",
];

fuzz_target!(|data: &[u8]| {
    let file = scratch_file("resources.json", data);
    let args = [OsString::from("--resources"), file.into_os_string()];
    if let Some(Ok(resources)) = parse_args(args).map(|u| update::resources(&u)) {
        validate(&resources);
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        if let Ok(size) = update::parse_bytes(line) {
            assert!(size >= -1, "{line:?} parsed as {size}");
        }
    }
    let args = SIZE_FLAGS
        .iter()
        .zip(text.lines())
        .map(|(flag, value)| OsString::from(format!("{flag}={value}")));
    if let Some(Ok(resources)) = parse_args(args).map(|u| update::resources(&u)) {
        validate(&resources);
    }
});

/// `berth update ARGS fuzz`, parsed as the CLI parses it; `None` if clap refuses it.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Option<Update> {
    let command = Update::augment_args(Command::new("update").no_binary_name(true));
    let argv = args.into_iter().chain([OsString::from("fuzz")]);
    let matches = command.try_get_matches_from(argv).ok()?;
    Update::from_arg_matches(&matches).ok()
}

fn validate(resources: &LinuxResources) {
    let host = FakeHost::get();
    let setup = CgroupSetup {
        cgroups_path: None,
        container_id: "fuzz",
        systemd: false,
    };
    for layout in Layout::ALL {
        let manager = Manager::with_system(&setup, host.view(layout))
            .unwrap_or_else(|e| panic!("the fake {layout:?} host is refused: {e}"));
        let _ = manager.validate(resources);
    }
}
