//! End-to-end tests that drive the runtime under test through real container
//! clients: podman (through conmon), ctr (containerd + containerd-shim-runc-v2),
//! containerd's CRI (a pod driven as a kubelet would, over gRPC) and docker
//! (dockerd + containerd).
//!
//! The runtime under test is `$BERTH_TEST_RUNTIME` when it is set (for example
//! `/usr/sbin/runc`, to validate this harness against the reference runtime),
//! otherwise the `berth` binary cargo built for this package.
//!
//! Each test is self-contained:
//! * it builds a tiny image from the host's static busybox (no registry, no
//!   network);
//! * every daemon it needs is started by the test, with all of its state in a
//!   fresh temporary directory and its own socket, so no system daemon or
//!   system state is used or touched;
//! * containers are placed under a cgroup parent that belongs to the test;
//! * a guard tears everything down again, even when an assertion fails:
//!   containers, daemons, stray processes, mounts, cgroups and the directories
//!   the clients insist on creating under /run.
//!
//! The tests need root and the client binaries. A missing binary is a failure,
//! not a skip: CI is expected to install them. See docs/clients.md.
//!
//! The tests hold a process-wide lock so that they run one at a time even when
//! the test harness runs them on several threads: each one starts daemons and
//! the machines they run on are small.
//!
//! - `clients/support.rs`: preconditions, running commands, host state and the guard
//! - `clients/probe.rs`: the test image, the probe script and the checks on its report
//! - `clients/containerd.rs`: a private containerd for the ctr, cri and docker tests
//! - `clients/cri_client.rs`: a CRI v1 client with a deadline on every call
//! - `clients/podman.rs`, `clients/ctr.rs`, `clients/cri.rs`, `clients/docker.rs`: one test
//!   per client

#[path = "clients/containerd.rs"]
mod containerd;
#[path = "clients/cri.rs"]
mod cri;
#[path = "clients/cri_client.rs"]
mod cri_client;
#[path = "clients/ctr.rs"]
mod ctr;
#[path = "clients/docker.rs"]
mod docker;
#[path = "clients/podman.rs"]
mod podman;
#[path = "clients/probe.rs"]
mod probe;
#[path = "clients/support.rs"]
mod support;

#[test]
fn podman() {
    podman::podman();
}

#[test]
fn ctr() {
    ctr::ctr();
}

#[test]
fn cri() {
    cri::cri();
}

#[test]
fn docker() {
    docker::docker();
}
