//! Ferry's gRPC interop server: `grpc.testing.TestService` on one port that speaks gRPC, the
//! Connect protocol and Ferry's native protocol.
//!
//! ```text
//! interop-server --port 10000 [--host 0.0.0.0] [--use_tls false]
//! ```
//!
//! `--port 0` picks a free port. Once it accepts calls it prints exactly one line,
//! `listening on PORT`, and it stops gracefully on SIGTERM or Ctrl-C (exit status 0).

use std::time::Duration;

use clap::Parser;

/// Serve grpc.testing.TestService for the gRPC interop test cases.
#[derive(Parser)]
#[command(about, after_help = "Example: interop-server --port 0")]
struct Args {
    /// Port to listen on; 0 picks a free one.
    #[arg(long)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    host: String,
    /// Accepted for compatibility with the standard flags; only false (plaintext) is supported.
    #[arg(long = "use_tls", default_value = "false", value_parser = parse_false)]
    use_tls: bool,
}

fn parse_false(text: &str) -> Result<bool, String> {
    match text {
        "false" | "0" | "no" => Ok(false),
        "true" | "1" | "yes" => {
            Err("TLS is not supported: this server speaks plaintext only".into())
        }
        other => Err(format!("not a boolean: {other:?}")),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    debug_assert!(!args.use_tls);
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    let port = listener.local_addr()?.port();
    let server = ferry::Server::builder()
        .add_service(grpc_interop::server::service())
        .shutdown_grace_period(Duration::from_secs(2));
    println!("listening on {port}");
    server.serve_with_shutdown(listener, stop_signal()).await
}
