//! gRPC over h2c: raw HTTP/2 requests for what stock clients cannot show (the server
//! enforcing `grpc-timeout` on its own, malformed calls getting the right status, gzip), and
//! message-size limits through Ferry's own gRPC client.

use bytes::Bytes;
use ferry::{Channel, Code, Request};
use ferry_test_support::calculator;
use ferry_test_support::{PATIENCE, start_echo_calculator};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A calculator request message (a = 1, b = 1) framed for gRPC.
fn framed_request() -> Bytes {
    let message =
        prost::Message::encode_to_vec(&calculator::pb::CalculateRequest { a: 1.0, b: 1.0 });
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    Bytes::from(body)
}

async fn grpc_call(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (http::HeaderMap, Option<http::HeaderMap>) {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client
        .request(request.body(Full::new(body)).unwrap())
        .await
        .expect("an HTTP/2 response");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("the body");
    (parts.headers, collected.trailers().cloned())
}

fn grpc_status(headers: &http::HeaderMap, trailers: &Option<http::HeaderMap>) -> String {
    trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| headers.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_owned())
        .expect("a grpc-status")
}

/// The call would sleep a minute; hyper's client has no timer, so only the server's own
/// enforcement of `grpc-timeout` can answer it within the test's patience.
#[tokio::test]
async fn the_server_enforces_grpc_timeout() {
    let server = start_echo_calculator().await;
    let call = grpc_call(
        server.local_addr(),
        "/calculator.v1.Calculator/Add",
        &[("grpc-timeout", "100m"), ("x-sleep-ms", "60000")],
        framed_request(),
    );
    let (headers, trailers) = tokio::time::timeout(PATIENCE, call)
        .await
        .expect("the server cut the call short");
    assert_eq!(grpc_status(&headers, &trailers), "4", "DEADLINE_EXCEEDED");
}

#[tokio::test]
async fn malformed_calls_get_clear_statuses() {
    let server = start_echo_calculator().await;
    let addr = server.local_addr();
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        Bytes,
        &'static str,
    );
    let cases: [Case; 5] = [
        ("/calculator.v1.Calculator/Add", &[], framed_request(), "0"),
        (
            "/calculator.v1.Calculator/Add",
            &[("grpc-timeout", "soon")],
            framed_request(),
            "3",
        ),
        (
            "/calculator.v1.Calculator/Add",
            &[("grpc-encoding", "snappy")],
            framed_request(),
            "12",
        ),
        ("/nope.v1.Nothing/Add", &[], framed_request(), "12"),
        // A length prefix promising more bytes than the body has.
        (
            "/calculator.v1.Calculator/Add",
            &[],
            Bytes::from_static(&[0, 0, 0, 0, 50, 1]),
            "13",
        ),
    ];
    for (path, headers, body, expected) in cases {
        let (h, t) = grpc_call(addr, path, headers, body).await;
        assert_eq!(grpc_status(&h, &t), expected, "{path} {headers:?}");
    }
}

#[tokio::test]
async fn gzip_requests_get_gzip_replies() {
    use std::io::{Read, Write};
    let server = start_echo_calculator().await;
    let message =
        prost::Message::encode_to_vec(&calculator::pb::CalculateRequest { a: 5.0, b: 7.0 });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&message).unwrap();
    let compressed = gz.finish().unwrap();
    let mut body = vec![1u8];
    body.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
    body.extend_from_slice(&compressed);

    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let request = http::Request::post(format!(
        "http://{}/calculator.v1.Calculator/Add",
        server.local_addr()
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("grpc-encoding", "gzip")
    .header("grpc-accept-encoding", "gzip")
    .body(Full::new(Bytes::from(body)))
    .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.headers()["grpc-encoding"], "gzip");
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    let data = collected.to_bytes();
    assert_eq!(data[0], 1, "the reply message is flagged compressed");
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&data[5..])
        .read_to_end(&mut plain)
        .unwrap();
    let reply: calculator::pb::CalculateResponse = prost::Message::decode(&plain[..]).unwrap();
    assert_eq!(reply.result, 12.0);
}

#[tokio::test]
async fn oversized_grpc_messages_are_resource_exhausted() {
    let server = ferry::Server::builder()
        .add_service(calculator::service())
        .max_message_size(1024)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let channel = Channel::connect(format!("grpc://{}", server.local_addr()))
        .await
        .unwrap();
    let mut big = Request::new(ferry::call::Body::Message(Bytes::from(vec![0u8; 4096])));
    big.set_method("/calculator.v1.Calculator/Add");
    let error = channel.call(big).await.unwrap_err();
    assert_eq!(error.code(), Code::ResourceExhausted, "{error}");
    // The connection is still usable.
    let calc = calculator::Calculator::new(channel);
    assert_eq!(calc.add(2.0, 2.0).await.unwrap(), 4.0);
}
