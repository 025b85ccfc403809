//! The call model every protocol maps onto: [`Request`] and [`Response`] with their
//! [`Metadata`], the [`Status`] of a failed call, message [`Body`]s and streams, method paths and
//! deadlines. One owner each: every protocol, the client, the server and the tools use these.

mod body;
pub mod deadline;
mod metadata;
mod method;
mod protocol;
mod request;
mod status;

pub use body::{Body, Compress, MessageStream, ResponseStream, StreamItem, Streaming};
pub use metadata::{Metadata, is_valid_key};
pub use method::{MAX_METHOD_PATH_LEN, MethodKind, split_method_path};
pub(crate) use method::{intern, join, unregistered};
pub use protocol::Protocol;
pub use request::{IntoRequest, IntoStreamingRequest, Request, Response};
pub use status::{Code, Status};

/// A boxed, sendable future, as returned by handlers and middleware.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

/// The outcome of one encoded call.
pub type CallResult = Result<Response<Body>, Status>;

/// A type-erased tower service over encoded calls: what a server's layers wrap around its
/// router, and what a [`Channel`](crate::Channel) runs over (one endpoint or a balanced stack).
pub type BoxService = tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Status>;
