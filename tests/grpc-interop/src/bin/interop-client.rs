//! Ferry's gRPC interop client: runs the interop test cases against a server.
//!
//! ```text
//! interop-client --server_host H --server_port P --test_case NAME|NAME,NAME|all
//!                [--transport grpc|ferry|connect] [--use_tls false]
//!                [--wiretap true|false] [--rpc_timeout SECONDS]
//! ```
//!
//! Prints one line per case: `PASS <case>`, `FAIL <case>: <reason>`, or `SKIP <case>: <why>`
//! when the chosen protocol cannot express the case (the compression cases over the native
//! protocol). Exits 1 if any case failed, 2 on bad arguments. See the `grpc_interop::client`
//! module for what each case checks.

use std::time::Duration;

use clap::Parser;
use grpc_interop::client::{CASES, Settings, Transport, run_all};

/// Run the gRPC interop test cases against an interop server.
#[derive(Parser)]
#[command(
    about,
    after_help = "Example: interop-client --server_host 127.0.0.1 --server_port 10000 --test_case all"
)]
struct Args {
    /// Host name or address of the server.
    #[arg(long = "server_host", default_value = "localhost")]
    server_host: String,
    /// Port of the server.
    #[arg(long = "server_port")]
    server_port: u16,
    /// A case name, several separated by commas, or `all`.
    #[arg(long = "test_case", default_value = "all")]
    test_case: String,
    /// Protocol: grpc (gRPC over HTTP/2), ferry (Ferry's native protocol) or connect.
    #[arg(long, default_value = "grpc", value_parser = parse_transport)]
    transport: Transport,
    /// Accepted for compatibility with the standard flags; only false (plaintext) is supported.
    #[arg(long = "use_tls", default_value = "false", value_parser = parse_false)]
    use_tls: bool,
    /// Check compressed flags and cancellations on the wire through a local relay.
    #[arg(long, default_value = "true", value_parser = parse_bool)]
    wiretap: bool,
    /// Deadline of each call, in seconds.
    #[arg(long = "rpc_timeout", default_value_t = 10.0)]
    rpc_timeout: f64,
}

fn parse_transport(text: &str) -> Result<Transport, String> {
    Transport::parse(text)
        .ok_or_else(|| format!("unknown transport {text:?}; use grpc, ferry or connect"))
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(format!("not a boolean: {other:?}")),
    }
}

fn parse_false(text: &str) -> Result<bool, String> {
    match parse_bool(text)? {
        false => Ok(false),
        true => Err("TLS is not supported: this client speaks plaintext only".into()),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    debug_assert!(!args.use_tls);
    let names: Vec<&str> = if args.test_case == "all" {
        CASES.to_vec()
    } else {
        args.test_case.split(',').collect()
    };
    let unknown: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !CASES.contains(n))
        .collect();
    if !unknown.is_empty() {
        eprintln!(
            "unknown test case(s) {}; known: all, {}",
            unknown.join(", "),
            CASES.join(", ")
        );
        return std::process::ExitCode::from(2);
    }
    let rpc_timeout = match Duration::try_from_secs_f64(args.rpc_timeout) {
        Ok(timeout) if !timeout.is_zero() => timeout,
        _ => {
            eprintln!("--rpc_timeout must be a positive number of seconds");
            return std::process::ExitCode::from(2);
        }
    };
    let host = args
        .server_host
        .trim_start_matches('[')
        .trim_end_matches(']');
    let server = match tokio::net::lookup_host((host, args.server_port)).await {
        Ok(mut addrs) => match addrs.next() {
            Some(addr) => addr,
            None => {
                eprintln!("{host} has no address");
                return std::process::ExitCode::from(2);
            }
        },
        Err(e) => {
            eprintln!("cannot resolve {host}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let settings = Settings {
        server,
        transport: args.transport,
        rpc_timeout,
    };
    let failed = run_all(&names, &settings, args.wiretap).await;
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
