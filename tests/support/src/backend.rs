//! Backends for the client-side resilience tests: each answers `/test.Backend/Who` with its
//! name, behaves as the test tells it while it runs (delays, failures, slow calls), and counts
//! what it saw (attempts, retries, hedges, cancelled slow calls, deadlines).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry::call::{Body, BoxFuture, CallResult, MethodKind};
use ferry::{Channel, Code, Request, Response, Server, ServerHandle, ServiceHandler, Status};

/// The backend's service name.
pub const SERVICE: &str = "test.Backend";
/// The backend's one method.
pub const WHO: &str = "/test.Backend/Who";
/// Request metadata marking a call whose first attempt must lose to its hedge: without
/// `hedged` it is a slow call; a hedge of it answers after `delay_ms` (and is counted in
/// [`Stats::rescued`]).
pub const SLOW_UNLESS_HEDGED: &str = "x-slow-unless-hedged";

/// What a backend does with each call; change it while the test runs.
#[derive(Default)]
pub struct Behavior {
    /// Sleep this long before answering.
    pub delay_ms: AtomicU64,
    /// Fail every call with this code (0 = succeed).
    pub fail_code: AtomicU32,
    /// Every n-th call (0 = never) is a slow call: it sleeps `slow_ms` instead of `delay_ms`.
    pub slow_every: AtomicU64,
    /// The delay of a slow call (see also [`SLOW_UNLESS_HEDGED`]).
    pub slow_ms: AtomicU64,
}

impl Behavior {
    /// Fails every call with `code` from now on.
    pub fn fail_with(&self, code: Code) {
        self.fail_code.store(code as u32, Ordering::SeqCst);
    }
}

/// A call's deadline and the time it arrived.
pub type Arrival = (Option<Instant>, Instant);

/// What a backend saw.
#[derive(Default)]
pub struct Stats {
    /// Calls received (attempts, retries and hedges included).
    pub calls: AtomicUsize,
    /// Calls that carried `retry-attempts`.
    pub retries: AtomicUsize,
    /// Calls that carried `hedged`.
    pub hedged: AtomicUsize,
    /// Hedges of calls marked [`SLOW_UNLESS_HEDGED`].
    pub rescued: AtomicUsize,
    /// Slow calls started.
    pub slow_started: AtomicUsize,
    /// Slow calls that ran to the end.
    pub slow_finished: AtomicUsize,
    /// Slow calls dropped before they finished (cancelled).
    pub slow_cancelled: AtomicUsize,
    /// The deadline and arrival time of every call.
    pub deadlines: Mutex<Vec<Arrival>>,
}

impl Stats {
    /// Every call's deadline and arrival time, in arrival order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.deadlines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A backend service answering `Who` with its name.
#[derive(Clone)]
pub struct BackendService {
    /// The name it answers with.
    pub name: Arc<str>,
    /// What it does.
    pub behavior: Arc<Behavior>,
    /// What it saw.
    pub stats: Arc<Stats>,
}

/// Counts a slow call as finished or, when dropped before the end, as cancelled.
struct SlowGuard {
    stats: Arc<Stats>,
    done: bool,
}

impl Drop for SlowGuard {
    fn drop(&mut self) {
        let counter = if self.done {
            &self.stats.slow_finished
        } else {
            &self.stats.slow_cancelled
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

impl ServiceHandler for BackendService {
    fn name(&self) -> &'static str {
        SERVICE
    }

    fn file_descriptor_set(&self) -> &'static [u8] {
        &[]
    }

    fn methods(&self) -> &'static [(&'static str, MethodKind)] {
        &[("Who", MethodKind::Unary)]
    }

    fn call(&self, method: &str, request: Request<Body>) -> BoxFuture<CallResult> {
        let this = self.clone();
        let method = method.to_owned();
        Box::pin(async move {
            if method != "Who" {
                return Err(Status::unimplemented(method));
            }
            let n = this.stats.calls.fetch_add(1, Ordering::SeqCst) as u64 + 1;
            let meta = request.metadata();
            if meta.get(ferry::client::retry::RETRY_ATTEMPTS).is_some() {
                this.stats.retries.fetch_add(1, Ordering::SeqCst);
            }
            let hedge = meta.get(ferry::client::hedge::HEDGED).is_some();
            let marked = meta.get(SLOW_UNLESS_HEDGED).is_some();
            if hedge {
                this.stats.hedged.fetch_add(1, Ordering::SeqCst);
                if marked {
                    this.stats.rescued.fetch_add(1, Ordering::SeqCst);
                }
            }
            this.stats
                .deadlines
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((request.deadline(), Instant::now()));
            let b = &this.behavior;
            let every = b.slow_every.load(Ordering::SeqCst);
            let slow = (every > 0 && n.is_multiple_of(every)) || (marked && !hedge);
            if slow {
                this.stats.slow_started.fetch_add(1, Ordering::SeqCst);
                let mut guard = SlowGuard {
                    stats: this.stats.clone(),
                    done: false,
                };
                tokio::time::sleep(Duration::from_millis(b.slow_ms.load(Ordering::SeqCst))).await;
                guard.done = true;
            } else {
                let delay = b.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
            }
            let code = b.fail_code.load(Ordering::SeqCst);
            if code != 0 {
                return Err(Status::new(
                    Code::from_i32(code as i32),
                    format!("{} is failing on purpose", this.name),
                ));
            }
            Ok(Response::new(Body::Message(Bytes::from(
                this.name.to_string(),
            ))))
        })
    }
}

/// A running backend.
pub struct Backend {
    /// Its name (what `Who` answers).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it does; change it while the test runs.
    pub behavior: Arc<Behavior>,
    /// What it saw.
    pub stats: Arc<Stats>,
    /// The server, until it is shut down or killed.
    pub handle: Option<ServerHandle>,
}

impl Backend {
    /// Starts a backend named `name` on `127.0.0.1:0`.
    pub async fn start(name: &str) -> Backend {
        Backend::start_with(name, |s| s).await
    }

    /// Starts a backend on `127.0.0.1:0` after `configure` adjusts its server (e.g. to
    /// register it).
    pub async fn start_with(name: &str, configure: impl FnOnce(Server) -> Server) -> Backend {
        let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
        Backend::start_at(name, addr, configure)
            .await
            .expect("bind loopback")
    }

    /// Starts a backend on `addr` after `configure` adjusts its server.
    pub async fn start_at(
        name: &str,
        addr: SocketAddr,
        configure: impl FnOnce(Server) -> Server,
    ) -> std::io::Result<Backend> {
        let service = BackendService {
            name: Arc::from(name),
            behavior: Arc::default(),
            stats: Arc::default(),
        };
        let behavior = service.behavior.clone();
        let stats = service.stats.clone();
        let server = configure(
            Server::builder()
                .add_service(service)
                .shutdown_grace_period(Duration::from_secs(2)),
        );
        let handle = server.bind(addr).await?;
        Ok(Backend {
            name: name.to_owned(),
            addr: handle.local_addr(),
            behavior,
            stats,
            handle: Some(handle),
        })
    }

    /// Calls received so far.
    pub fn calls(&self) -> usize {
        self.stats.calls.load(Ordering::SeqCst)
    }

    /// Graceful shutdown: deregisters, drains, stops.
    pub async fn shutdown(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await.expect("clean shutdown");
        }
    }

    /// A crash: the server task is aborted, connections drop, nothing is deregistered.
    pub fn kill(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// Starts `n` backends named `b0`, `b1`, ….
pub async fn backends(n: usize) -> Vec<Backend> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(Backend::start(&format!("b{i}")).await);
    }
    out
}

/// The comma list `ferry://a,b,c` of the backends' addresses.
pub fn comma_list(backends: &[Backend]) -> String {
    let addrs: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    format!("ferry://{}", addrs.join(","))
}

/// Calls `Who`, optionally with a metadata key/value; returns the backend's name.
pub async fn who(channel: &Channel, meta: Option<(&str, &str)>) -> Result<String, Status> {
    let mut request = Request::new(Body::empty());
    request.set_method(WHO);
    if let Some((k, v)) = meta {
        request.metadata_mut().insert(k, v);
    }
    let response = channel.call(request).await?;
    let bytes = response.into_inner().into_message().await?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Runs `total` calls from `concurrency` callers; returns (failures, first error).
pub async fn load(channel: &Channel, total: usize, concurrency: usize) -> (usize, Option<Status>) {
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(Mutex::new(None));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (channel, next, failures, first) = (
            channel.clone(),
            next.clone(),
            failures.clone(),
            first.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < total {
                if let Err(status) = who(&channel, None).await {
                    failures.fetch_add(1, Ordering::SeqCst);
                    first
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get_or_insert(status);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("caller task");
    }
    let first = first.lock().unwrap_or_else(PoisonError::into_inner).take();
    (failures.load(Ordering::SeqCst), first)
}
