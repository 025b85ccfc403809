//! Authentication and authorization (placeholder while building).
