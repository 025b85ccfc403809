//! Which methods a [`Cache`](super::Cache) may hold, for how long, and what the key includes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;

use super::Cache;
use crate::{Code, Metadata, Status};

/// Configures a [`Cache`]; start with [`Cache::builder`].
///
/// Only methods marked `option idempotency_level = NO_SIDE_EFFECTS;` in their `.proto` can be
/// cached or coalesced. The builder learns which those are from the generated code —
/// [`side_effect_free`](Self::side_effect_free) with a client's `SIDE_EFFECT_FREE_METHODS`, or
/// [`descriptors`](Self::descriptors) with a package's `FILE_DESCRIPTOR_SET` — and
/// [`build`](Self::build) refuses a [`method`](Self::method) that is not one of them.
///
/// ```
/// use std::time::Duration;
/// let cache = ferry::cache::Cache::builder()
///     .side_effect_free(&["/shop.v1.Pricing/Price"]) // e.g. PricingClient::SIDE_EFFECT_FREE_METHODS
///     .method("/shop.v1.Pricing/Price", Duration::from_secs(5))
///     .max_entries(10_000)
///     .max_bytes(16 << 20)
///     .build()
///     .unwrap();
/// // Asking for a method with side effects is refused:
/// let refused = ferry::cache::Cache::builder()
///     .side_effect_free(&["/shop.v1.Pricing/Price"])
///     .method("/shop.v1.Orders/Place", Duration::from_secs(5))
///     .build();
/// assert!(refused.unwrap_err().message().contains("NO_SIDE_EFFECTS"));
/// ```
#[derive(Clone, Debug)]
pub struct CacheBuilder {
    eligible: HashSet<String>,
    default_ttl: Option<Duration>,
    methods: Vec<(String, Duration)>,
    pub(super) max_entries: u64,
    pub(super) max_bytes: u64,
    pub(super) max_entry_bytes: usize,
    key_metadata: Vec<String>,
    negative_ttl: Option<Duration>,
    coalesce: bool,
    errors: Vec<String>,
}

impl Default for CacheBuilder {
    fn default() -> CacheBuilder {
        CacheBuilder {
            eligible: HashSet::new(),
            default_ttl: None,
            methods: Vec::new(),
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
            key_metadata: Vec::new(),
            negative_ttl: None,
            coalesce: true,
            errors: Vec::new(),
        }
    }
}

impl CacheBuilder {
    /// Declares `methods` (full paths, `/package.Service/Method`) side-effect free: pass a
    /// generated client's `SIDE_EFFECT_FREE_METHODS`, which lists the methods its `.proto` marks
    /// `idempotency_level = NO_SIDE_EFFECTS`.
    pub fn side_effect_free(mut self, methods: &[&str]) -> CacheBuilder {
        self.eligible
            .extend(methods.iter().map(|m| (*m).to_owned()));
        self
    }

    /// Declares side-effect free every method that the encoded `FileDescriptorSet` `fds` marks
    /// `idempotency_level = NO_SIDE_EFFECTS` (a generated package's `FILE_DESCRIPTOR_SET`, or
    /// `ServiceHandler::file_descriptor_set()`); what a server-side cache reads.
    pub fn descriptors(mut self, fds: &[u8]) -> CacheBuilder {
        match side_effect_free_methods(fds) {
            Ok(methods) => self.eligible.extend(methods),
            Err(e) => self.errors.push(e),
        }
        self
    }

    /// Caches every side-effect-free method for `ttl` (the per-channel opt-in), unless the
    /// response says otherwise (`cache-control: max-age=N` or `no-store`).
    pub fn ttl(mut self, ttl: Duration) -> CacheBuilder {
        self.default_ttl = Some(ttl);
        self
    }

    /// Caches `method` (`/package.Service/Method`) for `ttl` (the per-method opt-in); the
    /// method must be side-effect free, else [`build`](Self::build) fails. A zero `ttl` stores
    /// only replies that carry their own `cache-control: max-age=N` (the server decides), and
    /// still coalesces identical calls in flight.
    pub fn method(mut self, method: impl Into<String>, ttl: Duration) -> CacheBuilder {
        self.methods.push((method.into(), ttl));
        self
    }

    /// Most entries held (default 10,000); the least valuable are evicted beyond it.
    pub fn max_entries(mut self, entries: u64) -> CacheBuilder {
        self.max_entries = entries.max(1);
        self
    }

    /// Most bytes held, counting keys, replies and a fixed overhead per entry (default 64 MiB).
    pub fn max_bytes(mut self, bytes: u64) -> CacheBuilder {
        self.max_bytes = bytes.max(1);
        self
    }

    /// Replies (with their key) larger than this are passed through, never stored (default
    /// 1 MiB).
    pub fn max_entry_bytes(mut self, bytes: usize) -> CacheBuilder {
        self.max_entry_bytes = bytes;
        self
    }

    /// Adds the values of these request metadata keys to the cache key, e.g. `x-tenant` or
    /// `authorization` when replies differ per caller.
    pub fn key_metadata<I, K>(mut self, keys: I) -> CacheBuilder
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.key_metadata
            .extend(keys.into_iter().map(|k| k.into().to_ascii_lowercase()));
        self
    }

    /// Also remembers definite errors (`NOT_FOUND`, `INVALID_ARGUMENT`, `OUT_OF_RANGE`,
    /// `FAILED_PRECONDITION`, `UNIMPLEMENTED`) for `ttl`; by default no error is cached.
    pub fn negative_ttl(mut self, ttl: Duration) -> CacheBuilder {
        self.negative_ttl = Some(ttl);
        self
    }

    /// Whether identical calls in flight share one upstream call (default: yes).
    pub fn coalesce(mut self, enable: bool) -> CacheBuilder {
        self.coalesce = enable;
        self
    }

    /// Builds the cache; fails when a [`method`](Self::method) is not side-effect free, or the
    /// [`descriptors`](Self::descriptors) did not decode.
    pub fn build(self) -> Result<Cache, Status> {
        if let Some(error) = self.errors.first() {
            return Err(Status::invalid_argument(error.clone()));
        }
        let mut methods: HashMap<String, MethodPolicy> = HashMap::new();
        if let Some(ttl) = self.default_ttl {
            for path in &self.eligible {
                methods.insert(path.clone(), MethodPolicy::new(path, ttl));
            }
        }
        for (path, ttl) in &self.methods {
            if !self.eligible.contains(path) {
                return Err(Status::invalid_argument(format!(
                    "cannot cache {path}: only methods marked `option idempotency_level = \
                     NO_SIDE_EFFECTS;` may be cached or coalesced (declare them with \
                     CacheBuilder::side_effect_free(Client::SIDE_EFFECT_FREE_METHODS) or \
                     CacheBuilder::descriptors(FILE_DESCRIPTOR_SET))"
                )));
            }
            methods.insert(path.clone(), MethodPolicy::new(path, *ttl));
        }
        let policy = Policy {
            methods,
            key_metadata: self.key_metadata.clone(),
            negative_ttl: self.negative_ttl,
            coalesce: self.coalesce,
            max_entry_bytes: self.max_entry_bytes,
        };
        Ok(Cache::new(policy, &self))
    }
}

/// What the cache does for one method.
#[derive(Clone, Debug)]
pub(super) struct MethodPolicy {
    /// The path, shared by every key of this method.
    pub(super) path: Arc<str>,
    pub(super) ttl: Duration,
}

impl MethodPolicy {
    fn new(path: &str, ttl: Duration) -> MethodPolicy {
        MethodPolicy {
            path: Arc::from(path),
            ttl,
        }
    }
}

/// The built policy.
#[derive(Debug)]
pub(super) struct Policy {
    pub(super) methods: HashMap<String, MethodPolicy>,
    pub(super) key_metadata: Vec<String>,
    pub(super) negative_ttl: Option<Duration>,
    pub(super) coalesce: bool,
    pub(super) max_entry_bytes: usize,
}

impl Policy {
    /// How long an error may be remembered: only definite answers, only with a negative TTL.
    pub(super) fn error_ttl(&self, status: &Status) -> Option<Duration> {
        let definite = matches!(
            status.code(),
            Code::NotFound
                | Code::InvalidArgument
                | Code::OutOfRange
                | Code::FailedPrecondition
                | Code::Unimplemented
        );
        match (definite, self.negative_ttl) {
            (true, Some(ttl)) => freshness(status.metadata(), ttl),
            _ => None,
        }
    }
}

/// Metadata key of the HTTP caching directives a reply carries.
pub const CACHE_CONTROL: &str = "cache-control";

/// Metadata key of a cached reply's age in seconds (HTTP `Age`), set on server-side hits.
pub const AGE: &str = "age";

/// How long a reply carrying `metadata` stays fresh, given the configured `ttl`: `None` when it
/// must not be stored (`no-store`, `no-cache`, `max-age=0`, or a zero `ttl`); the reply's
/// `max-age` (less its `age`) when it has one; else `ttl`.
pub(super) fn freshness(metadata: &Metadata, ttl: Duration) -> Option<Duration> {
    let mut max_age = None;
    for value in metadata.get_all(CACHE_CONTROL) {
        let Ok(value) = std::str::from_utf8(value) else {
            return None;
        };
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, arg) = match directive.split_once('=') {
                Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
                None => (directive, None),
            };
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return None;
            }
            if name.eq_ignore_ascii_case("max-age") {
                // A malformed max-age makes the reply stale (RFC 9111 §4.2.1).
                max_age = Some(arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0));
            }
        }
    }
    let ttl = match max_age {
        Some(seconds) => {
            let age = metadata
                .get(AGE)
                .and_then(|a| a.trim().parse::<u64>().ok())
                .unwrap_or(0);
            Duration::from_secs(seconds.saturating_sub(age))
        }
        None => ttl,
    };
    (!ttl.is_zero()).then_some(ttl)
}

/// Every method an encoded `FileDescriptorSet` marks `idempotency_level = NO_SIDE_EFFECTS`.
pub(crate) fn side_effect_free_methods(fds: &[u8]) -> Result<Vec<String>, String> {
    use prost_types::method_options::IdempotencyLevel;
    let set = prost_types::FileDescriptorSet::decode(fds)
        .map_err(|e| format!("the descriptor set does not decode: {e}"))?;
    let mut methods = Vec::new();
    for file in &set.file {
        for service in &file.service {
            let full = match file.package() {
                "" => service.name().to_owned(),
                package => format!("{package}.{}", service.name()),
            };
            for method in &service.method {
                let level = method
                    .options
                    .as_ref()
                    .map(|o| o.idempotency_level())
                    .unwrap_or_default();
                if level == IdempotencyLevel::NoSideEffects {
                    methods.push(crate::call::join(&full, method.name()));
                }
            }
        }
    }
    Ok(methods)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &str)]) -> Metadata {
        pairs.iter().map(|(k, v)| (*k, *v)).collect()
    }

    #[test]
    fn cache_control_decides_freshness() {
        let ttl = Duration::from_secs(7);
        assert_eq!(freshness(&md(&[]), ttl), Some(ttl));
        assert_eq!(freshness(&md(&[]), Duration::ZERO), None);
        let max_age = md(&[("cache-control", "public, max-age=30")]);
        assert_eq!(freshness(&max_age, ttl), Some(Duration::from_secs(30)));
        let aged = md(&[("cache-control", "max-age=30"), ("age", "10")]);
        assert_eq!(freshness(&aged, ttl), Some(Duration::from_secs(20)));
        assert_eq!(freshness(&md(&[("cache-control", "max-age=0")]), ttl), None);
        assert_eq!(freshness(&md(&[("cache-control", "max-age=x")]), ttl), None);
        assert_eq!(freshness(&md(&[("cache-control", "No-Store")]), ttl), None);
        assert_eq!(
            freshness(&md(&[("cache-control", "max-age=9, no-cache")]), ttl),
            None
        );
    }

    #[test]
    fn descriptors_name_the_side_effect_free_methods() {
        let methods =
            side_effect_free_methods(crate::services::health::pb::FILE_DESCRIPTOR_SET).unwrap();
        assert!(methods.is_empty(), "{methods:?}");
        assert!(side_effect_free_methods(b"\xff\xff").is_err());
    }
}
