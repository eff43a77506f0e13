//! [`Manager::watch_oom`](crate::Manager::watch_oom) against fake cgroup files. The kernel's
//! side is played by the test: on v2 it rewrites `memory.events` and `cgroup.events` (which
//! inotify sees as on a real cgroup); on v1 it signals the registered eventfd itself.

use std::fs;
use std::os::fd::AsFd;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::fake::{read, touch, FakeHost};
use crate::{CgroupError, OomNotice};

const SOON: Option<Duration> = Some(Duration::from_secs(5));

fn unified_dir(host: &FakeHost) -> std::path::PathBuf {
    host.host_path("/sys/fs/cgroup/berth/ctr")
}

fn memory_events(oom_kill: u64) -> String {
    format!("low 0\nhigh 0\nmax 3\noom 1\noom_kill {oom_kill}\noom_group_kill 0\n")
}

/// A unified host with a created, populated container cgroup, one OOM kill in the past.
fn v2_host() -> FakeHost {
    let host = FakeHost::unified();
    host.created();
    touch(
        &unified_dir(&host),
        &[
            ("memory.events", &memory_events(1)),
            ("cgroup.events", "populated 1\nfrozen 0\n"),
        ],
    );
    host
}

#[test]
fn v2_reports_a_new_oom_kill_once() {
    let host = v2_host();
    let mut watcher = host.created().watch_oom().unwrap();
    let stop = AtomicBool::new(false);
    assert_eq!(
        watcher.check().unwrap(),
        None,
        "an earlier kill is not news"
    );

    fs::write(unified_dir(&host).join("memory.events"), memory_events(2)).unwrap();

    assert_eq!(watcher.wait(SOON, &stop).unwrap(), Some(OomNotice::Oom));
    assert_eq!(watcher.check().unwrap(), None);
}

#[test]
fn v2_other_memory_events_are_not_ooms() {
    let host = v2_host();
    let mut watcher = host.created().watch_oom().unwrap();
    let stop = AtomicBool::new(false);

    fs::write(
        unified_dir(&host).join("memory.events"),
        memory_events(1).replace("max 3", "max 4"),
    )
    .unwrap();

    assert_eq!(
        watcher
            .wait(Some(Duration::from_millis(300)), &stop)
            .unwrap(),
        None
    );
}

#[test]
fn v2_empty_cgroup_is_gone() {
    let host = v2_host();
    let mut watcher = host.created().watch_oom().unwrap();
    let stop = AtomicBool::new(false);

    fs::write(
        unified_dir(&host).join("cgroup.events"),
        "populated 0\nfrozen 0\n",
    )
    .unwrap();

    assert_eq!(watcher.wait(SOON, &stop).unwrap(), Some(OomNotice::Gone));
    assert_eq!(watcher.check().unwrap(), Some(OomNotice::Gone));
}

#[test]
fn v2_kill_and_exit_together_report_the_kill_first() {
    let host = v2_host();
    let mut watcher = host.created().watch_oom().unwrap();
    let dir = unified_dir(&host);

    fs::write(dir.join("memory.events"), memory_events(2)).unwrap();
    fs::write(dir.join("cgroup.events"), "populated 0\nfrozen 0\n").unwrap();

    assert_eq!(watcher.check().unwrap(), Some(OomNotice::Oom));
    assert_eq!(watcher.check().unwrap(), Some(OomNotice::Gone));
}

#[test]
fn wait_returns_when_stopped() {
    let host = v2_host();
    let mut watcher = host.created().watch_oom().unwrap();
    let stop = AtomicBool::new(true);
    let started = Instant::now();

    assert_eq!(watcher.wait(None, &stop).unwrap(), None);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn v2_missing_memory_events_is_an_error_naming_it() {
    let host = FakeHost::unified();
    let manager = host.created();

    let err = manager.watch_oom().unwrap_err();

    match &err {
        CgroupError::Watch { path, .. } => assert!(path.ends_with("memory.events"), "{err}"),
        other => panic!("unexpected {other}"),
    }
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
}

fn v1_memory_dir(host: &FakeHost) -> std::path::PathBuf {
    host.host_path("/sys/fs/cgroup/memory/berth/ctr")
}

/// Adds 1 to the watcher's eventfd, as the kernel does on an OOM or a removal.
fn signal(watcher: &crate::OomWatcher) {
    nix::unistd::write(watcher.as_fd(), &1u64.to_ne_bytes()).unwrap();
}

fn v1_host() -> FakeHost {
    let host = FakeHost::legacy();
    host.created();
    touch(
        &v1_memory_dir(&host),
        &[
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
            ),
            ("cgroup.event_control", ""),
        ],
    );
    host
}

#[test]
fn v1_registers_an_eventfd_for_memory_oom_control() {
    let host = v1_host();

    let _watcher = host.created().watch_oom().unwrap();

    let line = read(&v1_memory_dir(&host), "cgroup.event_control");
    let fds: Vec<i32> = line
        .split(' ')
        .map(|f| f.parse().expect("two descriptors"))
        .collect();
    assert_eq!(fds.len(), 2, "{line:?}");
    let target = fs::read_link(format!("/proc/self/fd/{}", fds[1])).unwrap();
    assert!(target.ends_with("memory.oom_control"), "{target:?}");
    let eventfd = fs::read_link(format!("/proc/self/fd/{}", fds[0])).unwrap();
    assert_eq!(eventfd.to_str(), Some("anon_inode:[eventfd]"));
}

#[test]
fn v1_signal_is_an_oom_while_the_cgroup_exists() {
    let host = v1_host();
    let mut watcher = host.created().watch_oom().unwrap();
    let stop = AtomicBool::new(false);
    assert_eq!(watcher.check().unwrap(), None);

    signal(&watcher);

    assert_eq!(watcher.wait(SOON, &stop).unwrap(), Some(OomNotice::Oom));
    assert_eq!(watcher.check().unwrap(), None);
}

#[test]
fn v1_signal_after_removal_is_gone() {
    let host = v1_host();
    let mut watcher = host.created().watch_oom().unwrap();
    let stop = AtomicBool::new(false);

    fs::remove_file(v1_memory_dir(&host).join("cgroup.event_control")).unwrap();
    signal(&watcher);

    assert_eq!(watcher.wait(SOON, &stop).unwrap(), Some(OomNotice::Gone));
}

#[test]
fn no_memory_controller_is_refused() {
    let host = FakeHost::hybrid();
    // The fake hybrid host has memory in v1; a manager without it is built by hand.
    let mut manager = host.created();
    manager
        .v1
        .retain(|h| !h.controllers.iter().any(|c| c == "memory"));

    let err = manager.watch_oom().unwrap_err();

    assert!(
        matches!(&err, CgroupError::ControllerUnavailable { controller, .. } if controller == "memory"),
        "{err}"
    );
}
