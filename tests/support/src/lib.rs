//! What Ferry's tests share, in one place: `ferry`, `ferry-cli` and the examples use it as a
//! dev-dependency.
//!
//! - [`servers`]: the calculator on a Ferry server (with the [`EchoLayer`] test layer when
//!   asked), on a background thread for synchronous tests, and the tonic peer.
//! - [`backend`]: configurable backends for balancing, retries, hedging and ejection.
//! - [`counting`]: a layer that counts the calls a server's layer stack sees, by method.
//! - [`etcd`]: a throwaway single-member etcd.
//! - [`python`]: the Python that has grpcio, and the scripts it runs.
//! - [`native_wire`]: a tiny writer and reader of native-protocol frames, for tests that must
//!   say on the wire what no well-behaved client would.
//! - Bounded polling: [`eventually`] and [`wait_for`]; nothing here sleeps for a fixed time
//!   and then checks.

pub mod backend;
pub mod counting;
pub mod etcd;
pub mod native_wire;
pub mod python;
pub mod servers;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use backend::{Backend, Behavior, Stats, backends, comma_list, load, who};
pub use counting::CountingLayer;
pub use etcd::Etcd;
pub use servers::{
    EchoLayer, TestServer, ferry_calculator, ferry_calculator_with, start_calculator,
    start_calculator_with, start_echo_calculator, start_tonic, tonic_calculator,
    tonic_calculator_with, tonic_client,
};

/// The calculator example (the service most tests run).
pub use ::calculator;
/// tonic itself, for tests that drive the tonic peer's client.
pub use ::tonic;
/// The one tonic peer: the calculator served by tonic with tonic-reflection.
pub use ::tonic_calculator;

/// How long a test waits for something that should happen promptly before it fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `check` every 20 ms until it holds or `within` passes; returns whether it held.
pub async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` until it holds; fails the test, naming `what`, if it does not within
/// [`PATIENCE`].
#[track_caller]
pub fn wait_for<'a>(
    what: &'a str,
    check: impl AsyncFnMut() -> bool + 'a,
) -> impl Future<Output = ()> + 'a {
    let caller = std::panic::Location::caller();
    async move {
        if !eventually(PATIENCE, check).await {
            panic!("{caller}: timed out after {PATIENCE:?} waiting until {what}");
        }
    }
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the support crate sits at tests/support in the workspace")
}
