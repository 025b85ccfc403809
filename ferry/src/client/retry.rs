//! Retries: per-method retryable codes, exponential backoff with full jitter, and a shared
//! budget (tower's [`TpsBudget`]) so retries never multiply an outage.
//!
//! Each retry carries the metadata entry [`RETRY_ATTEMPTS`] (`retry-attempts: n`, the number of
//! earlier attempts), so servers can see it. A retry is only made while the call's deadline
//! leaves time for the backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};

use crate::call::Body;
use crate::{Code, Request, Response, Status};

/// Metadata key a retried request carries: how many attempts were made before this one.
pub const RETRY_ATTEMPTS: &str = "retry-attempts";

/// How one method (or, as the default, every method) is retried.
///
/// ```
/// use ferry::{Code, client::retry::RetryConfig};
/// // Also retry RESOURCE_EXHAUSTED, at most 3 attempts in all.
/// let config = RetryConfig::default()
///     .codes([Code::Unavailable, Code::ResourceExhausted])
///     .max_attempts(3);
/// assert_eq!(config.max_attempts, 3);
/// ```
#[derive(Clone, Debug)]
pub struct RetryConfig {
    /// Attempts in all, the first included (default 4; 1 disables retries).
    pub max_attempts: u32,
    /// Status codes that are retried (default `UNAVAILABLE` only; others are opt-in).
    pub codes: Vec<Code>,
    /// The backoff before retry n is random in `0..=min(max_backoff, base_backoff * 2^(n-1))`
    /// (default base 25 ms).
    pub base_backoff: Duration,
    /// Upper bound of one backoff (default 1 s).
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> RetryConfig {
        RetryConfig {
            max_attempts: 4,
            codes: vec![Code::Unavailable],
            base_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryConfig {
    /// No retries.
    pub fn disabled() -> RetryConfig {
        RetryConfig {
            max_attempts: 1,
            ..RetryConfig::default()
        }
    }

    /// Replaces the retryable codes.
    pub fn codes(mut self, codes: impl IntoIterator<Item = Code>) -> RetryConfig {
        self.codes = codes.into_iter().collect();
        self
    }

    /// Sets the number of attempts in all (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> RetryConfig {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets the backoff bounds.
    pub fn backoff(mut self, base: Duration, max: Duration) -> RetryConfig {
        self.base_backoff = base;
        self.max_backoff = max.max(base);
        self
    }

    /// The jittered backoff before retry number `retry` (1-based).
    fn backoff_for(&self, retry: u32) -> Duration {
        let exp = self
            .base_backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max_backoff);
        let nanos = u64::try_from(exp.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

/// A retry budget shared by every call of a channel: retries may add at most `ratio` of the
/// recent calls, plus `min_per_sec` per second so a quiet client can still retry.
///
/// The default, `RetryBudget::new(Duration::from_secs(10), 10, 0.2)`, allows retries worth
/// 20 % of the calls of the last 10 s, plus 10 a second.
#[derive(Clone, Debug)]
pub struct RetryBudget {
    inner: Arc<TpsBudget>,
}

impl RetryBudget {
    /// A budget remembering calls for `ttl` (1 to 60 s), allowing `min_per_sec` retries a second
    /// plus `ratio` (0 to 1000) retries per call.
    pub fn new(ttl: Duration, min_per_sec: u32, ratio: f32) -> RetryBudget {
        let ttl = ttl.clamp(Duration::from_secs(1), Duration::from_secs(60));
        RetryBudget {
            inner: Arc::new(TpsBudget::new(ttl, min_per_sec, ratio.clamp(0.0, 1000.0))),
        }
    }

    /// Records one call (not a retry).
    pub fn deposit(&self) {
        self.inner.deposit();
    }

    /// Takes one retry out of the budget; `false` when it is spent.
    pub fn withdraw(&self) -> bool {
        self.inner.withdraw()
    }
}

impl Default for RetryBudget {
    fn default() -> RetryBudget {
        RetryBudget::new(Duration::from_secs(10), 10, 0.2)
    }
}

/// The per-call retry state: tower's [`tower::retry::Policy`] for encoded calls.
#[derive(Clone)]
pub(crate) struct RetryPolicy {
    default: Arc<RetryConfig>,
    methods: Arc<HashMap<String, RetryConfig>>,
    budget: RetryBudget,
    attempts: u32,
}

impl RetryPolicy {
    pub(crate) fn new(
        default: RetryConfig,
        methods: HashMap<String, RetryConfig>,
        budget: RetryBudget,
    ) -> RetryPolicy {
        RetryPolicy {
            default: Arc::new(default),
            methods: Arc::new(methods),
            budget,
            attempts: 0,
        }
    }

    fn config(&self, method: &str) -> &RetryConfig {
        self.methods.get(method).unwrap_or(&self.default)
    }
}

fn annotate(status: &Status, note: &str) -> Status {
    Status::new(status.code(), format!("{} ({note})", status.message()))
        .with_details(status.details().clone())
}

impl tower::retry::Policy<Request<Body>, Response<Body>, Status> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        request: &mut Request<Body>,
        result: &mut Result<Response<Body>, Status>,
    ) -> Option<Self::Future> {
        self.attempts += 1;
        let Err(status) = result else { return None };
        let config = self.config(request.method());
        if !config.codes.contains(&status.code()) {
            return None;
        }
        if self.attempts >= config.max_attempts {
            if config.max_attempts > 1 {
                *status = annotate(status, &format!("gave up after {} attempts", self.attempts));
            }
            return None;
        }
        let backoff = config.backoff_for(self.attempts);
        if request.remaining().is_some_and(|left| left <= backoff) {
            return None;
        }
        if !self.budget.withdraw() {
            *status = annotate(
                status,
                &format!(
                    "not retried after {} attempt(s): the retry budget is spent",
                    self.attempts
                ),
            );
            return None;
        }
        request
            .metadata_mut()
            .insert(RETRY_ATTEMPTS, self.attempts.to_string());
        Some(tokio::time::sleep(backoff))
    }

    fn clone_request(&mut self, request: &Request<Body>) -> Option<Request<Body>> {
        if self.attempts == 0 {
            self.budget.deposit();
        }
        if self.config(request.method()).max_attempts <= 1 {
            return None;
        }
        // A streamed request cannot be replayed, so streaming calls are never retried.
        Some(request.clone_with(request.get_ref().try_clone()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::retry::Policy;

    fn failing(method: &'static str) -> (Request<Body>, Result<Response<Body>, Status>) {
        let mut req = Request::new(Body::empty());
        req.set_method(method);
        (req, Err(Status::unavailable("down")))
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let config = RetryConfig::default();
        for retry in 1..30 {
            let b = config.backoff_for(retry);
            assert!(b <= Duration::from_secs(1));
            assert!(b <= Duration::from_millis(25) * 2u32.pow((retry - 1).min(10)));
        }
    }

    /// Full jitter: the draws spread over the whole range `0..=cap`, not just under it (an
    /// always-zero or always-capped backoff fails here), and the range grows per retry.
    #[test]
    fn backoff_is_spread_over_its_whole_range() {
        let config =
            RetryConfig::default().backoff(Duration::from_millis(25), Duration::from_secs(1));
        let draws = |retry: u32| -> Vec<Duration> {
            (0..2000).map(|_| config.backoff_for(retry)).collect()
        };
        // Retry 3: uniform in 0..=100 ms.
        let cap = Duration::from_millis(100);
        let third = draws(3);
        assert!(third.iter().all(|b| *b <= cap));
        let distinct: std::collections::HashSet<_> = third.iter().collect();
        assert!(
            distinct.len() > 1900,
            "only {} distinct draws",
            distinct.len()
        );
        // Expected 1000 of 2000 above half the cap and 500 under a quarter (the standard
        // deviations are about 22 and 19 draws, so these bounds are more than 10 away).
        let upper = third.iter().filter(|b| **b > cap / 2).count();
        let lowest = third.iter().filter(|b| **b < cap / 4).count();
        assert!(
            (750..=1250).contains(&upper),
            "{upper} of 2000 above half the cap"
        );
        assert!(
            (300..=700).contains(&lowest),
            "{lowest} of 2000 under a quarter"
        );
        // The range doubles per retry: retry 1 stays within 25 ms, retry 3 often exceeds it.
        assert!(draws(1).iter().all(|b| *b <= Duration::from_millis(25)));
        let beyond = third
            .iter()
            .filter(|b| **b > Duration::from_millis(25))
            .count();
        assert!(
            beyond > 1000,
            "only {beyond} of 2000 retry-3 backoffs exceed 25 ms"
        );
    }

    #[tokio::test]
    async fn retries_until_max_attempts_and_tags_them() {
        let mut policy = RetryPolicy::new(
            RetryConfig::default().max_attempts(3),
            HashMap::new(),
            RetryBudget::new(Duration::from_secs(10), 100, 1.0),
        );
        let (req, mut result) = failing("/a.B/C");
        let mut copy = policy.clone_request(&req).unwrap();
        assert!(policy.retry(&mut copy, &mut result).is_some());
        assert_eq!(copy.metadata().get(RETRY_ATTEMPTS), Some("1"));
        assert!(policy.retry(&mut copy, &mut result).is_some());
        assert_eq!(copy.metadata().get(RETRY_ATTEMPTS), Some("2"));
        assert!(policy.retry(&mut copy, &mut result).is_none());
        assert!(
            result
                .unwrap_err()
                .message()
                .contains("gave up after 3 attempts")
        );
    }

    #[tokio::test]
    async fn only_configured_codes_and_methods_retry() {
        let mut methods = HashMap::new();
        methods.insert("/a.B/Never".to_owned(), RetryConfig::disabled());
        let mut policy = RetryPolicy::new(RetryConfig::default(), methods, RetryBudget::default());
        let (req, _) = failing("/a.B/Never");
        assert!(policy.clone_request(&req).is_none());
        let (mut req, _) = failing("/a.B/C");
        let mut result = Err(Status::invalid_argument("bad"));
        assert!(policy.retry(&mut req, &mut result).is_none());
    }

    #[tokio::test]
    async fn the_budget_stops_retries() {
        let budget = RetryBudget::new(Duration::from_secs(1), 0, 0.0);
        let mut policy = RetryPolicy::new(RetryConfig::default(), HashMap::new(), budget);
        let (req, mut result) = failing("/a.B/C");
        let mut copy = policy.clone_request(&req).unwrap();
        assert!(policy.retry(&mut copy, &mut result).is_none());
        assert!(
            result
                .unwrap_err()
                .message()
                .contains("retry budget is spent")
        );
    }
}
