//! The caller against shell-script plugins that record what they were given: the order of
//! calls, stdin, environment, undo on failure, deadlines, the cache, CHECK, VERSION. No
//! privilege needed: the plugins touch no network; CNI_NETNS is the test's own namespace.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_cni::{Cni, CniError, NetworkStatus, PodNetwork, PortMapping, Protocol, RuntimeConfig};
use common::*;
use serde_json::{json, Value};

const NETNS: &str = "/proc/self/ns/net";

const RESULT_A: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/proc/self/ns/net"}],"ips":[{"address":"10.1.0.5/24","interface":0}]}"#;
const RESULT_B: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/proc/self/ns/net"}],"ips":[{"address":"fd00::5/64","interface":0},{"address":"10.1.0.5/24","interface":0}]}"#;

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    plugins: PathBuf,
    log: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let plugins = dir.join("bin");
        let log = dir.join("log");
        fs::create_dir_all(&plugins).unwrap();
        fs::create_dir_all(&log).unwrap();
        Setup {
            _tmp: tmp,
            dir,
            plugins,
            log,
        }
    }

    fn cni(&self, conflist: &str) -> Cni {
        self.cni_timeout(conflist, Duration::from_secs(30))
    }

    fn cni_timeout(&self, conflist: &str, timeout: Duration) -> Cni {
        cni(&self.dir, conflist, vec![self.plugins.clone()], timeout)
    }

    fn recorder(&self, name: &str, result: &str) {
        recorder(&self.plugins, &self.log, name, result, "");
    }

    fn cache_file(&self, network: &str, id: &str) -> PathBuf {
        self.dir
            .join("cache")
            .join(network)
            .join(id)
            .join("eth0.json")
    }
}

fn conflist(version: &str, plugins: &[&str]) -> String {
    let plugins: Vec<Value> = plugins
        .iter()
        .map(|p| match *p {
            "b" => json!({"type": "b", "capabilities": {"portMappings": true}, "own": 2}),
            p => json!({"type": p, "own": 1}),
        })
        .collect();
    json!({"cniVersion": version, "name": "fakenet", "plugins": plugins}).to_string()
}

fn pod(id: &str) -> PodNetwork {
    let mut pod = PodNetwork::new(id, NETNS);
    pod.pod_namespace = "default".into();
    pod.pod_name = "web".into();
    pod.runtime = RuntimeConfig {
        port_mappings: vec![PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: None,
        }],
        ..RuntimeConfig::default()
    };
    pod
}

fn parsed(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

#[test]
fn add_runs_plugins_in_order_chaining_results_with_name_version_args_and_capabilities() {
    let s = Setup::new();
    s.recorder("a", RESULT_A);
    s.recorder("b", RESULT_B);
    let cni = s.cni(&conflist("1.0.0", &["a", "b"]));

    let att = cni.setup(&pod("sandbox1")).unwrap();

    assert_eq!(log_lines(&s.log), ["a ADD", "b ADD"]);
    let a = stdin_of(&s.log, "a", "ADD");
    assert_eq!(a["name"], "fakenet");
    assert_eq!(a["cniVersion"], "1.0.0");
    assert_eq!(a["own"], 1);
    assert!(a.get("prevResult").is_none(), "{a}");
    assert!(
        a.get("runtimeConfig").is_none(),
        "a declares no capability: {a}"
    );
    let b = stdin_of(&s.log, "b", "ADD");
    assert_eq!(b["prevResult"], parsed(RESULT_A));
    assert_eq!(
        b["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    );
    let env = env_of(&s.log, "a", "ADD");
    for want in [
        "CNI_COMMAND=ADD".to_string(),
        "CNI_CONTAINERID=sandbox1".to_string(),
        format!("CNI_NETNS={NETNS}"),
        "CNI_IFNAME=eth0".to_string(),
        "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=sandbox1".to_string(),
        format!("CNI_PATH={}", s.plugins.display()),
    ] {
        assert!(env.contains(&want), "{want} not in {env:?}");
    }
    assert_eq!(env.len(), 6, "{env:?}");

    assert_eq!(att.network, "fakenet");
    assert_eq!(att.raw_result, parsed(RESULT_B));
    let ips: Vec<String> = att.pod_ips().iter().map(|a| a.to_string()).collect();
    assert_eq!(ips, ["10.1.0.5", "fd00::5"]);
    let cached: Value =
        serde_json::from_slice(&fs::read(s.cache_file("fakenet", "sandbox1")).unwrap()).unwrap();
    assert_eq!(cached["result"], parsed(RESULT_B));
    assert_eq!(cached["config"]["plugins"][1]["own"], 2);
}

#[test]
fn a_callers_cni_variables_do_not_reach_plugins() {
    // Set only in this test's own process environment: other tests would see it too,
    // which this assertion covers as well.
    std::env::set_var("CNI_STRAY", "1");
    let s = Setup::new();
    s.recorder("a", RESULT_A);
    let cni = s.cni(&conflist("1.0.0", &["a"]));
    cni.setup(&pod("stray")).unwrap();
    let env = env_of(&s.log, "a", "ADD");
    assert!(!env.iter().any(|l| l.starts_with("CNI_STRAY")), "{env:?}");
}

#[test]
fn teardown_runs_del_in_reverse_with_the_cached_result_and_drops_the_cache() {
    let s = Setup::new();
    s.recorder("a", RESULT_A);
    s.recorder("b", RESULT_B);
    let cni = s.cni(&conflist("0.4.0", &["a", "b"]));
    cni.setup(&pod("sandbox1")).unwrap();
    assert!(s.cache_file("fakenet", "sandbox1").exists());

    cni.teardown(&pod("sandbox1")).unwrap();

    assert_eq!(log_lines(&s.log), ["a ADD", "b ADD", "b DEL", "a DEL"]);
    for p in ["a", "b"] {
        let del = stdin_of(&s.log, p, "DEL");
        assert_eq!(del["prevResult"], parsed(RESULT_B), "{p}: {del}");
        assert_eq!(del["cniVersion"], "0.4.0");
    }
    assert_eq!(
        stdin_of(&s.log, "b", "DEL")["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    assert!(!s.cache_file("fakenet", "sandbox1").exists());
    assert!(!s.dir.join("cache/fakenet/sandbox1").exists());
}

#[test]
fn teardown_without_a_cache_entry_runs_del_without_prev_result() {
    let s = Setup::new();
    s.recorder("a", RESULT_A);
    let cni = s.cni(&conflist("1.0.0", &["a"]));
    cni.teardown(&pod("never-added")).unwrap();
    assert_eq!(log_lines(&s.log), ["a DEL"]);
    assert!(stdin_of(&s.log, "a", "DEL").get("prevResult").is_none());
}

#[test]
fn teardown_after_a_restart_works_from_the_cache_alone() {
    let s = Setup::new();
    s.recorder("a", RESULT_A);
    s.recorder("b", RESULT_B);
    let cni = s.cni(&conflist("1.0.0", &["a", "b"]));
    let mut p = pod("sandbox1");
    p.extra_args = vec![("EXTRA".into(), "x".into())];
    cni.setup(&p).unwrap();
    drop(cni);
    fs::remove_dir_all(s.dir.join("net.d")).unwrap();

    let restarted = Cni::new(options(
        &s.dir,
        vec![s.plugins.clone()],
        Duration::from_secs(30),
    ));
    assert!(!restarted.status().is_ready());
    // The restarted engine knows the id and where the netns was, nothing else.
    let bare = PodNetwork::new("sandbox1", "");
    let att = restarted
        .attachment(&bare)
        .unwrap()
        .expect("cached attachment");
    assert_eq!(att.raw_result, parsed(RESULT_B));
    restarted.teardown(&bare).unwrap();

    assert_eq!(log_lines(&s.log), ["a ADD", "b ADD", "b DEL", "a DEL"]);
    let del = stdin_of(&s.log, "a", "DEL");
    assert_eq!(del["name"], "fakenet");
    assert_eq!(del["prevResult"], parsed(RESULT_B));
    let env = env_of(&s.log, "a", "DEL");
    assert!(env.contains(&format!("CNI_NETNS={NETNS}")), "{env:?}");
    assert!(
        env.iter().any(|l| l.starts_with("CNI_ARGS=")
            && l.contains("K8S_POD_NAME=web;")
            && l.ends_with(";EXTRA=x")),
        "{env:?}"
    );
    assert!(!s.cache_file("fakenet", "sandbox1").exists());
    assert!(restarted.attachment(&bare).unwrap().is_none());
    // Nothing left to do: a second teardown runs nothing.
    restarted.teardown(&bare).unwrap();
    assert_eq!(log_lines(&s.log).len(), 4);
}

#[test]
fn a_gone_netns_is_given_to_del_as_empty() {
    let s = Setup::new();
    s.recorder("a", RESULT_A);
    let cni = s.cni(&conflist("1.0.0", &["a"]));
    cni.setup(&pod("sandbox1")).unwrap();
    let mut gone = pod("sandbox1");
    gone.netns = s.dir.join("netns-that-was-removed");
    cni.teardown(&gone).unwrap();
    let env = env_of(&s.log, "a", "DEL");
    assert!(env.contains(&"CNI_NETNS=".to_string()), "{env:?}");
}

#[test]
fn a_failing_plugin_fails_setup_with_its_message_and_everything_is_deleted() {
    let s = Setup::new();
    s.recorder("a", RESULT_A);
    failer(&s.plugins, "f", "no more addresses");
    s.recorder("b", RESULT_B);
    let cni = s.cni(&conflist("1.0.0", &["a", "f", "b"]));

    let e = cni.setup(&pod("sandbox1")).unwrap_err();

    assert!(
        matches!(&e, CniError::Failed { error, .. } if error.code == 107),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "network fakenet: ADD of plugin f failed: no more addresses: injected by the test (CNI error code 107)"
    );
    // DEL for the whole list, in reverse, with the last good result.
    assert_eq!(log_lines(&s.log), ["a ADD", "b DEL", "a DEL"]);
    assert_eq!(stdin_of(&s.log, "a", "DEL")["prevResult"], parsed(RESULT_A));
    assert!(!s.cache_file("fakenet", "sandbox1").exists());
    // The pod can be set up again.
    fs::remove_file(s.plugins.join("f")).unwrap();
    s.recorder("f", RESULT_A);
    cni.setup(&pod("sandbox1")).unwrap();
}

#[test]
fn when_undoing_fails_too_both_errors_come_back_and_the_cache_stays() {
    let s = Setup::new();
    s.recorder("a", RESULT_A);
    recorder(
        &s.plugins,
        &s.log,
        "b",
        "",
        r#"if [ "$CNI_COMMAND" = DEL ]; then echo '{"code":11,"msg":"del is stuck"}'; exit 1; fi
if [ "$CNI_COMMAND" = ADD ]; then echo '{"code":5,"msg":"add broke"}'; exit 1; fi"#,
    );
    let cni = s.cni(&conflist("1.0.0", &["a", "b"]));

    let e = cni.setup(&pod("sandbox1")).unwrap_err();

    let msg = berth_cni::full_message(&e);
    assert!(matches!(e, CniError::AddCleanupFailed { .. }), "{e:?}");
    assert!(
        msg.contains("DEL of plugin b failed: del is stuck (CNI error code 11)"),
        "{msg}"
    );
    assert!(
        msg.contains("ADD of plugin b failed: add broke (CNI error code 5)"),
        "{msg}"
    );
    // a's DEL still ran after b's failed.
    assert_eq!(log_lines(&s.log), ["a ADD", "b ADD", "b DEL", "a DEL"]);
    assert!(s.cache_file("fakenet", "sandbox1").exists());
}

#[test]
fn del_goes_on_past_a_failing_plugin_and_keeps_the_cache_for_a_retry() {
    let s = Setup::new();
    s.recorder("a", RESULT_A);
    s.recorder("m", RESULT_A);
    s.recorder("b", RESULT_B);
    let cni = s.cni(&conflist("1.0.0", &["a", "m", "b"]));
    cni.setup(&pod("sandbox1")).unwrap();
    recorder(
        &s.plugins,
        &s.log,
        "m",
        "",
        r#"echo '{"code":5,"msg":"m cannot"}'; exit 1"#,
    );

    let e = cni.teardown(&pod("sandbox1")).unwrap_err();

    assert!(
        matches!(&e, CniError::Del { errors, .. } if errors.len() == 1),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("DEL of plugin m failed: m cannot"),
        "{e}"
    );
    assert_eq!(&log_lines(&s.log)[3..], ["b DEL", "m DEL", "a DEL"]);
    assert!(s.cache_file("fakenet", "sandbox1").exists());
    s.recorder("m", RESULT_A);
    cni.teardown(&pod("sandbox1")).unwrap();
    assert!(!s.cache_file("fakenet", "sandbox1").exists());
}

#[test]
fn a_hanging_plugin_is_killed_at_the_deadline_and_undone() {
    let s = Setup::new();
    s.recorder("a", RESULT_A);
    hanger(&s.plugins, "h");
    let cni = s.cni_timeout(&conflist("1.0.0", &["a", "h"]), Duration::from_secs(1));

    let start = Instant::now();
    let e = cni.setup(&pod("sandbox1")).unwrap_err();

    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(&e, CniError::Timeout { site, .. } if site.plugin == "h"),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("ADD of plugin h: no answer within 1s"),
        "{e}"
    );
    assert_eq!(log_lines(&s.log), ["a ADD", "a DEL"]);
    assert!(!s.cache_file("fakenet", "sandbox1").exists());
}

#[test]
fn a_malformed_result_fails_setup_and_is_undone() {
    let s = Setup::new();
    s.recorder(
        "a",
        r#"{"cniVersion":"1.0.0","ips":[{"address":"not-an-ip"}]}"#,
    );
    let cni = s.cni(&conflist("1.0.0", &["a"]));
    let e = cni.setup(&pod("sandbox1")).unwrap_err();
    assert!(matches!(e, CniError::BadResult { .. }), "{e:?}");
    assert!(e.to_string().contains("malformed result"), "{e}");
    assert_eq!(log_lines(&s.log), ["a ADD", "a DEL"]);
    assert!(!s.cache_file("fakenet", "sandbox1").exists());
}

#[test]
fn a_plugin_that_prints_too_much_is_killed() {
    let s = Setup::new();
    script(
        &s.plugins,
        "y",
        r#"cat >/dev/null; if [ "$CNI_COMMAND" = ADD ]; then exec yes; fi"#,
    );
    let cni = s.cni(&conflist("1.0.0", &["y"]));
    let e = cni.setup(&pod("sandbox1")).unwrap_err();
    assert!(
        matches!(e, CniError::OutputTooLarge { limit: 1048576, .. }),
        "{e:?}"
    );
}

#[test]
fn a_missing_plugin_fails_setup_before_anything_runs() {
    let s = Setup::new();
    s.recorder("a", RESULT_A);
    let cni = s.cni(&conflist("1.0.0", &["a", "absent"]));
    let e = cni.setup(&pod("sandbox1")).unwrap_err();
    assert!(matches!(e, CniError::PluginNotFound { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("plugin absent is not an executable file in"),
        "{e}"
    );
    assert!(log_lines(&s.log).is_empty());
    assert!(!s.dir.join("cache/fakenet").exists());
}

#[test]
fn setup_refuses_what_is_not_a_network_namespace_and_a_second_add() {
    let s = Setup::new();
    s.recorder("a", RESULT_A);
    let cni = s.cni(&conflist("1.0.0", &["a"]));
    let mut p = pod("sandbox1");
    p.netns = s.dir.join("not-a-netns");
    fs::write(&p.netns, "").unwrap();
    let e = cni.setup(&p).unwrap_err();
    assert!(matches!(e, CniError::InvalidRequest { .. }), "{e:?}");
    assert!(log_lines(&s.log).is_empty());

    cni.setup(&pod("sandbox1")).unwrap();
    let e = cni.setup(&pod("sandbox1")).unwrap_err();
    assert!(matches!(e, CniError::AlreadyAttached { .. }), "{e:?}");
    assert_eq!(log_lines(&s.log), ["a ADD"]);
}

#[test]
fn bad_ids_interface_names_and_args_are_refused() {
    let s = Setup::new();
    s.recorder("a", RESULT_A);
    let cni = s.cni(&conflist("1.0.0", &["a"]));
    let mut p = pod("../etc");
    assert!(matches!(
        cni.setup(&p),
        Err(CniError::InvalidRequest { .. })
    ));
    assert!(matches!(
        cni.teardown(&p),
        Err(CniError::InvalidRequest { .. })
    ));
    p = pod("ok");
    p.ifname = "../x".into();
    assert!(matches!(
        cni.setup(&p),
        Err(CniError::InvalidRequest { .. })
    ));
    p = pod("ok");
    p.pod_name = "a;b".into();
    let e = cni.setup(&p).unwrap_err();
    assert!(e.to_string().contains("must not hold ';'"), "{e}");
    assert!(log_lines(&s.log).is_empty());
}

#[test]
fn check_runs_in_order_with_the_cached_result() {
    let s = Setup::new();
    s.recorder("a", RESULT_A);
    s.recorder("b", RESULT_B);
    let cni = s.cni(&conflist("0.4.0", &["a", "b"]));
    let e = cni.check(&pod("sandbox1")).unwrap_err();
    assert!(matches!(e, CniError::NotAttached { .. }), "{e:?}");
    cni.setup(&pod("sandbox1")).unwrap();

    cni.check(&pod("sandbox1")).unwrap();

    assert_eq!(log_lines(&s.log), ["a ADD", "b ADD", "a CHECK", "b CHECK"]);
    assert_eq!(
        stdin_of(&s.log, "a", "CHECK")["prevResult"],
        parsed(RESULT_B)
    );
    // A failing CHECK is the plugin's error.
    recorder(
        &s.plugins,
        &s.log,
        "b",
        "",
        r#"echo '{"code":100,"msg":"veth is gone"}'; exit 1"#,
    );
    let e = cni.check(&pod("sandbox1")).unwrap_err();
    assert!(
        e.to_string()
            .contains("CHECK of plugin b failed: veth is gone"),
        "{e}"
    );
}

#[test]
fn check_is_refused_before_0_4_0_and_skipped_when_disabled() {
    let s = Setup::new();
    s.recorder("a", RESULT_A.replace("1.0.0", "0.3.1").as_str());
    let cni = s.cni(&conflist("0.3.1", &["a"]));
    cni.setup(&pod("old")).unwrap();
    let e = cni.check(&pod("old")).unwrap_err();
    assert!(matches!(e, CniError::CheckUnsupported { .. }), "{e:?}");

    let s = Setup::new();
    s.recorder("a", RESULT_A);
    let cni = s
        .cni(r#"{"cniVersion":"1.0.0","name":"off","disableCheck":true,"plugins":[{"type":"a"}]}"#);
    cni.setup(&pod("p")).unwrap();
    cni.check(&pod("p")).unwrap();
    assert_eq!(log_lines(&s.log), ["a ADD"]);
}

#[test]
fn status_follows_the_configuration_directory() {
    let s = Setup::new();
    fs::create_dir_all(s.dir.join("net.d")).unwrap();
    let cni = Cni::new(options(
        &s.dir,
        vec![s.plugins.clone()],
        Duration::from_secs(5),
    ));
    let NetworkStatus::NotReady { reason } = cni.status() else {
        panic!("ready without a configuration");
    };
    assert!(reason.contains("no CNI network configuration"), "{reason}");
    let e = cni.setup(&pod("p")).unwrap_err();
    assert!(matches!(e, CniError::NotReady { .. }), "{e:?}");

    fs::write(s.dir.join("net.d/10-bad.conflist"), "{").unwrap();
    assert!(cni.reload().is_err());
    let NetworkStatus::NotReady { reason } = cni.status() else {
        panic!("ready with a broken configuration");
    };
    assert!(reason.contains("10-bad.conflist"), "{reason}");

    fs::write(
        s.dir.join("net.d/10-bad.conflist"),
        conflist("1.0.0", &["a"]),
    )
    .unwrap();
    cni.reload().unwrap();
    assert_eq!(
        cni.status(),
        NetworkStatus::Ready {
            network: "fakenet".into(),
            file: Some(s.dir.join("net.d/10-bad.conflist")),
        }
    );
}

#[test]
fn validate_asks_every_plugin_for_its_versions() {
    let s = Setup::new();
    s.recorder("a", RESULT_A);
    script(
        &s.plugins,
        "old",
        r#"cat >/dev/null; echo '{"cniVersion":"0.3.1","supportedVersions":["0.3.0","0.3.1"]}'"#,
    );
    let cni = s.cni(&conflist("1.0.0", &["a", "old"]));
    assert_eq!(
        cni.plugin_version("a").unwrap().supported_versions,
        ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]
    );
    assert_eq!(
        stdin_of(&s.log, "a", "VERSION"),
        json!({"cniVersion": "1.0.0"})
    );
    let e = cni.validate().unwrap_err();
    assert!(
        matches!(&e, CniError::VersionUnsupported { plugin, .. } if plugin == "old"),
        "{e:?}"
    );
}

#[test]
fn descriptors_the_caller_left_inheritable_do_not_reach_plugins() {
    let s = Setup::new();
    let marker = s.dir.join("marker");
    fs::write(&marker, "").unwrap();
    let file = fs::File::open(&marker).unwrap();
    use std::os::fd::AsRawFd;
    const FD: i32 = 900;
    // SAFETY: dup2 onto a fixed number that nothing else in this test binary uses; the
    // duplicate (without close-on-exec, which dup2 never sets) is closed below.
    let r = unsafe { libc::dup2(file.as_raw_fd(), FD) };
    assert_eq!(r, FD);
    recorder(
        &s.plugins,
        &s.log,
        "a",
        RESULT_A,
        &format!(
            r#"if [ -e /proc/$$/fd/{FD} ]; then echo leaked >> "{}/fds"; else echo clean >> "{}/fds"; fi"#,
            s.log.display(),
            s.log.display()
        ),
    );
    let cni = s.cni(&conflist("1.0.0", &["a"]));
    let setup = cni.setup(&pod("fds"));
    // SAFETY: FD is the duplicate made above, owned by nothing else.
    unsafe { libc::close(FD) };
    setup.unwrap();
    assert_eq!(fs::read_to_string(s.log.join("fds")).unwrap(), "clean\n");
}

#[test]
fn a_single_plugin_conf_file_works_like_a_list() {
    let s = Setup::new();
    s.recorder("a", RESULT_A);
    let conf_dir = s.dir.join("net.d");
    fs::create_dir_all(&conf_dir).unwrap();
    fs::write(
        conf_dir.join("10-one.conf"),
        r#"{"cniVersion":"0.4.0","name":"single","type":"a","extra":true}"#,
    )
    .unwrap();
    let cni = Cni::new(options(
        &s.dir,
        vec![s.plugins.clone()],
        Duration::from_secs(10),
    ));
    cni.setup(&pod("p")).unwrap();
    let a = stdin_of(&s.log, "a", "ADD");
    assert_eq!(a["name"], "single");
    assert_eq!(a["extra"], true);
    assert_eq!(a["type"], "a");
}
