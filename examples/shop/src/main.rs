//! The shop's servers and client in one binary.
//!
//! ```text
//! shop demo                                    # everything in one process, static discovery
//! shop demo --etcd http://127.0.0.1:2379       # the same, registered in and discovered from etcd
//! shop calculator --listen 127.0.0.1:7001 [--etcd URL]
//! shop pricing --listen 127.0.0.1:7100 [--etcd URL] [--latency-ms 1]
//! shop front --listen 127.0.0.1:7000 --calculators ferry://127.0.0.1:7001,127.0.0.1:7002 --pricing ferry://127.0.0.1:7100 [--no-cache]
//! shop front --listen 127.0.0.1:7000 --etcd http://127.0.0.1:2379
//! shop quote --target 127.0.0.1:7000 coffee 3
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry::discovery::EtcdRegistry;
use shop::{Backends, Demo, PricingService, pb};

/// Ferry's multi-service example.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Starts three calculators, pricing and the front in this process and makes a few quotes.
    Demo {
        /// Register and discover through etcd at these endpoints (comma separated).
        #[arg(long)]
        etcd: Option<String>,
    },
    /// Serves a calculator.
    Calculator {
        /// Address to listen on.
        #[arg(long)]
        listen: String,
        /// Register in etcd at these endpoints (comma separated).
        #[arg(long)]
        etcd: Option<String>,
    },
    /// Serves the pricing service.
    Pricing {
        /// Address to listen on.
        #[arg(long)]
        listen: String,
        /// Register in etcd at these endpoints (comma separated).
        #[arg(long)]
        etcd: Option<String>,
        /// How long each lookup takes, in milliseconds (a stand-in for a database query).
        #[arg(long, default_value_t = 0.0)]
        latency_ms: f64,
    },
    /// Serves the front, which calls the calculators and pricing.
    Front {
        /// Address to listen on.
        #[arg(long)]
        listen: String,
        /// Static list of calculators: ferry://host:port,host:port,...
        #[arg(long, conflicts_with = "etcd", requires = "pricing")]
        calculators: Option<String>,
        /// Static list of pricing instances.
        #[arg(long, conflicts_with = "etcd", requires = "calculators")]
        pricing: Option<String>,
        /// Discover (and register) through etcd at these endpoints instead.
        #[arg(long)]
        etcd: Option<String>,
        /// Send every price lookup to the pricing service (no cache, no coalescing).
        #[arg(long)]
        no_cache: bool,
    },
    /// Asks the front for a quote.
    Quote {
        /// The front's address.
        #[arg(long, default_value = "127.0.0.1:7000")]
        target: String,
        /// The item: apple, coffee or book.
        item: String,
        /// How many.
        quantity: u32,
    },
}

async fn registry(etcd: Option<&str>) -> Result<Option<EtcdRegistry>, Box<dyn std::error::Error>> {
    match etcd {
        None => Ok(None),
        Some(endpoints) => {
            let endpoints: Vec<&str> = endpoints.split(',').collect();
            Ok(Some(EtcdRegistry::connect(endpoints).await?))
        }
    }
}

async fn serve_until_signal(handle: ferry::ServerHandle) -> Result<(), Box<dyn std::error::Error>> {
    println!("listening on {}", handle.local_addr());
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await?;
    Ok(())
}

fn print_quote(q: &pb::QuoteResponse) {
    println!(
        "{} x {} at {:.2} = {:.2} + {:.2} tax = {:.2}",
        q.quantity, q.item, q.unit_price, q.subtotal, q.tax, q.total
    );
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    match args.command {
        Command::Demo { etcd } => {
            let registry = registry(etcd.as_deref()).await?;
            let demo = Demo::start(registry.as_ref()).await?;
            let how = if registry.is_some() {
                "etcd"
            } else {
                "static lists"
            };
            println!(
                "front on {}, three calculators and pricing found through {how}",
                demo.front.local_addr()
            );
            let client =
                pb::ShopClient::connect(format!("ferry://{}", demo.front.local_addr())).await?;
            for (item, quantity) in [("apple", 4), ("coffee", 3), ("book", 1)] {
                let quote = client
                    .quote(pb::QuoteRequest {
                        item: item.to_owned(),
                        quantity,
                    })
                    .await?;
                print_quote(quote.get_ref());
            }
            let missing = client
                .quote(pb::QuoteRequest {
                    item: "unicorn".to_owned(),
                    quantity: 1,
                })
                .await;
            if let Err(status) = missing {
                println!("unicorn: {status}");
            }
            let stats = demo.price_cache.stats();
            println!(
                "price cache: {} hits, {} misses, {} lookups served by pricing",
                stats.hits,
                stats.misses,
                demo.pricing_lookups
                    .load(std::sync::atomic::Ordering::Relaxed)
            );
            demo.shutdown().await?;
            println!("demo OK");
        }
        Command::Calculator { listen, etcd } => {
            let registry = registry(etcd.as_deref()).await?;
            serve_until_signal(shop::start_calculator(&listen, registry.as_ref()).await?).await?;
        }
        Command::Pricing {
            listen,
            etcd,
            latency_ms,
        } => {
            let registry = registry(etcd.as_deref()).await?;
            let latency = std::time::Duration::from_secs_f64(latency_ms.max(0.0) / 1000.0);
            let pricing = PricingService::with_latency(latency);
            let lookups = pricing.lookups.clone();
            let handle = shop::start_pricing_with(&listen, registry.as_ref(), pricing).await?;
            serve_until_signal(handle).await?;
            println!(
                "pricing: {} lookups",
                lookups.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        Command::Front {
            listen,
            calculators,
            pricing,
            etcd,
            no_cache,
        } => {
            let backends = match (registry(etcd.as_deref()).await?, calculators, pricing) {
                (Some(registry), _, _) => Backends::Etcd(Box::new(registry)),
                (None, Some(calculators), Some(pricing)) => Backends::Static {
                    calculators,
                    pricing,
                },
                _ => return Err("give --calculators and --pricing, or --etcd".into()),
            };
            let cache = (!no_cache).then(shop::pricing_cache);
            let handle = shop::start_front_with(&listen, &backends, cache.clone()).await?;
            serve_until_signal(handle).await?;
            if let Some(cache) = cache {
                let stats = cache.stats();
                println!(
                    "price cache: {} hits, {} misses ({} coalesced), hit rate {:.2} %",
                    stats.hits,
                    stats.misses,
                    stats.coalesced,
                    stats.hit_rate() * 100.0
                );
            }
        }
        Command::Quote {
            target,
            item,
            quantity,
        } => {
            let client = pb::ShopClient::connect(target).await?;
            let quote = client.quote(pb::QuoteRequest { item, quantity }).await?;
            print_quote(quote.get_ref());
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
