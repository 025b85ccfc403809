//! The bounded store (a `moka` future cache) and its counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use moka::notification::RemovalCause;

use crate::{Metadata, Status};

/// What identifies a call: its method, its encoded request and the values of the metadata
/// keys the cache was told to include.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Key {
    pub(super) method: Arc<str>,
    pub(super) body: Bytes,
    /// The named metadata values, length-prefixed; empty when no keys are named.
    pub(super) metadata: Bytes,
}

impl Key {
    pub(super) fn new(method: Arc<str>, body: Bytes, keys: &[String], metadata: &Metadata) -> Key {
        let metadata = if keys.is_empty() {
            Bytes::new()
        } else {
            let mut out = BytesMut::new();
            for key in keys {
                for value in metadata.get_all(key) {
                    out.put_u32(u32::try_from(value.len()).unwrap_or(u32::MAX));
                    out.put_slice(value);
                }
                // Separates keys, so values cannot slide from one key to the next.
                out.put_u32(u32::MAX);
            }
            out.freeze()
        };
        Key {
            method,
            body,
            metadata,
        }
    }

    fn len(&self) -> usize {
        self.method.len() + self.body.len() + self.metadata.len()
    }
}

/// A successful reply, as it is stored and shared between coalesced callers.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub(super) metadata: Metadata,
    pub(super) body: Bytes,
    pub(super) trailers: Metadata,
}

/// The outcome of one upstream call.
pub(crate) type Outcome = Result<Arc<Reply>, Status>;

/// One stored outcome.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(super) outcome: Outcome,
    pub(super) stored_at: Instant,
    pub(super) ttl: Duration,
    weight: u32,
}

/// Bytes counted per entry besides its key and reply: the entry, its `Arc`s and moka's node.
const ENTRY_OVERHEAD: usize = 256;

impl Stored {
    pub(super) fn new(key: &Key, outcome: Outcome, ttl: Duration, min_weight: u32) -> Stored {
        let size = key.len() + ENTRY_OVERHEAD + outcome_size(&outcome);
        Stored {
            outcome,
            stored_at: Instant::now(),
            ttl,
            weight: u32::try_from(size).unwrap_or(u32::MAX).max(min_weight),
        }
    }

    /// Bytes this entry counts for.
    pub(super) fn weight(&self) -> u32 {
        self.weight
    }
}

/// Bytes of a reply or an error.
pub(super) fn outcome_size(outcome: &Outcome) -> usize {
    match outcome {
        Ok(reply) => {
            reply.body.len() + reply.metadata.encoded_size() + reply.trailers.encoded_size()
        }
        Err(status) => {
            status.message().len() + status.details().len() + status.metadata().encoded_size()
        }
    }
}

/// Expires each entry after its own TTL.
struct PerEntryTtl;

impl moka::Expiry<Key, Arc<Stored>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Arc<Stored>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The counters behind [`CacheStats`](super::CacheStats).
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) coalesced: AtomicU64,
    pub(super) stores: AtomicU64,
    pub(super) evictions: AtomicU64,
    pub(super) expirations: AtomicU64,
}

impl Counters {
    pub(super) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub(super) type Store = moka::future::Cache<Key, Arc<Stored>>;

/// A moka cache bounded by entries *and* bytes: every entry weighs its size in bytes but at
/// least `max_bytes / max_entries`, so `max_bytes` of weight hold at most `max_entries`
/// entries. Returns the store and that minimum weight.
pub(super) fn store(max_entries: u64, max_bytes: u64, counters: Arc<Counters>) -> (Store, u32) {
    let min_weight = u32::try_from(max_bytes.div_ceil(max_entries).max(1)).unwrap_or(u32::MAX);
    let store = moka::future::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|_key: &Key, value: &Arc<Stored>| value.weight())
        .expire_after(PerEntryTtl)
        .eviction_listener(move |_key, _value, cause| match cause {
            RemovalCause::Size => Counters::add(&counters.evictions),
            RemovalCause::Expired => Counters::add(&counters.expirations),
            RemovalCause::Explicit | RemovalCause::Replaced => {}
        })
        .build();
    (store, min_weight)
}
