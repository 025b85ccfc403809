//! Targets (`ferry://`, `grpc://`, `http://` + `host:port`) and the channels that call them.
//!
//! The scheme means what it means everywhere in Ferry ([`ferry::client::parse_target`] is the
//! one parser): `ferry://` (or none) the native protocol, `grpc://` gRPC over cleartext
//! HTTP/2, `http://` the Connect protocol. Every call goes through a [`ferry::Channel`].

use std::time::Duration;

use ferry::Channel;
use ferry::client::Protocol;

use crate::error::{CliResult, Failure};

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
        Ok(Target {
            protocol,
            authority,
        })
    }

    /// The target as text, with its scheme.
    pub fn url(&self) -> String {
        // `parse_target` yields only protocols a client speaks, each with a scheme.
        let scheme = self.protocol.scheme().unwrap_or("ferry");
        format!("{scheme}://{}", self.authority)
    }

    /// The protocol's name as reports show it: `native`, `grpc` or `connect`.
    pub fn protocol_name(&self) -> &'static str {
        self.protocol.as_str()
    }

    /// A channel of this target's protocol, connected now so a wrong address fails here.
    pub async fn channel(&self, connect_timeout: Duration) -> CliResult<Channel> {
        connect(self.url(), connect_timeout).await
    }

    /// The channel server reflection goes over: the target's own protocol, as every call.
    ///
    /// Reflection (`grpc.reflection.v1`) is a bidirectionally streaming service; Ferry serves
    /// it on every protocol (over the Connect protocol it needs HTTP/2, which Ferry's Connect
    /// client uses for bidirectional calls). Servers that offer reflection only over gRPC
    /// (tonic, grpc-go) are reached with `grpc://`.
    pub async fn reflection_channel(&self, connect_timeout: Duration) -> CliResult<Channel> {
        connect(self.url(), connect_timeout).await
    }
}

async fn connect(url: String, connect_timeout: Duration) -> CliResult<Channel> {
    let channel = Channel::builder(url)
        .connect_timeout(connect_timeout)
        .connect()
        .await?;
    Ok(channel)
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
    fn targets_parse_and_display() {
        let t = Target::parse("http://127.0.0.1:80/").unwrap();
        assert_eq!(
            (t.protocol, t.authority.as_str()),
            (Protocol::Connect, "127.0.0.1:80")
        );
        assert_eq!(t.url(), "http://127.0.0.1:80");
        assert_eq!(t.protocol_name(), "connect");
        let bare = Target::parse("h:1").unwrap();
        assert_eq!(
            (bare.protocol, bare.url()),
            (Protocol::Native, "ferry://h:1".into())
        );
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
