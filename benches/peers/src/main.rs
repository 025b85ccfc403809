//! Side-by-side benchmark of Ferry against its peers and the raw TCP ceiling.
//!
//! One invocation (`ferry-bench-peers run`, or `scripts/bench`) runs, for every scenario and every
//! system, that system's own server and own client as separate processes — this binary
//! re-executing itself with the `server` and `client` roles — with the server pinned to CPU 0 and
//! the load generator to CPU 1, one connection, the same payload and closed-loop concurrency, a
//! warm-up, then a measured window. Servers report CPU time, allocations and peak RSS over the
//! window; clients report calls/s and latency percentiles.
//!
//! Adding a system is one entry in [`SYSTEMS`].

mod alloc;
mod ferry_native;
mod http_json;
mod load;
mod orchestrate;
mod proc;
mod raw;
mod tarpc_bincode;
mod tonic_grpc;

use std::future::Future;
use std::io::BufRead;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How a client role is invoked.
pub struct ClientArgs {
    pub addr: SocketAddr,
    pub size: usize,
    pub concurrency: usize,
    pub warmup: Duration,
    pub window: Duration,
}

/// A client role: connects and measures.
pub type ClientFn = fn(ClientArgs) -> BoxFuture<Result<load::Measured, String>>;

/// One system under test: its server and its client.
pub struct System {
    /// Name used on the command line and in the table.
    pub name: &'static str,
    /// What it is, for the report.
    pub about: &'static str,
    /// Serves echo on the listener until the process is told to stop.
    pub serve: fn(tokio::net::TcpListener) -> BoxFuture<()>,
    /// Connects one connection and runs the closed loop.
    pub client: ClientFn,
    /// Opens `concurrency` server streams on one connection and counts messages, for systems
    /// that stream.
    pub stream: Option<ClientFn>,
}

/// Every system, in table order. The first is the ceiling, `tonic` the reference for ratios.
pub const SYSTEMS: &[System] = &[
    System {
        name: "raw-tcp",
        about: "length-prefixed echo on raw TCP: pipelined with batched writes (c>1), ping-pong (c=1)",
        serve: |l| Box::pin(raw::serve(l)),
        client: |a| Box::pin(raw::client(a)),
        stream: None,
    },
    System {
        name: "tarpc",
        about: "tarpc 0.38, serde transport with bincode over TCP",
        serve: |l| Box::pin(tarpc_bincode::serve(l)),
        client: |a| Box::pin(tarpc_bincode::client(a)),
        stream: None,
    },
    System {
        name: "tonic",
        about: "tonic 0.14 gRPC server and client (HTTP/2, prost)",
        serve: |l| Box::pin(tonic_grpc::serve(l)),
        client: |a| Box::pin(tonic_grpc::client(a)),
        stream: Some(|a| Box::pin(tonic_grpc::stream(a))),
    },
    System {
        name: "ferry",
        about: "Ferry native protocol, Ferry server and generated Ferry client",
        serve: |l| Box::pin(ferry_native::serve(l)),
        client: |a| Box::pin(ferry_native::client(a)),
        stream: Some(|a| Box::pin(ferry_native::stream(a))),
    },
    System {
        name: "ferry-grpc",
        about: "Ferry server speaking gRPC on its port, loaded by the tonic client",
        serve: |l| Box::pin(ferry_native::serve(l)),
        client: |a| Box::pin(tonic_grpc::client(a)),
        stream: Some(|a| Box::pin(tonic_grpc::stream(a))),
    },
    System {
        name: "axum",
        about: "axum 0.8 JSON echo (serde_json + base64), HTTP/2 h2c, hyper client",
        serve: |l| Box::pin(http_json::serve_axum(l)),
        client: |a| Box::pin(http_json::client(a)),
        stream: None,
    },
    System {
        name: "ferry-http",
        about: "Ferry server's HTTP/JSON gateway (proto3 JSON), HTTP/2 h2c, same hyper client",
        serve: |l| Box::pin(ferry_native::serve(l)),
        client: |a| Box::pin(http_json::client(a)),
        stream: None,
    },
];

/// One load shape: payload size and calls in flight, or (`stream`) server streams open.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub size: usize,
    pub concurrency: usize,
    /// Messages of one server stream per `concurrency`, counted, instead of unary calls.
    pub stream: bool,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "16B-c1",
        size: 16,
        concurrency: 1,
        stream: false,
    },
    Scenario {
        name: "16B-c64",
        size: 16,
        concurrency: 64,
        stream: false,
    },
    Scenario {
        name: "1KiB-c64",
        size: 1024,
        concurrency: 64,
        stream: false,
    },
    Scenario {
        name: "64KiB-c8",
        size: 64 * 1024,
        concurrency: 8,
        stream: false,
    },
    Scenario {
        name: "stream-16B",
        size: 16,
        concurrency: 1,
        stream: true,
    },
    Scenario {
        name: "stream-1KiB",
        size: 1024,
        concurrency: 1,
        stream: true,
    },
];

pub fn system(name: &str) -> Result<&'static System, String> {
    SYSTEMS.iter().find(|s| s.name == name).ok_or_else(|| {
        let names: Vec<_> = SYSTEMS.iter().map(|s| s.name).collect();
        format!("unknown system {name:?}; known: {}", names.join(", "))
    })
}

/// Fails a call whose echo came back with the wrong length.
pub fn check_len(got: usize, want: usize) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("echo returned {got} bytes, sent {want}"))
    }
}

#[derive(Parser)]
#[command(about = "Ferry vs tarpc vs tonic vs raw TCP, side by side")]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Subcommand)]
enum Role {
    /// Run every scenario for every system and print the table (the default).
    Run(orchestrate::RunArgs),
    /// Serve one system on 127.0.0.1 (prints `LISTEN addr`; `snap` on stdin prints counters).
    Server {
        system: String,
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Load one system's server (prints `WARM`, `DONE`, then `RESULT {json}`).
    Client {
        system: String,
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 16)]
        size: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Count messages of server streams instead of making unary calls.
        #[arg(long)]
        stream: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let outcome = match cli.role {
        None => orchestrate::run(orchestrate::RunArgs::parse_from(["run"])),
        Some(Role::Run(args)) => orchestrate::run(args),
        Some(Role::Server { system, listen }) => server_role(&system, &listen),
        Some(Role::Client {
            system,
            addr,
            size,
            concurrency,
            warmup,
            seconds,
            stream,
        }) => client_role(
            &system,
            stream,
            ClientArgs {
                addr,
                size,
                concurrency,
                warmup: Duration::from_secs_f64(warmup),
                window: Duration::from_secs_f64(seconds),
            },
        ),
    };
    if let Err(e) = outcome {
        eprintln!("ferry-bench-peers: {e}");
        std::process::exit(1);
    }
}

/// A runtime as `#[tokio::main]` builds it: one worker per CPU this process may run on.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn server_role(name: &str, listen: &str) -> Result<(), String> {
    let system = system(name)?;
    let rt = runtime()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .map_err(|e| format!("bind {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    load::say(&format!("LISTEN {addr}"));
    // Counters on demand; the server exits when its stdin closes.
    std::thread::spawn(|| {
        for line in std::io::stdin().lock().lines() {
            match line.as_deref() {
                Ok("snap") => {
                    let (allocs, bytes) = alloc::snapshot();
                    let cpu = proc::cpu_ns();
                    load::say(&format!(
                        "SNAP {allocs} {bytes} {cpu} {}",
                        proc::peak_rss_kib()
                    ));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        std::process::exit(0);
    });
    rt.block_on((system.serve)(listener));
    Ok(())
}

fn client_role(name: &str, stream: bool, args: ClientArgs) -> Result<(), String> {
    let system = system(name)?;
    let client = if stream {
        system
            .stream
            .ok_or_else(|| format!("{name} does not stream"))?
    } else {
        system.client
    };
    let measured = runtime()?.block_on(client(args))?;
    load::say(&format!(
        "RESULT {}",
        serde_json::to_string(&measured).map_err(|e| e.to_string())?
    ));
    Ok(())
}
