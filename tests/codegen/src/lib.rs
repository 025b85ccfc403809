//! A fixture for `ferry-build`: `proto/fixture/v1/fixture.proto` uses nested messages and enums,
//! a `oneof`, maps, repeated fields, `bytes`, `optional`, a well-known type import, a method
//! named after a Rust keyword, a streaming method and several services in one package; `Shapes`
//! holds every JSON field shape (well-known types, wrappers, keyword names, maps with every key
//! kind) for the generated JSON codecs. If the
//! generator mishandles any of these, this crate fails to build or its tests fail.

/// Code generated from `proto/fixture/v1/fixture.proto`.
pub mod pb {
    #![allow(missing_docs)]
    ferry::include_proto!("fixture.v1");
}
