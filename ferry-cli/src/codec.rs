//! JSON ↔ protobuf with dynamic messages (canonical proto3 JSON mapping). Users type and read
//! JSON; every protocol carries protobuf.

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};

use crate::error::{CliResult, Failure};

/// Parses `json` as a `desc` message; errors name the message type.
pub fn parse_json(desc: &MessageDescriptor, json: &str) -> CliResult<DynamicMessage> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let message =
        DynamicMessage::deserialize_with_options(desc.clone(), &mut deserializer, &options())
            .and_then(|m| deserializer.end().map(|()| m))
            .map_err(|e| invalid(desc, e))?;
    Ok(message)
}

/// Reads a parsed JSON value as a `desc` message; errors name the message type.
pub fn parse_value(
    desc: &MessageDescriptor,
    value: serde_json::Value,
) -> CliResult<DynamicMessage> {
    DynamicMessage::deserialize_with_options(desc.clone(), value, &options())
        .map_err(|e| invalid(desc, e))
}

/// The messages of a request stream written as text: JSON documents one after another
/// (newline-delimited or not), where a top-level array stands for its elements.
pub fn parse_json_sequence(desc: &MessageDescriptor, text: &str) -> CliResult<Vec<DynamicMessage>> {
    let mut messages = Vec::new();
    for document in serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>() {
        let document = document.map_err(|e| invalid(desc, e))?;
        for value in split_document(desc, document) {
            messages.push(parse_value(desc, value)?);
        }
    }
    Ok(messages)
}

/// The messages one JSON document of a request stream holds: an array's elements, or the
/// document itself (also when the message type's own JSON form is an array).
pub fn split_document(
    desc: &MessageDescriptor,
    document: serde_json::Value,
) -> Vec<serde_json::Value> {
    let array_typed = matches!(
        desc.full_name(),
        "google.protobuf.ListValue" | "google.protobuf.Value"
    );
    match document {
        serde_json::Value::Array(items) if !array_typed => items,
        document => vec![document],
    }
}

/// The error for JSON that is not a valid `desc`, with the fields it has as a hint.
pub fn invalid(desc: &MessageDescriptor, error: impl std::fmt::Display) -> Failure {
    Failure::usage(format!(
        "invalid JSON for {}: {error}\nfields: {}",
        desc.full_name(),
        field_summary(desc)
    ))
}

fn options() -> DeserializeOptions {
    DeserializeOptions::new().deny_unknown_fields(true)
}

/// `a (double), b (double)` — a hint printed with JSON errors.
fn field_summary(desc: &MessageDescriptor) -> String {
    let fields: Vec<String> = desc
        .fields()
        .map(|f| format!("{} ({})", f.json_name(), crate::describe::field_type(&f)))
        .collect();
    if fields.is_empty() {
        "none".to_owned()
    } else {
        fields.join(", ")
    }
}

/// A message encoded for the wire (protobuf, on every protocol).
pub fn encode(message: &DynamicMessage) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

/// Decodes a reply message.
pub fn decode(desc: &MessageDescriptor, body: Bytes) -> CliResult<DynamicMessage> {
    DynamicMessage::decode(desc.clone(), body).map_err(|e| {
        Failure::from(ferry::Status::internal(format!(
            "the response is not a valid {}: {e}",
            desc.full_name()
        )))
    })
}

/// Canonical proto3 JSON, with whole-number doubles written as integers (`3`, not `3.0`).
pub fn to_json_value(
    message: &DynamicMessage,
    emit_defaults: bool,
) -> CliResult<serde_json::Value> {
    let options = SerializeOptions::new().skip_default_fields(!emit_defaults);
    ferry::json::to_value(message, &options)
        .map_err(|e| Failure::usage(format!("cannot render JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> prost_reflect::DescriptorPool {
        prost_reflect::DescriptorPool::decode(ferry::services::health::pb::FILE_DESCRIPTOR_SET)
            .unwrap()
    }

    #[test]
    fn request_streams_are_json_sequences_or_arrays() {
        let desc = pool()
            .get_message_by_name("grpc.health.v1.HealthCheckRequest")
            .unwrap();
        let services = |text: &str| -> Vec<String> {
            parse_json_sequence(&desc, text)
                .unwrap()
                .iter()
                .map(|m| {
                    to_json_value(m, true).unwrap()["service"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect()
        };
        assert_eq!(
            services("{\"service\":\"a\"}\n{\"service\":\"b\"}\n"),
            ["a", "b"]
        );
        assert_eq!(services("[{\"service\":\"a\"}, {}]"), ["a", ""]);
        assert_eq!(
            services("{\"service\": \"a\"} {\"service\": \"b\"}"),
            ["a", "b"]
        );
        assert!(services(" \n").is_empty());
        let error = parse_json_sequence(&desc, "{\"service\":\"a\"}\n{\"nope\":1}").unwrap_err();
        assert!(
            error
                .message
                .starts_with("invalid JSON for grpc.health.v1.HealthCheckRequest:"),
            "{}",
            error.message
        );
        assert!(parse_json_sequence(&desc, "{\"service\":").is_err());
    }
}
