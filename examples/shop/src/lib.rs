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

use std::time::Duration;

use calculator::pb::{CalculateRequest, CalculatorClient};
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

/// The catalog.
#[derive(Debug, Default, Clone)]
pub struct PricingService;

impl pb::Pricing for PricingService {
    async fn price(
        &self,
        request: Request<PriceRequest>,
    ) -> Result<Response<PriceResponse>, Status> {
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
    /// Builds the front's two balanced channels; `Multiply` is hedged.
    pub fn channels(&self) -> Result<(Channel, Channel), Status> {
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
        let pricing = pricing
            .timeout(DEFAULT_TIMEOUT)
            .retry(ferry::client::retry::RetryConfig::default())
            .lazy()?;
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
    let server = Server::builder().add_service(pb::PricingServer::new(PricingService));
    maybe_register(server, registry).bind(addr).await
}

/// Serves the front on `addr`, calling the backends `backends` names.
pub async fn start_front(addr: &str, backends: &Backends) -> std::io::Result<ServerHandle> {
    let (calculator, pricing) = backends.channels().map_err(std::io::Error::other)?;
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
}

impl Demo {
    /// Starts everything on `127.0.0.1:0`, discovering through etcd when `registry` is given,
    /// else through static lists.
    pub async fn start(registry: Option<&EtcdRegistry>) -> std::io::Result<Demo> {
        let mut calculators = Vec::new();
        for _ in 0..3 {
            calculators.push(start_calculator("127.0.0.1:0", registry).await?);
        }
        let pricing = start_pricing("127.0.0.1:0", registry).await?;
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
        let front = start_front("127.0.0.1:0", &backends).await?;
        Ok(Demo {
            calculators,
            pricing,
            front,
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
