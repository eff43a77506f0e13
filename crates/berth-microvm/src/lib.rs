//! berth-microvm: the host side of Berth's VM isolation (docs/vm.md).
//!
//! - [`assets`]: the static berth-agent and the initramfs made of it and the guest kernel's
//!   modules, cached.
//! - [`layers`]: image layers as read-only erofs disks, cached by chain ID.
//! - [`sandbox`]: a booted VM whose agent has said Hello, and the host's end of
//!   berth-agent-proto (requests from any thread, stdio and exits on a channel).
//! - [`shares`]: host directories for the guest, one virtiofsd each.
//! - [`sizing`]: guest memory and vCPUs from the container's limits.
//!
//! It sits above berth-vm (which knows nothing of the agent) and below berthctl and berthd.

pub mod assets;
pub mod layers;
pub mod sandbox;
pub mod shares;

pub use sandbox::{layer_serial, Incoming, Sandbox, SandboxConfig};

/// An error with its whole context in one message (what, which file or container, why).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl Error {
    pub fn new(msg: impl Into<String>) -> Error {
        Error(msg.into())
    }
}

/// Guest memory and vCPUs.
pub mod sizing {
    /// What the guest needs besides the container: the kernel, the agent, the initramfs
    /// (kept in memory) and page cache for the layers.
    pub const GUEST_OVERHEAD_MIB: u32 = 160;

    /// The container's memory when it sets no limit.
    pub const DEFAULT_CONTAINER_MIB: u32 = 352;

    /// Guest memory for a container limited to `limit` bytes (None: no limit): the limit,
    /// rounded up to a MiB, plus [`GUEST_OVERHEAD_MIB`]. The limit itself is also applied in
    /// the guest, by the container's cgroup.
    pub fn memory_mib(limit: Option<i64>) -> u32 {
        let container = match limit {
            Some(b) if b > 0 => ((b as u64).div_ceil(1 << 20)).min(u32::MAX as u64 / 2) as u32,
            _ => DEFAULT_CONTAINER_MIB,
        };
        container + GUEST_OVERHEAD_MIB
    }

    /// vCPUs for a CPU quota of `cpus` (None: 1): rounded up, at most `host_cpus`.
    pub fn vcpus(cpus: Option<f64>, host_cpus: usize) -> u16 {
        let want = match cpus {
            Some(c) if c.is_finite() && c > 0.0 => c.ceil() as usize,
            _ => 1,
        };
        want.clamp(1, host_cpus.clamp(1, 255)) as u16
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn memory_and_vcpus_follow_the_limits() {
            assert_eq!(memory_mib(None), DEFAULT_CONTAINER_MIB + GUEST_OVERHEAD_MIB);
            assert_eq!(memory_mib(Some(64 << 20)), 64 + GUEST_OVERHEAD_MIB);
            assert_eq!(memory_mib(Some((64 << 20) + 1)), 65 + GUEST_OVERHEAD_MIB);
            assert_eq!(vcpus(None, 8), 1);
            assert_eq!(vcpus(Some(1.5), 8), 2);
            assert_eq!(vcpus(Some(64.0), 2), 2);
            assert_eq!(vcpus(Some(f64::NAN), 2), 1);
        }
    }
}
