//! Ferry's native multiplexed binary protocol (spec: `docs/protocol.md`).
//!
//! - `frame`: the frame codec and its limits.
//! - `flow`: per-stream flow control (send credit, and granting credit back as messages are
//!   consumed).
//! - `server`: serving one accepted connection.
//! - `client`: one multiplexed client connection per endpoint.

pub(crate) mod client;
pub(crate) mod flow;
pub(crate) mod frame;
pub(crate) mod server;

use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};
use std::sync::LazyLock;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::call::{Body, CallResult};
use crate::{Code, Metadata, Status};
use frame::*;

/// Random per process, so a peer cannot choose stream ids that collide in our tables.
static STREAM_ID_KEYS: LazyLock<(u64, u64)> = LazyLock::new(|| {
    let state = std::collections::hash_map::RandomState::new();
    (state.hash_one(1u64), state.hash_one(2u64) | 1)
});

/// Hashes maps keyed by stream id: a keyed multiply-xorshift, far cheaper than SipHash for a
/// `u32` key, with random keys so that ids picked by a peer do not pile into one bucket.
#[derive(Clone, Copy)]
pub(crate) struct StreamIds {
    seed: u64,
    multiplier: u64,
}

impl Default for StreamIds {
    fn default() -> StreamIds {
        let (seed, multiplier) = *STREAM_ID_KEYS;
        StreamIds { seed, multiplier }
    }
}

impl BuildHasher for StreamIds {
    type Hasher = StreamIdHasher;

    fn build_hasher(&self) -> StreamIdHasher {
        StreamIdHasher {
            state: self.seed,
            multiplier: self.multiplier,
        }
    }
}

/// See [`StreamIds`].
pub(crate) struct StreamIdHasher {
    state: u64,
    multiplier: u64,
}

impl StreamIdHasher {
    fn mix(&mut self, word: u64) {
        let h = (self.state ^ word).wrapping_mul(self.multiplier);
        self.state = h ^ (h >> 29);
    }
}

impl Hasher for StreamIdHasher {
    fn finish(&self) -> u64 {
        self.state
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.mix(u64::from(b));
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.mix(u64::from(id));
    }
}

/// Stop coalescing frames into one write once the buffer holds this much.
const MAX_BATCH: usize = 256 * 1024;

/// The most either end skips of one oversized message (failing only its call) before it gives
/// up on the connection instead: skipping is cheap, but must not let a peer stream unbounded
/// data at us.
pub(crate) const MAX_DISCARD: usize = 64 * 1024 * 1024;

/// Work for a connection's writer; encoded into frames in batches.
pub(crate) enum Outbound {
    /// A request with one message: HEADERS then DATA with END_STREAM.
    Call {
        stream: u32,
        method: Cow<'static, str>,
        timeout: Option<Duration>,
        metadata: Metadata,
        body: Bytes,
    },
    /// Opens a client-streaming or bidirectional call: HEADERS without END_STREAM; messages
    /// follow as [`Outbound::Data`], the end as [`Outbound::HalfClose`].
    Open {
        stream: u32,
        method: Cow<'static, str>,
        timeout: Option<Duration>,
        metadata: Metadata,
    },
    /// Streamed messages, already encoded as DATA frames of `stream`.
    Frames {
        stream: u32,
        frames: Bytes,
    },
    /// The client has no more messages: HEADERS with END_STREAM on an open stream.
    HalfClose {
        stream: u32,
    },
    /// A reply with one message: optional HEADERS, DATA, then STATUS; or STATUS alone on error.
    Reply {
        stream: u32,
        result: CallResult,
    },
    /// The leading metadata of a streamed reply: HEADERS.
    Headers {
        stream: u32,
        metadata: Metadata,
    },
    /// The end of a streamed reply: STATUS with trailers, or the error.
    Status {
        stream: u32,
        outcome: Result<Metadata, Status>,
    },
    /// Grants the peer `increment` more bytes of DATA on `stream`.
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Cancel {
        stream: u32,
        code: Code,
    },
    Ping {
        ack: bool,
        payload: u64,
    },
}

impl Outbound {
    /// The stream this work belongs to (0 for connection-level frames).
    pub(crate) fn stream(&self) -> u32 {
        match self {
            Outbound::Call { stream, .. }
            | Outbound::Open { stream, .. }
            | Outbound::Frames { stream, .. }
            | Outbound::HalfClose { stream }
            | Outbound::Reply { stream, .. }
            | Outbound::Headers { stream, .. }
            | Outbound::Status { stream, .. }
            | Outbound::WindowUpdate { stream, .. }
            | Outbound::Cancel { stream, .. } => *stream,
            Outbound::Ping { .. } => 0,
        }
    }

    pub(crate) fn encode(self, dst: &mut BytesMut) {
        match self {
            Outbound::Call {
                stream,
                method,
                timeout,
                metadata,
                body,
            } => {
                encode_headers(dst, stream, false, method.as_bytes(), timeout, &metadata);
                encode_data(dst, stream, true, &body);
            }
            Outbound::Open {
                stream,
                method,
                timeout,
                metadata,
            } => encode_headers(dst, stream, false, method.as_bytes(), timeout, &metadata),
            Outbound::Frames { frames, .. } => dst.extend_from_slice(&frames),
            Outbound::HalfClose { stream } => {
                encode_headers(dst, stream, true, b"", None, &Metadata::new())
            }
            Outbound::Reply { stream, result } => encode_reply(dst, stream, result),
            Outbound::Headers { stream, metadata } => {
                encode_headers(dst, stream, false, b"", None, &metadata)
            }
            Outbound::Status { stream, outcome } => encode_end(dst, stream, outcome),
            Outbound::WindowUpdate { stream, increment } => {
                encode_window_update(dst, stream, increment)
            }
            Outbound::Cancel { stream, code } => encode_cancel(dst, stream, code),
            Outbound::Ping { ack, payload } => encode_ping(dst, ack, payload),
        }
    }
}

/// Encodes the STATUS that ends a stream: OK with the trailers, or the error.
pub(crate) fn encode_end(dst: &mut BytesMut, stream: u32, outcome: Result<Metadata, Status>) {
    match outcome {
        Ok(trailers) => encode_status(dst, stream, &Status::new(Code::Ok, ""), &trailers),
        Err(status) => encode_status(dst, stream, &status, status.metadata()),
    }
}

/// Encodes a unary reply: optional HEADERS, DATA, then STATUS with the trailers; or STATUS
/// alone on error.
pub(crate) fn encode_reply(dst: &mut BytesMut, stream: u32, result: CallResult) {
    match result {
        Ok(response) => {
            let (metadata, body, trailers) = response.into_wire_parts();
            let Body::Message(body) = body else {
                let status = Status::internal("a unary method answered with a stream");
                encode_status(dst, stream, &status, &Metadata::new());
                return;
            };
            if !metadata.is_empty() {
                encode_headers(dst, stream, false, b"", None, &metadata);
            }
            encode_data(dst, stream, false, &body);
            encode_end(dst, stream, Ok(trailers));
        }
        Err(status) => encode_end(dst, stream, Err(status)),
    }
}

/// Writes the preface, then everything sent on `rx`, coalescing queued frames into one write.
///
/// Ends (shutting down the write half) once every sender is gone and the queue is drained.
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    mut io: W,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    io.write_all(&PREFACE).await?;
    while let Some(first) = rx.recv().await {
        first.encode(&mut buf);
        drain(&mut rx, &mut buf);
        if buf.len() < MAX_BATCH {
            // The task that queued `first` woke us straight away (tokio runs a just-woken task
            // next); let every other runnable task queue its frames too, so they share a write.
            tokio::task::yield_now().await;
            drain(&mut rx, &mut buf);
        }
        io.write_all(&buf).await?;
        buf.clear();
        if buf.capacity() > 4 * MAX_BATCH {
            buf = BytesMut::with_capacity(16 * 1024);
        }
    }
    io.shutdown().await
}

/// Encodes queued work into `buf` until the queue is empty or the batch is full.
fn drain(rx: &mut mpsc::UnboundedReceiver<Outbound>, buf: &mut BytesMut) {
    while buf.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(next) => next.encode(buf),
            Err(_) => break,
        }
    }
}

/// Reads into `buf` until it holds a full preface; checks it. Returns `false` on clean EOF.
pub(crate) async fn read_preface<R: tokio::io::AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
) -> Result<(), crate::Status> {
    use tokio::io::AsyncReadExt;
    loop {
        match check_preface(buf) {
            Ok(Some(())) => {
                bytes::Buf::advance(buf, PREFACE.len());
                return Ok(());
            }
            Ok(None) => {}
            Err(e) => return Err(Status::unavailable(e.to_string())),
        }
        if io.read_buf(buf).await? == 0 {
            return Err(Status::unavailable("connection closed before the preface"));
        }
    }
}
