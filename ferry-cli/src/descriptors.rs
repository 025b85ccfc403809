//! Where message types come from: gRPC server reflection, or `.proto` files compiled in-process
//! with protox.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use ferry::{Channel, Code, Metadata, Request, Status};
use prost::Message;
use prost_reflect::{DescriptorPool, MethodDescriptor};

use crate::error::{CliResult, Failure};

/// The reflection protocol's messages (the subset the CLI uses; v1 and v1alpha share them).
mod pb {
    #![allow(clippy::enum_variant_names)]
    use bytes::Bytes;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerReflectionRequest {
        #[prost(string, tag = "1")]
        pub host: String,
        #[prost(oneof = "MessageRequest", tags = "3, 4, 7")]
        pub message_request: Option<MessageRequest>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum MessageRequest {
        #[prost(string, tag = "3")]
        FileByFilename(String),
        #[prost(string, tag = "4")]
        FileContainingSymbol(String),
        #[prost(string, tag = "7")]
        ListServices(String),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerReflectionResponse {
        #[prost(string, tag = "1")]
        pub valid_host: String,
        #[prost(oneof = "MessageResponse", tags = "4, 6, 7")]
        pub message_response: Option<MessageResponse>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum MessageResponse {
        #[prost(message, tag = "4")]
        FileDescriptorResponse(FileDescriptorResponse),
        #[prost(message, tag = "6")]
        ListServicesResponse(ListServiceResponse),
        #[prost(message, tag = "7")]
        ErrorResponse(ErrorResponse),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FileDescriptorResponse {
        #[prost(bytes = "bytes", repeated, tag = "1")]
        pub file_descriptor_proto: Vec<Bytes>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListServiceResponse {
        #[prost(message, repeated, tag = "1")]
        pub service: Vec<ServiceResponse>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServiceResponse {
        #[prost(string, tag = "1")]
        pub name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ErrorResponse {
        #[prost(int32, tag = "1")]
        pub error_code: i32,
        #[prost(string, tag = "2")]
        pub error_message: String,
    }
}

/// A `FileDescriptorSet` whose files stay encoded, so custom options survive.
#[derive(Clone, PartialEq, Message)]
struct RawFileSet {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    file: Vec<Bytes>,
}

/// `google/api/*.proto`, importable by `--proto` files without vendoring them.
const BUNDLED_PROTOS: [(&str, &str); 2] = [
    (
        "google/api/annotations.proto",
        include_str!("../../ferry-build/proto/google/api/annotations.proto"),
    ),
    (
        "google/api/http.proto",
        include_str!("../../ferry-build/proto/google/api/http.proto"),
    ),
];

/// Descriptors for a command: from `.proto` files or from the server.
pub enum Source {
    /// Compiled from `--proto` files.
    Files(DescriptorPool),
    /// Asked of the server.
    Reflection(Reflector),
}

impl Source {
    /// `--proto` files if any were given, otherwise server reflection over `channel()`.
    pub async fn new<F, Fut>(
        protos: &[PathBuf],
        includes: &[PathBuf],
        channel: F,
    ) -> CliResult<Source>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = CliResult<(Channel, Metadata, Duration)>>,
    {
        if protos.is_empty() {
            let (channel, metadata, timeout) = channel().await?;
            Ok(Source::Reflection(Reflector::new(
                channel, metadata, timeout,
            )))
        } else {
            compile_protos(protos, includes).map(Source::Files)
        }
    }

    /// A pool that contains `symbol` (a service, method, message or enum full name).
    pub async fn pool_for(&self, symbol: &str) -> CliResult<DescriptorPool> {
        match self {
            Source::Files(pool) => Ok(pool.clone()),
            Source::Reflection(reflector) => reflector.pool_for(symbol).await,
        }
    }

    /// Every service's full name, sorted.
    pub async fn services(&self) -> CliResult<Vec<String>> {
        match self {
            Source::Files(pool) => {
                let mut names: Vec<String> =
                    pool.services().map(|s| s.full_name().to_owned()).collect();
                names.sort();
                Ok(names)
            }
            Source::Reflection(reflector) => reflector.list_services().await,
        }
    }
}

/// Serves the bundled `google/api` protos from memory.
struct BundledProtos;

impl protox::file::FileResolver for BundledProtos {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match BUNDLED_PROTOS.iter().find(|(file, _)| *file == name) {
            Some((file, text)) => protox::file::File::from_source(file, text),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Compiles `.proto` files with protox; `google/api/annotations.proto` is always importable.
pub fn compile_protos(protos: &[PathBuf], includes: &[PathBuf]) -> CliResult<DescriptorPool> {
    use protox::file::{ChainFileResolver, GoogleFileResolver, IncludeFileResolver};
    if let Some(missing) = protos.iter().find(|p| !p.is_file()) {
        return Err(Failure::usage(format!(
            "--proto {}: no such file",
            missing.display()
        )));
    }
    let mut search: Vec<PathBuf> = includes.to_vec();
    if search.is_empty() {
        // Without -I, each file's own directory is the import root.
        for proto in protos {
            let dir = proto.parent().map(PathBuf::from).unwrap_or_default();
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            };
            if !search.contains(&dir) {
                search.push(dir);
            }
        }
    }
    let mut resolver = ChainFileResolver::new();
    for dir in search {
        resolver.add(IncludeFileResolver::new(dir));
    }
    resolver.add(GoogleFileResolver::new());
    resolver.add(BundledProtos);
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true).include_source_info(true);
    compiler
        .open_files(protos)
        .map_err(|e| Failure::usage(format!("cannot compile the protos: {e}")))?;
    let encoded = compiler.encode_file_descriptor_set();
    DescriptorPool::decode(encoded.as_slice())
        .map_err(|e| Failure::usage(format!("inconsistent descriptors: {e}")))
}

/// A gRPC server reflection client (v1, falling back to v1alpha).
pub struct Reflector {
    channel: Channel,
    metadata: Metadata,
    timeout: Duration,
    version: std::sync::Mutex<&'static str>,
}

impl Reflector {
    /// A client over a gRPC channel; `metadata` goes with every request.
    pub fn new(channel: Channel, metadata: Metadata, timeout: Duration) -> Reflector {
        Reflector {
            channel,
            metadata,
            timeout,
            version: std::sync::Mutex::new("v1"),
        }
    }

    /// One request, one response (the stream is half-closed after the request).
    async fn ask(&self, message_request: pb::MessageRequest) -> CliResult<pb::MessageResponse> {
        let message = pb::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(message_request),
        };
        let encoded = Bytes::from(message.encode_to_vec());
        let current = *self.version.lock().unwrap_or_else(|e| e.into_inner());
        let mut versions = vec![current];
        if current == "v1" {
            versions.push("v1alpha");
        }
        let mut last = Status::unimplemented("the server does not serve reflection");
        for version in versions {
            let mut request = Request::new(ferry::call::Body::Message(encoded.clone()));
            request.set_method(format!(
                "/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
            ));
            *request.metadata_mut() = self.metadata.clone();
            request.set_timeout(self.timeout);
            match self.channel.call(request).await {
                Ok(response) => {
                    *self.version.lock().unwrap_or_else(|e| e.into_inner()) = version;
                    let bytes = response.into_inner().into_message().await?;
                    let reply = pb::ServerReflectionResponse::decode(bytes).map_err(|e| {
                        Failure::from(Status::internal(format!(
                            "undecodable reflection response: {e}"
                        )))
                    })?;
                    return reply.message_response.ok_or_else(|| {
                        Failure::from(Status::internal("empty reflection response"))
                    });
                }
                Err(status) if status.code() == Code::Unimplemented => last = status,
                Err(status) => return Err(status.into()),
            }
        }
        Err(Failure::from(Status::new(
            last.code(),
            format!(
                "server reflection is not available ({}); pass --proto FILE -I DIR instead",
                last.message()
            ),
        )))
    }

    /// The services the server lists.
    pub async fn list_services(&self) -> CliResult<Vec<String>> {
        match self
            .ask(pb::MessageRequest::ListServices(String::new()))
            .await?
        {
            pb::MessageResponse::ListServicesResponse(list) => {
                let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
                names.sort();
                Ok(names)
            }
            other => Err(unexpected(other)),
        }
    }

    /// The files defining `symbol` and all their imports, as a pool.
    pub async fn pool_for(&self, symbol: &str) -> CliResult<DescriptorPool> {
        let mut files: BTreeMap<String, Bytes> = BTreeMap::new();
        // A method's symbol may not be indexed: fall back to its service, then its package.
        let mut lookup = symbol.trim_start_matches('.').to_owned();
        let first = loop {
            match self
                .ask(pb::MessageRequest::FileContainingSymbol(lookup.clone()))
                .await?
            {
                pb::MessageResponse::FileDescriptorResponse(r) => break r,
                pb::MessageResponse::ErrorResponse(e) => match lookup.rsplit_once('.') {
                    Some((parent, _)) if e.error_code == Code::NotFound.as_i32() => {
                        lookup = parent.to_owned();
                    }
                    _ => {
                        return Err(Failure::usage(format!(
                            "the server does not know the symbol {symbol:?}: {}",
                            e.error_message
                        )));
                    }
                },
                other => return Err(unexpected(other)),
            }
        };
        let mut pending: Vec<Bytes> = first.file_descriptor_proto;
        let mut asked = HashSet::new();
        while let Some(raw) = pending.pop() {
            let file = prost_types::FileDescriptorProto::decode(raw.clone()).map_err(|e| {
                Failure::from(Status::internal(format!(
                    "undecodable file descriptor: {e}"
                )))
            })?;
            let name = file.name().to_owned();
            if files.contains_key(&name) {
                continue;
            }
            files.insert(name, raw);
            for dep in file.dependency {
                if files.contains_key(&dep) || !asked.insert(dep.clone()) {
                    continue;
                }
                match self
                    .ask(pb::MessageRequest::FileByFilename(dep.clone()))
                    .await?
                {
                    pb::MessageResponse::FileDescriptorResponse(r) => {
                        pending.extend(r.file_descriptor_proto)
                    }
                    pb::MessageResponse::ErrorResponse(e) => {
                        return Err(Failure::from(Status::not_found(format!(
                            "the server could not send {dep}: {}",
                            e.error_message
                        ))));
                    }
                    other => return Err(unexpected(other)),
                }
            }
        }
        let set = RawFileSet {
            file: files.into_values().collect(),
        };
        let pool = DescriptorPool::decode(set.encode_to_vec().as_slice()).map_err(|e| {
            Failure::from(Status::internal(format!(
                "the server's descriptors are inconsistent: {e}"
            )))
        })?;
        if find_symbol(&pool, symbol).is_none() {
            return Err(Failure::usage(format!(
                "the server does not know the symbol {symbol:?}"
            )));
        }
        Ok(pool)
    }
}

fn unexpected(response: pb::MessageResponse) -> Failure {
    let what = match response {
        pb::MessageResponse::ErrorResponse(e) => {
            return Failure::from(Status::new(Code::from_i32(e.error_code), e.error_message));
        }
        pb::MessageResponse::FileDescriptorResponse(_) => "file descriptors",
        pb::MessageResponse::ListServicesResponse(_) => "a service list",
    };
    Failure::from(Status::internal(format!(
        "unexpected reflection response: {what}"
    )))
}

/// What a symbol names.
pub enum Symbol {
    /// A service.
    Service(prost_reflect::ServiceDescriptor),
    /// A method.
    Method(MethodDescriptor),
    /// A message.
    Message(prost_reflect::MessageDescriptor),
    /// An enum.
    Enum(prost_reflect::EnumDescriptor),
}

/// Looks `symbol` up (a leading `.` and `Service/Method` are accepted).
pub fn find_symbol(pool: &DescriptorPool, symbol: &str) -> Option<Symbol> {
    let symbol = symbol.trim_start_matches('.').replace('/', ".");
    if let Some(s) = pool.get_service_by_name(&symbol) {
        return Some(Symbol::Service(s));
    }
    if let Some(m) = pool.get_message_by_name(&symbol) {
        return Some(Symbol::Message(m));
    }
    if let Some(e) = pool.get_enum_by_name(&symbol) {
        return Some(Symbol::Enum(e));
    }
    let (service, method) = symbol.rsplit_once('.')?;
    let service = pool.get_service_by_name(service)?;
    let method = service.methods().find(|m| m.name() == method)?;
    Some(Symbol::Method(method))
}

/// Splits `pkg.Service/Method` or `pkg.Service.Method` into service and method names.
pub fn split_method(method: &str) -> CliResult<(String, String)> {
    let method = method.trim_start_matches('/');
    let split = method.split_once('/').or_else(|| method.rsplit_once('.'));
    match split {
        Some((service, name)) if !service.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((service.to_owned(), name.to_owned()))
        }
        _ => Err(Failure::usage(format!(
            "method {method:?} should look like package.Service/Method or package.Service.Method"
        ))),
    }
}

/// Resolves a method from `source`.
pub async fn resolve_method(source: &Source, method: &str) -> CliResult<MethodDescriptor> {
    let (service, name) = split_method(method)?;
    let pool = source.pool_for(&service).await?;
    let Some(svc) = pool.get_service_by_name(&service) else {
        let known: Vec<_> = pool.services().map(|s| s.full_name().to_owned()).collect();
        return Err(Failure::usage(format!(
            "unknown service {service:?}; known services: {}",
            known.join(", ")
        )));
    };
    let found = svc.methods().find(|m| m.name() == name);
    found.ok_or_else(|| {
        let known: Vec<_> = svc.methods().map(|m| m.name().to_owned()).collect();
        Failure::usage(format!(
            "{service} has no method {name:?}; it has: {}",
            known.join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_split() {
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(split_method("a.b.Svc/Do").unwrap(), pair("a.b.Svc", "Do"));
        assert_eq!(split_method("a.b.Svc.Do").unwrap(), pair("a.b.Svc", "Do"));
        assert_eq!(split_method("/a.Svc/Do").unwrap(), pair("a.Svc", "Do"));
        assert!(split_method("Do").is_err());
    }
}
