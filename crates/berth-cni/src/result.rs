//! Plugin results, in the 1.0.0 shape whatever version the plugin spoke.
//!
//! 0.3.0, 0.3.1 and 0.4.0 results are the 1.0.0 result plus a `version` ("4" or "6") on
//! each IP, which 1.0.0 dropped since the address says it: it is read, checked against the
//! address, and dropped. Fields that later versions added (an interface's `mtu`, a route's
//! `mtu`, `table`, ...) are kept where present. The raw JSON of a result is kept apart (in
//! the cache) for `prevResult`, which must reach plugins in the network's own version.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::version::CniVersion;

/// An address with its prefix length, `10.88.0.5/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR form (address/prefix)"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        // Digits only: u8's parser would also take a leading '+'.
        let prefix = Some(p)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u8>().ok())
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{p:?} is not a prefix length of 0 to {max}"))?;
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

/// An interface a plugin made or used.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The network namespace path for an interface inside the pod; none (or empty) for a
    /// host interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

impl Interface {
    /// Whether the interface is inside the pod rather than on the host.
    pub fn in_sandbox(&self) -> bool {
        self.sandbox.as_deref().is_some_and(|s| !s.is_empty())
    }
}

/// An address given to an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// An index into [`CniResult::interfaces`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route a plugin set up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

/// Resolver settings a plugin reports.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

/// The result of an ADD, in the 1.0.0 shape.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct CniResult {
    /// Always 1.0.0 once converted; see [`CniResult::source_version`].
    #[serde(rename = "cniVersion")]
    cni_version: &'static str,
    #[serde(skip)]
    source_version: Option<CniVersion>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// A result that does not follow the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultError(pub String);

impl fmt::Display for ResultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ResultError {}

/// The wire form of 0.3.0 to 1.0.0 results (`cniVersion` is read apart): `version` on IPs
/// is optional (and checked against the address where present, 1.0.0 results included),
/// null lists are empty.
#[derive(Deserialize)]
struct Wire {
    #[serde(default, deserialize_with = "null_is_default")]
    interfaces: Vec<Interface>,
    #[serde(default, deserialize_with = "null_is_default")]
    ips: Vec<WireIp>,
    #[serde(default, deserialize_with = "null_is_default")]
    routes: Vec<Route>,
    #[serde(default, deserialize_with = "null_is_default")]
    dns: Dns,
}

#[derive(Deserialize)]
struct WireIp {
    #[serde(default)]
    version: Option<String>,
    address: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    interface: Option<usize>,
}

fn null_is_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl CniResult {
    /// Parses a result of any supported version and converts it to the 1.0.0 shape.
    pub fn parse(value: &Value) -> Result<CniResult, ResultError> {
        let version = match value.get("cniVersion") {
            Some(Value::String(v)) => v
                .parse::<CniVersion>()
                .map_err(|e| ResultError(e.to_string()))?,
            Some(_) => return Err(ResultError("\"cniVersion\" is not a string".into())),
            None => return Err(ResultError("\"cniVersion\" is missing".into())),
        };
        let wire = Wire::deserialize(value).map_err(|e| ResultError(e.to_string()))?;
        let mut ips = Vec::with_capacity(wire.ips.len());
        for (i, ip) in wire.ips.into_iter().enumerate() {
            if let Some(v) = &ip.version {
                let want = if ip.address.addr.is_ipv4() { "4" } else { "6" };
                if v != want {
                    return Err(ResultError(format!(
                        "ips[{i}]: version {v:?} does not match address {}",
                        ip.address
                    )));
                }
            }
            if let Some(idx) = ip.interface {
                if idx >= wire.interfaces.len() {
                    return Err(ResultError(format!(
                        "ips[{i}]: interface index {idx} is out of range (there are {} interfaces)",
                        wire.interfaces.len()
                    )));
                }
            }
            ips.push(IpConfig {
                address: ip.address,
                gateway: ip.gateway,
                interface: ip.interface,
            });
        }
        Ok(CniResult {
            cni_version: CniVersion::V1_0_0.as_str(),
            source_version: Some(version),
            interfaces: wire.interfaces,
            ips,
            routes: wire.routes,
            dns: wire.dns,
        })
    }

    /// Parses a result from the bytes a plugin printed.
    pub fn from_slice(bytes: &[u8]) -> Result<(CniResult, Value), ResultError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ResultError(format!("not JSON: {e}")))?;
        let r = CniResult::parse(&value)?;
        Ok((r, value))
    }

    /// The version the plugin spoke.
    pub fn source_version(&self) -> Option<CniVersion> {
        self.source_version
    }

    /// The result as 1.0.0 JSON.
    pub fn to_value(&self) -> Value {
        // Strings, numbers and lists of them always serialize.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The pod's addresses, IPv4 first and then IPv6, each in the order the plugins gave
    /// them, without repeats: the addresses on interfaces inside the pod, and those not
    /// tied to an interface (what an IPAM-only chain reports). Host-side addresses (a
    /// bridge's gateway) are left out. The CRI's PodIP is the first, PodIPs all.
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        let in_pod = |ip: &&IpConfig| match ip.interface {
            None => true,
            Some(i) => self.interfaces.get(i).is_some_and(Interface::in_sandbox),
        };
        let mut out: Vec<IpAddr> = Vec::new();
        for want_v4 in [true, false] {
            for ip in self.ips.iter().filter(in_pod) {
                let a = ip.address.addr;
                if a.is_ipv4() == want_v4 && !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bridge_result(version: &str, with_ip_version: bool) -> Value {
        let mut ip4 = json!({"address": "10.88.77.5/24", "gateway": "10.88.77.1", "interface": 2});
        let mut ip6 = json!({"address": "fd00:77::5/64", "gateway": "fd00:77::1", "interface": 2});
        if with_ip_version {
            ip4["version"] = "4".into();
            ip6["version"] = "6".into();
        }
        json!({
            "cniVersion": version,
            "interfaces": [
                {"name": "cni-test0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/berth/netns/p"}
            ],
            "ips": [ip6, ip4],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.0.0.0/8", "gw": "10.88.77.1"}],
            "dns": {"nameservers": ["10.88.77.1"], "search": ["example.org"]}
        })
    }

    #[test]
    fn a_0_4_0_result_converts_to_the_1_0_0_shape() {
        let old = CniResult::parse(&bridge_result("0.4.0", true)).unwrap();
        assert_eq!(old.source_version(), Some(CniVersion::V0_4_0));
        let new = CniResult::parse(&bridge_result("1.0.0", false)).unwrap();
        assert_eq!(old.to_value(), new.to_value());
        assert_eq!(old.to_value(), bridge_result("1.0.0", false));
    }

    #[test]
    fn a_0_3_1_result_parses_too() {
        let r = CniResult::parse(&bridge_result("0.3.1", true)).unwrap();
        assert_eq!(r.ips.len(), 2);
        assert_eq!(r.ips[1].gateway, Some("10.88.77.1".parse().unwrap()));
        assert_eq!(r.ips[1].interface, Some(2));
        assert_eq!(r.routes[1].gw, Some("10.88.77.1".parse().unwrap()));
        assert_eq!(r.routes[0].dst.to_string(), "0.0.0.0/0");
        assert_eq!(r.dns.search, ["example.org"]);
        assert_eq!(
            r.interfaces[2].sandbox.as_deref(),
            Some("/run/berth/netns/p")
        );
    }

    #[test]
    fn pod_ips_put_ipv4_first_and_leave_out_host_addresses() {
        let mut v = bridge_result("1.0.0", false);
        v["ips"]
            .as_array_mut()
            .unwrap()
            .push(json!({"address": "10.88.77.1/24", "interface": 0}));
        v["ips"]
            .as_array_mut()
            .unwrap()
            .push(json!({"address": "10.88.77.5/24", "interface": 2}));
        let r = CniResult::parse(&v).unwrap();
        let ips: Vec<String> = r.pod_ips().iter().map(|a| a.to_string()).collect();
        assert_eq!(ips, ["10.88.77.5", "fd00:77::5"]);
    }

    #[test]
    fn pod_ips_of_an_ipam_only_result_are_its_addresses() {
        let r = CniResult::parse(&json!({
            "cniVersion": "1.0.0",
            "ips": [{"address": "2001:db8::2/64"}, {"address": "192.0.2.2/24"}]
        }))
        .unwrap();
        let ips: Vec<String> = r.pod_ips().iter().map(|a| a.to_string()).collect();
        assert_eq!(ips, ["192.0.2.2", "2001:db8::2"]);
    }

    #[test]
    fn nulls_and_missing_lists_are_empty() {
        let r = CniResult::parse(
            &json!({"cniVersion": "1.0.0", "interfaces": null, "ips": null, "dns": null}),
        )
        .unwrap();
        assert!(r.interfaces.is_empty() && r.ips.is_empty() && r.routes.is_empty());
        assert_eq!(r.to_value(), json!({"cniVersion": "1.0.0"}));
    }

    #[test]
    fn malformed_results_are_errors_not_panics() {
        let cases = [
            (json!({}), "cniVersion"),
            (json!({"cniVersion": 1}), "not a string"),
            (
                json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24"}}),
                "not supported",
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2"}]}),
                "CIDR",
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/33"}]}),
                "prefix",
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/+8"}]}),
                "prefix",
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": [{"address": "fd00::1/129"}]}),
                "prefix",
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": [{"address": "x/8"}]}),
                "not an IP",
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/8", "interface": 0}]}),
                "out of range",
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/8", "interface": -1}]}),
                "invalid value",
            ),
            (
                json!({"cniVersion": "0.4.0", "ips": [{"version": "6", "address": "10.0.0.2/8"}]}),
                "does not match",
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/8", "gateway": "nope"}]}),
                "invalid IP",
            ),
            (
                json!({"cniVersion": "1.0.0", "interfaces": [{"mac": "x"}]}),
                "name",
            ),
            (
                json!({"cniVersion": "1.0.0", "routes": [{"gw": "10.0.0.1"}]}),
                "dst",
            ),
            (json!({"cniVersion": "1.0.0", "ips": {}}), "invalid type"),
        ];
        for (v, want) in cases {
            let e = CniResult::parse(&v).unwrap_err();
            assert!(e.0.contains(want), "{v}: {e:?} lacks {want:?}");
        }
        assert!(CniResult::from_slice(b"{\"cniVersion\":").is_err());
    }
}
