//! Calls a Calculator server and prints the result.
//!
//! ```text
//! calculator-client --target 127.0.0.1:8000 add 1 2      # prints 3
//! ```

use std::process::ExitCode;

use clap::{Parser, ValueEnum};

/// Call a Ferry Calculator server.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Example: calculator-client --target 127.0.0.1:8000 add 1 2"
)]
struct Args {
    /// Server address: ferry://host:port (native), grpc://host:port or http://host:port (gRPC).
    #[arg(long, default_value = "127.0.0.1:8000")]
    target: String,
    /// The operation.
    op: Op,
    /// Left operand.
    #[arg(allow_negative_numbers = true)]
    a: f64,
    /// Right operand.
    #[arg(allow_negative_numbers = true)]
    b: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Op {
    Add,
    Subtract,
    Multiply,
    Divide,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = async {
        let calculator = calculator::Calculator::connect(&args.target).await?;
        match args.op {
            Op::Add => calculator.add(args.a, args.b).await,
            Op::Subtract => calculator.subtract(args.a, args.b).await,
            Op::Multiply => calculator.multiply(args.a, args.b).await,
            Op::Divide => calculator.divide(args.a, args.b).await,
        }
    }
    .await;
    match result {
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Err(status) => {
            eprintln!("{status}");
            ExitCode::FAILURE
        }
    }
}
