//! A real registry for tests: Debian's `docker-registry` on a free 127.0.0.1 port, over plain
//! http, TLS with a CA made here, htpasswd basic auth, or bearer tokens from a token server
//! written here; and images built with umoci and pushed with skopeo. Other test crates
//! include this file with `#[path]`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod layout;

use layout::run;
pub use layout::Layout;

pub const USER: &str = "berth";
pub const PASSWORD: &str = "s3cret-pass";

/// The tools these tests need; None when all are there, else the first one missing.
pub fn missing_tool() -> Option<&'static str> {
    ["docker-registry", "skopeo", "umoci", "openssl", "htpasswd"]
        .into_iter()
        .find(|t| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
        })
}

/// Fails the test when a tool it drives is missing: CI installs them all, so a missing one
/// is a broken setup, not a reason to pass.
pub fn require_tools() {
    if let Some(t) = missing_tool() {
        panic!("{t} is not installed (scripts/install-deps.sh installs it)");
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Http,
    Tls,
    Basic,
    Token,
    /// TLS (the CA made here) with bearer tokens from the token server, which speaks plain
    /// http: the realm a 401 names is `http://`.
    TlsToken,
}

pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub mode: Mode,
    child: Child,
    token: Option<TokenServer>,
}

impl Registry {
    pub fn start(mode: Mode) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            d.join("data").display()
        );
        let mut token = None;
        match mode {
            Mode::Http => {}
            Mode::Tls => {
                make_ca_and_cert(d);
                cfg.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    d.join("server.crt").display(),
                    d.join("server.key").display()
                ));
            }
            Mode::Basic => {
                let line = run(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
                std::fs::write(d.join("htpasswd"), line).unwrap();
                cfg.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                    d.join("htpasswd").display()
                ));
            }
            Mode::Token | Mode::TlsToken => {
                if mode == Mode::TlsToken {
                    make_ca_and_cert(d);
                    cfg.push_str(&format!(
                        "  tls:\n    certificate: {}\n    key: {}\n",
                        d.join("server.crt").display(),
                        d.join("server.key").display()
                    ));
                }
                let t = TokenServer::start(d);
                cfg.push_str(&format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: berth-test-registry\n    issuer: berth-test-issuer\n    rootcertbundle: {}\n",
                    t.port,
                    d.join("token.crt").display()
                ));
                token = Some(t);
            }
        }
        std::fs::write(d.join("config.yml"), cfg).unwrap();
        let log = std::fs::File::create(d.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let r = Registry {
            dir,
            port,
            mode,
            child,
            token,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !r.ready() {
            assert!(
                Instant::now() < deadline,
                "the registry did not start: {}",
                std::fs::read_to_string(r.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// True once `/v2/` answers (200, or 401 asking for credentials). Over TLS, once the
    /// port accepts connections.
    fn ready(&self) -> bool {
        let Ok(mut c) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if matches!(self.mode, Mode::Tls | Mode::TlsToken) {
            return true;
        }
        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
        if write!(
            c,
            "GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.host()
        )
        .is_err()
        {
            return false;
        }
        let mut status = String::new();
        let _ = BufReader::new(c).read_line(&mut status);
        status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.1 401")
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The CA certificate (TLS mode).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// skopeo's destination flags for this registry.
    fn dest_flags(&self) -> Vec<String> {
        let mut f = vec!["--dest-tls-verify=false".to_string()];
        if matches!(self.mode, Mode::Basic | Mode::Token | Mode::TlsToken) {
            f.push(format!("--dest-creds={USER}:{PASSWORD}"));
        }
        f
    }

    /// Pushes `layout:tag` to `repo:tag` here; `extra` are more skopeo flags.
    pub fn push(&self, layout: &Path, tag: &str, repo_tag: &str, extra: &[&str]) {
        let mut c = Command::new("skopeo");
        c.args(["copy", "-q"]).args(self.dest_flags()).args(extra);
        c.arg(format!("oci:{}:{tag}", layout.display()));
        c.arg(format!("docker://{}/{repo_tag}", self.host()));
        run(&mut c);
    }

    /// Requests the token server has answered (0 without one).
    pub fn token_requests(&self) -> usize {
        self.token
            .as_ref()
            .map_or(0, |t| t.requests.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// The token server's realm URL (token modes).
    pub fn realm(&self) -> Option<String> {
        self.token
            .as_ref()
            .map(|t| format!("http://127.0.0.1:{}/token", t.port))
    }

    /// The file the registry keeps blob `hex` in.
    pub fn blob_file(&self, hex: &str) -> PathBuf {
        self.dir.path().join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.token.take());
    }
}

fn make_ca_and_cert(d: &Path) {
    let p = |n: &str| d.join(n).to_string_lossy().into_owned();
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=berth test CA",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.crt"),
    ]));
    run(Command::new("openssl").args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
    ]));
    std::fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").unwrap();
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.crt"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("server.crt"),
    ]));
}

fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// A token server: checks basic credentials, grants what is asked, signs RS256 JWTs with a
/// key whose self-signed certificate the registry trusts (sent in the `x5c` header).
struct TokenServer {
    port: u16,
    /// Requests received, whatever their credentials.
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    fn start(d: &Path) -> TokenServer {
        let p = |n: &str| d.join(n).to_string_lossy().into_owned();
        run(Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=berth token signer",
            "-keyout",
            &p("token.key"),
            "-out",
            &p("token.crt"),
        ]));
        let der = run(Command::new("sh").arg("-c").arg(format!(
            "openssl x509 -in {} -outform DER | base64 -w0",
            p("token.crt")
        )));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let key = d.join("token.key");
        let s2 = stop.clone();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r2 = requests.clone();
        let thread = std::thread::spawn(move || {
            while !s2.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        r2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = conn.set_nonblocking(false);
                        serve_token(conn, &key, der.trim());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        TokenServer {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?');
                out.push(h);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve_token(mut conn: TcpStream, key: &Path, x5c: &str) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut auth = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line
            .strip_prefix("Authorization: Basic ")
            .or(line.strip_prefix("authorization: Basic "))
        {
            use base64::Engine;
            auth = base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned());
        }
    }
    let reply = |conn: &mut TcpStream, status: &str, body: &str| {
        let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    };
    if auth.as_deref() != Some(&format!("{USER}:{PASSWORD}")) {
        reply(
            &mut conn,
            "401 Unauthorized",
            r#"{"details":"bad credentials"}"#,
        );
        return;
    }
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut access = Vec::new();
    for kv in query.split('&') {
        if let Some(v) = kv.strip_prefix("scope=") {
            let v = url_decode(v);
            for scope in v.split(' ') {
                let parts: Vec<&str> = scope.split(':').collect();
                if parts.len() >= 3 {
                    let name = parts[1..parts.len() - 1].join(":");
                    let actions: Vec<&str> = parts[parts.len() - 1].split(',').collect();
                    access.push(
                        serde_json::json!({"type": parts[0], "name": name, "actions": actions}),
                    );
                }
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": "berth-test-issuer", "sub": USER, "aud": "berth-test-registry",
        "exp": now + 600, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())
        .unwrap();
    let mut sig = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut sig).unwrap();
    let _ = child.wait();
    let jwt = format!("{signing_input}.{}", b64url(&sig));
    let body =
        serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 600}).to_string();
    reply(&mut conn, "200 OK", &body);
}

/// A small image: busybox plus a marker file, as an OCI layout at tag `t`.
pub fn busybox_layout(marker: &str) -> Layout {
    let l = Layout::new("t");
    let tree = l.dir.path().join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", tree.join("bin/busybox"))
        .expect("copy /bin/busybox (Debian's busybox-static)");
    for a in ["sh", "cat", "ls", "echo", "true"] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(a)).unwrap();
    }
    std::fs::write(tree.join("marker"), marker).unwrap();
    l.insert("t", &tree, "/");
    l.config("t", &["--config.cmd", "/bin/sh"]);
    l
}

/// Pushes a two-platform image index as `repo_tag`. Its linux/amd64 image is `amd64`'s
/// image `t` (as [`busybox_layout`] and [`files_layout`] make it); its linux/arm64 image,
/// added to that layout, holds only /marker "arm64". The two manifests go in a nested index,
/// which the layout's own index names `multi`. Returns the digests of the amd64 and arm64
/// manifests and of the nested index.
pub fn push_two_platforms(
    reg: &Registry,
    amd64: &Layout,
    repo_tag: &str,
) -> (String, String, berth_image::Digest) {
    let p = amd64.path();
    amd64.add_image("arm");
    let tree = amd64.dir.path().join("armtree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("marker"), "arm64").unwrap();
    amd64.insert("arm", &tree, "/");
    amd64.config("arm", &["--architecture", "arm64"]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.join("index.json")).unwrap()).unwrap();
    let find = |tag: &str| {
        let mut m = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap()
            .clone();
        m.as_object_mut().unwrap().remove("annotations");
        m
    };
    let (mut amd, mut arm) = (find("t"), find("arm"));
    amd["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
    arm["platform"] = serde_json::json!({"os": "linux", "architecture": "arm64"});
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [amd, arm]
    }))
    .unwrap();
    let nd = berth_image::Digest::of(berth_image::Algorithm::Sha256, &nested);
    std::fs::write(p.join("blobs/sha256").join(nd.hex()), &nested).unwrap();
    let mut top = index.clone();
    top["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": nd.to_string(),
            "size": nested.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"}
        }));
    std::fs::write(p.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    reg.push(&p, "multi", repo_tag, &["--all"]);
    (
        amd["digest"].as_str().unwrap().to_string(),
        arm["digest"].as_str().unwrap().to_string(),
        nd,
    )
}

/// Bytes that do not compress: a layer made of them stays about their size.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A small image with no binaries, as an OCI layout at tag `t`: one layer holding
/// `/marker` (its text is `marker`), `/etc/hostname` and `/data/noise` (256 KiB that do not
/// compress, so that a layer can be cut in half).
pub fn files_layout(marker: &str) -> Layout {
    let l = Layout::new("t");
    let tree = l.dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::create_dir_all(tree.join("data")).unwrap();
    std::fs::write(tree.join("marker"), marker).unwrap();
    std::fs::write(tree.join("etc/hostname"), "berth-test\n").unwrap();
    let seed = marker
        .bytes()
        .fold(7u64, |a, b| a.wrapping_mul(31) ^ b as u64);
    std::fs::write(tree.join("data/noise"), noise(256 << 10, seed)).unwrap();
    l.insert("t", &tree, "/");
    l.config("t", &["--config.cmd", "/marker"]);
    l
}
