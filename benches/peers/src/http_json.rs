//! HTTP/JSON echo over HTTP/2 (h2c, one connection): Ferry's JSON gateway and axum serve the
//! same `POST /echo.v1.Echo/Echo` with `{"payload": "<base64>"}` (proto3 JSON for `bytes`); one
//! hyper HTTP/2 client loads both.

use axum::Json;
use axum::serve::ListenerExt;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};

use crate::load::{self, Measured};

/// The echo message in the proto3 JSON mapping.
#[derive(Serialize, Deserialize)]
struct EchoJson {
    payload: String,
}

/// The path both servers answer (Connect-style unary call).
const PATH: &str = "/echo.v1.Echo/Echo";

/// axum: decodes the JSON and the base64 payload, then encodes both back — the same work
/// Ferry's gateway does between JSON and the protobuf message its handler sees.
async fn axum_echo(
    Json(request): Json<EchoJson>,
) -> Result<Json<EchoJson>, axum::http::StatusCode> {
    let payload = STANDARD
        .decode(request.payload)
        .map_err(|_| axum::http::StatusCode::BAD_REQUEST)?;
    Ok(Json(EchoJson {
        payload: STANDARD.encode(payload),
    }))
}

pub async fn serve_axum(listener: TcpListener) {
    let app = axum::Router::new().route(PATH, axum::routing::post(axum_echo));
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let _ = axum::serve(listener, app).await;
}

pub async fn client(args: crate::ClientArgs) -> Result<Measured, String> {
    let crate::ClientArgs {
        addr,
        size,
        concurrency,
        warmup,
        window,
    } = args;
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let body = Bytes::from(
        serde_json::to_vec(&EchoJson {
            payload: STANDARD.encode(vec![0xabu8; size]),
        })
        .map_err(|e| e.to_string())?,
    );
    let uri = format!("http://{addr}{PATH}");
    load::closed_loop(concurrency, warmup, window, move || {
        let (mut sender, body, uri) = (sender.clone(), body.clone(), uri.clone());
        async move {
            let request = hyper::Request::post(uri)
                .header("content-type", "application/json")
                .body(Full::new(body))
                .map_err(|e| e.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status()));
            }
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            let reply: EchoJson = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            let payload = STANDARD.decode(reply.payload).map_err(|e| e.to_string())?;
            crate::check_len(payload.len(), size)
        }
    })
    .await
}
