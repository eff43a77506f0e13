//! linux.seccomp.listenerPath: when the filter uses SCMP_ACT_NOTIFY, the process that loads
//! it hands the notify fd to the runtime over the setup channel, and the runtime sends it
//! to the listener with the container process state, one connection per fd.

use std::os::fd::AsFd;

use oci_spec::runtime::LinuxSeccomp;
use serde_json::json;

use crate::channel::{Channel, Msg};
use crate::error::{Error, Result};

/// In the process that loads `filter`: loads it and, if it made a notify fd, passes the fd
/// to the runtime. The fd is closed here once sent: only the listener keeps it.
pub fn load_filter(chan: &Channel, filter: &berth_seccomp::Filter) -> Result<()> {
    if let Some(fd) = filter.load()? {
        chan.send_with_fd(&Msg::SeccompFd, Some(fd.as_fd()))?;
    }
    Ok(())
}

/// In the runtime: sends the container process state and `fd` to the listener named by
/// `seccomp.listenerPath`. `pid` is the process that loaded the filter; `state` the
/// container's state as `berth state` reports it.
pub fn send_to_listener(
    id: &str,
    seccomp: Option<&LinuxSeccomp>,
    pid: i32,
    state: serde_json::Value,
    fd: std::os::fd::OwnedFd,
) -> Result<()> {
    let Some(path) = seccomp.and_then(|s| s.listener_path().as_ref()) else {
        return Err(Error::Init(format!(
            "container {id}: a seccomp notify fd came but linux.seccomp.listenerPath is not set"
        )));
    };
    let mut payload = json!({
        "ociVersion": crate::spec::OCI_VERSION_MAX,
        "fds": ["seccompFd"],
        "pid": pid,
        "state": state,
    });
    if let Some(m) = seccomp.and_then(|s| s.listener_metadata().as_ref()) {
        payload["metadata"] = json!(m);
    }
    let bytes = serde_json::to_vec(&payload).expect("process state serializes");
    crate::channel::send_to_unix_socket(path, "linux.seccomp.listenerPath", &bytes, fd.as_fd())
        .map_err(|e| Error::Init(format!("container {id}: {}", e.chain())))
}
