//! Unit tests of the [`Manager`](crate::Manager) against fake cgroup trees in a
//! temporary directory: fake mountinfo and `/proc/self/cgroup` texts whose paths are
//! looked up under the temporary root. Interface files that the kernel would create
//! are created by the tests, since `mkdir` in a plain directory makes none.

mod fake;
mod hybrid;
mod legacy;
mod oom;
mod stats;
mod unified;
