//! The client side: a [`Channel`] over one [`Endpoint`] or a balanced, resilient stack.
//!
//! - `channel`: [`Channel`] and [`ChannelBuilder`] — what generated clients wrap.
//! - `endpoint`: one remote address, its connection and reconnect backoff, and the protocol
//!   its target's scheme names ([`parse_target`]).
//! - `cluster`: composes the balanced stack from the pieces below.
//! - [`balance`], [`retry`], [`hedge`], [`outlier`]: the resilience policies.

pub mod balance;
mod channel;
mod cluster;
mod endpoint;
pub mod hedge;
pub mod outlier;
pub mod retry;

pub use crate::call::Protocol;
pub use channel::{Channel, ChannelBuilder};
pub use endpoint::{Endpoint, EndpointConfig, parse_target};
