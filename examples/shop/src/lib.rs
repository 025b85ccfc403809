//! The shop: Ferry's multi-service example.
//!
//! A [`Front`] (`shop.v1.Shop`) prices orders. For each `Quote` it asks [`PricingService`]
//! (`shop.v1.Pricing`) for the item's price, then has the calculator (three instances of
//! `calculator.v1.Calculator`, found through discovery and load-balanced) compute subtotal, tax
//! and total. Every outgoing call is made with `request.child(..)`, so the caller's deadline
//! travels through both hops.
//!
//! Discovery is either a static list ([`Backends::Static`]) or etcd ([`Backends::Etcd`]), where
//! each server registers itself with `Server::register`.
//!
//! Price lookups are cached and coalesced by the front ([`pricing_cache`]): `Pricing.Price` is
//! marked `idempotency_level = NO_SIDE_EFFECTS`, so identical lookups in flight share one call
//! and answers are reused for [`PRICE_TTL`]. Unknown items are remembered for
//! [`NOT_FOUND_TTL`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use calculator::pb::{CalculateRequest, CalculatorClient};
use ferry::cache::Cache;
use ferry::client::hedge::HedgeConfig;
use ferry::discovery::EtcdRegistry;
use ferry::{Channel, Request, Response, Server, ServerHandle, Status};

/// Generated messages, the `Shop` and `Pricing` traits, their servers and clients.
pub mod pb {
    #![allow(missing_docs)]
    ferry::include_proto!("shop.v1");
}

use pb::{PriceRequest, PriceResponse, QuoteRequest, QuoteResponse};

/// The calculator's service name, as registered in discovery.
pub const CALCULATOR: &str = "calculator.v1.Calculator";
/// The pricing service's name, as registered in discovery.
pub const PRICING: &str = "shop.v1.Pricing";

/// Timeout of calls without a deadline of their own, on every channel the shop builds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the front reuses a price.
pub const PRICE_TTL: Duration = Duration::from_secs(10);

/// How long the front remembers that the catalog lacks an item.
pub const NOT_FOUND_TTL: Duration = Duration::from_secs(1);

/// The front's cache of price lookups: `Pricing.Price` (the catalog's only, side-effect-free
/// method) for [`PRICE_TTL`], `NOT_FOUND` for [`NOT_FOUND_TTL`], identical lookups in flight
/// coalesced.
pub fn pricing_cache() -> Cache {
    Cache::builder()
        .side_effect_free(pb::PricingClient::SIDE_EFFECT_FREE_METHODS)
        .ttl(PRICE_TTL)
        .negative_ttl(NOT_FOUND_TTL)
        .max_entries(10_000)
        .build()
        .expect("Pricing.Price is side-effect free")
}

/// The catalog.
#[derive(Debug, Default, Clone)]
pub struct PricingService {
    /// How long each lookup takes (a stand-in for a database query).
    pub latency: Duration,
    /// Lookups served.
    pub lookups: Arc<AtomicU64>,
}

impl PricingService {
    /// A catalog whose lookups take `latency`.
    pub fn with_latency(latency: Duration) -> PricingService {
        PricingService {
            latency,
            lookups: Arc::default(),
        }
    }
}

impl pb::Pricing for PricingService {
    async fn price(
        &self,
        request: Request<PriceRequest>,
    ) -> Result<Response<PriceResponse>, Status> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let item = request.into_inner().item;
        let unit_price = match item.as_str() {
            "apple" => 0.5,
            "coffee" => 3.25,
            "book" => 12.0,
            _ => {
                return Err(Status::not_found(format!(
                    "no item {item:?} in the catalog; try apple, coffee or book"
                )));
            }
        };
        Ok(Response::new(PriceResponse {
            unit_price,
            tax_rate: 0.2,
        }))
    }
}

/// The front service: calls pricing, then the calculator.
#[derive(Debug, Clone)]
pub struct Front {
    calculator: CalculatorClient,
    pricing: pb::PricingClient,
}

impl Front {
    /// A front calling the calculator and pricing over these channels.
    pub fn new(calculator: Channel, pricing: Channel) -> Front {
        Front {
            calculator: CalculatorClient::new(calculator),
            pricing: pb::PricingClient::new(pricing),
        }
    }

    async fn compute(
        &self,
        parent: &Request<QuoteRequest>,
        op: Op,
        a: f64,
        b: f64,
    ) -> Result<f64, Status> {
        let request = parent.child(CalculateRequest { a, b });
        let response = match op {
            Op::Multiply => self.calculator.multiply(request).await?,
            Op::Add => self.calculator.add(request).await?,
        };
        Ok(response.into_inner().result)
    }
}

enum Op {
    Multiply,
    Add,
}

impl pb::Shop for Front {
    async fn quote(
        &self,
        request: Request<QuoteRequest>,
    ) -> Result<Response<QuoteResponse>, Status> {
        let QuoteRequest { item, quantity } = request.get_ref().clone();
        if quantity == 0 {
            return Err(Status::invalid_argument("quantity must be at least 1"));
        }
        let price = self
            .pricing
            .price(request.child(PriceRequest { item: item.clone() }))
            .await?
            .into_inner();
        let subtotal = self
            .compute(
                &request,
                Op::Multiply,
                price.unit_price,
                f64::from(quantity),
            )
            .await?;
        let tax = self
            .compute(&request, Op::Multiply, subtotal, price.tax_rate)
            .await?;
        let total = self.compute(&request, Op::Add, subtotal, tax).await?;
        Ok(Response::new(QuoteResponse {
            item,
            quantity,
            unit_price: price.unit_price,
            subtotal,
            tax,
            total,
        }))
    }
}

/// Where the front finds the calculator and pricing instances.
#[derive(Clone, Debug)]
pub enum Backends {
    /// Fixed lists, e.g. `ferry://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003`.
    Static {
        /// The calculators' comma list.
        calculators: String,
        /// The pricing instances' comma list.
        pricing: String,
    },
    /// Whatever is registered in etcd.
    Etcd(Box<EtcdRegistry>),
}

impl Backends {
    /// Builds the front's two balanced channels; `Multiply` is hedged, prices are cached
    /// ([`pricing_cache`]).
    pub fn channels(&self) -> Result<(Channel, Channel), Status> {
        self.channels_with(Some(pricing_cache()))
    }

    /// [`Backends::channels`] with the pricing channel answering from `cache` (none: every
    /// lookup goes to the catalog).
    pub fn channels_with(&self, cache: Option<Cache>) -> Result<(Channel, Channel), Status> {
        let calculator = match self {
            Backends::Static { calculators, .. } => Channel::builder(calculators.as_str()),
            Backends::Etcd(registry) => {
                Channel::builder(CALCULATOR).discovery(registry.discovery(CALCULATOR))
            }
        };
        let pricing = match self {
            Backends::Static { pricing, .. } => Channel::builder(pricing.as_str()),
            Backends::Etcd(registry) => {
                Channel::builder(PRICING).discovery(registry.discovery(PRICING))
            }
        };
        let calculator = calculator
            .timeout(DEFAULT_TIMEOUT)
            // Every calculator method is marked NO_SIDE_EFFECTS in its .proto: hedge them all.
            .hedge_methods(
                calculator::pb::CalculatorClient::SIDE_EFFECT_FREE_METHODS,
                HedgeConfig::default(),
            )
            .lazy()?;
        // Balanced even for a single address, so retries and ejection apply.
        let mut pricing = pricing
            .timeout(DEFAULT_TIMEOUT)
            .retry(ferry::client::retry::RetryConfig::default());
        if let Some(cache) = cache {
            pricing = pricing.cache(cache);
        }
        let pricing = pricing.lazy()?;
        Ok((calculator, pricing))
    }
}

/// Adds `registry` to `server` when there is one.
fn maybe_register(server: Server, registry: Option<&EtcdRegistry>) -> Server {
    match registry {
        Some(registry) => server.register(registry.clone()),
        None => server,
    }
}

/// Serves a calculator on `addr` (registered in etcd if `registry` is given).
pub async fn start_calculator(
    addr: &str,
    registry: Option<&EtcdRegistry>,
) -> std::io::Result<ServerHandle> {
    let server = Server::builder().add_service(calculator::service());
    maybe_register(server, registry).bind(addr).await
}

/// Serves the pricing service on `addr` (registered in etcd if `registry` is given).
pub async fn start_pricing(
    addr: &str,
    registry: Option<&EtcdRegistry>,
) -> std::io::Result<ServerHandle> {
    start_pricing_with(addr, registry, PricingService::default()).await
}

/// Serves `pricing` on `addr` (registered in etcd if `registry` is given).
pub async fn start_pricing_with(
    addr: &str,
    registry: Option<&EtcdRegistry>,
    pricing: PricingService,
) -> std::io::Result<ServerHandle> {
    let server = Server::builder().add_service(pb::PricingServer::new(pricing));
    maybe_register(server, registry).bind(addr).await
}

/// Serves the front on `addr`, calling the backends `backends` names, with prices cached.
pub async fn start_front(addr: &str, backends: &Backends) -> std::io::Result<ServerHandle> {
    start_front_with(addr, backends, Some(pricing_cache())).await
}

/// Serves the front on `addr`; price lookups answered from `cache` when there is one.
pub async fn start_front_with(
    addr: &str,
    backends: &Backends,
    cache: Option<Cache>,
) -> std::io::Result<ServerHandle> {
    let (calculator, pricing) = backends
        .channels_with(cache)
        .map_err(std::io::Error::other)?;
    let front = Front::new(calculator, pricing);
    let server = Server::builder().add_service(pb::ShopServer::new(front));
    let registry = match backends {
        Backends::Etcd(registry) => Some(&**registry),
        Backends::Static { .. } => None,
    };
    maybe_register(server, registry).bind(addr).await
}

/// A whole shop in one process on loopback: three calculators, pricing and the front.
#[derive(Debug)]
pub struct Demo {
    /// The three calculators.
    pub calculators: Vec<ServerHandle>,
    /// The pricing service.
    pub pricing: ServerHandle,
    /// The front; call it at `front.local_addr()`.
    pub front: ServerHandle,
    /// Lookups the pricing service has served.
    pub pricing_lookups: Arc<AtomicU64>,
    /// The front's cache of price lookups.
    pub price_cache: Cache,
}

impl Demo {
    /// Starts everything on `127.0.0.1:0`, discovering through etcd when `registry` is given,
    /// else through static lists.
    pub async fn start(registry: Option<&EtcdRegistry>) -> std::io::Result<Demo> {
        let mut calculators = Vec::new();
        for _ in 0..3 {
            calculators.push(start_calculator("127.0.0.1:0", registry).await?);
        }
        let service = PricingService::default();
        let pricing_lookups = service.lookups.clone();
        let pricing = start_pricing_with("127.0.0.1:0", registry, service).await?;
        let backends = match registry {
            Some(registry) => Backends::Etcd(Box::new(registry.clone())),
            None => {
                let list: Vec<String> = calculators
                    .iter()
                    .map(|c| c.local_addr().to_string())
                    .collect();
                Backends::Static {
                    calculators: format!("ferry://{}", list.join(",")),
                    pricing: format!("ferry://{}", pricing.local_addr()),
                }
            }
        };
        let price_cache = pricing_cache();
        let front = start_front_with("127.0.0.1:0", &backends, Some(price_cache.clone())).await?;
        Ok(Demo {
            calculators,
            pricing,
            front,
            pricing_lookups,
            price_cache,
        })
    }

    /// Shuts everything down gracefully (deregistering from etcd).
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.front.shutdown().await?;
        self.pricing.shutdown().await?;
        for calculator in self.calculators {
            calculator.shutdown().await?;
        }
        Ok(())
    }
}
