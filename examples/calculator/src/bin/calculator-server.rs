//! Serves the Calculator until Ctrl-C or SIGTERM, then drains in-flight calls.
//!
//! ```text
//! calculator-server --listen 127.0.0.1:8000
//! ```

use clap::Parser;

/// Serve the Ferry Calculator service.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Example: calculator-server --listen 127.0.0.1:8000"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: String,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    ferry::Server::builder()
        .add_service(calculator::service())
        .serve(args.listen)
        .await
}
