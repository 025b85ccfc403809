//! Server reflection (`grpc.reflection.v1` and `v1alpha`), so generic tools can list services
//! and fetch their descriptors, and the descriptor pool the JSON gateway transcodes with.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use prost::Message;
use prost_reflect::DescriptorPool;

use crate::call::{Body, BoxFuture, CallResult, MethodKind, Streaming};
use crate::{Request, Response, ResponseStream, ServiceHandler, Status};

/// Generated messages, trait and client for `grpc.reflection.v1`.
pub mod pb {
    #![allow(missing_docs, clippy::enum_variant_names)]
    crate::include_proto!("grpc.reflection.v1");
}

/// `grpc.reflection.v1alpha`: v1 under its older name, identical on the wire.
pub mod pb_v1alpha {
    #![allow(missing_docs, clippy::enum_variant_names)]
    crate::include_proto!("grpc.reflection.v1alpha");
}

/// The encoded descriptors of Ferry's own services (health, reflection).
pub(crate) const OWN_DESCRIPTORS: &[u8] = pb_v1alpha::FILE_DESCRIPTOR_SET;

/// A `FileDescriptorSet` whose files stay encoded, so options (such as `google.api.http`)
/// reach reflection clients byte for byte. Tools that read descriptors from reflection or
/// from `.proto` files (the `ferry` CLI) use it too.
#[derive(Clone, PartialEq, Message)]
pub struct RawFileSet {
    /// The encoded `FileDescriptorProto`s.
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub file: Vec<Bytes>,
}

/// Every file descriptor the server knows, decoded into a pool and kept encoded.
#[derive(Clone, Debug)]
pub(crate) struct Descriptors {
    /// The pool for lookups and JSON transcoding.
    pub pool: DescriptorPool,
    /// File name → encoded `FileDescriptorProto`.
    raw: HashMap<String, Bytes>,
}

impl Descriptors {
    /// Merges encoded `FileDescriptorSet`s (duplicates across sets are kept once).
    pub(crate) fn build<'a>(
        sets: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Descriptors, String> {
        let mut raw = HashMap::new();
        let mut ordered = RawFileSet::default();
        for set in sets {
            let set = RawFileSet::decode(set).map_err(|e| format!("bad descriptor set: {e}"))?;
            for file in set.file {
                let proto = prost_types::FileDescriptorProto::decode(file.clone())
                    .map_err(|e| format!("bad file descriptor: {e}"))?;
                let name = proto.name().to_owned();
                if let std::collections::hash_map::Entry::Vacant(slot) = raw.entry(name) {
                    slot.insert(file.clone());
                    ordered.file.push(file);
                }
            }
        }
        let pool = DescriptorPool::decode(ordered.encode_to_vec().as_slice())
            .map_err(|e| format!("inconsistent descriptors: {e}"))?;
        Ok(Descriptors { pool, raw })
    }

    /// `name` and its transitive dependencies, encoded, the file itself first.
    fn file_with_deps(&self, name: &str) -> Option<Vec<Bytes>> {
        let file = self.pool.get_file_by_name(name)?;
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut queue = vec![file];
        while let Some(file) = queue.pop() {
            if !seen.insert(file.name().to_owned()) {
                continue;
            }
            if let Some(bytes) = self.raw.get(file.name()) {
                out.push(bytes.clone());
            }
            queue.extend(file.dependencies());
        }
        Some(out)
    }

    /// The file that defines `symbol` (a package, service, method, message, enum or extension).
    fn file_of_symbol(&self, symbol: &str) -> Option<String> {
        let pool = &self.pool;
        if let Some(s) = pool.get_service_by_name(symbol) {
            return Some(s.parent_file().name().to_owned());
        }
        if let Some(m) = pool.get_message_by_name(symbol) {
            return Some(m.parent_file().name().to_owned());
        }
        if let Some(e) = pool.get_enum_by_name(symbol) {
            return Some(e.parent_file().name().to_owned());
        }
        if let Some(e) = pool.get_extension_by_name(symbol) {
            return Some(e.parent_file().name().to_owned());
        }
        let (parent, child) = symbol.rsplit_once('.')?;
        if let Some(s) = pool.get_service_by_name(parent)
            && s.methods().any(|m| m.name() == child)
        {
            return Some(s.parent_file().name().to_owned());
        }
        if let Some(m) = pool.get_message_by_name(parent)
            && m.get_field_by_name(child).is_some()
        {
            return Some(m.parent_file().name().to_owned());
        }
        None
    }
}

/// Answers reflection requests for `services`.
#[derive(Clone)]
pub(crate) struct Reflection {
    descriptors: Arc<Descriptors>,
    services: Arc<Vec<String>>,
}

impl Reflection {
    pub(crate) fn new(descriptors: Arc<Descriptors>, services: Vec<String>) -> Reflection {
        Reflection {
            descriptors,
            services: Arc::new(services),
        }
    }

    /// The v1 service and the same service under its v1alpha name.
    pub(crate) fn services(self) -> (pb::ServerReflectionServer<Reflection>, V1Alpha) {
        let v1 = pb::ServerReflectionServer::new(self);
        (v1.clone(), V1Alpha(v1))
    }

    fn answer(&self, request: pb::ServerReflectionRequest) -> pb::ServerReflectionResponse {
        use pb::server_reflection_request::MessageRequest as Ask;
        use pb::server_reflection_response::MessageResponse as Answer;
        let not_found = |what: String| {
            Answer::ErrorResponse(pb::ErrorResponse {
                error_code: crate::Code::NotFound.as_i32(),
                error_message: what,
            })
        };
        let files = |files: Option<Vec<Bytes>>, what: String| match files {
            Some(files) => Answer::FileDescriptorResponse(pb::FileDescriptorResponse {
                file_descriptor_proto: files.into_iter().map(|b| b.to_vec()).collect(),
            }),
            None => not_found(what),
        };
        let d = &self.descriptors;
        let answer = match &request.message_request {
            Some(Ask::ListServices(_)) => Answer::ListServicesResponse(pb::ListServiceResponse {
                service: self
                    .services
                    .iter()
                    .map(|name| pb::ServiceResponse { name: name.clone() })
                    .collect(),
            }),
            Some(Ask::FileByFilename(name)) => {
                files(d.file_with_deps(name), format!("no file {name:?}"))
            }
            Some(Ask::FileContainingSymbol(symbol)) => files(
                d.file_of_symbol(symbol).and_then(|f| d.file_with_deps(&f)),
                format!("no symbol {symbol:?}"),
            ),
            Some(Ask::FileContainingExtension(ext)) => {
                let found = d
                    .pool
                    .get_message_by_name(&ext.containing_type)
                    .and_then(|m| {
                        m.extensions()
                            .find(|e| e.number() as i32 == ext.extension_number)
                    })
                    .and_then(|e| d.file_with_deps(e.parent_file().name()));
                files(
                    found,
                    format!(
                        "no extension {} of {:?}",
                        ext.extension_number, ext.containing_type
                    ),
                )
            }
            Some(Ask::AllExtensionNumbersOfType(name)) => match d.pool.get_message_by_name(name) {
                Some(m) => Answer::AllExtensionNumbersResponse(pb::ExtensionNumberResponse {
                    base_type_name: name.clone(),
                    extension_number: m.extensions().map(|e| e.number() as i32).collect(),
                }),
                None => not_found(format!("no message type {name:?}")),
            },
            None => Answer::ErrorResponse(pb::ErrorResponse {
                error_code: crate::Code::InvalidArgument.as_i32(),
                error_message: "empty reflection request".into(),
            }),
        };
        pb::ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(answer),
        }
    }
}

impl pb::ServerReflection for Reflection {
    async fn server_reflection_info(
        &self,
        request: Request<Streaming<pb::ServerReflectionRequest>>,
    ) -> Result<Response<ResponseStream<pb::ServerReflectionResponse>>, Status> {
        // One answer per request, in order, until the client half-closes.
        let reflection = self.clone();
        let answers = request
            .into_inner()
            .map(move |item| item.map(|request| reflection.answer(request)));
        Ok(Response::new(ResponseStream::new(answers)))
    }
}

/// `grpc.reflection.v1alpha.ServerReflection`, answered by the v1 service (same wire format).
#[derive(Clone)]
pub(crate) struct V1Alpha(pb::ServerReflectionServer<Reflection>);

impl ServiceHandler for V1Alpha {
    fn name(&self) -> &'static str {
        pb_v1alpha::ServerReflectionClient::SERVICE_NAME
    }

    fn file_descriptor_set(&self) -> &'static [u8] {
        pb_v1alpha::FILE_DESCRIPTOR_SET
    }

    fn methods(&self) -> &'static [(&'static str, MethodKind)] {
        self.0.methods()
    }

    fn call(&self, method: &str, request: Request<Body>) -> BoxFuture<CallResult> {
        self.0.call(method, request)
    }
}
