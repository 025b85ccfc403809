//! Enveloped messages, the framing gRPC, gRPC-Web and Connect streaming share: one flags byte,
//! a 4-byte big-endian length, then the message.

use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;

use super::compression::Compression;
use crate::call::{Compress, MessageStream, StreamItem};
use crate::{Metadata, Status};

/// Flag bit: the message is compressed with the stream's encoding (all three protocols).
pub(crate) const COMPRESSED: u8 = 0x01;
/// Flag bit (Connect streaming): this is the end-of-stream message, JSON.
pub(crate) const CONNECT_END_STREAM: u8 = 0x02;
/// Flag bit (gRPC-Web): this is the trailers block, HTTP/1-style header lines.
pub(crate) const GRPC_WEB_TRAILERS: u8 = 0x80;

/// Appends one envelope to `out`.
pub(crate) fn put(out: &mut BytesMut, flags: u8, payload: &[u8]) {
    out.reserve(5 + payload.len());
    out.put_u8(flags);
    out.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.put_slice(payload);
}

/// Messages that are ready together are framed into one chunk of up to this many bytes, sent
/// as one HTTP/2 DATA frame: fewer frames and writes, and no floods of tiny frames (HTTP/2
/// peers such as h2 refuse a connection that sends too many small frames too fast).
const BATCH: usize = 16 * 1024;

/// When a stream's messages are compressed: the reply's [`Compress`] choice (which the stream
/// may change per message), the encoding the peer accepts, and what "auto" means for this
/// protocol and call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CompressPolicy {
    /// The choice in force.
    pub(crate) compress: Compress,
    /// The encoding compressed messages use; identity when the peer accepts none.
    pub(crate) encoding: Compression,
    /// With [`Compress::Auto`], messages of at least this many bytes are compressed; `None`:
    /// none are.
    pub(crate) auto_min: Option<usize>,
}

impl CompressPolicy {
    /// Never compresses.
    pub(crate) fn never() -> CompressPolicy {
        CompressPolicy {
            compress: Compress::Never,
            encoding: Compression::Identity,
            auto_min: None,
        }
    }

    /// Whether a message of `len` bytes is compressed.
    pub(crate) fn applies(&self, len: usize) -> bool {
        if self.encoding == Compression::Identity {
            return false;
        }
        match self.compress {
            Compress::Never => false,
            Compress::Always => true,
            Compress::Auto => self.auto_min.is_some_and(|min| len >= min),
        }
    }

    /// Envelopes one message into `out`, compressed if the policy says so.
    pub(crate) fn put(&self, out: &mut BytesMut, message: &[u8]) {
        if self.applies(message.len()) {
            put(out, COMPRESSED, &self.encoding.compress(message));
        } else {
            put(out, 0, message);
        }
    }
}

/// A stream of messages as enveloped chunks, each holding every message that was ready (up to
/// [`BATCH`] bytes). Trailers seen in the stream are collected in `trailers`.
pub(crate) struct Batches {
    messages: MessageStream,
    policy: CompressPolicy,
    /// What ended the stream while a batch was being gathered; reported next.
    ended: Option<Option<Status>>,
    /// Trailers the stream carried.
    pub(crate) trailers: Metadata,
}

impl Batches {
    pub(crate) fn new(messages: MessageStream, policy: CompressPolicy) -> Batches {
        Batches {
            messages,
            policy,
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
                    self.policy.put(&mut out, &message);
                    if out.len() >= BATCH {
                        break;
                    }
                }
                Some(Ok(StreamItem::Trailers(more))) => self.trailers.extend(more),
                Some(Ok(StreamItem::Compress(compress))) => self.policy.compress = compress,
                Some(Err(status)) if out.is_empty() => return Poll::Ready(Some(Err(status))),
                None if out.is_empty() => return Poll::Ready(None),
                Some(Err(status)) => {
                    self.ended = Some(Some(status));
                    break;
                }
                None => {
                    self.ended = Some(None);
                    break;
                }
            }
        }
        Poll::Ready(Some(Ok(out.freeze())))
    }
}

impl Batches {
    /// The batches as a body: each chunk made a frame by `chunk`, then the last frame, made by
    /// `end` of the trailers and the stream's error (if it failed).
    pub(crate) fn into_frames<C, E>(
        mut self,
        mut chunk: C,
        end: E,
    ) -> futures_util::stream::BoxStream<'static, http_body::Frame<Bytes>>
    where
        C: FnMut(Bytes) -> http_body::Frame<Bytes> + Send + 'static,
        E: FnOnce(Metadata, Option<Status>) -> http_body::Frame<Bytes> + Send + 'static,
    {
        let mut end = Some(end);
        futures_util::stream::poll_fn(move |cx| {
            if end.is_none() {
                return Poll::Ready(None);
            }
            let error = match std::task::ready!(self.poll_batch(cx)) {
                Some(Ok(batch)) => return Poll::Ready(Some(chunk(batch))),
                Some(Err(status)) => Some(status),
                None => None,
            };
            let trailers = std::mem::take(&mut self.trailers);
            Poll::Ready(end.take().map(|finish| finish(trailers, error)))
        })
        .boxed()
    }
}

/// Reads envelopes out of a body that arrives in chunks of any size.
///
/// Chunks are appended to one growing buffer, so input costs time linear in its size however
/// it is split (one byte per chunk included); an envelope is handed out without a copy of its
/// payload once whole.
pub(crate) struct Decoder {
    buf: BytesMut,
    limit: usize,
}

impl Decoder {
    /// A decoder refusing envelopes with payloads over `limit` bytes.
    pub(crate) fn new(limit: usize) -> Decoder {
        Decoder {
            buf: BytesMut::new(),
            limit,
        }
    }

    /// Adds a chunk of the body.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Whether no partial envelope is buffered.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next whole envelope as `(flags, payload)`, or `None` until more input arrives.
    pub(crate) fn next(&mut self) -> Result<Option<(u8, Bytes)>, Status> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.limit {
            return Err(Status::resource_exhausted(format!(
                "message of {len} bytes is larger than the limit of {} bytes",
                self.limit
            )));
        }
        if self.buf.len() < 5 + len {
            // Reserve once for the whole envelope rather than growing chunk by chunk.
            self.buf.reserve(5 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some((flags, self.buf.split_to(len).freeze())))
    }
}

/// The status of a body that ends inside an envelope.
pub(crate) fn truncated() -> Status {
    Status::internal("the body ended in the middle of a length-prefixed message")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_survive_any_chunking() {
        let mut body = BytesMut::new();
        put(&mut body, 0, b"one");
        put(&mut body, COMPRESSED, b"");
        put(&mut body, CONNECT_END_STREAM, b"{}");
        let mut decoder = Decoder::new(1024);
        let mut out = Vec::new();
        for byte in body.iter() {
            decoder.push(&[*byte]);
            while let Some(envelope) = decoder.next().unwrap() {
                out.push(envelope);
            }
        }
        assert!(decoder.is_empty());
        assert_eq!(
            out,
            vec![
                (0, Bytes::from_static(b"one")),
                (COMPRESSED, Bytes::new()),
                (CONNECT_END_STREAM, Bytes::from_static(b"{}")),
            ]
        );
        let mut big = BytesMut::new();
        put(&mut big, 0, &[0; 100]);
        let mut decoder = Decoder::new(10);
        decoder.push(&big);
        assert_eq!(
            decoder.next().unwrap_err().code(),
            crate::Code::ResourceExhausted
        );
    }
}
