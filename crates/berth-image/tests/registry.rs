//! Pulls from a real registry on 127.0.0.1 (see support/mod.rs): every transport and auth
//! mode, every manifest kind, and every failure the issue lists.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use berth_image::registry::{AuthStore, Platform, Progress, PullOptions, Puller, RegistriesConfig};
use berth_image::snapshot::{Driver, Snapshotter};
use berth_image::{ContentStore, Digest, ImageStore};
use support::{busybox_layout, Layout, Mode, Registry, PASSWORD, USER};

#[derive(Default)]
struct Count {
    fetched: AtomicUsize,
    present: AtomicUsize,
    resumed: Mutex<Vec<u64>>,
}

impl Progress for Count {
    fn layer_start(&self, _: &Digest, _: u64, resumed_from: u64) {
        self.resumed.lock().unwrap().push(resumed_from);
    }
    fn layer_bytes(&self, _: &Digest, _: u64) {}
    fn layer_done(&self, _: &Digest, already: bool) {
        if already {
            self.present.fetch_add(1, Ordering::SeqCst);
        } else {
            self.fetched.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn note(&self, m: &str) {
        eprintln!("note: {m}");
    }
}

struct Env {
    dir: tempfile::TempDir,
    store: ContentStore,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&dir.path().join("content")).unwrap();
        Env { dir, store }
    }

    fn config(&self, toml: &str) -> RegistriesConfig {
        let p = self.dir.path().join("registries.toml");
        std::fs::write(&p, toml).unwrap();
        RegistriesConfig::load(&p).unwrap()
    }

    fn auth(&self, creds: Option<(&str, &str, &str)>) -> AuthStore {
        let p = self.dir.path().join("auth.json");
        if let Some((host, u, pw)) = creds {
            use base64::Engine;
            let a = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{pw}"));
            std::fs::write(
                &p,
                serde_json::json!({"auths": {host: {"auth": a}}}).to_string(),
            )
            .unwrap();
        }
        AuthStore { files: vec![p] }
    }

    fn pull_with(
        &self,
        cfg: RegistriesConfig,
        auth: AuthStore,
        name: &str,
        platform: Option<&str>,
    ) -> (Result<berth_image::FetchedImage, String>, Arc<Count>) {
        let count = Arc::new(Count::default());
        let mut opts = PullOptions::default();
        if let Some(p) = platform {
            opts.platform = Platform::parse(p).unwrap();
        }
        let puller = Puller::new(self.store.clone(), cfg, auth);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt
            .block_on(puller.pull(name, &opts, count.clone()))
            .map_err(|e| e.to_string());
        (r, count)
    }

    fn pull(&self, name: &str) -> (Result<berth_image::FetchedImage, String>, Arc<Count>) {
        self.pull_with(self.config(""), self.auth(None), name, None)
    }

    fn ingest_leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("content/ingest"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect()
    }

    /// Records and unpacks the image, mounts a rootfs, and returns (snapshotter, rootfs).
    fn unpack(&self, f: &berth_image::FetchedImage) -> Result<(Snapshotter, PathBuf), String> {
        let images = ImageStore::open(self.dir.path()).unwrap();
        let rec = images.add(&self.store, f, &[]).map_err(|e| e.to_string())?;
        let s = Snapshotter::open(&self.dir.path().join("snap"), Some(Driver::Overlay)).unwrap();
        s.unpack(&self.store, &rec).map_err(|e| e.to_string())?;
        let rootfs = s
            .prepare("c", &self.store, &rec)
            .map_err(|e| e.to_string())?;
        Ok((s, rootfs))
    }
}

fn tar_file(dir: &Path, entries: &[(&str, &[u8])]) -> PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        let n = &mut h.as_old_mut().name;
        n[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    let p = dir.join(format!("layer-{}.tar", entries.len()));
    std::fs::write(&p, b.into_inner().unwrap()).unwrap();
    p
}

#[test]
fn http_pull_stores_everything_and_fetches_a_layer_once() {
    if support::skip() {
        return;
    }
    let reg = Registry::start(Mode::Http);
    let l = busybox_layout("http");
    reg.push(&l.path(), "t", "test/bb:1", &[]);
    let env = Env::new();
    let name = format!("{}/test/bb:1", reg.host());
    let (r, count) = env.pull(&name);
    let f = r.unwrap();
    assert_eq!(f.name.as_deref(), Some(name.as_str()));
    assert!(env.store.exists(&f.manifest_digest));
    for l in f.manifest.layers() {
        assert!(env.store.exists(&l.digest().to_string().parse().unwrap()));
    }
    assert_eq!(
        count.fetched.load(Ordering::SeqCst),
        f.manifest.layers().len()
    );
    let (r2, again) = env.pull(&name);
    assert_eq!(r2.unwrap().manifest_digest, f.manifest_digest);
    assert_eq!(
        again.fetched.load(Ordering::SeqCst),
        0,
        "nothing fetched twice"
    );
    assert_eq!(
        again.present.load(Ordering::SeqCst),
        f.manifest.layers().len()
    );
    let (_s, rootfs) = env.unpack(&f).unwrap();
    assert_eq!(
        std::fs::read_to_string(rootfs.join("marker")).unwrap(),
        "http"
    );
    _s.remove("c").unwrap();
}

#[test]
fn tls_with_the_ca_from_the_ca_dir_and_not_without() {
    if support::skip() {
        return;
    }
    let reg = Registry::start(Mode::Tls);
    reg.push(&busybox_layout("tls").path(), "t", "test/tls:1", &[]);
    let env = Env::new();
    let name = format!("{}/test/tls:1", reg.host());
    let ca_dir = env.dir.path().join("certs.d");
    let secure = format!(
        "ca-dir = \"{}\"\n[[registry]]\nprefix = \"{}\"\n",
        ca_dir.display(),
        reg.host()
    );
    let (r, _) = env.pull_with(env.config(&secure), env.auth(None), &name, None);
    let e = r.unwrap_err();
    assert!(e.contains(&reg.host()) && e.contains("unreachable"), "{e}");
    std::fs::create_dir_all(ca_dir.join(reg.host())).unwrap();
    std::fs::copy(reg.ca(), ca_dir.join(reg.host()).join("ca.crt")).unwrap();
    let (r, _) = env.pull_with(env.config(&secure), env.auth(None), &name, None);
    r.unwrap();
}

#[test]
fn basic_auth_and_login_logout() {
    if support::skip() {
        return;
    }
    let reg = Registry::start(Mode::Basic);
    reg.push(&busybox_layout("basic").path(), "t", "test/basic:1", &[]);
    let env = Env::new();
    let name = format!("{}/test/basic:1", reg.host());
    let (r, _) = env.pull_with(env.config(""), env.auth(None), &name, None);
    let e = r.unwrap_err();
    assert!(e.contains("refused the credentials"), "{e}");
    let (r, _) = env.pull_with(
        env.config(""),
        env.auth(Some((&reg.host(), USER, "wrong"))),
        &name,
        None,
    );
    assert!(r.unwrap_err().contains("refused the credentials"));
    let (r, _) = env.pull_with(
        env.config(""),
        env.auth(Some((&reg.host(), USER, PASSWORD))),
        &name,
        None,
    );
    r.unwrap();
    // login checks before it writes, with mode 0600; logout removes.
    let file = env.dir.path().join("login.json");
    let store = AuthStore {
        files: vec![file.clone()],
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(store.login(&env.config(""), &reg.host(), USER, "wrong"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("refused"), "{e}");
    assert!(!file.exists(), "a failed login writes nothing");
    rt.block_on(store.login(&env.config(""), &reg.host(), USER, PASSWORD))
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        store.credentials(&reg.host()).unwrap(),
        Some((USER.into(), PASSWORD.into()))
    );
    store.logout(&reg.host()).unwrap();
    assert_eq!(store.credentials(&reg.host()).unwrap(), None);
}

#[test]
fn bearer_tokens_from_a_token_server() {
    if support::skip() {
        return;
    }
    let reg = Registry::start(Mode::Token);
    reg.push(&busybox_layout("token").path(), "t", "test/token:1", &[]);
    let env = Env::new();
    let name = format!("{}/test/token:1", reg.host());
    let (r, _) = env.pull_with(
        env.config(""),
        env.auth(Some((&reg.host(), USER, PASSWORD))),
        &name,
        None,
    );
    r.unwrap();
    let (r, _) = env.pull_with(
        env.config(""),
        env.auth(Some((&reg.host(), USER, "nope"))),
        &name,
        None,
    );
    let e = r.unwrap_err();
    assert!(
        e.contains("refused the credentials") || e.contains("401"),
        "{e}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = AuthStore {
        files: vec![env.dir.path().join("login.json")],
    };
    rt.block_on(store.login(&env.config(""), &reg.host(), USER, PASSWORD))
        .unwrap();
    assert!(rt
        .block_on(store.login(&env.config(""), &reg.host(), USER, "nope"))
        .is_err());
}

#[test]
fn zstd_layers_and_docker_schema2() {
    if support::skip() {
        return;
    }
    let reg = Registry::start(Mode::Http);
    let l = busybox_layout("formats");
    reg.push(
        &l.path(),
        "t",
        "test/zstd:1",
        &["--dest-compress-format", "zstd"],
    );
    reg.push(&l.path(), "t", "test/v2s2:1", &["--format", "v2s2"]);
    let env = Env::new();
    let (r, _) = env.pull(&format!("{}/test/zstd:1", reg.host()));
    let f = r.unwrap();
    assert!(f
        .manifest
        .layers()
        .iter()
        .all(|l| l.media_type().to_string().ends_with("+zstd")));
    let (_s, rootfs) = env.unpack(&f).unwrap();
    assert_eq!(
        std::fs::read_to_string(rootfs.join("marker")).unwrap(),
        "formats"
    );
    _s.remove("c").unwrap();
    let env = Env::new();
    let (r, _) = env.pull(&format!("{}/test/v2s2:1", reg.host()));
    let f = r.unwrap();
    assert_eq!(
        f.manifest.media_type().as_ref().unwrap().to_string(),
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let (_s, rootfs) = env.unpack(&f).unwrap();
    assert_eq!(
        std::fs::read_to_string(rootfs.join("marker")).unwrap(),
        "formats"
    );
    _s.remove("c").unwrap();
}

#[test]
fn an_index_gives_each_platform_its_manifest() {
    if support::skip() {
        return;
    }
    let reg = Registry::start(Mode::Http);
    let l = busybox_layout("amd64");
    // A second image in the same layout, for arm64.
    let p = l.path();
    std::process::Command::new("umoci")
        .args(["new", "--image"])
        .arg(format!("{}:arm", p.display()))
        .status()
        .unwrap();
    let tree = l.dir.path().join("armtree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("marker"), "arm64").unwrap();
    l.insert("arm", &tree, "/");
    l.config("arm", &["--architecture", "arm64"]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.join("index.json")).unwrap()).unwrap();
    let find = |tag: &str| {
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap()
            .clone()
    };
    let mut amd = find("t");
    let mut arm = find("arm");
    amd["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
    arm["platform"] = serde_json::json!({"os": "linux", "architecture": "arm64"});
    for m in [&mut amd, &mut arm] {
        m.as_object_mut().unwrap().remove("annotations");
    }
    let nested = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [amd.clone(), arm.clone()]})).unwrap();
    let nd = Digest::of(berth_image::Algorithm::Sha256, &nested);
    std::fs::write(p.join("blobs/sha256").join(nd.hex()), &nested).unwrap();
    let mut top = index.clone();
    top["manifests"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": nd.to_string(), "size": nested.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"}}));
    std::fs::write(p.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    reg.push(&p, "multi", "test/multi:1", &["--all"]);
    let env = Env::new();
    let name = format!("{}/test/multi:1", reg.host());
    let (r, _) = env.pull_with(env.config(""), env.auth(None), &name, Some("linux/amd64"));
    assert_eq!(
        r.unwrap().manifest_digest.to_string(),
        amd["digest"].as_str().unwrap()
    );
    let (r, _) = env.pull_with(env.config(""), env.auth(None), &name, Some("linux/arm64"));
    assert_eq!(
        r.unwrap().manifest_digest.to_string(),
        arm["digest"].as_str().unwrap()
    );
    let (r, _) = env.pull_with(env.config(""), env.auth(None), &name, Some("linux/s390x"));
    let e = r.unwrap_err();
    assert!(
        e.contains("linux/s390x") && e.contains("linux/amd64, linux/arm64"),
        "{e}"
    );
}

#[test]
fn a_corrupt_blob_is_refused_and_nothing_stays() {
    if support::skip() {
        return;
    }
    let reg = Registry::start(Mode::Http);
    reg.push(&busybox_layout("corrupt").path(), "t", "test/bad:1", &[]);
    let env = Env::new();
    let name = format!("{}/test/bad:1", reg.host());
    // Find the big layer in the registry's storage and flip a byte, keeping its size.
    let probe = Env::new();
    let f = probe.pull(&name).0.unwrap();
    let big = f
        .manifest
        .layers()
        .iter()
        .max_by_key(|l| l.size())
        .unwrap()
        .digest()
        .to_string();
    let hex = big.trim_start_matches("sha256:");
    let file = reg.blob_file(hex);
    let mut data = std::fs::read(&file).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&file, &data).unwrap();
    let (r, _) = env.pull(&name);
    let e = r.unwrap_err();
    assert!(e.contains(hex), "the error names the blob: {e}");
    assert!(
        !env.store.exists(&big.parse().unwrap()),
        "no corrupt blob is committed"
    );
    assert!(
        env.ingest_leftovers().is_empty(),
        "bad data is not kept for resuming: {:?}",
        env.ingest_leftovers()
    );
    // A truncated blob: shorter than its descriptor says.
    data.truncate(mid);
    std::fs::write(&file, &data).unwrap();
    let (r, _) = env.pull(&name);
    let e = r.unwrap_err();
    assert!(e.contains(hex), "{e}");
    assert!(!env.store.exists(&big.parse().unwrap()));
}

#[test]
fn unknown_images_unreachable_registries_and_bad_names() {
    if support::skip() {
        return;
    }
    let reg = Registry::start(Mode::Http);
    let env = Env::new();
    let (r, _) = env.pull(&format!("{}/no/such:1", reg.host()));
    let e = r.unwrap_err();
    assert!(
        e.contains("not found in registry") && e.contains(&reg.host()),
        "{e}"
    );
    let port = support::free_port();
    let (r, _) = env.pull(&format!("127.0.0.1:{port}/x/y:1"));
    let e = r.unwrap_err();
    assert!(
        e.contains("unreachable") && e.contains(&format!("127.0.0.1:{port}")),
        "{e}"
    );
    let (r, _) = env.pull("UPPER/case");
    assert!(r.unwrap_err().contains("not a valid image name"));
    assert!(env.ingest_leftovers().is_empty());
}

#[test]
fn mirrors_first_then_the_registry() {
    if support::skip() {
        return;
    }
    let mirror = Registry::start(Mode::Http);
    mirror.push(
        &busybox_layout("from the mirror").path(),
        "t",
        "test/m:1",
        &[],
    );
    let down = support::free_port();
    let env = Env::new();
    let cfg = env.config(&format!(
        "[[registry]]\nprefix = \"127.0.0.1:{down}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
        mirror.host()
    ));
    let (r, _) = env.pull_with(
        cfg,
        env.auth(None),
        &format!("127.0.0.1:{down}/test/m:1"),
        None,
    );
    let f = r.unwrap();
    let (_s, rootfs) = env.unpack(&f).unwrap();
    assert_eq!(
        std::fs::read_to_string(rootfs.join("marker")).unwrap(),
        "from the mirror"
    );
    _s.remove("c").unwrap();
}

#[test]
fn short_names_use_the_search_registries() {
    if support::skip() {
        return;
    }
    let reg = Registry::start(Mode::Http);
    reg.push(&busybox_layout("short").path(), "t", "team/app:2", &[]);
    let env = Env::new();
    let cfg = env.config(&format!(
        "unqualified-search-registries = [\"127.0.0.1:{}\", \"{}\"]\n",
        support::free_port(),
        reg.host()
    ));
    let (r, _) = env.pull_with(cfg, env.auth(None), "team/app:2", None);
    assert_eq!(
        r.unwrap().name.unwrap(),
        format!("{}/team/app:2", reg.host())
    );
}

#[test]
fn a_partial_blob_is_resumed() {
    if support::skip() {
        return;
    }
    let reg = Registry::start(Mode::Http);
    reg.push(&busybox_layout("resume").path(), "t", "test/r:1", &[]);
    let name = format!("{}/test/r:1", reg.host());
    let probe = Env::new();
    let f = probe.pull(&name).0.unwrap();
    let big = f
        .manifest
        .layers()
        .iter()
        .max_by_key(|l| l.size())
        .unwrap()
        .clone();
    let d: Digest = big.digest().to_string().parse().unwrap();
    let data = probe.store.read(&d).unwrap();
    // What a killed pull leaves: the first half in the ingest area.
    let env = Env::new();
    let mut w = env.store.writer(&d, Some(big.size())).unwrap().unwrap();
    w.write_data(&data[..data.len() / 2]).unwrap();
    drop(w);
    let (r, count) = env.pull(&name);
    r.unwrap();
    assert!(
        count
            .resumed
            .lock()
            .unwrap()
            .contains(&(data.len() as u64 / 2)),
        "{:?}",
        count.resumed.lock().unwrap()
    );
    assert_eq!(env.store.read(&d).unwrap(), data);
}

#[test]
fn whiteouts_and_hostile_layers_from_a_registry() {
    if support::skip() {
        return;
    }
    let reg = Registry::start(Mode::Http);
    // Whiteouts: the second layer hides a file of the first.
    let l = Layout::new("t");
    let tree = l.dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/gone"), "x").unwrap();
    std::fs::write(tree.join("etc/kept"), "k").unwrap();
    l.insert("t", &tree, "/");
    l.raw_layer("t", &tar_file(l.dir.path(), &[("etc/.wh.gone", b"")]));
    reg.push(&l.path(), "t", "test/wh:1", &[]);
    let env = Env::new();
    let f = env.pull(&format!("{}/test/wh:1", reg.host())).0.unwrap();
    let (s, rootfs) = env.unpack(&f).unwrap();
    assert!(!rootfs.join("etc/gone").exists() && rootfs.join("etc/kept").exists());
    s.remove("c").unwrap();
    // A layer escaping with `..`: pulled (it is just a blob), refused when unpacked.
    let h = Layout::new("t");
    h.raw_layer(
        "t",
        &tar_file(
            h.dir.path(),
            &[("ok", b"fine"), ("../../escaped", b"pwned")],
        ),
    );
    reg.push(&h.path(), "t", "test/evil:1", &[]);
    let env = Env::new();
    let f = env.pull(&format!("{}/test/evil:1", reg.host())).0.unwrap();
    let e = env.unpack(&f).unwrap_err();
    assert!(
        e.contains("../../escaped") && e.contains("climbs out"),
        "{e}"
    );
    assert!(
        !env.dir.path().join("escaped").exists()
            && !env.dir.path().parent().unwrap().join("escaped").exists()
    );
}
