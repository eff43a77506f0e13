//! Pulling from registries (the OCI distribution spec), and what a pull
//! needs around it: image names and short-name resolution, a registries config (mirrors,
//! insecure registries, CA certificates), and credentials in the files podman and docker
//! use.
//!
//! `client.rs` speaks the protocol, on reqwest: `GET /v2/` and its authentication
//! challenge, manifests with an Accept list, blobs with ranges. oci-client did before; it
//! was replaced because it reads every manifest, token response and error body whole
//! before a caller can bound it (a registry streaming an endless body exhausted memory) and
//! sends credentials to whatever token realm a 401 names. Around the protocol:
//! - every body held in memory is read in chunks up to its bound (`body.rs`): manifests
//!   4 MiB, token responses 1 MiB (`token.rs`, which also refuses a plain-http realm for an
//!   https registry), error bodies 64 KiB (the rest is never read);
//! - mirrors, and trying https before plain http for an insecure registry: one client per
//!   endpoint and scheme, tried in order;
//! - blobs are streamed into the content store, which verifies every blob's size and
//!   digest at commit, resumed ones included;
//! - `login` probes `/v2/` with `reqwest` and follows a bearer challenge the same way;
//! - transient failures (5xx, lost connections) are retried with backoff, resuming blobs
//!   where they stopped.

mod auth;
mod body;
mod client;
mod config;
mod pull;
mod reference;
mod token;

pub use auth::{AuthError, AuthStore};
pub use config::{ConfigError, Endpoint, Mirror, RegistriesConfig, RegistryEntry};
pub use pull::{Progress, PullError, PullOptions, Puller};
pub use reference::{ImageName, NameError};
/// The challenge parser and the realm check, public for the fuzz targets: both read what a
/// registry (or whoever answers in its name) sends.
pub use token::{check_realm, parse_challenge, Challenge, TokenError};

pub use crate::platform::Platform;

/// Installs rustls's ring provider once per process (reqwest is built without a default
/// provider).
pub(crate) fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An error and its sources, on one line (a source already in the text is not repeated).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        src = s.source();
    }
    out
}
