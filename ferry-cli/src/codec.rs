//! JSON ↔ protobuf with dynamic messages (canonical proto3 JSON mapping).

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};

use crate::error::{CliResult, Failure};

/// Parses `json` as a `desc` message; errors name the message type.
pub fn parse_json(desc: &MessageDescriptor, json: &str) -> CliResult<DynamicMessage> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let message =
        DynamicMessage::deserialize_with_options(desc.clone(), &mut deserializer, &options)
            .and_then(|m| deserializer.end().map(|()| m))
            .map_err(|e| {
                Failure::usage(format!(
                    "invalid JSON for {}: {e}\nfields: {}",
                    desc.full_name(),
                    field_summary(desc)
                ))
            })?;
    Ok(message)
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

/// The request body for the transport: protobuf, or canonical JSON for HTTP.
pub fn encode_request(message: &DynamicMessage, json: bool) -> CliResult<Bytes> {
    if json {
        let value = to_json_value(message, false)?;
        serde_json::to_vec(&value)
            .map(Bytes::from)
            .map_err(|e| Failure::usage(format!("cannot render JSON: {e}")))
    } else {
        Ok(Bytes::from(message.encode_to_vec()))
    }
}

/// Decodes a response body (protobuf, or JSON for HTTP).
pub fn decode_response(
    desc: &MessageDescriptor,
    body: Bytes,
    json: bool,
) -> CliResult<DynamicMessage> {
    let decoded = if json {
        let text = String::from_utf8_lossy(&body);
        let mut deserializer = serde_json::Deserializer::from_str(&text);
        DynamicMessage::deserialize_with_options(
            desc.clone(),
            &mut deserializer,
            &DeserializeOptions::new(),
        )
        .map_err(|e| e.to_string())
    } else {
        DynamicMessage::decode(desc.clone(), body).map_err(|e| e.to_string())
    };
    decoded.map_err(|e| {
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
