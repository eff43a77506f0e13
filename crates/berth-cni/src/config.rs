//! Network configuration lists: loading from a directory, validation.
//!
//! The first file of the directory in lexical (byte) order whose name ends in `.conflist`,
//! `.conf` or `.json` is the network, as the kubelet's and containerd's loaders choose it.
//! A malformed first file is an error that names it; the next file is not tried, so that a
//! typo never silently moves pods onto another network.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::ConfigError;
use crate::version::CniVersion;

/// Where the kubelet, containerd and CRI-O look for network configurations.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";

/// The largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The extensions of configuration files, as libcni and the kubelet recognise them.
const EXTENSIONS: [&str; 3] = ["conflist", "conf", "json"];

/// One plugin of a network configuration list.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    plugin_type: String,
    capabilities: BTreeSet<String>,
    raw: Map<String, Value>,
}

impl PluginConfig {
    /// The plugin's `type`: the file name of its executable.
    pub fn plugin_type(&self) -> &str {
        &self.plugin_type
    }

    /// The capabilities the plugin declares (`"capabilities": {"portMappings": true}`).
    pub fn capabilities(&self) -> &BTreeSet<String> {
        &self.capabilities
    }

    /// The plugin's configuration object as written.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }
}

/// A network configuration list (a `.conflist`, or a single plugin's `.conf` wrapped as a
/// list of one), validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    name: String,
    version: CniVersion,
    disable_check: bool,
    plugins: Vec<PluginConfig>,
    file: Option<PathBuf>,
}

impl NetworkConfigList {
    /// The first configuration file of `dir` in lexical order, loaded (see the module docs).
    pub fn load_dir(dir: &Path) -> Result<NetworkConfigList, ConfigError> {
        let file = first_config_file(dir)?;
        NetworkConfigList::load_file(&file)
    }

    /// One configuration file: a list, or a single plugin's configuration.
    pub fn load_file(file: &Path) -> Result<NetworkConfigList, ConfigError> {
        let bytes = read_bounded(file)?;
        let origin = file.display().to_string();
        let list_only = file.extension().is_some_and(|e| e == "conflist");
        let mut list = parse(&bytes, &origin, list_only)?;
        list.file = Some(file.to_path_buf());
        Ok(list)
    }

    /// A configuration from memory; `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<NetworkConfigList, ConfigError> {
        parse(bytes, origin, false)
    }

    /// A list as [`NetworkConfigList::to_value`] wrote it (the result cache).
    pub fn from_value(value: Value, origin: &str) -> Result<NetworkConfigList, ConfigError> {
        from_value(value, origin, true)
    }

    /// The network's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The list's `cniVersion`, given to every plugin.
    pub fn version(&self) -> CniVersion {
        self.version
    }

    /// `disableCheck`: CHECK is not to be run on this network.
    pub fn disable_check(&self) -> bool {
        self.disable_check
    }

    /// The plugins, in ADD order.
    pub fn plugins(&self) -> &[PluginConfig] {
        &self.plugins
    }

    /// The file it was loaded from, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The list as a configuration list object (what the cache stores).
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("cniVersion".into(), self.version.as_str().into());
        m.insert("name".into(), self.name.clone().into());
        if self.disable_check {
            m.insert("disableCheck".into(), true.into());
        }
        let plugins = self
            .plugins
            .iter()
            .map(|p| Value::Object(p.raw.clone()))
            .collect();
        m.insert("plugins".into(), Value::Array(plugins));
        Value::Object(m)
    }
}

/// The configuration file the directory's network comes from.
pub fn first_config_file(dir: &Path) -> Result<PathBuf, ConfigError> {
    let entries = fs::read_dir(dir).map_err(|source| ConfigError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e));
        // A link to a file counts; a directory named like a file does not.
        if wanted && fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            names.push(entry.file_name());
        }
    }
    // OsString orders by bytes: the order of `ls` under LC_ALL=C, and of Go's sort.Strings.
    names.sort();
    names
        .into_iter()
        .next()
        .map(|n| dir.join(n))
        .ok_or_else(|| ConfigError::NoConfig {
            dir: dir.to_path_buf(),
        })
}

fn read_bounded(file: &Path) -> Result<Vec<u8>, ConfigError> {
    let read_err = |source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    };
    let f = fs::File::open(file).map_err(read_err)?;
    let mut bytes = Vec::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            file: file.to_path_buf(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    Ok(bytes)
}

fn parse(bytes: &[u8], origin: &str, list_only: bool) -> Result<NetworkConfigList, ConfigError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|source| ConfigError::Json {
        origin: origin.to_string(),
        source,
    })?;
    from_value(value, origin, list_only)
}

fn invalid(origin: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_string(),
        reason: reason.into(),
    }
}

fn from_value(
    value: Value,
    origin: &str,
    list_only: bool,
) -> Result<NetworkConfigList, ConfigError> {
    let Value::Object(mut top) = value else {
        return Err(invalid(origin, "the configuration is not a JSON object"));
    };
    let name = match top.get("name") {
        Some(Value::String(n)) => n.clone(),
        Some(_) => return Err(invalid(origin, "\"name\" is not a string")),
        None => return Err(invalid(origin, "\"name\" is missing")),
    };
    check_network_name(&name).map_err(|r| invalid(origin, r))?;
    let version = match top.get("cniVersion") {
        Some(Value::String(v)) => v
            .parse::<CniVersion>()
            .map_err(|e| invalid(origin, e.to_string()))?,
        Some(_) => return Err(invalid(origin, "\"cniVersion\" is not a string")),
        None => return Err(invalid(origin, "\"cniVersion\" is missing")),
    };
    let disable_check = match top.get("disableCheck") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        // libcni accepts the string form too.
        Some(Value::String(s)) if s == "true" => true,
        Some(Value::String(s)) if s == "false" => false,
        Some(_) => return Err(invalid(origin, "\"disableCheck\" is not a boolean")),
    };
    let raw_plugins = match top.remove("plugins") {
        Some(Value::Array(p)) => p,
        Some(_) => return Err(invalid(origin, "\"plugins\" is not an array")),
        None if list_only => return Err(invalid(origin, "\"plugins\" is missing")),
        // A single plugin's configuration: the whole object is the plugin, as libcni's
        // ConfListFromConf wraps it.
        None => vec![Value::Object(top)],
    };
    if raw_plugins.is_empty() {
        return Err(invalid(origin, "\"plugins\" is empty"));
    }
    let plugins = raw_plugins
        .into_iter()
        .enumerate()
        .map(|(i, p)| plugin(p).map_err(|r| invalid(origin, format!("plugins[{i}]: {r}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NetworkConfigList {
        name,
        version,
        disable_check,
        plugins,
        file: None,
    })
}

fn plugin(value: Value) -> Result<PluginConfig, String> {
    let Value::Object(raw) = value else {
        return Err("not a JSON object".into());
    };
    let plugin_type = match raw.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => return Err("\"type\" is not a string".into()),
        None => return Err("\"type\" is missing".into()),
    };
    check_plugin_type(&plugin_type)?;
    let capabilities = match raw.get("capabilities") {
        None | Some(Value::Null) => BTreeSet::new(),
        Some(Value::Object(caps)) => caps
            .iter()
            .filter(|(_, on)| on.as_bool() == Some(true))
            .map(|(k, _)| k.clone())
            .collect(),
        Some(_) => return Err("\"capabilities\" is not an object".into()),
    };
    Ok(PluginConfig {
        plugin_type,
        capabilities,
        raw,
    })
}

/// A network name as the spec allows it: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`. It also names the
/// network's directory in the result cache, so this keeps it a plain file name.
pub(crate) fn check_network_name(name: &str) -> Result<(), String> {
    id_like(name).map_err(|r| format!("network name {name:?} {r}"))
}

/// A container id as the spec allows it: the same grammar as a network name.
pub(crate) fn check_container_id(id: &str) -> Result<(), String> {
    id_like(id).map_err(|r| format!("container id {id:?} {r}"))
}

fn id_like(s: &str) -> Result<(), &'static str> {
    let mut chars = s.chars();
    match chars.next() {
        None => return Err("is empty"),
        Some(c) if !c.is_ascii_alphanumeric() => return Err("must start with a letter or a digit"),
        Some(_) => {}
    }
    if chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err("may hold only letters, digits, '_', '.' and '-'")
    }
}

/// A plugin type names an executable in the search path: a plain file name, never a path.
pub(crate) fn check_plugin_type(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("\"type\" is empty".into());
    }
    if t == "." || t == ".." || t.contains('/') || t.contains('\0') {
        return Err(format!(
            "plugin type {t:?} is not a plain file name (no '/', '.' or '..')"
        ));
    }
    Ok(())
}

/// An interface name as the spec and the kernel allow it: 1 to 15 bytes, not `.` or `..`,
/// no `/`, `:` or white space. It also names the cache file.
pub(crate) fn check_ifname(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace());
    if bad {
        Err(format!(
            "interface name {name:?} must be 1 to 15 bytes, not '.' or '..', without '/', ':' \
             or white space"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(json: &str) -> Result<NetworkConfigList, ConfigError> {
        NetworkConfigList::from_bytes(json.as_bytes(), "test.conflist")
    }

    fn reason(e: ConfigError) -> String {
        match e {
            ConfigError::Invalid { reason, .. } => reason,
            other => panic!("not an Invalid error: {other:?}"),
        }
    }

    #[test]
    fn a_list_keeps_its_plugins_in_order_with_their_capabilities() {
        let l = list(
            r#"{"cniVersion":"1.0.0","name":"pods","plugins":[
                {"type":"bridge","bridge":"cni0"},
                {"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false}},
                {"type":"loopback"}]}"#,
        )
        .unwrap();
        assert_eq!(l.name(), "pods");
        assert_eq!(l.version(), CniVersion::V1_0_0);
        assert!(!l.disable_check());
        let types: Vec<_> = l.plugins().iter().map(|p| p.plugin_type()).collect();
        assert_eq!(types, ["bridge", "portmap", "loopback"]);
        let caps: Vec<_> = l.plugins()[1].capabilities().iter().cloned().collect();
        assert_eq!(caps, ["portMappings"]);
        assert_eq!(l.plugins()[0].raw()["bridge"], "cni0");
    }

    #[test]
    fn a_single_plugin_config_is_wrapped_as_a_list_of_one() {
        let l = list(
            r#"{"cniVersion":"0.3.1","name":"single","type":"bridge","ipam":{"type":"host-local"}}"#,
        )
        .unwrap();
        assert_eq!(l.version(), CniVersion::V0_3_1);
        assert_eq!(l.plugins().len(), 1);
        assert_eq!(l.plugins()[0].plugin_type(), "bridge");
        assert_eq!(l.plugins()[0].raw()["ipam"]["type"], "host-local");
    }

    #[test]
    fn invalid_lists_are_refused_with_the_reason() {
        let cases = [
            (r#"[]"#, "not a JSON object"),
            (
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#,
                "\"name\" is missing",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"","plugins":[{"type":"x"}]}"#,
                "is empty",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"a/b","plugins":[{"type":"x"}]}"#,
                "may hold only",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":".n","plugins":[{"type":"x"}]}"#,
                "must start",
            ),
            (
                r#"{"name":"n","plugins":[{"type":"x"}]}"#,
                "\"cniVersion\" is missing",
            ),
            (
                r#"{"cniVersion":"0.2.0","name":"n","plugins":[{"type":"x"}]}"#,
                "not supported",
            ),
            (
                r#"{"cniVersion":1,"name":"n","plugins":[{"type":"x"}]}"#,
                "not a string",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                "\"plugins\" is empty",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":{}}"#,
                "not an array",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{}]}"#,
                "plugins[0]: \"type\" is missing",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../sh"}]}"#,
                "plain file name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"/bin/sh"}]}"#,
                "plain file name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":".."}]}"#,
                "plain file name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"x"},3]}"#,
                "plugins[1]: not a JSON object",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"x","capabilities":[]}]}"#,
                "\"capabilities\" is not an object",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","disableCheck":3,"plugins":[{"type":"x"}]}"#,
                "disableCheck",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n"}"#,
                "\"type\" is missing",
            ),
        ];
        for (json, want) in cases {
            let r = reason(list(json).unwrap_err());
            assert!(r.contains(want), "{json}: {r:?} lacks {want:?}");
        }
    }

    #[test]
    fn a_conflist_file_must_have_plugins() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("10-x.conflist");
        fs::write(&f, r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#).unwrap();
        let e = NetworkConfigList::load_file(&f).unwrap_err();
        assert!(e.to_string().contains(&*f.to_string_lossy()), "{e}");
        assert!(reason(e).contains("\"plugins\" is missing"));
    }

    #[test]
    fn disable_check_takes_a_boolean_or_its_string() {
        for (v, want) in [("true", true), ("false", false), ("\"true\"", true)] {
            let l = list(&format!(
                r#"{{"cniVersion":"1.0.0","name":"n","disableCheck":{v},"plugins":[{{"type":"x"}}]}}"#
            ))
            .unwrap();
            assert_eq!(l.disable_check(), want, "{v}");
        }
    }

    #[test]
    fn the_first_file_in_lexical_order_wins_and_others_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, net: &str| {
            fs::write(
                dir.path().join(name),
                format!(r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[{{"type":"x"}}]}}"#),
            )
            .unwrap()
        };
        write("20-b.conflist", "b");
        write("10-a.conf", "a");
        write("99-c.json", "c");
        write("05-ignored.txt", "txt");
        fs::create_dir(dir.path().join("00-dir.conflist")).unwrap();
        let l = NetworkConfigList::load_dir(dir.path()).unwrap();
        assert_eq!(l.name(), "a");
        assert_eq!(l.file(), Some(dir.path().join("10-a.conf").as_path()));
        // Upper case sorts before lower case in byte order.
        write("10-B.conflist", "upper");
        assert_eq!(
            NetworkConfigList::load_dir(dir.path()).unwrap().name(),
            "upper"
        );
    }

    #[test]
    fn a_malformed_first_file_is_an_error_naming_it_not_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("10-bad.conflist"), "{ not json").unwrap();
        fs::write(
            dir.path().join("20-good.conflist"),
            r#"{"cniVersion":"1.0.0","name":"good","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        let e = NetworkConfigList::load_dir(dir.path()).unwrap_err();
        assert!(matches!(e, ConfigError::Json { .. }), "{e:?}");
        assert!(e.to_string().contains("10-bad.conflist"), "{e}");
    }

    #[test]
    fn an_empty_or_missing_dir_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let e = NetworkConfigList::load_dir(dir.path()).unwrap_err();
        assert!(matches!(e, ConfigError::NoConfig { .. }), "{e:?}");
        let e = NetworkConfigList::load_dir(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(e, ConfigError::ReadDir { .. }), "{e:?}");
    }

    #[test]
    fn an_oversized_file_is_refused_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("huge.conflist");
        fs::write(&f, vec![b' '; (MAX_CONFIG_BYTES + 1) as usize]).unwrap();
        let e = NetworkConfigList::load_file(&f).unwrap_err();
        assert!(matches!(e, ConfigError::TooLarge { .. }), "{e:?}");
    }

    #[test]
    fn to_value_round_trips() {
        let l = list(
            r#"{"cniVersion":"0.4.0","name":"n","disableCheck":true,"plugins":[{"type":"x","k":[1,2]},{"type":"y"}]}"#,
        )
        .unwrap();
        let back = NetworkConfigList::from_value(l.to_value(), "cache").unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn names_ids_and_ifnames_are_checked() {
        assert!(check_container_id("abc-1.2_3").is_ok());
        assert!(check_container_id("-abc").is_err());
        assert!(check_container_id("a b").is_err());
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("net1.100").is_ok());
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "0123456789abcdef"] {
            assert!(check_ifname(bad).is_err(), "{bad:?} accepted");
        }
    }
}
