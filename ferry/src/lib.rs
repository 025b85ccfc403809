//! Ferry: RPC for Rust microservices.
//!
//! Write a service once in a `.proto` file, generate a Rust trait and a typed client with
//! `ferry-build`, implement the trait, and serve it:
//!
//! ```no_run
//! # mod calculator { pub struct CalculatorServer; }
//! # async fn demo(service: impl ferry::ServiceHandler) -> std::io::Result<()> {
//! ferry::Server::builder().add_service(service).serve("127.0.0.1:8000").await
//! # }
//! ```
//!
//! The building blocks:
//! - [`Request`], [`Response`], [`Metadata`] and [`Status`]: the protocol-independent call model.
//! - [`Server`]: serves every registered [`ServiceHandler`] on one port.
//! - [`Channel`]: a client connection, shared by generated clients.
//! - [`native`]: Ferry's multiplexed binary protocol.
//! - Microservices: [`discovery`] (static, DNS, etcd), [`balance`] (p2c/peak-EWMA, round robin,
//!   consistent hashing), [`retry`] (budgeted retries), [`hedge`], [`outlier`] (ejection and
//!   health checks); see `docs/microservices.md`.

#![warn(missing_docs)]

pub mod balance;
mod channel;
mod cluster;
pub mod discovery;
pub mod endpoint;
pub mod hedge;
pub mod metadata;
pub mod native;
pub mod outlier;
mod request;
pub mod retry;
mod server;
pub mod service;
mod status;

#[doc(hidden)]
pub mod codegen;

pub use channel::{Channel, ChannelBuilder, ChannelService};
pub use endpoint::{Endpoint, EndpointConfig};
pub use metadata::Metadata;
pub use request::{IntoRequest, Request, Response};
pub use server::{Server, ServerHandle};
pub use service::{Router, ServiceHandler};
pub use status::{Code, Status};

/// Includes the code `ferry-build` generated for a protobuf package.
///
/// ```ignore
/// pub mod calculator {
///     ferry::include_proto!("calculator.v1");
/// }
/// ```
#[macro_export]
macro_rules! include_proto {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}
