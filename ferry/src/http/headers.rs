//! Call metadata ⇄ HTTP headers, shared by gRPC and the Connect protocol.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::Metadata;

/// Headers that belong to the protocol, not to the call's metadata.
pub(crate) fn is_reserved(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "content-length"
            | "content-encoding"
            | "accept"
            | "accept-encoding"
            | "te"
            | "host"
            | "connection"
            | "transfer-encoding"
            | "keep-alive"
            | "upgrade"
            | "date"
            | "trailer"
            | "connect-protocol-version"
            | "connect-timeout-ms"
    ) || name.starts_with("grpc-")
}

/// Call metadata from HTTP headers (`-bin` values base64-decoded).
pub(crate) fn headers_to_metadata(headers: &HeaderMap) -> Metadata {
    let mut metadata = Metadata::new();
    for (name, value) in headers {
        let key = name.as_str();
        if is_reserved(key) {
            continue;
        }
        if key.ends_with("-bin") {
            if let Some(bytes) = decode_base64(value.as_bytes()) {
                metadata.insert_bin(key, bytes);
            }
        } else if let Ok(text) = value.to_str() {
            metadata.append(key, text);
        }
    }
    metadata
}

/// HTTP headers from call metadata (`-bin` values base64-encoded); invalid entries are skipped.
pub(crate) fn metadata_to_headers(metadata: &Metadata, headers: &mut HeaderMap) {
    put_metadata(metadata, headers, "");
}

/// Like [`metadata_to_headers`], with every header name prefixed (Connect sends a unary
/// response's trailers as `trailer-…` headers).
pub(crate) fn put_metadata(metadata: &Metadata, headers: &mut HeaderMap, prefix: &str) {
    for (key, value) in metadata.iter() {
        let name = if prefix.is_empty() {
            HeaderName::from_bytes(key.as_bytes())
        } else {
            HeaderName::from_bytes(format!("{prefix}{key}").as_bytes())
        };
        let Ok(name) = name else {
            continue;
        };
        let value = if key.ends_with("-bin") {
            let encoded =
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD_NO_PAD, value);
            HeaderValue::from_str(&encoded)
        } else {
            HeaderValue::from_bytes(value)
        };
        if let Ok(value) = value {
            headers.append(name, value);
        }
    }
}

/// Decodes base64 with or without padding, as gRPC peers send both.
pub(crate) fn decode_base64(value: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let trimmed = value
        .strip_suffix(b"==")
        .or_else(|| value.strip_suffix(b"="))
        .unwrap_or(value);
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .ok()
}
