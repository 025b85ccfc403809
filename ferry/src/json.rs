//! Canonical proto3 JSON as Ferry's HTTP/JSON protocol writes it, two ways that agree byte for
//! byte:
//!
//! - by reflection, for any message a descriptor pool describes: [`to_vec`] and [`to_value`]
//!   over a prost-reflect `DynamicMessage` (what tools such as the `ferry` CLI use, and the
//!   HTTP path for services without generated code);
//! - straight from and into generated structs, with no reflection: [`encode`] and [`decode`]
//!   over any [`ProtoJson`] message (`ferry-build` implements it for every message), and the
//!   per-method [`JsonCodec`] a generated service hands the HTTP/JSON path.

use prost_reflect::{DynamicMessage, SerializeOptions};

#[doc(hidden)]
pub mod codegen;
mod typed;
mod wkt;

pub use typed::{
    JsonCodec, ProtoJson, decode, decode_request, decode_request_value, encode, encode_response,
};

/// Renders `message` in the canonical proto3 JSON mapping, writing whole-number doubles as
/// integers (`3`, not `3.0`), as Go's protojson and Connect peers do.
///
/// ```
/// # let pool = prost_reflect::DescriptorPool::global();
/// # let desc = pool.get_message_by_name("google.protobuf.DoubleValue").unwrap();
/// let mut message = prost_reflect::DynamicMessage::new(desc);
/// message.set_field_by_name("value", prost_reflect::Value::F64(3.0));
/// let json = ferry::json::to_vec(&message, &Default::default()).unwrap();
/// assert_eq!(json, b"3");
/// ```
pub fn to_vec(
    message: &DynamicMessage,
    options: &SerializeOptions,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(128);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, WholeNumbers);
    message.serialize_with_options(&mut serializer, options)?;
    Ok(out)
}

/// [`to_vec`] as a JSON tree, for callers that format it further.
pub fn to_value(
    message: &DynamicMessage,
    options: &SerializeOptions,
) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::from_slice(&to_vec(message, options)?)
}

/// serde_json's compact format, but whole-number floats are written as integers.
struct WholeNumbers;

/// The largest magnitude at which every integer is exactly representable in an f64 (2^53).
const EXACT: f64 = 9_007_199_254_740_992.0;

impl serde_json::ser::Formatter for WholeNumbers {
    fn write_f64<W: ?Sized + std::io::Write>(&mut self, w: &mut W, v: f64) -> std::io::Result<()> {
        if v.fract() == 0.0 && v.abs() < EXACT {
            self.write_i64(w, v as i64)
        } else {
            serde_json::ser::CompactFormatter.write_f64(w, v)
        }
    }

    fn write_f32<W: ?Sized + std::io::Write>(&mut self, w: &mut W, v: f32) -> std::io::Result<()> {
        if v.fract() == 0.0 && f64::from(v).abs() < EXACT {
            self.write_i64(w, v as i64)
        } else {
            // The shortest text that reads back as this f32 (`0.1`, not `0.10000000149011612`).
            serde_json::ser::CompactFormatter.write_f32(w, v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_doubles_print_as_integers() {
        let v = serde_json::json!({"a": 3.0, "b": [0.5, -2.0, 1e300], "c": "3.0", "d": -0.0});
        let mut out = Vec::new();
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, WholeNumbers);
        serde::Serialize::serialize(&v, &mut serializer).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":3,"b":[0.5,-2,1e+300],"c":"3.0","d":0}"#
        );
        let mut out = Vec::new();
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, WholeNumbers);
        serde::Serialize::serialize(&[0.1f32, 2.0, -1.5e-7], &mut serializer).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "[0.1,2,-1.5e-7]");
    }
}
