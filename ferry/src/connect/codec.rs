//! Message codecs of the HTTP/JSON side: protobuf passes through; JSON follows the canonical
//! proto3 JSON mapping (prost-reflect), with whole-number doubles written as integers
//! ([`crate::json`]). Unknown JSON fields are ignored unless the server rejects them
//! (`Server::reject_unknown_json_fields`), so a client with a newer schema still works.

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};

use super::rest::{set_path, url_query};
use crate::Status;
use crate::json::JsonCodec;

/// How a Connect message is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    Proto,
    Json,
}

impl Codec {
    /// The codec a name (`proto`, `json`) stands for.
    pub(crate) fn from_name(name: &str) -> Option<Codec> {
        match name {
            "proto" | "protobuf" => Some(Codec::Proto),
            "json" => Some(Codec::Json),
            _ => None,
        }
    }

    /// One request message as protobuf.
    pub(crate) fn decode(
        self,
        method: &Transcoder,
        data: Bytes,
        reject_unknown: bool,
    ) -> Result<Bytes, Status> {
        match self {
            Codec::Proto => Ok(data),
            Codec::Json => method.to_proto(&data, "*", &[], "", reject_unknown),
        }
    }

    /// One reply message from protobuf.
    pub(crate) fn encode(self, method: &Transcoder, data: Bytes) -> Result<Bytes, Status> {
        match self {
            Codec::Proto => Ok(data),
            Codec::Json => method.to_json(data),
        }
    }
}

/// JSON ⇄ protobuf for one method: the generated codec when the service has one (straight into
/// and out of the generated structs), else prost-reflect over the descriptors.
#[derive(Clone)]
pub(crate) struct Transcoder {
    pub(crate) input: MessageDescriptor,
    pub(crate) output: MessageDescriptor,
    pub(crate) generated: Option<JsonCodec>,
}

impl Transcoder {
    /// The request as protobuf, from a JSON body, path captures and query parameters.
    pub(crate) fn to_proto(
        &self,
        body: &[u8],
        body_field: &str,
        captures: &[(String, String)],
        query: &str,
        reject_unknown: bool,
    ) -> Result<Bytes, Status> {
        json_to_proto(
            &self.input,
            self.generated.as_ref(),
            body,
            body_field,
            captures,
            query,
            reject_unknown,
        )
    }

    /// The reply as JSON.
    pub(crate) fn to_json(&self, bytes: Bytes) -> Result<Bytes, Status> {
        match &self.generated {
            Some(codec) => (codec.encode_response)(&bytes),
            None => proto_to_json(&self.output, bytes),
        }
    }
}

/// Builds the encoded request from a JSON body, path captures and query parameters.
fn json_to_proto(
    desc: &MessageDescriptor,
    generated: Option<&JsonCodec>,
    body: &[u8],
    body_field: &str,
    captures: &[(String, String)],
    query: &str,
    reject_unknown: bool,
) -> Result<Bytes, Status> {
    let invalid = |e: &dyn std::fmt::Display| {
        Status::invalid_argument(format!("invalid JSON for {}: {e}", desc.full_name()))
    };
    let options = DeserializeOptions::new().deny_unknown_fields(reject_unknown);
    // The common case, a whole-message body and nothing from the path or query: parse it
    // straight into the message, with no intermediate JSON tree.
    let whole_body = body_field == "*" && captures.is_empty();
    if whole_body && let Some(&first) = body.iter().find(|b| !b.is_ascii_whitespace()) {
        if first != b'{' {
            return Err(invalid(&"the body must be a JSON object"));
        }
        if let Some(codec) = generated {
            return (codec.decode_request)(body, reject_unknown);
        }
        let mut parser = serde_json::Deserializer::from_slice(body);
        let message = DynamicMessage::deserialize_with_options(desc.clone(), &mut parser, &options)
            .and_then(|message| parser.end().map(|()| message))
            .map_err(|e| invalid(&e))?;
        return Ok(Bytes::from(message.encode_to_vec()));
    }
    let mut object = serde_json::Map::new();
    if !body_field.is_empty() && !body.iter().all(u8::is_ascii_whitespace) {
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| invalid(&e))?;
        if body_field == "*" {
            match value {
                serde_json::Value::Object(map) => object = map,
                _ => return Err(invalid(&"the body must be a JSON object")),
            }
        } else {
            set_path(&mut object, desc, body_field, value)?;
        }
    }
    for (field, text) in captures {
        set_path(
            &mut object,
            desc,
            field,
            serde_json::Value::String(text.clone()),
        )?;
    }
    if body_field != "*" || body.is_empty() {
        for (key, text) in url_query(query) {
            set_path(&mut object, desc, &key, serde_json::Value::String(text))?;
        }
    }
    if let Some(codec) = generated {
        return (codec.decode_request_value)(serde_json::Value::Object(object), reject_unknown);
    }
    let message = DynamicMessage::deserialize_with_options(
        desc.clone(),
        serde_json::Value::Object(object),
        &options,
    )
    .map_err(|e| invalid(&e))?;
    Ok(Bytes::from(message.encode_to_vec()))
}

/// Renders an encoded message as canonical proto3 JSON.
fn proto_to_json(desc: &MessageDescriptor, bytes: Bytes) -> Result<Bytes, Status> {
    let message = DynamicMessage::decode(desc.clone(), bytes).map_err(|e| {
        Status::internal(format!(
            "the handler's {} did not decode: {e}",
            desc.full_name()
        ))
    })?;
    crate::json::to_vec(&message, &SerializeOptions::new())
        .map(Bytes::from)
        .map_err(|e| Status::internal(format!("cannot render JSON: {e}")))
}
