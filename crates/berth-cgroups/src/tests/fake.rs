//! A fake host: a temporary root with cgroup mount points and the texts of
//! `/proc/self/mountinfo` and `/proc/self/cgroup` describing them.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;
use tempfile::TempDir;

use crate::{CgroupSetup, Manager, SystemView};

/// The process's own cgroup in every fake hierarchy.
pub const OWN_CGROUP: &str = "/runtime";

pub struct FakeHost {
    pub dir: TempDir,
    mountinfo: String,
    proc_cgroup: String,
}

impl FakeHost {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("sys/kernel/mm/hugepages/hugepages-2048kB")).unwrap();
        fs::create_dir_all(
            dir.path()
                .join("sys/kernel/mm/hugepages/hugepages-1048576kB"),
        )
        .unwrap();
        let mountinfo =
            "22 1 0:21 / /proc rw,relatime - proc proc rw\n31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n"
                .to_string();
        Self {
            dir,
            mountinfo,
            proc_cgroup: String::new(),
        }
    }

    fn add_v1(&mut self, id: u32, dir_name: &str, options: &str) {
        let mount_point = format!("/sys/fs/cgroup/{dir_name}");
        self.mountinfo.push_str(&format!(
            "{id} 31 0:{id} / {mount_point} rw,nosuid,nodev,noexec,relatime shared:{id} - cgroup cgroup rw,{options}\n"
        ));
        let controllers = options
            .split(',')
            .filter(|o| *o != "xattr")
            .collect::<Vec<_>>()
            .join(",");
        self.proc_cgroup
            .push_str(&format!("{id}:{controllers}:{OWN_CGROUP}\n"));
        let path = self.host_path(&mount_point);
        fs::create_dir_all(path.join(OWN_CGROUP.trim_start_matches('/'))).unwrap();
    }

    fn add_v2(&mut self, mount_point: &str, controllers: &str) {
        self.mountinfo.push_str(&format!(
            "99 31 0:99 / {mount_point} rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
        ));
        self.proc_cgroup.push_str(&format!("0::{OWN_CGROUP}\n"));
        let root = self.host_path(mount_point);
        let own = root.join(OWN_CGROUP.trim_start_matches('/'));
        fs::create_dir_all(&own).unwrap();
        for dir in [&root, &own] {
            fs::write(dir.join("cgroup.controllers"), format!("{controllers}\n")).unwrap();
            fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
        }
    }

    /// Pure v1 with `cpu,cpuacct` co-mounted and every controller present.
    pub fn legacy() -> Self {
        let mut host = Self::new();
        host.add_v1(32, "cpu,cpuacct", "cpu,cpuacct");
        host.add_v1(33, "cpuset", "cpuset");
        host.add_v1(34, "memory", "memory");
        host.add_v1(35, "devices", "devices");
        host.add_v1(36, "freezer", "freezer");
        host.add_v1(37, "blkio", "blkio");
        host.add_v1(38, "pids", "pids");
        host.add_v1(39, "net_cls,net_prio", "net_cls,net_prio");
        host.add_v1(40, "hugetlb", "hugetlb");
        host.add_v1(41, "rdma", "rdma");
        host.add_v1(42, "systemd", "xattr,name=systemd");
        host
    }

    /// The layout of the development machine: v1 controllers mounted separately, no
    /// net_cls/net_prio/hugetlb/rdma in v1, cgroup2 at `unified` offering `hugetlb`.
    pub fn hybrid() -> Self {
        let mut host = Self::new();
        for (id, name) in [
            (32, "cpu"),
            (33, "cpuacct"),
            (34, "cpuset"),
            (35, "memory"),
            (36, "devices"),
            (37, "freezer"),
            (38, "blkio"),
            (39, "pids"),
        ] {
            host.add_v1(id, name, name);
        }
        host.add_v1(40, "systemd", "name=systemd");
        host.add_v2("/sys/fs/cgroup/unified", "hugetlb");
        host
    }

    /// Pure v2 with the usual controllers.
    pub fn unified() -> Self {
        let mut host = Self::new();
        host.add_v2("/sys/fs/cgroup", "cpuset cpu io memory hugetlb pids rdma");
        host
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn host_path(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }

    pub fn system(&self) -> SystemView {
        SystemView {
            root: self.root().to_path_buf(),
            mountinfo: self.mountinfo.clone(),
            proc_self_cgroup: self.proc_cgroup.clone(),
        }
    }

    pub fn manager_with(
        &self,
        cgroups_path: Option<&str>,
        systemd: bool,
    ) -> crate::error::Result<Manager> {
        let path = cgroups_path.map(Path::new);
        let setup = CgroupSetup {
            cgroups_path: path,
            container_id: "ctr",
            systemd,
        };
        Manager::with_system(&setup, self.system())
    }

    /// A manager for `/berth/ctr`, created.
    pub fn created(&self) -> Manager {
        let manager = self.manager_with(Some("/berth/ctr"), false).unwrap();
        manager.create().unwrap();
        manager
    }
}

/// Creates interface files in `dir` with initial content, as the kernel would.
pub fn touch(dir: &Path, files: &[(&str, &str)]) {
    for (name, content) in files {
        fs::write(dir.join(name), content).unwrap();
    }
}

/// Reads `dir/file`.
pub fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
}

/// Resources from their config.json form.
pub fn resources(json: &str) -> LinuxResources {
    serde_json::from_str(json).unwrap()
}
