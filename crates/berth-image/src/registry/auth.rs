//! Registry credentials in the files podman and docker keep them in
//! (`{"auths": {"host": {"auth": base64("user:password")}}}`), and `login`/`logout`.
//!
//! Read, in order (the first file with an entry for the registry wins):
//! `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json` (for root without
//! `XDG_RUNTIME_DIR`: `/run/containers/0/auth.json`, as podman), `~/.config/containers/auth.json`,
//! `~/.docker/config.json`. `login` writes the first of the list (`$REGISTRY_AUTH_FILE` if
//! set), atomically and with mode 0600. Identity tokens (`identitytoken`) and credential
//! helpers are not used: an entry with only those is skipped.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{json, Value};

use super::config::RegistriesConfig;
use super::token::{fetch_token, parse_challenge, Challenge};

/// Why credentials could not be read, checked or written.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A credential file that cannot be read, parsed or written.
    #[error("{file}: {cause}")]
    File { file: PathBuf, cause: String },
    /// `login` could not check the credentials, or the registry refused them.
    #[error("login to {registry}: {cause}")]
    Login { registry: String, cause: String },
    /// `logout` found no credentials for the registry.
    #[error("not logged in to {registry} (no entry in {files})")]
    NotLoggedIn { registry: String, files: String },
}

/// The credential files, in the order they are read; `login` writes the first.
#[derive(Debug, Clone, Default)]
pub struct AuthStore {
    /// The files, first wins. Tests and callers with their own layout set it directly.
    pub files: Vec<PathBuf>,
    /// Credentials the caller was handed for this pull (the kubelet's AuthConfig); they
    /// come before any file. Never written anywhere.
    pub given: Option<(String, String)>,
}

/// The key a registry is stored under: `docker.io` is docker's `https://index.docker.io/v1/`.
fn key_matches(key: &str, registry: &str) -> bool {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let k = k.strip_suffix("/v1").or(k.strip_suffix("/v2")).unwrap_or(k);
    let docker = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    k == registry || (docker(k) && docker(registry))
}

impl AuthStore {
    /// The files for this process's environment (`REGISTRY_AUTH_FILE`, `XDG_RUNTIME_DIR`,
    /// `HOME`, the effective user id).
    pub fn from_env() -> AuthStore {
        let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
        AuthStore::from_vars(
            env("REGISTRY_AUTH_FILE"),
            env("XDG_RUNTIME_DIR"),
            env("HOME"),
            nix::unistd::geteuid().as_raw(),
        )
    }

    /// The files for the given environment values (empty values count as unset):
    /// `registry_auth_file`, then `<xdg_runtime_dir>/containers/auth.json` (or
    /// `/run/containers/<euid>/auth.json` without it), then `<home>/.config/containers/auth.json`
    /// and `<home>/.docker/config.json`.
    pub fn from_vars(
        registry_auth_file: Option<PathBuf>,
        xdg_runtime_dir: Option<PathBuf>,
        home: Option<PathBuf>,
        euid: u32,
    ) -> AuthStore {
        let set = |v: Option<PathBuf>| v.filter(|p| !p.as_os_str().is_empty());
        let mut files = Vec::new();
        if let Some(f) = set(registry_auth_file) {
            files.push(f);
        }
        match set(xdg_runtime_dir) {
            Some(d) => files.push(d.join("containers/auth.json")),
            None => files.push(PathBuf::from(format!("/run/containers/{euid}/auth.json"))),
        }
        if let Some(h) = set(home) {
            files.push(h.join(".config/containers/auth.json"));
            files.push(h.join(".docker/config.json"));
        }
        AuthStore { files, given: None }
    }

    /// The same files, with `user`/`password` for this pull before them.
    pub fn with_credentials(mut self, user: &str, password: &str) -> AuthStore {
        self.given = Some((user.to_string(), password.to_string()));
        self
    }

    /// Credentials (user, password) for `registry` (host[:port]): those given, else the
    /// first file's that has them.
    pub fn credentials(&self, registry: &str) -> Result<Option<(String, String)>, AuthError> {
        if let Some(g) = &self.given {
            return Ok(Some(g.clone()));
        }
        for f in &self.files {
            let Some(doc) = read(f)? else { continue };
            let Some(auths) = doc["auths"].as_object() else {
                continue;
            };
            for (k, v) in auths {
                if !key_matches(k, registry) {
                    continue;
                }
                if let Some(a) = v["auth"].as_str().filter(|a| !a.is_empty()) {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(a.trim())
                        .map_err(|e| AuthError::File {
                            file: f.clone(),
                            cause: format!("auths.{k}.auth: not base64: {e}"),
                        })?;
                    let s = String::from_utf8(raw).map_err(|_| AuthError::File {
                        file: f.clone(),
                        cause: format!("auths.{k}.auth: not UTF-8"),
                    })?;
                    let (u, p) = s.split_once(':').ok_or_else(|| AuthError::File {
                        file: f.clone(),
                        cause: format!("auths.{k}.auth: not user:password"),
                    })?;
                    return Ok(Some((u.to_string(), p.to_string())));
                }
                if let (Some(u), Some(p)) = (v["username"].as_str(), v["password"].as_str()) {
                    return Ok(Some((u.to_string(), p.to_string())));
                }
            }
        }
        Ok(None)
    }

    /// The file holding an entry for `registry` with only an `identitytoken` (which this
    /// puller does not use), if that is all there is: a pull then goes anonymous, and says
    /// why with this.
    pub fn identity_token_only(&self, registry: &str) -> Option<PathBuf> {
        self.files.iter().find_map(|f| {
            let doc = read(f).ok()??;
            let auths = doc["auths"].as_object()?;
            auths
                .iter()
                .any(|(k, v)| key_matches(k, registry) && v["identitytoken"].is_string())
                .then(|| f.clone())
        })
    }

    fn write_target(&self) -> Result<&Path, AuthError> {
        self.files
            .first()
            .map(PathBuf::as_path)
            .ok_or_else(|| AuthError::File {
                file: PathBuf::from("(none)"),
                cause: "no credential file to write".into(),
            })
    }

    /// Checks `user`/`password` against `registry` (GET /v2/, following a bearer
    /// challenge), then stores them. Returns the file written.
    pub async fn login(
        &self,
        config: &RegistriesConfig,
        registry: &str,
        user: &str,
        password: &str,
    ) -> Result<PathBuf, AuthError> {
        let registry = normalise_registry(registry);
        verify(config, &registry, user, password).await?;
        let file = self.write_target()?.to_path_buf();
        let mut doc = read(&file)?.unwrap_or_else(|| json!({}));
        if !doc["auths"].is_object() {
            doc["auths"] = json!({});
        }
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        doc["auths"][registry.as_str()] = json!({"auth": token});
        write(&file, &doc)?;
        Ok(file)
    }

    /// Removes the credentials for `registry` from every file that has them. Returns the
    /// first file changed; an error when none had any.
    pub fn logout(&self, registry: &str) -> Result<PathBuf, AuthError> {
        let registry = normalise_registry(registry);
        let mut changed = None;
        for f in &self.files {
            let Some(mut doc) = read(f)? else { continue };
            let Some(auths) = doc["auths"].as_object_mut() else {
                continue;
            };
            let keys: Vec<String> = auths
                .keys()
                .filter(|k| key_matches(k, &registry))
                .cloned()
                .collect();
            if keys.is_empty() {
                continue;
            }
            for k in keys {
                auths.remove(&k);
            }
            write(f, &doc)?;
            changed.get_or_insert_with(|| f.clone());
        }
        changed.ok_or_else(|| AuthError::NotLoggedIn {
            registry: registry.clone(),
            files: self
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// `https://host/` → `host`; docker's index names → `docker.io`.
fn normalise_registry(r: &str) -> String {
    let r = r
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let r = r.split('/').next().unwrap_or(r);
    match r {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        other => other.into(),
    }
}

/// The most a credential file may hold.
const MAX_AUTH_FILE: u64 = 4 << 20;

/// A credential file, parsed; `None` when it is missing, unreadable or blank. The files may
/// be another user's (`$HOME` under sudo): only a regular file is read (opened without
/// blocking, so a fifo cannot hang the reader), and at most [`MAX_AUTH_FILE`] bytes of it.
fn read(f: &Path) -> Result<Option<Value>, AuthError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |cause: String| AuthError::File {
        file: f.to_path_buf(),
        cause,
    };
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(f)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(None),
        Err(e) => return Err(err(e.to_string())),
    };
    let meta = file.metadata().map_err(|e| err(e.to_string()))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    if meta.len() > MAX_AUTH_FILE {
        return Err(err(format!(
            "{} bytes, over the {MAX_AUTH_FILE}-byte limit",
            meta.len()
        )));
    }
    let mut data = Vec::new();
    file.take(MAX_AUTH_FILE)
        .read_to_end(&mut data)
        .map_err(|e| err(e.to_string()))?;
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|e| AuthError::File {
            file: f.to_path_buf(),
            cause: format!("not JSON: {e}"),
        })
}

fn write(f: &Path, doc: &Value) -> Result<(), AuthError> {
    let err = |cause: String| AuthError::File {
        file: f.to_path_buf(),
        cause,
    };
    // The file's directory may be one others can write ($REGISTRY_AUTH_FILE anywhere, a
    // user's home): it is opened (made 0700 where missing) once, and the new file is written
    // under an unguessable name in it and renamed into place, all through its descriptor.
    let (dir, name) = crate::fsutil::split(f).map_err(|e| err(e.to_string()))?;
    let dir = crate::fsutil::open_or_make_dir(dir, 0o700).map_err(|e| err(e.to_string()))?;
    let data = serde_json::to_vec_pretty(doc).map_err(|e| err(e.to_string()))?;
    crate::fsutil::write_atomic_in(&dir, name, &data, 0o600).map_err(|e| err(e.to_string()))
}

/// Checks credentials the way `docker login` does: GET /v2/ with them, or, when the
/// registry answers with a bearer challenge, ask its token server for a token.
async fn verify(
    config: &RegistriesConfig,
    registry: &str,
    user: &str,
    password: &str,
) -> Result<(), AuthError> {
    super::init_tls();
    let fail = |cause: String| AuthError::Login {
        registry: registry.to_string(),
        cause,
    };
    let insecure = config.insecure_host(registry);
    let mut builder = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .danger_accept_invalid_certs(insecure);
    for pem in config.ca_certs(registry) {
        let c = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| fail(format!("CA certificate: {e}")))?;
        builder = builder.add_root_certificate(c);
    }
    let client = builder.build().map_err(|e| fail(e.to_string()))?;
    let schemes: &[&str] = if insecure {
        &["https", "http"]
    } else {
        &["https"]
    };
    let mut last = String::new();
    for scheme in schemes {
        let url = format!("{scheme}://{registry}/v2/");
        let resp = match client
            .get(&url)
            .basic_auth(user, Some(password))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                last = format!("{url}: {e}");
                continue;
            }
        };
        if resp.status().is_success() {
            return Ok(());
        }
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Err(fail(format!("{url}: HTTP {}", resp.status())));
        }
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge);
        let Some(Challenge::Bearer { realm, service, .. }) = challenge else {
            return Err(fail(
                "the registry refused the user name or password".into(),
            ));
        };
        // The realm is checked before the credentials go there (token.rs).
        return fetch_token(
            &client,
            scheme,
            (&realm, service.as_deref(), None),
            Some((user, password)),
        )
        .await
        .map(drop)
        .map_err(|e| fail(e.to_string()));
    }
    Err(fail(format!("unreachable: {last}")))
}

#[cfg(test)]
mod tests;
