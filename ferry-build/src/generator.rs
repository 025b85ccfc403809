//! Turns prost's service descriptions into Ferry's trait, server adapter and client.

use std::fmt::Write;
use std::path::PathBuf;

use prost_build::{Method, Service};

pub(crate) struct ServiceGenerator {
    pub build_server: bool,
    pub build_client: bool,
    pub descriptor_path: PathBuf,
    /// Every message and enum, when the JSON mapping is generated.
    pub json: Option<crate::json::Registry>,
}

impl prost_build::ServiceGenerator for ServiceGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let full_name = if service.package.is_empty() {
            service.proto_name.clone()
        } else {
            format!("{}.{}", service.package, service.proto_name)
        };
        let methods: Vec<&Method> = service.methods.iter().collect();
        if methods.is_empty() {
            return;
        }
        if self.build_server {
            generate_trait(&service, &full_name, &methods, buf);
            generate_server(&service, &full_name, &methods, self.json.as_ref(), buf);
        }
        if self.build_client {
            generate_client(&service, &full_name, &methods, buf);
        }
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        if let Some(registry) = &self.json {
            registry.generate_package(package, buf);
        }
        let _ = write!(
            buf,
            "\n/// Encoded `FileDescriptorSet` of every file compiled with this package (for \
             reflection and JSON).\npub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!({:?});\n",
            self.descriptor_path.display().to_string()
        );
    }
}

/// How a method streams: its `MethodKind` variant, and the name of the function that serves it
/// (`ferry::codegen::…`) and calls it (`Channel::…`).
fn shape(m: &Method) -> (&'static str, &'static str) {
    match (m.client_streaming, m.server_streaming) {
        (false, false) => ("Unary", "unary"),
        (true, false) => ("ClientStreaming", "client_streaming"),
        (false, true) => ("ServerStreaming", "server_streaming"),
        (true, true) => ("BidiStreaming", "bidi_streaming"),
    }
}

fn method_path(full_name: &str, m: &Method) -> String {
    format!("/{full_name}/{}", m.proto_name)
}

fn doc(comments: &prost_build::Comments, fallback: &str, indent: u8, buf: &mut String) {
    let before = buf.len();
    comments.append_with_indent(indent, buf);
    if buf.len() == before {
        for _ in 0..indent {
            buf.push_str("    ");
        }
        let _ = writeln!(buf, "/// {fallback}");
    }
}

fn generate_trait(service: &Service, full_name: &str, methods: &[&Method], buf: &mut String) {
    let name = &service.name;
    doc(
        &service.comments,
        &format!(
            "The `{full_name}` service: implement this trait and serve it with [`{name}Server`]."
        ),
        0,
        buf,
    );
    let _ = writeln!(
        buf,
        "pub trait {name}: ::core::marker::Send + ::core::marker::Sync + 'static {{"
    );
    for m in methods {
        doc(
            &m.comments,
            &format!("Handles `{}`.", method_path(full_name, m)),
            1,
            buf,
        );
        let input = if m.client_streaming {
            format!("::ferry::Streaming<{}>", m.input_type)
        } else {
            m.input_type.clone()
        };
        let output = if m.server_streaming {
            format!("::ferry::ResponseStream<{}>", m.output_type)
        } else {
            m.output_type.clone()
        };
        let _ = writeln!(
            buf,
            "    fn {}(\n        &self,\n        request: ::ferry::Request<{input}>,\n    ) -> impl \
             ::core::future::Future<\n        Output = ::core::result::Result<::ferry::Response<{output}>, \
             ::ferry::Status>,\n    > + ::core::marker::Send;",
            m.name
        );
    }
    buf.push_str("}\n\n");
}

fn generate_server(
    service: &Service,
    full_name: &str,
    methods: &[&Method],
    json: Option<&crate::json::Registry>,
    buf: &mut String,
) {
    let name = &service.name;
    let _ = write!(
        buf,
        r#"/// Serves an implementation of [`{name}`]; register it with `ferry::Server::add_service`.
#[derive(Debug)]
pub struct {name}Server<T> {{
    inner: ::std::sync::Arc<T>,
}}

impl<T: {name}> {name}Server<T> {{
    /// Wraps a service implementation.
    pub fn new(inner: T) -> Self {{
        Self::from_arc(::std::sync::Arc::new(inner))
    }}

    /// Wraps a shared service implementation.
    pub fn from_arc(inner: ::std::sync::Arc<T>) -> Self {{
        Self {{ inner }}
    }}
}}

impl<T> ::core::clone::Clone for {name}Server<T> {{
    fn clone(&self) -> Self {{
        Self {{ inner: self.inner.clone() }}
    }}
}}

impl<T: {name}> ::ferry::ServiceHandler for {name}Server<T> {{
    fn name(&self) -> &'static str {{
        {full_name:?}
    }}

    fn file_descriptor_set(&self) -> &'static [u8] {{
        FILE_DESCRIPTOR_SET
    }}

    fn methods(&self) -> &'static [(&'static str, ::ferry::codegen::MethodKind)] {{
        &[
"#
    );
    for m in methods {
        let _ = writeln!(
            buf,
            "            ({:?}, ::ferry::codegen::MethodKind::{}),",
            m.proto_name,
            shape(m).0
        );
    }
    let _ = write!(
        buf,
        r#"        ]
    }}

    fn call(
        &self,
        method: &str,
        request: ::ferry::Request<::ferry::call::Body>,
    ) -> ::ferry::call::BoxFuture<::ferry::call::CallResult> {{
        match method {{
"#
    );
    for m in methods {
        let adapter = shape(m).1;
        let _ = writeln!(
            buf,
            "            {:?} => {{\n                let inner = self.inner.clone();\n                \
             ::ferry::codegen::{adapter}(request, move |r| async move {{ inner.{}(r).await }})\n            }}",
            m.proto_name, m.name
        );
    }
    let _ = write!(
        buf,
        "            _ => ::ferry::codegen::unimplemented({full_name:?}, method),\n        }}\n    }}\n"
    );
    if let Some(registry) = json {
        generate_json_codecs(methods, registry, buf);
    }
    buf.push_str("}\n\n");
}

/// `ServiceHandler::json_codec`: the generated JSON mapping of each method's messages, for
/// every method whose messages hold no `google.protobuf.Any` (those keep the reflection path).
fn generate_json_codecs(methods: &[&Method], registry: &crate::json::Registry, buf: &mut String) {
    let arms: Vec<String> = methods
        .iter()
        .filter(|m| {
            !registry.holds_any(&m.input_proto_type) && !registry.holds_any(&m.output_proto_type)
        })
        .map(|m| {
            format!(
                "            {:?} => ::core::option::Option::Some(::ferry::codegen::JsonCodec::of::<{}, {}>()),\n",
                m.proto_name, m.input_type, m.output_type
            )
        })
        .collect();
    if arms.is_empty() {
        return;
    }
    buf.push_str(
        "\n    fn json_codec(&self, method: &str) -> ::core::option::Option<::ferry::codegen::JsonCodec> {\n        match method {\n",
    );
    for arm in arms {
        buf.push_str(&arm);
    }
    buf.push_str("            _ => ::core::option::Option::None,\n        }\n    }\n");
}

fn generate_client(service: &Service, full_name: &str, methods: &[&Method], buf: &mut String) {
    let name = &service.name;
    let safe = methods
        .iter()
        .filter(|m| {
            !m.client_streaming
                && !m.server_streaming
                && m.options.idempotency_level()
                    == prost_types::method_options::IdempotencyLevel::NoSideEffects
        })
        .map(|m| format!("{:?}", method_path(full_name, m)))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = write!(
        buf,
        r#"/// A typed client for `{full_name}`; cheap to clone, safe to share between tasks.
#[derive(Debug, Clone)]
pub struct {name}Client {{
    channel: ::ferry::Channel,
}}

impl {name}Client {{
    /// The fully qualified service name.
    pub const SERVICE_NAME: &'static str = {full_name:?};

    /// Unary methods marked `option idempotency_level = NO_SIDE_EFFECTS;` in the `.proto`: safe
    /// to hedge, retry or cache (e.g. `ChannelBuilder::hedge_methods(Self::SIDE_EFFECT_FREE_METHODS, ..)`).
    pub const SIDE_EFFECT_FREE_METHODS: &'static [&'static str] = &[{safe}];

    /// A client that calls over `channel`.
    pub fn new(channel: ::ferry::Channel) -> Self {{
        Self {{ channel }}
    }}

    /// Connects to `target` (e.g. `ferry://127.0.0.1:8000`) with default settings.
    pub async fn connect(
        target: impl ::core::convert::Into<::std::string::String>,
    ) -> ::core::result::Result<Self, ::ferry::Status> {{
        ::core::result::Result::Ok(Self::new(::ferry::Channel::connect(target).await?))
    }}

    /// The channel this client calls over.
    pub fn channel(&self) -> &::ferry::Channel {{
        &self.channel
    }}
"#
    );
    for m in methods {
        buf.push('\n');
        doc(
            &m.comments,
            &format!("Calls `{}`.", method_path(full_name, m)),
            1,
            buf,
        );
        let path = method_path(full_name, m);
        let (input, call) = if m.client_streaming {
            (
                format!(
                    "impl ::ferry::IntoStreamingRequest<Message = {}>",
                    m.input_type
                ),
                "::ferry::IntoStreamingRequest::into_streaming_request(request)",
            )
        } else {
            (
                format!("impl ::ferry::IntoRequest<{}>", m.input_type),
                "::ferry::IntoRequest::into_request(request)",
            )
        };
        let output = if m.server_streaming {
            format!("::ferry::Streaming<{}>", m.output_type)
        } else {
            m.output_type.clone()
        };
        let channel_method = shape(m).1;
        let _ = writeln!(
            buf,
            "    pub async fn {}(\n        &self,\n        request: {input},\n    ) -> \
             ::core::result::Result<::ferry::Response<{output}>, ::ferry::Status> {{\n        \
             self.channel\n            .{channel_method}({path:?}, {call})\n            .await\n    }}",
            m.name,
        );
    }
    buf.push_str("}\n\n");
}
