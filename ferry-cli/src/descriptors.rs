//! Where message types come from: gRPC server reflection (through the runtime's generated
//! reflection client), or `.proto` files compiled in-process by `ferry-build`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ferry::services::reflection::{RawFileSet, pb, pb_v1alpha};
use ferry::{Channel, Code, Metadata, Request, Status};
use prost::Message;
use prost_reflect::{DescriptorPool, MethodDescriptor};

use crate::error::{CliResult, Failure};

use pb::server_reflection_request::MessageRequest;
use pb::server_reflection_response::MessageResponse;

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

    /// The gRPC channel reflection runs over, if descriptors come from the server.
    pub fn reflection_channel(&self) -> Option<&Channel> {
        match self {
            Source::Files(_) => None,
            Source::Reflection(reflector) => Some(&reflector.channel),
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

/// Compiles `.proto` files with `ferry-build` (so `google/api/annotations.proto` is always
/// importable); without `-I`, each file's own directory is an import root.
pub fn compile_protos(protos: &[PathBuf], includes: &[PathBuf]) -> CliResult<DescriptorPool> {
    if let Some(missing) = protos.iter().find(|p| !p.is_file()) {
        return Err(Failure::usage(format!(
            "--proto {}: no such file",
            missing.display()
        )));
    }
    let mut search: Vec<PathBuf> = includes.to_vec();
    if search.is_empty() {
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
    let encoded = ferry_build::compile_descriptor_set(protos, &search)
        .map_err(|e| Failure::usage(format!("cannot compile the protos: {e}")))?;
    DescriptorPool::decode(encoded.as_slice())
        .map_err(|e| Failure::usage(format!("inconsistent descriptors: {e}")))
}

/// A server reflection client: the runtime's generated `grpc.reflection.v1` client, falling
/// back to `v1alpha` (the same protocol under its older name) when the server does not
/// implement v1.
pub struct Reflector {
    channel: Channel,
    metadata: Metadata,
    timeout: Duration,
    /// Set once the server answered v1 with `UNIMPLEMENTED`.
    v1alpha: AtomicBool,
}

impl Reflector {
    /// A client over `channel` (gRPC); `metadata` goes with every request.
    pub fn new(channel: Channel, metadata: Metadata, timeout: Duration) -> Reflector {
        Reflector {
            channel,
            metadata,
            timeout,
            v1alpha: AtomicBool::new(false),
        }
    }

    /// Asks one question: a reflection stream carrying one request, read for one response.
    async fn ask(&self, question: MessageRequest) -> CliResult<MessageResponse> {
        let request = pb::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(question),
        };
        let outcome = if self.v1alpha.load(Ordering::Relaxed) {
            self.ask_v1alpha(request).await
        } else {
            match self.ask_v1(request.clone()).await {
                Err(status) if status.code() == Code::Unimplemented => {
                    let outcome = self.ask_v1alpha(request).await;
                    if outcome.is_ok() {
                        self.v1alpha.store(true, Ordering::Relaxed);
                    }
                    outcome
                }
                outcome => outcome,
            }
        };
        match outcome {
            Ok(response) => response
                .message_response
                .ok_or_else(|| Failure::from(Status::internal("empty reflection response"))),
            Err(status) if status.code() == Code::Unimplemented => Err(Failure::from(Status::new(
                status.code(),
                format!(
                    "server reflection is not available ({}); pass --proto FILE -I DIR \
                         instead",
                    status.message()
                ),
            ))),
            Err(status) => Err(status.into()),
        }
    }

    /// The request stream: `message`, with the command's metadata and reflection deadline.
    fn request<T: Send + 'static>(
        &self,
        message: T,
    ) -> Request<futures_util::stream::Iter<std::iter::Once<T>>> {
        let mut request = Request::new(futures_util::stream::iter(std::iter::once(message)));
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(self.timeout);
        request
    }

    async fn ask_v1(
        &self,
        request: pb::ServerReflectionRequest,
    ) -> Result<pb::ServerReflectionResponse, Status> {
        let client = pb::ServerReflectionClient::new(self.channel.clone());
        let mut replies = client
            .server_reflection_info(self.request(request))
            .await?
            .into_inner();
        replies
            .message()
            .await?
            .ok_or_else(|| Status::internal("the reflection stream ended without an answer"))
    }

    /// v1alpha's messages are v1's under another package, identical on the wire: the request
    /// and answer are re-read as each other's type.
    async fn ask_v1alpha(
        &self,
        request: pb::ServerReflectionRequest,
    ) -> Result<pb::ServerReflectionResponse, Status> {
        let request: pb_v1alpha::ServerReflectionRequest = transcode(&request)?;
        let client = pb_v1alpha::ServerReflectionClient::new(self.channel.clone());
        let mut replies = client
            .server_reflection_info(self.request(request))
            .await?
            .into_inner();
        let answer = replies
            .message()
            .await?
            .ok_or_else(|| Status::internal("the reflection stream ended without an answer"))?;
        transcode(&answer)
    }

    /// The services the server lists.
    pub async fn list_services(&self) -> CliResult<Vec<String>> {
        match self
            .ask(MessageRequest::ListServices(String::new()))
            .await?
        {
            MessageResponse::ListServicesResponse(list) => {
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
                .ask(MessageRequest::FileContainingSymbol(lookup.clone()))
                .await?
            {
                MessageResponse::FileDescriptorResponse(r) => break r,
                MessageResponse::ErrorResponse(e) => match lookup.rsplit_once('.') {
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
        let mut pending: Vec<Bytes> = first
            .file_descriptor_proto
            .into_iter()
            .map(Bytes::from)
            .collect();
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
                    .ask(MessageRequest::FileByFilename(dep.clone()))
                    .await?
                {
                    MessageResponse::FileDescriptorResponse(r) => {
                        pending.extend(r.file_descriptor_proto.into_iter().map(Bytes::from))
                    }
                    MessageResponse::ErrorResponse(e) => {
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

/// Re-reads a message as another type with the same wire format.
fn transcode<A: Message, B: Message + Default>(message: &A) -> Result<B, Status> {
    B::decode(message.encode_to_vec().as_slice())
        .map_err(|e| Status::internal(format!("undecodable reflection message: {e}")))
}

fn unexpected(response: MessageResponse) -> Failure {
    let what = match response {
        MessageResponse::ErrorResponse(e) => {
            return Failure::from(Status::new(Code::from_i32(e.error_code), e.error_message));
        }
        MessageResponse::FileDescriptorResponse(_) => "file descriptors",
        MessageResponse::ListServicesResponse(_) => "a service list",
        MessageResponse::AllExtensionNumbersResponse(_) => "extension numbers",
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
