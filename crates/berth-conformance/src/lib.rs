//! What the conformance harness (`berth-conformance`) and the in-container checker
//! (`berth-check`) share: the expectations file, the result lines and the capability names.
//!
//! Every check compares one observed value with one expected value, both as strings. A check
//! can be negated (`--negative`): it then passes only if the observed value differs. A check
//! whose negation also passes could not tell a right runtime from a wrong one, so the harness
//! requires every negated check to fail. An observation that could not be made (a file that
//! cannot be read, a runtime command that timed out) fails in both modes.
//!
//! Errors here are one-line strings rather than `thiserror` enums: the checker is built
//! static and may depend only on std, libc, serde and serde_json.

pub mod caps;
pub mod expect;
pub mod mountinfo;

pub use expect::{judge, Check, Expectations, Line, Observed, Probe, Status};
