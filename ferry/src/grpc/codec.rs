//! gRPC's wire details shared by the server and the client: length-prefixed messages (with
//! gzip), `grpc-timeout`, and the status in `grpc-status` / `grpc-message` /
//! `grpc-status-details-bin`.

use std::io::{Read, Write};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::Compression;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::call::{MessageStream, StreamItem};
use crate::http::headers::decode_base64;
use crate::{Code, Metadata, Status};

/// The content type of gRPC requests and responses.
pub(crate) const CONTENT_TYPE: &str = "application/grpc";

/// Characters `grpc-message` must percent-encode: everything outside printable ASCII, and `%`.
const MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// The encodings this implementation reads and writes, as advertised in
/// `grpc-accept-encoding`.
pub(crate) const ACCEPT_ENCODING: &str = "identity,gzip";

/// Whether message bodies are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Gzip,
}

impl Encoding {
    /// The encoding named by a `grpc-encoding` header (absent: identity).
    pub(crate) fn from_header(value: Option<&HeaderValue>) -> Result<Encoding, Status> {
        let Some(value) = value else {
            return Ok(Encoding::Identity);
        };
        match value.as_bytes() {
            b"identity" => Ok(Encoding::Identity),
            b"gzip" => Ok(Encoding::Gzip),
            other => Err(Status::unimplemented(format!(
                "message encoding {:?} is not supported; this server reads {ACCEPT_ENCODING}",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    /// Whether a `grpc-accept-encoding` (or `accept-encoding`) list names gzip.
    pub(crate) fn accepts_gzip(value: Option<&HeaderValue>) -> bool {
        value
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|e| e.trim() == "gzip"))
    }
}

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

/// Prefixes `message` with gRPC's 5-byte header into `out`, compressing it if asked.
pub(crate) fn put_message(out: &mut BytesMut, message: &[u8], encoding: Encoding) {
    let compressed = match encoding {
        Encoding::Identity => None,
        Encoding::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
            // Writing to a Vec cannot fail.
            gz.write_all(message).and_then(|()| gz.finish()).ok()
        }
    };
    let (flag, body) = match &compressed {
        Some(data) => (1u8, data.as_slice()),
        None => (0u8, message),
    };
    out.reserve(5 + body.len());
    out.put_u8(flag);
    out.put_u32(body.len() as u32);
    out.put_slice(body);
}

/// `message` with gRPC's 5-byte header, compressed if asked.
pub(crate) fn frame_message(message: &[u8], encoding: Encoding) -> Bytes {
    let mut out = BytesMut::new();
    put_message(&mut out, message, encoding);
    out.freeze()
}

/// Messages that are ready together are framed into one chunk of up to this many bytes, sent
/// as one HTTP/2 DATA frame: fewer frames and writes, and no floods of tiny frames (HTTP/2
/// peers such as h2 refuse a connection that sends too many small frames too fast).
const BATCH: usize = 16 * 1024;

/// A stream of messages as length-prefixed chunks, each holding every message that was ready
/// (up to [`BATCH`] bytes). Trailers seen in the stream are collected in `trailers`.
pub(crate) struct Batches {
    messages: MessageStream,
    encoding: Encoding,
    /// What ended the stream while a batch was being gathered; reported next.
    ended: Option<Option<Status>>,
    /// Trailers the stream carried.
    pub(crate) trailers: Metadata,
}

impl Batches {
    pub(crate) fn new(messages: MessageStream, encoding: Encoding) -> Batches {
        Batches {
            messages,
            encoding,
            ended: None,
            trailers: Metadata::new(),
        }
    }

    /// The next chunk, the stream's error, or `None` at its end.
    pub(crate) fn poll_batch(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Status>>> {
        if let Some(end) = self.ended.take() {
            return Poll::Ready(end.map(Err));
        }
        let mut out = BytesMut::new();
        loop {
            let polled = match self.messages.poll_next_unpin(cx) {
                Poll::Pending if out.is_empty() => return Poll::Pending,
                Poll::Pending => break,
                Poll::Ready(item) => item,
            };
            match polled {
                Some(Ok(StreamItem::Message(message))) => {
                    put_message(&mut out, &message, self.encoding);
                    if out.len() >= BATCH {
                        break;
                    }
                }
                Some(Ok(StreamItem::Trailers(more))) => self.trailers.extend(more),
                Some(Err(status)) if out.is_empty() => return Poll::Ready(Some(Err(status))),
                None if out.is_empty() => return Poll::Ready(None),
                end => {
                    self.ended = Some(end.and_then(Result::err));
                    break;
                }
            }
        }
        Poll::Ready(Some(Ok(out.freeze())))
    }
}

/// Reads length-prefixed messages out of a body that arrives in chunks of any size.
///
/// Chunks are appended to one growing buffer, so input costs time linear in its size however
/// it is split (one byte per chunk included), and a message is handed out without a copy when
/// it arrived in one chunk.
pub(crate) struct MessageDecoder {
    buf: BytesMut,
    encoding: Encoding,
    limit: usize,
}

impl MessageDecoder {
    /// A decoder for messages of at most `limit` bytes (after decompression).
    pub(crate) fn new(encoding: Encoding, limit: usize) -> MessageDecoder {
        MessageDecoder {
            buf: BytesMut::new(),
            encoding,
            limit,
        }
    }

    /// Adds a chunk of the body.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Whether no partial message is buffered.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes the next whole message, or `None` until more input arrives.
    pub(crate) fn next(&mut self) -> Result<Option<Bytes>, Status> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flag = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.limit {
            return Err(Status::resource_exhausted(format!(
                "message of {len} bytes is larger than the limit of {} bytes",
                self.limit
            )));
        }
        if self.buf.len() < 5 + len {
            // Reserve once for the whole message rather than growing chunk by chunk.
            self.buf.reserve(5 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(5);
        let payload = self.buf.split_to(len).freeze();
        decompress(flag, payload, self.encoding, self.limit).map(Some)
    }
}

/// Splits a whole body into its messages (a unary request or reply).
pub(crate) fn split_messages(
    data: Bytes,
    encoding: Encoding,
    limit: usize,
) -> Result<Vec<Bytes>, Status> {
    let mut data = data;
    let mut messages = Vec::new();
    while data.has_remaining() {
        if data.len() < 5 {
            return Err(truncated());
        }
        let flag = data[0];
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        if len > limit {
            return Err(Status::resource_exhausted(format!(
                "message of {len} bytes is larger than the limit of {limit} bytes"
            )));
        }
        if data.len() < 5 + len {
            return Err(truncated());
        }
        data.advance(5);
        let payload = data.split_to(len);
        messages.push(decompress(flag, payload, encoding, limit)?);
    }
    Ok(messages)
}

/// The status of a body that ends inside a message.
pub(crate) fn truncated() -> Status {
    Status::internal("the body ended in the middle of a length-prefixed message")
}

fn decompress(flag: u8, payload: Bytes, encoding: Encoding, limit: usize) -> Result<Bytes, Status> {
    match (flag, encoding) {
        (0, _) => Ok(payload),
        (1, Encoding::Gzip) => {
            let mut out = Vec::new();
            let read = flate2::read::GzDecoder::new(&payload[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Status::internal(format!("cannot gunzip a message: {e}")))?;
            if read > limit {
                return Err(Status::resource_exhausted(format!(
                    "decompressed message is larger than the limit of {limit} bytes"
                )));
            }
            Ok(Bytes::from(out))
        }
        (1, Encoding::Identity) => Err(Status::internal(
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
