//! Parsing what people type into query strings and forms. Only the shape is
//! checked here (a whole number where one is needed); the backends own the
//! rules (page sizes, quantities, id formats) and name the field themselves.

use axum::http::HeaderMap;

use crate::errors::AppError;

pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// An optional whole number; absent or empty means `None`.
pub fn optional_int(name: &str, raw: Option<&str>) -> Result<Option<i32>, AppError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| AppError::bad_request(format!("{name} must be a whole number, got {s:?}"))),
    }
}

/// `page`: pages are numbered from 1. Checked here because the product
/// service calls it `page_number`, which the caller never typed.
pub fn page(raw: Option<&str>) -> Result<Option<i32>, AppError> {
    match optional_int("page", raw)? {
        Some(n) if n < 1 => Err(AppError::bad_request(format!(
            "page must be 1 or more (pages are numbered from 1), got {n}"
        ))),
        other => Ok(other),
    }
}

/// `page_size`: 0 or absent asks for the product service's default.
pub fn page_size(raw: Option<&str>) -> Result<i32, AppError> {
    Ok(optional_int("page_size", raw)?.unwrap_or(0))
}

pub fn quantity(raw: &str) -> Result<i32, AppError> {
    optional_int("quantity", Some(raw))?
        .ok_or_else(|| AppError::bad_request("quantity is required: a whole number from 1 to 1000"))
}

/// The body's key, else the `Idempotency-Key` header, else a new one: a
/// client that retries with the same key gets the same order, never two.
pub fn idempotency_key(body: Option<&str>, headers: &HeaderMap) -> Result<String, AppError> {
    if let Some(k) = body.filter(|k| !k.is_empty()) {
        return Ok(k.to_owned());
    }
    match headers.get(IDEMPOTENCY_KEY_HEADER) {
        Some(v) => match v.to_str() {
            Ok(k) if !k.trim().is_empty() => Ok(k.trim().to_owned()),
            Ok(_) => Err(AppError::bad_request("the Idempotency-Key header is empty")),
            Err(_) => Err(AppError::bad_request(
                "the Idempotency-Key header must be printable ASCII",
            )),
        },
        None => Ok(uuid::Uuid::new_v4().to_string()),
    }
}

/// Percent-encodes one path segment (ids come from backends and users).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn numbers_name_their_parameter() {
        assert_eq!(page(None).unwrap(), None);
        assert_eq!(page(Some("2")).unwrap(), Some(2));
        assert!(
            page(Some("0"))
                .unwrap_err()
                .detail
                .starts_with("page must be 1 or more")
        );
        let e = page_size(Some("ten")).unwrap_err();
        assert_eq!(e.detail, "page_size must be a whole number, got \"ten\"");
        assert_eq!(e.http_status(), 400);
        assert_eq!(page_size(Some("")).unwrap(), 0);
        assert!(quantity("").unwrap_err().detail.starts_with("quantity is required"));
        assert!(
            quantity("1.5")
                .unwrap_err()
                .detail
                .starts_with("quantity must be a whole number")
        );
    }

    #[test]
    fn idempotency_key_sources() {
        let mut h = HeaderMap::new();
        assert_eq!(idempotency_key(None, &h).unwrap().len(), 36);
        h.insert(IDEMPOTENCY_KEY_HEADER, HeaderValue::from_static("hdr-1"));
        assert_eq!(idempotency_key(None, &h).unwrap(), "hdr-1");
        assert_eq!(idempotency_key(Some("body-1"), &h).unwrap(), "body-1");
        assert_eq!(idempotency_key(Some(""), &h).unwrap(), "hdr-1");
    }

    #[test]
    fn path_segments() {
        assert_eq!(path_segment("ord-1_a.b~"), "ord-1_a.b~");
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
    }
}
