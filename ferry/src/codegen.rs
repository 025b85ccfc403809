//! Support code called by `ferry-build`'s generated code. Not part of the stable API.

use bytes::Bytes;
use prost::Message;

use crate::service::{BoxFuture, RawResult};
use crate::{Request, Response, Status};

pub use bytes;
pub use prost;

/// Decodes a request, runs a typed unary handler and encodes its response.
///
/// Decoding happens inside the returned future, so it runs on the handler's task rather than
/// on the connection's reader.
pub fn unary<Req, Resp, Fut>(
    request: Request<Bytes>,
    handler: impl FnOnce(Request<Req>) -> Fut + Send + 'static,
) -> BoxFuture<RawResult>
where
    Req: Message + Default + 'static,
    Resp: Message,
    Fut: std::future::Future<Output = Result<Response<Resp>, Status>> + Send,
{
    Box::pin(async move {
        let decoded = decode_request::<Req>(request)?;
        let response = handler(decoded).await?;
        Ok(response.map(|m| encode(&m)))
    })
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

/// Decodes the message of an encoded request.
pub fn decode_request<T: Message + Default>(request: Request<Bytes>) -> Result<Request<T>, Status> {
    let bytes = request.get_ref().clone();
    let message = T::decode(bytes).map_err(|e| {
        Status::invalid_argument(format!(
            "cannot decode request for {}: {e}",
            request.method()
        ))
    })?;
    Ok(request.map(|_| message))
}

/// The error for a method the service does not have.
pub fn unimplemented(service: &str, method: &str) -> BoxFuture<RawResult> {
    let status = Status::unimplemented(format!("service {service} has no method {method}"));
    Box::pin(std::future::ready(Err(status)))
}
