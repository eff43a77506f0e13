//! `berth update`: linux.resources from `-r` JSON or from runc's flags.

use std::io::Read;

use berth_cli::Update;
use libberth::Error;
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};

pub fn resources(u: &Update) -> Result<LinuxResources, Error> {
    if u.l3_cache_schema.is_some() || u.mem_bw_schema.is_some() {
        return Err(Error::Unsupported(
            "Intel RDT (--l3-cache-schema, --mem-bw-schema) is not supported by this build".into(),
        ));
    }
    if let Some(path) = &u.resources {
        let mut data = Vec::new();
        let res = if path.as_os_str() == "-" {
            std::io::stdin().read_to_end(&mut data).map(drop)
        } else {
            std::fs::read(path).map(|d| data = d)
        };
        res.map_err(|e| Error::Unsupported(format!("read {}: {e}", path.display())))?;
        return serde_json::from_slice(&data).map_err(|e| Error::ConfigParse {
            file: path.clone(),
            source: e,
        });
    }
    let mut r = LinuxResources::default();
    let bytes = |flag: &str, v: &Option<String>| {
        v.as_deref()
            .map(|s| parse_bytes(s).map_err(|e| Error::Unsupported(format!("--{flag} {s:?}: {e}"))))
            .transpose()
    };
    let limit = bytes("memory", &u.memory)?;
    let reservation = bytes("memory-reservation", &u.memory_reservation)?;
    let swap = bytes("memory-swap", &u.memory_swap)?;
    let kernel = bytes("kernel-memory", &u.kernel_memory)?;
    let kernel_tcp = bytes("kernel-memory-tcp", &u.kernel_memory_tcp)?;
    if limit.is_some()
        || reservation.is_some()
        || swap.is_some()
        || kernel.is_some()
        || kernel_tcp.is_some()
    {
        let mut m = LinuxMemory::default();
        m.set_limit(limit);
        m.set_reservation(reservation);
        m.set_swap(swap);
        #[allow(deprecated)]
        m.set_kernel(kernel);
        m.set_kernel_tcp(kernel_tcp);
        r.set_memory(Some(m));
    }
    if u.cpu_period.is_some()
        || u.cpu_quota.is_some()
        || u.cpu_share.is_some()
        || u.cpu_rt_period.is_some()
        || u.cpu_rt_runtime.is_some()
        || u.cpuset_cpus.is_some()
        || u.cpuset_mems.is_some()
    {
        let mut c = LinuxCpu::default();
        c.set_period(u.cpu_period);
        c.set_quota(u.cpu_quota);
        c.set_shares(u.cpu_share);
        c.set_realtime_period(u.cpu_rt_period);
        c.set_realtime_runtime(u.cpu_rt_runtime);
        c.set_cpus(u.cpuset_cpus.clone());
        c.set_mems(u.cpuset_mems.clone());
        r.set_cpu(Some(c));
    }
    if let Some(p) = u.pids_limit {
        let mut pids = LinuxPids::default();
        pids.set_limit(p);
        r.set_pids(Some(pids));
    }
    if let Some(w) = u.blkio_weight {
        let mut b = LinuxBlockIo::default();
        b.set_weight(Some(w));
        r.set_block_io(Some(b));
    }
    Ok(r)
}

/// A size as docker and runc accept it: an integer with an optional binary unit k, m, g
/// or t (and an optional trailing b): "1024", "64m", "2GB"; "-1" means unlimited.
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult): (&str, i64) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| "not a size (bytes, or a number with k, m, g or t)".to_string())?;
    if n < 0 {
        return Err("a size cannot be negative (use -1 for unlimited)".into());
    }
    n.checked_mul(mult).ok_or_else(|| "too large".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64m"), Ok(64 << 20));
        assert_eq!(parse_bytes("64MB"), Ok(64 << 20));
        assert_eq!(parse_bytes("2g"), Ok(2 << 30));
        assert_eq!(parse_bytes("-1"), Ok(-1));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("-5m").is_err());
    }
}
