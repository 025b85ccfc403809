//! What ends connections: graceful drain, forced stop, and the process signals that start them.

use tokio_util::sync::CancellationToken;

/// Signals that end a connection: `drain` finishes in-flight calls, `force` aborts them.
#[derive(Clone)]
pub(crate) struct Shutdown {
    pub drain: CancellationToken,
    pub force: CancellationToken,
}

/// Completes on Ctrl-C or SIGTERM.
pub(crate) async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
