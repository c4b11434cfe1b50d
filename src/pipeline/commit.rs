//! Offset commits: the periodic one (synchronous, off the consuming task,
//! its answer counted) and the synchronous ones on revoke and shutdown.

use super::*;

/// Commits the done offsets of `partitions`: in async mode only those that
/// moved since the last commit (an async commit that failed is caught by the
/// next sync one), in sync mode all of them. Offsets are only ever committed
/// from `done`: behind work whose every effect is acknowledged.
pub(super) fn commit<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    core: &mut Core,
    partitions: Option<&[i32]>,
) {
    let moved = core.ledger.committable(partitions, true);
    if moved.is_empty() {
        return;
    }
    let result = consumer.commit(&offsets(topic, &moved), CommitMode::Sync);
    commit_done(core, (moved, result));
}

/// The offsets to commit, as Kafka wants them.
fn offsets(topic: &str, moved: &[(i32, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (p, off) in moved {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*off));
    }
    tpl
}

/// Offsets of the periodic commit, and the broker's answer.
pub(super) type CommitOutcome = (Vec<(i32, i64)>, KafkaResult<()>);

/// Starts the periodic commit of what is done and not yet committed, on a
/// thread of its own: librdkafka tells an application the outcome of its
/// asynchronous commits only through an `offset_commit_cb`, which
/// rust-rdkafka does not install, so the commit is synchronous (its answer
/// counted and only then recorded as committed) but off the consuming
/// task, which a slow broker must not hold up. The thread is detached: a
/// stop never waits for it (the final commit is made anew). Returns
/// whether one was started.
pub(super) fn start_commit(
    consumer: &Arc<StreamConsumer<ConsumerCtx>>,
    topic: &str,
    core: &Core,
    results: &tokio::sync::mpsc::UnboundedSender<CommitOutcome>,
) -> bool {
    let moved = core.ledger.committable(None, false);
    if moved.is_empty() {
        return false;
    }
    let tpl = offsets(topic, &moved);
    let consumer = consumer.clone();
    let results = results.clone();
    let started = std::thread::Builder::new()
        .name("nps-commit".into())
        .spawn(move || {
            let result = consumer.commit(&tpl, CommitMode::Sync);
            let _ = results.send((moved, result));
        });
    match started {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the commit thread; will retry");
            false
        }
    }
}

/// Records a commit's outcome as the broker answered it.
pub(super) fn commit_done(core: &mut Core, (moved, result): CommitOutcome) {
    events::CommitAnswered {
        moved: &moved,
        error: result.as_ref().err(),
    }
    .emit();
    if result.is_ok() {
        core.ledger.committed(moved);
    }
}
