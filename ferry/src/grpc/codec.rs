//! gRPC's wire details shared by the server and the client: length-prefixed messages (with
//! gzip), `grpc-timeout`, and the status in `grpc-status` / `grpc-message` /
//! `grpc-status-details-bin`.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::http::envelope;
use crate::http::headers::decode_base64;
use crate::{Code, Status};

/// The content type of gRPC requests and responses.
pub(crate) const CONTENT_TYPE: &str = "application/grpc";

/// Characters `grpc-message` must percent-encode: everything outside printable ASCII, and `%`.
const MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// The encodings this implementation reads and writes, as advertised in
/// `grpc-accept-encoding`.
pub(crate) const ACCEPT_ENCODING: &str = crate::http::compression::SUPPORTED;

/// How gRPC messages are compressed (`grpc-encoding`); shared with the other HTTP protocols.
pub(crate) use crate::http::compression::Compression as Encoding;

/// Formats a timeout for the `grpc-timeout` header (at most 8 digits, finest unit that fits).
pub(crate) fn encode_timeout(timeout: Duration) -> String {
    let nanos = timeout.as_nanos();
    const MAX: u128 = 99_999_999;
    for (unit, per) in [
        ('n', 1u128),
        ('u', 1_000),
        ('m', 1_000_000),
        ('S', 1_000_000_000),
        ('M', 60_000_000_000),
    ] {
        let value = nanos.div_ceil(per);
        if value <= MAX {
            return format!("{value}{unit}");
        }
    }
    format!("{}H", nanos.div_ceil(3_600_000_000_000).min(MAX))
}

/// Parses a `grpc-timeout` header value such as `100m` or `5S`.
pub(crate) fn parse_timeout(value: &[u8]) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n.checked_mul(3600)?),
        b"M" => Duration::from_secs(n.checked_mul(60)?),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Reads gRPC messages out of a body that arrives in chunks of any size (see
/// [`envelope::Decoder`]), decompressing each.
pub(crate) struct MessageDecoder {
    envelopes: envelope::Decoder,
    encoding: Encoding,
    limit: usize,
}

impl MessageDecoder {
    /// A decoder for messages of at most `limit` bytes (after decompression).
    pub(crate) fn new(encoding: Encoding, limit: usize) -> MessageDecoder {
        MessageDecoder {
            envelopes: envelope::Decoder::new(limit),
            encoding,
            limit,
        }
    }

    /// Adds a chunk of the body.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.envelopes.push(chunk);
    }

    /// Whether no partial message is buffered.
    pub(crate) fn is_empty(&self) -> bool {
        self.envelopes.is_empty()
    }

    /// Takes the next whole message, or `None` until more input arrives.
    pub(crate) fn next(&mut self) -> Result<Option<Bytes>, Status> {
        match self.envelopes.next()? {
            None => Ok(None),
            Some((flags, payload)) => {
                decompress(flags, payload, self.encoding, self.limit).map(Some)
            }
        }
    }
}

/// Splits a whole body into its messages (a unary request or reply).
pub(crate) fn split_messages(
    data: Bytes,
    encoding: Encoding,
    limit: usize,
) -> Result<Vec<Bytes>, Status> {
    let mut decoder = MessageDecoder::new(encoding, limit);
    decoder.push(&data);
    let mut messages = Vec::new();
    while let Some(message) = decoder.next()? {
        messages.push(message);
    }
    if !decoder.is_empty() {
        return Err(truncated());
    }
    Ok(messages)
}

/// The status of a body that ends inside a message.
pub(crate) use crate::http::envelope::truncated;

fn decompress(flag: u8, payload: Bytes, encoding: Encoding, limit: usize) -> Result<Bytes, Status> {
    match (flag, encoding) {
        (0, _) => Ok(payload),
        (envelope::COMPRESSED, Encoding::Gzip) => encoding.decompress(payload, limit),
        (envelope::COMPRESSED, Encoding::Identity) => Err(Status::internal(
            "a compressed message arrived without a grpc-encoding",
        )),
        (flag, _) => Err(Status::internal(format!(
            "invalid message flag {flag}; expected 0 or 1"
        ))),
    }
}

/// Writes `status` into `headers` (as trailers, or a trailers-only response).
pub(crate) fn put_status(headers: &mut HeaderMap, status: &Status) {
    headers.insert("grpc-status", HeaderValue::from(status.code().as_i32()));
    if !status.message().is_empty() {
        let encoded = utf8_percent_encode(status.message(), MESSAGE_ESCAPES).to_string();
        if let Ok(value) = HeaderValue::from_str(&encoded) {
            headers.insert("grpc-message", value);
        }
    }
    if !status.details().is_empty() {
        let encoded = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            status.details(),
        );
        if let Ok(value) = HeaderValue::from_str(&encoded) {
            headers.insert("grpc-status-details-bin", value);
        }
    }
}

/// Reads a status from trailers (or the headers of a trailers-only response).
pub(crate) fn take_status(headers: &HeaderMap) -> Option<Status> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(|m| percent_decode_str(m).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    let mut status = Status::new(Code::from_i32(code), message);
    if let Some(details) = headers
        .get("grpc-status-details-bin")
        .and_then(|v| decode_base64(v.as_bytes()))
    {
        status = status.with_details(Bytes::from(details));
    }
    Some(status)
}

/// The gRPC code for a non-200 HTTP status without `grpc-status` (per the gRPC HTTP/2 spec).
pub(crate) fn http_status_to_grpc(status: StatusCode) -> Status {
    let code = match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("HTTP status {status} without a gRPC status"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn timeouts_round_trip() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_millis(50),
            Duration::from_secs(5),
            Duration::from_secs(3 * 86_400),
        ] {
            let encoded = encode_timeout(d);
            assert!(encoded.len() <= 9, "{encoded}");
            let parsed = parse_timeout(encoded.as_bytes()).unwrap();
            assert!(parsed >= d, "{d:?} -> {encoded} -> {parsed:?}");
        }
        assert_eq!(parse_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout(b"1n"), Some(Duration::from_nanos(1)));
        assert_eq!(parse_timeout(b"1x"), None);
        assert_eq!(parse_timeout(b"m"), None);
        assert_eq!(parse_timeout(b"+1m"), None);
        assert_eq!(parse_timeout(b"123456789S"), None);
    }

    fn frame_message(message: &[u8], encoding: Encoding) -> Bytes {
        let mut out = BytesMut::new();
        match encoding {
            Encoding::Identity => envelope::put(&mut out, 0, message),
            Encoding::Gzip => {
                envelope::put(&mut out, envelope::COMPRESSED, &encoding.compress(message))
            }
        }
        out.freeze()
    }

    #[test]
    fn messages_frame_and_split() {
        for encoding in [Encoding::Identity, Encoding::Gzip] {
            let mut body = BytesMut::new();
            body.extend_from_slice(&frame_message(b"hello", encoding));
            body.extend_from_slice(&frame_message(b"", encoding));
            let messages = split_messages(body.freeze(), encoding, 1024).unwrap();
            assert_eq!(messages, vec![Bytes::from_static(b"hello"), Bytes::new()]);
        }
        let big = frame_message(&[7u8; 100], Encoding::Identity);
        let err = split_messages(big, Encoding::Identity, 10).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        let truncated = Bytes::from_static(&[0, 0, 0, 0, 9, 1]);
        assert!(split_messages(truncated, Encoding::Identity, 1024).is_err());
    }

    #[test]
    fn the_decoder_takes_any_chunking() {
        let mut body = BytesMut::new();
        for m in [&b"one"[..], b"", b"three"] {
            body.extend_from_slice(&frame_message(m, Encoding::Identity));
        }
        let mut decoder = MessageDecoder::new(Encoding::Identity, 1024);
        let mut out = Vec::new();
        for byte in body.iter() {
            decoder.push(&[*byte]);
            while let Some(m) = decoder.next().unwrap() {
                out.push(m);
            }
        }
        assert!(decoder.is_empty());
        assert_eq!(out, vec![&b"one"[..], b"", b"three"]);
    }

    #[test]
    fn status_survives_trailers() {
        let status = Status::invalid_argument("100% wrong: ünïcode\nnewline")
            .with_details(Bytes::from_static(b"\x00\x01details"));
        let mut headers = HeaderMap::new();
        put_status(&mut headers, &status);
        assert_eq!(take_status(&headers).unwrap(), status);
    }

    #[test]
    fn unsupported_encodings_read_well() {
        let err = Encoding::from_header(Some(&HeaderValue::from_static("snappy"))).unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        assert!(err.message().contains("\"snappy\""), "{err}");
        assert!(!err.message().contains("Ok("), "{err}");
    }
}
