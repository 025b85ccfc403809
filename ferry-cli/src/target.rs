//! Targets (`ferry://`, `grpc://`, `http://` + `host:port`) and the transports behind them.

use std::time::Duration;

use bytes::Bytes;
use ferry::{Channel, Code, Metadata, Request, Status};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::error::{CliResult, Failure};

/// The protocol a target names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Ferry's native protocol (`ferry://`, or no scheme).
    Native,
    /// gRPC over cleartext HTTP/2 (`grpc://`).
    Grpc,
    /// Connect-style JSON over HTTP/1.1 (`http://`).
    Http,
}

/// A parsed target: protocol and `host:port`.
#[derive(Clone, Debug)]
pub struct Target {
    /// How calls travel.
    pub protocol: Protocol,
    /// `host:port`.
    pub authority: String,
}

impl Target {
    /// Parses `ferry://host:port`, `grpc://host:port`, `http://host:port` or `host:port`.
    pub fn parse(text: &str) -> CliResult<Target> {
        let (protocol, authority) =
            ferry::client::parse_target(text).map_err(|e| Failure::usage(e.message()))?;
        let protocol = match protocol {
            ferry::client::Protocol::Native => Protocol::Native,
            ferry::client::Protocol::Grpc => Protocol::Grpc,
            ferry::client::Protocol::Connect => Protocol::Http,
        };
        Ok(Target {
            protocol,
            authority: authority.to_owned(),
        })
    }

    /// The target as text, with its scheme.
    pub fn url(&self) -> String {
        let scheme = match self.protocol {
            Protocol::Native => "ferry",
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        };
        format!("{scheme}://{}", self.authority)
    }

    /// A gRPC channel to the same `host:port`: server reflection is gRPC-only, and a Ferry
    /// server speaks every protocol on one port.
    pub async fn grpc_channel(&self, connect_timeout: Duration) -> CliResult<Channel> {
        let channel = Channel::builder(format!("grpc://{}", self.authority))
            .connect_timeout(connect_timeout)
            .connect()
            .await?;
        Ok(channel)
    }

    /// Opens `connections` transports of this target's protocol.
    pub async fn connect(
        &self,
        connections: usize,
        connect_timeout: Duration,
    ) -> CliResult<Transport> {
        match self.protocol {
            Protocol::Native | Protocol::Grpc => {
                let url = match self.protocol {
                    Protocol::Native => format!("ferry://{}", self.authority),
                    _ => format!("grpc://{}", self.authority),
                };
                let mut channels = Vec::with_capacity(connections.max(1));
                for _ in 0..connections.max(1) {
                    let channel = Channel::builder(url.clone())
                        .connect_timeout(connect_timeout)
                        .connect()
                        .await?;
                    channels.push(channel);
                }
                Ok(Transport::Channels(channels))
            }
            Protocol::Http => {
                let slots = (0..connections.max(1))
                    .map(|_| tokio::sync::Mutex::new(None))
                    .collect();
                let http = HttpJson {
                    authority: self.authority.clone(),
                    connect_timeout,
                    connections: slots,
                };
                // Connect one now, so a wrong address fails before any call.
                http.connection(&mut *http.connections[0].lock().await)
                    .await?;
                Ok(Transport::Http(std::sync::Arc::new(http)))
            }
        }
    }
}

/// An open way to make unary calls: Ferry channels (native or gRPC), or HTTP/JSON.
#[derive(Clone)]
pub enum Transport {
    /// One channel per connection; calls are spread over them by index.
    Channels(Vec<Channel>),
    /// Connect-protocol JSON over HTTP/1.1.
    Http(std::sync::Arc<HttpJson>),
}

/// A Connect JSON client over a fixed number of HTTP/1.1 connections, each carrying one call
/// at a time (HTTP/1.1 does not multiplex); opened lazily and re-opened after errors.
pub struct HttpJson {
    authority: String,
    connect_timeout: Duration,
    connections: Vec<tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>>,
}

/// One unary call's outcome: response metadata and the encoded body (protobuf for channels,
/// JSON for HTTP).
pub type CallResult = Result<(Metadata, Bytes), Status>;

impl Transport {
    /// Whether bodies are JSON (HTTP) rather than protobuf.
    pub fn is_json(&self) -> bool {
        matches!(self, Transport::Http(_))
    }

    /// Calls `path` (`/package.Service/Method`) with an encoded body on connection `conn`.
    pub async fn call(
        &self,
        conn: usize,
        path: &str,
        metadata: &Metadata,
        timeout: Option<Duration>,
        body: Bytes,
    ) -> CallResult {
        match self {
            Transport::Channels(channels) => {
                let channel = &channels[conn % channels.len()];
                let mut request = Request::new(ferry::call::Body::Message(body));
                request.set_method(path.to_owned());
                *request.metadata_mut() = metadata.clone();
                if let Some(timeout) = timeout {
                    request.set_timeout(timeout);
                }
                let response = channel.call(request).await?;
                let (metadata, body) = response.into_parts();
                Ok((metadata, body.into_message().await?))
            }
            Transport::Http(http) => {
                // As Ferry's own clients do: a zero timeout fails before sending.
                if timeout.is_some_and(|t| t.is_zero()) {
                    return Err(Status::deadline_exceeded(
                        "deadline passed before the call was sent",
                    ));
                }
                http.call(conn, path, metadata, timeout, body).await
            }
        }
    }
}

impl HttpJson {
    /// The connection in `slot`, opening one if it is missing or closed.
    async fn connection<'a>(
        &self,
        slot: &'a mut Option<SendRequest<Full<Bytes>>>,
    ) -> Result<&'a mut SendRequest<Full<Bytes>>, Status> {
        if slot.as_ref().is_some_and(SendRequest::is_closed) {
            *slot = None;
        }
        if slot.is_none() {
            *slot = Some(self.open().await?);
        }
        slot.as_mut()
            .ok_or_else(|| Status::unavailable("no HTTP connection"))
    }

    async fn open(&self) -> Result<SendRequest<Full<Bytes>>, Status> {
        let authority = &self.authority;
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(authority),
        )
        .await
        .map_err(|_| {
            Status::unavailable(format!(
                "connecting to {authority} timed out after {:?}",
                self.connect_timeout
            ))
        })?
        .map_err(|e| Status::unavailable(format!("cannot connect to {authority}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| Status::unavailable(format!("HTTP handshake with {authority}: {e}")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// One call on connection `conn` (modulo the pool size), which it holds until the reply
    /// has been read.
    async fn call(
        &self,
        conn: usize,
        path: &str,
        metadata: &Metadata,
        timeout: Option<Duration>,
        body: Bytes,
    ) -> CallResult {
        let mut builder = http::Request::post(path)
            .header(http::header::HOST, &self.authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("ferry-cli/", env!("CARGO_PKG_VERSION")),
            );
        for (key, value) in metadata.iter() {
            if key.ends_with("-bin") {
                use base64::Engine;
                let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(value);
                builder = builder.header(key, encoded);
            } else {
                builder = builder.header(key, value);
            }
        }
        if let Some(t) = timeout {
            builder = builder.header("connect-timeout-ms", t.as_millis().max(1).to_string());
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| Status::invalid_argument(format!("cannot build the request: {e}")))?;
        let mut slot = self.connections[conn % self.connections.len()].lock().await;
        let exchange = async {
            let sender = self.connection(&mut slot).await?;
            sender
                .ready()
                .await
                .map_err(|e| Status::unavailable(format!("HTTP connection closed: {e}")))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| Status::unavailable(format!("HTTP request failed: {e}")))?;
            let (parts, body) = response.into_parts();
            let data = body
                .collect()
                .await
                .map_err(|e| Status::unavailable(format!("reading the HTTP response failed: {e}")))?
                .to_bytes();
            Ok::<_, Status>((parts, data))
        };
        let outcome = match timeout {
            Some(t) => tokio::time::timeout(t, exchange).await.unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!("no reply within {t:?}")))
            }),
            None => exchange.await,
        };
        let (parts, data) = match outcome {
            Ok(reply) => reply,
            Err(status) => {
                // The connection may be mid-exchange: never reuse it.
                *slot = None;
                return Err(status);
            }
        };
        drop(slot);
        if parts.status != http::StatusCode::OK {
            return Err(connect_error(parts.status, &data));
        }
        let mut out = Metadata::new();
        for (name, value) in &parts.headers {
            let key = name.as_str();
            if key.ends_with("-bin") {
                use base64::Engine;
                let text = value.as_bytes();
                let text = text
                    .strip_suffix(b"==")
                    .or_else(|| text.strip_suffix(b"="))
                    .unwrap_or(text);
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD_NO_PAD.decode(text) {
                    out.insert_bin(key, bytes);
                }
            } else if let Ok(text) = value.to_str() {
                out.append(key, text);
            }
        }
        Ok((out, data))
    }
}

/// A Connect error body (`{"code": "...", "message": "..."}`), or the HTTP status's code.
fn connect_error(http: http::StatusCode, body: &[u8]) -> Status {
    #[derive(serde::Deserialize)]
    struct ConnectError {
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(error) = serde_json::from_slice::<ConnectError>(body)
        && let Some(code) = Code::from_name(&error.code)
    {
        return Status::new(code, error.message);
    }
    let code = match http.as_u16() {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        408 | 504 => Code::DeadlineExceeded,
        429 | 502 | 503 => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("HTTP status {http}"))
}

/// Parses `5s`, `250ms`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 5s, 250ms or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "us" | "µs" => value / 1_000_000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("bad duration {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t = Target::parse("http://127.0.0.1:80/").unwrap();
        assert_eq!(
            (t.protocol, t.authority.as_str()),
            (Protocol::Http, "127.0.0.1:80")
        );
        assert_eq!(Target::parse("h:1").unwrap().protocol, Protocol::Native);
        assert_eq!(
            Target::parse("grpc://h:1").unwrap().protocol,
            Protocol::Grpc
        );
        assert!(Target::parse("https://h:1").is_err());
        assert!(Target::parse("ferry://h").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("fast").is_err());
    }
}
