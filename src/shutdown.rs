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

/// The files `--restart-on-change` names, and a digest of each as first
/// read: `changed` names the first whose content differs now (or that can
/// no longer be read). Kubernetes updates a mounted Secret by swapping a
/// symlink, so content, not modification time, is compared.
pub struct Watched(Vec<(std::path::PathBuf, Option<u64>)>);

impl Watched {
    pub fn new(paths: &[std::path::PathBuf]) -> Watched {
        Watched(paths.iter().map(|p| (p.clone(), digest(p))).collect())
    }

    pub fn changed(&self) -> Option<&std::path::Path> {
        self.0
            .iter()
            .find(|(p, d)| digest(p) != *d)
            .map(|(p, _)| p.as_path())
    }
}

fn digest(path: &std::path::Path) -> Option<u64> {
    std::fs::read(path)
        .ok()
        .map(|b| xxhash_rust::xxh3::xxh3_64(&b))
}

/// Every `every`, fires `trigger` if a watched file changed: the process
/// stops in order (exit status 0) and its supervisor starts it again with
/// the new content (a container's environment from a Secret, a mounted CA).
pub fn restart_on_change(
    watched: Watched,
    every: std::time::Duration,
    trigger: Trigger,
    mut stop: Shutdown,
) {
    if watched.0.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.recv() => break,
                _ = tick.tick() => {
                    if let Some(path) = watched.changed() {
                        tracing::warn!(
                            path = %path.display(),
                            "a file named by --restart-on-change changed: stopping so that the process starts again with it"
                        );
                        trigger.fire();
                        break;
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_file_is_changed_when_its_content_differs_or_it_is_gone() {
        let dir = std::env::temp_dir().join(format!("nps-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("password"), dir.join("ca.crt"));
        std::fs::write(&a, "one").unwrap();
        std::fs::write(&b, "ca").unwrap();
        let w = Watched::new(&[a.clone(), b.clone()]);
        assert_eq!(w.changed(), None);
        std::fs::write(&a, "one").unwrap();
        assert_eq!(w.changed(), None, "rewritten with the same content");
        std::fs::write(&b, "ca2").unwrap();
        assert_eq!(w.changed(), Some(b.as_path()));
        std::fs::write(&b, "ca").unwrap();
        std::fs::remove_file(&a).unwrap();
        assert_eq!(w.changed(), Some(a.as_path()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
