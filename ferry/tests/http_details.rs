//! The protocol details real HTTP clients trip over, checked on the wire: Connect GET, gzip,
//! 405 with `Allow`, unknown encodings, gRPC-Web (binary and text), CORS, gRPC's accept
//! encoding and sub-millisecond timeouts, and early replies on HTTP/1.1 keep-alive
//! connections.

use std::io::Write;
use std::task::{Context, Poll};

use bytes::Bytes;
use calculator::pb::{CalculateRequest, CalculateResponse};
use ferry::call::{Body, BoxFuture, BoxService, CallResult, Compress};
use ferry::{Request, Server, ServerHandle, Status};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Makes every reply ask to be compressed, so gzip replies can be checked with small messages.
#[derive(Clone)]
struct AlwaysCompress(BoxService);

impl tower::Service<Request<Body>> for AlwaysCompress {
    type Response = ferry::Response<Body>;
    type Error = Status;
    type Future = BoxFuture<CallResult>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let call = self.0.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            response.set_compress(Compress::Always);
            Ok(response)
        })
    }
}

async fn start() -> ServerHandle {
    Server::builder()
        .add_service(calculator::service())
        .bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port")
}

async fn send(
    request: http::Request<Full<Bytes>>,
    http2: bool,
) -> (http::response::Parts, Bytes, Option<http::HeaderMap>) {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http::<Full<Bytes>>();
    let response = client.request(request).await.expect("a response");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("the body");
    let trailers = collected.trailers().cloned();
    (parts, collected.to_bytes(), trailers)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn base64_url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_get_calls_methods_without_side_effects() {
    let server = start().await;
    let base = format!("http://{}", server.local_addr());
    let get = |query: String| {
        http::Request::get(format!("{base}/calculator.v1.Calculator/Add?{query}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    // JSON, percent-encoded.
    let (parts, body, _) = send(
        get("connect=v1&encoding=json&message=%7B%22a%22%3A1%2C%22b%22%3A2%7D".into()),
        false,
    )
    .await;
    assert_eq!(parts.status, 200);
    assert_eq!(json(&body)["result"], 3);
    // Binary protobuf, URL-safe base64.
    let proto = CalculateRequest { a: 2.0, b: 3.0 }.encode_to_vec();
    let query = format!(
        "connect=v1&encoding=proto&base64=1&message={}",
        base64_url(&proto)
    );
    let (parts, body, _) = send(get(query), false).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["content-type"], "application/proto");
    assert_eq!(CalculateResponse::decode(body).unwrap().result, 5.0);
    // Compressed, and with parameters in another order plus one the server does not know.
    let query = format!(
        "cachebuster=7&message={}&compression=gzip&base64=1&encoding=json",
        base64_url(&gzip(br#"{"a":4,"b":4}"#))
    );
    let (parts, body, _) = send(get(query), false).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["result"], 8);
    // Mistakes are clear errors.
    let (parts, body, _) = send(get("connect=v1&message=%7B%7D".into()), false).await;
    assert_eq!(parts.status, 400);
    assert_eq!(json(&body)["code"], "invalid_argument");
    let (parts, _, _) = send(get("encoding=xml&message=x".into()), false).await;
    assert_eq!(parts.status, 415);
    let (parts, body, _) = send(
        get("encoding=json&message=%7B%7D&compression=snappy".into()),
        false,
    )
    .await;
    assert_eq!(parts.status, 501);
    assert_eq!(json(&body)["code"], "unimplemented");
    // A method not marked NO_SIDE_EFFECTS takes POST only, and says so.
    let request = http::Request::get(format!(
        "{base}/grpc.health.v1.Health/Check?encoding=json&message=%7B%7D"
    ))
    .body(Full::new(Bytes::new()))
    .unwrap();
    let (parts, body, _) = send(request, false).await;
    assert_eq!(parts.status, 405);
    assert_eq!(parts.headers["allow"], "POST");
    assert_eq!(json(&body)["code"], "unimplemented");
    // Other verbs on a Connect path: 405 naming both.
    let request = http::Request::put(format!("{base}/calculator.v1.Calculator/Add"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let (parts, _, _) = send(request, false).await;
    assert_eq!(parts.status, 405);
    assert_eq!(parts.headers["allow"], "GET, POST");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_bodies_are_gzipped_both_ways() {
    let server = Server::builder()
        .add_service(calculator::service())
        .layer(tower::layer::layer_fn(AlwaysCompress))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let url = format!(
        "http://{}/calculator.v1.Calculator/Add",
        server.local_addr()
    );
    for http2 in [false, true] {
        let request = http::Request::post(&url)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .header("accept-encoding", "br, gzip")
            .body(Full::new(Bytes::from(gzip(br#"{"a":1,"b":2}"#))))
            .unwrap();
        let (parts, body, _) = send(request, http2).await;
        assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(parts.headers["content-encoding"], "gzip");
        assert_eq!(json(&gunzip(&body))["result"], 3);
        // Without accept-encoding the client accepts what it sent: identity here.
        let request = http::Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(br#"{"a":1,"b":2}"#)))
            .unwrap();
        let (parts, body, _) = send(request, http2).await;
        assert!(parts.headers.get("content-encoding").is_none());
        assert_eq!(json(&body)["result"], 3);
        // An encoding nobody speaks is unimplemented, naming the ones that work.
        let request = http::Request::post(&url)
            .header("content-type", "application/json")
            .header("content-encoding", "snappy")
            .body(Full::new(Bytes::from_static(b"whatever")))
            .unwrap();
        let (parts, body, _) = send(request, http2).await;
        assert_eq!(parts.status, 501);
        let error = json(&body);
        assert_eq!(error["code"], "unimplemented");
        assert!(
            error["message"].as_str().unwrap().contains("gzip"),
            "{error}"
        );
    }
    server.shutdown().await.unwrap();
}

/// gRPC-Web frames: a message envelope, then the trailers envelope (flag 0x80).
fn grpc_web_frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        frames.push((body[0], body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    assert!(body.is_empty(), "a partial frame");
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_binary_and_text_carry_trailers_in_the_body() {
    use base64::Engine;
    let server = start().await;
    let url = |method: &str| {
        format!(
            "http://{}/calculator.v1.Calculator/{method}",
            server.local_addr()
        )
    };
    let message = CalculateRequest { a: 6.0, b: 7.0 }.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    for text in [false, true] {
        let (content_type, body) = if text {
            let encoded = base64::engine::general_purpose::STANDARD.encode(&framed);
            ("application/grpc-web-text+proto", Bytes::from(encoded))
        } else {
            ("application/grpc-web+proto", Bytes::from(framed.clone()))
        };
        let request = http::Request::post(url("Multiply"))
            .header("content-type", content_type)
            .header("x-grpc-web", "1")
            .body(Full::new(body))
            .unwrap();
        let (parts, body, trailers) = send(request, false).await;
        assert_eq!(parts.status, 200);
        assert!(trailers.is_none(), "gRPC-Web sends no HTTP trailers");
        let body = if text {
            // Each chunk is base64 on its own; decode chunk by padded chunk.
            let text = String::from_utf8(body.to_vec()).unwrap();
            let mut out = Vec::new();
            for piece in text
                .split_inclusive('=')
                .filter(|p| !p.trim_matches('=').is_empty())
            {
                out.extend(
                    base64::engine::general_purpose::STANDARD
                        .decode(piece)
                        .unwrap(),
                );
            }
            out
        } else {
            body.to_vec()
        };
        let frames = grpc_web_frames(&body);
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert_eq!(frames[0].0, 0);
        assert_eq!(
            CalculateResponse::decode(&frames[0].1[..]).unwrap().result,
            42.0
        );
        assert_eq!(frames[1].0, 0x80);
        let trailer_text = String::from_utf8(frames[1].1.clone()).unwrap();
        assert!(
            trailer_text.contains("grpc-status: 0\r\n"),
            "{trailer_text}"
        );
    }
    // An error: a status in the headers (trailers-only) and in the body.
    let zero = CalculateRequest { a: 1.0, b: 0.0 }.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(zero.len() as u32).to_be_bytes());
    framed.extend_from_slice(&zero);
    let request = http::Request::post(url("Divide"))
        .header("content-type", "application/grpc-web+proto")
        .body(Full::new(Bytes::from(framed)))
        .unwrap();
    let (parts, body, _) = send(request, false).await;
    assert_eq!(parts.headers["grpc-status"], "3");
    let frames = grpc_web_frames(&body);
    assert_eq!(frames.last().unwrap().0, 0x80);
    let trailer_text = String::from_utf8(frames.last().unwrap().1.clone()).unwrap();
    assert!(
        trailer_text.contains("grpc-status: 3\r\n"),
        "{trailer_text}"
    );
    assert!(
        trailer_text.contains("grpc-message: cannot divide"),
        "{trailer_text}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_get_cors_preflights_and_exposed_headers() {
    let server = start().await;
    let url = format!(
        "http://{}/calculator.v1.Calculator/Add",
        server.local_addr()
    );
    let preflight = http::Request::options(&url)
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,x-tenant",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (parts, _, _) = send(preflight, false).await;
    assert_eq!(parts.status, 204);
    assert_eq!(parts.headers["access-control-allow-origin"], "*");
    assert_eq!(
        parts.headers["access-control-allow-headers"],
        "content-type,x-grpc-web,x-tenant"
    );
    assert!(
        parts.headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let call = http::Request::post(&url)
        .header("origin", "https://app.example")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"a":1,"b":2}"#)))
        .unwrap();
    let (parts, _, _) = send(call, false).await;
    assert_eq!(parts.headers["access-control-allow-origin"], "*");
    let exposed = parts.headers["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(
        exposed.contains("grpc-status") && exposed.contains("grpc-message"),
        "{exposed}"
    );
    // Locked down to one origin: others get no CORS headers.
    let strict = Server::builder()
        .add_service(calculator::service())
        .cors(ferry::server::Cors::Origins(vec![
            "https://ok.example".into(),
        ]))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let url = format!(
        "http://{}/calculator.v1.Calculator/Add",
        strict.local_addr()
    );
    for (origin, allowed) in [
        ("https://ok.example", true),
        ("https://evil.example", false),
    ] {
        let call = http::Request::post(&url)
            .header("origin", origin)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(br#"{"a":1,"b":2}"#)))
            .unwrap();
        let (parts, _, _) = send(call, false).await;
        assert_eq!(
            parts.headers.get("access-control-allow-origin").is_some(),
            allowed,
            "{origin}"
        );
    }
    server.shutdown().await.unwrap();
}

async fn grpc(
    server: &ServerHandle,
    path: &str,
    headers: &[(&str, &str)],
) -> (http::response::Parts, Option<http::HeaderMap>) {
    let message = CalculateRequest { a: 1.0, b: 1.0 }.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let mut request = http::Request::post(format!("http://{}{path}", server.local_addr()))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let (parts, _, trailers) =
        send(request.body(Full::new(Bytes::from(framed))).unwrap(), true).await;
    (parts, trailers)
}

fn grpc_status(
    parts: &http::response::Parts,
    trailers: &Option<http::HeaderMap>,
) -> (String, String) {
    let find = |key: &str| {
        trailers
            .as_ref()
            .and_then(|t| t.get(key))
            .or_else(|| parts.headers.get(key))
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    (find("grpc-status"), find("grpc-message"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_details_real_clients_rely_on() {
    let server = start().await;
    let add = "/calculator.v1.Calculator/Add";
    // The server says which encodings it reads.
    let (parts, trailers) = grpc(&server, add, &[]).await;
    assert_eq!(grpc_status(&parts, &trailers).0, "0");
    assert_eq!(parts.headers["grpc-accept-encoding"], "gzip,identity");
    // Sub-millisecond timeouts have passed by the time the call is dispatched.
    for timeout in ["1n", "1u"] {
        let (parts, trailers) = grpc(&server, add, &[("grpc-timeout", timeout)]).await;
        assert_eq!(
            grpc_status(&parts, &trailers).0,
            "4",
            "grpc-timeout {timeout}"
        );
    }
    // An unsupported encoding reads well (no Rust debug text).
    let (parts, trailers) = grpc(&server, add, &[("grpc-encoding", "snappy")]).await;
    let (code, message) = grpc_status(&parts, &trailers);
    assert_eq!(code, "12");
    let message = percent_encoding::percent_decode_str(&message)
        .decode_utf8_lossy()
        .into_owned();
    assert!(
        message.contains("\"snappy\"") && message.contains("gzip") && !message.contains("Ok("),
        "{message}"
    );
    // JSON over gRPC is refused with a clear error, never decoded as protobuf.
    let message = br#"{"a":1,"b":1}"#;
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    let request = http::Request::post(format!("http://{}{add}", server.local_addr()))
        .header("content-type", "application/grpc+json")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed)))
        .unwrap();
    let (parts, _, trailers) = send(request, true).await;
    let (code, message) = grpc_status(&parts, &trailers);
    assert_eq!(code, "12");
    assert!(
        message.contains("grpc%2Bjson") || message.contains("grpc+json"),
        "{message}"
    );
    server.shutdown().await.unwrap();
}

/// Writes a raw HTTP/1.1 request on a kept-alive connection and reads one response head and
/// body (by content-length).
async fn exchange(
    stream: &mut tokio::net::TcpStream,
    head: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut request = head.as_bytes().to_vec();
    request.extend_from_slice(body);
    let (mut reader, mut writer) = stream.split();
    let write = async {
        // A server that closes under a large body makes this fail; that is fine as long as
        // the response arrived.
        let _ = writer.write_all(&request).await;
    };
    let read = async {
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 8192];
            let n = reader.read(&mut chunk).await.expect("read the response");
            assert!(n > 0, "the connection closed before the response");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < end + 4 + length {
                    let n = reader.read(&mut chunk).await.expect("read the body");
                    assert!(n > 0, "the body was cut short");
                    buf.extend_from_slice(&chunk[..n]);
                }
                let status = head[9..12].parse().unwrap();
                return (status, head, buf[end + 4..end + 4 + length].to_vec());
            }
        }
    };
    let ((), response) = tokio::join!(write, read);
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_replies_keep_http1_keep_alive_connections_working() {
    let server = start().await;
    let mut stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let body = vec![b' '; 10_000];
    let post = |path: &str, content_type: &str, len: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    // Answered before reading a 10 kB body: 404, 415, 405 — and the connection carries on.
    let cases = [
        (post("/nowhere", "application/json", body.len()), 404),
        (post("/add", "text/plain", body.len()), 415),
        (
            format!(
                "PUT /calculator.v1.Calculator/Add HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ),
            405,
        ),
    ];
    for (head, expected) in cases {
        let (status, response_head, _) = exchange(&mut stream, &head, &body).await;
        assert_eq!(status, expected, "{head}");
        assert!(
            !response_head.contains("connection: close"),
            "{response_head}"
        );
        let add = br#"{"a":1,"b":2}"#;
        let (status, _, reply) = exchange(
            &mut stream,
            &post("/add", "application/json", add.len()),
            add,
        )
        .await;
        assert_eq!(
            status, 200,
            "the next request on the same connection, after {expected}"
        );
        assert_eq!(json(&reply)["result"], 3);
    }
    // A body too large to drain: the answer still arrives, saying the connection ends.
    let mut fresh = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let big = vec![b' '; 4 * 1024 * 1024];
    let (status, response_head, _) = exchange(
        &mut fresh,
        &post("/nowhere", "application/json", big.len()),
        &big,
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        response_head.contains("connection: close"),
        "{response_head}"
    );
    server.shutdown().await.unwrap();
}
