//! Frame codec of the native protocol (see `docs/protocol.md`).
//!
//! Every frame is a 10-byte header — payload length (u32, big-endian), kind (u8), flags (u8),
//! stream id (u32, big-endian) — followed by the payload. Decoding never panics: any malformed
//! input yields a [`FrameError`], after which the connection is closed.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{decode_varint, encode_varint, encoded_len_varint};

use crate::call::is_valid_key;
use crate::{Code, Metadata, Status};

/// The 8-byte connection preface: magic `0xF0 "FERRY"`, version, reserved flags.
pub const PREFACE: [u8; 8] = [0xF0, b'F', b'E', b'R', b'R', b'Y', VERSION, 0];
/// The protocol version this implementation speaks.
pub const VERSION: u8 = 1;
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 10;

/// Flag on HEADERS and DATA: the sender will send nothing more on this stream.
pub const FLAG_END_STREAM: u8 = 0x1;
/// Flag on PING: this is the reply.
pub const FLAG_ACK: u8 = 0x2;

/// Frame kinds on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Opens a stream (request) or carries response metadata.
    Headers = 1,
    /// One message.
    Data = 2,
    /// Ends a stream with a status and trailing metadata (server to client).
    Status = 3,
    /// Abandons a stream, either direction.
    Cancel = 4,
    /// Liveness probe; echoed with the ACK flag.
    Ping = 5,
    /// Graceful shutdown: no streams above the given id will be served.
    GoAway = 6,
    /// Grants flow-control credit for streaming.
    WindowUpdate = 7,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Headers,
            2 => Kind::Data,
            3 => Kind::Status,
            4 => Kind::Cancel,
            5 => Kind::Ping,
            6 => Kind::GoAway,
            7 => Kind::WindowUpdate,
            _ => return None,
        })
    }
}

/// Hard limits enforced while decoding.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest frame payload accepted, in bytes.
    pub max_frame_size: usize,
    /// Largest total of metadata keys and values in one HEADERS or STATUS frame.
    pub max_metadata_size: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame_size: 4 * 1024 * 1024 + 1024,
            max_metadata_size: 16 * 1024,
        }
    }
}

/// Why a byte sequence is not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The connection did not start with the Ferry magic bytes.
    #[error("bad preface: not a Ferry native connection")]
    BadPreface,
    /// The peer speaks a protocol version we do not.
    #[error("unsupported protocol version {0} (this side speaks {VERSION})")]
    UnsupportedVersion(u8),
    /// A frame announced a payload larger than the limit. Nothing was consumed; the header
    /// is intact, so a peer may skip the payload and fail only that stream.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced payload length.
        len: usize,
        /// The configured limit.
        max: usize,
        /// The frame's kind, if it is a known one.
        kind: Option<Kind>,
        /// The frame's stream id.
        stream: u32,
    },
    /// Metadata larger than the limit. The whole frame was consumed, so only its stream fails.
    #[error("metadata of {len} bytes exceeds the limit of {max} bytes")]
    MetadataTooLarge {
        /// Total metadata size.
        len: usize,
        /// The configured limit.
        max: usize,
        /// The frame's stream id.
        stream: u32,
    },
    /// A frame kind this version does not know.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// A payload whose contents contradict its structure.
    #[error("malformed {kind:?} frame: {reason}")]
    Malformed {
        /// Kind of the offending frame.
        kind: Kind,
        /// What was wrong.
        reason: &'static str,
    },
}

/// Request or response metadata carried by a HEADERS frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Full method path (`/package.Service/Method`) as sent, not yet checked (the server
    /// resolves it against its router); empty on response headers.
    pub method: Bytes,
    /// Time the caller grants the call, if any.
    pub timeout: Option<Duration>,
    /// Custom metadata.
    pub metadata: Metadata,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// See [`Kind::Headers`].
    Headers {
        /// Stream id.
        stream: u32,
        /// END_STREAM flag.
        end_stream: bool,
        /// Contents.
        headers: Headers,
    },
    /// See [`Kind::Data`].
    Data {
        /// Stream id.
        stream: u32,
        /// END_STREAM flag.
        end_stream: bool,
        /// Message bytes.
        data: Bytes,
    },
    /// See [`Kind::Status`].
    Status {
        /// Stream id.
        stream: u32,
        /// Outcome of the call; [`Code::Ok`] on success.
        status: Status,
        /// Trailing metadata.
        metadata: Metadata,
    },
    /// See [`Kind::Cancel`].
    Cancel {
        /// Stream id.
        stream: u32,
        /// Why the stream was abandoned.
        code: Code,
    },
    /// See [`Kind::Ping`].
    Ping {
        /// Whether this is the echo.
        ack: bool,
        /// Opaque payload, echoed back.
        payload: u64,
    },
    /// See [`Kind::GoAway`].
    GoAway {
        /// Highest stream id the sender will still serve.
        last_stream: u32,
        /// Why the connection is going away.
        code: Code,
        /// Human-readable reason.
        message: String,
    },
    /// See [`Kind::WindowUpdate`].
    WindowUpdate {
        /// Stream id (0 for the whole connection).
        stream: u32,
        /// Credit granted, in bytes.
        increment: u32,
    },
}

/// Checks a connection preface; `Ok(None)` means more bytes are needed.
pub fn check_preface(buf: &[u8]) -> Result<Option<()>, FrameError> {
    let n = buf.len().min(PREFACE.len());
    if buf[..n.min(6)] != PREFACE[..n.min(6)] {
        return Err(FrameError::BadPreface);
    }
    if buf.len() < PREFACE.len() {
        return Ok(None);
    }
    if buf[6] != VERSION {
        return Err(FrameError::UnsupportedVersion(buf[6]));
    }
    Ok(Some(()))
}

fn put_header(dst: &mut BytesMut, len: usize, kind: Kind, flags: u8, stream: u32) {
    dst.reserve(HEADER_LEN + len);
    dst.put_u32(len as u32);
    dst.put_u8(kind as u8);
    dst.put_u8(flags);
    dst.put_u32(stream);
}

fn bytes_len(n: usize) -> usize {
    encoded_len_varint(n as u64) + n
}

fn put_bytes(dst: &mut BytesMut, b: &[u8]) {
    encode_varint(b.len() as u64, dst);
    dst.put_slice(b);
}

fn metadata_len(md: &Metadata) -> usize {
    encoded_len_varint(md.len() as u64)
        + md.iter()
            .map(|(k, v)| bytes_len(k.len()) + bytes_len(v.len()))
            .sum::<usize>()
}

fn put_metadata(dst: &mut BytesMut, md: &Metadata) {
    encode_varint(md.len() as u64, dst);
    for (k, v) in md.iter() {
        put_bytes(dst, k.as_bytes());
        put_bytes(dst, v);
    }
}

/// Appends a HEADERS frame.
pub fn encode_headers(
    dst: &mut BytesMut,
    stream: u32,
    end_stream: bool,
    method: &[u8],
    timeout: Option<Duration>,
    metadata: &Metadata,
) {
    // Saturate: a timeout beyond u64 microseconds (half a million years) means "no hurry".
    let micros = timeout.map_or(0, |t| {
        u64::try_from(t.as_micros()).unwrap_or(u64::MAX).max(1)
    });
    let len = bytes_len(method.len()) + encoded_len_varint(micros) + metadata_len(metadata);
    let flags = if end_stream { FLAG_END_STREAM } else { 0 };
    put_header(dst, len, Kind::Headers, flags, stream);
    put_bytes(dst, method);
    encode_varint(micros, dst);
    put_metadata(dst, metadata);
}

/// Appends a DATA frame.
pub fn encode_data(dst: &mut BytesMut, stream: u32, end_stream: bool, data: &[u8]) {
    let flags = if end_stream { FLAG_END_STREAM } else { 0 };
    put_header(dst, data.len(), Kind::Data, flags, stream);
    dst.put_slice(data);
}

/// Appends a STATUS frame.
pub fn encode_status(dst: &mut BytesMut, stream: u32, status: &Status, metadata: &Metadata) {
    let len = 1
        + bytes_len(status.message().len())
        + bytes_len(status.details().len())
        + metadata_len(metadata);
    put_header(dst, len, Kind::Status, 0, stream);
    dst.put_u8(status.code() as u8);
    put_bytes(dst, status.message().as_bytes());
    put_bytes(dst, status.details());
    put_metadata(dst, metadata);
}

/// Appends a CANCEL frame.
pub fn encode_cancel(dst: &mut BytesMut, stream: u32, code: Code) {
    put_header(dst, 1, Kind::Cancel, 0, stream);
    dst.put_u8(code as u8);
}

/// Appends a PING frame.
pub fn encode_ping(dst: &mut BytesMut, ack: bool, payload: u64) {
    put_header(dst, 8, Kind::Ping, if ack { FLAG_ACK } else { 0 }, 0);
    dst.put_u64(payload);
}

/// Appends a GOAWAY frame.
pub fn encode_goaway(dst: &mut BytesMut, last_stream: u32, code: Code, message: &str) {
    put_header(dst, 5 + bytes_len(message.len()), Kind::GoAway, 0, 0);
    dst.put_u32(last_stream);
    dst.put_u8(code as u8);
    put_bytes(dst, message.as_bytes());
}

/// Appends a WINDOW_UPDATE frame.
pub fn encode_window_update(dst: &mut BytesMut, stream: u32, increment: u32) {
    put_header(dst, 4, Kind::WindowUpdate, 0, stream);
    dst.put_u32(increment);
}

impl Frame {
    /// Appends this frame's encoding to `dst` (the endpoints encode straight from their own
    /// state with the `encode_*` functions; tests round-trip whole frames).
    #[cfg(test)]
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Frame::Headers {
                stream,
                end_stream,
                headers,
            } => encode_headers(
                dst,
                *stream,
                *end_stream,
                &headers.method,
                headers.timeout,
                &headers.metadata,
            ),
            Frame::Data {
                stream,
                end_stream,
                data,
            } => encode_data(dst, *stream, *end_stream, data),
            Frame::Status {
                stream,
                status,
                metadata,
            } => encode_status(dst, *stream, status, metadata),
            Frame::Cancel { stream, code } => encode_cancel(dst, *stream, *code),
            Frame::Ping { ack, payload } => encode_ping(dst, *ack, *payload),
            Frame::GoAway {
                last_stream,
                code,
                message,
            } => encode_goaway(dst, *last_stream, *code, message),
            Frame::WindowUpdate { stream, increment } => {
                encode_window_update(dst, *stream, *increment)
            }
        }
    }

    /// Decodes one frame from the front of `src`, consuming it.
    ///
    /// Returns `Ok(None)` when `src` does not yet hold a whole frame (nothing is consumed).
    pub fn decode(src: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, FrameError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > limits.max_frame_size {
            return Err(FrameError::FrameTooLarge {
                len,
                max: limits.max_frame_size,
                kind: Kind::from_u8(src[4]),
                stream: u32::from_be_bytes([src[6], src[7], src[8], src[9]]),
            });
        }
        let kind = Kind::from_u8(src[4]).ok_or(FrameError::UnknownKind(src[4]))?;
        if src.len() < HEADER_LEN + len {
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        let flags = src[5];
        let stream = u32::from_be_bytes([src[6], src[7], src[8], src[9]]);
        src.advance(HEADER_LEN);
        let payload = src.split_to(len).freeze();
        decode_payload(kind, flags, stream, payload, limits)
            .map(Some)
            .map_err(|e| match e {
                FrameError::MetadataTooLarge { len, max, .. } => {
                    FrameError::MetadataTooLarge { len, max, stream }
                }
                other => other,
            })
    }
}

struct Reader {
    kind: Kind,
    buf: Bytes,
}

impl Reader {
    fn err(&self, reason: &'static str) -> FrameError {
        FrameError::Malformed {
            kind: self.kind,
            reason,
        }
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        if self.buf.is_empty() {
            return Err(self.err("truncated payload"));
        }
        Ok(self.buf.get_u8())
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        if self.buf.len() < 4 {
            return Err(self.err("truncated payload"));
        }
        Ok(self.buf.get_u32())
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        if self.buf.len() < 8 {
            return Err(self.err("truncated payload"));
        }
        Ok(self.buf.get_u64())
    }

    fn varint(&mut self) -> Result<u64, FrameError> {
        decode_varint(&mut self.buf).map_err(|_| self.err("bad varint"))
    }

    fn bytes(&mut self) -> Result<Bytes, FrameError> {
        let n = self.varint()?;
        if n > self.buf.len() as u64 {
            return Err(self.err("length runs past the end of the frame"));
        }
        Ok(self.buf.split_to(n as usize))
    }

    fn string(&mut self) -> Result<String, FrameError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }

    fn code(&mut self) -> Result<Code, FrameError> {
        // Codes this version does not know read as UNKNOWN, as gRPC does.
        Ok(Code::from_i32(i32::from(self.u8()?)))
    }

    /// Reads metadata; `already` bytes of the frame (the method path) count toward the limit.
    fn metadata(&mut self, limits: &Limits, already: usize) -> Result<Metadata, FrameError> {
        if already > limits.max_metadata_size {
            return Err(FrameError::MetadataTooLarge {
                len: already,
                max: limits.max_metadata_size,
                stream: 0,
            });
        }
        let count = self.varint()?;
        // Each entry needs at least two length bytes, so a count above this is a lie.
        if count > self.buf.len() as u64 / 2 {
            return Err(self.err("metadata count runs past the end of the frame"));
        }
        let mut md = Metadata::new();
        let mut total = already;
        for _ in 0..count {
            let key = self.string()?;
            if !is_valid_key(&key) {
                return Err(self.err("invalid metadata key"));
            }
            let value = self.bytes()?;
            total += key.len() + value.len();
            if total > limits.max_metadata_size {
                return Err(FrameError::MetadataTooLarge {
                    len: total,
                    max: limits.max_metadata_size,
                    stream: 0,
                });
            }
            md.append_raw(key, value);
        }
        Ok(md)
    }

    fn finish(self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.err("trailing bytes after payload"))
        }
    }
}

fn decode_payload(
    kind: Kind,
    flags: u8,
    stream: u32,
    payload: Bytes,
    limits: &Limits,
) -> Result<Frame, FrameError> {
    let mut r = Reader { kind, buf: payload };
    let needs_stream = !matches!(kind, Kind::Ping | Kind::GoAway | Kind::WindowUpdate);
    if needs_stream && stream == 0 {
        return Err(r.err("stream id 0 is reserved for the connection"));
    }
    if matches!(kind, Kind::Ping | Kind::GoAway) && stream != 0 {
        return Err(r.err("connection frame on a stream"));
    }
    let end_stream = flags & FLAG_END_STREAM != 0;
    let frame = match kind {
        Kind::Headers => {
            // The method path counts toward the metadata limit, so a huge path fails its call.
            let method = r.bytes()?;
            let micros = r.varint()?;
            let metadata = r.metadata(limits, method.len())?;
            Frame::Headers {
                stream,
                end_stream,
                headers: Headers {
                    method,
                    timeout: (micros > 0).then(|| Duration::from_micros(micros)),
                    metadata,
                },
            }
        }
        Kind::Data => {
            let data = std::mem::take(&mut r.buf);
            Frame::Data {
                stream,
                end_stream,
                data,
            }
        }
        Kind::Status => {
            let code = r.code()?;
            let message = r.string()?;
            let details = r.bytes()?;
            let metadata = r.metadata(limits, 0)?;
            Frame::Status {
                stream,
                status: Status::new(code, message).with_details(details),
                metadata,
            }
        }
        Kind::Cancel => Frame::Cancel {
            stream,
            code: r.code()?,
        },
        Kind::Ping => Frame::Ping {
            ack: flags & FLAG_ACK != 0,
            payload: r.u64()?,
        },
        Kind::GoAway => Frame::GoAway {
            last_stream: r.u32()?,
            code: r.code()?,
            message: r.string()?,
        },
        Kind::WindowUpdate => Frame::WindowUpdate {
            stream,
            increment: r.u32()?,
        },
    };
    r.finish()?;
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(frame: Frame) {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        let limits = Limits::default();
        // Feeding one byte at a time must yield nothing until the frame is whole.
        let whole = buf.clone();
        let mut partial = BytesMut::new();
        for (i, b) in whole.iter().enumerate() {
            partial.put_u8(*b);
            let got = Frame::decode(&mut partial, &limits).expect("valid frame");
            if i + 1 < whole.len() {
                assert!(got.is_none(), "decoded early at byte {i}");
            } else {
                assert_eq!(got.as_ref(), Some(&frame));
            }
        }
        assert_eq!(Frame::decode(&mut buf, &limits), Ok(Some(frame)));
        assert!(buf.is_empty());
    }

    fn sample_metadata() -> Metadata {
        let mut md = Metadata::new();
        md.insert("x-tenant", "acme");
        md.insert_bin("trace-bin", vec![0, 1, 2, 255]);
        md
    }

    #[test]
    fn every_kind_round_trips() {
        round_trip(Frame::Headers {
            stream: 1,
            end_stream: false,
            headers: Headers {
                method: Bytes::from_static(b"/calculator.v1.Calculator/Add"),
                timeout: Some(Duration::from_millis(1500)),
                metadata: sample_metadata(),
            },
        });
        round_trip(Frame::Headers {
            stream: 3,
            end_stream: true,
            headers: Headers::default(),
        });
        round_trip(Frame::Data {
            stream: 5,
            end_stream: true,
            data: Bytes::from_static(b"\x09\0\0\0\0\0\0\xf0\x3f"),
        });
        round_trip(Frame::Data {
            stream: 5,
            end_stream: false,
            data: Bytes::new(),
        });
        round_trip(Frame::Status {
            stream: 7,
            status: Status::invalid_argument("division by zero")
                .with_details(Bytes::from_static(b"\x01\x02")),
            metadata: sample_metadata(),
        });
        round_trip(Frame::Status {
            stream: 7,
            status: Status::new(Code::Ok, ""),
            metadata: Metadata::new(),
        });
        round_trip(Frame::Cancel {
            stream: 9,
            code: Code::Cancelled,
        });
        round_trip(Frame::Ping {
            ack: true,
            payload: 0xdead_beef,
        });
        round_trip(Frame::GoAway {
            last_stream: 41,
            code: Code::Unavailable,
            message: "server shutting down".into(),
        });
        round_trip(Frame::WindowUpdate {
            stream: 0,
            increment: 65_535,
        });
    }

    #[test]
    fn preface_checks() {
        assert_eq!(check_preface(&PREFACE), Ok(Some(())));
        assert_eq!(check_preface(&PREFACE[..3]), Ok(None));
        assert_eq!(check_preface(b""), Ok(None));
        assert_eq!(
            check_preface(b"GET / HTTP/1.1"),
            Err(FrameError::BadPreface)
        );
        assert_eq!(check_preface(b"\xF0F"), Ok(None));
        assert_eq!(check_preface(b"\xF0X"), Err(FrameError::BadPreface));
        let mut v2 = PREFACE;
        v2[6] = 2;
        assert_eq!(check_preface(&v2), Err(FrameError::UnsupportedVersion(2)));
    }

    fn raw(len: u32, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u32(len);
        b.put_u8(kind);
        b.put_u8(flags);
        b.put_u32(stream);
        b.put_slice(payload);
        b
    }

    #[test]
    fn malformed_frames_are_clean_errors() {
        let limits = Limits {
            max_frame_size: 1024,
            max_metadata_size: 64,
        };
        let decode = |mut b: BytesMut| Frame::decode(&mut b, &limits);
        // Truncated: header only, or partial payload, is simply incomplete.
        assert_eq!(decode(raw(8, 5, 0, 0, &[1, 2])), Ok(None));
        assert_eq!(decode(BytesMut::from(&[0u8, 0, 0][..])), Ok(None));
        // Oversized.
        assert!(matches!(
            decode(raw(5000, 2, 0, 1, &[])),
            Err(FrameError::FrameTooLarge { len: 5000, .. })
        ));
        // Unknown kind.
        assert_eq!(
            decode(raw(0, 0x42, 0, 1, &[])),
            Err(FrameError::UnknownKind(0x42))
        );
        // Lying inner lengths: method length 200 in a 3-byte payload.
        assert!(matches!(
            decode(raw(3, 1, 0, 1, &[200, 1, b'a'])),
            Err(FrameError::Malformed { .. })
        ));
        // Metadata count far larger than the payload could hold.
        assert!(matches!(
            decode(raw(4, 1, 0, 1, &[0, 0, 0x7f, 0])),
            Err(FrameError::Malformed { .. })
        ));
        // Ping with a short payload.
        assert!(matches!(
            decode(raw(2, 5, 0, 0, &[1, 2])),
            Err(FrameError::Malformed { .. })
        ));
        // Trailing bytes.
        assert!(matches!(
            decode(raw(2, 4, 0, 1, &[1, 9])),
            Err(FrameError::Malformed { .. })
        ));
        // Data on stream 0.
        assert!(matches!(
            decode(raw(0, 2, 0, 0, &[])),
            Err(FrameError::Malformed { .. })
        ));
        // A status code this version does not know reads as UNKNOWN (forward compatible).
        match decode(raw(4, 3, 0, 1, &[99, 0, 0, 0])) {
            Ok(Some(Frame::Status { status, .. })) => assert_eq!(status.code(), Code::Unknown),
            other => panic!("expected a STATUS frame, got {other:?}"),
        }
        // Metadata over the limit.
        let mut md = Metadata::new();
        md.insert("k", "v".repeat(100));
        let mut big = BytesMut::new();
        encode_headers(&mut big, 1, false, b"/a/b", None, &md);
        assert!(matches!(
            decode(big),
            Err(FrameError::MetadataTooLarge { .. })
        ));
        // Invalid metadata key.
        let mut b = raw(9, 1, 0, 1, &[0, 0, 1, 3, b'A', b' ', b'B', 1, b'v']);
        assert!(matches!(
            Frame::decode(&mut b, &limits),
            Err(FrameError::Malformed { .. })
        ));
    }

    #[test]
    fn the_method_path_counts_toward_the_metadata_limit() {
        let limits = Limits {
            max_frame_size: 1 << 20,
            max_metadata_size: 64,
        };
        let mut buf = BytesMut::new();
        encode_headers(
            &mut buf,
            1,
            true,
            "/a".repeat(100).as_bytes(),
            None,
            &Metadata::new(),
        );
        assert!(matches!(
            Frame::decode(&mut buf, &limits),
            Err(FrameError::MetadataTooLarge {
                len: 200,
                stream: 1,
                ..
            })
        ));
        assert!(
            buf.is_empty(),
            "the frame is consumed, so only its stream fails"
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let limits = Limits { max_frame_size: 1024, max_metadata_size: 256 };
            let mut buf = BytesMut::from(&data[..]);
            // Decode until an error or until more input is needed; must terminate without panic.
            for _ in 0..data.len() + 1 {
                match Frame::decode(&mut buf, &limits) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
            let _ = check_preface(&data);
        }

        #[test]
        fn random_payloads_for_each_kind_never_panic(
            kind in 1u8..=7,
            flags in any::<u8>(),
            stream in any::<u32>(),
            payload in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let limits = Limits::default();
            let mut buf = raw(payload.len() as u32, kind, flags, stream, &payload);
            let _ = Frame::decode(&mut buf, &limits);
        }

        #[test]
        fn headers_round_trip(
            stream in 1u32..,
            method in "/[a-z.]{1,20}/[A-Za-z]{1,10}",
            micros in 0u64..10_000_000_000,
            entries in proptest::collection::vec(("[a-z][a-z0-9-]{0,10}", "[ -~]{0,20}"), 0..5),
        ) {
            let metadata: Metadata = entries.into_iter().collect();
            let frame = Frame::Headers {
                stream,
                end_stream: false,
                headers: Headers {
                    method: Bytes::from(method),
                    timeout: (micros > 0).then(|| Duration::from_micros(micros)),
                    metadata,
                },
            };
            let mut buf = BytesMut::new();
            frame.encode(&mut buf);
            prop_assert_eq!(Frame::decode(&mut buf, &Limits::default()), Ok(Some(frame)));
        }
    }
}
