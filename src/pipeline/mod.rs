//! The NPS pipeline: answers in, engine, alerts, promoter events and dead
//! letters out, offsets committed only behind what is done.
//!
//! Invariant (at-least-once): the offset of a record becomes committable
//! only after the record is in the engine and its alert or dead letter (if
//! any) is acknowledged by the broker, and only in order: a record whose
//! delivery is still pending holds back the offsets of every later record
//! of its partition. The pipeline commits those offsets itself (auto-commit
//! is off): every second, and synchronously on revoke and shutdown. A
//! crash therefore loses nothing; it can only make the next owner redo
//! work after the last commit (the alerts it re-sends carry the same
//! alert_id).
//!
//! The pipeline is an application of the consumer driver
//! (`consumer::driver`): `impl App for Pipeline` below holds the loop's
//! arms. Rebalances arrive inside `recv` on the same task; a revoke hands
//! its partitions over (`consumer::handover`: deliveries waited for,
//! bounded by the shutdown timeout, a commit, final snapshots).
//!
//! Two types have an impl block per concern, in that concern's file:
//! `Pipeline` (the loop's arms here, commits in `commit`) and `Core` (its
//! book-keeping and snapshots in `snapshots`).

use crate::config::Settings;
use crate::consumer::context::ConsumerCtx;
use crate::consumer::ledger::Ledger;
use crate::engine::Engine;
use crate::kafka::{Health, RenewableProducer};
use crate::metrics::{self as m, View};
use crate::schema::Rejection;
use crate::shutdown::Shutdown;
use crate::state::StateStore;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{BorrowedMessage, Message};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

mod commit;
mod outage;
mod publish;
mod rebalance;
pub(crate) mod records;
mod snapshots;
mod startup;
use crate::consumer::driver::{App, Input, drive};
use crate::consumer::holds::Holds;
use crate::consumer::memory::release_free_memory;
use crate::consumer::positions::{Positions, Take};
use crate::consumer::seek;
use crate::consumer::snapshots::Snapshots;

use crate::clock::Clock;
use crate::consumer::outputs::Outputs;
use crate::consumer::produce::{Delivery, Outbox};
use crate::pipeline::commit::CommitOutcome;
use crate::pipeline::commit::EarlyCommit;
use crate::pipeline::outage::OutageGuard;
use crate::pipeline::outage::rewind_beyond_end;
use crate::pipeline::publish::refresh_view;
use crate::pipeline::rebalance::Rebalancer;
use crate::pipeline::records::Handles;
use crate::pipeline::records::caught_up;
use crate::pipeline::records::handle;
use crate::pipeline::records::replay;
use crate::pipeline::startup::prepare;
use crate::pipeline::startup::subscribed_consumer;

/// Deliveries waiting this long without any acknowledged, brokers
/// reachable: the producer is replaced (`RenewableProducer::renew_stalled`).
const STALL: Duration = Duration::from_secs(20);

/// State shared between the loop and the rebalance callback (which runs on
/// the same task, inside `recv`, never while the loop holds the lock).
struct Core {
    /// The input topic.
    topic: String,
    health: Arc<Health>,
    engine: Engine,
    /// The taxonomy comments are matched against (None: themes off).
    themes: Option<crate::themes::Taxonomy>,
    /// Which offsets are committable, behind which deliveries.
    ledger: Ledger<Delivery>,
    /// Per partition, the offset after the last record in the engine (what
    /// a snapshot taken now reflects), and the realign of one started
    /// before its snapshot's offset.
    positions: Positions<i32>,
    /// Partitions replaying input to rebuild their state.
    restoring: BTreeMap<i32, Restore>,
    /// Snapshot rounds, snapshots staged until every alert and dead
    /// letter of the records they reflect is acknowledged (restoring one
    /// never skips an undelivered alert), their writes.
    snapshots: Snapshots<()>,
    /// Largest snapshot written (`--snapshot-max-bytes`).
    snapshot_max_bytes: usize,
    /// Input partitions this instance owns, and the topic's count (read at
    /// each assignment; 0 when unknown): the share an alert's window
    /// figures cover.
    owned: BTreeSet<i32>,
    input_partitions: u32,
}

/// A partition being rebuilt: records before `until` (the committed
/// offset) were fully processed by a previous owner, so they go into the
/// windows again without alerts or dead letters.
struct Restore {
    until: i64,
    started: Instant,
    replayed: u64,
    from: &'static str,
}

/// The pipeline's shared state, locked (`crate::consumer::lock`: a
/// poisoned lock ends the process with status 70).
fn lock<T>(core: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    crate::consumer::lock(core, "pipeline")
}

/// The engine the settings describe (counting their themes and
/// breakdowns) and the taxonomy; the view learns the breakdowns and
/// benchmarks it shows.
fn engine_for(
    settings: &Settings,
    view: &RwLock<View>,
) -> crate::error::Result<(Engine, Option<crate::themes::Taxonomy>)> {
    // Validated with the settings: cannot fail here.
    let mut engine =
        Engine::new(&settings.engine).map_err(|e| crate::config::ConfigError::Invalid {
            flag: "--windows / [engine]".into(),
            reason: e.to_string(),
        })?;
    let themes = settings.themes.taxonomy();
    if let Some(t) = &themes {
        engine.set_themes(t.names());
    }
    let breakdowns: Vec<_> = settings.breakdowns.iter().map(|b| b.spec()).collect();
    engine.set_breakdowns(&breakdowns);
    if let Ok(mut v) = view.write() {
        v.breakdowns = (settings.breakdowns.iter())
            .map(m::BreakdownView::of)
            .collect();
        v.benchmarks.clone_from(&settings.benchmarks);
    }
    Ok((engine, themes))
}

/// Runs the pipeline until `shutdown` fires; then stops consuming, flushes
/// alerts and dead letters, commits, and returns.
pub async fn run(
    settings: Settings,
    clock: Arc<dyn Clock>,
    mut shutdown: Shutdown,
    view: Arc<RwLock<View>>,
    health: Arc<Health>,
    keep_table: bool,
) -> crate::error::Result<()> {
    let (engine, themes) = engine_for(&settings, &view)?;
    let window_names: Vec<String> = engine
        .layout()
        .specs()
        .iter()
        .map(|s| s.name.clone())
        .collect();

    let Some((producer, store, _output_topics)) =
        prepare(&settings, &health, &mut shutdown).await?
    else {
        return Ok(());
    };
    if let Ok(mut v) = view.write() {
        v.series.set_tiers(&settings.promoters.tier_names());
    }

    let core = Arc::new(Mutex::new(Core::new(
        (engine, themes),
        settings.snapshot_max_bytes,
        &settings.input_topic,
        &health,
    )));
    if let Ok(mut v) = view.write() {
        v.trends = Some(publish::trend_source(&core));
    }
    let handler = Arc::new(Rebalancer::new(
        &settings, &core, &producer, &store, &health,
    ));
    // Owned by the loop, beside the pipeline: a record borrows it while the
    // pipeline handles the record.
    let holds = Holds::default();
    let consumer = Arc::new(subscribed_consumer(&settings, &health, &handler, &holds)?);
    let (commits, commit_outcomes) = tokio::sync::mpsc::unbounded_channel();
    announce(&settings, &window_names);
    let outputs = Outputs::new(&settings);
    let pipeline = Pipeline {
        settings,
        clock,
        view,
        health,
        keep_table,
        window_names,
        core,
        producer,
        store,
        handler,
        commits,
        committing: false,
        early: EarlyCommit::new(Instant::now()),
        stats: Counters::default(),
        outputs,
        guard: OutageGuard::new(holds.clone()),
        holds,
        progress: Instant::now(),
        in_flight: 0,
    };

    let snapshot_interval = pipeline.settings.snapshot_interval;
    drive(
        pipeline,
        consumer,
        commit_outcomes,
        shutdown,
        snapshot_interval,
    )
    .await;
    Ok(())
}

/// Says in the log what the pipeline consumes and where it writes.
fn announce(settings: &Settings, window_names: &[String]) {
    tracing::info!(
        topic = %settings.input_topic,
        group = %settings.group_id,
        alerts = %settings.alerts_topic,
        dlq = %settings.dlq_topic,
        state = %settings.state_topic,
        windows = ?window_names,
        "consuming"
    );
}

/// The async shell's state, owned by the one task that runs the loop: each
/// arm of the loop is one method.
struct Pipeline {
    settings: Settings,
    clock: Arc<dyn Clock>,
    /// What /metrics and the demo read, refreshed every second.
    view: Arc<RwLock<View>>,
    health: Arc<Health>,
    /// Whether the view keeps a table of every segment (the demo's).
    keep_table: bool,
    window_names: Vec<String>,
    /// Engine, ledger, snapshots and restores; shared with the rebalance
    /// callback, which runs on this task inside `recv`.
    core: Arc<Mutex<Core>>,
    producer: Arc<RenewableProducer>,
    store: Arc<StateStore>,
    /// Kept to subscribe a fresh consumer with.
    handler: Arc<Rebalancer>,
    /// Where the periodic commit's thread sends the broker's answer.
    commits: tokio::sync::mpsc::UnboundedSender<CommitOutcome>,
    /// A periodic commit is on its way: no second one before its answer.
    committing: bool,
    /// When to commit before the one-second tick.
    early: EarlyCommit,
    stats: Counters,
    /// Where alerts, promoter events and dead letters go.
    outputs: Outputs,
    guard: OutageGuard,
    /// Why fetching is held paused (the guard's and the driver's
    /// backpressure), shared with the consumer's rebalance callback.
    holds: Holds,
    /// When a delivery was last acknowledged (or none was waiting), and
    /// how many waited then.
    progress: Instant,
    in_flight: usize,
}

impl Pipeline {
    /// Replaces the producer when deliveries have waited without any
    /// progress for `STALL` while the brokers are reachable.
    fn unstall(&mut self) {
        let stalled = self.progress.elapsed();
        if self.in_flight > 0
            && stalled >= STALL
            && !self.guard.paused()
            && self.health.consumer_brokers_up() > 0
        {
            self.producer.renew_stalled(stalled);
            self.progress = Instant::now();
        }
    }

    /// False for a record the partition's snapshot already holds (and
    /// for the first record after a start still inside the snapshot's
    /// batch, which sends fetching further back): see `Positions`.
    fn realigned(
        &mut self,
        msg: &BorrowedMessage<'_>,
        consumer: &StreamConsumer<ConsumerCtx>,
    ) -> bool {
        let (p, at) = (msg.partition(), msg.offset());
        let (take, back) = {
            let mut c = lock(&self.core);
            let take = c.positions.record(p, at);
            (take, c.positions.seeks_waiting())
        };
        match take {
            Take::Yes => true,
            Take::Gap { want } => {
                seek::gap(msg.topic(), p, want, at);
                true
            }
            Take::Skip => {
                if back {
                    self.further_back(consumer);
                }
                false
            }
        }
    }

    /// Starts realigning partitions further before their snapshots, as
    /// their positions ask (`Positions::seeks`).
    fn further_back(&self, consumer: &StreamConsumer<ConsumerCtx>) {
        let seeks = lock(&self.core).positions.seeks(Instant::now());
        let topic = self.settings.input_topic.as_str();
        for p in seek::further_back(consumer, seeks, |p| (topic, p)) {
            lock(&self.core).positions.realign(p, None);
        }
    }

    fn publish(&mut self) {
        refresh_view(
            &self.core,
            &*self.clock,
            &self.view,
            &self.window_names,
            &mut self.stats,
            self.keep_table,
            &self.health,
        );
    }
}

/// The NPS pipeline on the consumer driver: each method is one arm of the
/// loop.
impl App for Pipeline {
    const NAME: &'static str = "pipeline";
    const BATCH: usize = 64;
    type Event = CommitOutcome;

    /// One record: replayed while its partition restores, else handled.
    async fn record(&mut self, msg: &BorrowedMessage<'_>, consumer: &Input, stop: &Shutdown) {
        if !self.realigned(msg, consumer) {
            return;
        }
        let s = &self.settings;
        if !replay(msg, s, &*self.clock, &self.core) {
            let out = Outbox {
                producer: &self.producer,
                stop,
                outputs: &self.outputs,
            };
            handle(
                msg,
                s,
                &*self.clock,
                &self.core,
                &out,
                &self.view,
                &mut self.stats,
            )
            .await;
        }
    }

    fn room(&self) -> bool {
        pending_room(&self.core, self.settings.max_pending)
    }

    fn after_records(&mut self) {
        self.early.records(Instant::now());
    }

    /// Frees offsets behind acknowledged deliveries; writes snapshots whose
    /// alerts are all delivered.
    fn acknowledge(&mut self, consumer: &Input, _held: bool) {
        let (in_flight, moved) = acknowledge(&self.core, &self.producer, &self.store);
        // Progress: nothing waiting, an offset freed, or fewer waiting.
        if in_flight == 0 || moved || in_flight < self.in_flight {
            self.progress = Instant::now();
        }
        if moved {
            self.early.freed();
        }
        self.in_flight = in_flight;
        self.commit_early(consumer);
    }

    fn cut_off(&self) -> bool {
        self.guard.paused()
    }

    fn refetch(&mut self, consumer: &Input) {
        let owned: Vec<i32> = lock(&self.core).owned.iter().copied().collect();
        outage::refetch_partitions(consumer, &self.core, &self.settings.input_topic, owned);
    }

    /// Every partition becomes due for its periodic snapshot.
    fn snapshots_due(&mut self) {
        let mut c = lock(&self.core);
        let partitions: Vec<i32> = c.positions.keys().collect();
        c.snapshots.start_round(partitions);
    }

    /// The one-second tick: outage handling (which may replace the
    /// `consumer`), resets, restores caught up, the periodic commit, the
    /// view.
    async fn tick(&mut self, consumer: &mut Input, _stop: &Shutdown) {
        self.further_back(consumer);
        let s = &self.settings;
        if self
            .guard
            .check(consumer, &self.core, &self.store, &self.health, s)
        {
            // Closing it leaves the group, which makes the coordinator
            // start a new generation for the new member.
            match subscribed_consumer(s, &self.health, &self.handler, &self.holds) {
                Ok(fresh) => *consumer = Arc::new(fresh),
                Err(e) => tracing::warn!(error = %e, "recreating the consumer failed; retrying"),
            }
        }
        self.unstall();
        let s = &self.settings;
        rewind_beyond_end(&self.core, consumer, &self.store, &self.health, s);
        caught_up(&self.core, consumer);
        self.start_commit(consumer);
        self.publish();
    }

    async fn event(&mut self, outcome: CommitOutcome, _stop: &Shutdown) {
        self.commit_answered(outcome);
    }

    /// After the loop: waits (bounded) for pending deliveries, commits what
    /// is done, writes the final snapshots.
    async fn stop(mut self, consumer: &Input) {
        tracing::info!("shutting down: flushing alerts and dead letters");
        let (core, store) = (&*self.core, &*self.store);
        let handover = &self.handler.handover;
        if handover.stop(core, consumer.as_ref(), &self.producer, store) {
            tracing::warn!(
                pending = lock(core).ledger.in_flight(),
                "shutdown timeout: unacknowledged deliveries stay uncommitted"
            );
        }
        self.publish();
        tracing::info!(
            consumed = self.stats.consumed,
            alerts = self.stats.alerts,
            rejected = self.stats.rejected,
            "stopped"
        );
    }
}

/// What the consuming task keeps from record to record: its counts, and
/// the decode buffer each record is decoded into (no allocation per record
/// on the common path).
#[derive(Default)]
struct Counters {
    decoder: crate::schema::Decoder,
    handles: Handles,
    consumed: u64,
    alerts: u64,
    promoters: u64,
    rejected: u64,
    rejected_by_reason: BTreeMap<&'static str, u64>,
}

impl Counters {
    fn reject(&mut self, rejection: &Rejection) {
        self.rejected += 1;
        *self
            .rejected_by_reason
            .entry(rejection.reason().as_str())
            .or_default() += 1;
    }
}

fn pending_room(core: &Mutex<Core>, max_pending: usize) -> bool {
    lock(core).ledger.in_flight() < max_pending
}

/// Returns the deliveries still waiting, and whether an offset was freed.
fn acknowledge(
    core: &Mutex<Core>,
    producer: &RenewableProducer,
    store: &StateStore,
) -> (usize, bool) {
    let (round_over, in_flight, moved) = {
        let mut c = lock(core);
        let moved = !c.drain(producer).is_empty();
        c.stage_due();
        c.write_snapshots(store);
        metrics::gauge!(m::PENDING_DELIVERIES).set(c.ledger.in_flight() as f64);
        (c.snapshots.round_over(), c.ledger.in_flight(), moved)
    };
    if round_over {
        // The records of the round are in the broker and freed.
        release_free_memory();
    }
    (in_flight, moved)
}
