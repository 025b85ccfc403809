//! Hedging: for methods marked safe to repeat, a second attempt goes out when the first is
//! slower than the recent latency percentile; the first success wins and the loser is
//! cancelled (its future is dropped, which cancels the call on the server).
//!
//! This configures tower's [`tower::hedge::Hedge`], which keeps a rotating latency histogram
//! per hedged method.

use std::time::Duration;

use crate::Request;
use crate::call::Body;

/// Metadata key on the second attempt of a hedged call (`hedged: 1`).
pub const HEDGED: &str = "hedged";

/// When a hedged method sends its second attempt.
///
/// ```
/// let config = ferry::client::hedge::HedgeConfig::default();
/// assert_eq!(config.latency_percentile, 0.95);
/// ```
#[derive(Clone, Debug)]
pub struct HedgeConfig {
    /// Hedge a call still running after this percentile of recent latencies (default 0.95).
    pub latency_percentile: f32,
    /// Calls recorded before hedging starts (default 20).
    pub min_data_points: u64,
    /// Latencies are recorded in windows of this length (default 10 s).
    pub period: Duration,
}

impl Default for HedgeConfig {
    fn default() -> HedgeConfig {
        HedgeConfig {
            latency_percentile: 0.95,
            min_data_points: 20,
            period: Duration::from_secs(10),
        }
    }
}

/// Every call through a hedged method may be hedged; the copy is marked [`HEDGED`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HedgePolicy;

impl tower::hedge::Policy<Request<Body>> for HedgePolicy {
    fn clone_request(&self, request: &Request<Body>) -> Option<Request<Body>> {
        // A streamed request cannot be sent twice.
        let mut copy = request.clone_with(request.get_ref().try_clone()?);
        copy.metadata_mut().insert(HEDGED, "1");
        Some(copy)
    }

    fn can_retry(&self, request: &Request<Body>) -> bool {
        // Not worth it when the deadline is about to pass anyway.
        request
            .remaining()
            .is_none_or(|left| left > Duration::from_millis(1))
    }
}
