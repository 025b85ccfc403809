//! Response caching and request coalescing (`ferry::cache`), client side and as a server layer:
//! TTL expiry, `max-age` and `no-store`, only side-effect-free unary methods, bounded size,
//! errors, single flight and cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ferry::cache::{Cache, CacheLayer};
use ferry::call::{Body, BoxFuture, CallResult, MethodKind};
use ferry::{Channel, Code, Request, Response, Server, ServerHandle, ServiceHandler, Status};
use ferry_test_support::{PATIENCE, eventually};
use prost::Message;

const SERVICE: &str = "test.Kv";
/// Side-effect free (`idempotency_level = NO_SIDE_EFFECTS` in the descriptors below).
const GET: &str = "/test.Kv/Get";
/// Has side effects.
const PUT: &str = "/test.Kv/Put";
/// Side-effect free, but server streaming: never cached.
const WATCH: &str = "/test.Kv/Watch";

/// Request metadata asking the server to put this `cache-control` on its reply.
const REPLY_CACHE_CONTROL: &str = "reply-cache-control";
/// Request metadata asking the server to hold the call until the gate opens.
const GATED: &str = "gated";

/// The one message type: bytes in, bytes out.
#[derive(Clone, PartialEq, Message)]
struct Blob {
    #[prost(bytes = "bytes", tag = "1")]
    data: Bytes,
}

fn blob(text: &str) -> Blob {
    Blob {
        data: Bytes::copy_from_slice(text.as_bytes()),
    }
}

/// The descriptors of `test.Kv`: `Get` and `Watch` are marked `NO_SIDE_EFFECTS`.
fn descriptors() -> &'static [u8] {
    use prost_types::method_options::IdempotencyLevel;
    use prost_types::{
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
        MethodDescriptorProto, MethodOptions, ServiceDescriptorProto, field_descriptor_proto,
    };
    static FDS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FDS.get_or_init(|| {
        let method = |name: &str, safe: bool, streaming: bool| MethodDescriptorProto {
            name: Some(name.into()),
            input_type: Some(".test.Blob".into()),
            output_type: Some(".test.Blob".into()),
            server_streaming: Some(streaming),
            options: safe.then(|| MethodOptions {
                idempotency_level: Some(IdempotencyLevel::NoSideEffects as i32),
                ..Default::default()
            }),
            ..Default::default()
        };
        let file = FileDescriptorProto {
            name: Some("test/kv.proto".into()),
            package: Some("test".into()),
            syntax: Some("proto3".into()),
            message_type: vec![DescriptorProto {
                name: Some("Blob".into()),
                field: vec![FieldDescriptorProto {
                    name: Some("data".into()),
                    json_name: Some("data".into()),
                    number: Some(1),
                    label: Some(field_descriptor_proto::Label::Optional as i32),
                    r#type: Some(field_descriptor_proto::Type::Bytes as i32),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            service: vec![ServiceDescriptorProto {
                name: Some("Kv".into()),
                method: vec![
                    method("Get", true, false),
                    method("Put", false, false),
                    method("Watch", true, true),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        FileDescriptorSet { file: vec![file] }.encode_to_vec()
    })
}

/// What the server saw.
#[derive(Default)]
struct Seen {
    /// Handler calls, every method.
    calls: AtomicUsize,
    /// Handler calls dropped before they finished.
    cancelled: AtomicUsize,
}

/// `test.Kv`: `Get` answers `<n>:<request>` (n counts handler calls), or `NOT_FOUND` /
/// `UNAVAILABLE` for requests starting `missing` / `down`; `Put` the same; `Watch` streams it.
#[derive(Clone)]
struct Kv {
    seen: Arc<Seen>,
    gate: tokio::sync::watch::Receiver<bool>,
}

struct CancelGuard {
    seen: Arc<Seen>,
    done: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.done {
            self.seen.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl ServiceHandler for Kv {
    fn name(&self) -> &'static str {
        SERVICE
    }

    fn file_descriptor_set(&self) -> &'static [u8] {
        descriptors()
    }

    fn methods(&self) -> &'static [(&'static str, MethodKind)] {
        &[
            ("Get", MethodKind::Unary),
            ("Put", MethodKind::Unary),
            ("Watch", MethodKind::ServerStreaming),
        ]
    }

    fn call(&self, method: &str, request: Request<Body>) -> BoxFuture<CallResult> {
        let this = self.clone();
        let streaming = method == "Watch";
        Box::pin(async move {
            let n = this.seen.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let mut guard = CancelGuard {
                seen: this.seen.clone(),
                done: false,
            };
            let metadata = request.metadata().clone();
            if metadata.get(GATED).is_some() {
                let mut gate = this.gate.clone();
                let _ = gate.wait_for(|open| *open).await;
            }
            let bytes = request.into_inner().into_message().await?;
            let text =
                String::from_utf8_lossy(&Blob::decode(bytes).unwrap_or(blob("")).data).into_owned();
            guard.done = true;
            if text.starts_with("missing") {
                return Err(Status::not_found(format!("no {text}")));
            }
            if text.starts_with("down") {
                return Err(Status::unavailable("down"));
            }
            let reply = Bytes::from(blob(&format!("{n}:{text}")).encode_to_vec());
            let body = if streaming {
                Body::Stream(ferry::call::MessageStream::from_messages(
                    futures_util::stream::iter([Ok(reply)]),
                ))
            } else {
                Body::Message(reply)
            };
            let mut response = Response::new(body);
            if let Some(cc) = metadata.get(REPLY_CACHE_CONTROL) {
                response.metadata_mut().insert("cache-control", cc);
            }
            Ok(response)
        })
    }
}

/// A running `test.Kv` server and the switch of its gate.
struct Fixture {
    handle: ServerHandle,
    seen: Arc<Seen>,
    gate: tokio::sync::watch::Sender<bool>,
}

impl Fixture {
    async fn start(configure: impl FnOnce(Server) -> Server) -> Fixture {
        let (gate, receiver) = tokio::sync::watch::channel(false);
        let kv = Kv {
            seen: Arc::default(),
            gate: receiver,
        };
        let seen = kv.seen.clone();
        let server = configure(Server::builder().add_service(kv));
        let handle = server.bind("127.0.0.1:0").await.expect("bind loopback");
        Fixture { handle, seen, gate }
    }

    fn target(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.handle.local_addr())
    }

    async fn channel(&self, cache: Option<Cache>) -> Channel {
        let mut builder = Channel::builder(self.target("ferry"));
        if let Some(cache) = cache {
            builder = builder.cache(cache);
        }
        builder.connect().await.expect("connect")
    }

    fn calls(&self) -> usize {
        self.seen.calls.load(Ordering::SeqCst)
    }

    fn open_gate(&self) {
        let _ = self.gate.send(true);
    }
}

/// Calls `method` with `text` and optional metadata; returns the reply text.
async fn call(
    channel: &Channel,
    method: &'static str,
    text: &str,
    metadata: &[(&str, &str)],
) -> Result<(String, ferry::Metadata), Status> {
    let mut request = Request::new(blob(text));
    for (k, v) in metadata {
        request.metadata_mut().insert(*k, *v);
    }
    let response = channel.unary::<Blob, Blob>(method, request).await?;
    let (metadata, reply) = response.into_parts();
    Ok((String::from_utf8_lossy(&reply.data).into_owned(), metadata))
}

async fn get(channel: &Channel, text: &str) -> String {
    call(channel, GET, text, &[]).await.expect("Get").0
}

fn cache_for_get(ttl: Duration) -> Cache {
    Cache::builder()
        .side_effect_free(&[GET, WATCH])
        .method(GET, ttl)
        .build()
        .expect("cache")
}

#[tokio::test]
async fn ttl_expiry_refetches() {
    let server = Fixture::start(|s| s).await;
    let cache = cache_for_get(Duration::from_millis(300));
    let channel = server.channel(Some(cache.clone())).await;
    let first = get(&channel, "a").await;
    assert_eq!(first, "1:a");
    assert_eq!(get(&channel, "a").await, "1:a", "the second call is a hit");
    assert_eq!(server.calls(), 1);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.stores), (1, 1, 1));
    // Once the TTL has run out the next call goes upstream again.
    let refetched = eventually(PATIENCE, async || get(&channel, "a").await != "1:a").await;
    assert!(refetched, "the entry never expired");
    assert_eq!(server.calls(), 2);
    cache.sync().await;
    assert!(cache.stats().hits >= 1);
}

#[tokio::test]
async fn server_max_age_decides_freshness() {
    let server = Fixture::start(|s| s).await;
    // The builder says "only as long as the server says" (zero), the server says an hour.
    let cache = cache_for_get(Duration::ZERO);
    let channel = server.channel(Some(cache.clone())).await;
    let max_age = [(REPLY_CACHE_CONTROL, "public, max-age=3600")];
    let (first, metadata) = call(&channel, GET, "a", &max_age).await.unwrap();
    assert_eq!(metadata.get("cache-control"), Some("public, max-age=3600"));
    let (second, _) = call(&channel, GET, "a", &max_age).await.unwrap();
    assert_eq!((first.as_str(), second.as_str()), ("1:a", "1:a"));
    assert_eq!(server.calls(), 1);

    // Without max-age a zero TTL stores nothing.
    assert_eq!(get(&channel, "b").await, "2:b");
    assert_eq!(get(&channel, "b").await, "3:b");

    // A server max-age shorter than the builder's TTL wins: the entry expires after ~1 s.
    let cache = cache_for_get(Duration::from_secs(3600));
    let channel = server.channel(Some(cache.clone())).await;
    let short = [(REPLY_CACHE_CONTROL, "max-age=1")];
    let (first, _) = call(&channel, GET, "c", &short).await.unwrap();
    let expired = eventually(PATIENCE, async || {
        call(&channel, GET, "c", &short).await.unwrap().0 != first
    })
    .await;
    assert!(expired, "max-age=1 was not honoured");
}

#[tokio::test]
async fn no_store_is_never_stored() {
    let server = Fixture::start(|s| s).await;
    let cache = cache_for_get(Duration::from_secs(3600));
    let channel = server.channel(Some(cache.clone())).await;
    for directive in ["no-store", "max-age=60, no-store", "no-cache", "max-age=0"] {
        let md = [(REPLY_CACHE_CONTROL, directive)];
        let before = server.calls();
        call(&channel, GET, directive, &md).await.unwrap();
        call(&channel, GET, directive, &md).await.unwrap();
        assert_eq!(server.calls(), before + 2, "{directive} was cached");
    }
    assert_eq!(cache.stats().stores, 0);
    assert_eq!(cache.stats().hits, 0);
}

#[tokio::test]
async fn methods_with_side_effects_are_never_cached() {
    // Asked for explicitly: refused with a clear error.
    let refused = Cache::builder()
        .side_effect_free(&[GET])
        .method(PUT, Duration::from_secs(60))
        .build()
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains(PUT), "{refused}");
    assert!(refused.message().contains("NO_SIDE_EFFECTS"), "{refused}");
    // From the descriptors: Put is not marked, so the per-method opt-in is refused too.
    let refused = Cache::builder()
        .descriptors(descriptors())
        .method(PUT, Duration::from_secs(60))
        .build();
    assert!(refused.is_err());

    // The per-channel opt-in covers only the side-effect-free methods.
    let server = Fixture::start(|s| s).await;
    let cache = Cache::builder()
        .descriptors(descriptors())
        .ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    assert!(cache.caches(GET) && cache.caches(WATCH) && !cache.caches(PUT));
    let channel = server.channel(Some(cache.clone())).await;
    assert_eq!(call(&channel, PUT, "p", &[]).await.unwrap().0, "1:p");
    assert_eq!(call(&channel, PUT, "p", &[]).await.unwrap().0, "2:p");

    // Streaming calls are never cached, even for a side-effect-free method (over gRPC, as
    // the native protocol does not stream yet).
    let grpc = Channel::builder(server.target("grpc"))
        .cache(cache.clone())
        .connect()
        .await
        .unwrap();
    for expected in ["3:w", "4:w"] {
        let response = grpc
            .server_streaming::<Blob, Blob>(WATCH, Request::new(blob("w")))
            .await
            .unwrap();
        let mut stream = response.into_inner();
        let item = stream.message().await.unwrap().unwrap();
        assert_eq!(item.data, Bytes::from(expected));
    }
    assert_eq!(server.calls(), 4);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.stores), (0, 0, 0));
}

#[tokio::test]
async fn errors_are_not_cached_unless_a_negative_ttl_allows() {
    let server = Fixture::start(|s| s).await;
    let channel = server
        .channel(Some(cache_for_get(Duration::from_secs(3600))))
        .await;
    for _ in 0..2 {
        let err = call(&channel, GET, "missing", &[]).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
    assert_eq!(server.calls(), 2, "an error was cached");

    let cache = Cache::builder()
        .side_effect_free(&[GET])
        .method(GET, Duration::from_secs(3600))
        .negative_ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    let channel = server.channel(Some(cache.clone())).await;
    for _ in 0..2 {
        let err = call(&channel, GET, "missing-2", &[]).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert_eq!(err.message(), "no missing-2");
    }
    assert_eq!(
        server.calls(),
        3,
        "a definite error is remembered with a negative TTL"
    );
    // Transient errors never are.
    for _ in 0..2 {
        let err = call(&channel, GET, "down", &[]).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
    }
    assert_eq!(server.calls(), 5);
}

#[tokio::test]
async fn metadata_keys_split_the_cache() {
    let server = Fixture::start(|s| s).await;
    let cache = Cache::builder()
        .side_effect_free(&[GET])
        .method(GET, Duration::from_secs(3600))
        .key_metadata(["X-Tenant"])
        .build()
        .unwrap();
    let channel = server.channel(Some(cache)).await;
    let acme = [("x-tenant", "acme")];
    let umbrella = [("x-tenant", "umbrella")];
    assert_eq!(call(&channel, GET, "k", &acme).await.unwrap().0, "1:k");
    assert_eq!(call(&channel, GET, "k", &umbrella).await.unwrap().0, "2:k");
    assert_eq!(call(&channel, GET, "k", &acme).await.unwrap().0, "1:k");
    // Metadata the key does not name does not matter.
    let other = [("x-tenant", "acme"), ("x-trace", "1")];
    assert_eq!(call(&channel, GET, "k", &other).await.unwrap().0, "1:k");
    assert_eq!(server.calls(), 2);
}

#[tokio::test]
async fn stays_within_bounds_under_100_000_distinct_keys() {
    const MAX_ENTRIES: u64 = 1_000;
    const MAX_BYTES: u64 = 200 * 1024;
    let cache = Cache::builder()
        .side_effect_free(&[GET])
        .method(GET, Duration::from_secs(3600))
        .max_entries(MAX_ENTRIES)
        .max_bytes(MAX_BYTES)
        .build()
        .unwrap();
    let upstream = Arc::new(AtomicUsize::new(0));
    for i in 0..100_000u32 {
        let mut request = Request::new(Body::Message(Bytes::from(i.to_be_bytes().to_vec())));
        request.set_method(GET);
        let calls = upstream.clone();
        // Replies of 0..=600 bytes, so both bounds matter.
        let size = (i % 601) as usize;
        let result = cache
            .call(request, move |_| async move {
                calls.fetch_add(1, Ordering::Relaxed);
                Ok(Response::new(Body::Message(Bytes::from(vec![7u8; size]))))
            })
            .await
            .unwrap();
        assert_eq!(result.into_inner().as_message().map(Bytes::len), Some(size));
        if i % 10_000 == 9_999 {
            cache.sync().await;
            let stats = cache.stats();
            assert!(stats.entries <= MAX_ENTRIES, "{stats:?}");
            assert!(stats.bytes <= MAX_BYTES, "{stats:?}");
        }
    }
    cache.sync().await;
    let stats = cache.stats();
    assert_eq!(
        upstream.load(Ordering::Relaxed),
        100_000,
        "every key is distinct"
    );
    assert!(stats.entries <= MAX_ENTRIES, "{stats:?}");
    assert!(stats.bytes <= MAX_BYTES, "{stats:?}");
    assert!(stats.entries > 0 && stats.evictions > 0, "{stats:?}");
    assert_eq!(stats.misses, 100_000);
}

#[tokio::test]
async fn a_hundred_identical_calls_make_one_upstream_call() {
    let server = Fixture::start(|s| s).await;
    let cache = cache_for_get(Duration::from_secs(3600));
    let channel = server.channel(Some(cache.clone())).await;
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let channel = channel.clone();
        tasks.push(tokio::spawn(async move {
            call(&channel, GET, "same", &[(GATED, "1")]).await
        }));
    }
    // All 100 are waiting: one upstream call, 99 joined it.
    let joined = eventually(PATIENCE, async || cache.stats().coalesced == 99).await;
    assert!(joined, "{:?}", cache.stats());
    assert_eq!(cache.in_flight(), 1);
    server.open_gate();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().0, "1:same");
    }
    assert_eq!(server.calls(), 1);
    assert_eq!(cache.in_flight(), 0);
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.coalesced, stats.stores), (100, 99, 1));
}

#[tokio::test]
async fn one_caller_cancelling_leaves_the_others_served() {
    let server = Fixture::start(|s| s).await;
    // Coalescing only: nothing is stored, so every answer comes from the one shared call.
    let cache = cache_for_get(Duration::ZERO);
    let channel = server.channel(Some(cache.clone())).await;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let channel = channel.clone();
        tasks.push(tokio::spawn(async move {
            call(&channel, GET, "shared", &[(GATED, "1")]).await
        }));
    }
    assert!(eventually(PATIENCE, async || cache.stats().coalesced == 2).await);
    assert!(eventually(PATIENCE, async || server.calls() == 1).await);
    // The first caller (whichever started the upstream call) goes away.
    let first = tasks.remove(0);
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    server.open_gate();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().0, "1:shared");
    }
    assert_eq!(server.calls(), 1);
    assert_eq!(server.seen.cancelled.load(Ordering::SeqCst), 0);
    assert_eq!(cache.in_flight(), 0);
}

#[tokio::test]
async fn the_last_caller_leaving_cancels_the_shared_call() {
    let cache = cache_for_get(Duration::from_secs(60));
    let started = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    struct OnDrop(Arc<AtomicUsize>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (cache, started, dropped) = (cache.clone(), started.clone(), dropped.clone());
        tasks.push(tokio::spawn(async move {
            let mut request = Request::new(Body::Message(Bytes::from_static(b"x")));
            request.set_method(GET);
            cache
                .call(request, move |_| async move {
                    let _guard = OnDrop(dropped);
                    started.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<CallResult>().await
                })
                .await
        }));
    }
    assert!(eventually(PATIENCE, async || cache.stats().coalesced == 1).await);
    assert!(eventually(PATIENCE, async || started.load(Ordering::SeqCst) == 1).await);
    tasks[0].abort();
    assert!(eventually(PATIENCE, async || tasks[0].is_finished()).await);
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        0,
        "one waiter is still there"
    );
    assert_eq!(cache.in_flight(), 1);
    tasks[1].abort();
    assert!(eventually(PATIENCE, async || dropped.load(Ordering::SeqCst) == 1).await);
    assert_eq!(cache.in_flight(), 0);
    assert_eq!(started.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn server_layer_caches_coalesces_and_advertises_max_age() {
    let cache = Cache::builder()
        .descriptors(descriptors())
        .ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    let layer = CacheLayer::new(cache.clone());
    let server = Fixture::start(|s| s.layer(layer)).await;
    // A client without a cache of its own.
    let channel = server.channel(None).await;
    let (first, metadata) = call(&channel, GET, "s", &[]).await.unwrap();
    assert_eq!(first, "1:s");
    assert_eq!(metadata.get("cache-control"), Some("max-age=60"));
    assert_eq!(metadata.get("age"), None);
    let (second, metadata) = call(&channel, GET, "s", &[]).await.unwrap();
    assert_eq!(second, "1:s", "the handler was not called again");
    assert_eq!(metadata.get("cache-control"), Some("max-age=60"));
    assert!(metadata.get("age").is_some());
    assert_eq!(server.calls(), 1);
    // Methods with side effects pass through, with no cache-control.
    let (put, metadata) = call(&channel, PUT, "s", &[]).await.unwrap();
    assert_eq!(put, "2:s");
    assert_eq!(metadata.get("cache-control"), None);

    // Over the Connect protocol the directive is an HTTP header.
    let connect = Channel::connect(server.target("http")).await.unwrap();
    let (third, metadata) = call(&connect, GET, "s", &[]).await.unwrap();
    assert_eq!(third, "1:s");
    assert_eq!(metadata.get("cache-control"), Some("max-age=60"));

    // Identical calls in flight reach the handler once.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let channel = channel.clone();
        tasks.push(tokio::spawn(async move {
            call(&channel, GET, "gated", &[(GATED, "1")]).await
        }));
    }
    assert!(eventually(PATIENCE, async || cache.stats().coalesced == 9).await);
    server.open_gate();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().0, "3:gated");
    }
    assert_eq!(server.calls(), 3);

    // A client cache in front takes the server's max-age as its TTL.
    let client_cache = cache_for_get(Duration::ZERO);
    let cached = server.channel(Some(client_cache.clone())).await;
    assert_eq!(call(&cached, GET, "c", &[]).await.unwrap().0, "4:c");
    assert_eq!(call(&cached, GET, "c", &[]).await.unwrap().0, "4:c");
    assert_eq!(client_cache.stats().hits, 1);
}

#[tokio::test]
async fn each_waiter_keeps_its_own_deadline() {
    let cache = cache_for_get(Duration::ZERO);
    let (open, gate) = tokio::sync::watch::channel(false);
    let calls = Arc::new(AtomicUsize::new(0));
    let start = |deadline: Option<Duration>| {
        let (cache, gate, calls) = (cache.clone(), gate.clone(), calls.clone());
        tokio::spawn(async move {
            let mut request = Request::new(Body::Message(Bytes::from_static(b"k")));
            request.set_method(GET);
            if let Some(timeout) = deadline {
                request.set_timeout(timeout);
            }
            cache
                .call(request, move |_| async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let mut gate = gate;
                    let _ = gate.wait_for(|open| *open).await;
                    Ok(Response::new(Body::Message(Bytes::from_static(b"v"))))
                })
                .await
        })
    };
    let patient = start(None);
    assert!(eventually(PATIENCE, async || cache.in_flight() == 1).await);
    // A caller with a short deadline joins, and gives up alone.
    let hasty = start(Some(Duration::from_millis(50)));
    let err = hasty.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert_eq!(cache.in_flight(), 1, "the shared call goes on");
    let _ = open.send(true);
    let reply = patient.await.unwrap().unwrap();
    assert_eq!(reply.into_inner().as_message().unwrap().as_ref(), b"v");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
