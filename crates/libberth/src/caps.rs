//! Capabilities: the five sets of process.capabilities, applied as runc does — bounding set
//! first while still root, then the user switch with keep-caps, then effective, permitted and
//! inheritable in one capset, then ambient.

use std::collections::HashSet;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

use crate::error::{Error, Result};

/// Converts an oci-spec capability to the caps crate's by its name ("CAP_CHOWN").
pub fn convert(c: &oci_spec::runtime::Capability) -> Option<Capability> {
    let name = serde_json::to_value(c).ok()?;
    name.as_str()?.parse().ok()
}

fn set_of(c: &Option<Capabilities>) -> CapsHashSet {
    c.as_ref()
        .map(|s| s.iter().filter_map(convert).filter(supported).collect())
        .unwrap_or_default()
}

/// Capabilities the running kernel knows (index ≤ cap_last_cap). Others are skipped, as runc
/// skips them, so a profile written for a newer kernel still runs.
fn supported(c: &Capability) -> bool {
    (c.index() as u32) <= last_cap()
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

pub fn has_effective(c: Capability) -> bool {
    caps::has_cap(None, CapSet::Effective, c).unwrap_or(false)
}

/// The sets to apply, resolved once.
#[derive(Debug, Clone)]
pub struct CapSets {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
}

impl CapSets {
    pub fn from_spec(c: &LinuxCapabilities) -> Self {
        CapSets {
            bounding: set_of(c.bounding()),
            effective: set_of(c.effective()),
            permitted: set_of(c.permitted()),
            inheritable: set_of(c.inheritable()),
            ambient: set_of(c.ambient()),
        }
    }

    /// No capabilities at all: what a process without a capabilities section gets.
    pub fn empty() -> Self {
        CapSets {
            bounding: CapsHashSet::new(),
            effective: CapsHashSet::new(),
            permitted: CapsHashSet::new(),
            inheritable: CapsHashSet::new(),
            ambient: CapsHashSet::new(),
        }
    }

    /// Drops everything outside the bounding set. Needs CAP_SETPCAP, so runs before the user
    /// switch.
    pub fn apply_bounding(&self) -> Result<()> {
        for c in caps::all() {
            if !supported(&c) || self.bounding.contains(&c) {
                continue;
            }
            caps::drop(None, CapSet::Bounding, c)
                .map_err(|e| Error::Unsupported(format!("drop {c} from the bounding set: {e}")))?;
        }
        Ok(())
    }

    /// Sets effective, permitted and inheritable together, then raises ambient.
    pub fn apply_process(&self) -> Result<()> {
        let mut effective = self.effective.clone();
        // A capability can only be effective if permitted.
        effective.retain(|c| self.permitted.contains(c));
        capset(&effective, &self.permitted, &self.inheritable)?;
        caps::clear(None, CapSet::Ambient)
            .map_err(|e| Error::Unsupported(format!("clear the ambient set: {e}")))?;
        for c in &self.ambient {
            if self.permitted.contains(c) && self.inheritable.contains(c) {
                caps::raise(None, CapSet::Ambient, *c).map_err(|e| {
                    Error::Unsupported(format!("raise {c} in the ambient set: {e}"))
                })?;
            }
        }
        Ok(())
    }
}

fn mask(set: &HashSet<Capability>) -> u64 {
    set.iter().fold(0u64, |m, c| m | c.bitmask())
}

fn capset(e: &CapsHashSet, p: &CapsHashSet, i: &CapsHashSet) -> Result<()> {
    let (e, p, i) = (mask(e), mask(p), mask(i));
    let mut hdr = libc_cap_header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [
        libc_cap_data {
            effective: e as u32,
            permitted: p as u32,
            inheritable: i as u32,
        },
        libc_cap_data {
            effective: (e >> 32) as u32,
            permitted: (p >> 32) as u32,
            inheritable: (i >> 32) as u32,
        },
    ];
    // SAFETY: capset(2) reads a v3 header and two data structs; both are valid for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    nix::errno::Errno::result(rc)
        .map(drop)
        .map_err(|e| Error::sys("capset (effective, permitted, inheritable)", e))
}

#[repr(C)]
#[allow(non_camel_case_types)]
struct libc_cap_header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[allow(non_camel_case_types)]
struct libc_cap_data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_by_name() {
        assert_eq!(
            convert(&oci_spec::runtime::Capability::NetBindService),
            Some(Capability::CAP_NET_BIND_SERVICE)
        );
        assert_eq!(
            convert(&oci_spec::runtime::Capability::SysAdmin),
            Some(Capability::CAP_SYS_ADMIN)
        );
    }

    #[test]
    fn masks() {
        let s: CapsHashSet = [Capability::CAP_CHOWN, Capability::CAP_KILL]
            .into_iter()
            .collect();
        assert_eq!(mask(&s), (1 << 0) | (1 << 5));
    }
}
