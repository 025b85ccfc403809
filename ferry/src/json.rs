//! Canonical proto3 JSON as Ferry's HTTP/JSON protocol writes it, for tools that render
//! messages the same way (the `ferry` CLI does).

use prost_reflect::{DynamicMessage, SerializeOptions};

/// Renders `message` in the canonical proto3 JSON mapping, writing whole-number doubles as
/// integers (`3`, not `3.0`), as Go's protojson and Connect peers do.
///
/// ```
/// # let pool = prost_reflect::DescriptorPool::global();
/// # let desc = pool.get_message_by_name("google.protobuf.DoubleValue").unwrap();
/// let mut message = prost_reflect::DynamicMessage::new(desc);
/// message.set_field_by_name("value", prost_reflect::Value::F64(3.0));
/// let json = ferry::json::to_value(&message, &Default::default()).unwrap();
/// assert_eq!(json.to_string(), "3");
/// ```
pub fn to_value(
    message: &DynamicMessage,
    options: &SerializeOptions,
) -> Result<serde_json::Value, serde_json::Error> {
    let mut value = message.serialize_with_options(serde_json::value::Serializer, options)?;
    integral_floats_as_integers(&mut value);
    Ok(value)
}

fn integral_floats_as_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64()
                && n.is_f64()
                && f.fract() == 0.0
                && f.abs() < 9_007_199_254_740_992.0
            {
                *n = serde_json::Number::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        serde_json::Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_doubles_print_as_integers() {
        let mut v = serde_json::json!({"a": 3.0, "b": [0.5, -2.0], "c": "3.0"});
        integral_floats_as_integers(&mut v);
        assert_eq!(v.to_string(), r#"{"a":3,"b":[0.5,-2],"c":"3.0"}"#);
    }
}
