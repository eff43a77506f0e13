//! Reading an HTTP body from a registry or token server, which may be hostile: chunk by
//! chunk, refused as soon as it passes a bound, so that nothing over the bound is ever held
//! in memory (a body that claims or sends gigabytes costs at most the bound).

/// Why a body was not read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// More than `limit` bytes (announced by Content-Length, or sent).
    TooLarge { limit: usize },
    /// The connection failed midway.
    Http(reqwest::Error),
}

/// The body of `resp`, at most `limit` bytes.
pub(crate) async fn read_limited(
    resp: &mut reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Http)? {
        if out.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
