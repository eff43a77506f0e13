//! What the runtime gives each plugin beyond its configuration: `CNI_ARGS`, and the
//! `runtimeConfig` of the capabilities the plugin declares.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{NetworkConfigList, PluginConfig};

/// The interface name a pod gets when none is asked for.
pub const DEFAULT_IFNAME: &str = "eth0";

/// One pod's attachment to the network: who it is, where its network namespace is, and
/// what the plugins are to set up for it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodNetwork {
    /// `CNI_CONTAINERID`: the sandbox's id. With the network's name and `ifname` it keys
    /// the plugins' state and the result cache.
    pub container_id: String,
    /// `CNI_NETNS`: the pod's network namespace (a bind mount such as
    /// [`NetNs::path`](crate::NetNs::path), or `/proc/<pid>/ns/net`).
    pub netns: PathBuf,
    /// `CNI_IFNAME`: the interface made in the pod; `eth0` by default.
    pub ifname: String,
    /// `K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_UID` in `CNI_ARGS`, where not empty.
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    /// More `CNI_ARGS` pairs, after the Kubernetes ones.
    pub extra_args: Vec<(String, String)>,
    /// Capability arguments, given to plugins that declare the capability.
    pub runtime: RuntimeConfig,
}

impl PodNetwork {
    /// An attachment of the sandbox `container_id` whose network namespace is `netns`, on
    /// `eth0`, with nothing else set.
    pub fn new(container_id: impl Into<String>, netns: impl Into<PathBuf>) -> PodNetwork {
        PodNetwork {
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: DEFAULT_IFNAME.to_string(),
            ..PodNetwork::default()
        }
    }

    /// The `CNI_ARGS` pairs: `IgnoreUnknown=1` (plugins that do not know a key would
    /// otherwise fail), then the pod's Kubernetes identity, then `extra_args`.
    pub fn cni_args(&self) -> Vec<(String, String)> {
        let mut args = vec![("IgnoreUnknown".to_string(), "1".to_string())];
        for (k, v) in [
            ("K8S_POD_NAMESPACE", &self.pod_namespace),
            ("K8S_POD_NAME", &self.pod_name),
            ("K8S_POD_INFRA_CONTAINER_ID", &self.container_id),
            ("K8S_POD_UID", &self.pod_uid),
        ] {
            if !v.is_empty() {
                args.push((k.to_string(), v.clone()));
            }
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// `CNI_ARGS` as the spec writes them, `K=V;K=V`, after checking each pair: the format has
/// no escaping, so a key must be alphanumeric (or `_`) and a value hold no `;` or `=`.
pub fn encode_cni_args(pairs: &[(String, String)]) -> Result<String, String> {
    let mut out = String::new();
    for (k, v) in pairs {
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("CNI_ARGS key {k:?} must be letters, digits or '_'"));
        }
        if v.contains([';', '=', '\0']) {
            return Err(format!(
                "CNI_ARGS value {v:?} of {k} must not hold ';', '=' or NUL"
            ));
        }
        if !out.is_empty() {
            out.push(';');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    Ok(out)
}

/// The arguments of the well-known capabilities (CNI CONVENTIONS.md), each given in
/// `runtimeConfig` only to the plugins whose `capabilities` name it, and only when set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// `portMappings`: host ports forwarded into the pod (the `portmap` plugin's hostPort).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// `dns`: the pod's resolver settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConfig>,
    /// `ips`: addresses asked for, in CIDR form (`10.1.2.3/24`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// `mac`: the hardware address asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// `bandwidth`: traffic shaping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    /// Any other capability, by name.
    #[serde(default, flatten)]
    pub other: BTreeMap<String, Value>,
}

impl RuntimeConfig {
    /// Capability name to argument, for the capabilities that are set.
    pub(crate) fn capability_args(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            // A struct of strings, numbers and JSON values always serializes to an object.
            _ => Map::new(),
        }
    }
}

/// A transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

/// One entry of `portMappings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    pub protocol: Protocol,
    /// Only this host address, where set.
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

/// The `dns` capability.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DnsConfig {
    #[serde(default)]
    pub servers: Vec<String>,
    #[serde(default)]
    pub searches: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

/// The `bandwidth` capability: rates in bits per second, bursts in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    pub ingress_rate: u64,
    pub ingress_burst: u64,
    pub egress_rate: u64,
    pub egress_burst: u64,
}

/// The configuration one plugin reads on stdin: its own object from the list, with the
/// list's `name` and `cniVersion`, `prevResult` where there is one (any `prevResult` in
/// the file is dropped otherwise), and `runtimeConfig` holding the set capability
/// arguments that the plugin declares, over any `runtimeConfig` the file has.
pub(crate) fn plugin_stdin(
    list: &NetworkConfigList,
    plugin: &PluginConfig,
    prev_result: Option<&Value>,
    capability_args: &Map<String, Value>,
) -> Vec<u8> {
    let mut conf = plugin.raw().clone();
    conf.insert("name".into(), list.name().into());
    conf.insert("cniVersion".into(), list.version().as_str().into());
    match prev_result {
        Some(r) => conf.insert("prevResult".into(), r.clone()),
        None => conf.remove("prevResult"),
    };
    let mut runtime = match conf.remove("runtimeConfig") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for cap in plugin.capabilities() {
        if let Some(arg) = capability_args.get(cap) {
            runtime.insert(cap.clone(), arg.clone());
        }
    }
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    // A map of JSON values always serializes.
    serde_json::to_vec(&Value::Object(conf)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list() -> NetworkConfigList {
        NetworkConfigList::from_bytes(
            br#"{"cniVersion":"0.4.0","name":"pods","plugins":[
                {"type":"bridge","name":"ignored","cniVersion":"9.9.9","prevResult":{"stale":1}},
                {"type":"portmap","capabilities":{"portMappings":true,"ips":false},
                 "runtimeConfig":{"kept":1}},
                {"type":"tuning","capabilities":{"mac":true,"bandwidth":true,"custom":true}}]}"#,
            "test",
        )
        .unwrap()
    }

    fn stdin(i: usize, prev: Option<&Value>, rt: &RuntimeConfig) -> Value {
        let l = list();
        let bytes = plugin_stdin(&l, &l.plugins()[i], prev, &rt.capability_args());
        serde_json::from_slice(&bytes).unwrap()
    }

    fn runtime() -> RuntimeConfig {
        RuntimeConfig {
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: Some("127.0.0.1".parse().unwrap()),
            }],
            ips: vec!["10.1.2.3/24".into()],
            mac: Some("02:00:00:00:00:01".into()),
            other: [("custom".to_string(), json!({"x": 1}))].into(),
            ..RuntimeConfig::default()
        }
    }

    #[test]
    fn name_and_version_come_from_the_list_and_stale_prev_result_goes() {
        let c = stdin(0, None, &RuntimeConfig::default());
        assert_eq!(c["name"], "pods");
        assert_eq!(c["cniVersion"], "0.4.0");
        assert!(c.get("prevResult").is_none(), "{c}");
        assert!(c.get("runtimeConfig").is_none(), "{c}");
    }

    #[test]
    fn prev_result_is_injected() {
        let prev = json!({"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/24"}]});
        let c = stdin(0, Some(&prev), &RuntimeConfig::default());
        assert_eq!(c["prevResult"], prev);
    }

    #[test]
    fn only_declared_capabilities_are_given_and_file_runtime_config_is_kept() {
        let rt = runtime();
        let c = stdin(1, None, &rt);
        assert_eq!(
            c["runtimeConfig"],
            json!({
                "kept": 1,
                "portMappings": [{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}]
            })
        );
        // ips is declared false: not given.
        let c = stdin(2, None, &rt);
        assert_eq!(
            c["runtimeConfig"],
            json!({"mac": "02:00:00:00:00:01", "custom": {"x": 1}})
        );
        // bandwidth is declared but unset: not given. The bridge declares nothing.
        assert!(stdin(0, None, &rt).get("runtimeConfig").is_none());
    }

    #[test]
    fn cni_args_carry_the_pod_identity_after_ignore_unknown() {
        let mut pod = PodNetwork::new("sandbox1", "/run/berth/netns/sandbox1");
        pod.pod_namespace = "default".into();
        pod.pod_name = "web".into();
        pod.extra_args = vec![("FOO".into(), "bar".into())];
        assert_eq!(pod.ifname, "eth0");
        assert_eq!(
            encode_cni_args(&pod.cni_args()).unwrap(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;\
             K8S_POD_INFRA_CONTAINER_ID=sandbox1;FOO=bar"
        );
    }

    #[test]
    fn cni_args_that_cannot_be_encoded_are_refused() {
        for (k, v) in [
            ("A;B", "1"),
            ("", "1"),
            ("K", "a;b"),
            ("K", "a=b"),
            ("K=", "1"),
        ] {
            assert!(
                encode_cni_args(&[(k.into(), v.into())]).is_err(),
                "{k:?}={v:?} accepted"
            );
        }
        assert_eq!(encode_cni_args(&[]).unwrap(), "");
    }

    #[test]
    fn runtime_config_round_trips_through_json() {
        let rt = RuntimeConfig {
            dns: Some(DnsConfig {
                servers: vec!["10.0.0.10".into()],
                searches: vec!["svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            bandwidth: Some(Bandwidth {
                ingress_rate: 1000,
                ingress_burst: 10,
                egress_rate: 2000,
                egress_burst: 20,
            }),
            ..runtime()
        };
        let v = serde_json::to_value(&rt).unwrap();
        assert_eq!(v["bandwidth"]["ingressRate"], 1000);
        assert_eq!(v["dns"]["searches"][0], "svc.cluster.local");
        let back: RuntimeConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, rt);
    }
}
