//! HTTP bodies: one response body type for every HTTP reply, and bounded request reading.

use std::convert::Infallible;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, BoxStream, StreamExt};
use http::HeaderMap;
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};

use crate::Status;

/// The body of every HTTP response Ferry's server sends.
pub(crate) type ReplyBody = UnsyncBoxBody<Bytes, Infallible>;

/// A body of `data` (if any) followed by `trailers` (if any).
pub(crate) fn reply_body(data: Option<Bytes>, trailers: Option<HeaderMap>) -> ReplyBody {
    // Bodies that know they are complete let hyper end the stream with the headers (what a
    // gRPC trailers-only response needs) or send a content-length.
    match (data, trailers) {
        (None, None) => Empty::new().boxed_unsync(),
        (Some(data), None) => Full::new(data).boxed_unsync(),
        (data, trailers) => frames_body(data, trailers),
    }
}

fn frames_body(data: Option<Bytes>, trailers: Option<HeaderMap>) -> ReplyBody {
    let frames = data
        .into_iter()
        .map(Frame::data)
        .chain(trailers.map(Frame::trailers))
        .map(Ok::<_, Infallible>);
    StreamBody::new(stream::iter(frames.collect::<Vec<_>>())).boxed_unsync()
}

/// A body streaming `frames` as they come.
pub(crate) fn streaming_body(frames: BoxStream<'static, Frame<Bytes>>) -> ReplyBody {
    StreamBody::new(frames.map(Ok::<_, Infallible>)).boxed_unsync()
}

/// What was read from a request or response body.
pub(crate) struct Collected {
    pub data: Bytes,
    pub trailers: Option<HeaderMap>,
}

/// Reads a whole body, failing with `RESOURCE_EXHAUSTED` once it exceeds `limit` bytes.
pub(crate) async fn collect<B>(mut body: B, limit: usize) -> Result<Collected, Status>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut data = BytesMut::new();
    let mut first: Option<Bytes> = None;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| Status::unavailable(format!("reading the body failed: {e}")))?;
        match frame.into_data() {
            Ok(chunk) => {
                let len = first.as_ref().map_or(0, Bytes::len) + data.len() + chunk.len();
                if len > limit {
                    return Err(Status::resource_exhausted(format!(
                        "message larger than the limit of {limit} bytes"
                    )));
                }
                // Keep the common single-chunk body without copying it.
                match first.take() {
                    None if data.is_empty() => first = Some(chunk),
                    Some(prev) => {
                        data.extend_from_slice(&prev);
                        data.extend_from_slice(&chunk);
                    }
                    None => data.extend_from_slice(&chunk),
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    let data = first.unwrap_or_else(|| data.freeze());
    Ok(Collected { data, trailers })
}
