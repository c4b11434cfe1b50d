//! Waiting for the brokers to have what a loop needs before it starts (the
//! state topic, an output topic, the case tracker's topics): a blocking
//! check asked again every two seconds until it says yes or refuses for
//! good, never past a shutdown.

use std::time::Duration;

use crate::shutdown::Shutdown;

/// How long between two checks.
const AGAIN: Duration = Duration::from_secs(2);

/// What one check found.
pub(crate) enum Ready<T> {
    /// There: what the loop starts with.
    Yes(T),
    /// Not yet (why, for the log): ask again.
    Waiting(String),
}

/// Runs `check` until it answers `Ready::Yes` (returned) or an error
/// (returned: nothing will change by asking again); `None` when the
/// shutdown comes first. Each check runs on a thread of its own (it makes
/// blocking requests), which a shutdown does not wait for. The first
/// `Waiting` is a warning naming `what`, later ones are debug lines.
pub(crate) async fn wait_until_ready<T, E, F>(
    what: &'static str,
    shutdown: &mut Shutdown,
    check: F,
) -> Result<Option<T>, E>
where
    T: Send + 'static,
    E: Send + 'static,
    F: Fn() -> Result<Ready<T>, E> + Clone + Send + 'static,
{
    let mut warned = false;
    loop {
        let (tx, answer) = tokio::sync::oneshot::channel();
        let asked = check.clone();
        std::thread::spawn(move || tx.send(asked()));
        let found = tokio::select! {
            _ = shutdown.recv() => return Ok(None),
            r = answer => r.unwrap_or_else(|_| Ok(Ready::Waiting("the check ended without an answer".into())))?,
        };
        match found {
            Ready::Yes(t) => return Ok(Some(t)),
            Ready::Waiting(why) if !warned => {
                tracing::warn!(reason = %why, "{what}: waiting for the brokers; asking again every 2 s");
                warned = true;
            }
            Ready::Waiting(why) => tracing::debug!(reason = %why, "{what}: still waiting"),
        }
        tokio::select! {
            _ = shutdown.recv() => return Ok(None),
            _ = tokio::time::sleep(AGAIN) => {}
        }
    }
}

/// Opens the state store of the partitions of `input_topic` (the
/// pipeline's input, the tracker's alerts), asking again until the brokers
/// answer. None when a shutdown came first.
pub(crate) async fn open_store(
    settings: &crate::config::Settings,
    input_topic: &str,
    health: &std::sync::Arc<crate::kafka::Health>,
    shutdown: &mut crate::shutdown::Shutdown,
) -> Option<std::sync::Arc<crate::state::StateStore>> {
    let (settings, health) = (settings.clone(), health.clone());
    let input_topic = input_topic.to_string();
    let opened = wait_until_ready("the state topic", shutdown, move || {
        let config = crate::state::StateConfig {
            brokers: &settings.brokers,
            properties: &settings.kafka,
            state_topic: &settings.state_topic,
            input_topic: &input_topic,
            snapshot_max_bytes: settings.snapshot_max_bytes,
        };
        Ok::<_, ()>(
            match crate::state::StateStore::open(&config, health.clone()) {
                Ok(store) => Ready::Yes(std::sync::Arc::new(store)),
                Err(e) => Ready::Waiting(e.to_string()),
            },
        )
    });
    opened.await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn asks_again_until_the_answer_is_yes() {
        let (_trigger, mut shutdown) = crate::shutdown::channel();
        let asked = Arc::new(AtomicU32::new(0));
        let counter = asked.clone();
        let found = wait_until_ready("test", &mut shutdown, move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, ()>(if n < 3 {
                Ready::Waiting(format!("try {n}"))
            } else {
                Ready::Yes(n)
            })
        })
        .await;
        assert_eq!(found, Ok(Some(3)));
        assert_eq!(asked.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_ends_the_wait_with_its_error() {
        let (_trigger, mut shutdown) = crate::shutdown::channel();
        let found: Result<Option<()>, &str> =
            wait_until_ready("test", &mut shutdown, || Err("refused")).await;
        assert_eq!(found, Err("refused"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_ends_the_wait_with_nothing() {
        let (trigger, mut shutdown) = crate::shutdown::channel();
        let waiting = tokio::spawn(async move {
            wait_until_ready("test", &mut shutdown, || {
                Ok::<Ready<()>, ()>(Ready::Waiting("never".into()))
            })
            .await
        });
        tokio::time::sleep(Duration::from_secs(7)).await;
        trigger.fire();
        assert_eq!(waiting.await.ok(), Some(Ok(None)));
    }
}
