//! The request ID: the caller's own when it is a sane one, so a trace can be followed across
//! services, otherwise a fresh UUID.

use http::{HeaderMap, HeaderName, HeaderValue};

/// `X-Request-ID`, and the `x-request-id` metadata of an RPC.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Honour a valid incoming `X-Request-ID`, otherwise make a UUID v4.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let bytes = v.as_bytes();
        if (1..=128).contains(&bytes.len()) && bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return v.clone();
        }
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    // Owned by its `Bytes`: one allocation, and the clones the request's layers take share it
    // instead of each promoting a copied buffer to a shared one.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
        .expect("a UUID is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_rules() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        for bad in ["has space", "", &"x".repeat(129)] {
            let mut h = HeaderMap::new();
            h.insert(&X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let id = request_id(&h);
            assert_eq!(id.len(), 36, "{bad:?} should be replaced by a UUID");
            assert!(uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok());
        }
        let mut h = HeaderMap::new();
        h.insert(
            &X_REQUEST_ID,
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert_eq!(request_id(&h).len(), 36);
    }
}
