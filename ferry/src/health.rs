//! The standard health service, `grpc.health.v1.Health`, fed by a [`HealthReporter`].
//!
//! Every [`Server`](crate::Server) serves it: `Check` and `List` over every protocol, `Watch`
//! over gRPC. Services start `SERVING`; graceful shutdown turns them `NOT_SERVING` so load
//! balancers stop sending work before the port closes.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use prost::Message;
use tokio::sync::watch;

use crate::http::grpc::StreamHandler;
use crate::{Request, Response, Status};

/// Generated messages, trait and client for `grpc.health.v1`.
pub mod pb {
    #![allow(missing_docs)]
    crate::include_proto!("grpc.health.v1");
}

pub use pb::health_check_response::ServingStatus;

/// Sets the status that the health service reports for each service.
///
/// Cheap to clone; all clones update the same statuses.
///
/// ```
/// let server = ferry::Server::builder();
/// let health = server.health_reporter();
/// health.set_not_serving("calculator.v1.Calculator");
/// assert_eq!(
///     health.status("calculator.v1.Calculator"),
///     Some(ferry::health::ServingStatus::NotServing)
/// );
/// ```
#[derive(Clone, Debug)]
pub struct HealthReporter {
    statuses: Arc<watch::Sender<BTreeMap<String, ServingStatus>>>,
}

impl Default for HealthReporter {
    fn default() -> HealthReporter {
        let mut initial = BTreeMap::new();
        initial.insert(String::new(), ServingStatus::Serving);
        HealthReporter {
            statuses: Arc::new(watch::Sender::new(initial)),
        }
    }
}

impl HealthReporter {
    /// Reports `service` (a full service name, or `""` for the whole server) as serving.
    pub fn set_serving(&self, service: &str) {
        self.set(service, ServingStatus::Serving);
    }

    /// Reports `service` (or `""` for the whole server) as not serving.
    pub fn set_not_serving(&self, service: &str) {
        self.set(service, ServingStatus::NotServing);
    }

    /// The status reported for `service`, if it is known.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        self.statuses.borrow().get(service).copied()
    }

    fn set(&self, service: &str, status: ServingStatus) {
        self.statuses
            .send_if_modified(|map| map.insert(service.to_owned(), status) != Some(status));
    }

    /// Marks every known service (and the server) as not serving.
    pub(crate) fn set_all_not_serving(&self) {
        self.statuses.send_modify(|map| {
            for status in map.values_mut() {
                *status = ServingStatus::NotServing;
            }
        });
    }

    /// Registers `services` as serving unless a status was already set for them.
    pub(crate) fn register(&self, services: &[&str]) {
        self.statuses.send_modify(|map| {
            for service in services {
                map.entry((*service).to_owned())
                    .or_insert(ServingStatus::Serving);
            }
        });
    }

    /// The server-side adapter answering `Check` and `List`.
    pub(crate) fn service(&self) -> pb::HealthServer<HealthService> {
        pb::HealthServer::new(HealthService {
            reporter: self.clone(),
        })
    }

    /// The gRPC handler for the streaming `Watch` method.
    pub(crate) fn watch_handler(&self) -> StreamHandler {
        let reporter = self.clone();
        Arc::new(move |request| watch_stream(reporter.clone(), request))
    }
}

/// Answers health checks from a [`HealthReporter`].
#[derive(Debug)]
pub(crate) struct HealthService {
    reporter: HealthReporter,
}

impl pb::Health for HealthService {
    async fn check(
        &self,
        request: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<pb::HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match self.reporter.status(&service) {
            Some(status) => Ok(Response::new(pb::HealthCheckResponse {
                status: status as i32,
            })),
            None => Err(Status::not_found(format!("unknown service {service:?}"))),
        }
    }

    async fn list(
        &self,
        _request: Request<pb::HealthListRequest>,
    ) -> Result<Response<pb::HealthListResponse>, Status> {
        let statuses = self
            .reporter
            .statuses
            .borrow()
            .iter()
            .map(|(name, status)| {
                let response = pb::HealthCheckResponse {
                    status: *status as i32,
                };
                (name.clone(), response)
            })
            .collect();
        Ok(Response::new(pb::HealthListResponse { statuses }))
    }
}

enum Watch {
    Start(BoxStream<'static, Result<Bytes, Status>>),
    Watching {
        service: String,
        last: ServingStatus,
    },
    Done,
}

fn watch_stream(
    reporter: HealthReporter,
    request: Request<BoxStream<'static, Result<Bytes, Status>>>,
) -> BoxStream<'static, Result<Bytes, Status>> {
    let receiver = reporter.statuses.subscribe();
    let encode = |status: ServingStatus| {
        let message = pb::HealthCheckResponse {
            status: status as i32,
        };
        Bytes::from(message.encode_to_vec())
    };
    let current = |receiver: &mut watch::Receiver<BTreeMap<String, ServingStatus>>,
                   service: &str| {
        receiver
            .borrow_and_update()
            .get(service)
            .copied()
            .unwrap_or(ServingStatus::ServiceUnknown)
    };
    let start = (Watch::Start(request.into_inner()), receiver);
    futures_util::stream::unfold(start, move |(state, mut receiver)| async move {
        match state {
            Watch::Start(mut incoming) => {
                let service = match incoming.next().await {
                    Some(Ok(bytes)) => match pb::HealthCheckRequest::decode(bytes) {
                        Ok(request) => request.service,
                        Err(e) => {
                            let status = Status::invalid_argument(format!("bad request: {e}"));
                            return Some((Err(status), (Watch::Done, receiver)));
                        }
                    },
                    Some(Err(status)) => return Some((Err(status), (Watch::Done, receiver))),
                    None => {
                        let status = Status::invalid_argument("Watch needs a request");
                        return Some((Err(status), (Watch::Done, receiver)));
                    }
                };
                let last = current(&mut receiver, &service);
                Some((
                    Ok(encode(last)),
                    (Watch::Watching { service, last }, receiver),
                ))
            }
            Watch::Watching { service, last } => loop {
                receiver.changed().await.ok()?;
                let now = current(&mut receiver, &service);
                if now != last {
                    let state = Watch::Watching { service, last: now };
                    return Some((Ok(encode(now)), (state, receiver)));
                }
            },
            Watch::Done => None,
        }
    })
    .boxed()
}
