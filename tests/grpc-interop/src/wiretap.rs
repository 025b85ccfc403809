//! A byte-for-byte TCP relay that watches what a client and a server say to each other, so the
//! interop client can check what no RPC API shows: whether each message went out compressed,
//! and whether a cancelled call was reset on the wire.
//!
//! The client connects to the tap instead of the server; every connection is relayed to the
//! server unchanged (the tap never alters, delays or reorders a byte; it records an event before
//! forwarding the bytes that caused it). Each direction is parsed on its own:
//!
//! - **HTTP/2** (gRPC, and the Connect protocol's bidirectional calls): frame headers; HEADERS
//!   (without decoding HPACK), RST_STREAM, and DATA payloads minus padding, reassembled per
//!   stream into length-prefixed messages whose flag byte says whether each is compressed.
//! - **HTTP/1.1** (the Connect protocol's other calls): request and response heads and bodies
//!   (`content-length` or chunked). A unary body is one message, compressed if its
//!   `content-encoding` says gzip; an `application/connect+…` body holds enveloped messages with
//!   their own flags (the end-of-stream envelope is not a message). Error replies (not 200) carry
//!   no message.
//! - Anything else (Ferry's native protocol) is relayed without events but its close.
//!
//! Cases make one call at a time, so the events since a [`WireTap::mark`] are that call's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// Which way bytes travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the server (requests).
    ToServer,
    /// From the server to the client (responses).
    ToClient,
}

/// What the tap saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A call's headers: an HTTP/2 HEADERS frame, or an HTTP/1.1 request or response head.
    Headers,
    /// One message, with its compressed flag.
    Message {
        /// Whether the message was compressed on the wire.
        compressed: bool,
    },
    /// An HTTP/2 RST_STREAM with its error code (8 is CANCEL).
    Reset {
        /// The HTTP/2 error code.
        code: u32,
    },
    /// The sender closed its side of the connection (or it broke).
    Closed,
}

/// The HTTP/2 error code of a cancelled stream.
pub const CANCEL: u32 = 8;

/// One observation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The relayed connection, numbered from 0 in accept order.
    pub conn: usize,
    /// Which way the bytes went.
    pub direction: Direction,
    /// The HTTP/2 stream (0 for HTTP/1.1 and connection-wide events).
    pub stream: u32,
    /// What was seen.
    pub kind: Kind,
}

#[derive(Default)]
struct Log {
    events: Mutex<Vec<Event>>,
    changed: Notify,
}

impl Log {
    fn push(&self, event: Event) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
        self.changed.notify_waiters();
    }
}

/// A running relay; dropping it stops the relay and every relayed connection.
pub struct WireTap {
    port: u16,
    log: Arc<Log>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for WireTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireTap").field("port", &self.port).finish()
    }
}

impl WireTap {
    /// Listens on a free loopback port and relays every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<WireTap> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let log = Arc::new(Log::default());
        let mut tasks = JoinSet::new();
        tasks.spawn(accept(listener, upstream, log.clone()));
        Ok(WireTap { port, log, tasks })
    }

    /// The loopback port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A position in the event log; pass it to [`WireTap::events_since`].
    pub fn mark(&self) -> usize {
        self.log
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Every event recorded after `mark`.
    pub fn events_since(&self, mark: usize) -> Vec<Event> {
        let events = self
            .log
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        events.get(mark..).unwrap_or_default().to_vec()
    }

    /// The compressed flags of the messages that went `direction` since `mark`.
    pub fn flags_since(&self, mark: usize, direction: Direction) -> Vec<bool> {
        self.events_since(mark)
            .into_iter()
            .filter(|e| e.direction == direction)
            .filter_map(|e| match e.kind {
                Kind::Message { compressed } => Some(compressed),
                _ => None,
            })
            .collect()
    }

    /// Waits (at most `patience`) for an event after `mark` that `wanted` accepts; returns it.
    pub async fn wait_for(
        &self,
        mark: usize,
        patience: Duration,
        wanted: impl Fn(&Event) -> bool,
    ) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let changed = self.log.changed.notified();
            if let Some(event) = self.events_since(mark).into_iter().find(&wanted) {
                return Some(event);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.events_since(mark).into_iter().find(&wanted);
            }
        }
    }
}

impl Drop for WireTap {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, log: Arc<Log>) {
    // Relayed connections live as long as the accept loop (aborting it drops them all).
    let mut connections = JoinSet::new();
    let mut next = 0usize;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let conn = next;
                next += 1;
                connections.spawn(relay(client, upstream, conn, log.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, conn: usize, log: Arc<Log>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(
        client_read,
        server_write,
        conn,
        Direction::ToServer,
        log.clone(),
    );
    let down = pump(server_read, client_write, conn, Direction::ToClient, log);
    tokio::join!(up, down);
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    conn: usize,
    direction: Direction,
    log: Arc<Log>,
) {
    let mut parser = Parser::new(direction);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        for (stream, kind) in parser.feed(chunk) {
            log.push(Event {
                conn,
                direction,
                stream,
                kind,
            });
        }
        if to.write_all(chunk).await.is_err() {
            break;
        }
    }
    log.push(Event {
        conn,
        direction,
        stream: 0,
        kind: Kind::Closed,
    });
    let _ = to.shutdown().await;
}

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reassembles length-prefixed messages (gRPC, Connect envelopes) from their bytes.
#[derive(Default)]
struct Envelopes {
    /// The bytes of an unfinished 5-byte prefix.
    prefix: Vec<u8>,
    /// Payload bytes still to skip.
    skip: usize,
}

impl Envelopes {
    /// Consumes `data`, appending one `Message` per data envelope that starts in it.
    fn feed(&mut self, mut data: &[u8], out: &mut Vec<Kind>) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.prefix.len()).min(data.len());
            self.prefix.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.prefix.len() == 5 {
                let flags = self.prefix[0];
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                self.skip = len as usize;
                self.prefix.clear();
                // 0x02: the Connect protocol's end-of-stream message, not a call's message.
                if flags & 0x02 == 0 {
                    out.push(Kind::Message {
                        compressed: flags & 0x01 != 0,
                    });
                }
            }
        }
    }
}

enum Mode {
    /// Not enough bytes yet to tell the protocol.
    Unknown,
    Http2(Http2),
    Http1(Http1),
    /// Relayed without parsing.
    Opaque,
}

/// One direction of one connection.
struct Parser {
    direction: Direction,
    buf: Vec<u8>,
    mode: Mode,
}

impl Parser {
    fn new(direction: Direction) -> Parser {
        Parser {
            direction,
            buf: Vec::new(),
            mode: Mode::Unknown,
        }
    }

    /// Takes the next bytes of this direction; returns the events they complete.
    fn feed(&mut self, chunk: &[u8]) -> Vec<(u32, Kind)> {
        let mut events = Vec::new();
        if matches!(self.mode, Mode::Opaque) {
            return events;
        }
        self.buf.extend_from_slice(chunk);
        if matches!(self.mode, Mode::Unknown) {
            self.mode = match self.detect() {
                Some(mode) => mode,
                None => return events,
            };
        }
        let used = match &mut self.mode {
            Mode::Http2(h2) => h2.parse(&self.buf, &mut events),
            Mode::Http1(h1) => h1.parse(&self.buf, self.direction, &mut events),
            Mode::Unknown | Mode::Opaque => {
                self.buf = Vec::new();
                return events;
            }
        };
        self.buf.drain(..used);
        events
    }

    fn detect(&mut self) -> Option<Mode> {
        let buf = &self.buf;
        let prefix_of = |whole: &[u8]| buf.len() < whole.len() && whole.starts_with(buf);
        match self.direction {
            Direction::ToServer => {
                if buf.starts_with(PREFACE) {
                    self.buf.drain(..PREFACE.len());
                    return Some(Mode::Http2(Http2::default()));
                }
                if prefix_of(PREFACE) {
                    return None;
                }
                let method_end = buf.iter().position(|&b| b == b' ');
                match method_end {
                    Some(end) if end > 0 && buf[..end].iter().all(u8::is_ascii_uppercase) => {
                        Some(Mode::Http1(Http1::default()))
                    }
                    None if buf.len() < 8 && buf.iter().all(u8::is_ascii_uppercase) => None,
                    _ => Some(Mode::Opaque),
                }
            }
            Direction::ToClient => {
                if buf.starts_with(b"HTTP/1.") {
                    return Some(Mode::Http1(Http1::default()));
                }
                if prefix_of(b"HTTP/1.") || buf.len() < 9 {
                    return None;
                }
                // An HTTP/2 server starts with a SETTINGS frame (type 4) on stream 0.
                if buf[3] == 4 && buf[5..9] == [0, 0, 0, 0] {
                    Some(Mode::Http2(Http2::default()))
                } else {
                    Some(Mode::Opaque)
                }
            }
        }
    }
}

/// HTTP/2 frames of one direction.
#[derive(Default)]
struct Http2 {
    streams: HashMap<u32, Envelopes>,
}

impl Http2 {
    /// Parses whole frames from `buf`; returns how many bytes were used.
    fn parse(&mut self, buf: &[u8], events: &mut Vec<(u32, Kind)>) -> usize {
        let mut used = 0;
        loop {
            let rest = &buf[used..];
            if rest.len() < 9 {
                return used;
            }
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            if rest.len() < 9 + len {
                return used;
            }
            let (kind, flags) = (rest[3], rest[4]);
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
            let payload = &rest[9..9 + len];
            match kind {
                0 => {
                    let data = unpad(flags, payload);
                    let mut messages = Vec::new();
                    self.streams
                        .entry(stream)
                        .or_default()
                        .feed(data, &mut messages);
                    events.extend(messages.into_iter().map(|m| (stream, m)));
                }
                1 => events.push((stream, Kind::Headers)),
                3 if payload.len() == 4 => {
                    let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    events.push((stream, Kind::Reset { code }));
                }
                _ => {}
            }
            used += 9 + len;
        }
    }
}

/// A DATA frame's payload without its padding (flag 0x8: a pad-length byte, then padding).
fn unpad(flags: u8, payload: &[u8]) -> &[u8] {
    if flags & 0x08 == 0 {
        return payload;
    }
    let Some((&pad, rest)) = payload.split_first() else {
        return &[];
    };
    &rest[..rest.len().saturating_sub(pad as usize)]
}

/// Where an HTTP/1.1 message's body is.
#[derive(Default)]
enum Http1State {
    /// Reading a head.
    #[default]
    Head,
    /// `n` more body bytes.
    Fixed(usize),
    /// A chunk-size line.
    ChunkSize,
    /// `n` more bytes of the current chunk, then its CRLF.
    Chunk(usize),
    /// The CRLF after a chunk.
    ChunkEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailers,
    /// A body that lasts until the connection closes.
    UntilClose,
}

/// HTTP/1.1 messages of one direction.
#[derive(Default)]
struct Http1 {
    state: Http1State,
    /// The current body's envelopes, if it is an enveloped stream.
    envelopes: Option<Envelopes>,
}

impl Http1 {
    fn parse(&mut self, buf: &[u8], direction: Direction, events: &mut Vec<(u32, Kind)>) -> usize {
        let mut used = 0;
        loop {
            let rest = &buf[used..];
            let mut messages = Vec::new();
            match self.state {
                Http1State::Head => {
                    let Some(end) = find(rest, b"\r\n\r\n") else {
                        return used;
                    };
                    let head = String::from_utf8_lossy(&rest[..end]).into_owned();
                    used += end + 4;
                    self.start(&head, direction, events);
                }
                Http1State::Fixed(n) => {
                    let take = n.min(rest.len());
                    self.body(&rest[..take], &mut messages);
                    used += take;
                    self.state = if take == n {
                        Http1State::Head
                    } else {
                        Http1State::Fixed(n - take)
                    };
                    if take == 0 {
                        return used;
                    }
                }
                Http1State::UntilClose => {
                    self.body(rest, &mut messages);
                    used += rest.len();
                    events.extend(messages.into_iter().map(|m| (0, m)));
                    return used;
                }
                Http1State::ChunkSize => {
                    let Some(end) = find(rest, b"\r\n") else {
                        return used;
                    };
                    let line = String::from_utf8_lossy(&rest[..end]);
                    let digits = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(digits, 16).unwrap_or(0);
                    used += end + 2;
                    self.state = if size == 0 {
                        Http1State::Trailers
                    } else {
                        Http1State::Chunk(size)
                    };
                }
                Http1State::Chunk(n) => {
                    let take = n.min(rest.len());
                    if take == 0 {
                        return used;
                    }
                    self.body(&rest[..take], &mut messages);
                    used += take;
                    self.state = if take == n {
                        Http1State::ChunkEnd
                    } else {
                        Http1State::Chunk(n - take)
                    };
                }
                Http1State::ChunkEnd => {
                    if rest.len() < 2 {
                        return used;
                    }
                    used += 2;
                    self.state = Http1State::ChunkSize;
                }
                Http1State::Trailers => {
                    let Some(end) = find(rest, b"\r\n") else {
                        return used;
                    };
                    used += end + 2;
                    if end == 0 {
                        self.state = Http1State::Head;
                    }
                }
            }
            events.extend(messages.into_iter().map(|m| (0, m)));
        }
    }

    fn body(&mut self, data: &[u8], out: &mut Vec<Kind>) {
        if let Some(envelopes) = &mut self.envelopes {
            envelopes.feed(data, out);
        }
    }

    /// Starts a message from its head: records it, and how its body is framed and read.
    fn start(&mut self, head: &str, direction: Direction, events: &mut Vec<(u32, Kind)>) {
        let mut lines = head.split("\r\n");
        let start = lines.next().unwrap_or("");
        let mut headers: HashMap<String, String> = HashMap::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let header = |name: &str| headers.get(name).map(String::as_str).unwrap_or("");
        events.push((0, Kind::Headers));
        let ok = match direction {
            Direction::ToServer => true,
            Direction::ToClient => start.split(' ').nth(1) == Some("200"),
        };
        let content_type = header("content-type");
        self.envelopes = None;
        if ok && content_type.starts_with("application/connect+") {
            self.envelopes = Some(Envelopes::default());
        } else if ok && content_type.starts_with("application/proto") {
            let compressed = header("content-encoding").eq_ignore_ascii_case("gzip");
            events.push((0, Kind::Message { compressed }));
        }
        self.state = if header("transfer-encoding").eq_ignore_ascii_case("chunked") {
            Http1State::ChunkSize
        } else if let Ok(n) = header("content-length").parse::<usize>() {
            if n == 0 {
                Http1State::Head
            } else {
                Http1State::Fixed(n)
            }
        } else if direction == Direction::ToClient {
            Http1State::UntilClose
        } else {
            Http1State::Head
        };
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![flags];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn feed_bytewise(parser: &mut Parser, bytes: &[u8]) -> Vec<(u32, Kind)> {
        bytes.iter().flat_map(|b| parser.feed(&[*b])).collect()
    }

    #[test]
    fn http2_messages_are_reassembled_across_frames_with_their_flags() {
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(4, 0, 0, &[]));
        wire.extend(frame(1, 4, 1, b"hpack"));
        let mut data = envelope(1, &[7; 10]);
        data.extend(envelope(0, b"plain"));
        // Split the messages over two DATA frames, the second padded.
        wire.extend(frame(0, 0, 1, &data[..7]));
        let mut padded = vec![3];
        padded.extend_from_slice(&data[7..]);
        padded.extend_from_slice(&[0, 0, 0]);
        wire.extend(frame(0, 0x08 | 0x01, 1, &padded));
        wire.extend(frame(3, 0, 3, &CANCEL.to_be_bytes()));
        let mut parser = Parser::new(Direction::ToServer);
        assert_eq!(
            feed_bytewise(&mut parser, &wire),
            [
                (1, Kind::Headers),
                (1, Kind::Message { compressed: true }),
                (1, Kind::Message { compressed: false }),
                (3, Kind::Reset { code: CANCEL }),
            ]
        );
    }

    #[test]
    fn http1_connect_bodies_yield_their_messages() {
        let mut wire = b"POST /a/B HTTP/1.1\r\ncontent-type: application/proto\r\n\
                         content-encoding: gzip\r\ncontent-length: 3\r\n\r\nabc"
            .to_vec();
        wire.extend_from_slice(
            b"POST /a/C HTTP/1.1\r\nContent-Type: application/connect+proto\r\n\
              transfer-encoding: chunked\r\n\r\n",
        );
        let mut body = envelope(1, b"one");
        body.extend(envelope(0, b"two"));
        wire.extend_from_slice(format!("{:x}\r\n", 4).as_bytes());
        wire.extend_from_slice(&body[..4]);
        wire.extend_from_slice(format!("\r\n{:x};ext=1\r\n", body.len() - 4).as_bytes());
        wire.extend_from_slice(&body[4..]);
        wire.extend_from_slice(b"\r\n0\r\n\r\n");
        let mut parser = Parser::new(Direction::ToServer);
        assert_eq!(
            feed_bytewise(&mut parser, &wire),
            [
                (0, Kind::Headers),
                (0, Kind::Message { compressed: true }),
                (0, Kind::Headers),
                (0, Kind::Message { compressed: true }),
                (0, Kind::Message { compressed: false }),
            ]
        );

        let mut reply = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n\
                          content-length: 2\r\n\r\n{}"
            .to_vec();
        reply.extend_from_slice(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/connect+proto\r\n\
              transfer-encoding: chunked\r\n\r\n",
        );
        let mut body = envelope(0, b"m");
        body.extend(envelope(2, b"{}"));
        reply.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        reply.extend_from_slice(&body);
        reply.extend_from_slice(b"\r\n0\r\n\r\n");
        let mut parser = Parser::new(Direction::ToClient);
        assert_eq!(
            feed_bytewise(&mut parser, &reply),
            [
                (0, Kind::Headers),
                (0, Kind::Headers),
                (0, Kind::Message { compressed: false }),
            ]
        );
    }

    #[test]
    fn other_protocols_are_relayed_without_events() {
        let mut parser = Parser::new(Direction::ToServer);
        assert!(feed_bytewise(&mut parser, b"\x00FERRY\x01 whatever").is_empty());
        assert!(matches!(parser.mode, Mode::Opaque));
    }
}
