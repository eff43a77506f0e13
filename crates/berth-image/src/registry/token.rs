//! The bearer-token challenge of the distribution spec: a registry answers 401 with
//! `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`, and the client asks that
//! realm (a token server) for a token, sending the user's credentials if it has any.
//!
//! The realm is a URL the registry (or whoever answers in its name) chooses, so it is
//! checked before anything is sent to it: it must be an http or https URL, and when the
//! registry is reached over https the realm must be https too, or the credentials would
//! cross the network in clear. The token server's answer is read up to
//! [`MAX_TOKEN_RESPONSE`] bytes, never buffered whole first.

use reqwest::Url;
use serde_json::Value;

use super::body::{read_limited, BodyError};

/// The most a token response may hold (real ones are a few KiB).
pub(crate) const MAX_TOKEN_RESPONSE: usize = 1 << 20;

/// What a `WWW-Authenticate` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP basic authentication.
    Basic,
    /// A token from `realm`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Why no token was had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// An https registry whose realm is plain http.
    #[error("the registry names the token realm {realm}: plain http for a registry reached over https; no credentials are sent there")]
    InsecureRealm { realm: String },
    /// A realm that is not an http(s) URL.
    #[error("the registry names the token realm {realm:?}, which is not an http or https URL")]
    BadRealm { realm: String },
    /// HTTP 401 or 403 from the token server.
    #[error("the token server {realm} refused the credentials (HTTP {status})")]
    Refused { realm: String, status: String },
    /// Another HTTP status from the token server.
    #[error("the token server {realm} answered HTTP {status}")]
    Status { realm: String, status: String },
    /// No answer, or a broken one.
    #[error("the token server {realm} is unreachable: {cause}")]
    Unreachable { realm: String, cause: String },
    /// An answer over [`MAX_TOKEN_RESPONSE`].
    #[error("the token server {realm} sent more than {limit} bytes")]
    TooLarge { realm: String, limit: usize },
    /// An answer without a token.
    #[error("the token server {realm} sent no token: {cause}")]
    NoToken { realm: String, cause: String },
}

/// Parses one challenge of a `WWW-Authenticate` value: a scheme, then `key=value` or
/// `key="quoted value"` pairs separated by commas (a quoted value may hold commas, as a
/// scope with several actions does). None for a header that says nothing usable.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = auth_params(rest)?;
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    Some(Challenge::Bearer {
        realm: get("realm")?,
        service: get("service"),
        scope: get("scope"),
    })
}

/// `k=v, k2="v, with comma"` → pairs; None when malformed.
fn auth_params(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_string();
        let after = after.trim_start();
        let (value, after) = if let Some(q) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => value.push(chars.next()?.1),
                    (_, c) => value.push(c),
                }
            };
            (value, &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        if key.is_empty() {
            return None;
        }
        out.push((key, value));
        rest = after.trim_start();
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start(),
            None if rest.is_empty() => {}
            None => return None,
        }
    }
    Some(out)
}

/// The realm as a URL, refused when it is not http(s) or when it would take credentials
/// from an https registry to plain http. `registry_scheme` is the scheme the registry's
/// 401 came over.
pub fn check_realm(registry_scheme: &str, realm: &str) -> Result<Url, TokenError> {
    let url = Url::parse(realm).map_err(|_| TokenError::BadRealm {
        realm: realm.to_string(),
    })?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if registry_scheme == "https" => Err(TokenError::InsecureRealm {
            realm: realm.to_string(),
        }),
        "http" => Ok(url),
        _ => Err(TokenError::BadRealm {
            realm: realm.to_string(),
        }),
    }
}

/// Asks the realm of a bearer challenge for a token with `scope` (the challenge's own when
/// `None`), sending `creds` (user, password) if given. `registry_scheme` is the scheme the
/// challenge came over (see [`check_realm`]).
pub(crate) async fn fetch_token(
    client: &reqwest::Client,
    registry_scheme: &str,
    challenge: (&str, Option<&str>, Option<&str>),
    creds: Option<(&str, &str)>,
) -> Result<String, TokenError> {
    let (realm, service, scope) = challenge;
    let mut url = check_realm(registry_scheme, realm)?;
    let r = || realm.to_string();
    {
        let mut q = url.query_pairs_mut();
        if let Some(s) = service {
            q.append_pair("service", s);
        }
        if let Some(s) = scope {
            q.append_pair("scope", s);
        }
        if let Some((u, _)) = creds {
            q.append_pair("account", u);
        }
    }
    let mut req = client.get(url);
    if let Some((u, p)) = creds {
        req = req.basic_auth(u, Some(p));
    }
    let mut resp = req.send().await.map_err(|e| TokenError::Unreachable {
        realm: r(),
        cause: super::error_chain(&e),
    })?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(TokenError::Refused {
            realm: r(),
            status: status.to_string(),
        });
    }
    if !status.is_success() {
        return Err(TokenError::Status {
            realm: r(),
            status: status.to_string(),
        });
    }
    let body = read_limited(&mut resp, MAX_TOKEN_RESPONSE)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge { limit } => TokenError::TooLarge { realm: r(), limit },
            BodyError::Http(e) => TokenError::Unreachable {
                realm: r(),
                cause: super::error_chain(&e),
            },
        })?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| TokenError::NoToken {
        realm: r(),
        cause: format!("not JSON: {e}"),
    })?;
    v["token"]
        .as_str()
        .or(v["access_token"].as_str())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or_else(|| TokenError::NoToken {
            realm: r(),
            cause: "neither token nor access_token".into(),
        })
}

#[cfg(test)]
mod tests;
