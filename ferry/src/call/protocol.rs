//! The wire protocols a call can travel over.

/// A wire protocol. Ferry's client speaks the first three (named by a target's scheme: the
/// same meaning in every part of Ferry — the `Channel`, the `ferry` CLI, the docs); its server
/// answers all five on one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Ferry's native protocol: `ferry://host:port`, or a bare `host:port`.
    Native,
    /// gRPC over HTTP/2: `grpc://host:port`.
    Grpc,
    /// The Connect protocol over HTTP/1.1 or HTTP/2: `http://host:port`.
    Connect,
    /// gRPC-Web (browsers), served only.
    GrpcWeb,
    /// REST routes from `google.api.http` annotations, served only.
    Rest,
}

impl Protocol {
    /// The scheme that names this protocol in a target (`None` for the served-only ones).
    pub fn scheme(self) -> Option<&'static str> {
        match self {
            Protocol::Native => Some("ferry"),
            Protocol::Grpc => Some("grpc"),
            Protocol::Connect => Some("http"),
            Protocol::GrpcWeb | Protocol::Rest => None,
        }
    }

    /// A short lower-case name for logs and metrics: `native`, `grpc`, `connect`,
    /// `grpc_web`, `rest`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Grpc => "grpc",
            Protocol::Connect => "connect",
            Protocol::GrpcWeb => "grpc_web",
            Protocol::Rest => "rest",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
