//! Support code called by `ferry-build`'s generated code. Not part of the stable API.

use std::future::Future;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use prost::Message;

use crate::call::{Body, BoxFuture, CallResult, MessageStream, StreamItem, Streaming};
use crate::{Request, Response, Status};

pub use crate::call::MethodKind;
pub use crate::json::codegen as json;
pub use crate::json::{JsonCodec, ProtoJson};
pub use bytes;
pub use prost;

/// Decodes a request, runs a typed unary handler and encodes its response.
///
/// Decoding happens inside the returned future, so it runs on the handler's task rather than
/// on the connection's reader.
pub fn unary<Req, Resp, Fut>(
    request: Request<Body>,
    handler: impl FnOnce(Request<Req>) -> Fut + Send + 'static,
) -> BoxFuture<CallResult>
where
    Req: Message + Default + 'static,
    Resp: Message,
    Fut: Future<Output = Result<Response<Resp>, Status>> + Send,
{
    Box::pin(async move {
        let decoded = decode_single::<Req>(request).await?;
        let response = handler(decoded).await?;
        Ok(response.map(|m| Body::Message(encode(&m))))
    })
}

/// One request message in, a stream of responses out.
pub fn server_streaming<Req, Resp, S, Fut>(
    request: Request<Body>,
    handler: impl FnOnce(Request<Req>) -> Fut + Send + 'static,
) -> BoxFuture<CallResult>
where
    Req: Message + Default + 'static,
    Resp: Message + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
    Fut: Future<Output = Result<Response<S>, Status>> + Send,
{
    Box::pin(async move {
        let decoded = decode_single::<Req>(request).await?;
        let response = handler(decoded).await?;
        Ok(response.map(encode_stream))
    })
}

/// A stream of requests in, one response out.
pub fn client_streaming<Req, Resp, Fut>(
    request: Request<Body>,
    handler: impl FnOnce(Request<Streaming<Req>>) -> Fut + Send + 'static,
) -> BoxFuture<CallResult>
where
    Req: Message + Default + 'static,
    Resp: Message,
    Fut: Future<Output = Result<Response<Resp>, Status>> + Send,
{
    Box::pin(async move {
        let response = handler(request.map(|body| Streaming::new(body.into_stream()))).await?;
        Ok(response.map(|m| Body::Message(encode(&m))))
    })
}

/// Streams both ways.
pub fn bidi_streaming<Req, Resp, S, Fut>(
    request: Request<Body>,
    handler: impl FnOnce(Request<Streaming<Req>>) -> Fut + Send + 'static,
) -> BoxFuture<CallResult>
where
    Req: Message + Default + 'static,
    Resp: Message + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
    Fut: Future<Output = Result<Response<S>, Status>> + Send,
{
    Box::pin(async move {
        let response = handler(request.map(|body| Streaming::new(body.into_stream()))).await?;
        Ok(response.map(encode_stream))
    })
}

/// A typed response stream as encoded messages.
fn encode_stream<Resp, S>(stream: S) -> Body
where
    Resp: Message + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
{
    Body::Stream(MessageStream::new(
        stream.map(|item| item.map(|m| StreamItem::Message(encode(&m)))),
    ))
}

/// Messages up to this size are encoded into a shared per-thread arena.
const ARENA_MAX_MESSAGE: usize = 4 * 1024;
/// Size of each arena chunk.
const ARENA_CHUNK: usize = 64 * 1024;

thread_local! {
    static ARENA: std::cell::RefCell<bytes::BytesMut> =
        std::cell::RefCell::new(bytes::BytesMut::new());
}

/// Encodes a message into `Bytes`.
///
/// Small messages are carved out of a per-thread 64 KiB arena instead of a fresh allocation
/// each: one allocation then serves many calls. The slices are short-lived (a transport copies
/// them into its write buffer and drops them), so a chunk is freed soon after it fills.
pub fn encode<M: Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    if len > ARENA_MAX_MESSAGE {
        return Bytes::from(message.encode_to_vec());
    }
    ARENA.with_borrow_mut(|arena| {
        if arena.capacity() - arena.len() < len {
            *arena = bytes::BytesMut::with_capacity(ARENA_CHUNK);
        }
        message.encode_raw(arena);
        arena.split().freeze()
    })
}

/// Decodes the single message of an encoded request.
async fn decode_single<T: Message + Default>(request: Request<Body>) -> Result<Request<T>, Status> {
    let bytes = match request.get_ref() {
        Body::Message(bytes) => bytes.clone(),
        Body::Stream(_) => {
            let (request, body) = take_body(request);
            let bytes = body.into_message().await?;
            return decode_bytes(request, bytes);
        }
    };
    decode_bytes(request.map(|_| ()), bytes)
}

fn take_body(request: Request<Body>) -> (Request<()>, Body) {
    let mut body = None;
    let request = request.map(|b| {
        body = Some(b);
    });
    (request, body.unwrap_or_else(Body::empty))
}

fn decode_bytes<T: Message + Default>(
    request: Request<()>,
    bytes: Bytes,
) -> Result<Request<T>, Status> {
    let message = T::decode(bytes).map_err(|e| {
        Status::invalid_argument(format!(
            "cannot decode request for {}: {e}",
            request.method()
        ))
    })?;
    Ok(request.map(|()| message))
}

/// The error for a method the service does not have.
pub fn unimplemented(service: &str, method: &str) -> BoxFuture<CallResult> {
    let status = Status::unimplemented(format!("service {service} has no method {method}"));
    Box::pin(std::future::ready(Err(status)))
}
