//! `Idempotency-Key`: a retried upload gets ids from the key, so its stored results answer it.

use crate::response::ApiError;

/// The request's `Idempotency-Key`, if any (at most 255 visible ASCII characters).
pub(crate) fn idempotency_key(headers: &hyper::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v.to_str().map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1-255 visible ASCII characters",
        ));
    }
    Ok(Some(key.to_string()))
}

/// The job id an `Idempotency-Key` names: `k-` and 32 hex digits of its sha256.
pub(crate) fn keyed_id(key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("k-{hex}")
}
