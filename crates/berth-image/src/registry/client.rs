//! The part of the OCI distribution protocol a pull needs, on reqwest: `GET /v2/` to learn
//! how the registry authenticates, manifests by tag or digest with an Accept list, and blobs
//! with an optional range, each request authenticated (basic, or a bearer token fetched and
//! refreshed as 401 challenges ask).
//!
//! This replaces oci-client, which the pull used before: it reads every manifest, token
//! response and error body whole (`Response::bytes()`/`text()`) before its caller can look
//! at the size, so a registry that streams an endless body made berthctl use all the
//! memory it could get, and it offers no hook to bound those reads, nor to check the
//! realm a 401 names before sending credentials there. Here nothing from the registry is
//! held in memory past its bound: manifests are read in chunks up to the caller's limit
//! (4 MiB), token responses up to 1 MiB (`token.rs`), error bodies only up to 64 KiB
//! (the rest is never read); blobs are streamed to the content store.

use std::sync::Mutex;

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, RANGE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

use super::body::{read_limited, BodyError};
use super::token::{fetch_token, parse_challenge, Challenge, TokenError};

/// The most of an error body that is read.
pub(crate) const MAX_ERROR_BODY: usize = 64 << 10;
/// The most of an error body's text that goes into a message.
const SHOWN_ERROR: usize = 300;

/// Why a request failed.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// No connection (refused, unreachable, TLS refused): another source may do better.
    Connect { cause: String },
    /// The connection failed midway: worth trying again.
    Transport { cause: String },
    /// An HTTP status other than success. `codes` are the registry's error codes
    /// (`MANIFEST_UNKNOWN`, ...), `message` its messages or the start of its body.
    Status {
        url: String,
        status: StatusCode,
        codes: Vec<String>,
        message: String,
    },
    /// A body over its bound.
    TooLarge { limit: usize },
    /// The bearer token could not be had.
    Token(TokenError),
}

/// How requests are authenticated now.
#[derive(Debug, Clone)]
enum Auth {
    Anonymous,
    Basic,
    Bearer(String),
}

/// A client for one repository at one endpoint and scheme.
pub(crate) struct Client {
    http: reqwest::Client,
    scheme: &'static str,
    /// `scheme://host/v2/repository`
    base: String,
    repository: String,
    creds: Option<(String, String)>,
    auth: Mutex<Auth>,
}

/// The host the API of `host` is served from (docker's rule for Docker Hub).
fn api_host(host: &str) -> &str {
    match host {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        h => h,
    }
}

fn request_error(e: reqwest::Error) -> ClientError {
    let cause = super::error_chain(&e);
    if e.is_connect() {
        ClientError::Connect { cause }
    } else {
        ClientError::Transport { cause }
    }
}

impl Client {
    /// Connects to `repository` at `host` over `scheme`: `GET /v2/`, then whatever its 401
    /// asks for (a bearer token from the realm it names, checked first; basic credentials).
    pub(crate) async fn connect(
        http: reqwest::Client,
        scheme: &'static str,
        host: &str,
        repository: &str,
        creds: Option<(String, String)>,
    ) -> Result<Client, ClientError> {
        let api = api_host(host);
        let c = Client {
            http,
            scheme,
            base: format!("{scheme}://{api}/v2/{repository}"),
            repository: repository.to_string(),
            creds,
            auth: Mutex::new(Auth::Anonymous),
        };
        let url = format!("{scheme}://{api}/v2/");
        let resp = c.http.get(&url).send().await.map_err(request_error)?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            c.answer(&resp).await?;
        } else if status.is_server_error() {
            return Err(status_error(resp).await);
        }
        Ok(c)
    }

    fn auth(&self) -> Auth {
        self.auth
            .lock()
            .map(|a| a.clone())
            .unwrap_or(Auth::Anonymous)
    }

    fn set_auth(&self, a: Auth) {
        if let Ok(mut g) = self.auth.lock() {
            *g = a;
        }
    }

    /// Takes up the challenge of a 401 response: a token from its realm, or basic
    /// credentials. False when there is nothing to try (no credentials for basic, no
    /// challenge).
    async fn answer(&self, resp: &Response) -> Result<bool, ClientError> {
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge);
        match challenge {
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                let creds = self.creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
                let token = fetch_token(
                    &self.http,
                    self.scheme,
                    (&realm, service.as_deref(), Some(&scope)),
                    creds,
                )
                .await
                .map_err(ClientError::Token)?;
                self.set_auth(Auth::Bearer(token));
                Ok(true)
            }
            Some(Challenge::Basic) if self.creds.is_some() => {
                let fresh = !matches!(self.auth(), Auth::Basic);
                self.set_auth(Auth::Basic);
                Ok(fresh)
            }
            _ => Ok(false),
        }
    }

    fn request(&self, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.get(url);
        match (self.auth(), &self.creds) {
            (Auth::Bearer(t), _) => match HeaderValue::from_str(&format!("Bearer {t}")) {
                Ok(v) => r.header(AUTHORIZATION, v),
                Err(_) => r,
            },
            (Auth::Basic, Some((u, p))) => r.basic_auth(u, Some(p)),
            _ => r,
        }
    }

    /// GET `url` (under this repository), answering one 401 challenge (an expired token,
    /// a scope the first token lacked) and trying once more. A status other than success
    /// is an error, with at most [`MAX_ERROR_BODY`] of its body read.
    async fn get(
        &self,
        url: &str,
        accept: Option<&str>,
        range_from: Option<u64>,
    ) -> Result<Response, ClientError> {
        let mut answered = false;
        loop {
            let mut r = self.request(url);
            if let Some(a) = accept {
                r = r.header(ACCEPT, a);
            }
            if let Some(off) = range_from {
                r = r.header(RANGE, format!("bytes={off}-"));
            }
            let resp = r.send().await.map_err(request_error)?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            if status == StatusCode::UNAUTHORIZED && !answered && self.answer(&resp).await? {
                answered = true;
                continue;
            }
            return Err(status_error(resp).await);
        }
    }

    /// The manifest (or index) `reference` (a tag or digest), at most `limit` bytes, read
    /// in chunks: a longer one is refused as soon as it passes the bound.
    pub(crate) async fn manifest(
        &self,
        reference: &str,
        accept: &[&str],
        limit: usize,
    ) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}/manifests/{reference}", self.base);
        let mut resp = self.get(&url, Some(&accept.join(", ")), None).await?;
        read_limited(&mut resp, limit).await.map_err(|e| match e {
            BodyError::TooLarge { limit } => ClientError::TooLarge { limit },
            BodyError::Http(e) => ClientError::Transport {
                cause: super::error_chain(&e),
            },
        })
    }

    /// Blob `digest`, from byte `offset` on when above 0; the response to stream from, and
    /// whether it is the range asked for (206) rather than the whole blob (200).
    pub(crate) async fn blob(
        &self,
        digest: &str,
        offset: u64,
    ) -> Result<(Response, bool), ClientError> {
        let url = format!("{}/blobs/{digest}", self.base);
        let resp = self.get(&url, None, (offset > 0).then_some(offset)).await?;
        let partial = resp.status() == StatusCode::PARTIAL_CONTENT;
        Ok((resp, partial))
    }
}

/// The error of a response with a failing status: its codes and messages from the
/// distribution spec's error JSON, or the start of its text. At most [`MAX_ERROR_BODY`]
/// bytes of the body are read; the rest is never fetched.
async fn status_error(mut resp: Response) -> ClientError {
    let url = resp.url().to_string();
    let status = resp.status();
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c[..c.len().min(MAX_ERROR_BODY - body.len())]),
            _ => break,
        }
    }
    let (codes, messages) = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => {
            let errors = v["errors"].as_array().cloned().unwrap_or_default();
            (
                errors
                    .iter()
                    .filter_map(|e| e["code"].as_str().map(str::to_string))
                    .collect(),
                errors
                    .iter()
                    .filter_map(|e| e["message"].as_str().map(str::to_string))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        }
        Err(_) => (Vec::new(), String::from_utf8_lossy(&body).into_owned()),
    };
    ClientError::Status {
        url,
        status,
        codes,
        message: one_line(&messages, SHOWN_ERROR),
    }
}

/// `s` on one line, at most `max` characters (an ellipsis says it was cut).
fn one_line(s: &str, max: usize) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let mut t: String = flat.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_is_one_short_line() {
        assert_eq!(one_line("a\n  b\tc ", 10), "a b c");
        assert_eq!(one_line(&"x".repeat(20), 5), "xxxxx…");
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
