//! A bundle's config.json, as `berth create` takes it: parsed and validated by
//! `libberth::spec::parse_config` (the function `load_bundle` calls), then, for a config
//! that passes, the other checks `create` makes before it changes anything on the host:
//! the seccomp profile compiled, capabilities resolved, mount options parsed, and the
//! cgroup placed and `linux.resources` validated against a fake host.

#![no_main]

use std::path::Path;

use berth_cgroups::{CgroupSetup, Manager};
use berth_fuzz::{assert_confined, FakeHost, Layout};
use libberth::caps::CapSets;
use libberth::rootfs::options;
use libberth::spec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = spec::parse_config(Path::new("config.json"), data) else {
        return;
    };
    let linux = spec.linux().as_ref().expect("a valid config has linux");
    let process = spec.process().as_ref().expect("a valid config has process");

    if let Some(seccomp) = linux.seccomp() {
        let _ = berth_seccomp::compile(seccomp);
    }
    if let Some(caps) = process.capabilities() {
        let _ = CapSets::from_spec(caps);
    }
    for mount in spec.mounts().as_deref().unwrap_or_default() {
        let parsed = options::parse(mount.options().as_deref().unwrap_or_default());
        let _ = parsed.data_string();
        let _ = parsed.bind_remount_flags();
    }

    let host = FakeHost::get();
    let layout = Layout::pick(data.len());
    for systemd in [false, true] {
        let setup = CgroupSetup {
            cgroups_path: linux.cgroups_path().as_deref(),
            container_id: "fuzz",
            systemd,
        };
        let Ok(manager) = Manager::with_system(&setup, host.view(layout)) else {
            continue;
        };
        assert_confined(&manager, &host.mount_points(layout));
        if let Some(resources) = linux.resources() {
            let _ = manager.validate(resources);
        }
    }
});
