//! TLS with real rustls peers on 127.0.0.1: ALPN, certificate reload under an open connection,
//! refused certificates and protocol versions, mTLS identities, session resumption.
//! Certificates are generated per test with rcgen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry::tls::{ALPN_FERRY, ALPN_H2, ClientTlsConfig, PeerIdentity, ServerTlsConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::HandshakeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error + Send + Sync>;
type R<T = ()> = Result<T, Error>;

const PATIENCE: Duration = Duration::from_secs(10);

/// A test certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and key, PEM-encoded.
struct Leaf {
    cert: String,
    key: String,
}

enum Validity {
    Now,
    Expired,
}

impl Ca {
    fn new(name: &str) -> R<Ca> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        })
    }

    fn leaf(&self, cn: &str, sans: &[SanType], client: bool, validity: Validity) -> R<Leaf> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Acme");
        params.subject_alt_names = sans.to_vec();
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if let Validity::Expired = validity {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    fn server(&self, cn: &str) -> R<Leaf> {
        let sans = [
            SanType::DnsName("localhost".try_into()?),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
        self.leaf(cn, &sans, false, Validity::Now)
    }
}

fn temp_dir(name: &str) -> R<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ferry-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Replaces a file atomically, the way a certificate manager should.
fn replace(path: &Path, contents: &str) -> R {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// What the server saw for one connection.
#[derive(Debug)]
struct Accepted {
    result: Result<Option<PeerIdentity>, String>,
    alpn: Option<Vec<u8>>,
}

/// A TLS echo server: each connection's handshake outcome is reported, then bytes are echoed.
async fn echo_server(tls: ServerTlsConfig) -> R<(SocketAddr, mpsc::UnboundedReceiver<Accepted>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(mut stream) => {
                        let (_, conn) = stream.get_ref();
                        let _ = tx.send(Accepted {
                            result: Ok(PeerIdentity::from_connection(conn)),
                            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                        });
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = stream.read(&mut buf).await {
                            if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            let _ = stream.flush().await;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Accepted {
                            result: Err(e.to_string()),
                            alpn: None,
                        });
                    }
                }
            });
        }
    });
    Ok((addr, rx))
}

type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(
    client: &ClientTlsConfig,
    addr: SocketAddr,
    host: &str,
    alpn: &[&[u8]],
) -> std::io::Result<ClientStream> {
    let tcp = TcpStream::connect(addr).await?;
    client.connect(tcp, host, alpn).await
}

async fn echo(stream: &mut ClientStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(msg).await?;
    stream.flush().await?;
    let mut buf = vec![0u8; msg.len()];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

fn served_cert(stream: &ClientStream) -> Option<Vec<u8>> {
    let (_, conn) = stream.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
}

fn der_of(pem: &str) -> R<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    Ok(CertificateDer::from_pem_slice(pem.as_bytes())?
        .as_ref()
        .to_vec())
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Accepted>) -> R<Accepted> {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await?
        .ok_or_else(|| "server stopped".into())
}

fn client_for(ca: &Ca) -> R<ClientTlsConfig> {
    Ok(ClientTlsConfig::builder()
        .ca_pem(ca.pem.as_bytes())
        .build()?)
}

#[tokio::test]
async fn alpn_is_negotiated_per_protocol() -> R {
    let ca = Ca::new("test CA")?;
    let leaf = ca.server("server")?;
    let tls = ServerTlsConfig::from_pem(leaf.cert.as_bytes(), leaf.key.as_bytes())?;
    assert!(!tls.is_plaintext_allowed());
    let (addr, mut seen) = echo_server(tls).await?;
    let client = client_for(&ca)?;
    for alpn in [ALPN_FERRY, ALPN_H2, b"http/1.1"] {
        let mut stream = connect(&client, addr, "localhost", &[alpn]).await?;
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
        assert_eq!(echo(&mut stream, b"ping").await?, b"ping");
        assert_eq!(next(&mut seen).await?.alpn.as_deref(), Some(alpn));
    }
    // An ALPN id the server does not speak is refused (RFC 7301 no_application_protocol).
    assert!(
        connect(&client, addr, "localhost", &[b"spdy/3"])
            .await
            .is_err()
    );
    assert!(next(&mut seen).await?.result.is_err());
    // Dialing an IP address verifies the IP SAN.
    let mut by_ip = connect(&client, addr, "127.0.0.1", &[ALPN_FERRY]).await?;
    assert_eq!(echo(&mut by_ip, b"ip").await?, b"ip");
    Ok(())
}

#[tokio::test]
async fn reload_serves_new_certificate_and_keeps_open_connections() -> R {
    let dir = temp_dir("reload")?;
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    let ca = Ca::new("test CA")?;
    let first = ca.server("first")?;
    replace(&cert_path, &first.cert)?;
    replace(&key_path, &first.key)?;
    let tls = ServerTlsConfig::from_pem_files(&cert_path, &key_path)?
        .reload_interval(Some(Duration::from_millis(50)));
    let (addr, _seen) = echo_server(tls.clone()).await?;
    let client = client_for(&ca)?;

    let mut open = connect(&client, addr, "localhost", &[ALPN_FERRY]).await?;
    assert_eq!(served_cert(&open), Some(der_of(&first.cert)?));
    assert_eq!(echo(&mut open, b"before").await?, b"before");

    // Rotate: the key first, then the certificate (a poll may see them out of step in between;
    // that reload is refused and the old certificate kept until both match).
    let second = ca.server("second")?;
    replace(&key_path, &second.key)?;
    replace(&cert_path, &second.cert)?;
    let want = der_of(&second.cert)?;
    let started = Instant::now();
    loop {
        // A fresh client each time, so no resumed session hides the certificate.
        let probe = connect(&client_for(&ca)?, addr, "localhost", &[ALPN_FERRY]).await?;
        if served_cert(&probe) == Some(want.clone()) {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "new certificate never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the reload still works, on its old certificate.
    assert_eq!(echo(&mut open, b"after").await?, b"after");
    assert_eq!(served_cert(&open), Some(der_of(&first.cert)?));

    // A broken file is refused by `reload` and the current certificate stays.
    replace(
        &cert_path,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )?;
    assert!(tls.reload().is_err());
    let probe = connect(&client_for(&ca)?, addr, "localhost", &[ALPN_FERRY]).await?;
    assert_eq!(served_cert(&probe), Some(want));
    // A certificate that does not match the key is refused too.
    let third = ca.server("third")?;
    replace(&cert_path, &third.cert)?;
    let err = tls
        .reload()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("do not form a usable pair"), "{err}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn bad_server_certificates_are_refused_by_the_client() -> R {
    let ca = Ca::new("test CA")?;
    let sans = [SanType::DnsName("localhost".try_into()?)];
    let expired = ca.leaf("expired", &sans, false, Validity::Expired)?;
    let tls = ServerTlsConfig::from_pem(expired.cert.as_bytes(), expired.key.as_bytes())?;
    let (addr, _) = echo_server(tls).await?;
    let err = connect(&client_for(&ca)?, addr, "localhost", &[ALPN_FERRY])
        .await
        .err();
    let msg = err
        .map(|e| e.to_string().to_lowercase())
        .unwrap_or_default();
    assert!(msg.contains("expired"), "{msg}");

    let good = ca.server("server")?;
    let tls = ServerTlsConfig::from_pem(good.cert.as_bytes(), good.key.as_bytes())?;
    let (addr, mut seen) = echo_server(tls).await?;
    // Wrong CA.
    let other = Ca::new("other CA")?;
    let err = connect(&client_for(&other)?, addr, "localhost", &[ALPN_FERRY])
        .await
        .err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("UnknownIssuer"), "{msg}");
    assert!(next(&mut seen).await?.result.is_err());
    // Wrong host name.
    let err = connect(&client_for(&ca)?, addr, "calc.example", &[ALPN_FERRY])
        .await
        .err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("not valid for name"), "{msg}");
    // ... unless the name is overridden to one the certificate has.
    let renamed = ClientTlsConfig::builder()
        .ca_pem(ca.pem.as_bytes())
        .server_name("localhost")
        .build()?;
    let mut ok = connect(&renamed, addr, "calc.example", &[ALPN_FERRY]).await?;
    assert_eq!(echo(&mut ok, b"x").await?, b"x");
    Ok(())
}

#[tokio::test]
async fn mtls_requires_and_reports_client_identity() -> R {
    let ca = Ca::new("server CA")?;
    let clients = Ca::new("clients CA")?;
    let leaf = ca.server("server")?;
    let tls = ServerTlsConfig::from_pem(leaf.cert.as_bytes(), leaf.key.as_bytes())?
        .client_ca_pem(clients.pem.as_bytes())?;
    assert!(tls.is_client_cert_required());
    let (addr, mut seen) = echo_server(tls).await?;

    // No client certificate: the server refuses the handshake (in TLS 1.3 the client learns it
    // on its first read).
    let refused = async {
        let mut stream = connect(&client_for(&ca)?, addr, "localhost", &[ALPN_FERRY]).await?;
        echo(&mut stream, b"hello").await?;
        Ok::<_, Error>(())
    };
    assert!(refused.await.is_err());
    let err = next(&mut seen).await?.result.err().unwrap_or_default();
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // A certificate from another CA is refused too.
    let stranger = ca.leaf("stranger", &[], true, Validity::Now)?;
    let client = ClientTlsConfig::builder()
        .ca_pem(ca.pem.as_bytes())
        .identity_pem(stranger.cert.as_bytes(), stranger.key.as_bytes())
        .build()?;
    let refused = async {
        let mut stream = connect(&client, addr, "localhost", &[ALPN_FERRY]).await?;
        echo(&mut stream, b"hello").await?;
        Ok::<_, Error>(())
    };
    assert!(refused.await.is_err());
    assert!(next(&mut seen).await?.result.is_err());

    // A good one: the server sees subject, SPIFFE id, DNS and IP SANs.
    let spiffe = "spiffe://acme.example/ns/prod/sa/front";
    let sans = [
        SanType::URI(spiffe.try_into()?),
        SanType::DnsName("front.prod.svc".try_into()?),
        SanType::IpAddress([10, 1, 2, 3].into()),
    ];
    let front = clients.leaf("front", &sans, true, Validity::Now)?;
    let client = ClientTlsConfig::builder()
        .ca_pem(ca.pem.as_bytes())
        .identity_pem(front.cert.as_bytes(), front.key.as_bytes())
        .build()?;
    let mut stream = connect(&client, addr, "localhost", &[ALPN_FERRY]).await?;
    assert_eq!(echo(&mut stream, b"hi").await?, b"hi");
    let peer = next(&mut seen).await?.result?.ok_or("no peer identity")?;
    assert_eq!(peer.subject(), "O=Acme,CN=front");
    assert_eq!(peer.spiffe_id(), Some(spiffe));
    assert_eq!(peer.dns_names(), ["front.prod.svc"]);
    assert_eq!(peer.ip_addresses(), [std::net::IpAddr::from([10, 1, 2, 3])]);
    assert_eq!(
        peer.certificate_der().as_ref(),
        der_of(&front.cert)?.as_slice()
    );
    Ok(())
}

#[tokio::test]
async fn client_ca_file_is_reloaded() -> R {
    let dir = temp_dir("client-ca")?;
    let ca_path = dir.join("clients-ca.pem");
    let ca = Ca::new("server CA")?;
    let (old_clients, new_clients) = (Ca::new("old clients CA")?, Ca::new("new clients CA")?);
    replace(&ca_path, &old_clients.pem)?;
    let leaf = ca.server("server")?;
    let tls = ServerTlsConfig::from_pem(leaf.cert.as_bytes(), leaf.key.as_bytes())?
        .client_ca_file(&ca_path)?
        .reload_interval(Some(Duration::from_millis(50)));
    let (addr, _) = echo_server(tls).await?;
    let card = new_clients.leaf("front", &[], true, Validity::Now)?;
    let client = || {
        ClientTlsConfig::builder()
            .ca_pem(ca.pem.as_bytes())
            .identity_pem(card.cert.as_bytes(), card.key.as_bytes())
            .build()
    };
    let attempt = |client: ClientTlsConfig| async move {
        let mut stream = connect(&client, addr, "localhost", &[ALPN_FERRY]).await?;
        echo(&mut stream, b"hi").await?;
        Ok::<_, Error>(())
    };
    assert!(attempt(client()?).await.is_err());
    replace(&ca_path, &new_clients.pem)?;
    let started = Instant::now();
    while attempt(client()?).await.is_err() {
        assert!(started.elapsed() < PATIENCE, "client CA never reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn requiring_client_certs_without_a_ca_refuses_everyone() -> R {
    let ca = Ca::new("test CA")?;
    let leaf = ca.server("server")?;
    let tls = ServerTlsConfig::from_pem(leaf.cert.as_bytes(), leaf.key.as_bytes())?
        .require_client_cert(true);
    let (addr, mut seen) = echo_server(tls).await?;
    assert!(
        connect(&client_for(&ca)?, addr, "localhost", &[ALPN_FERRY])
            .await
            .is_err()
    );
    assert!(next(&mut seen).await?.result.is_err());
    Ok(())
}

/// A TLS 1.0 (or 1.1) ClientHello with two RSA/AES-CBC suites and no extensions.
fn legacy_client_hello(minor: u8) -> Vec<u8> {
    let mut body = vec![3, minor];
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0, 4, 0x00, 0x2f, 0x00, 0x35]); // cipher suites
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut handshake = vec![1, 0, 0, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 3, minor, 0, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

/// Sends raw bytes and returns what the server answered before closing.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> R<Vec<u8>> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(bytes).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer)).await??;
    Ok(answer)
}

#[tokio::test]
async fn old_protocol_versions_and_garbage_are_refused_cleanly() -> R {
    let ca = Ca::new("test CA")?;
    let leaf = ca.server("server")?;
    let tls = ServerTlsConfig::from_pem(leaf.cert.as_bytes(), leaf.key.as_bytes())?;
    let (addr, mut seen) = echo_server(tls).await?;
    for minor in [1u8, 2] {
        let hello = legacy_client_hello(minor);
        assert!(ferry::tls::is_tls_handshake(hello[0]));
        let answer = raw_exchange(addr, &hello).await?;
        // A fatal alert record (content type 21), then the server closes.
        assert_eq!(
            answer.first(),
            Some(&0x15),
            "TLS 1.{}: {answer:?}",
            minor - 1
        );
        let err = next(&mut seen).await?.result.err().unwrap_or_default();
        assert!(!err.is_empty());
    }
    // Garbage after the first TLS byte.
    let answer = raw_exchange(addr, b"\x16\xff\xff\x00\x05hello").await?;
    assert!(answer.is_empty() || answer[0] == 0x15, "{answer:?}");
    assert!(next(&mut seen).await?.result.is_err());
    // The server is unharmed.
    let mut ok = connect(&client_for(&ca)?, addr, "localhost", &[ALPN_FERRY]).await?;
    assert_eq!(echo(&mut ok, b"still here").await?, b"still here");
    Ok(())
}

#[tokio::test]
async fn second_connection_resumes_the_session() -> R {
    let ca = Ca::new("test CA")?;
    let leaf = ca.server("server")?;
    let tls = ServerTlsConfig::from_pem(leaf.cert.as_bytes(), leaf.key.as_bytes())?;
    let (addr, _) = echo_server(tls).await?;
    let client = client_for(&ca)?;

    let mut first = connect(&client, addr, "localhost", &[ALPN_FERRY]).await?;
    assert_eq!(
        first.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Full)
    );
    // One round trip lets the client read the session tickets sent after the handshake.
    assert_eq!(echo(&mut first, b"x").await?, b"x");
    first.shutdown().await?;

    let mut second = connect(&client, addr, "localhost", &[ALPN_FERRY]).await?;
    assert_eq!(
        second.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Resumed)
    );
    assert_eq!(echo(&mut second, b"y").await?, b"y");

    // Another configuration has its own cache: a full handshake.
    let other = connect(&client_for(&ca)?, addr, "localhost", &[ALPN_FERRY]).await?;
    assert_eq!(
        other.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Full)
    );
    Ok(())
}

#[test]
fn configuration_errors_say_what_to_fix() -> R {
    let dir = temp_dir("errors")?;
    let missing = ServerTlsConfig::from_pem_files(dir.join("nope.crt"), dir.join("nope.key"));
    let msg = missing.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("cannot read") && msg.contains("nope.crt"),
        "{msg}"
    );
    let ca = Ca::new("test CA")?;
    let leaf = ca.server("server")?;
    let no_key = ServerTlsConfig::from_pem(leaf.cert.as_bytes(), leaf.cert.as_bytes());
    let msg = no_key.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("no usable private key"), "{msg}");
    let no_cert = ServerTlsConfig::from_pem(leaf.key.as_bytes(), leaf.key.as_bytes());
    let msg = no_cert.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("no certificate found"), "{msg}");
    let bad_ca = ClientTlsConfig::builder().ca_pem(b"nothing here").build();
    assert!(bad_ca.is_err());
    let bad_name = ClientTlsConfig::builder()
        .ca_pem(ca.pem.as_bytes())
        .server_name("bad name")
        .build();
    assert!(bad_name.is_err());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
