//! `ferry`: call, list, describe, health-check and benchmark Ferry and gRPC servers from the
//! command line, with no generated code (descriptors come from server reflection or `.proto`
//! files).

mod bench;
mod call;
mod codec;
mod describe;
mod descriptors;
mod error;
mod report;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ferry::services::health::ServingStatus;
use ferry::services::health::pb::{HealthCheckRequest, HealthClient};
use ferry::{Metadata, Request};

use crate::descriptors::{Source, find_symbol};
use crate::error::{CliResult, EXIT_NOT_SERVING, Failure};
use crate::target::{Target, parse_duration};

const TARGETS: &str = "\
Targets:
  ferry://HOST:PORT   Ferry's native protocol (also a bare HOST:PORT)
  grpc://HOST:PORT    gRPC over cleartext HTTP/2 (any gRPC server)
  http://HOST:PORT    the Connect protocol over HTTP/1.1 (`POST /pkg.Service/Method`)
The schemes mean the same as in `ferry::Channel`, which makes every call. Requests and replies
are JSON on the command line and protobuf on the wire, whatever the protocol.
Descriptors come from gRPC server reflection on the same HOST:PORT unless --proto is given
(reflection is a gRPC service; a Ferry server serves every protocol on one port).

Exit codes: 0 ok; 1 bad input (arguments, JSON, unknown method); 2 usage;
3 health: not serving; 64 + status code when a call fails (e.g. 67 = invalid_argument).";

/// Call, inspect and load-test Ferry and gRPC services.
#[derive(Parser)]
#[command(name = "ferry", version, about, after_help = TARGETS)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make one call with a JSON request; prints the JSON response(s).
    #[command(after_help = "\
Examples:
  ferry call ferry://127.0.0.1:8000 calculator.v1.Calculator/Add '{\"a\": 1, \"b\": 2}'
  echo '{\"a\": 1}' | ferry call http://127.0.0.1:8000 calculator.v1.Calculator.Add
  ferry call grpc://127.0.0.1:8000 calculator.v1.Calculator/Add '{\"a\": 1}' \\
      --proto proto/calculator/v1/calculator.proto -I proto -H authorization:token
  ferry call grpc://127.0.0.1:8000 grpc.health.v1.Health/Watch --compact   # until Ctrl-C
  printf '{\"listServices\": \"\"}\\n{\"fileByFilename\": \"grpc/health/v1/health.proto\"}\\n' |
      ferry call grpc://127.0.0.1:8000 grpc.reflection.v1.ServerReflection/ServerReflectionInfo

Streaming methods:
  replies (server-streaming and bidi) are printed as they arrive, one JSON document each;
    with --compact one per line (newline-delimited JSON);
  requests (client-streaming and bidi) are JSON documents one after another (one per line,
    or a JSON array of them), from the argument or read from stdin as they come until it
    ends (Ctrl-D on a terminal). --timeout bounds the whole call, streams included.

A failed call prints `code: message` to stderr and exits with 64 + the status code; replies
that arrived before a stream failed are printed first.")]
    Call(call::CallArgs),
    /// List the services, or one service's methods.
    #[command(after_help = "\
Examples:
  ferry list ferry://127.0.0.1:8000
  ferry list grpc://127.0.0.1:8000 calculator.v1.Calculator")]
    List(ListArgs),
    /// Print a service, method, message or enum as .proto source.
    #[command(after_help = "\
Examples:
  ferry describe ferry://127.0.0.1:8000 calculator.v1.Calculator
  ferry describe ferry://127.0.0.1:8000 calculator.v1.CalculateRequest")]
    Describe(DescribeArgs),
    /// Check grpc.health.v1.Health: prints SERVING or NOT_SERVING (exit 3 when not serving).
    #[command(after_help = "\
Examples:
  ferry health ferry://127.0.0.1:8000
  ferry health http://127.0.0.1:8000 calculator.v1.Calculator")]
    Health(HealthArgs),
    /// Load-test one method and report throughput and latency percentiles.
    #[command(after_help = "\
Modes:
  closed loop (default): --concurrency N callers, each sending its next call when the last
    returns, spread over --connections C channels (default 1; for http:// one per caller,
    since an HTTP/1.1 connection carries one call at a time: a Connect channel pools its
    connections and opens one more for each call in flight beyond them);
  open loop: --rate R calls per second on a fixed schedule; latency is measured from
    each call's intended send time, so a stalled server cannot hide (no coordinated omission).
Calls carry `ferry-timing: 1`; when responses carry `server-timing: app;dur=…` the report
splits latency L into server processing P and transmission T = L - P.

Examples:
  ferry bench ferry://127.0.0.1:8000 calculator.v1.Calculator/Add '{\"a\":1,\"b\":2}' \\
      --concurrency 64 --connections 2 --duration 10s --warmup 1s
  ferry bench grpc://127.0.0.1:8000 calculator.v1.Calculator/Add '{\"a\":1}' --rate 5000 \\
      --duration 30s --output report.json --html report.html

Unary methods only.")]
    Bench(bench::BenchArgs),
}

/// Connection options every command shares.
#[derive(Args, Clone)]
pub struct ConnArgs {
    /// Request metadata, repeatable: -H key:value (keys ending in -bin take base64)
    #[arg(short = 'H', long = "header", value_name = "KEY:VALUE")]
    pub headers: Vec<String>,
    /// Deadline of each call, e.g. 500ms or 5s (bench: 30s unless given)
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Give up connecting after this long
    #[arg(long, value_parser = parse_duration, default_value = "5s", value_name = "DURATION")]
    pub connect_timeout: Duration,
}

/// Where descriptors come from when not from reflection.
#[derive(Args, Clone)]
pub struct ProtoArgs {
    /// Use this .proto file instead of server reflection (repeatable)
    #[arg(long = "proto", value_name = "FILE")]
    pub protos: Vec<PathBuf>,
    /// Import path for --proto files (repeatable)
    #[arg(short = 'I', long = "import-path", value_name = "DIR")]
    pub includes: Vec<PathBuf>,
}

#[derive(Args)]
struct ListArgs {
    /// ferry://, grpc:// or http:// followed by HOST:PORT
    target: String,
    /// A service whose methods to list
    service: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    protos: ProtoArgs,
}

#[derive(Args)]
struct DescribeArgs {
    /// ferry://, grpc:// or http:// followed by HOST:PORT
    target: String,
    /// Full name of a service, method, message or enum
    symbol: String,
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    protos: ProtoArgs,
}

#[derive(Args)]
struct HealthArgs {
    /// ferry://, grpc:// or http:// followed by HOST:PORT
    target: String,
    /// The service to check; the whole server when absent
    service: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Call(args) => call::run(args).await,
        Command::List(args) => list(args).await,
        Command::Describe(args) => describe(args).await,
        Command::Health(args) => health(args).await,
        Command::Bench(args) => bench::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{}", failure.message);
            ExitCode::from(failure.exit_code)
        }
    }
}

/// Parses `-H key:value` options.
pub fn metadata(headers: &[String]) -> CliResult<Metadata> {
    let mut metadata = Metadata::new();
    for header in headers {
        let Some((key, value)) = header.split_once(':') else {
            return Err(Failure::usage(format!(
                "header {header:?} should look like key:value"
            )));
        };
        let key = key.trim().to_ascii_lowercase();
        if !ferry::call::is_valid_key(&key) {
            return Err(Failure::usage(format!(
                "{key:?} is not a valid metadata key"
            )));
        }
        if key.ends_with("-bin") {
            use base64::Engine;
            let value = value.trim().trim_end_matches('=');
            let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(value)
                .map_err(|e| {
                    Failure::usage(format!("{key} needs a base64 value (it ends in -bin): {e}"))
                })?;
            metadata.insert_bin(key, bytes);
        } else {
            metadata.append(key, value.trim());
        }
    }
    Ok(metadata)
}

/// The descriptor source for a command: `--proto` files, or reflection on the target (over
/// gRPC, see [`Target::reflection_channel`]).
pub async fn source(target: &Target, conn: &ConnArgs, protos: &ProtoArgs) -> CliResult<Source> {
    let metadata = metadata(&conn.headers)?;
    Source::new(&protos.protos, &protos.includes, || async {
        let channel = target.reflection_channel(conn.connect_timeout).await?;
        // Reflection gets at least 10 s: --timeout is meant for the call itself.
        let timeout = conn
            .timeout
            .unwrap_or_default()
            .max(Duration::from_secs(10));
        Ok((channel, metadata, timeout))
    })
    .await
}

/// `/package.Service/Method` for a method.
pub fn method_path(method: &prost_reflect::MethodDescriptor) -> String {
    format!("/{}/{}", method.parent_service().full_name(), method.name())
}

async fn list(args: ListArgs) -> CliResult {
    let target = Target::parse(&args.target)?;
    let source = source(&target, &args.conn, &args.protos).await?;
    match args.service {
        None => {
            for name in source.services().await? {
                println!("{name}");
            }
        }
        Some(service) => {
            let service = service.trim_start_matches('.');
            let pool = source.pool_for(service).await?;
            let Some(svc) = pool.get_service_by_name(service) else {
                return Err(Failure::usage(format!("unknown service {service:?}")));
            };
            for method in svc.methods() {
                println!("{}", method.full_name());
            }
        }
    }
    Ok(())
}

async fn describe(args: DescribeArgs) -> CliResult {
    let target = Target::parse(&args.target)?;
    let source = source(&target, &args.conn, &args.protos).await?;
    let pool = source.pool_for(&args.symbol).await?;
    let Some(symbol) = find_symbol(&pool, &args.symbol) else {
        return Err(Failure::usage(format!("unknown symbol {:?}", args.symbol)));
    };
    print!("{}", describe::render(&symbol));
    Ok(())
}

async fn health(args: HealthArgs) -> CliResult {
    let target = Target::parse(&args.target)?;
    let service = args.service.unwrap_or_default();
    let mut request = Request::new(HealthCheckRequest {
        service: service.clone(),
    });
    *request.metadata_mut() = metadata(&args.conn.headers)?;
    request.set_timeout(args.conn.timeout.unwrap_or(Duration::from_secs(10)));
    let channel = target.channel(args.conn.connect_timeout).await?;
    let response = HealthClient::new(channel).check(request).await?;
    let code = response.get_ref().status;
    let status = ServingStatus::try_from(code)
        .map(|s| s.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("UNKNOWN({code})"));
    println!("{status}");
    if status == "SERVING" {
        Ok(())
    } else {
        Err(Failure {
            message: format!(
                "{} is {status}",
                if service.is_empty() {
                    target.url()
                } else {
                    service
                }
            ),
            exit_code: EXIT_NOT_SERVING,
        })
    }
}
