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
    partitions: &[i32],
    mode: CommitMode,
) {
    let mut tpl = TopicPartitionList::new();
    let mut moved = Vec::new();
    for p in partitions {
        if let Some(&off) = core.done.get(p) {
            let moved_since = core.committed.get(p) != Some(&off);
            if moved_since || matches!(mode, CommitMode::Sync) {
                let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(off));
                moved.push((*p, off));
            }
        }
    }
    if moved.is_empty() {
        return;
    }
    let result = consumer.commit(&tpl, mode);
    if matches!(mode, CommitMode::Sync) {
        // A synchronous commit's result is the broker's answer.
        count_commit(&result);
    }
    match result {
        Ok(()) => {
            tracing::debug!(?moved, "offsets committed");
            core.committed.extend(moved);
        }
        Err(e) => tracing::warn!(error = %e, ?partitions, "offset commit failed; will retry"),
    }
}

/// Counts a commit's outcome as the broker answered it.
pub(super) fn count_commit(result: &KafkaResult<()>) {
    let label = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!(m::COMMITS_TOTAL, "result" => label).increment(1);
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
    let mut tpl = TopicPartitionList::new();
    let mut moved = Vec::new();
    for (p, off) in &core.done {
        if core.committed.get(p) != Some(off) {
            let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*off));
            moved.push((*p, *off));
        }
    }
    if moved.is_empty() {
        return false;
    }
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

/// Records the periodic commit's outcome.
pub(super) fn commit_done(core: &Mutex<Core>, (moved, result): CommitOutcome) {
    count_commit(&result);
    match result {
        Ok(()) => {
            tracing::debug!(?moved, "offsets committed");
            lock(core).committed.extend(moved);
        }
        Err(e) => tracing::warn!(error = %e, "offset commit failed; will retry"),
    }
}
