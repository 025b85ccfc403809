//! Telling a TLS ClientHello from plaintext by the first byte, for the one-port server.

/// The first byte of every TLS connection: the record content type `handshake` (22, `0x16`).
///
/// No plaintext protocol Ferry serves starts with it: the native preface starts with its magic,
/// HTTP/1.1 with an ASCII method, HTTP/2 with `PRI * HTTP/2.0`.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// Whether a connection whose first byte is `first` is a TLS client starting a handshake.
///
/// The server peeks one byte (`TcpStream::peek`) and then:
///
/// - **TLS byte, certificate configured**: hands the stream to the TLS acceptor.
/// - **TLS byte, no certificate**: closes the connection. The client's TLS stack reports a
///   handshake failure (the peer closed the connection); logging "TLS handshake on a plaintext
///   port: configure a certificate or connect without TLS" at debug level helps the operator.
/// - **Plaintext, certificate configured and plaintext not allowed**
///   (`ServerTlsConfig::allow_plaintext(false)`, the default): if the bytes look like HTTP/1.x,
///   answer [`PLAINTEXT_ON_TLS_PORT_RESPONSE`] and close, so `curl http://` shows why; for the
///   native preface or HTTP/2's preface, close the connection (neither protocol has a
///   pre-handshake error the client would display better than a clean close).
/// - **Plaintext, plaintext allowed or no certificate**: serve it as today.
///
/// Any bytes after the first are left to rustls, which refuses garbage and TLS 1.0/1.1
/// ClientHellos with an alert and an error, never a panic.
///
/// ```
/// use ferry::tls::is_tls_handshake;
/// assert!(is_tls_handshake(0x16));
/// assert!(!is_tls_handshake(b'P')); // "PRI * HTTP/2.0", "POST /"
/// ```
pub fn is_tls_handshake(first: u8) -> bool {
    first == TLS_HANDSHAKE_BYTE
}

/// What a server answers an HTTP/1.x request sent in plaintext to a port that requires TLS.
///
/// nginx answers the same mistake with a 400 too; the body says what to do instead.
pub const PLAINTEXT_ON_TLS_PORT_RESPONSE: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: text/plain\r\n\
connection: close\r\n\
content-length: 57\r\n\
\r\n\
this port requires TLS: connect with https:// or grpcs://";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_byte_only() {
        assert!(is_tls_handshake(0x16));
        for first in [b'G', b'P', 0x00, 0x15, 0x17, 0x80] {
            assert!(!is_tls_handshake(first));
        }
    }

    #[test]
    fn plaintext_response_length_is_right() {
        let text = PLAINTEXT_ON_TLS_PORT_RESPONSE;
        let split = text
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| i + 4);
        assert_eq!(split.map(|start| text.len() - start), Some(57));
    }
}
