//! Writing `linux.resources`: for each resource, pick the hierarchy that holds its
//! controller (v1 first, then cgroup2 on hybrid hosts) and hand it to that version's
//! writer.

use std::collections::HashMap;

use oci_spec::runtime::{LinuxRdma, LinuxResources};

use crate::devices::parse_rules;
use crate::error::{CgroupError, Result};
use crate::files;
use crate::manager::{Manager, Target};
use crate::validate::{block_io_field, cpu_field, cpuset_field, memory_field};
use crate::{v1, v2};

/// The `rdma.max` lines (same syntax in both versions), sorted by device.
pub(crate) fn rdma_lines(rdma: &HashMap<String, LinuxRdma>) -> Vec<String> {
    let mut devices: Vec<&String> = rdma.keys().collect();
    devices.sort();
    devices
        .into_iter()
        .filter_map(|device| {
            let limits = &rdma[device];
            let mut line = device.clone();
            if let Some(handles) = limits.hca_handles() {
                line.push_str(&format!(" hca_handle={handles}"));
            }
            if let Some(objects) = limits.hca_objects() {
                line.push_str(&format!(" hca_object={objects}"));
            }
            (line.len() > device.len()).then_some(line)
        })
        .collect()
}

impl Manager {
    /// Writes every resource that asks for something. Validation has run.
    pub(crate) fn write_resources(&self, r: &LinuxResources) -> Result<()> {
        if let Some(m) = r.memory() {
            if let Some(field) = memory_field(m) {
                match self.require(field, "memory", Some("memory"))? {
                    Target::V1(dir) => v1::memory(dir, m)?,
                    Target::V2(dir) => v2::memory(dir, m)?,
                }
            }
        }
        if let Some(c) = r.cpu() {
            if let Some(field) = cpu_field(c) {
                match self.require(field, "cpu", Some("cpu"))? {
                    Target::V1(dir) => v1::cpu(dir, c)?,
                    Target::V2(dir) => v2::cpu(dir, c)?,
                }
            }
            if let Some(field) = cpuset_field(c) {
                let writes = v1::cpuset_writes(c);
                match self.require(field, "cpuset", Some("cpuset"))? {
                    Target::V1(dir) => {
                        for (file, value) in writes {
                            files::write(dir, file, &value)?;
                        }
                    }
                    Target::V2(dir) => {
                        for (file, value) in writes {
                            v2::write(dir, "cpuset", file, &value)?;
                        }
                    }
                }
            }
        }
        if let Some(pids) = r.pids() {
            let value = v1::pids_max(pids.limit());
            match self.require("pids.limit", "pids", Some("pids"))? {
                Target::V1(dir) => files::write(dir, "pids.max", &value)?,
                Target::V2(dir) => v2::write(dir, "pids", "pids.max", &value)?,
            }
        }
        if let Some(b) = r.block_io() {
            if let Some(field) = block_io_field(b) {
                match self.require(field, "blkio", Some("io"))? {
                    Target::V1(dir) => v1::block_io(dir, b)?,
                    Target::V2(dir) => v2::io(dir, b)?,
                }
            }
        }
        if let Some(limits) = r.hugepage_limits().as_deref().filter(|l| !l.is_empty()) {
            match self.require("hugepageLimits", "hugetlb", Some("hugetlb"))? {
                Target::V1(dir) => v1::hugetlb(dir, limits)?,
                Target::V2(dir) => v2::hugetlb(dir, limits)?,
            }
        }
        if let Some(n) = r.network() {
            if n.class_id().is_some() {
                if let Target::V1(dir) = self.require("network.classID", "net_cls", None)? {
                    v1::net_cls(dir, n)?;
                }
            }
            if n.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
                if let Target::V1(dir) = self.require("network.priorities", "net_prio", None)? {
                    v1::net_prio(dir, n)?;
                }
            }
        }
        if let Some(rdma) = r.rdma().as_ref().filter(|m| !m.is_empty()) {
            let target = self.require("rdma", "rdma", Some("rdma"))?;
            for line in rdma_lines(rdma) {
                match target {
                    Target::V1(dir) => files::write(dir, "rdma.max", &line)?,
                    Target::V2(dir) => v2::write(dir, "rdma", "rdma.max", &line)?,
                }
            }
        }
        if let Some(devices) = r.devices() {
            let rules = parse_rules(devices)?;
            if let Some(dir) = self.v1_dir("devices") {
                v1::devices(dir, &rules)?;
            } else if let Some(unified) = &self.unified {
                v2::devices(&unified.path, &rules)?;
            } else {
                return Err(CgroupError::ControllerUnavailable {
                    what: "linux.resources.devices".to_string(),
                    controller: "devices".to_string(),
                });
            }
        }
        if let Some(values) = r.unified().as_ref().filter(|u| !u.is_empty()) {
            if let Some(unified) = &self.unified {
                v2::unified(&unified.path, values)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdma_lines_name_only_set_limits() {
        let rdma: HashMap<String, LinuxRdma> = serde_json::from_str(
            r#"{"mlx5_1": {"hcaObjects": 100},
                "mlx4_0": {"hcaHandles": 2, "hcaObjects": 2000},
                "empty": {}}"#,
        )
        .unwrap();
        assert_eq!(
            rdma_lines(&rdma),
            [
                "mlx4_0 hca_handle=2 hca_object=2000",
                "mlx5_1 hca_object=100"
            ]
        );
    }
}
