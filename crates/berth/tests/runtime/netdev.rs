//! `linux.netDevices`: host devices moved into the container's network namespace.
//!
//! Each test makes its own virtual device on the host (a `dummy`, or an `ifb` where the
//! kernel has no dummy driver) and removes it on drop if it is still there. Addresses are
//! put only on those devices, from 10.231.0.0/16 and the IPv6 documentation prefix.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// A virtual device on the host, deleted on drop if it is still on the host.
struct HostLink {
    name: String,
    /// A number unique in this test process, to pick addresses no other test uses.
    n: usize,
}

impl HostLink {
    fn new() -> HostLink {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // "bt" + pid (at most 7 digits) + "n" + counter: within the kernel's 15 bytes.
        let name = format!("bt{}n{n}", std::process::id());
        let dummy = ip_output(&["link", "add", &name, "type", "dummy"]);
        if !dummy.status.success() {
            ip(&["link", "add", &name, "type", "ifb"]);
        }
        HostLink { name, n }
    }

    /// An IPv4 address (without prefix) on a subnet of this test process.
    fn v4(&self, host: u8) -> String {
        format!("10.231.{}.{host}", std::process::id() % 250)
    }

    /// An IPv6 global address (without prefix) of this device.
    fn v6(&self) -> String {
        format!("2001:db8:{:x}:{:x}::1", std::process::id() % 0xffff, self.n)
    }

    fn on_host(&self) -> bool {
        on_host(&self.name)
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        if self.on_host() {
            let _ = ip_output(&["link", "del", &self.name]);
        }
    }
}

fn on_host(name: &str) -> bool {
    ip_output(&["-o", "link", "show", "dev", name])
        .status
        .success()
}

fn ip_output(args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run ip {args:?}: {e}"))
}

/// Runs the host's `ip` and panics if it fails.
fn ip(args: &[&str]) {
    let out = ip_output(args);
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bundle that moves `devices` into its new network namespace and runs `script`.
fn bundle(devices: Value, script: &str) -> Bundle {
    Bundle::new().sh(script).edit(|v| {
        set_namespace(v, "network", None);
        v["linux"]["netDevices"] = devices;
    })
}

/// create, check the host, start, wait until stopped, delete; returns the container's stdout.
fn run_checking_host(link: &HostLink, b: &Bundle) -> String {
    let berth = Berth::new();
    let id = unique_id("netdev");
    berth.create(&id, b.path(), &[]).assert_ok("create");
    assert!(
        !link.on_host(),
        "{} is still on the host after create",
        link.name
    );
    berth.cmd(&["start", &id]).assert_ok("start");
    berth.wait_status(&id, "stopped");
    berth.cmd(&["delete", &id]).assert_ok("delete");
    let out = berth.container_stdout(&id);
    assert!(
        out.contains("END"),
        "the container did not finish its script; stdout: {out:?}, stderr: {:?}",
        berth.container_stderr(&id)
    );
    out
}

/// The `ip -o` lines that name `dev`.
fn lines_of<'a>(out: &'a str, dev: &str) -> Vec<&'a str> {
    let tag = format!(" {dev}");
    out.lines().filter(|l| l.contains(&tag)).collect()
}

#[test]
fn device_is_moved_renamed_and_up() {
    let link = HostLink::new();
    let b = bundle(
        json!({ &link.name: {"name": "ctr0"} }),
        "ip -o link; echo END",
    );

    let out = run_checking_host(&link, &b);

    let lines: Vec<&str> = out.lines().filter(|l| l.contains(": ctr0:")).collect();
    assert_eq!(lines.len(), 1, "ctr0 not seen once in the container: {out}");
    let flags = lines[0]
        .split_once('<')
        .and_then(|(_, r)| r.split_once('>'))
        .map(|(f, _)| f)
        .unwrap_or("");
    assert!(
        flags.split(',').any(|f| f == "UP"),
        "ctr0 is not up: {}",
        lines[0]
    );
    assert!(
        !out.contains(&link.name),
        "the host name is still seen: {out}"
    );
}

#[test]
fn device_reaches_a_container_in_a_user_namespace() {
    let link = HostLink::new();
    let b = bundle(
        json!({ &link.name: {"name": "ctr0"} }),
        "ip -o link; echo END",
    )
    .edit(with_user_namespace);

    let out = run_checking_host(&link, &b);

    assert!(
        out.lines().any(|l| l.contains(": ctr0:")),
        "ctr0 not in the container: {out}"
    );
}

#[test]
fn device_without_a_name_keeps_its_host_name() {
    let link = HostLink::new();
    let b = bundle(json!({ &link.name: {} }), "ip -o link; echo END");

    let out = run_checking_host(&link, &b);

    assert!(
        out.contains(&format!(": {}:", link.name)),
        "{} not seen in the container: {out}",
        link.name
    );
}

#[test]
fn permanent_global_addresses_of_both_families_survive() {
    let link = HostLink::new();
    let v4 = link.v4(2);
    let v6 = link.v6();
    ip(&[
        "addr",
        "add",
        &format!("{v4}/24"),
        "brd",
        "+",
        "dev",
        &link.name,
    ]);
    ip(&[
        "addr",
        "add",
        &format!("{v6}/64"),
        "dev",
        &link.name,
        "nodad",
    ]);
    let b = bundle(
        json!({ &link.name: {"name": "ctr0"} }),
        "ip -o addr show dev ctr0; echo END",
    );

    let out = run_checking_host(&link, &b);

    let lines = lines_of(&out, "ctr0");
    let bcast = link.v4(255);
    assert!(
        lines.iter().any(|l| l.contains(&format!("inet {v4}/24"))
            && l.contains(&format!("brd {bcast}"))
            && l.contains("scope global")),
        "{v4}/24 with broadcast {bcast} not in the container: {out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("inet6 {v6}/64")) && l.contains("scope global")),
        "{v6}/64 not in the container: {out}"
    );
}

#[test]
fn link_scope_addresses_are_not_kept() {
    let link = HostLink::new();
    let global = link.v4(3);
    // The kernel wants one scope per IPv4 subnet: the link-scope one gets its own.
    let local = format!("10.232.{}.4", std::process::id() % 250);
    let local6 = format!("fe80::b:{:x}", link.n);
    ip(&["addr", "add", &format!("{global}/24"), "dev", &link.name]);
    ip(&[
        "addr",
        "add",
        &format!("{local}/24"),
        "scope",
        "link",
        "dev",
        &link.name,
    ]);
    ip(&[
        "addr",
        "add",
        &format!("{local6}/64"),
        "dev",
        &link.name,
        "nodad",
    ]);
    let b = bundle(
        json!({ &link.name: {"name": "ctr0"} }),
        "ip -o addr show dev ctr0; echo END",
    );

    let out = run_checking_host(&link, &b);

    assert!(
        out.contains(&format!("inet {global}/24")),
        "the global address is missing: {out}"
    );
    assert!(
        !out.contains(&format!("inet {local}/")),
        "the link-scope IPv4 address was kept: {out}"
    );
    assert!(
        !out.contains(&format!("inet6 {local6}/")),
        "the link-scope IPv6 address was kept: {out}"
    );
}

#[test]
fn address_with_a_lifetime_is_not_kept() {
    let link = HostLink::new();
    let global = link.v4(5);
    let dynamic = link.v4(6);
    ip(&["addr", "add", &format!("{global}/24"), "dev", &link.name]);
    ip(&[
        "addr",
        "add",
        &format!("{dynamic}/24"),
        "valid_lft",
        "600",
        "preferred_lft",
        "600",
        "dev",
        &link.name,
    ]);
    let b = bundle(
        json!({ &link.name: {"name": "ctr0"} }),
        "ip -o addr show dev ctr0; echo END",
    );

    let out = run_checking_host(&link, &b);

    assert!(
        out.contains(&format!("inet {global}/24")),
        "the permanent address is missing: {out}"
    );
    assert!(
        !out.contains(&format!("inet {dynamic}/")),
        "the address with a lifetime was kept: {out}"
    );
}

#[test]
fn template_name_gets_the_first_free_number() {
    let link = HostLink::new();
    let b = bundle(
        json!({ &link.name: {"name": "eth%d"} }),
        "ip -o link; echo END",
    );

    let out = run_checking_host(&link, &b);

    assert!(
        out.lines().any(|l| l.contains(": eth0:")),
        "eth0 not in the container: {out}"
    );
}

#[test]
fn name_taken_in_the_container_is_refused_and_nothing_moves() {
    let link = HostLink::new();
    let b = bundle(json!({ &link.name: {"name": "lo"} }), "echo END");
    let berth = Berth::new();
    let id = unique_id("netdev");

    let out = berth.create(&id, b.path(), &[]);

    out.assert_error("create with a name taken in the container")
        .assert_stderr_has(
            "name taken",
            &[&id, "linux.netDevices", &link.name, "as lo", "File exists"],
        );
    assert_no_leftovers(&berth, &id, b.path());
    assert!(link.on_host(), "{} left the host", link.name);
}

#[test]
fn missing_host_device_fails_create_and_moves_nothing() {
    let link = HostLink::new();
    // Sorts after the real device: a runtime that moved devices one by one would move it first.
    let missing = format!("zz{}m{}", std::process::id(), link.n);
    let b = bundle(
        json!({ &link.name: {"name": "ctr0"}, &missing: {} }),
        "echo END",
    );
    let berth = Berth::new();
    let id = unique_id("netdev");

    let out = berth.create(&id, b.path(), &[]);

    out.assert_error("create with a missing host device")
        .assert_stderr_has(
            "missing device",
            &[&id, "linux.netDevices", &missing, "No such device"],
        );
    assert_no_leftovers(&berth, &id, b.path());
    assert!(link.on_host(), "{} left the host", link.name);
}

#[test]
fn net_devices_without_a_network_namespace_is_refused() {
    let link = HostLink::new();
    let b = Bundle::new().edit(|v| {
        remove_namespace(v, "network");
        v["linux"]["netDevices"] = json!({ &link.name: {} });
    });
    let berth = Berth::new();
    let id = unique_id("netdev");

    let out = berth.create(&id, b.path(), &[]);

    out.assert_error("create with netDevices and no network namespace")
        .assert_stderr_has("no netns", &[&id, "linux.netDevices", "network namespace"]);
    assert_no_leftovers(&berth, &id, b.path());
    assert!(link.on_host(), "{} left the host", link.name);
}

#[test]
fn device_is_not_moved_back_at_delete() {
    let link = HostLink::new();
    let b = bundle(
        json!({ &link.name: {"name": "ctr0"} }),
        "ip -o link show ctr0 && echo READY; sleep 60",
    );
    let berth = Berth::new();
    let id = unique_id("netdev");
    berth.start_and_wait(&id, &b, "READY");

    berth
        .cmd(&["delete", "--force", &id])
        .assert_ok("delete --force");

    // A virtual device dies with the namespace; moved back, it would be on the host at once.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1) {
        assert!(
            !link.on_host(),
            "{} came back to the host after delete",
            link.name
        );
        assert!(!on_host("ctr0"), "ctr0 came back to the host after delete");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_no_leftovers(&berth, &id, b.path());
}

#[test]
fn features_report_net_devices() {
    let berth = Berth::new();

    let out = berth.cmd(&["features"]);

    out.assert_ok("features");
    let v: Value = serde_json::from_str(&out.stdout).expect("features prints JSON");
    assert_eq!(v["linux"]["netDevices"]["enabled"], true, "{v}");
}
