//! Single flight: identical calls in flight share one upstream call.
//!
//! The upstream call is a [`Shared`] future that every waiter holds a clone of and polls, so
//! whichever waiter is still there drives it: one caller leaving (its future dropped, e.g.
//! cancelled or timed out) does not cancel it for the others. When the last waiter leaves, the
//! flight is forgotten and the upstream future dropped, which cancels the call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt;
use futures_util::future::Shared;

use super::store::{Key, Outcome};
use crate::call::BoxFuture;

type Flight = Shared<BoxFuture<Outcome>>;

struct Entry {
    id: u64,
    flight: Flight,
    waiters: usize,
}

/// The calls in flight, by key.
#[derive(Default)]
pub(super) struct Flights {
    calls: Mutex<HashMap<Key, Entry>>,
    next_id: AtomicU64,
}

/// How a caller took part in a flight.
pub(super) enum Role {
    /// It started the upstream call.
    Leader,
    /// It joined a call already in flight.
    Follower,
}

impl Flights {
    /// Joins the flight for `key`, or starts one with `upstream` (which is then polled only
    /// by the waiters, never under the lock); resolves to the shared outcome.
    pub(super) fn join(
        self: &Arc<Self>,
        key: Key,
        upstream: impl FnOnce() -> BoxFuture<Outcome>,
    ) -> (Role, impl Future<Output = Outcome> + Send + 'static) {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        let (role, id, flight) = match calls.get_mut(&key) {
            Some(entry) => {
                entry.waiters += 1;
                (Role::Follower, entry.id, entry.flight.clone())
            }
            None => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let flight = upstream().shared();
                let entry = Entry {
                    id,
                    flight: flight.clone(),
                    waiters: 1,
                };
                calls.insert(key.clone(), entry);
                (Role::Leader, id, flight)
            }
        };
        drop(calls);
        let guard = Waiter {
            flights: self.clone(),
            key,
            id,
        };
        let wait = async move {
            let outcome = flight.await;
            drop(guard);
            outcome
        };
        (role, wait)
    }

    /// Calls in flight now (for tests and stats).
    pub(super) fn len(&self) -> usize {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One waiter's place in a flight; leaving (done or dropped) may end the flight.
struct Waiter {
    flights: Arc<Flights>,
    key: Key,
    id: u64,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut calls = self
            .flights
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = calls.get_mut(&self.key) else {
            return;
        };
        if entry.id != self.id {
            return;
        }
        entry.waiters -= 1;
        // A finished flight is forgotten at once, so later calls start afresh (or hit the
        // store); an abandoned one is dropped with its last waiter, which cancels it.
        if entry.waiters == 0 || entry.flight.peek().is_some() {
            let removed = calls.remove(&self.key);
            drop(calls);
            drop(removed);
        }
    }
}
