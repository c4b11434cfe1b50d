//! The shells' shared rules.

use std::sync::Mutex;

/// Set in the child process of `a_poisoned_lock_exits_with_status_70`.
const CHILD: &str = "NPS_POISONED_LOCK_CHILD";

/// A lock poisoned by a panic ends the process with status 70 at the
/// next `lock`: run in a child process (this test binary again, this
/// test alone), whose exit status is the verdict.
#[test]
fn a_poisoned_lock_exits_with_status_70() {
    if std::env::var_os(CHILD).is_some() {
        let core = Mutex::new(0u32);
        let _ = std::thread::scope(|s| {
            s.spawn(|| {
                let _held = core.lock();
                panic!("a panic while the lock is held");
            })
            .join()
        });
        drop(super::lock(&core, "test"));
        unreachable!("lock returned on a poisoned mutex");
    }
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new(exe)
        .args([
            "--exact",
            "consumer::tests::a_poisoned_lock_exits_with_status_70",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(70));
}

/// The driver's pause rules against librdkafka's mock cluster: a group,
/// its members, their rebalances.
mod group {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use rdkafka::TopicPartitionList;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
    use rdkafka::message::Message;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    use crate::config::OffsetReset;
    use crate::consumer::backpressure::Backpressure;
    use crate::consumer::context::{ConsumerCtx, RebalanceHandler, Recipe, subscribe};
    use crate::consumer::holds::{Hold, Holds};
    use crate::kafka::Health;

    pub(super) const TOPIC: &str = "answers";

    /// Counts the rebalances a member goes through.
    #[derive(Default)]
    struct Rebalances {
        assigned: AtomicUsize,
        revoked: AtomicUsize,
        lost: AtomicUsize,
        /// Lost revokes that found the member still counted as joined.
        lost_while_joined: AtomicUsize,
    }

    impl RebalanceHandler for Rebalances {
        fn revoke(&self, consumer: &BaseConsumer<ConsumerCtx>, _: &[i32], lost: bool) {
            self.revoked.fetch_add(1, Ordering::SeqCst);
            if lost {
                self.lost.fetch_add(1, Ordering::SeqCst);
                if consumer.context().health.joined.load(Ordering::SeqCst) {
                    self.lost_while_joined.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        fn assign(&self, _: &BaseConsumer<ConsumerCtx>, _: &[i32], _: &mut TopicPartitionList) {
            self.assigned.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Member {
        consumer: StreamConsumer<ConsumerCtx>,
        rebalances: Arc<Rebalances>,
        holds: Holds,
        /// (partition, offset) of every record handed out.
        got: BTreeSet<(i32, i64)>,
    }

    /// A one-broker mock cluster, owned by the producer returned, whose
    /// groups form at once (its coordinator's initial rebalance delay is
    /// 3 s otherwise), with `TOPIC` of `partitions` partitions and `per`
    /// records in each; and its bootstrap servers.
    pub(super) fn cluster(partitions: i32, per: i64) -> (BaseProducer, String) {
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .create()
            .unwrap();
        // SAFETY: the client's handle is valid while `owner` lives, and the
        // mock cluster it returns lives as long as the client; the setter
        // only writes the cluster's default under its lock.
        unsafe {
            let raw = rdkafka::bindings::rd_kafka_handle_mock_cluster(owner.client().native_ptr());
            assert!(!raw.is_null());
            rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(raw, 0);
        }
        let brokers = {
            let mock = owner.client().mock_cluster().unwrap();
            mock.create_topic(TOPIC, partitions, 1).unwrap();
            mock.bootstrap_servers()
        };
        for p in 0..partitions {
            for i in 0..per {
                let key = format!("{p}-{i}");
                owner
                    .send(BaseRecord::to(TOPIC).partition(p).key(&key).payload("x"))
                    .unwrap();
            }
        }
        owner.flush(Duration::from_secs(10)).unwrap();
        (owner, brokers)
    }

    /// The state store of `TOPIC` on the cluster at `brokers`.
    pub(super) fn store(brokers: &str) -> crate::state::StateStore {
        let state = crate::state::StateConfig {
            brokers,
            properties: &Default::default(),
            state_topic: "state",
            input_topic: TOPIC,
            snapshot_max_bytes: 1 << 20,
        };
        crate::state::StateStore::open(&state, Health::new()).unwrap()
    }

    /// A member of `group`, from the loops' recipe, with short session
    /// and poll intervals.
    fn member(brokers: &str, group: &str) -> Member {
        let rebalances = Arc::new(Rebalances::default());
        let holds = Holds::default();
        let properties = [
            ("session.timeout.ms", "1000"),
            ("heartbeat.interval.ms", "100"),
            ("max.poll.interval.ms", "1500"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let recipe = Recipe {
            brokers,
            properties: &properties,
            group,
            topics: &[TOPIC],
            reset: OffsetReset::Earliest,
            co_partitioned: false,
            reports: false,
            what: "a test member",
            beat: crate::liveness::Heartbeats::default().beat("test", std::time::Instant::now()),
            defaults: &[],
        };
        let consumer =
            subscribe(&recipe, Health::new(), rebalances.clone(), holds.clone()).unwrap();
        Member {
            consumer,
            rebalances,
            holds,
            got: BTreeSet::new(),
        }
    }

    /// Polls every member in turn for `span` (the driver's loop keeps
    /// polling, whatever it holds); returns how many records came.
    async fn pump(members: &mut [&mut Member], span: Duration) -> usize {
        let until = Instant::now() + span;
        let mut n = 0;
        while Instant::now() < until {
            for m in members.iter_mut() {
                let polled =
                    tokio::time::timeout(Duration::from_millis(20), m.consumer.recv()).await;
                if let Ok(Ok(msg)) = polled {
                    m.got.insert((msg.partition(), msg.offset()));
                    n += 1;
                }
            }
        }
        n
    }

    /// Polls until `done` or a minute passes (a failure, naming `what`).
    async fn pump_until(
        what: &str,
        members: &mut [&mut Member],
        done: impl Fn(&[&mut Member]) -> bool,
    ) {
        let until = Instant::now() + Duration::from_secs(60);
        while !done(members) {
            assert!(Instant::now() < until, "not within a minute: {what}");
            pump(members, Duration::from_millis(100)).await;
        }
    }

    fn assigned(m: &Member) -> usize {
        m.consumer.assignment().map_or(0, |a| a.count())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backpressure_keeps_polling_and_the_member_outlives_max_poll_interval() {
        let (_cluster, brokers) = cluster(2, 50);
        let mut held = member(&brokers, "held");
        pump_until("a first record", &mut [&mut held], |m| !m[0].got.is_empty()).await;
        let mut pressure = Backpressure::new("test", held.holds.clone());
        pressure.after_record(&held.consumer, false);
        assert!(pressure.held() && held.holds.has(Hold::Behind));
        let before = held.got.len();
        // Paused three times longer than max.poll.interval.ms (1.5 s),
        // polling on as the driver's loop does.
        pump(&mut [&mut held], Duration::from_millis(4_500)).await;
        assert_eq!(
            held.rebalances.revoked.load(Ordering::SeqCst),
            0,
            "the member left its group"
        );
        assert_eq!(held.rebalances.assigned.load(Ordering::SeqCst), 1);
        assert_eq!(assigned(&held), 2);
        // At most what was fetched before the pause took effect.
        let during = held.got.len() - before;
        pressure.release(&held.consumer, true);
        assert!(!pressure.held());
        pump_until("every record after the release", &mut [&mut held], |m| {
            m[0].got.len() == 100
        })
        .await;
        assert!(during < 100, "fetching went on while paused");

        // The same pause without polling: librdkafka takes the member for
        // dead after max.poll.interval.ms and its partitions are lost.
        // It is not a member (so not ready) from the loss until the group
        // assigns to it again.
        let mut idle = member(&brokers, "idle");
        let joined = |m: &Member| m.consumer.context().health.joined.load(Ordering::SeqCst);
        pump_until("a first record", &mut [&mut idle], |m| !m[0].got.is_empty()).await;
        assert!(joined(&idle));
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        pump_until("the partitions lost", &mut [&mut idle], |m| {
            m[0].rebalances.lost.load(Ordering::SeqCst) >= 1
        })
        .await;
        assert_eq!(
            idle.rebalances.lost_while_joined.load(Ordering::SeqCst),
            0,
            "an evicted member stayed a member"
        );
        pump_until("a member again", &mut [&mut idle], |m| {
            assigned(m[0]) > 0 && joined(m[0])
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partitions_that_come_and_go_while_held_never_stay_paused() {
        let (_cluster, brokers) = cluster(2, 50);
        let mut a = member(&brokers, "g");
        pump_until("both partitions", &mut [&mut a], |m| assigned(m[0]) == 2).await;
        // Cut off: every assigned partition paused, as the outage guard
        // does.
        a.holds.set(Hold::CutOff, true);
        a.consumer.pause(&a.consumer.assignment().unwrap()).unwrap();
        let seen = a.got.len();
        // A second member joins: each gets one partition; `a`'s comes in
        // paused (it holds), the other left it resumed.
        let mut b = member(&brokers, "g");
        pump_until("one partition each", &mut [&mut a, &mut b], |m| {
            assigned(m[0]) == 1 && assigned(m[1]) == 1
        })
        .await;
        pump(&mut [&mut a, &mut b], Duration::from_secs(1)).await;
        assert!(a.got.len() - seen < 100, "a held member fetched");
        let a_partition = a.consumer.assignment().unwrap().elements()[0].partition();
        assert!(
            a.got.iter().filter(|(p, _)| *p == a_partition).count() <= seen,
            "a partition assigned while held fetched"
        );
        // Back in reach: only what is assigned is resumed.
        a.holds.set(Hold::CutOff, false);
        a.consumer
            .resume(&a.consumer.assignment().unwrap())
            .unwrap();
        // The other member leaves: its partition comes back to `a`, which
        // must fetch it (librdkafka kept its pause flag while it was
        // away, unless it left resumed).
        drop(b);
        pump_until("every record of both partitions", &mut [&mut a], |m| {
            m[0].got.len() == 100
        })
        .await;
        let per_partition = |p: i32| a.got.iter().filter(|(q, _)| *q == p).count();
        assert_eq!((per_partition(0), per_partition(1)), (50, 50));
    }
}

/// Hand-overs against librdkafka's mock cluster: a revoke while a
/// delivery is on its way.
mod handover {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaResult;
    use rdkafka::producer::{FutureRecord, Producer};
    use rdkafka::{Offset, TopicPartitionList};

    use super::group::{TOPIC, cluster};
    use crate::consumer::handover::{Handed, Handover};
    use crate::consumer::ledger::Ledger;
    use crate::consumer::produce::{Delivery, producer};
    use crate::kafka::{Health, RenewableProducer};
    use crate::state::StateStore;

    /// Ten records of partition 0 read, the one at offset 5 with a
    /// delivery on its way.
    struct Book {
        ledger: Ledger<Delivery>,
        snapshots: Vec<Option<Vec<i32>>>,
        forgotten: Vec<i32>,
        commits: usize,
    }

    impl Handed for Book {
        fn drain(&mut self, producer: &RenewableProducer, _settle: bool) {
            self.ledger.drain(|d| d.step(producer));
        }
        fn waiting(&self, partitions: Option<&[i32]>) -> bool {
            partitions
                .unwrap_or(&[0])
                .iter()
                .any(|p| !self.ledger.idle(*p))
        }
        fn offsets(&self, partitions: Option<&[i32]>) -> TopicPartitionList {
            let mut tpl = TopicPartitionList::new();
            for (p, o) in self.ledger.committable(partitions, true) {
                tpl.add_partition_offset(TOPIC, p, Offset::Offset(o))
                    .unwrap();
            }
            tpl
        }
        fn committed(&mut self, _offsets: &TopicPartitionList, result: &KafkaResult<()>) {
            result.as_ref().unwrap();
            self.commits += 1;
        }
        fn final_snapshots(&mut self, _: &StateStore, partitions: Option<&[i32]>, _: Instant) {
            self.snapshots.push(partitions.map(<[i32]>::to_vec));
        }
        fn forget(&mut self, partitions: &[i32]) {
            self.forgotten.extend(partitions);
            for p in partitions {
                self.ledger.forget(*p);
            }
        }
    }

    fn book(producer: &RenewableProducer) -> Mutex<Book> {
        let mut ledger = Ledger::default();
        for offset in 0..10 {
            let delivery = (offset == 5).then(|| {
                let record = FutureRecord::<(), [u8]>::to("out").payload(&b"alert"[..]);
                Delivery::InFlight(
                    producer
                        .get()
                        .send_result(record)
                        .map_err(|(e, _)| e)
                        .unwrap(),
                )
            });
            ledger.read(0, offset, delivery);
        }
        Mutex::new(Book {
            ledger,
            snapshots: Vec::new(),
            forgotten: Vec::new(),
            commits: 0,
        })
    }

    fn committed(consumer: &BaseConsumer) -> Offset {
        let mut ask = TopicPartitionList::new();
        ask.add_partition(TOPIC, 0);
        let got = consumer
            .committed_offsets(ask, Duration::from_secs(10))
            .unwrap();
        got.find_partition(TOPIC, 0).unwrap().offset()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revoke_mid_delivery_commits_only_what_is_delivered_within_the_bound() {
        let (owner, brokers) = cluster(1, 10);
        let mock = owner.client().mock_cluster().unwrap();
        mock.create_topic("out", 1, 1).unwrap();
        // Commits outside a group's generation, as a member's own.
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "handover")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let producer =
            producer(&brokers, &Default::default(), Health::new(), false, "test").unwrap();
        let store = super::group::store(&brokers);
        // Every answer from the broker takes 1.5 s.
        mock.broker_round_trip_time(1, Duration::from_millis(1_500))
            .unwrap();

        // A bound shorter than the delivery: the commit stops at the
        // record whose delivery is on its way, and the partition is
        // forgotten with it.
        let short = Handover::new("test", Duration::from_millis(200));
        let core = book(&producer);
        short.revoke(&core, &consumer, &producer, &store, &[0], false);
        assert_eq!(committed(&consumer), Offset::Offset(5));
        let b = core.lock().unwrap();
        assert_eq!((b.commits, b.forgotten.as_slice()), (1, &[0][..]));
        assert_eq!(b.snapshots, [Some(vec![0])]);
        drop(b);

        // A bound longer than the delivery: the revoke waits for it, and
        // commits every record.
        let long = Handover::new("test", Duration::from_secs(20));
        let core = book(&producer);
        long.revoke(&core, &consumer, &producer, &store, &[0], false);
        assert_eq!(committed(&consumer), Offset::Offset(10));

        // Lost, or after the stop: nothing committed or written, the
        // partition forgotten.
        let core = book(&producer);
        long.revoke(&core, &consumer, &producer, &store, &[0], true);
        assert!(!long.stop(&core, &consumer, &producer, &store));
        let after_stop = core.lock().unwrap().commits;
        long.revoke(&core, &consumer, &producer, &store, &[0], false);
        let b = core.lock().unwrap();
        assert_eq!(b.commits, after_stop, "a revoke after the stop committed");
        assert_eq!(b.forgotten, [0, 0]);
        assert_eq!(b.snapshots, [None], "only the stop wrote snapshots");
    }
}

/// An assigned partition's start against librdkafka's mock cluster: the
/// broker's watermarks, a commit past the log confirmed by a fetch, and
/// where fetching starts.
mod assign {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::{Offset, TopicPartitionList};

    use super::group::{TOPIC, cluster};
    use crate::config::OffsetReset;
    use crate::consumer::assign::{Facts, start};
    use crate::consumer::realign::REALIGN_BACK;
    use crate::consumer::restore::{Start, StateFrom};

    #[test]
    fn a_partition_starts_before_its_snapshot_replays_to_its_commit_and_a_commit_past_the_log_resets()
     {
        let (_owner, brokers) = cluster(1, 3_000);
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "assign")
            .create()
            .unwrap();
        let store = super::group::store(&brokers);
        let facts = |snapshot, committed| Facts {
            topic: TOPIC,
            partition: 0,
            snapshot,
            committed,
            reset: OffsetReset::Earliest,
        };
        let fetch_from = |tpl: &TopicPartitionList| tpl.find_partition(TOPIC, 0).unwrap().offset();
        let assigned = || {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(TOPIC, 0);
            tpl
        };

        // A snapshot at 2,500 and a commit at 2,800: fetching starts
        // REALIGN_BACK before the snapshot, the replay runs to the commit.
        let mut tpl = assigned();
        let s = start(
            &consumer,
            &store,
            &facts(Some(2_500), Some(2_800)),
            &mut tpl,
        );
        assert_eq!(s.plan.start, Start::At(2_500));
        assert_eq!(s.plan.from, StateFrom::Snapshot);
        assert_eq!(s.plan.replay_until, Some(2_800));
        assert_eq!((s.first, s.high), (Some(2_500), Some(3_000)));
        assert!(!s.committed_beyond_log);
        let from = 2_500 - REALIGN_BACK;
        assert_eq!(s.realign.map(|r| r.from()), Some(from));
        assert_eq!(fetch_from(&tpl), Offset::Offset(from));

        // A commit past the log's end (a log recreated): from the reset
        // point, nothing replayed.
        let mut tpl = assigned();
        let s = start(&consumer, &store, &facts(None, Some(50_000)), &mut tpl);
        assert!(s.committed_beyond_log);
        assert_eq!((s.plan.start, s.plan.replay_until), (Start::Earliest, None));
        assert_eq!(fetch_from(&tpl), Offset::Beginning);
        // At the end of the log, the commit is the log's.
        let s = start(
            &consumer,
            &store,
            &facts(None, Some(3_000)),
            &mut assigned(),
        );
        assert!(!s.committed_beyond_log);
        assert_eq!(s.plan.replay_until, Some(3_000));

        // Nothing known: the client's start (its committed offset, else
        // the reset point), the tpl left as it was.
        let mut tpl = assigned();
        let s = start(&consumer, &store, &facts(None, None), &mut tpl);
        assert_eq!(
            (s.plan.start, s.plan.from),
            (Start::Client, StateFrom::Empty)
        );
        assert_eq!(s.first, Some(0));
        assert_eq!(fetch_from(&tpl), Offset::Invalid);
    }
}
