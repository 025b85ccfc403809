//! Ferry's interop server: `grpc.testing.TestService` as the interop test descriptions' "server
//! features" ask, implemented with the generated [`TestService`] trait.
//!
//! Everything a case checks lives in the typed handlers below, except one thing the typed
//! response stream cannot say: whether each *individual* streamed response is compressed
//! (`ResponseParameters.compressed`). [`service`] therefore wraps the generated
//! [`TestServiceServer`] in [`PerMessageCompression`], a thin [`ServiceHandler`] that watches the
//! encoded requests of the streaming-output methods go by, notes the `compressed` choice of
//! every response they ask for, and puts a [`StreamItem::Compress`] before each encoded response
//! message. The handlers still produce every message, in order, one per `ResponseParameters`;
//! the wrapper only adds the markers, so no behaviour is written twice.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use ferry::call::{Body, BoxFuture, CallResult, Compress, MessageStream, MethodKind, StreamItem};
use ferry::{Metadata, Request, Response, ResponseStream, ServiceHandler, Status, Streaming};
use futures_util::{Stream, StreamExt};
use prost::Message;

use crate::pb::{
    BoolValue, EchoStatus, Empty, Payload, PayloadType, ResponseParameters, SimpleRequest,
    SimpleResponse, StreamingInputCallRequest, StreamingInputCallResponse,
    StreamingOutputCallRequest, StreamingOutputCallResponse, TestService, TestServiceServer,
};

/// Request metadata whose values come back in the response's leading metadata.
pub const ECHO_INITIAL: &str = "x-grpc-test-echo-initial";
/// Request metadata whose values come back in the response's trailers.
pub const ECHO_TRAILING: &str = "x-grpc-test-echo-trailing-bin";
/// What `fill_server_id` reports.
pub const SERVER_ID: &str = "ferry-interop";

/// The interop service, ready for `ferry::Server::add_service`: the typed [`Interop`] handlers
/// behind the generated [`TestServiceServer`], wrapped for per-message response compression.
/// `grpc.testing.UnimplementedService` is deliberately not part of it.
pub fn service() -> PerMessageCompression<TestServiceServer<Interop>> {
    PerMessageCompression::new(TestServiceServer::new(Interop::new()))
}

/// The typed implementation of `grpc.testing.TestService`.
#[derive(Debug, Clone)]
pub struct Interop {
    hostname: String,
}

impl Default for Interop {
    fn default() -> Interop {
        Interop::new()
    }
}

impl Interop {
    /// The service; it reports this machine's host name in `SimpleResponse.hostname`.
    pub fn new() -> Interop {
        Interop {
            hostname: hostname(),
        }
    }

    fn simple_response(&self, request: &SimpleRequest) -> Result<SimpleResponse, Status> {
        Ok(SimpleResponse {
            payload: Some(payload(request.response_type, request.response_size)?),
            server_id: if request.fill_server_id {
                SERVER_ID.to_owned()
            } else {
                String::new()
            },
            hostname: self.hostname.clone(),
            ..SimpleResponse::default()
        })
    }
}

/// The host name, from the kernel (Linux) or the environment; `localhost` if neither says.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The echo metadata of a request: what goes back as leading metadata, and as trailers.
fn echoes(request: &Metadata) -> (Metadata, Metadata) {
    let mut initial = Metadata::new();
    for value in request.get_all(ECHO_INITIAL) {
        if let Ok(text) = std::str::from_utf8(value) {
            initial.append(ECHO_INITIAL, text);
        }
    }
    let mut trailing = Metadata::new();
    if let Some(value) = request.get_bin(ECHO_TRAILING) {
        trailing.insert_bin(ECHO_TRAILING, Bytes::copy_from_slice(value));
    }
    (initial, trailing)
}

/// The status a request asks to end its call with (`response_status` with a non-zero code).
fn echo_status(status: Option<&EchoStatus>) -> Option<Status> {
    let status = status.filter(|s| s.code != 0)?;
    Some(Status::new(
        ferry::Code::from_i32(status.code),
        status.message.clone(),
    ))
}

/// A payload of `size` zero bytes of `kind` (only COMPRESSABLE exists).
fn payload(kind: i32, size: i32) -> Result<Payload, Status> {
    if PayloadType::try_from(kind) != Ok(PayloadType::Compressable) {
        return Err(Status::invalid_argument(format!(
            "unsupported response_type {kind}"
        )));
    }
    let size = usize::try_from(size)
        .map_err(|_| Status::invalid_argument(format!("negative response size {size}")))?;
    Ok(Payload {
        r#type: PayloadType::Compressable as i32,
        body: vec![0; size],
    })
}

/// Whether a `BoolValue` field is set to true.
fn is_true(value: Option<&BoolValue>) -> bool {
    value.is_some_and(|v| v.value)
}

/// `INVALID_ARGUMENT` for a request that asked to be checked for compression and was not
/// compressed.
fn check_compressed(expect: Option<&BoolValue>, arrived_compressed: bool) -> Result<(), Status> {
    if is_true(expect) && !arrived_compressed {
        return Err(Status::invalid_argument(
            "expected a compressed request (expect_compressed is true), but the request \
             arrived uncompressed",
        ));
    }
    Ok(())
}

/// What `ResponseParameters.compressed` asks of one response message.
fn compress_choice(compressed: Option<&BoolValue>) -> Compress {
    match compressed {
        Some(BoolValue { value: true }) => Compress::Always,
        Some(BoolValue { value: false }) => Compress::Never,
        None => Compress::Auto,
    }
}

/// The responses a stream of `StreamingOutputCallRequest`s asks for, each sent after its
/// `interval_us`, as soon as its request has arrived: request `n + 1` is read only once every
/// response of request `n` went out. A request with a `response_status` ends the stream with
/// that status.
fn answer<S>(requests: S) -> impl Stream<Item = Result<StreamingOutputCallResponse, Status>>
where
    S: Stream<Item = Result<StreamingOutputCallRequest, Status>> + Send + Unpin + 'static,
{
    struct State<S> {
        requests: S,
        pending: VecDeque<(i32, ResponseParameters)>,
        done: bool,
    }
    let state = State {
        requests,
        pending: VecDeque::new(),
        done: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if state.done {
                return None;
            }
            if let Some((kind, params)) = state.pending.pop_front() {
                if params.interval_us > 0 {
                    let pause = Duration::from_micros(params.interval_us.unsigned_abs().into());
                    tokio::time::sleep(pause).await;
                }
                let item = payload(kind, params.size)
                    .map(|p| StreamingOutputCallResponse { payload: Some(p) });
                state.done = item.is_err();
                return Some((item, state));
            }
            match state.requests.next().await {
                None => return None,
                Some(Err(status)) => {
                    state.done = true;
                    return Some((Err(status), state));
                }
                Some(Ok(request)) => {
                    if let Some(status) = echo_status(request.response_status.as_ref()) {
                        state.done = true;
                        return Some((Err(status), state));
                    }
                    let kind = request.response_type;
                    state.pending.extend(
                        request
                            .response_parameters
                            .into_iter()
                            .map(|params| (kind, params)),
                    );
                }
            }
        }
    })
}

/// A streamed reply with the echo metadata around it.
fn streamed<S>(
    messages: S,
    initial: Metadata,
    trailing: Metadata,
) -> Response<ResponseStream<StreamingOutputCallResponse>>
where
    S: Stream<Item = Result<StreamingOutputCallResponse, Status>> + Send + 'static,
{
    let mut response = Response::from_parts(initial, ResponseStream::new(messages));
    *response.trailers_mut() = trailing;
    response
}

impl TestService for Interop {
    async fn empty_call(&self, request: Request<Empty>) -> Result<Response<Empty>, Status> {
        let (initial, trailing) = echoes(request.metadata());
        let mut response = Response::from_parts(initial, Empty {});
        *response.trailers_mut() = trailing;
        Ok(response)
    }

    async fn unary_call(
        &self,
        request: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        let (initial, trailing) = echoes(request.metadata());
        let arrived_compressed = request.arrived_compressed();
        let request = request.into_inner();
        let fail = |status: Status| status.with_metadata(trailing.clone());
        check_compressed(request.expect_compressed.as_ref(), arrived_compressed).map_err(fail)?;
        if let Some(status) = echo_status(request.response_status.as_ref()) {
            return Err(fail(status));
        }
        let message = self.simple_response(&request).map_err(fail)?;
        let mut response = Response::from_parts(initial, message);
        response.set_compress(compress_choice(request.response_compressed.as_ref()));
        *response.trailers_mut() = trailing;
        Ok(response)
    }

    async fn cacheable_unary_call(
        &self,
        request: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        let (mut initial, trailing) = echoes(request.metadata());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        initial.insert("cache-control", "max-age=60, public");
        let message = SimpleResponse {
            payload: Some(Payload {
                r#type: PayloadType::Compressable as i32,
                body: now.to_string().into_bytes(),
            }),
            hostname: self.hostname.clone(),
            ..SimpleResponse::default()
        };
        let mut response = Response::from_parts(initial, message);
        *response.trailers_mut() = trailing;
        Ok(response)
    }

    async fn streaming_output_call(
        &self,
        request: Request<StreamingOutputCallRequest>,
    ) -> Result<Response<ResponseStream<StreamingOutputCallResponse>>, Status> {
        let (initial, trailing) = echoes(request.metadata());
        let request = request.into_inner();
        if let Some(status) = echo_status(request.response_status.as_ref()) {
            return Err(status.with_metadata(trailing));
        }
        let requests = futures_util::stream::iter([Ok(request)]);
        Ok(streamed(answer(requests), initial, trailing))
    }

    async fn streaming_input_call(
        &self,
        request: Request<Streaming<StreamingInputCallRequest>>,
    ) -> Result<Response<StreamingInputCallResponse>, Status> {
        let (initial, trailing) = echoes(request.metadata());
        let arrived_compressed = request.arrived_compressed();
        let mut requests = request.into_inner();
        let fail = |status: Status| status.with_metadata(trailing.clone());
        let mut total = 0usize;
        while let Some(message) = requests.message().await.map_err(fail)? {
            check_compressed(message.expect_compressed.as_ref(), arrived_compressed)
                .map_err(fail)?;
            total += message.payload.map_or(0, |p| p.body.len());
        }
        let aggregated_payload_size = i32::try_from(total)
            .map_err(|_| fail(Status::out_of_range(format!("{total} payload bytes"))))?;
        let mut response = Response::from_parts(
            initial,
            StreamingInputCallResponse {
                aggregated_payload_size,
            },
        );
        *response.trailers_mut() = trailing;
        Ok(response)
    }

    async fn full_duplex_call(
        &self,
        request: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<ResponseStream<StreamingOutputCallResponse>>, Status> {
        let (initial, trailing) = echoes(request.metadata());
        Ok(streamed(answer(request.into_inner()), initial, trailing))
    }

    async fn half_duplex_call(
        &self,
        request: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<ResponseStream<StreamingOutputCallResponse>>, Status> {
        let (initial, trailing) = echoes(request.metadata());
        let mut inbound = request.into_inner();
        let mut requests = Vec::new();
        while let Some(message) = inbound
            .message()
            .await
            .map_err(|s| s.with_metadata(trailing.clone()))?
        {
            requests.push(Ok(message));
        }
        let requests = futures_util::stream::iter(requests);
        Ok(streamed(answer(requests), initial, trailing))
    }

    async fn unimplemented_call(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented(
            "grpc.testing.TestService/UnimplementedCall is left unimplemented on purpose",
        ))
    }
}

/// Serves a generated `TestServiceServer` and gives each streamed response the compression its
/// `ResponseParameters.compressed` asks for.
///
/// For `StreamingOutputCall`, `FullDuplexCall` and `HalfDuplexCall` it decodes every request
/// message on its way to the handler (the handler decodes it again: these are test messages)
/// and queues the `compressed` choice of each `ResponseParameters` in order; since the handler
/// answers parameters one by one and in order, the `n`-th response message it yields is the
/// answer to the `n`-th queued choice, which goes out as a [`StreamItem::Compress`] right before
/// it. Every other call passes through untouched.
#[derive(Debug, Clone)]
pub struct PerMessageCompression<S> {
    inner: S,
}

impl<S: ServiceHandler> PerMessageCompression<S> {
    /// Wraps `inner` (a `TestServiceServer`).
    pub fn new(inner: S) -> PerMessageCompression<S> {
        PerMessageCompression { inner }
    }
}

/// The compression choices of the responses asked for so far, oldest first.
type Choices = Arc<Mutex<VecDeque<Compress>>>;

fn queue_choices(choices: &Choices, encoded: &[u8]) {
    // A message that does not decode is the handler's to refuse; nothing to queue.
    if let Ok(request) = StreamingOutputCallRequest::decode(encoded) {
        let mut queue = choices.lock().unwrap_or_else(PoisonError::into_inner);
        queue.extend(
            request
                .response_parameters
                .iter()
                .map(|p| compress_choice(p.compressed.as_ref())),
        );
    }
}

/// The request body, queueing each message's choices as the handler reads it.
fn watch_requests(body: Body, choices: Choices) -> Body {
    match body {
        Body::Message(encoded) => {
            queue_choices(&choices, &encoded);
            Body::Message(encoded)
        }
        Body::Stream(stream) => Body::Stream(MessageStream::new(stream.map(move |item| {
            if let Ok(StreamItem::Message(encoded)) = &item {
                queue_choices(&choices, encoded);
            }
            item
        }))),
    }
}

/// The response body with each message preceded by its compression choice.
fn mark_responses(body: Body, choices: Choices) -> Body {
    let Body::Stream(stream) = body else {
        return body;
    };
    Body::Stream(MessageStream::new(stream.flat_map(move |item| {
        let marker = match &item {
            Ok(StreamItem::Message(_)) => choices
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front(),
            _ => None,
        };
        let items: Vec<Result<StreamItem, Status>> = match marker {
            Some(compress) => vec![Ok(StreamItem::Compress(compress)), item],
            None => vec![item],
        };
        futures_util::stream::iter(items)
    })))
}

impl<S: ServiceHandler> ServiceHandler for PerMessageCompression<S> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn file_descriptor_set(&self) -> &'static [u8] {
        self.inner.file_descriptor_set()
    }

    fn methods(&self) -> &'static [(&'static str, MethodKind)] {
        self.inner.methods()
    }

    fn call(&self, method: &str, request: Request<Body>) -> BoxFuture<CallResult> {
        if !matches!(
            method,
            "StreamingOutputCall" | "FullDuplexCall" | "HalfDuplexCall"
        ) {
            return self.inner.call(method, request);
        }
        let choices = Choices::default();
        let watched = choices.clone();
        let call = self
            .inner
            .call(method, request.map(|body| watch_requests(body, watched)));
        Box::pin(async move {
            let response = call.await?;
            Ok(response.map(|body| mark_responses(body, choices)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded_request(choices: &[Option<bool>]) -> Bytes {
        let request = StreamingOutputCallRequest {
            response_parameters: choices
                .iter()
                .map(|c| ResponseParameters {
                    size: 1,
                    compressed: c.map(|value| BoolValue { value }),
                    ..ResponseParameters::default()
                })
                .collect(),
            ..StreamingOutputCallRequest::default()
        };
        Bytes::from(request.encode_to_vec())
    }

    #[tokio::test]
    async fn each_streamed_response_gets_its_own_compression_marker() {
        let mut request = Request::new(Body::Message(encoded_request(&[
            Some(true),
            Some(false),
            None,
        ])));
        request.set_method("/grpc.testing.TestService/StreamingOutputCall");
        request.set_method_kind(MethodKind::ServerStreaming);
        let response = service()
            .call("StreamingOutputCall", request)
            .await
            .expect("the call succeeds");
        let Body::Stream(stream) = response.into_inner() else {
            panic!("a streamed reply");
        };
        let items: Vec<StreamItem> = stream.map(|item| item.expect("no error")).collect().await;
        let shape: Vec<String> = items
            .iter()
            .map(|item| match item {
                StreamItem::Compress(c) => format!("{c:?}"),
                StreamItem::Message(_) => "message".to_owned(),
                StreamItem::Trailers(_) => "trailers".to_owned(),
            })
            .collect();
        assert_eq!(
            shape,
            ["Always", "message", "Never", "message", "Auto", "message"]
        );
    }

    #[tokio::test]
    async fn expect_compressed_refuses_plain_requests_only() {
        let expect = Some(BoolValue { value: true });
        assert_eq!(
            check_compressed(expect.as_ref(), false).unwrap_err().code(),
            ferry::Code::InvalidArgument
        );
        assert!(check_compressed(expect.as_ref(), true).is_ok());
        assert!(check_compressed(Some(&BoolValue { value: false }), false).is_ok());
        assert!(check_compressed(None, false).is_ok());
    }
}
