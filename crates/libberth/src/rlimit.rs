//! Resource limits: checked against the host before create, applied in the init.

use oci_spec::runtime::{PosixRlimit, PosixRlimitType};

use crate::error::{Context, Result};
use crate::spec::rlimit_name;

fn resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

fn current(t: PosixRlimitType) -> libc::rlimit {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `cur` is a valid, writable rlimit struct and the resource id is a known constant.
    unsafe { libc::getrlimit(resource(t), &mut cur) };
    cur
}

/// A hard limit above the host's can only be set with CAP_SYS_RESOURCE; say so before
/// anything is created rather than fail half way.
pub fn check_against_host(r: &PosixRlimit) -> std::result::Result<(), String> {
    let cur = current(r.typ());
    if r.hard() > cur.rlim_max && !crate::caps::has_effective(caps::Capability::CAP_SYS_RESOURCE) {
        return Err(format!(
            "hard limit {} is above this host's hard limit {} and berth lacks CAP_SYS_RESOURCE to raise it",
            r.hard(),
            if cur.rlim_max == libc::RLIM_INFINITY { "unlimited".to_string() } else { cur.rlim_max.to_string() }
        ));
    }
    Ok(())
}

pub fn apply(limits: &[PosixRlimit]) -> Result<()> {
    for r in limits {
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: `lim` is a valid rlimit struct; setrlimit only reads it.
        let rc = unsafe { libc::setrlimit(resource(r.typ()), &lim) };
        nix::errno::Errno::result(rc).map(drop).ctx(|| {
            format!(
                "set {} to soft {} hard {}",
                rlimit_name(r.typ()),
                r.soft(),
                r.hard()
            )
        })?;
    }
    Ok(())
}
