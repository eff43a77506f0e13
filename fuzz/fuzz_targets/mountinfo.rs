//! berth-cgroups' readers of the host: `/proc/self/mountinfo` and `/proc/self/cgroup`.
//!
//! The input is the mountinfo text, then optionally a NUL byte and the text of
//! `/proc/self/cgroup`. Both go through their parsers and the search for hierarchies,
//! then together into `Manager::with_system` (as `berth create` does with the real
//! files), whose cgroup directories must stay below the mount points found.
//! The runtime reads these files with `read_to_string`, so input that is not UTF-8 is
//! dropped.

#![no_main]

use std::path::{Path, PathBuf};

use berth_cgroups::mountinfo::{find_cgroup_mounts, parse_mountinfo, parse_proc_cgroup};
use berth_cgroups::{available_controllers, CgroupSetup, Manager, SystemView};
use berth_fuzz::{assert_confined, FakeHost};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (mountinfo, proc_cgroup) = text.split_once('\0').unwrap_or((text, ""));

    let mut mount_points = Vec::new();
    if let Ok(entries) = parse_mountinfo(mountinfo) {
        let mounts = find_cgroup_mounts(&entries);
        let _ = mounts.has_v1_controllers();
        let host = FakeHost::get();
        for v1 in &mounts.v1 {
            for controller in &v1.controllers {
                let _ = mounts.v1_for(controller);
            }
            mount_points.push(host_path(host.root(), &v1.mount_point));
        }
        if let Some(v2) = &mounts.v2 {
            mount_points.push(host_path(host.root(), &v2.mount_point));
        }
    }
    if let Ok(own) = parse_proc_cgroup(proc_cgroup) {
        for (controllers, _) in &own.v1 {
            let _ = own.v1_path(controllers);
        }
    }

    let sys = SystemView {
        root: FakeHost::get().root().to_path_buf(),
        mountinfo: mountinfo.to_string(),
        proc_self_cgroup: proc_cgroup.to_string(),
    };
    let _ = available_controllers(&sys);
    for cgroups_path in [None, Some(Path::new("/fuzz/abs")), Some(Path::new("rel"))] {
        let setup = CgroupSetup {
            cgroups_path,
            container_id: "fuzz",
            systemd: false,
        };
        if let Ok(manager) = Manager::with_system(&setup, sys.clone()) {
            assert_confined(&manager, &mount_points);
        }
    }
});

/// Where `SystemView::host_path` puts a host path.
fn host_path(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}
