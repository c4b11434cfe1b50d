//! Shutdown signalling: one sender, any number of `Shutdown` receivers.
//! Every task `select!`s on `recv()` next to its work; the signal is sent
//! once (SIGTERM, SIGINT, or the demo's timer) and seen by all.

use tokio::sync::watch;

/// Tells every holder of a `Shutdown` to stop.
#[derive(Clone)]
pub struct Trigger(watch::Sender<bool>);

/// A task's view of the shutdown signal.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and receiver.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Resolves once shutdown is signalled (at once if it already was).
    pub async fn recv(&mut self) {
        // An error means the trigger is gone: nothing can stop us any more
        // than it already has, so treat it as shutdown too.
        let _ = self.0.wait_for(|&stop| stop).await;
    }

    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }
}

/// Fires `trigger` on SIGTERM or SIGINT (Ctrl-C).
pub async fn on_signals(trigger: Trigger) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    trigger.fire();
}

/// Bounds everything after the signal by `bound` (`--shutdown-timeout`):
/// once `stop` fires, a thread of its own ends the process at `bound` from
/// then, whatever is still running (a commit or a group leave a broker
/// never answers). Nothing is lost by it: offsets are committed only
/// behind finished work, so the next owner redoes what this one did not
/// finish. The orderly stop keeps inside the bound (`Handover::stop`).
pub fn watchdog(mut stop: Shutdown, bound: std::time::Duration) {
    tokio::spawn(async move {
        stop.recv().await;
        std::thread::spawn(move || {
            std::thread::sleep(bound);
            tracing::error!(
                bound = ?bound,
                "shutdown not finished within --shutdown-timeout: exiting now; unfinished work stays uncommitted for the next owner"
            );
            std::process::exit(0);
        });
    });
}
