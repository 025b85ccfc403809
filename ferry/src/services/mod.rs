//! The standard services every Ferry server offers: [`health`] (`grpc.health.v1.Health`) and
//! [`reflection`] (`grpc.reflection.v1` and `v1alpha`). They are registered like user services,
//! so they pass through the same layers.

pub mod health;
pub mod reflection;
