//! The standard health service, `grpc.health.v1.Health`, fed by a [`HealthReporter`].
//!
//! Every [`Server`](crate::Server) serves it, like any registered service (through the same
//! layers): `Check`, `List` and the streaming `Watch`. Services start `SERVING`; graceful
//! shutdown turns them `NOT_SERVING` so load balancers stop sending work before the port
//! closes.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::watch;

use crate::{Request, Response, ResponseStream, Status};

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
///     Some(ferry::services::health::ServingStatus::NotServing)
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

    async fn watch(
        &self,
        request: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<ResponseStream<pb::HealthCheckResponse>>, Status> {
        let service = request.into_inner().service;
        let receiver = self.reporter.statuses.subscribe();
        Ok(Response::new(ResponseStream::new(watch_stream(
            receiver, service,
        ))))
    }
}

/// The status of `service` now, then each change, until the caller goes away.
fn watch_stream(
    receiver: watch::Receiver<BTreeMap<String, ServingStatus>>,
    service: String,
) -> impl Stream<Item = Result<pb::HealthCheckResponse, Status>> + Send + 'static {
    let current = |receiver: &mut watch::Receiver<BTreeMap<String, ServingStatus>>,
                   service: &str| {
        receiver
            .borrow_and_update()
            .get(service)
            .copied()
            .unwrap_or(ServingStatus::ServiceUnknown)
    };
    futures_util::stream::unfold(
        (receiver, service, None),
        move |(mut receiver, service, last)| async move {
            let now = loop {
                if last.is_some() {
                    receiver.changed().await.ok()?;
                }
                let now = current(&mut receiver, &service);
                if last != Some(now) {
                    break now;
                }
            };
            let response = pb::HealthCheckResponse { status: now as i32 };
            Some((Ok(response), (receiver, service, Some(now))))
        },
    )
}
