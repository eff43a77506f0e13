//! A private containerd: without CRI for the ctr and docker tests, with CRI for
//! the cri test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{run_quietly, Harness, PROBE_TIMEOUT};

#[derive(Clone)]
pub(crate) struct Containerd {
    pub(crate) socket: PathBuf,
    pub(crate) state: PathBuf,
}

/// How the CRI plugin is set up: one runtime, the runc shim running the
/// runtime under test with a root of the test's own, and a sandbox image that
/// the test imports beforehand (nothing is ever pulled).
pub(crate) struct CriConfig<'a> {
    /// Image of the pods' sandbox ("pause") container, imported into the
    /// `k8s.io` namespace before the first pod.
    pub(crate) sandbox_image: &'a str,
    /// The runtime under test (the shim's `BinaryName`).
    pub(crate) runtime: &'a Path,
    /// The shim's `Root`: the runtime gets `--root <root>/k8s.io`.
    pub(crate) runtime_root: &'a Path,
    /// Snapshotter the images are unpacked into and the containers run from.
    pub(crate) snapshotter: &'a str,
}

/// Starts a private containerd: its own root, state, socket and config; CRI
/// (and with it any CNI) is disabled.
pub(crate) fn start_containerd(h: &mut Harness, name: &str) -> Containerd {
    start(h, name, None)
}

/// Starts a private containerd with the CRI plugin (see [`CriConfig`]). CNI
/// is pointed at empty directories of the test: pods must use the host
/// network.
pub(crate) fn start_containerd_cri(h: &mut Harness, name: &str, cri: &CriConfig) -> Containerd {
    start(h, name, Some(cri))
}

fn start(h: &mut Harness, name: &str, cri: Option<&CriConfig>) -> Containerd {
    let base = h.mkdir(name);
    let socket = base.join("containerd.sock");
    let state = base.join("state");
    let mut config = format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
{cri_disabled}  "io.containerd.snapshotter.v1.aufs",
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
        cri_disabled = if cri.is_some() {
            ""
        } else {
            "  \"io.containerd.grpc.v1.cri\",\n"
        },
        socket = socket.display(),
        opt = base.join("opt").display(),
    );
    if let Some(cri) = cri {
        config.push_str(&cri_section(cri, &base));
    }
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

/// The CRI plugin's section of the config (containerd 1.6, config version 2).
fn cri_section(cri: &CriConfig, base: &Path) -> String {
    let cni = base.join("cni");
    for dir in ["bin", "net.d"] {
        fs::create_dir_all(cni.join(dir)).expect("mkdir cni");
    }
    format!(
        r#"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{sandbox_image}"
    # Without CAP_SYS_RESOURCE the sandbox's oom_score_adj -998 cannot be set:
    # clamp it to containerd's own.
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      # Else /opt/cni/bin and /etc/cni/net.d; the pods use the host network.
      bin_dir = "{cni_bin}"
      conf_dir = "{cni_conf}"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "{snapshotter}"
      default_runtime_name = "under-test"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.under-test]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.under-test.options]
          BinaryName = "{runtime}"
          Root = "{runtime_root}"
"#,
        sandbox_image = cri.sandbox_image,
        cni_bin = cni.join("bin").display(),
        cni_conf = cni.join("net.d").display(),
        snapshotter = cri.snapshotter,
        runtime = cri.runtime.display(),
        runtime_root = cri.runtime_root.display(),
    )
}
