#!/usr/bin/env python3
"""Soak with faults (run by benches/soak.sh; not part of CI).

On one Tansu broker, instances of nps-stream in one consumer group take a
steady stream of answers while this script injects faults on a schedule
(fractions of --duration):

   0.13  kill -9 instance B; 25 s later start it again (a supervisor would)
   0.27  the broker frozen (SIGSTOP) for 30 s, then resumed (SIGCONT): every
         connection hangs, as in a long GC pause or a network partition
   0.40  add instance C
   0.53  kill -9 instance A; 25 s later start it again
   0.67  remove instance C (SIGTERM)
   0.67 + 120 s .. end: quiet; resources must stay flat

(25 s: longer than the 15 s session timeout Tansu needs, see
docs/operations.md, so the dead member has left the group when the new one
joins.) The broker is frozen rather than killed: Tansu 0.6 keeps data on
disk only with SQLite, S3 or Postgres storage; with SQLite it could not
keep up with this load (group requests timed out after 60 s), S3 through a
local emulator gave wrong high watermarks, and a broker restarted without
its data is a different scenario, tested by tests/real_broker.rs.

The producer (confluent-kafka, an independent client) sends --rate answers
per second, keyed by customer: 5 products x 4 regions, every channel, about
a quarter detractors, one in ten with an event time days in the past (3,
10, 20 or 45 days: far from every window edge), and one planted bad record
in a thousand (undecodable bytes, or a score of 11).

A CRM (`Crm`) reads the alerts as they come and works every case:
CONTACTED 5-50 s after the alert (one in seven 70-200 s: late for some
priorities, with contact SLAs of 1, 2 and 3 minutes), then RESOLVED. The
instances keep closed cases and ids for 5 minutes (--closed-retention,
--dedup-horizon), so their state reaches its bounds within the run. A
supervisor (`Supervisor`) starts again an instance that exits on its own,
and such an exit fails the soak.

At the end it stops producing, waits until the group has read everything,
and checks:
  - windows: for every product x region x window x category, the sum over
    instances in Prometheus equals a count made here from the input topic
    read back (distinct response ids);
  - alerts: every detractor has an alert; several alerts for one answer
    only with the same alert_id; none for other answers;
  - dead letters: only the planted bad records, each at least once;
  - cases: every alert's case worked and closed, none open or waiting at
    the end, every late contact escalated (level 1, one escalation_id);
  - unplanned exits: none;
  - resources: in the quiet phase, each instance's RSS within +-10% of its
    median, open file descriptors and threads within a small band.
Prints a report (and writes it as JSON to --report); exits 1 if a check
failed.
"""
import argparse
import base64
import heapq
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "py"))
from crm import iso, rfc3339_ms  # noqa: E402  (the tests' CRM: RFC 3339 both ways)

PRODUCTS = ["Cuenta Corriente", "Tarjeta Oro", "Préstamo Personal", "Seguro Auto", "App Móvil"]
REGIONS = ["Norte", "Sur", "Centro", "Occidente"]
WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
HISTORY_DAYS = [3, 10, 20, 45]
INPUT, ALERTS, DLQ = "survey-responses", "nps-detractor-alerts", "survey-responses-dlq"
CASE_EVENTS, ESCALATIONS = "nps-case-events", "nps-case-escalations"
# Contact SLAs short enough that late contacts escalate within the run.
SLA_MS = {"ALERT_PRIORITY_CRITICAL": 60_000, "ALERT_PRIORITY_HIGH": 120_000,
          "ALERT_PRIORITY_NORMAL": 180_000}
CONTACT_SLA = ",".join(f"{p.rsplit('_', 1)[1].lower()}={ms // 1000}s" for p, ms in SLA_MS.items())
CLOSED_RETENTION = "5m"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- protobuf by hand (independent of nps-stream's generated code) -------

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, wire, payload):
    key = varint((num << 3) | wire)
    if wire == 0:
        return key + varint(payload)
    if wire == 1:
        return key + payload
    return key + varint(len(payload)) + payload


def encode_answer(a):
    ts = field(1, 0, a["at"] // 1000) + (field(2, 0, (a["at"] % 1000) * 1_000_000) if a["at"] % 1000 else b"")
    out = field(1, 2, a["id"].encode()) + field(2, 2, a["customer"].encode())
    out += field(3, 2, a["product"].encode()) + field(4, 2, a["region"].encode())
    out += field(5, 0, a["channel"]) + field(6, 0, a["score"]) + field(7, 2, ts)
    if a.get("comment"):
        out += field(8, 2, a["comment"].encode())
    if a.get("value") is not None:
        out += field(9, 1, struct.pack("<d", a["value"]))
    return out


def read_varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def decode_answer(buf):
    """The fields the check needs, or None when the bytes are not one."""
    out, i = {}, 0
    try:
        while i < len(buf):
            key, i = read_varint(buf, i)
            num, wire = key >> 3, key & 7
            if wire == 0:
                v, i = read_varint(buf, i)
            elif wire == 1:
                v, i = buf[i:i + 8], i + 8
            elif wire == 2:
                n, i = read_varint(buf, i)
                v, i = buf[i:i + n], i + n
            elif wire == 5:
                v, i = buf[i:i + 4], i + 4
            else:
                return None
            if num in (1, 3, 4):
                out[{1: "id", 3: "product", 4: "region"}[num]] = v.decode()
            elif num == 6:
                out["score"] = v
            elif num == 7:
                sec = nanos = 0
                j = 0
                while j < len(v):
                    k, j = read_varint(v, j)
                    x, j = read_varint(v, j)
                    if k >> 3 == 1:
                        sec = x
                    elif k >> 3 == 2:
                        nanos = x
                out["at"] = sec * 1000 + nanos // 1_000_000
    except (IndexError, UnicodeDecodeError):
        return None
    return out if {"id", "product", "region", "score", "at"} <= out.keys() else None


# --- processes -----------------------------------------------------------

class Proc:
    """A child process. `wanted` says whether it should be running: the
    supervisor (`Supervisor`) starts a wanted one again when it exits on
    its own, as Kubernetes or systemd would."""

    def __init__(self, name, argv, work, env=None, cwd=None):
        self.name, self.argv, self.work, self.env, self.cwd = name, argv, work, env, cwd
        self.p = None
        self.starts = 0
        self.wanted = False
        self.lock = threading.RLock()

    def log_path(self):
        return os.path.join(self.work, f"{self.name}.{self.starts}.log")

    def start(self):
        with self.lock:
            self.starts += 1
            out = open(self.log_path(), "w")
            self.p = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                      env=self.env, cwd=self.cwd)
            self.wanted = True
        log(f"{self.name} started (pid {self.p.pid})")

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def freeze(self, seconds):
        self.p.send_signal(signal.SIGSTOP)
        log(f"{self.name} frozen (SIGSTOP)")
        time.sleep(seconds)
        self.p.send_signal(signal.SIGCONT)
        log(f"{self.name} resumed (SIGCONT)")

    def kill9(self):
        with self.lock:
            self.wanted = False
            self.p.send_signal(signal.SIGKILL)
            self.p.wait()
        log(f"{self.name} killed (-9)")

    def stop(self, timeout=60):
        with self.lock:
            self.wanted = False
            if not self.alive():
                return None
            self.p.send_signal(signal.SIGTERM)
            try:
                return self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                return "killed after timeout"


class Supervisor(threading.Thread):
    """Starts again, 25 s later (past Tansu's session timeout), an instance
    that exited without being told to, and records the exit with the last
    line it wrote: the soak reports every such exit as a failure."""

    def __init__(self, procs):
        super().__init__(daemon=True)
        self.procs, self.exits = procs, []
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(2):
            for proc in self.procs:
                with proc.lock:
                    code = proc.p.poll() if proc.wanted and proc.p is not None else None
                    if code is None:
                        continue
                    proc.wanted = False
                    try:
                        with open(proc.log_path(), errors="replace") as f:
                            last = (f.read().strip().splitlines() or [""])[-1][:300]
                    except OSError:
                        last = ""
                self.exits.append({"instance": proc.name, "at": time.strftime("%H:%M:%S"),
                                   "code": code, "last_line": last})
                log(f"{proc.name} exited on its own ({code}): {last}; starting it again in 25 s")
                threading.Timer(25, lambda p=proc: None if self.done.is_set() else p.start()).start()


def http_get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return None, ""


def metric_sum(port, name):
    status, text = http_get(f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- the run -------------------------------------------------------------

class Producing(threading.Thread):
    def __init__(self, brokers, rate, seed):
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "log_level": 2,
                                  "enable.idempotence": True, "message.timeout.ms": 600000})
        self.rate, self.rng = rate, random.Random(seed)
        self.stop_at = None
        self.sent = self.failed = self.bad = 0
        self.errors = []

    def on_delivery(self, err, _msg):
        if err is not None:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(str(err))

    def answer(self, seq, now_ms):
        r = self.rng
        p = r.randrange(len(PRODUCTS))
        score = r.choices(range(11), weights=[3, 2, 2, 3, 4, 5, 6, 10, 15, 22, 28])[0]
        at = now_ms - r.randrange(5000)
        if r.random() < 0.1:
            at = now_ms - r.choice(HISTORY_DAYS) * 86_400_000 + r.randrange(-3_600_000, 3_600_000)
        return {
            "id": f"soak-{seq}", "customer": f"cust-{r.randrange(200_000)}",
            "product": PRODUCTS[p], "region": REGIONS[r.randrange(len(REGIONS))],
            "channel": 1 + r.randrange(6), "score": score, "at": at,
            "comment": "muy lento" if score <= 6 and r.random() < 0.3 else "",
            "value": round(r.uniform(10, 5000), 2) if r.random() < 0.5 else None,
        }

    def run(self):
        seq, start = 0, time.monotonic()
        while self.stop_at is None or time.monotonic() < self.stop_at:
            due = int((time.monotonic() - start) * self.rate)
            if seq >= due:
                time.sleep(0.005)
                self.producer.poll(0)
                continue
            now_ms = int(time.time() * 1000)
            if seq % 1000 == 999:
                self.bad += 1
                if self.bad % 2:
                    key, value = f"bad-{seq}", b"\xff\xfe planted-bad-" + str(seq).encode()
                else:
                    a = self.answer(seq, now_ms)
                    a["id"], a["score"] = f"bad-{seq}", 11
                    key, value = f"bad-{seq}", encode_answer(a)
            else:
                a = self.answer(seq, now_ms)
                key, value = a["customer"], encode_answer(a)
            while True:
                try:
                    self.producer.produce(INPUT, key=key, value=value, on_delivery=self.on_delivery)
                    break
                except BufferError:
                    self.producer.poll(0.1)
            self.producer.poll(0)
            seq += 1
        self.sent = seq
        left = self.producer.flush(600)
        log(f"producer done: {seq} records ({self.bad} planted bad), {self.failed} failed deliveries, {left} unflushed")


class Crm(threading.Thread):
    """A CRM that works every case: it reads the alerts (JSON) as they come
    and, for each new alert_id, sends CONTACTED then RESOLVED (keyed by
    customer, as JSON CaseEvents) once the wall clock reaches the planned
    time. Most contacts come within the tightest SLA; one in seven comes
    70-200 s after the alert, late for some priorities, so escalations
    happen too. Every case is closed, so what the tracker holds is bounded
    by --closed-retention."""

    def __init__(self, brokers, seed):
        super().__init__(daemon=True)
        self.brokers, self.rng = brokers, random.Random(seed)
        self.plans = {}  # alert_id -> (priority, emitted_ms, contact_ms)
        self.agenda, self.seq = [], 0
        self.stop_when_done = threading.Event()
        self.sent = self.failed = 0

    def on_delivery(self, err, _msg):
        if err is not None:
            self.failed += 1

    def run(self):
        consumer = Consumer({"bootstrap.servers": self.brokers, "group.id": "soak-crm",
                             "enable.auto.commit": False, "log_level": 2})
        parts = consumer.list_topics(ALERTS, timeout=30).topics[ALERTS].partitions
        consumer.assign([TopicPartition(ALERTS, p, OFFSET_BEGINNING) for p in parts])
        producer = Producer({"bootstrap.servers": self.brokers, "linger.ms": 20, "log_level": 2,
                             "message.timeout.ms": 600000})
        idle_since = None
        while True:
            batch = consumer.consume(1000, 0.2)
            for m in batch:
                if m.error() or not m.value():
                    continue
                a = json.loads(m.value())
                if a.get("withdrawn") or a["alertId"] in self.plans:
                    continue
                emitted = rfc3339_ms(a["emittedAt"])
                r = self.rng
                delay = r.uniform(5, 50) if r.random() < 6 / 7 else r.uniform(70, 200)
                contact = emitted + int(delay * 1000)
                self.plans[a["alertId"]] = (a.get("priority", "ALERT_PRIORITY_NORMAL"), emitted, contact)
                customer = a.get("customerId", "")
                for at, state, outcome in [(contact, "CASE_STATE_CONTACTED", None),
                                           (contact + 5000, "CASE_STATE_RESOLVED",
                                            r.choice(["CASE_OUTCOME_RECOVERED", "CASE_OUTCOME_NOT_RECOVERED"]))]:
                    event = {"alertId": a["alertId"], "customerId": customer, "state": state,
                             "occurredAt": iso(at), "owner": "soak-crm"}
                    if outcome:
                        event["outcome"] = outcome
                    self.seq += 1
                    heapq.heappush(self.agenda, (at, self.seq, customer, json.dumps(event).encode()))
            now = int(time.time() * 1000)
            while self.agenda and self.agenda[0][0] <= now:
                _, _, key, value = heapq.heappop(self.agenda)
                while True:
                    try:
                        producer.produce(CASE_EVENTS, key=key, value=value, on_delivery=self.on_delivery)
                        break
                    except BufferError:
                        producer.poll(0.1)
                self.sent += 1
            producer.poll(0)
            if batch or self.agenda:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            if self.stop_when_done.is_set() and idle_since is not None and time.monotonic() - idle_since > 20:
                break
        producer.flush(600)
        consumer.close()
        log(f"crm done: {len(self.plans)} cases worked, {self.sent} events sent, {self.failed} failed")


def read_topic(brokers, topic, idle=10.0, limit_s=900):
    """Every record of `topic`, from the beginning of each partition
    (assigned, no group), until `idle` s pass with none after the first."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": "soak-reader",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    meta = c.list_topics(topic, timeout=30)
    parts = sorted(meta.topics[topic].partitions)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out, start = [], time.monotonic()
    last = None
    while time.monotonic() - start < limit_s:
        if last is not None and time.monotonic() - last > idle:
            break
        if last is None and time.monotonic() - start > 60:
            break
        batch = c.consume(10000, 1.0)
        for m in batch:
            if m.error():
                continue
            out.append((m.partition(), m.offset(), m.key(), m.value(), dict(m.headers() or [])))
        if batch:
            last = time.monotonic()
    c.close()
    log(f"read {len(out)} records of {topic} ({len(parts)} partitions)")
    return out


def state_record_sizes(brokers, topic):
    """The size of the latest state record of each key (an input or
    alerts partition) in `topic`, in MiB: what a snapshot round encodes,
    and what the producer holds a copy of until it is delivered."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": "soak-state-sizes",
                  "enable.auto.commit": False})
    sizes = {}
    try:
        meta = c.list_topics(topic, timeout=30)
        for p in sorted(meta.topics[topic].partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            start = max(lo, hi - 8)
            c.assign([TopicPartition(topic, p, start)])
            seen, deadline = 0, time.monotonic() + 30
            while seen < hi - start and time.monotonic() < deadline:
                m = c.poll(1.0)
                if m is None or m.error():
                    continue
                seen += 1
                key = (m.key() or b"").decode("utf-8", "replace")
                sizes[key] = round(len(m.value() or b"") / 2**20, 2)
    except Exception as e:  # a report line, not a check
        log(f"state record sizes not read: {e}")
    finally:
        c.close()
    return sizes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--tansu", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--duration", type=int, default=1800)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--report", required=True)
    ap.add_argument("--rules", default="deploy/prometheus/nps-rules.yml")
    args = ap.parse_args()
    work, D = args.work, args.duration
    os.makedirs(work, exist_ok=True)

    kport = free_port()
    brokers = f"127.0.0.1:{kport}"
    tansu = Proc("tansu", [args.tansu, "broker", "--listener-url", f"tcp://{brokers}",
                           "--advertised-listener-url", f"tcp://{brokers}",
                           "--storage-engine", "memory://tansu/"], work, cwd=work)
    tansu.start()
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", kport), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    for topic, parts in [(INPUT, args.partitions), (ALERTS, 3), (DLQ, 1), (CASE_EVENTS, 3),
                         (ESCALATIONS, 3)]:
        subprocess.run([args.tansu, "topic", "create", "--broker", f"tcp://{brokers}",
                        "--partitions", str(parts), "--config", "retention.ms=604800000", topic],
                       check=True, stdout=subprocess.DEVNULL)

    ports = {n: free_port() for n in "ABC"}
    instances = {}
    for n, port in ports.items():
        instances[n] = Proc(n, [args.bin, "run", "--brokers", brokers, "--group-id", "soak",
                                "--metrics-addr", f"127.0.0.1:{port}", "--alerts-format", "json",
                                "--dedup-horizon", "5m", "--log-format", "json",
                                "--contact-sla", CONTACT_SLA, "--closed-retention", CLOSED_RETENTION,
                                "-X", "session.timeout.ms=15000"], work,
                            env={**os.environ, "RUST_LOG": "info"})
    pport = free_port()
    with open(os.path.join(work, "prometheus.yml"), "w") as f:
        f.write("global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n")
        f.write(f"rule_files: [{os.path.abspath(args.rules)}]\n")
        f.write("scrape_configs:\n  - job_name: nps-stream\n    static_configs:\n      - targets: [")
        f.write(", ".join(f"'127.0.0.1:{p}'" for p in ports.values()) + "]\n")
    prom = Proc("prometheus", ["prometheus", f"--config.file={work}/prometheus.yml",
                               f"--storage.tsdb.path={work}/tsdb",
                               f"--web.listen-address=127.0.0.1:{pport}"], work)
    prom.start()

    def ready(n, timeout=120):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if http_get(f"http://127.0.0.1:{ports[n]}/readyz")[0] == 200:
                return True
            time.sleep(0.5)
        log(f"{n} not ready after {timeout}s")
        return False

    instances["A"].start()
    instances["B"].start()
    ready("A")
    ready("B")
    supervisor = Supervisor(list(instances.values()))
    supervisor.start()

    samples = []  # (t, name, pid, rss_kb, threads, fds)
    t0 = time.monotonic()
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            t = time.monotonic() - t0
            for n, inst in instances.items():
                if not inst.alive():
                    continue
                pid = inst.p.pid
                try:
                    with open(f"/proc/{pid}/status") as f:
                        st = dict(line.split(":", 1) for line in f if ":" in line)
                    rss = int(st["VmRSS"].split()[0])
                    threads = int(st["Threads"])
                    fds = len(os.listdir(f"/proc/{pid}/fd"))
                    samples.append((t, n, pid, rss, threads, fds))
                except (OSError, KeyError, ValueError):
                    pass
            sampling.wait(10)

    threading.Thread(target=sample, daemon=True).start()
    producer = Producing(brokers, args.rate, seed=20261201)
    producer.start()
    crm = Crm(brokers, seed=20261202)
    crm.start()
    log(f"soak: {D}s at {args.rate}/s on {brokers}, instances on {ports}, prometheus :{pport}")

    events = []

    def at(frac, what, fn):
        delay = t0 + frac * D - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        events.append((round(time.monotonic() - t0), what))
        log(what)
        fn()

    def bounce(proc, pause):
        proc.kill9()
        time.sleep(pause)
        proc.start()

    at(0.13, "kill -9 B, start again after 25 s", lambda: bounce(instances["B"], 25))
    at(0.27, "freeze the broker for 30 s", lambda: tansu.freeze(30))
    at(0.40, "add C", lambda: instances["C"].start())
    at(0.53, "kill -9 A, start again after 25 s", lambda: bounce(instances["A"], 25))
    at(0.67, "remove C (SIGTERM)", lambda: log(f"C exited: {instances['C'].stop()}"))
    # Quiet from when the state of C's partitions, back on A and B, has
    # turned over (closed cases are kept 5 minutes, ids 5 minutes).
    quiet_from = round(time.monotonic() - t0) + 330
    at(1.0, "stop producing", lambda: None)
    producer.stop_at = time.monotonic()
    producer.join()
    sampling.set()

    # Wait until the group has read everything: no lag, nothing pending.
    log("waiting for the group to catch up")
    end = time.monotonic() + 600
    calm, consumed = 0, None
    while time.monotonic() < end and calm < 3:
        lag = [metric_sum(ports[n], "nps_consumer_lag") for n in "AB"]
        pend = [metric_sum(ports[n], "nps_pending_deliveries") for n in "AB"]
        held = sum(metric_sum(ports[n], "nps_assigned_partitions") or 0 for n in "AB")
        now_consumed = sum(metric_sum(ports[n], "nps_events_consumed_total") or 0 for n in "AB")
        still = now_consumed == consumed
        consumed = now_consumed
        ok = all(v == 0 for v in lag + pend) and held == args.partitions and still
        calm = calm + 1 if ok else 0
        time.sleep(5)
    log(f"caught up: {calm >= 3}")
    # The CRM works the last cases (up to 205 s after their alert); then
    # every case should be closed.
    crm.stop_when_done.set()
    crm.join(600)
    end = time.monotonic() + 180
    while time.monotonic() < end:
        still_open = sum(metric_sum(ports[n], "nps_cases_open") or 0 for n in "AB")
        orphans = sum(metric_sum(ports[n], "nps_case_orphan_events") or 0 for n in "AB")
        if still_open == 0 and orphans == 0:
            break
        time.sleep(5)
    time.sleep(15)  # two scrapes and a rule evaluation after the last record

    report = {"duration_s": D, "rate": args.rate, "events": events,
              "produced": producer.sent, "planted_bad": producer.bad,
              "producer_failed_deliveries": producer.failed, "checks": {}}
    checks = report["checks"]

    # --- windows: Prometheus sums against the input read back ------------
    log("reading the input topic back")
    records = read_topic(brokers, INPUT)
    now_ms = int(time.time() * 1000)
    truth, seen, bad_values, live_age_max = {}, set(), set(), 0
    detractors = set()
    for _p, _o, _k, value, _h in records:
        a = decode_answer(value) if value else None
        if a is None or a["id"].startswith("bad-"):
            bad_values.add(value)
            continue
        if a["id"] in seen:
            continue
        seen.add(a["id"])
        cat = "detractor" if a["score"] <= 6 else "passive" if a["score"] <= 8 else "promoter"
        if cat == "detractor":
            detractors.add(a["id"])
        age = (now_ms - a["at"]) / 1000
        if age < 86400:
            live_age_max = max(live_age_max, age)
        for w, secs in WINDOWS.items():
            if age < secs:
                k = (a["product"], a["region"], w, cat)
                truth[k] = truth.get(k, 0) + 1
    q = urllib.parse.quote("sum by (product, region, window, category) (nps_window_responses)")
    status, body = http_get(f"http://127.0.0.1:{pport}/api/v1/query?query={q}", timeout=30)
    if status != 200:
        log(f"prometheus query failed: {status} {body[:200]}")
    prom_counts = {}
    for r in json.loads(body or "{}").get("data", {}).get("result", []):
        m = r["metric"]
        prom_counts[(m["product"], m["region"], m["window"], m["category"])] = int(float(r["value"][1]))
    keys = set(truth) | {k for k, v in prom_counts.items() if v}
    diffs = {"|".join(k): (truth.get(k, 0), prom_counts.get(k, 0)) for k in keys
             if truth.get(k, 0) != prom_counts.get(k, 0)}
    checks["windows"] = {
        "ok": not diffs and len(truth) > 0 and live_age_max < 3300,
        "answers": len(seen), "series": len(truth), "differences": dict(list(diffs.items())[:20]),
        "oldest_live_answer_age_s": round(live_age_max),
    }

    # --- alerts ----------------------------------------------------------
    alerts = read_topic(brokers, ALERTS)
    ids_by_response, wrong = {}, 0
    for _p, _o, _k, value, _h in alerts:
        a = json.loads(value)
        ids_by_response.setdefault(a["responseId"], set()).add(a["alertId"])
    missing = detractors - ids_by_response.keys()
    extra = ids_by_response.keys() - detractors
    wrong = sum(1 for ids in ids_by_response.values() if len(ids) != 1)
    checks["alerts"] = {
        "ok": not missing and not extra and not wrong,
        "detractors": len(detractors), "alert_records": len(alerts),
        "duplicates_same_id": len(alerts) - len(ids_by_response),
        "missing": len(missing), "for_non_detractors": len(extra), "conflicting_ids": wrong,
    }

    # --- cases: every one worked and closed; late contacts escalated ----
    escalations = read_topic(brokers, ESCALATIONS)
    level1, any_level, sla_missed, repeats = {}, {}, set(), set()
    for _p, _o, _k, value, _h in escalations:
        e = json.loads(value)
        any_level.setdefault(e["alertId"], []).append((e.get("level"), e.get("reason")))
        if e.get("level") == 1:
            level1.setdefault(e["alertId"], set()).add(e["escalationId"])
            # A repeat detractor's level 1 comes at once, whatever the
            # contact: only contact_sla_missed says the SLA was missed.
            (sla_missed if e.get("reason") == "contact_sla_missed" else repeats).add(e["alertId"])
    late = {a for a, (prio, emitted, contact) in crm.plans.items()
            if contact > emitted + SLA_MS.get(prio, SLA_MS["ALERT_PRIORITY_NORMAL"])}
    # What each late contact without an escalation looked like: every copy
    # of its alert (offset, emittedAt, priority) against the CRM's plan.
    copies = {}
    for p, o, _k, value, _h in alerts:
        a = json.loads(value)
        copies.setdefault(a["alertId"], []).append(
            (p, o, a.get("emittedAt"), a.get("priority"), bool(a.get("withdrawn"))))
    unescalated = [
        {"alert_id": a, "priority": crm.plans[a][0],
         "late_by_ms": crm.plans[a][2] - crm.plans[a][1]
         - SLA_MS.get(crm.plans[a][0], SLA_MS["ALERT_PRIORITY_NORMAL"]),
         "copies": copies.get(a, []), "escalations": any_level.get(a, [])}
        for a in sorted(late - level1.keys())[:20]]
    alert_ids = {i for ids in ids_by_response.values() for i in ids}
    counts = {n: {m: metric_sum(ports[n], m) for m in
                  ("nps_cases_open", "nps_case_orphan_events", "nps_cases_evicted_total")}
              for n in "AB"}
    open_left = sum(c["nps_cases_open"] or 0 for c in counts.values())
    orphans_left = sum(c["nps_case_orphan_events"] or 0 for c in counts.values())
    evicted = sum(c["nps_cases_evicted_total"] or 0 for c in counts.values())
    checks["cases"] = {
        "ok": (alert_ids <= crm.plans.keys() and late <= level1.keys() and open_left == 0
               and orphans_left == 0 and evicted == 0 and crm.failed == 0
               and all(len(v) == 1 for v in level1.values())),
        "cases_worked": len(crm.plans), "alerts_not_worked": len(alert_ids - crm.plans.keys()),
        "case_events_sent": crm.sent, "late_contacts": len(late),
        "late_without_escalation": len(late - level1.keys()),
        "escalated_though_contacted_in_time": len(sla_missed - late),
        "repeat_detractor_escalations": len(repeats),
        "late_without_escalation_sample": unescalated,
        "escalation_records": len(escalations), "open_at_end": open_left,
        "orphan_events_at_end": orphans_left, "evicted": evicted,
    }

    # --- dead letters ----------------------------------------------------
    dlq = read_topic(brokers, DLQ)
    dlq_values = {v for _p, _o, _k, v, _h in dlq}
    reasons = {}
    for *_r, h in dlq:
        reason = (h.get("nps.dlq.reason") or b"?").decode()
        reasons[reason] = reasons.get(reason, 0) + 1
    checks["dead_letters"] = {
        "ok": dlq_values == bad_values and len(bad_values) > 0,
        "records": len(dlq), "planted_in_log": len(bad_values),
        "unplanted": len(dlq_values - bad_values), "planted_missing": len(bad_values - dlq_values),
        "reasons": reasons,
    }

    # --- exits nobody asked for (a supervisor started them again) --------
    supervisor.done.set()
    checks["unplanned_exits"] = {"ok": not supervisor.exits, "exits": supervisor.exits}

    # --- resources in the quiet phase ------------------------------------
    res = {}
    ok = True
    for n in "AB":
        pid = instances[n].p.pid
        q_samples = [s for s in samples if s[1] == n and s[2] == pid and s[0] >= quiet_from]
        if len(q_samples) < 3:
            res[n] = {"samples": len(q_samples)}
            ok = False
            continue
        rss = sorted(s[3] for s in q_samples)
        med = rss[len(rss) // 2]
        band = (rss[0] / med - 1, rss[-1] / med - 1)
        thr = [s[4] for s in q_samples]
        fds = [s[5] for s in q_samples]
        first, last = q_samples[0], q_samples[-1]
        res[n] = {
            "samples": len(q_samples), "from_s": round(first[0]), "to_s": round(last[0]),
            "rss_mib_first_median_last": [round(first[3] / 1024, 1), round(med / 1024, 1), round(last[3] / 1024, 1)],
            "rss_band_pct": [round(100 * band[0], 1), round(100 * band[1], 1)],
            "threads_min_max": [min(thr), max(thr)], "fds_min_max": [min(fds), max(fds)],
        }
        ok &= abs(band[0]) <= 0.10 and band[1] <= 0.10
        ok &= max(thr) - min(thr) <= 2 and max(fds) - min(fds) <= 4
    checks["resources"] = {"ok": ok, "quiet_from_s": quiet_from, "instances": res,
                           "state_record_mib": state_record_sizes(brokers, "soak-state")}
    with open(os.path.join(work, "samples.json"), "w") as f:
        json.dump(samples, f)

    for n, inst in instances.items():
        status = inst.stop()
        if status is not None:
            report.setdefault("exit", {})[n] = status
    prom.stop()
    tansu.stop()
    report["ok"] = all(c["ok"] for c in checks.values())
    with open(args.report, "w") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    print("soak:", "PASS" if report["ok"] else "FAIL", flush=True)
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
