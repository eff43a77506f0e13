//! berth-cni: Berth's CNI caller, written from the CNI specification (1.0.0, with 0.4.0
//! and 0.3.x networks), for the CRI engine. It depends on nothing of Berth.
//!
//! # What a pod's network goes through
//!
//! ```text
//! RunPodSandbox   NetnsDir::create(id) ─► Cni::setup(pod) ─► Attachment::pod_ips()
//!                 (on setup failure: NetNs::remove; setup has undone its own ADD)
//! StopPodSandbox  Cni::teardown(pod)   ─► NetNs::remove            (both idempotent)
//! restart         Cni::attachment(pod) (the cached result: the pod's IPs)
//! Status          Cni::reload() / Cni::status()                     (NetworkReady)
//! ```
//!
//! # Design notes
//!
//! * **One network.** [`Cni`] loads the first file of the configuration directory in
//!   lexical order (`.conflist`, or a single plugin's `.conf`/`.json` wrapped as a list of
//!   one), as the kubelet and containerd choose it; a malformed first file is an error
//!   naming the file, not a reason to try the next (see [`config`]). Configurations of
//!   1.0.0, 0.4.0, 0.3.1 and 0.3.0 are accepted ([`CniVersion`]).
//! * **Invocation** ([`invoke`]): a plugin's type is a plain file name looked up in the
//!   plugin directories (`/opt/cni/bin`, then `/usr/lib/cni`); every run has a deadline
//!   (its process group is killed at it), a bounded stdout (1 MiB by default) and none of
//!   the caller's descriptors. Each plugin's stdin is its object from the list with the
//!   list's `name` and `cniVersion`, `prevResult` (ADD: the plugin before's result; DEL
//!   and CHECK: the cached ADD result) and `runtimeConfig` with the capability arguments it
//!   declares ([`RuntimeConfig`]: `portMappings` for hostPort through `portmap`, `dns`,
//!   `ips`, `mac`, `bandwidth`). A plugin's failure is its CNI error (`code`, `msg`,
//!   `details`) in [`CniError::Failed`], or what it printed.
//! * **ADD undoes itself.** A failed ADD (a plugin's error, a timeout, a malformed result,
//!   a cache write) runs DEL for the whole list in reverse order, with the last good result
//!   as `prevResult`, so no IP allocation or veth stays behind; if that DEL fails too both
//!   errors come back ([`CniError::AddCleanupFailed`]) and the cache entry stays so that a
//!   later teardown can finish the job.
//! * **DEL keeps going** past failing plugins, reports them all ([`CniError::Del`]), and
//!   passes an empty `CNI_NETNS` when the namespace is already gone, as the spec asks.
//! * **The result cache** ([`cache`]) holds, per network, container id and interface, the
//!   configuration list, `CNI_ARGS`, capability arguments and result of the ADD, written
//!   atomically before the first plugin runs (so a crash during ADD leaves what DEL needs)
//!   and again with the result; DEL uses it, not the current configuration, so teardown
//!   works after a restart and after the configuration file was removed or changed.
//! * **Network namespaces** ([`netns`]): a bind mount of a fresh namespace made by a
//!   short-lived thread, under a directory that is its own mount point with shared
//!   propagation, as `ip netns add` sets up `/run/netns`; the reasons are in that module.
//! * **Errors** name the network, the plugin and the command ([`Site`]), and carry the
//!   cause as their source; [`full_message`] prints an error with its chain.
//!
//! Writing to a plugin's stdin relies on SIGPIPE being ignored, as it is in every Rust
//! program (the runtime ignores it before `main`), so that a plugin that exits without
//! reading its configuration is an EPIPE, not the death of the caller.

pub mod args;
pub mod cache;
mod cni;
pub mod config;
mod error;
pub mod invoke;
pub mod netns;
pub mod result;
mod rtnl;
mod version;

pub use args::{
    encode_cni_args, Bandwidth, DnsConfig, PodNetwork, PortMapping, Protocol, RuntimeConfig,
    DEFAULT_IFNAME,
};
pub use cache::{CacheEntry, ResultCache, DEFAULT_CACHE_DIR};
pub use cni::{Attachment, Cni, CniOptions, NetworkStatus};
pub use config::{NetworkConfigList, PluginConfig, DEFAULT_CONF_DIR};
pub use error::{
    full_message, CacheError, CniError, Command, ConfigError, NetnsError, PluginError, Site,
};
pub use invoke::{find_plugin, VersionInfo, DEFAULT_PLUGIN_DIRS};
pub use netns::{is_namespace, remove_netns, NetNs, NetnsDir, DEFAULT_NETNS_DIR};
pub use result::{CniResult, Dns, Interface, IpConfig, IpNet, ResultError, Route};
pub use version::{CniVersion, UnsupportedVersion};
