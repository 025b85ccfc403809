//! One dispatch path: a layer added with `Server::layer` sees every call, unary and streaming,
//! on every protocol — including the built-in health and reflection services and the REST
//! routes. A route that went around the layer stack would be missed here (and, once the layer
//! is authentication, would be an unauthenticated door).

use ferry::call::MethodKind;
use ferry::services::health::{ServingStatus, pb as health};
use ferry::services::reflection::pb as reflection;
use ferry::{Channel, Response, ServerHandle, Status, Streaming};
use ferry_test_support::calculator::Calculator;
use ferry_test_support::{CountingLayer, start_calculator_with};

const ADD: &str = "/calculator.v1.Calculator/Add";
const CHECK: &str = "/grpc.health.v1.Health/Check";
const WATCH: &str = "/grpc.health.v1.Health/Watch";
const REFLECT: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";

/// The calculator (with health and reflection, as every server has) behind a counting layer.
async fn counted_server() -> (ServerHandle, CountingLayer) {
    let layer = CountingLayer::default();
    let counting = layer.clone();
    let server = start_calculator_with(move |server| server.layer(counting)).await;
    (server, layer)
}

/// Asserts the layer saw exactly `calls` calls to `method`, all of `kind`.
#[track_caller]
fn expect(layer: &CountingLayer, method: &str, kind: MethodKind, calls: usize, over: &str) {
    assert_eq!(
        layer.seen(method),
        Some((kind, calls)),
        "calls to {method} over {over} that the layer saw"
    );
}

async fn channel(server: &ServerHandle, scheme: &str) -> Channel {
    Channel::connect(format!("{scheme}://{}", server.local_addr()))
        .await
        .unwrap_or_else(|status| panic!("connect over {scheme}: {status}"))
}

#[tokio::test]
async fn the_layer_sees_unary_calls_on_every_protocol() {
    let (server, layer) = counted_server().await;
    for (n, scheme) in ["ferry", "grpc", "http"].into_iter().enumerate() {
        let channel = channel(&server, scheme).await;
        // A user service.
        let calc = Calculator::new(channel.clone());
        assert_eq!(calc.add(1.0, 2.0).await.unwrap(), 3.0, "over {scheme}");
        expect(&layer, ADD, MethodKind::Unary, n + 1, scheme);
        // The built-in health service.
        let reply = health::HealthClient::new(channel)
            .check(health::HealthCheckRequest::default())
            .await
            .unwrap_or_else(|status| panic!("health check over {scheme}: {status}"));
        assert_eq!(reply.into_inner().status(), ServingStatus::Serving);
        expect(&layer, CHECK, MethodKind::Unary, n + 1, scheme);
    }
    // A REST route from `google.api.http` reaches the same method through the same layers.
    let response = reqwest::Client::new()
        .post(format!("http://{}/add", server.local_addr()))
        .header("content-type", "application/json")
        .body(r#"{"a":1,"b":2}"#)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    expect(&layer, ADD, MethodKind::Unary, 4, "a REST route");
    server.shutdown().await.unwrap();
}

/// The first message of a streamed reply (the rest is dropped, which cancels the call);
/// fails the test, naming `what`, on an error or an empty stream.
async fn first_message<T: prost::Message + Default>(
    what: &str,
    reply: Result<Response<Streaming<T>>, Status>,
) -> T {
    let mut stream = reply
        .unwrap_or_else(|status| panic!("{what}: {status}"))
        .into_inner();
    stream
        .message()
        .await
        .unwrap_or_else(|status| panic!("{what}: {status}"))
        .unwrap_or_else(|| panic!("{what}: no message"))
}

/// Watches health (server streaming) and asks reflection for the services (bidirectional)
/// over `scheme`; checks the layer saw both, as streaming calls.
async fn the_layer_sees_streaming_calls_over(scheme: &str) {
    let (server, layer) = counted_server().await;
    let channel = channel(&server, scheme).await;

    let watch = health::HealthClient::new(channel.clone())
        .watch(health::HealthCheckRequest::default())
        .await;
    let first = first_message(&format!("health watch over {scheme}"), watch).await;
    assert_eq!(first.status(), ServingStatus::Serving);
    expect(&layer, WATCH, MethodKind::ServerStreaming, 1, scheme);

    let list = reflection::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            reflection::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let replies = reflection::ServerReflectionClient::new(channel)
        .server_reflection_info(futures_util::stream::iter([list]))
        .await;
    let reply = first_message(&format!("reflection over {scheme}"), replies).await;
    let Some(reflection::server_reflection_response::MessageResponse::ListServicesResponse(
        services,
    )) = reply.message_response
    else {
        panic!("not a service list: {reply:?}");
    };
    assert!(
        services
            .service
            .iter()
            .any(|s| s.name == "calculator.v1.Calculator"),
        "{services:?}"
    );
    expect(&layer, REFLECT, MethodKind::BidiStreaming, 1, scheme);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_layer_sees_streaming_calls_over_grpc() {
    the_layer_sees_streaming_calls_over("grpc").await;
}

#[tokio::test]
async fn the_layer_sees_streaming_calls_over_native() {
    the_layer_sees_streaming_calls_over("ferry").await;
}

#[tokio::test]
async fn the_layer_sees_streaming_calls_over_connect() {
    the_layer_sees_streaming_calls_over("http").await;
}
