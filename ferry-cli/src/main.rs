//! `ferry`: call, list, describe, health-check and benchmark Ferry and gRPC servers from the
//! command line, with no generated code (descriptors come from server reflection or `.proto`
//! files).

mod bench;
mod codec;
mod describe;
mod descriptors;
mod error;
mod report;
mod target;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ferry::Metadata;
use prost_reflect::DescriptorPool;

use crate::descriptors::{Source, Symbol, find_symbol, resolve_method};
use crate::error::{CliResult, EXIT_NOT_SERVING, Failure};
use crate::target::{Target, parse_duration};

const TARGETS: &str = "\
Targets:
  ferry://HOST:PORT   Ferry's native protocol (also a bare HOST:PORT)
  grpc://HOST:PORT    gRPC over cleartext HTTP/2 (any gRPC server)
  http://HOST:PORT    HTTP/1.1 + JSON, Connect protocol (`POST /pkg.Service/Method`)
Note: in the CLI `http://` means HTTP/JSON; `ferry::Channel` treats it as gRPC.
Descriptors come from gRPC server reflection on the same HOST:PORT unless --proto is given.

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
    /// Make one unary call with a JSON request; prints the JSON response.
    #[command(after_help = "\
Examples:
  ferry call ferry://127.0.0.1:8000 calculator.v1.Calculator/Add '{\"a\": 1, \"b\": 2}'
  echo '{\"a\": 1}' | ferry call http://127.0.0.1:8000 calculator.v1.Calculator.Add
  ferry call grpc://127.0.0.1:8000 calculator.v1.Calculator/Add '{\"a\": 1}' \\
      --proto proto/calculator/v1/calculator.proto -I proto -H authorization:token

A failed call prints `code: message` to stderr and exits with 64 + the status code.")]
    Call(CallArgs),
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
    returns, spread over --connections C connections (default 1; for http:// one per
    caller, since an HTTP/1.1 connection carries one call at a time);
  open loop: --rate R calls per second on a fixed schedule; latency is measured from
    each call's intended send time, so a stalled server cannot hide (no coordinated omission).
Calls carry `ferry-timing: 1`; when responses carry `server-timing: app;dur=…` the report
splits latency L into server processing P and transmission T = L - P.

Examples:
  ferry bench ferry://127.0.0.1:8000 calculator.v1.Calculator/Add '{\"a\":1,\"b\":2}' \\
      --concurrency 64 --connections 2 --duration 10s --warmup 1s
  ferry bench grpc://127.0.0.1:8000 calculator.v1.Calculator/Add '{\"a\":1}' --rate 5000 \\
      --duration 30s --output report.json --html report.html")]
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
struct CallArgs {
    /// ferry://, grpc:// or http:// followed by HOST:PORT
    target: String,
    /// package.Service/Method or package.Service.Method
    method: String,
    /// The request as JSON; read from stdin when absent or `-` (`{}` if stdin is a terminal)
    json: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    protos: ProtoArgs,
    /// Print fields that have their default value too
    #[arg(long)]
    emit_defaults: bool,
    /// Print the response on one line
    #[arg(long)]
    compact: bool,
    /// Print response metadata to stderr
    #[arg(short, long)]
    verbose: bool,
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
        Command::Call(args) => call(args).await,
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

/// The descriptor source for a command: `--proto` files, or reflection on the target.
pub async fn source(target: &Target, conn: &ConnArgs, protos: &ProtoArgs) -> CliResult<Source> {
    let metadata = metadata(&conn.headers)?;
    Source::new(&protos.protos, &protos.includes, || async {
        let channel = target.grpc_channel(conn.connect_timeout).await?;
        // Reflection gets at least 10 s: --timeout is meant for the call itself.
        let timeout = conn
            .timeout
            .unwrap_or_default()
            .max(Duration::from_secs(10));
        Ok((channel, metadata, timeout))
    })
    .await
}

/// Reads the request JSON from the argument, or from stdin for `-` or none.
pub fn request_json(arg: Option<String>) -> CliResult<String> {
    match arg.as_deref() {
        Some("-") | None => {
            let mut stdin = std::io::stdin();
            if arg.is_none() && stdin.is_terminal() {
                return Ok("{}".to_owned());
            }
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|e| Failure::usage(format!("cannot read the request from stdin: {e}")))?;
            Ok(text)
        }
        Some(_) => Ok(arg.unwrap_or_default()),
    }
}

/// `/package.Service/Method` for a method.
pub fn method_path(method: &prost_reflect::MethodDescriptor) -> String {
    format!("/{}/{}", method.parent_service().full_name(), method.name())
}

async fn call(args: CallArgs) -> CliResult {
    let target = Target::parse(&args.target)?;
    let metadata = metadata(&args.conn.headers)?;
    let source = source(&target, &args.conn, &args.protos).await?;
    let method = resolve_method(&source, &args.method).await?;
    if method.is_client_streaming() || method.is_server_streaming() {
        return Err(Failure::usage(format!(
            "{} is a streaming method; `ferry call` makes unary calls only",
            method.full_name()
        )));
    }
    let text = request_json(args.json)?;
    let request = codec::parse_json(&method.input(), &text)?;
    let transport = target.connect(1, args.conn.connect_timeout).await?;
    let body = codec::encode_request(&request, transport.is_json())?;
    let (response_metadata, reply) = transport
        .call(0, &method_path(&method), &metadata, args.conn.timeout, body)
        .await?;
    if args.verbose {
        for (key, value) in response_metadata.iter() {
            if key.ends_with("-bin") {
                use base64::Engine;
                let encoded = base64::engine::general_purpose::STANDARD.encode(value);
                eprintln!("< {key}: {encoded}");
            } else {
                eprintln!("< {key}: {}", String::from_utf8_lossy(value));
            }
        }
    }
    let response = codec::decode_response(&method.output(), reply, transport.is_json())?;
    let value = codec::to_json_value(&response, args.emit_defaults)?;
    let printed = if args.compact {
        serde_json::to_string(&value)
    } else {
        serde_json::to_string_pretty(&value)
    };
    println!("{}", printed.map_err(|e| Failure::usage(e.to_string()))?);
    Ok(())
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
    let metadata = metadata(&args.conn.headers)?;
    let pool = DescriptorPool::decode(ferry::services::health::pb::FILE_DESCRIPTOR_SET)
        .map_err(|e| Failure::usage(format!("bad built-in health descriptors: {e}")))?;
    let Some(Symbol::Method(check)) = find_symbol(&pool, "grpc.health.v1.Health.Check") else {
        return Err(Failure::usage(
            "built-in health descriptors lack Health.Check",
        ));
    };
    let service = args.service.unwrap_or_default();
    let request = codec::parse_json(
        &check.input(),
        &serde_json::json!({ "service": service }).to_string(),
    )?;
    let transport = target.connect(1, args.conn.connect_timeout).await?;
    let body = codec::encode_request(&request, transport.is_json())?;
    let timeout = args.conn.timeout.or(Some(Duration::from_secs(10)));
    let (_, reply) = transport
        .call(0, &method_path(&check), &metadata, timeout, body)
        .await?;
    let response = codec::decode_response(&check.output(), reply, transport.is_json())?;
    let status = match response.get_field_by_name("status").as_deref() {
        Some(prost_reflect::Value::EnumNumber(n)) => {
            ferry::services::health::ServingStatus::try_from(*n)
                .map(|s| s.as_str_name().to_owned())
                .unwrap_or_else(|_| format!("UNKNOWN({n})"))
        }
        _ => "UNKNOWN".to_owned(),
    };
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
