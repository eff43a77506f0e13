//! Container and pod statistics: the containers' cgroups (through libberth), their writable
//! layers, and the pod's network interfaces.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use k8s_cri::v1::{
    ContainerAttributes, ContainerStats, ContainerStatsFilter, CpuUsage, FilesystemIdentifier,
    FilesystemUsage, LinuxPodSandboxStats, MemoryUsage, NetworkInterfaceUsage, NetworkUsage,
    PodSandboxAttributes, PodSandboxStats, PodSandboxStatsFilter, ProcessUsage, UInt64Value,
};

use super::{lock, Engine};
use crate::error::Result;
use crate::state::{now_ns, ContainerRecord, ContainerState};

/// The last CPU sample of each container (time, total ns), for usage_nano_cores: a rate
/// needs two samples, as containerd keeps them.
#[derive(Default)]
pub struct CpuSamples(Mutex<HashMap<String, (i64, u64)>>);

fn u64v(value: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value })
}

/// Blocks and inodes under `dir`, without following links.
pub(super) fn du(dir: &Path, bytes: &mut u64, inodes: &mut u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(m) = e.metadata() else { continue };
        *bytes += m.blocks() * 512;
        *inodes += 1;
        if m.is_dir() {
            du(&e.path(), bytes, inodes);
        }
    }
}

/// Memory as the kubelet reads it: the working set is usage less inactive file pages.
pub fn memory_usage(m: &berth_cgroups::stats::Memory, at: i64) -> MemoryUsage {
    let raw = |k: &str| m.raw.get(k).copied();
    let usage = m.usage.usage;
    // cgroup v1 counts the hierarchy in total_*; v2 names the counters plainly.
    let inactive = raw("total_inactive_file")
        .or_else(|| raw("inactive_file"))
        .unwrap_or(0);
    let working = usage.saturating_sub(inactive);
    let rss = raw("total_rss").or_else(|| raw("anon")).unwrap_or(0);
    let faults = raw("total_pgfault").or_else(|| raw("pgfault")).unwrap_or(0);
    let major = raw("total_pgmajfault")
        .or_else(|| raw("pgmajfault"))
        .unwrap_or(0);
    // A limit of "no limit" reads as a huge number (v1) or 0/max (v2).
    let limit = m.usage.limit;
    let available = (limit > 0 && limit < (1 << 62)).then(|| limit.saturating_sub(working));
    MemoryUsage {
        timestamp: at,
        working_set_bytes: u64v(working),
        available_bytes: available.and_then(u64v),
        usage_bytes: u64v(usage),
        rss_bytes: u64v(rss),
        page_faults: u64v(faults),
        major_page_faults: u64v(major),
    }
}

impl Engine {
    /// A sample of container `id`'s cgroup, from libberth's state or the handler's binary.
    fn cgroup_stats(&self, id: &str, handler: &str) -> Option<libberth::events::Stats> {
        match self.oci_binary(handler) {
            Some(bin) => bin.stats(id).ok(),
            None => self.builtin_runtime().stats(id).ok(),
        }
    }

    /// One container's statistics; CPU and memory only while it has a cgroup (created,
    /// running), the writable layer always.
    fn stats_of(&self, c: &ContainerRecord) -> ContainerStats {
        let at = now_ns();
        let mut out = ContainerStats {
            attributes: Some(ContainerAttributes {
                id: c.id.clone(),
                metadata: c.config.metadata.clone(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
            }),
            ..Default::default()
        };
        if matches!(c.state, ContainerState::Created | ContainerState::Running) {
            if let Some(s) = self.cgroup_stats(&c.id, &c.runtime_handler) {
                let total = s.cpu.usage.total;
                let nano_cores = {
                    let mut prev = lock(&self.cpu_samples.0);
                    let rate = prev.get(&c.id).and_then(|&(t0, u0)| {
                        let dt = at.checked_sub(t0).filter(|d| *d > 0)? as u128;
                        let du = total.checked_sub(u0)? as u128;
                        Some((du * 1_000_000_000 / dt) as u64)
                    });
                    prev.insert(c.id.clone(), (at, total));
                    rate
                };
                out.cpu = Some(CpuUsage {
                    timestamp: at,
                    usage_core_nano_seconds: u64v(total),
                    usage_nano_cores: nano_cores.and_then(u64v),
                });
                out.memory = Some(memory_usage(&s.memory, at));
            }
        }
        let upper = self.store.snapshots.rootfs(&c.id).with_file_name("upper");
        let (mut bytes, mut inodes) = (0, 0);
        du(&upper, &mut bytes, &mut inodes);
        out.writable_layer = Some(FilesystemUsage {
            timestamp: at,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: self.store.root.display().to_string(),
            }),
            used_bytes: u64v(bytes),
            inodes_used: u64v(inodes),
        });
        out
    }

    pub fn container_stats(&self, id: &str) -> Result<ContainerStats> {
        let id = self.resolve_container(id)?;
        let c = self.container(&id)?;
        let mut c = lock(&c);
        self.refresh(&mut c);
        Ok(self.stats_of(&c))
    }

    pub fn list_container_stats(&self, f: Option<&ContainerStatsFilter>) -> Vec<ContainerStats> {
        self.each_container(|c| {
            f.map_or(true, |f| {
                super::container::selected(c, &f.id, &f.pod_sandbox_id, &f.label_selector)
            })
            .then(|| self.stats_of(c))
        })
    }

    /// A pod's statistics: its containers', their sum, and its network interfaces as the
    /// pause sees them.
    pub fn pod_sandbox_stats(&self, id: &str) -> Result<PodSandboxStats> {
        let id = self.resolve_pod(id)?;
        let pod = self.pod(&id)?;
        let (meta, labels, annotations, pause, handler) = {
            let p = lock(&pod);
            (
                p.config.metadata.clone(),
                p.config.labels.clone(),
                p.config.annotations.clone(),
                p.pause_pid,
                p.runtime_handler.clone(),
            )
        };
        let at = now_ns();
        let containers: Vec<ContainerStats> =
            self.list_container_stats(Some(&ContainerStatsFilter {
                pod_sandbox_id: id.clone(),
                ..Default::default()
            }));
        let sum = |f: &dyn Fn(&ContainerStats) -> Option<u64>| -> Option<UInt64Value> {
            let v: Vec<u64> = containers.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| UInt64Value {
                value: v.iter().sum(),
            })
        };
        let cpu = CpuUsage {
            timestamp: at,
            usage_core_nano_seconds: sum(&|s| {
                s.cpu
                    .as_ref()?
                    .usage_core_nano_seconds
                    .as_ref()
                    .map(|v| v.value)
            }),
            usage_nano_cores: sum(&|s| s.cpu.as_ref()?.usage_nano_cores.as_ref().map(|v| v.value)),
        };
        let memory = MemoryUsage {
            timestamp: at,
            working_set_bytes: sum(&|s| {
                s.memory
                    .as_ref()?
                    .working_set_bytes
                    .as_ref()
                    .map(|v| v.value)
            }),
            available_bytes: None,
            usage_bytes: sum(&|s| s.memory.as_ref()?.usage_bytes.as_ref().map(|v| v.value)),
            rss_bytes: sum(&|s| s.memory.as_ref()?.rss_bytes.as_ref().map(|v| v.value)),
            page_faults: sum(&|s| s.memory.as_ref()?.page_faults.as_ref().map(|v| v.value)),
            major_page_faults: sum(&|s| {
                s.memory
                    .as_ref()?
                    .major_page_faults
                    .as_ref()
                    .map(|v| v.value)
            }),
        };
        let processes: u64 = containers
            .iter()
            .filter_map(|s| s.attributes.as_ref())
            .filter_map(|a| self.cgroup_stats(&a.id, &handler))
            .map(|s| s.pids.current)
            .sum();
        Ok(PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: id.clone(),
                metadata: meta,
                labels,
                annotations,
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu: Some(cpu),
                memory: Some(memory),
                network: (pause > 0).then(|| network_usage(pause, at)).flatten(),
                process: Some(ProcessUsage {
                    timestamp: at,
                    process_count: u64v(processes),
                }),
                containers,
            }),
            windows: None,
        })
    }

    pub fn list_pod_sandbox_stats(
        &self,
        f: Option<&PodSandboxStatsFilter>,
    ) -> Vec<PodSandboxStats> {
        let pods: Vec<_> = lock(&self.pods).values().cloned().collect();
        let mut ids = Vec::new();
        for p in pods {
            let p = lock(&p);
            let keep = f.map_or(true, |f| {
                (f.id.is_empty() || p.id.starts_with(&f.id))
                    && f.label_selector
                        .iter()
                        .all(|(k, v)| p.config.labels.get(k) == Some(v))
            });
            if keep {
                ids.push(p.id.clone());
            }
        }
        ids.iter()
            .filter_map(|id| self.pod_sandbox_stats(id).ok())
            .collect()
    }
}

/// The pod's interfaces from /proc/<pause>/net/dev (its network namespace), eth0 as the
/// default one.
fn network_usage(pause: i32, at: i64) -> Option<NetworkUsage> {
    let text = std::fs::read_to_string(format!("/proc/{pause}/net/dev")).ok()?;
    let mut ifaces: Vec<NetworkInterfaceUsage> = text
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (f.len() >= 16 && name.trim() != "lo").then(|| NetworkInterfaceUsage {
                name: name.trim().to_string(),
                rx_bytes: u64v(f[0]),
                rx_errors: u64v(f[2]),
                tx_bytes: u64v(f[8]),
                tx_errors: u64v(f[10]),
            })
        })
        .collect();
    let default = ifaces
        .iter()
        .position(|i| i.name == "eth0")
        .map(|i| ifaces.remove(i));
    Some(NetworkUsage {
        timestamp: at,
        default_interface: default,
        interfaces: ifaces,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_working_set_leaves_out_inactive_file_pages() {
        let mut m = berth_cgroups::stats::Memory::default();
        m.usage.usage = 100 << 20;
        m.usage.limit = 256 << 20;
        m.raw.insert("total_inactive_file".into(), 30 << 20);
        m.raw.insert("total_rss".into(), 50 << 20);
        m.raw.insert("total_pgfault".into(), 7);
        let u = memory_usage(&m, 1);
        assert_eq!(u.working_set_bytes.unwrap().value, 70 << 20);
        assert_eq!(u.available_bytes.unwrap().value, 186 << 20);
        assert_eq!(u.rss_bytes.unwrap().value, 50 << 20);
        assert_eq!(u.page_faults.unwrap().value, 7);
        // cgroup v2 names, and no limit.
        let mut m = berth_cgroups::stats::Memory::default();
        m.usage.usage = 10;
        m.usage.limit = u64::MAX;
        m.raw.insert("inactive_file".into(), 4);
        m.raw.insert("anon".into(), 3);
        let u = memory_usage(&m, 1);
        assert_eq!(u.working_set_bytes.unwrap().value, 6);
        assert!(u.available_bytes.is_none());
        assert_eq!(u.rss_bytes.unwrap().value, 3);
    }
}
