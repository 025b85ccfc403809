//! Ferry's interop client: the 18 cases of gRPC's interop test descriptions, made with the
//! generated `TestServiceClient` over any of Ferry's protocols.
//!
//! Each case runs on a fresh [`Channel`] (so a fresh connection), one call at a time. Sizes,
//! requests and assertions are the descriptions'; the optional checks are made too: response
//! bodies are zeros, of type COMPRESSABLE and of the exact size.
//!
//! **Compression and cancellation on the wire.** No RPC API shows whether a message travelled
//! compressed, so by default the client talks to the server through a [`WireTap`], a local
//! byte-for-byte relay that records each message's compressed flag (HTTP/2 for gRPC; HTTP/1.1
//! and HTTP/2 for the Connect protocol; the native protocol is relayed unread). With it,
//! client_compressed_* also check the client's own requests (compressed as asked, message by
//! message) and server_compressed_* check that each response was compressed exactly when
//! asked. The cancel cases check that the cancellation reached the wire: an HTTP/2
//! `RST_STREAM(CANCEL)` for the call's stream, or (HTTP/1.1, which cannot cancel one request
//! otherwise) the client closing the connection. The channel then targets the tap, so the
//! server sees the tap's address in `:authority` / `host`. `--wiretap false` connects directly
//! and skips these checks.
//!
//! **Cancellation in Rust** is dropping the call: there is no `cancel()` that hands back a
//! status. A cancel case therefore passes when the call was still in progress at the moment it
//! was dropped (it had not ended by itself, with any status), the cancellation reached the wire
//! while the request stream was still open (where the tap reads the protocol), and the channel
//! still makes a call afterwards.
//!
//! **Protocols.** `grpc` runs every case. `connect` (the Connect protocol: unary and
//! client/server streaming over HTTP/1.1, bidirectional over HTTP/2) runs every case too: it
//! compresses unary bodies (`content-encoding`) and stream messages one by one, and carries
//! metadata, trailers, status messages, cancellation and deadlines. `ferry` (the native
//! protocol) never compresses, so the four compression cases are skipped there; the rest run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry::call::{Body, Compress, MessageStream, MethodKind, StreamItem};
use ferry::{Channel, Code, Request, Status, Streaming};
use futures_util::Stream;
use prost::Message;

use crate::pb::{
    BoolValue, EchoStatus, Empty, Payload, PayloadType, ResponseParameters, SimpleRequest,
    StreamingInputCallRequest, StreamingInputCallResponse, StreamingOutputCallRequest,
    TestServiceClient, UnimplementedServiceClient,
};
use crate::server::{ECHO_INITIAL, ECHO_TRAILING};
use crate::wiretap::{self, Direction, Event, Kind, WireTap};

/// Every case, in the order `all` runs them.
pub const CASES: [&str; 18] = [
    "empty_unary",
    "large_unary",
    "client_compressed_unary",
    "server_compressed_unary",
    "client_streaming",
    "client_compressed_streaming",
    "server_streaming",
    "server_compressed_streaming",
    "ping_pong",
    "empty_stream",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
    "cancel_after_begin",
    "cancel_after_first_response",
    "timeout_on_sleeping_server",
];

/// The value `custom_metadata` sends under [`ECHO_INITIAL`].
const ECHO_INITIAL_VALUE: &str = "test_initial_metadata_value";
/// The value `custom_metadata` sends under [`ECHO_TRAILING`].
const ECHO_TRAILING_VALUE: &[u8] = &[0xab, 0xab, 0xab];
/// special_status_message's status message.
const SPECIAL_MESSAGE: &str =
    "\t\ntest with whitespace\r\nand Unicode BMP \u{263a} and non-BMP \u{1f608}\t\n";
/// How long the client waits for the tap to see something that should come promptly.
const TAP_PATIENCE: Duration = Duration::from_secs(2);

/// The protocol the client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// gRPC over HTTP/2 (`grpc://`).
    Grpc,
    /// Ferry's native protocol (`ferry://`).
    Ferry,
    /// The Connect protocol (`http://`).
    Connect,
}

impl Transport {
    /// Parses `grpc`, `ferry` (or `native`) and `connect`.
    pub fn parse(name: &str) -> Option<Transport> {
        match name {
            "grpc" => Some(Transport::Grpc),
            "ferry" | "native" => Some(Transport::Ferry),
            "connect" => Some(Transport::Connect),
            _ => None,
        }
    }

    /// The target scheme of this protocol.
    pub fn scheme(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Ferry => "ferry",
            Transport::Connect => "http",
        }
    }

    /// Why this protocol cannot express compression, if it cannot.
    fn no_compression(self) -> Option<&'static str> {
        match self {
            Transport::Ferry => Some(
                "the native protocol has no message compression (requests and responses \
                 always travel uncompressed)",
            ),
            Transport::Grpc | Transport::Connect => None,
        }
    }
}

/// How a case ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every assertion held.
    Pass,
    /// An assertion failed, for this reason.
    Fail(String),
    /// The protocol cannot express the case, for this reason.
    Skip(String),
}

/// What a case needs to know to run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The server's address (resolved).
    pub server: SocketAddr,
    /// The protocol to speak.
    pub transport: Transport,
    /// Each call's deadline (timeout_on_sleeping_server uses 1 ms).
    pub rpc_timeout: Duration,
}

/// Why a case did not pass.
enum Stop {
    Fail(String),
    Skip(String),
}

impl From<Status> for Stop {
    fn from(status: Status) -> Stop {
        Stop::Fail(format!(
            "unexpected RPC error {:?}: {:?}",
            status.code(),
            status.message()
        ))
    }
}

type Checked = Result<(), Stop>;

fn check(condition: bool, reason: impl FnOnce() -> String) -> Checked {
    if condition {
        Ok(())
    } else {
        Err(Stop::Fail(reason()))
    }
}

/// Runs the case `name` on a fresh channel; `tap` (if any) relays to `settings.server`.
pub async fn run_case(name: &str, settings: &Settings, tap: Option<&WireTap>) -> Outcome {
    let addr = match tap {
        Some(tap) => SocketAddr::from(([127, 0, 0, 1], tap.port())),
        None => settings.server,
    };
    let target = format!("{}://{addr}", settings.transport.scheme());
    let channel = match Channel::builder(target)
        .timeout(settings.rpc_timeout)
        .connect_timeout(settings.rpc_timeout)
        .connect()
        .await
    {
        Ok(channel) => channel,
        Err(status) => {
            return Outcome::Fail(format!(
                "{CONNECT_FAILURE} {}: {}",
                settings.server,
                status.message()
            ));
        }
    };
    let case = Case {
        client: TestServiceClient::new(channel.clone()),
        channel,
        transport: settings.transport,
        tap: tap.filter(|_| settings.transport != Transport::Ferry),
    };
    let mark = tap.map_or(0, WireTap::mark);
    let result = match name {
        "empty_unary" => case.empty_unary().await,
        "large_unary" => case.large_unary().await,
        "client_compressed_unary" => case.client_compressed_unary().await,
        "server_compressed_unary" => case.server_compressed_unary().await,
        "client_streaming" => case.client_streaming().await,
        "client_compressed_streaming" => case.client_compressed_streaming().await,
        "server_streaming" => case.server_streaming().await,
        "server_compressed_streaming" => case.server_compressed_streaming().await,
        "ping_pong" => case.ping_pong().await,
        "empty_stream" => case.empty_stream().await,
        "custom_metadata" => case.custom_metadata().await,
        "status_code_and_message" => case.status_code_and_message().await,
        "special_status_message" => case.special_status_message().await,
        "unimplemented_method" => case.unimplemented_method().await,
        "unimplemented_service" => case.unimplemented_service().await,
        "cancel_after_begin" => case.cancel_after_begin().await,
        "cancel_after_first_response" => case.cancel_after_first_response().await,
        "timeout_on_sleeping_server" => case.timeout_on_sleeping_server().await,
        other => Err(Stop::Fail(format!("unknown test case {other:?}"))),
    };
    if let (Err(Stop::Fail(_)), Some(tap)) = (&result, tap) {
        eprintln!("  what the wiretap saw during {name}:");
        for event in tap.events_since(mark) {
            eprintln!("    {event:?}");
        }
    }
    match result {
        Ok(()) => Outcome::Pass,
        Err(Stop::Fail(reason)) => Outcome::Fail(reason),
        Err(Stop::Skip(reason)) => Outcome::Skip(reason),
    }
}

/// The start of a failure reason that means the server could not be reached at all.
pub const CONNECT_FAILURE: &str = "could not connect to";

/// Runs `names` in order, printing `PASS <case>`, `FAIL <case>: reason` or `SKIP <case>: why`
/// per case (and its time on stderr). Returns how many failed. After a case that could not
/// connect, the rest are reported failed without trying again.
pub async fn run_all(names: &[&str], settings: &Settings, wiretap: bool) -> usize {
    let tap = if wiretap {
        match WireTap::start(settings.server).await {
            Ok(tap) => Some(tap),
            Err(e) => {
                eprintln!("cannot start the wiretap ({e}); flags will not be checked");
                None
            }
        }
    } else {
        None
    };
    let mut failed = 0;
    let mut unreachable: Option<String> = None;
    for name in names {
        let started = Instant::now();
        let outcome = match &unreachable {
            Some(reason) => Outcome::Fail(format!("not run: {reason} earlier")),
            None => run_case(name, settings, tap.as_ref()).await,
        };
        match &outcome {
            Outcome::Pass => println!("PASS {name}"),
            Outcome::Skip(why) => println!("SKIP {name}: {why}"),
            Outcome::Fail(reason) => {
                failed += 1;
                println!("FAIL {name}: {reason}");
                if reason.starts_with(CONNECT_FAILURE) {
                    unreachable = Some(reason.clone());
                }
            }
        }
        eprintln!("  ({name} took {:.2} s)", started.elapsed().as_secs_f64());
    }
    failed
}

/// One case's channel, client and wiretap.
struct Case<'a> {
    client: TestServiceClient,
    channel: Channel,
    transport: Transport,
    /// The tap, when it reads this protocol.
    tap: Option<&'a WireTap>,
}

/// Which side's behaviour a flag check judges.
#[derive(Clone, Copy)]
enum Who {
    Client,
    Server,
}

fn payload(size: usize) -> Option<Payload> {
    Some(Payload {
        r#type: PayloadType::Compressable as i32,
        body: vec![0; size],
    })
}

fn bool_value(value: bool) -> Option<BoolValue> {
    Some(BoolValue { value })
}

fn check_payload(payload: Option<&Payload>, size: usize, what: &str) -> Checked {
    let Some(payload) = payload else {
        return Err(Stop::Fail(format!("{what} has no payload")));
    };
    check(payload.r#type == PayloadType::Compressable as i32, || {
        format!(
            "{what} payload type is {}, expected COMPRESSABLE",
            payload.r#type
        )
    })?;
    check(payload.body.len() == size, || {
        format!(
            "{what} payload body is {} bytes, expected {size}",
            payload.body.len()
        )
    })?;
    check(payload.body.iter().all(|&b| b == 0), || {
        format!("{what} payload body is not all zeros")
    })
}

/// The status of a call that should have failed with `code`.
fn expect_status<T>(result: Result<T, Status>, code: Code, what: &str) -> Result<Status, Stop> {
    match result {
        Ok(_) => Err(Stop::Fail(format!(
            "{what}: expected {code:?}, the call succeeded"
        ))),
        Err(status) if status.code() == code => Ok(status),
        Err(status) => Err(Stop::Fail(format!(
            "{what}: expected {code:?}, got {:?}: {:?}",
            status.code(),
            status.message()
        ))),
    }
}

fn words(flags: &[bool]) -> String {
    let words: Vec<&str> = flags
        .iter()
        .map(|&f| if f { "compressed" } else { "uncompressed" })
        .collect();
    format!("[{}]", words.join(", "))
}

/// A request stream fed by hand: send on the sender, drop it to half-close.
fn queue<T: Send + 'static>() -> (
    tokio::sync::mpsc::UnboundedSender<T>,
    impl Stream<Item = T> + Send + 'static,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    (
        tx,
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)),
    )
}

fn ping_pong_request(response_size: i32, request_size: usize) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: vec![ResponseParameters {
            size: response_size,
            ..ResponseParameters::default()
        }],
        payload: payload(request_size),
        ..StreamingOutputCallRequest::default()
    }
}

/// Every remaining message of a reply stream, then how it ended.
async fn drain<T>(stream: &mut Streaming<T>) -> (Vec<T>, Result<(), Status>) {
    let mut messages = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(message)) => messages.push(message),
            Ok(None) => return (messages, Ok(())),
            Err(status) => return (messages, Err(status)),
        }
    }
}

impl Case<'_> {
    fn mark(&self) -> usize {
        self.tap.map_or(0, WireTap::mark)
    }

    /// Checks the compressed flags of the messages that went `direction` since `mark`.
    fn expect_flags(
        &self,
        mark: usize,
        direction: Direction,
        expected: &[bool],
        who: Who,
    ) -> Checked {
        let Some(tap) = self.tap else {
            return Ok(());
        };
        let seen = tap.flags_since(mark, direction);
        check(seen == expected, || match who {
            Who::Client => format!(
                "client self-check: requests went out {}, meant {}",
                words(&seen),
                words(expected)
            ),
            Who::Server => format!(
                "server sent responses {} on the wire, expected {}",
                words(&seen),
                words(expected)
            ),
        })
    }

    fn large_request(&self) -> SimpleRequest {
        SimpleRequest {
            response_size: 314_159,
            payload: payload(271_828),
            ..SimpleRequest::default()
        }
    }

    fn skip_without_compression(&self) -> Checked {
        match self.transport.no_compression() {
            Some(why) => Err(Stop::Skip(why.to_owned())),
            None => Ok(()),
        }
    }

    async fn empty_unary(&self) -> Checked {
        let response = self.client.empty_call(Empty {}).await?;
        check(*response.get_ref() == Empty {}, || {
            format!("response is {:?}, expected Empty", response.get_ref())
        })
    }

    async fn large_unary(&self) -> Checked {
        let response = self.client.unary_call(self.large_request()).await?;
        check_payload(response.get_ref().payload.as_ref(), 314_159, "response")
    }

    async fn client_compressed_unary(&self) -> Checked {
        self.skip_without_compression()?;
        let probe = SimpleRequest {
            expect_compressed: bool_value(true),
            ..self.large_request()
        };
        let mut request = Request::new(probe.clone());
        request.set_compress(Compress::Never);
        let mark = self.mark();
        let result = self.client.unary_call(request).await;
        self.expect_flags(mark, Direction::ToServer, &[false], Who::Client)?;
        expect_status(
            result,
            Code::InvalidArgument,
            "uncompressed probe with expect_compressed=true",
        )?;

        let mut request = Request::new(probe);
        request.set_compress(Compress::Always);
        let mark = self.mark();
        let response = self.client.unary_call(request).await?;
        self.expect_flags(mark, Direction::ToServer, &[true], Who::Client)?;
        check_payload(
            response.get_ref().payload.as_ref(),
            314_159,
            "compressed call's response",
        )?;

        let plain = SimpleRequest {
            expect_compressed: bool_value(false),
            ..self.large_request()
        };
        let mut request = Request::new(plain);
        request.set_compress(Compress::Never);
        let mark = self.mark();
        let response = self.client.unary_call(request).await?;
        self.expect_flags(mark, Direction::ToServer, &[false], Who::Client)?;
        check_payload(
            response.get_ref().payload.as_ref(),
            314_159,
            "uncompressed call's response",
        )
    }

    async fn server_compressed_unary(&self) -> Checked {
        self.skip_without_compression()?;
        for compressed in [true, false] {
            let request = SimpleRequest {
                response_compressed: bool_value(compressed),
                ..self.large_request()
            };
            let mark = self.mark();
            let response = self.client.unary_call(request).await?;
            check_payload(
                response.get_ref().payload.as_ref(),
                314_159,
                &format!("response_compressed={compressed}"),
            )?;
            self.expect_flags(mark, Direction::ToClient, &[compressed], Who::Server)?;
        }
        Ok(())
    }

    async fn client_streaming(&self) -> Checked {
        let requests: Vec<StreamingInputCallRequest> = [27_182, 8, 1_828, 45_904]
            .into_iter()
            .map(|n| StreamingInputCallRequest {
                payload: payload(n),
                ..StreamingInputCallRequest::default()
            })
            .collect();
        let response = self
            .client
            .streaming_input_call(futures_util::stream::iter(requests))
            .await?;
        let total = response.get_ref().aggregated_payload_size;
        check(total == 74_922, || {
            format!("aggregated_payload_size is {total}, expected 74922")
        })
    }

    async fn client_compressed_streaming(&self) -> Checked {
        self.skip_without_compression()?;
        let first = StreamingInputCallRequest {
            payload: payload(27_182),
            expect_compressed: bool_value(true),
        };
        let mut request = Request::new(futures_util::stream::iter([first.clone()]));
        request.set_compress(Compress::Never);
        let mark = self.mark();
        let result = self.client.streaming_input_call(request).await;
        self.expect_flags(mark, Direction::ToServer, &[false], Who::Client)?;
        expect_status(
            result,
            Code::InvalidArgument,
            "uncompressed probe with expect_compressed=true",
        )?;

        // One compressed message, then one not, in one call: the typed client compresses a
        // whole call or none of it, so this request is built at the encoded level.
        let second = StreamingInputCallRequest {
            payload: payload(45_904),
            expect_compressed: bool_value(false),
        };
        let items = [
            Ok(StreamItem::Message(Bytes::from(first.encode_to_vec()))),
            Ok(StreamItem::Compress(Compress::Never)),
            Ok(StreamItem::Message(Bytes::from(second.encode_to_vec()))),
        ];
        let mut request = Request::new(Body::Stream(MessageStream::new(
            futures_util::stream::iter(items),
        )));
        request.set_method("/grpc.testing.TestService/StreamingInputCall");
        request.set_method_kind(MethodKind::ClientStreaming);
        request.set_compress(Compress::Always);
        let mark = self.mark();
        let response = self.channel.call(request).await?;
        let encoded = response.into_inner().into_message().await?;
        self.expect_flags(mark, Direction::ToServer, &[true, false], Who::Client)?;
        let response = StreamingInputCallResponse::decode(encoded)
            .map_err(|e| Stop::Fail(format!("cannot decode the response: {e}")))?;
        let total = response.aggregated_payload_size;
        check(total == 73_086, || {
            format!("aggregated_payload_size is {total}, expected 73086")
        })
    }

    async fn server_streaming(&self) -> Checked {
        let sizes = [31_415, 9, 2_653, 58_979];
        let request = StreamingOutputCallRequest {
            response_parameters: sizes
                .iter()
                .map(|&size| ResponseParameters {
                    size,
                    ..ResponseParameters::default()
                })
                .collect(),
            ..StreamingOutputCallRequest::default()
        };
        let mut stream = self
            .client
            .streaming_output_call(request)
            .await?
            .into_inner();
        let (responses, end) = drain(&mut stream).await;
        end?;
        check(responses.len() == sizes.len(), || {
            format!("{} responses, expected {}", responses.len(), sizes.len())
        })?;
        for (i, (response, size)) in responses.iter().zip(sizes).enumerate() {
            check_payload(
                response.payload.as_ref(),
                size as usize,
                &format!("response #{}", i + 1),
            )?;
        }
        Ok(())
    }

    async fn server_compressed_streaming(&self) -> Checked {
        self.skip_without_compression()?;
        let wanted = [(31_415, true), (92_653, false)];
        let request = StreamingOutputCallRequest {
            response_parameters: wanted
                .iter()
                .map(|&(size, compressed)| ResponseParameters {
                    size,
                    compressed: bool_value(compressed),
                    ..ResponseParameters::default()
                })
                .collect(),
            ..StreamingOutputCallRequest::default()
        };
        let mark = self.mark();
        let mut stream = self
            .client
            .streaming_output_call(request)
            .await?
            .into_inner();
        let (responses, end) = drain(&mut stream).await;
        end?;
        check(responses.len() == 2, || {
            format!("{} responses, expected 2", responses.len())
        })?;
        for (i, (response, (size, _))) in responses.iter().zip(wanted).enumerate() {
            check_payload(
                response.payload.as_ref(),
                size as usize,
                &format!("response #{}", i + 1),
            )?;
        }
        let flags: Vec<bool> = wanted.iter().map(|&(_, c)| c).collect();
        self.expect_flags(mark, Direction::ToClient, &flags, Who::Server)
    }

    async fn ping_pong(&self) -> Checked {
        let steps = [(31_415, 27_182), (9, 8), (2_653, 1_828), (58_979, 45_904)];
        let (tx, requests) = queue();
        // The first request goes out with the call: a server may hold its headers back until it
        // has something to answer.
        let _ = tx.send(ping_pong_request(steps[0].0, steps[0].1));
        let mut responses = self.client.full_duplex_call(requests).await?.into_inner();
        for (i, &(response_size, request_size)) in steps.iter().enumerate() {
            if i > 0 {
                let _ = tx.send(ping_pong_request(response_size, request_size));
            }
            let Some(response) = responses.message().await? else {
                return Err(Stop::Fail(format!(
                    "the response stream ended after {i} responses, expected 4"
                )));
            };
            check_payload(
                response.payload.as_ref(),
                response_size as usize,
                &format!("response #{}", i + 1),
            )?;
        }
        drop(tx);
        let (extra, end) = drain(&mut responses).await;
        check(extra.is_empty(), || {
            format!(
                "{} responses after the half-close, expected none",
                extra.len()
            )
        })?;
        end.map_err(|status| {
            Stop::Fail(format!(
                "call ended {:?}: {:?}",
                status.code(),
                status.message()
            ))
        })
    }

    async fn empty_stream(&self) -> Checked {
        let requests = futures_util::stream::iter(Vec::<StreamingOutputCallRequest>::new());
        let mut responses = self.client.full_duplex_call(requests).await?.into_inner();
        let (got, end) = drain(&mut responses).await;
        check(got.is_empty(), || {
            format!("{} responses, expected none", got.len())
        })?;
        end.map_err(|status| {
            Stop::Fail(format!(
                "call ended {:?}: {:?}",
                status.code(),
                status.message()
            ))
        })
    }

    fn echo_request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(ECHO_INITIAL, ECHO_INITIAL_VALUE);
        request
            .metadata_mut()
            .insert_bin(ECHO_TRAILING, ECHO_TRAILING_VALUE.to_vec());
        request
    }

    async fn custom_metadata(&self) -> Checked {
        fn echoed(
            what: &str,
            initial: &ferry::Metadata,
            trailing: Option<&ferry::Metadata>,
        ) -> Checked {
            let initial: Vec<&[u8]> = initial.get_all(ECHO_INITIAL).collect();
            check(initial == [ECHO_INITIAL_VALUE.as_bytes()], || {
                format!(
                    "{what}: initial metadata {ECHO_INITIAL} is {:?}, expected \
                     [{ECHO_INITIAL_VALUE:?}]",
                    initial
                        .iter()
                        .map(|v| String::from_utf8_lossy(v))
                        .collect::<Vec<_>>()
                )
            })?;
            let trailing: Vec<&[u8]> = trailing
                .map(|t| t.get_all(ECHO_TRAILING).collect())
                .unwrap_or_default();
            check(trailing == [ECHO_TRAILING_VALUE], || {
                format!(
                    "{what}: trailing metadata {ECHO_TRAILING} is {trailing:?}, expected \
                     [{ECHO_TRAILING_VALUE:?}]"
                )
            })
        }

        let response = self
            .client
            .unary_call(self.echo_request(self.large_request()))
            .await?;
        check_payload(response.get_ref().payload.as_ref(), 314_159, "UnaryCall")?;
        echoed("UnaryCall", response.metadata(), Some(response.trailers()))?;

        let request = StreamingOutputCallRequest {
            response_parameters: vec![ResponseParameters {
                size: 314_159,
                ..ResponseParameters::default()
            }],
            payload: payload(271_828),
            ..StreamingOutputCallRequest::default()
        };
        let requests = futures_util::stream::iter([request]);
        let response = self
            .client
            .full_duplex_call(self.echo_request(requests))
            .await?;
        let (initial, mut stream) = response.into_parts();
        let (responses, end) = drain(&mut stream).await;
        end?;
        check(responses.len() == 1, || {
            format!("FullDuplexCall: {} responses, expected 1", responses.len())
        })?;
        check_payload(responses[0].payload.as_ref(), 314_159, "FullDuplexCall")?;
        echoed("FullDuplexCall", &initial, stream.trailers())
    }

    async fn expect_echoed_status(&self, message: &str, with_stream: bool) -> Checked {
        let status = EchoStatus {
            code: 2,
            message: message.to_owned(),
        };
        let request = SimpleRequest {
            response_status: Some(status.clone()),
            ..SimpleRequest::default()
        };
        let error = expect_status(
            self.client.unary_call(request).await,
            Code::Unknown,
            "UnaryCall",
        )?;
        check(error.message() == message, || {
            format!(
                "UnaryCall: status message {:?}, expected {message:?}",
                error.message()
            )
        })?;
        if !with_stream {
            return Ok(());
        }
        let request = StreamingOutputCallRequest {
            response_status: Some(status),
            ..StreamingOutputCallRequest::default()
        };
        let requests = futures_util::stream::iter([request]);
        // The status may come as the reply (trailers only) or end a reply stream.
        let result = match self.client.full_duplex_call(requests).await {
            Err(status) => Err(status),
            Ok(response) => {
                let (responses, end) = drain(&mut response.into_inner()).await;
                end.map(|()| responses.len())
            }
        };
        let error = expect_status(result, Code::Unknown, "FullDuplexCall")?;
        check(error.message() == message, || {
            format!(
                "FullDuplexCall: status message {:?}, expected {message:?}",
                error.message()
            )
        })
    }

    async fn status_code_and_message(&self) -> Checked {
        self.expect_echoed_status("test status message", true).await
    }

    async fn special_status_message(&self) -> Checked {
        self.expect_echoed_status(SPECIAL_MESSAGE, false).await
    }

    async fn unimplemented_method(&self) -> Checked {
        let result = self.client.unimplemented_call(Empty {}).await;
        expect_status(result, Code::Unimplemented, "TestService/UnimplementedCall").map(drop)
    }

    async fn unimplemented_service(&self) -> Checked {
        let client = UnimplementedServiceClient::new(self.channel.clone());
        let result = client.unimplemented_call(Empty {}).await;
        expect_status(
            result,
            Code::Unimplemented,
            "UnimplementedService/UnimplementedCall",
        )
        .map(drop)
    }

    /// The call's first HEADERS (HTTP/2) or request head (HTTP/1.1) since `mark`, once the tap
    /// has seen it leave the client.
    async fn call_started(&self, mark: usize) -> Option<Event> {
        let tap = self.tap?;
        tap.wait_for(mark, TAP_PATIENCE, |e| {
            e.direction == Direction::ToServer && e.kind == Kind::Headers
        })
        .await
    }

    /// After a call was dropped: the cancellation reached the wire (where the tap reads the
    /// protocol), and the channel still makes calls.
    async fn check_cancelled(&self, mark: usize, started: Option<Event>) -> Checked {
        if let (Some(tap), Some(call)) = (self.tap, started) {
            let seen = if call.stream != 0 {
                // HTTP/2: the stream is reset with CANCEL.
                tap.wait_for(mark, TAP_PATIENCE, |e| {
                    e.conn == call.conn
                        && e.stream == call.stream
                        && e.direction == Direction::ToServer
                        && matches!(e.kind, Kind::Reset { .. })
                })
                .await
            } else {
                // HTTP/1.1 cannot cancel one request but by closing its connection.
                tap.wait_for(mark, TAP_PATIENCE, |e| {
                    e.conn == call.conn
                        && e.direction == Direction::ToServer
                        && e.kind == Kind::Closed
                })
                .await
            };
            match seen {
                Some(Event {
                    kind: Kind::Reset { code },
                    ..
                }) if code != wiretap::CANCEL => {
                    return Err(Stop::Fail(format!(
                        "the client reset the call's stream with HTTP/2 error {code}, expected \
                         CANCEL (8)"
                    )));
                }
                Some(_) => {}
                None if call.stream != 0 => {
                    return Err(Stop::Fail(format!(
                        "the client dropped the call but sent no RST_STREAM for stream {} \
                         within {TAP_PATIENCE:?}",
                        call.stream
                    )));
                }
                None => {
                    return Err(Stop::Fail(format!(
                        "the client dropped an HTTP/1.1 call but kept its connection open for \
                         {TAP_PATIENCE:?}"
                    )));
                }
            }
        }
        self.client
            .empty_call(Empty {})
            .await
            .map_err(|status| {
                Stop::Fail(format!(
                    "after the cancellation the channel failed a new call: {:?}: {:?}",
                    status.code(),
                    status.message()
                ))
            })
            .map(drop)
    }

    async fn cancel_after_begin(&self) -> Checked {
        let (tx, requests) = queue::<StreamingInputCallRequest>();
        let client = self.client.clone();
        let mark = self.mark();
        let call = tokio::spawn(async move { client.streaming_input_call(requests).await });
        let started = self.call_started(mark).await;
        if self.tap.is_none() {
            // Nothing to watch: give the call a moment to reach the server before cancelling.
            tokio::time::sleep(Duration::from_millis(100)).await;
        } else if started.is_none() {
            return Err(Stop::Fail(format!(
                "the call's headers did not leave the client within {TAP_PATIENCE:?}"
            )));
        }
        if call.is_finished() {
            let ended = match call.await {
                Ok(Ok(_)) => "OK".to_owned(),
                Ok(Err(status)) => format!("{:?}: {:?}", status.code(), status.message()),
                Err(e) => format!("with a panic: {e}"),
            };
            return Err(Stop::Fail(format!(
                "the call ended {ended} before it was cancelled"
            )));
        }
        call.abort();
        let cancelled = matches!(call.await, Err(e) if e.is_cancelled());
        check(cancelled, || {
            "the call ended by itself while being cancelled".to_owned()
        })?;
        // The request stream stays open: the cancellation alone must reach the server.
        let checked = self.check_cancelled(mark, started).await;
        drop(tx);
        checked
    }

    async fn cancel_after_first_response(&self) -> Checked {
        let (tx, requests) = queue();
        let _ = tx.send(ping_pong_request(31_415, 27_182));
        let mark = self.mark();
        let mut responses = self.client.full_duplex_call(requests).await?.into_inner();
        let Some(first) = responses.message().await? else {
            return Err(Stop::Fail(
                "the response stream ended before the first response".to_owned(),
            ));
        };
        check_payload(first.payload.as_ref(), 31_415, "first response")?;
        let started = self.call_started(mark).await;
        // Cancel: drop the call. The request stream stays open: the cancellation alone must
        // reach the server.
        drop(responses);
        let checked = self.check_cancelled(mark, started).await;
        drop(tx);
        checked
    }

    async fn timeout_on_sleeping_server(&self) -> Checked {
        let (tx, requests) = queue();
        let _ = tx.send(StreamingOutputCallRequest {
            payload: payload(27_182),
            ..StreamingOutputCallRequest::default()
        });
        let request = Request::new(requests).with_timeout(Duration::from_millis(1));
        let result = match self.client.full_duplex_call(request).await {
            Err(status) => Err(status),
            Ok(response) => {
                let (responses, end) = drain(&mut response.into_inner()).await;
                end.map(|()| responses.len())
            }
        };
        drop(tx);
        expect_status(
            result,
            Code::DeadlineExceeded,
            "FullDuplexCall with a 1 ms deadline",
        )
        .map(drop)
    }
}
