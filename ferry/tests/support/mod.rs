//! Shared helpers for Ferry's microservice tests: configurable backends on loopback, polling
//! with a deadline, and a throwaway etcd.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry::call::{Body, BoxFuture, CallResult, MethodKind};
use ferry::{Channel, Code, Request, Response, Server, ServerHandle, ServiceHandler, Status};

/// The backend's service name and its one method.
pub const SERVICE: &str = "test.Backend";
pub const WHO: &str = "/test.Backend/Who";

/// How long a test waits for something that should happen promptly before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// What a backend does with each call; change it while the test runs.
#[derive(Default)]
pub struct Behavior {
    /// Sleep this long before answering.
    pub delay_ms: AtomicU64,
    /// Fail every call with this code (0 = succeed).
    pub fail_code: AtomicU32,
    /// Every n-th call (0 = never) sleeps `slow_ms` instead of `delay_ms`.
    pub slow_every: AtomicU64,
    /// The delay of a slow call.
    pub slow_ms: AtomicU64,
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
    /// Slow calls started, finished and cancelled (dropped before finishing).
    pub slow_started: AtomicUsize,
    pub slow_finished: AtomicUsize,
    pub slow_cancelled: AtomicUsize,
    /// The deadline and arrival time of every call.
    pub deadlines: Mutex<Vec<Arrival>>,
}

/// A backend answering `Who` with its name.
#[derive(Clone)]
pub struct BackendService {
    pub name: Arc<str>,
    pub behavior: Arc<Behavior>,
    pub stats: Arc<Stats>,
}

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
            if request
                .metadata()
                .get(ferry::client::retry::RETRY_ATTEMPTS)
                .is_some()
            {
                this.stats.retries.fetch_add(1, Ordering::SeqCst);
            }
            if request
                .metadata()
                .get(ferry::client::hedge::HEDGED)
                .is_some()
            {
                this.stats.hedged.fetch_add(1, Ordering::SeqCst);
            }
            this.stats
                .deadlines
                .lock()
                .unwrap()
                .push((request.deadline(), Instant::now()));
            let b = &this.behavior;
            let every = b.slow_every.load(Ordering::SeqCst);
            if every > 0 && n.is_multiple_of(every) {
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

/// A running backend on `127.0.0.1:0`.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub behavior: Arc<Behavior>,
    pub stats: Arc<Stats>,
    pub handle: Option<ServerHandle>,
}

impl Backend {
    /// Starts a backend named `name`.
    pub async fn start(name: &str) -> Backend {
        Backend::start_with(name, |s| s).await
    }

    /// Starts a backend after `configure` adjusts its server (e.g. to register it).
    pub async fn start_with(name: &str, configure: impl FnOnce(Server) -> Server) -> Backend {
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
        let handle = server.bind("127.0.0.1:0").await.expect("bind loopback");
        Backend {
            name: name.to_owned(),
            addr: handle.local_addr(),
            behavior,
            stats,
            handle: Some(handle),
        }
    }

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

/// Polls `check` every 20 ms until it holds or `within` passes; returns whether it held.
pub async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
                    first.lock().unwrap().get_or_insert(status);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("caller task");
    }
    let first = first.lock().unwrap().take();
    (failures.load(Ordering::SeqCst), first)
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A single-member etcd on free loopback ports in a temporary directory; killed on drop.
pub struct Etcd {
    child: Child,
    dir: PathBuf,
    pub endpoint: String,
}

static ETCD_SEQ: AtomicUsize = AtomicUsize::new(0);
static ETCD_LOGGED: AtomicBool = AtomicBool::new(false);

impl Etcd {
    /// Starts etcd and waits until it answers. Fails the test clearly if etcd is missing.
    pub async fn start() -> Etcd {
        let binary = std::env::var("FERRY_ETCD").unwrap_or_else(|_| "etcd".to_owned());
        let dir = std::env::temp_dir().join(format!(
            "ferry-etcd-{}-{}",
            std::process::id(),
            ETCD_SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create etcd temp dir");
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log")).expect("create etcd log");
        let child = Command::new(&binary)
            .arg("--name=ferry-test")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=ferry-test={peer_url}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{binary}` ({e}): these tests need etcd 3.4+ on PATH \
                     (Debian: apt-get install etcd-server, or run scripts/install-test-deps), \
                     or FERRY_ETCD=/path/to/etcd"
                )
            });
        let mut etcd = Etcd {
            child,
            dir,
            endpoint,
        };
        let ready = eventually(PATIENCE, async || {
            match etcd_client::Client::connect([etcd.endpoint.as_str()], None).await {
                Ok(mut c) => c.get("probe", None).await.is_ok(),
                Err(_) => false,
            }
        })
        .await;
        if !ready {
            let log = std::fs::read_to_string(etcd.dir.join("etcd.log")).unwrap_or_default();
            let _ = etcd.child.kill();
            panic!("etcd did not come up within {PATIENCE:?}; its log:\n{log}");
        }
        if !ETCD_LOGGED.swap(true, Ordering::SeqCst) {
            eprintln!("etcd running at {}", etcd.endpoint);
        }
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
