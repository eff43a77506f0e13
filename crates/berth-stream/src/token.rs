//! Single-use tokens for pending requests, as the kubelet's request cache: the CRI call
//! stores the request under a fresh random token and answers with a URL that names it; the
//! client's connection takes it out. A token works once and for a short while; the cache
//! holds a bounded number.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

/// Random bytes of a token (128 bits, 22 characters of URL-safe base64).
const TOKEN_BYTES: usize = 16;

/// Why a request could not be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    #[error("too many pending streaming requests (at most {0})")]
    Full(usize),
    #[error("no randomness for a token: {0}")]
    Random(String),
}

struct Entry<T> {
    value: T,
    expires: Instant,
}

/// Pending requests by token.
pub struct RequestCache<T> {
    ttl: Duration,
    max: usize,
    entries: Mutex<HashMap<String, Entry<T>>>,
}

impl<T> RequestCache<T> {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `value` and returns its new token.
    pub fn insert(&self, value: T) -> Result<String, CacheError> {
        self.insert_at(value, Instant::now())
    }

    /// Takes out the value of `token` unless it expired; a token works once.
    pub fn consume(&self, token: &str) -> Option<T> {
        self.consume_at(token, Instant::now())
    }

    /// Whether `token` is pending, without taking it.
    pub fn contains(&self, token: &str) -> bool {
        let now = Instant::now();
        self.lock().get(token).is_some_and(|e| e.expires > now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<T>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert_at(&self, value: T, now: Instant) -> Result<String, CacheError> {
        let mut entries = self.lock();
        if entries.len() >= self.max {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= self.max {
                return Err(CacheError::Full(self.max));
            }
        }
        let token = loop {
            let mut raw = [0u8; TOKEN_BYTES];
            getrandom::fill(&mut raw).map_err(|e| CacheError::Random(e.to_string()))?;
            let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
            if !entries.contains_key(&t) {
                break t;
            }
        };
        entries.insert(
            token.clone(),
            Entry {
                value,
                expires: now + self.ttl,
            },
        );
        Ok(token)
    }

    pub(crate) fn consume_at(&self, token: &str, now: Instant) -> Option<T> {
        let mut entries = self.lock();
        let e = entries.remove(token)?;
        (e.expires > now).then_some(e.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_once() {
        let c = RequestCache::new(Duration::from_secs(60), 10);
        let t = c.insert(7).unwrap();
        assert_eq!(c.consume(&t), Some(7));
        assert_eq!(c.consume(&t), None);
    }

    #[test]
    fn a_token_expires() {
        let c = RequestCache::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        let t = c.insert_at("x", now).unwrap();
        assert_eq!(c.consume_at(&t, now + Duration::from_secs(61)), None);
        // And an expired one is gone, not kept for later.
        assert_eq!(c.consume_at(&t, now), None);
        let t = c.insert_at("y", now).unwrap();
        assert_eq!(c.consume_at(&t, now + Duration::from_secs(59)), Some("y"));
    }

    #[test]
    fn unknown_tokens_find_nothing() {
        let c: RequestCache<u8> = RequestCache::new(Duration::from_secs(60), 10);
        assert_eq!(c.consume(""), None);
        assert_eq!(c.consume("AAAAAAAAAAAAAAAAAAAAAA"), None);
    }

    #[test]
    fn tokens_are_fresh_and_url_safe() {
        let c = RequestCache::new(Duration::from_secs(60), 100);
        let a = c.insert(1).unwrap();
        let b = c.insert(2).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(a
            .bytes()
            .all(|x| x.is_ascii_alphanumeric() || x == b'-' || x == b'_'));
    }

    #[test]
    fn the_cache_is_bounded_but_expired_entries_make_room() {
        let c = RequestCache::new(Duration::from_secs(60), 2);
        let now = Instant::now();
        c.insert_at(1, now).unwrap();
        c.insert_at(2, now).unwrap();
        assert_eq!(c.insert_at(3, now), Err(CacheError::Full(2)));
        assert!(c.insert_at(3, now + Duration::from_secs(61)).is_ok());
    }
}
