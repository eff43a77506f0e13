//! berthd: Berth's CRI v1 engine. The kubelet (or crictl) talks gRPC to it on a unix
//! socket; it runs each pod under a `berth-shim` (a built-in pause, the containers through
//! libberth, their logs and exits), keeps its records in files it reloads at start, and
//! takes images from berth-engine's store, shared with berthctl. docs/cri.md has the design.

pub mod authority;
pub mod config;
pub mod cri;
pub mod engine;
pub mod error;
pub mod spec;
pub mod state;
pub mod stream;
