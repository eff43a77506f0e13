//! Pulling from registries (the OCI distribution spec) with `oci-client`, and what a pull
//! needs around it: image names and short-name resolution, a registries config (mirrors,
//! insecure registries, CA certificates), and credentials in the files podman and docker
//! use.
//!
//! `oci-client` speaks the protocol: manifests with an Accept list, blobs with ranges.
//! Where it falls short, this module fills in:
//! - it sends credentials to whatever token realm a 401 names and reads the token
//!   response whole: the challenge is answered here instead (`token.rs`: an https registry
//!   may not name a plain-http realm; the response is read up to 1 MiB), and oci-client is
//!   handed the token;
//! - it has no notion of mirrors, nor of trying https before plain http for an insecure
//!   registry: one client is made per endpoint and scheme, tried in order;
//! - it reads a whole manifest before its size can be checked: the 4 MiB bound is applied
//!   right after, before anything is parsed or stored;
//! - a resumed (ranged) blob is not verified by it: the content store verifies every blob's
//!   size and digest at commit;
//! - it has no call that only checks credentials: `login` probes `/v2/` with `reqwest`
//!   and follows a bearer challenge itself;
//! - it does not retry: transient failures (5xx, lost connections) are retried here with
//!   backoff, resuming blobs where they stopped.

mod auth;
mod body;
mod config;
mod pull;
mod reference;
mod token;

pub use auth::{AuthError, AuthStore};
pub use config::{ConfigError, Endpoint, Mirror, RegistriesConfig, RegistryEntry};
pub use pull::{Progress, PullError, PullOptions, Puller};
pub use reference::{ImageName, NameError};
pub use token::TokenError;

pub use crate::platform::Platform;

/// Installs rustls's ring provider once per process (oci-client and reqwest are built
/// without a default provider).
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
