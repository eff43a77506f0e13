//! A pure cgroup v2 host, made here by a private mount namespace in which /sys/fs/cgroup is
//! the cgroup2 hierarchy alone (this machine is hybrid: the v1 mounts go, the one cgroup2
//! hierarchy stays). berth must detect v2, make the cgroup there, enforce the device rules
//! with an eBPF program, show cgroup2 at the container's cgroup mount, and remove it all.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::*;

/// Runs `berth run` for `bundle` inside a mount namespace whose only cgroup mount is cgroup2.
fn run_on_v2(berth: &Berth, id: &str, bundle: &Bundle) -> (Option<i32>, String, String) {
    let script = format!(
        "set -e; for m in $(awk '$5 ~ \"^/sys/fs/cgroup/\" {{print $5}}' /proc/self/mountinfo); do umount -l $m; done; \
         umount -l /sys/fs/cgroup; mount -t cgroup2 cgroup2 /sys/fs/cgroup; \
         exec {} --root {} run --bundle {} {id}",
        berth_bin().display(),
        berth.root().display(),
        bundle.path().display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn unified_mount() -> Option<String> {
    let mi = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mi.lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
}

#[test]
fn container_on_a_cgroup_v2_host_gets_cgroup2_and_a_device_program() {
    let Some(unified) = unified_mount() else {
        skip(
            "container_on_a_cgroup_v2_host_gets_cgroup2_and_a_device_program",
            "this kernel has no cgroup2 hierarchy mounted",
        );
        return;
    };
    let berth = Berth::new();
    let id = unique_id("v2");
    // c 1:4 (/dev/port) is in no allow rule: the device program must refuse opening it,
    // while /dev/null stays usable. /dev is a tmpfs without nodev, so only the cgroup stops it.
    // CAP_MKNOD so that only the device program decides (it allows mknod of any char device).
    let b = Bundle::new()
        .sh(
            "grep ' /sys/fs/cgroup ' /proc/self/mountinfo | sed 's/.* - \\([^ ]*\\) .*/fs=\\1/'; \
             cat /proc/self/cgroup; \
             echo x > /dev/null && echo null-ok; \
             mknod /dev/port-test c 1 4 && (head -c1 /dev/port-test >/dev/null 2>&1 && echo port-open || echo port-denied)",
        )
        .edit(|c| {
            for set in ["bounding", "effective", "permitted"] {
                c["process"]["capabilities"][set]
                    .as_array_mut()
                    .expect("capability set")
                    .push(serde_json::json!("CAP_MKNOD"));
            }
        });
    let (code, out, err) = run_on_v2(&berth, &id, &b);
    assert_eq!(code, Some(0), "stdout {out:?} stderr {err:?}");
    assert!(
        out.lines().any(|l| l == "fs=cgroup2"),
        "the cgroup mount is not cgroup2: {out}"
    );
    assert!(
        out.lines().any(|l| l == "0::/"),
        "not in its own cgroup namespace root: {out}"
    );
    assert!(out.contains("null-ok"), "{out} {err}");
    assert!(
        out.contains("port-denied"),
        "the eBPF device program let c 1:4 through: {out}"
    );
    // Removed on delete, in the real hierarchy too.
    assert!(
        !Path::new(&unified).join(&id).exists(),
        "cgroup {unified}/{id} left behind"
    );
    assert_no_leftovers(&berth, &id, b.path());
}
