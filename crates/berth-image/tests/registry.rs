//! Pulls from a real registry on 127.0.0.1 (see support/mod.rs): every transport and auth
//! mode, every manifest kind, resuming, and each failure with its exact message. The images
//! hold no binaries: a marker file, /etc/hostname and 256 KiB of noise.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use berth_image::registry::{AuthStore, Platform, Progress, PullOptions, Puller, RegistriesConfig};
use berth_image::snapshot::{Driver, Snapshotter};
use berth_image::{Algorithm, ContentStore, Digest, FetchedImage, ImageStore};
use support::{files_layout, Layout, Mode, Registry, PASSWORD, USER};

/// Counts what a pull reports.
#[derive(Default)]
struct Count {
    fetched: AtomicUsize,
    present: AtomicUsize,
    resumed: Mutex<Vec<u64>>,
    notes: Mutex<Vec<String>>,
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
        self.notes.lock().unwrap().push(m.to_string());
    }
}

type Pulled = (Result<FetchedImage, String>, Arc<Count>);

/// A content store, a registries config and an auth file in a tempdir.
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

    /// An auth store with one file; `creds` (host, user, password) written into it.
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
        AuthStore {
            files: vec![p],
            ..Default::default()
        }
    }

    fn pull_with(
        &self,
        cfg: RegistriesConfig,
        auth: AuthStore,
        name: &str,
        platform: Option<&str>,
    ) -> Pulled {
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

    fn pull(&self, name: &str) -> Pulled {
        self.pull_with(self.config(""), self.auth(None), name, None)
    }

    fn pull_as(&self, name: &str, host: &str, user: &str, password: &str) -> Pulled {
        self.pull_with(
            self.config(""),
            self.auth(Some((host, user, password))),
            name,
            None,
        )
    }

    /// Partial blobs left in the ingest area.
    fn ingest_leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("content/ingest"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect()
    }

    /// The text of `path` in the pulled image, read from its layers in the content store
    /// (the last layer holding it wins).
    fn file(&self, f: &FetchedImage, path: &str) -> Option<String> {
        let mut found = None;
        for l in f.manifest.layers() {
            let d: Digest = l.digest().to_string().parse().unwrap();
            let raw = self.store.read(&d).unwrap();
            let mt = l.media_type().to_string();
            let tar: Box<dyn Read> = if mt.ends_with("zstd") {
                Box::new(zstd::Decoder::new(&raw[..]).unwrap())
            } else if mt.ends_with("gzip") {
                Box::new(flate2::read::MultiGzDecoder::new(&raw[..]))
            } else {
                Box::new(&raw[..])
            };
            let mut a = tar::Archive::new(tar);
            // umoci 0.4.7 ends its layers right after the last file's data, without the
            // padding and end blocks of a tar: the end of the data is the end.
            for e in a.entries().unwrap() {
                let Ok(mut e) = e else { break };
                let p = e.path().unwrap().to_string_lossy().into_owned();
                if p.trim_start_matches("./").trim_start_matches('/') == path {
                    let mut s = String::new();
                    e.read_to_string(&mut s).unwrap();
                    found = Some(s);
                }
            }
        }
        found
    }

    /// Records and unpacks the image, mounts a rootfs, and returns (snapshotter, rootfs).
    fn unpack(&self, f: &FetchedImage) -> Result<(Snapshotter, PathBuf), String> {
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

/// The biggest layer of an image: (digest, size).
/// A registry in `mode` holding `repo_tag`, an image whose file `marker` says `marker`; a
/// fresh pulling environment; and the image's full name.
fn serving(mode: Mode, marker: &str, repo_tag: &str) -> (Registry, Env, String) {
    let reg = Registry::start(mode);
    reg.push(&files_layout(marker).path(), "t", repo_tag, &[]);
    let name = format!("{}/{repo_tag}", reg.host());
    (reg, Env::new(), name)
}

fn biggest_layer(f: &FetchedImage) -> (Digest, u64) {
    let l = f.manifest.layers().iter().max_by_key(|l| l.size()).unwrap();
    (l.digest().to_string().parse().unwrap(), l.size())
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
fn http_pull_stores_manifest_config_and_layers() {
    support::require_tools();
    let (_reg, env, name) = serving(Mode::Http, "http", "test/files:1");
    let (r, count) = env.pull(&name);
    let f = r.unwrap();
    assert_eq!(f.name.as_deref(), Some(name.as_str()));
    let raw = env.store.read(&f.manifest_digest).unwrap();
    assert_eq!(Digest::of(Algorithm::Sha256, &raw), f.manifest_digest);
    let config: Digest = f.manifest.config().digest().to_string().parse().unwrap();
    assert_eq!(
        env.store.read(&config).unwrap().len() as u64,
        f.manifest.config().size()
    );
    assert_eq!(f.manifest.layers().len(), 1);
    assert_eq!(count.fetched.load(Ordering::SeqCst), 1);
    assert_eq!(count.present.load(Ordering::SeqCst), 0);
    assert_eq!(*count.resumed.lock().unwrap(), [0]);
    assert_eq!(env.file(&f, "marker").as_deref(), Some("http"));
    assert_eq!(
        env.file(&f, "etc/hostname").as_deref(),
        Some("berth-test\n")
    );
    assert_eq!(env.ingest_leftovers(), Vec::<String>::new());
}

#[test]
fn a_pulled_layer_is_not_fetched_again() {
    support::require_tools();
    let (_reg, env, name) = serving(Mode::Http, "twice", "test/twice:1");
    let first = env.pull(&name).0.unwrap();
    let (r, again) = env.pull(&name);
    assert_eq!(r.unwrap().manifest_digest, first.manifest_digest);
    assert_eq!(again.fetched.load(Ordering::SeqCst), 0, "nothing fetched");
    assert_eq!(again.present.load(Ordering::SeqCst), 1);
    assert_eq!(
        *again.resumed.lock().unwrap(),
        Vec::<u64>::new(),
        "no layer started"
    );
}

#[test]
fn pull_by_digest() {
    support::require_tools();
    let reg = Registry::start(Mode::Http);
    reg.push(&files_layout("pinned").path(), "t", "test/pin:1", &[]);
    let env = Env::new();
    let by_tag = env.pull(&format!("{}/test/pin:1", reg.host())).0.unwrap();
    let name = format!("{}/test/pin@{}", reg.host(), by_tag.manifest_digest);
    let f = Env::new().pull(&name).0.unwrap();
    assert_eq!(f.manifest_digest, by_tag.manifest_digest);
    assert_eq!(f.name.as_deref(), Some(name.as_str()));
    let absent = format!("sha256:{}", "0".repeat(64));
    let e = env
        .pull(&format!("{}/test/pin@{absent}", reg.host()))
        .0
        .unwrap_err();
    assert_eq!(
        e,
        format!(
            "image {h}/test/pin@{absent} not found in registry {h}",
            h = reg.host()
        )
    );
}

/// A config with the registry's certs.d under the env's tempdir; not insecure.
fn tls_config(env: &Env, reg: &Registry) -> (RegistriesConfig, PathBuf) {
    let ca_dir = env.dir.path().join("certs.d");
    let cfg = env.config(&format!(
        "ca-dir = \"{}\"\n[[registry]]\nprefix = \"{}\"\n",
        ca_dir.display(),
        reg.host()
    ));
    (cfg, ca_dir)
}

#[test]
fn tls_with_the_ca_from_the_ca_dir() {
    support::require_tools();
    let reg = Registry::start(Mode::Tls);
    reg.push(&files_layout("tls").path(), "t", "test/tls:1", &[]);
    let env = Env::new();
    let (cfg, ca_dir) = tls_config(&env, &reg);
    std::fs::create_dir_all(ca_dir.join(reg.host())).unwrap();
    std::fs::copy(reg.ca(), ca_dir.join(reg.host()).join("ca.crt")).unwrap();
    let name = format!("{}/test/tls:1", reg.host());
    let f = env.pull_with(cfg, env.auth(None), &name, None).0.unwrap();
    assert_eq!(env.file(&f, "marker").as_deref(), Some("tls"));
}

#[test]
fn tls_without_the_ca_is_refused() {
    support::require_tools();
    let reg = Registry::start(Mode::Tls);
    let env = Env::new();
    let (cfg, _) = tls_config(&env, &reg);
    let name = format!("{}/test/tls:1", reg.host());
    let e = env
        .pull_with(cfg, env.auth(None), &name, None)
        .0
        .unwrap_err();
    let prefix = format!(
        "image {name}: registry {h} is unreachable: error sending request for url (https://{h}/v2/)",
        h = reg.host()
    );
    assert!(e.starts_with(&prefix), "{e}");
    assert!(
        e.ends_with("invalid peer certificate: UnknownIssuer"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1);
}

#[test]
fn basic_auth_with_stored_credentials() {
    support::require_tools();
    let (reg, env, name) = serving(Mode::Basic, "basic", "test/basic:1");
    let f = env.pull_as(&name, &reg.host(), USER, PASSWORD).0.unwrap();
    assert_eq!(env.file(&f, "marker").as_deref(), Some("basic"));
}

/// The kubelet hands credentials with each PullImage: they are used though no file has any.
#[test]
fn basic_auth_with_given_credentials() {
    support::require_tools();
    let (_reg, env, name) = serving(Mode::Basic, "basic", "test/basic:1");
    let given = env.auth(None).with_credentials(USER, PASSWORD);
    let f = env.pull_with(env.config(""), given, &name, None).0.unwrap();
    assert_eq!(env.file(&f, "marker").as_deref(), Some("basic"));
    let wrong = env.auth(None).with_credentials(USER, "wrong");
    assert!(env.pull_with(env.config(""), wrong, &name, None).0.is_err());
}

#[test]
fn basic_auth_without_or_with_wrong_credentials() {
    support::require_tools();
    let (reg, env, name) = serving(Mode::Basic, "basic", "test/basic:1");
    let h = reg.host();
    let url = format!("http://{h}/v2/test/basic/manifests/1");
    let e = env.pull(&name).0.unwrap_err();
    assert_eq!(
        e,
        format!("image {name}: registry {h} refused the credentials (none are stored for it: log in first): HTTP 401 from {url}")
    );
    let e = env.pull_as(&name, &h, USER, "wrong").0.unwrap_err();
    assert_eq!(
        e,
        format!("image {name}: registry {h} refused the credentials of user {USER}: HTTP 401 from {url}")
    );
    assert!(!env.store.exists(&Digest::of(Algorithm::Sha256, b"")));
    assert_eq!(
        env.store.list().unwrap(),
        Vec::<Digest>::new(),
        "nothing stored"
    );
}

#[test]
fn bearer_tokens_from_a_token_server() {
    support::require_tools();
    let (reg, env, name) = serving(Mode::Token, "token", "test/token:1");
    let f = env.pull_as(&name, &reg.host(), USER, PASSWORD).0.unwrap();
    assert_eq!(env.file(&f, "marker").as_deref(), Some("token"));
}

#[test]
fn bearer_with_bad_credentials() {
    support::require_tools();
    let (reg, env, name) = serving(Mode::Token, "token", "test/token:1");
    let h = reg.host();
    let e = env.pull_as(&name, &h, USER, "nope").0.unwrap_err();
    assert_eq!(
        e,
        format!(
            "image {name}: registry {h} refused the credentials of user {USER}: the token server {} refused the credentials (HTTP 401 Unauthorized)",
            reg.realm().unwrap()
        )
    );
    assert_eq!(env.store.list().unwrap(), Vec::<Digest>::new());
}

#[test]
fn a_plain_http_realm_for_an_https_registry_gets_no_credentials() {
    support::require_tools();
    // The registry speaks TLS (its CA trusted through the ca-dir); its 401 names a token
    // realm over plain http. Neither pull nor login may send the credentials there.
    let reg = Registry::start(Mode::TlsToken);
    reg.push(&files_layout("realm").path(), "t", "test/realm:1", &[]);
    let pushed = reg.token_requests();
    let env = Env::new();
    let (cfg, ca_dir) = tls_config(&env, &reg);
    std::fs::create_dir_all(ca_dir.join(reg.host())).unwrap();
    std::fs::copy(reg.ca(), ca_dir.join(reg.host()).join("ca.crt")).unwrap();
    let h = reg.host();
    let realm = reg.realm().unwrap();
    let name = format!("{h}/test/realm:1");
    let auth = env.auth(Some((&h, USER, PASSWORD)));
    let e = env
        .pull_with(cfg.clone(), auth.clone(), &name, None)
        .0
        .unwrap_err();
    assert_eq!(
        e,
        format!("image {name}: registry {h} names the token realm {realm}: plain http for a registry reached over https; no credentials are sent there")
    );
    assert_eq!(env.store.list().unwrap(), Vec::<Digest>::new());
    let e = block_on(auth.login(&cfg, &h, USER, PASSWORD))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!("login to {h}: the registry names the token realm {realm}: plain http for a registry reached over https; no credentials are sent there")
    );
    assert_eq!(
        reg.token_requests(),
        pushed,
        "nothing reached the token server"
    );
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn login_checks_then_writes_0600_and_logout_removes() {
    support::require_tools();
    use std::os::unix::fs::PermissionsExt;
    let reg = Registry::start(Mode::Basic);
    let env = Env::new();
    let h = reg.host();
    let file = env.dir.path().join("run/containers/auth.json");
    let store = AuthStore {
        files: vec![file.clone(), env.dir.path().join("docker/config.json")],
        ..Default::default()
    };
    let e = block_on(store.login(&env.config(""), &h, USER, "wrong"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!("login to {h}: the registry refused the user name or password")
    );
    assert!(!file.exists(), "a failed login writes nothing");
    let written = block_on(store.login(&env.config(""), &h, USER, PASSWORD)).unwrap();
    assert_eq!(written, file);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        store.credentials(&h).unwrap(),
        Some((USER.into(), PASSWORD.into()))
    );
    // What was written lets a pull in.
    let (name, f) = (format!("{h}/test/l:1"), files_layout("login"));
    reg.push(&f.path(), "t", "test/l:1", &[]);
    let puller = Puller::new(env.store.clone(), env.config(""), store.clone());
    block_on(puller.pull(&name, &PullOptions::default(), Arc::new(Count::default()))).unwrap();
    assert_eq!(store.logout(&h).unwrap(), file);
    assert_eq!(store.credentials(&h).unwrap(), None);
    let e = store.logout(&h).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("not logged in to {h} (no entry in ")),
        "{e}"
    );
}

#[test]
fn login_through_a_token_server() {
    support::require_tools();
    let reg = Registry::start(Mode::Token);
    let env = Env::new();
    let h = reg.host();
    let file = env.dir.path().join("auth.json");
    let store = AuthStore {
        files: vec![file.clone()],
        ..Default::default()
    };
    let e = block_on(store.login(&env.config(""), &h, USER, "nope"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "login to {h}: the token server {} refused the credentials (HTTP 401 Unauthorized)",
            reg.realm().unwrap()
        )
    );
    assert!(!file.exists());
    block_on(store.login(&env.config(""), &h, USER, PASSWORD)).unwrap();
    assert_eq!(
        store.credentials(&h).unwrap(),
        Some((USER.into(), PASSWORD.into()))
    );
}

#[test]
fn zstd_layers() {
    support::require_tools();
    let reg = Registry::start(Mode::Http);
    let l = files_layout("zstd");
    reg.push(
        &l.path(),
        "t",
        "test/zstd:1",
        &["--dest-compress-format", "zstd"],
    );
    let env = Env::new();
    let f = env.pull(&format!("{}/test/zstd:1", reg.host())).0.unwrap();
    let types: Vec<String> = f
        .manifest
        .layers()
        .iter()
        .map(|l| l.media_type().to_string())
        .collect();
    assert_eq!(types, ["application/vnd.oci.image.layer.v1.tar+zstd"]);
    assert_eq!(env.file(&f, "marker").as_deref(), Some("zstd"));
}

#[test]
fn docker_schema2() {
    support::require_tools();
    let reg = Registry::start(Mode::Http);
    let l = files_layout("v2s2");
    reg.push(&l.path(), "t", "test/v2s2:1", &["--format", "v2s2"]);
    let env = Env::new();
    let f = env.pull(&format!("{}/test/v2s2:1", reg.host())).0.unwrap();
    assert_eq!(
        f.manifest.media_type().as_ref().unwrap().to_string(),
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        f.manifest.config().media_type().to_string(),
        "application/vnd.docker.container.image.v1+json"
    );
    let types: Vec<String> = f
        .manifest
        .layers()
        .iter()
        .map(|l| l.media_type().to_string())
        .collect();
    assert_eq!(types, ["application/vnd.docker.image.rootfs.diff.tar.gzip"]);
    assert_eq!(env.file(&f, "marker").as_deref(), Some("v2s2"));
}

#[test]
fn an_index_gives_each_platform_its_manifest() {
    support::require_tools();
    let reg = Registry::start(Mode::Http);
    let (amd, arm, index) =
        support::push_two_platforms(&reg, &files_layout("amd64"), "test/multi:1");
    let env = Env::new();
    let name = format!("{}/test/multi:1", reg.host());
    let (r, _) = env.pull_with(env.config(""), env.auth(None), &name, Some("linux/amd64"));
    let f = r.unwrap();
    assert_eq!(f.manifest_digest.to_string(), amd);
    assert_eq!(env.file(&f, "marker").as_deref(), Some("amd64"));
    assert!(env.store.exists(&index), "the index is stored too");
    let (r, _) = env.pull_with(env.config(""), env.auth(None), &name, Some("linux/arm64"));
    let f = r.unwrap();
    assert_eq!(f.manifest_digest.to_string(), arm);
    assert_eq!(env.file(&f, "marker").as_deref(), Some("arm64"));
}

#[test]
fn an_index_without_the_platform_lists_those_it_has() {
    support::require_tools();
    let reg = Registry::start(Mode::Http);
    support::push_two_platforms(&reg, &files_layout("amd64"), "test/multi:1");
    let env = Env::new();
    let name = format!("{}/test/multi:1", reg.host());
    let (r, _) = env.pull_with(env.config(""), env.auth(None), &name, Some("linux/s390x"));
    assert_eq!(
        r.unwrap_err(),
        format!(
            "image {name}: no manifest for linux/s390x; the index has linux/amd64, linux/arm64"
        )
    );
    let (r, _) = env.pull_with(
        env.config(""),
        env.auth(None),
        &name,
        Some("linux/arm64/v7"),
    );
    assert_eq!(
        r.unwrap_err(),
        format!(
            "image {name}: no manifest for linux/arm64/v7; the index has linux/amd64, linux/arm64"
        )
    );
    assert_eq!(env.store.list().unwrap(), Vec::<Digest>::new());
}

#[test]
fn a_partial_blob_is_resumed() {
    support::require_tools();
    let (_reg, probe, name) = serving(Mode::Http, "resume", "test/r:1");
    let (d, size) = biggest_layer(&probe.pull(&name).0.unwrap());
    let data = probe.store.read(&d).unwrap();
    assert!(size > 200_000, "a layer worth cutting: {size}");
    // What a killed pull leaves: the first half in the ingest area.
    let env = Env::new();
    let half = data.len() / 2;
    let mut w = env.store.writer(&d, Some(size)).unwrap().unwrap();
    w.write_data(&data[..half]).unwrap();
    drop(w);
    let (r, count) = env.pull(&name);
    r.unwrap();
    assert_eq!(*count.resumed.lock().unwrap(), [half as u64]);
    assert_eq!(count.fetched.load(Ordering::SeqCst), 1);
    assert_eq!(env.store.read(&d).unwrap(), data);
    assert_eq!(env.ingest_leftovers(), Vec::<String>::new());
}

#[test]
fn bad_partial_data_is_fetched_again() {
    support::require_tools();
    let (_reg, probe, name) = serving(Mode::Http, "badpart", "test/bp:1");
    let (d, size) = biggest_layer(&probe.pull(&name).0.unwrap());
    let data = probe.store.read(&d).unwrap();
    // Half a blob that is not a prefix of it: the resumed whole fails its digest, and the
    // blob is fetched once more from the start.
    let env = Env::new();
    let mut w = env.store.writer(&d, Some(size)).unwrap().unwrap();
    w.write_data(&vec![0u8; data.len() / 2]).unwrap();
    drop(w);
    let (r, count) = env.pull(&name);
    r.unwrap();
    assert_eq!(*count.resumed.lock().unwrap(), [data.len() as u64 / 2, 0]);
    assert_eq!(env.store.read(&d).unwrap(), data);
    assert_eq!(count.notes.lock().unwrap().len(), 1);
}

#[test]
fn a_corrupt_blob_is_refused_and_nothing_stays() {
    support::require_tools();
    let (reg, _, name) = serving(Mode::Http, "corrupt", "test/bad:1");
    let f = Env::new().pull(&name).0.unwrap();
    let (big, size) = biggest_layer(&f);
    // Flip a byte of the layer in the registry's storage, keeping its size.
    let file = reg.blob_file(big.hex());
    let mut data = std::fs::read(&file).unwrap();
    assert_eq!(data.len() as u64, size);
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&file, &data).unwrap();
    let env = Env::new();
    let e = env.pull(&name).0.unwrap_err();
    assert_eq!(
        e,
        format!(
            "image {name}: blob {big}: digest mismatch, the registry sent data hashing to {}",
            Digest::of(Algorithm::Sha256, &data)
        )
    );
    assert!(!env.store.exists(&big), "no corrupt blob is committed");
    // The corrupt data is gone; a blob fetched beside it and cut off by the failure may stay
    // as a prefix to resume from.
    let left = env.ingest_leftovers();
    assert!(!left.contains(&format!("sha256-{}", big.hex())), "{left:?}");
    let config: Digest = f.manifest.config().digest().to_string().parse().unwrap();
    assert!(
        left.iter()
            .all(|n| n == &format!("sha256-{}", config.hex())),
        "{left:?}"
    );
}

#[test]
fn a_truncated_blob_is_refused_and_nothing_stays() {
    support::require_tools();
    let (reg, _, name) = serving(Mode::Http, "short", "test/short:1");
    let (big, size) = biggest_layer(&Env::new().pull(&name).0.unwrap());
    let file = reg.blob_file(big.hex());
    let data = std::fs::read(&file).unwrap();
    let cut = data.len() / 2;
    std::fs::write(&file, &data[..cut]).unwrap();
    let env = Env::new();
    let e = env.pull(&name).0.unwrap_err();
    assert_eq!(
        e,
        format!("image {name}: blob {big} is truncated: the registry sent {cut} of {size} bytes")
    );
    assert!(!env.store.exists(&big));
    let left = env.ingest_leftovers();
    assert!(!left.contains(&format!("sha256-{}", big.hex())), "{left:?}");
}

#[test]
fn an_unknown_image_is_not_found() {
    support::require_tools();
    let reg = Registry::start(Mode::Http);
    reg.push(&files_layout("known").path(), "t", "test/known:1", &[]);
    let env = Env::new();
    let h = reg.host();
    for name in [format!("{h}/no/such:1"), format!("{h}/test/known:2")] {
        let e = env.pull(&name).0.unwrap_err();
        assert_eq!(e, format!("image {name} not found in registry {h}"));
    }
    assert_eq!(env.ingest_leftovers(), Vec::<String>::new());
}

#[test]
fn a_registry_that_is_down_is_unreachable() {
    support::require_tools();
    let env = Env::new();
    let port = support::free_port();
    let name = format!("127.0.0.1:{port}/x/y:1");
    let e = env.pull(&name).0.unwrap_err();
    let prefix = format!(
        "image {name}: registry 127.0.0.1:{port} is unreachable: error sending request for url (http://127.0.0.1:{port}/v2/)"
    );
    assert!(e.starts_with(&prefix), "{e}");
    assert!(e.ends_with("Connection refused (os error 111)"), "{e}");
    assert_eq!(e.lines().count(), 1);
}

#[test]
fn a_bad_name_is_refused_before_any_request() {
    let env = Env::new();
    let e = env.pull("UPPER/case").0.unwrap_err();
    assert_eq!(
        e,
        "\"docker.io/UPPER/case\" is not a valid image name: repository components are lowercase letters, digits and . _ -"
    );
}

#[test]
fn a_mirror_is_tried_before_the_registry() {
    support::require_tools();
    let upstream = Registry::start(Mode::Http);
    let mirror = Registry::start(Mode::Http);
    upstream.push(&files_layout("upstream").path(), "t", "test/m:1", &[]);
    mirror.push(&files_layout("mirror").path(), "t", "cache/test/m:1", &[]);
    let env = Env::new();
    let cfg = env.config(&format!(
        "[[registry]]\nprefix = \"{}\"\n[[registry.mirror]]\nlocation = \"{}/cache\"\ninsecure = true\n",
        upstream.host(),
        mirror.host()
    ));
    let name = format!("{}/test/m:1", upstream.host());
    let (r, count) = env.pull_with(cfg, env.auth(None), &name, None);
    let f = r.unwrap();
    assert_eq!(f.name.as_deref(), Some(name.as_str()));
    assert_eq!(env.file(&f, "marker").as_deref(), Some("mirror"));
    assert_eq!(*count.notes.lock().unwrap(), Vec::<String>::new());
}

#[test]
fn a_mirror_without_the_image_falls_through_to_the_registry() {
    support::require_tools();
    let upstream = Registry::start(Mode::Http);
    let mirror = Registry::start(Mode::Http);
    let down = support::free_port();
    upstream.push(&files_layout("upstream").path(), "t", "test/m:1", &[]);
    let env = Env::new();
    let cfg = env.config(&format!(
        "[[registry]]\nprefix = \"{up}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"127.0.0.1:{down}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{m}\"\ninsecure = true\n",
        up = upstream.host(),
        m = mirror.host()
    ));
    let name = format!("{}/test/m:1", upstream.host());
    let (r, count) = env.pull_with(cfg, env.auth(None), &name, None);
    let f = r.unwrap();
    assert_eq!(env.file(&f, "marker").as_deref(), Some("upstream"));
    let notes = count.notes.lock().unwrap();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].starts_with(&format!(
            "mirror 127.0.0.1:{down}: image {name}: registry 127.0.0.1:{down} is unreachable: "
        )),
        "{notes:?}"
    );
    assert_eq!(
        notes[1],
        format!(
            "mirror {m}: image {name} not found in registry {m}; trying the next source",
            m = mirror.host()
        )
    );
}

#[test]
fn short_names_use_the_search_registries_in_order() {
    support::require_tools();
    let empty = Registry::start(Mode::Http);
    let reg = Registry::start(Mode::Http);
    reg.push(&files_layout("short").path(), "t", "team/app:2", &[]);
    let env = Env::new();
    let cfg = env.config(&format!(
        "unqualified-search-registries = [\"{}\", \"{}\"]\n",
        empty.host(),
        reg.host()
    ));
    let (r, count) = env.pull_with(cfg.clone(), env.auth(None), "team/app:2", None);
    let f = r.unwrap();
    assert_eq!(f.name.unwrap(), format!("{}/team/app:2", reg.host()));
    assert_eq!(
        *count.notes.lock().unwrap(),
        [format!(
            "image {e}/team/app:2 not found in registry {e}; trying the next search registry",
            e = empty.host()
        )]
    );
    // Found nowhere: the last registry's answer.
    let e = env
        .pull_with(cfg, env.auth(None), "team/other", None)
        .0
        .unwrap_err();
    assert_eq!(
        e,
        format!(
            "image {r}/team/other:latest not found in registry {r}",
            r = reg.host()
        )
    );
}

#[test]
fn whiteouts_and_hostile_layers_from_a_registry() {
    support::require_tools();
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
    // A layer escaping with `..`: pulled (it is just a blob), refused when unpacked. A
    // layer is unpacked in <snap>/layers/.tmp-*, so `../../canary` is <snap>/canary.
    let h = Layout::new("t");
    h.raw_layer(
        "t",
        &tar_file(h.dir.path(), &[("ok", b"fine"), ("../../canary", b"pwned")]),
    );
    reg.push(&h.path(), "t", "test/evil:1", &[]);
    let env = Env::new();
    let canary = env.dir.path().join("snap/canary");
    std::fs::create_dir_all(canary.parent().unwrap()).unwrap();
    std::fs::write(&canary, "untouched").unwrap();
    let f = env.pull(&format!("{}/test/evil:1", reg.host())).0.unwrap();
    let r = env.unpack(&f);
    assert_eq!(
        std::fs::read_to_string(&canary).unwrap(),
        "untouched",
        "the escape reached the canary"
    );
    let e = r.unwrap_err();
    let layer = f.manifest.layers()[0].digest().to_string();
    assert!(
        e.ends_with(&format!(
            "layer {layer}: entry \"../../canary\": the name climbs out of the root with `..`"
        )),
        "{e}"
    );
}

/// A TCP proxy to `upstream` that cuts the first connection fetching blob `cut_blob` after
/// `cut_after` bytes of its response. Stops when dropped (with the test).
struct CuttingProxy {
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl CuttingProxy {
    fn start(upstream: u16, cut_blob: String, cut_after: usize) -> CuttingProxy {
        use std::io::Write;
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::AtomicBool;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let cut_done = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        std::thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                // Set by the request direction when the blob is asked for on this connection.
                let asked = Arc::new(AtomicBool::new(false));
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (asked_w, blob) = (asked.clone(), cut_blob.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 << 10];
                    while let Ok(n) = c_in.read(&mut buf) {
                        if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        if String::from_utf8_lossy(&buf[..n]).contains(&format!("/blobs/{blob}")) {
                            asked_w.store(true, Ordering::SeqCst);
                        }
                    }
                    let _ = s_out.shutdown(Shutdown::Write);
                });
                let (mut s_in, mut c_out) = (server, client);
                let cut_done = cut_done.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let mut sent_after_ask = 0usize;
                    while let Ok(n) = s_in.read(&mut buf) {
                        if n == 0 || c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        if asked.load(Ordering::SeqCst) && !cut_done.load(Ordering::SeqCst) {
                            sent_after_ask += n;
                            if sent_after_ask >= cut_after {
                                cut_done.store(true, Ordering::SeqCst);
                                let _ = c_out.shutdown(Shutdown::Both);
                                let _ = s_in.shutdown(Shutdown::Both);
                                break;
                            }
                        }
                    }
                    let _ = c_out.shutdown(Shutdown::Write);
                });
            }
        });
        CuttingProxy { port, stop }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_connection_lost_mid_blob_is_retried_and_resumed() {
    support::require_tools();
    let reg = Registry::start(Mode::Http);
    reg.push(&files_layout("cut").path(), "t", "test/cut:1", &[]);
    let probe = Env::new();
    let (big, size) = biggest_layer(&probe.pull(&format!("{}/test/cut:1", reg.host())).0.unwrap());
    let proxy = CuttingProxy::start(reg.port, big.to_string(), 100 << 10);
    let env = Env::new();
    let name = format!("127.0.0.1:{}/test/cut:1", proxy.port);
    let (r, count) = env.pull(&name);
    r.unwrap();
    assert_eq!(
        env.store.read(&big).unwrap(),
        probe.store.read(&big).unwrap()
    );
    let resumed = count.resumed.lock().unwrap().clone();
    assert_eq!(resumed.len(), 2, "one start, one resume: {resumed:?}");
    assert_eq!(resumed[0], 0);
    assert!(
        resumed[1] > 0 && resumed[1] < size,
        "resumed inside the blob: {resumed:?}"
    );
    let notes = count.notes.lock().unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with(&format!(
            "image {name}: registry 127.0.0.1:{} is unreachable: blob {big}: the connection broke after ",
            proxy.port
        )) && notes[0].ends_with(" bytes: error decoding response body; retrying (1/3)"),
        "{notes:?}"
    );
}

/// A registry on 127.0.0.1 that never stops talking: it answers `/v2/`, then streams an
/// endless body where `case` says (a manifest, an error body, a token response, or a
/// manifest announcing 10 GiB). Every connection gets its own thread, until the client
/// hangs up.
fn endless_registry(case: &'static str) -> u16 {
    use std::net::TcpListener;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            std::thread::spawn(move || serve_endless(conn, case, port));
        }
    });
    port
}

fn serve_endless(mut c: std::net::TcpStream, case: &str, port: u16) {
    use std::io::{BufRead, BufReader, Write};
    let mut first = [0u8; 1];
    // A TLS client hello (https is tried first on loopback): not spoken here.
    if !matches!(c.peek(&mut first), Ok(1) if first[0] != 0x16) {
        let _ = c.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n");
        return;
    }
    let mut r = BufReader::new(c.try_clone().unwrap());
    loop {
        let mut request = String::new();
        if r.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
        }
        let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
        let manifest = "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n";
        let (status, headers, endless) = match (case, path.as_str()) {
            ("token", "/v2/") => (
                "401 Unauthorized",
                format!("WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"endless\"\r\nContent-Length: 0\r\n"),
                false,
            ),
            (_, "/v2/") => ("200 OK", "Content-Length: 0\r\n".to_string(), false),
            ("token", p) if p.starts_with("/token") => {
                ("200 OK", "Content-Type: application/json\r\n".into(), true)
            }
            ("manifest", _) => ("200 OK", manifest.to_string(), true),
            ("manifest-length", _) => (
                "200 OK",
                format!("{manifest}Content-Length: 10737418240\r\n"),
                true,
            ),
            ("error", _) => ("400 Bad Request", "Content-Type: text/plain\r\n".into(), true),
            ("blob-error", p) if p.contains("/manifests/") => {
                let m = format!(
                    r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":10}},"layers":[]}}"#,
                    "a".repeat(64)
                );
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\n{manifest}Content-Length: {}\r\n\r\n{m}",
                    m.len()
                );
                continue;
            }
            ("blob-error", _) => ("400 Bad Request", "Content-Type: text/plain\r\n".into(), true),
            _ => ("404 Not Found", "Content-Length: 0\r\n".into(), false),
        };
        if !endless {
            if write!(c, "HTTP/1.1 {status}\r\n{headers}\r\n").is_err() {
                return;
            }
            continue;
        }
        if write!(
            c,
            "HTTP/1.1 {status}\r\n{headers}Connection: close\r\n\r\n{{\"a\":\""
        )
        .is_err()
        {
            return;
        }
        let chunk = vec![b'a'; 64 << 10];
        while c.write_all(&chunk).is_ok() {}
        return;
    }
}

#[test]
fn endless_bodies_are_cut_at_their_bounds() {
    const ME: &str = "endless_bodies_are_cut_at_their_bounds";
    // In the child (see below): pull from an endless registry and print the outcome.
    if let Ok(case) = std::env::var("BERTH_ENDLESS") {
        let case: &'static str = [
            "manifest",
            "manifest-length",
            "error",
            "blob-error",
            "token",
        ]
        .into_iter()
        .find(|c| *c == case)
        .unwrap();
        let port = endless_registry(case);
        let (r, _) = Env::new().pull(&format!("127.0.0.1:{port}/x/y:1"));
        match r {
            Ok(_) => println!("RESULT: pulled"),
            Err(e) => println!("RESULT: {e}"),
        }
        return;
    }
    for (case, want) in [
        ("manifest", "the manifest is over the 4194304-byte limit"),
        (
            "manifest-length",
            "the manifest is over the 4194304-byte limit",
        ),
        ("token", "sent more than 1048576 bytes"),
        ("blob-error", ": HTTP 400 from http://127.0.0.1:"),
        ("error", "manifest: HTTP 400 from http://127.0.0.1:"),
    ] {
        // 512 MiB of address space: a pull fits in far less; buffering an endless body
        // does not.
        let out = berth_testkit::rerun_limited(
            ME,
            &[("BERTH_ENDLESS", case)],
            512 << 20,
            std::time::Duration::from_secs(120),
        );
        let berth_testkit::Rerun::Done { code, stdout } = out else {
            panic!("{case}: the pull hung");
        };
        assert_eq!(code, Some(0), "{case}: the pull died: {stdout}");
        let got = berth_testkit::result_line(&stdout).expect("a result line");
        assert!(
            got.contains(want) && got.len() < 1024,
            "{case}: one short line naming what was too large: {got}"
        );
    }
}
