//! A private containerd, used by the ctr and docker tests.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::support::{run_quietly, Harness, PROBE_TIMEOUT};

#[derive(Clone)]
pub(crate) struct Containerd {
    pub(crate) socket: PathBuf,
    pub(crate) state: PathBuf,
}

/// Starts a private containerd: its own root, state, socket and config; CRI
/// (and with it any CNI) is disabled.
pub(crate) fn start_containerd(h: &mut Harness, name: &str) -> Containerd {
    let base = h.mkdir(name);
    let socket = base.join("containerd.sock");
    let state = base.join("state");
    let config = format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{socket}"

[debug]
  level = "debug"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{opt}"
"#,
        root = base.join("root").display(),
        state = state.display(),
        socket = socket.display(),
        opt = base.join("opt").display(),
    );
    let config_path = base.join("config.toml");
    fs::write(&config_path, config).expect("write containerd config");
    let mut cmd = Command::new("containerd");
    cmd.arg("--config").arg(&config_path);
    h.spawn_daemon(name, cmd);
    let probe_socket = socket.clone();
    h.wait_daemon_ready(name, || {
        probe_socket.exists()
            && run_quietly(
                Command::new("ctr")
                    .arg("--address")
                    .arg(&probe_socket)
                    .arg("version"),
                PROBE_TIMEOUT,
            )
            .success()
    });
    Containerd { socket, state }
}
