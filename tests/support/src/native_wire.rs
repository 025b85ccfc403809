//! A tiny writer and reader of Ferry native-protocol frames, written from `docs/protocol.md`
//! (the runtime's own codec is crate-private), for tests that must put on the wire what no
//! well-behaved client would: a short deadline with no client timer behind it, a bad preface.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The connection preface: magic `F0 "FERRY"`, version 1, flags 0.
pub const PREFACE: [u8; 8] = [0xF0, b'F', b'E', b'R', b'R', b'Y', 1, 0];

/// Frame kind HEADERS.
pub const HEADERS: u8 = 0x01;
/// Frame kind DATA.
pub const DATA: u8 = 0x02;
/// Frame kind STATUS.
pub const STATUS: u8 = 0x03;
/// Frame kind CANCEL.
pub const CANCEL: u8 = 0x04;
/// Frame kind GOAWAY.
pub const GOAWAY: u8 = 0x06;
/// Flag END_STREAM (HEADERS, DATA).
pub const END_STREAM: u8 = 0x01;

/// The status code `DEADLINE_EXCEEDED` as the wire carries it.
pub const DEADLINE_EXCEEDED: u8 = 4;

/// One frame: the 10-byte header (length, kind, flags, stream id) and the payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("a test frame fits in u32");
    let mut out = Vec::with_capacity(10 + payload.len());
    out.extend_from_slice(&length.to_be_bytes());
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Appends `value` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7F) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a varint length and the bytes.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A request HEADERS frame (without END_STREAM): method path, timeout (`None`: no deadline;
/// whole microseconds, at least 1, as clients send it) and metadata.
pub fn headers(
    stream: u32,
    method: &str,
    timeout: Option<Duration>,
    metadata: &[(&str, &[u8])],
) -> Vec<u8> {
    let mut payload = Vec::new();
    put_bytes(&mut payload, method.as_bytes());
    let micros = timeout.map_or(0, |t| {
        u64::try_from(t.as_micros()).unwrap_or(u64::MAX).max(1)
    });
    put_varint(&mut payload, micros);
    put_varint(&mut payload, metadata.len() as u64);
    for (key, value) in metadata {
        put_bytes(&mut payload, key.as_bytes());
        put_bytes(&mut payload, value);
    }
    frame(HEADERS, 0, stream, &payload)
}

/// A DATA frame carrying one message.
pub fn data(stream: u32, message: &[u8], end_stream: bool) -> Vec<u8> {
    let flags = if end_stream { END_STREAM } else { 0 };
    frame(DATA, flags, stream, message)
}

/// A frame as read off the wire.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The frame kind.
    pub kind: u8,
    /// The flags.
    pub flags: u8,
    /// The stream id.
    pub stream: u32,
    /// The payload.
    pub payload: Vec<u8>,
}

/// A STATUS frame's code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusFrame {
    /// The status code.
    pub code: u8,
    /// The message.
    pub message: String,
}

/// Reads a varint at `*at`, advancing it.
fn take_varint(payload: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *payload.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Reads a varint-length string at `*at`, advancing it.
fn take_string(payload: &[u8], at: &mut usize) -> Option<String> {
    let len = usize::try_from(take_varint(payload, at)?).ok()?;
    let bytes = payload.get(*at..at.checked_add(len)?)?;
    *at += len;
    String::from_utf8(bytes.to_vec()).ok()
}

impl Frame {
    /// The code and message, if this is a well-formed STATUS frame.
    pub fn status(&self) -> Option<StatusFrame> {
        if self.kind != STATUS {
            return None;
        }
        let code = *self.payload.first()?;
        let mut at = 1;
        let message = take_string(&self.payload, &mut at)?;
        Some(StatusFrame { code, message })
    }

    /// `(last_stream, code, message)`, if this is a well-formed GOAWAY frame.
    pub fn goaway(&self) -> Option<(u32, u8, String)> {
        if self.kind != GOAWAY {
            return None;
        }
        let last = u32::from_be_bytes(self.payload.get(..4)?.try_into().ok()?);
        let code = *self.payload.get(4)?;
        let mut at = 5;
        let message = take_string(&self.payload, &mut at)?;
        Some((last, code, message))
    }
}

/// A raw native connection: the preface exchanged, then frames written and read by hand.
pub struct Wire {
    stream: TcpStream,
}

impl Wire {
    /// Connects to `addr`, sends the preface and checks the server's.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Wire> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        stream.write_all(&PREFACE).await?;
        let mut preface = [0u8; 8];
        stream.read_exact(&mut preface).await?;
        if preface != PREFACE {
            return Err(std::io::Error::other(format!(
                "the server's preface is {preface:02x?}"
            )));
        }
        Ok(Wire { stream })
    }

    /// Writes `bytes` (frames, or anything else) as they are.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads the next frame.
    pub async fn next_frame(&mut self) -> std::io::Result<Frame> {
        let mut header = [0u8; 10];
        self.stream.read_exact(&mut header).await?;
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let mut payload = vec![0u8; length as usize];
        self.stream.read_exact(&mut payload).await?;
        Ok(Frame {
            kind: header[4],
            flags: header[5],
            stream: u32::from_be_bytes([header[6], header[7], header[8], header[9]]),
            payload,
        })
    }

    /// Reads frames until one for `stream` is a STATUS, skipping the others.
    pub async fn status_of(&mut self, stream: u32) -> std::io::Result<StatusFrame> {
        loop {
            let frame = self.next_frame().await?;
            if frame.stream == stream
                && let Some(status) = frame.status()
            {
                return Ok(status);
            }
        }
    }
}
