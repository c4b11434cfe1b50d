#!/usr/bin/env python3
"""A CRM for the end-to-end tests of case tracking, with confluent-kafka
only: it reads detractor alerts (JSON, as nps-stream writes them with
--alerts-format json) and answers each with the case events a plan gives,
as JSON CaseEvents (the protobuf JSON mapping) keyed by customer id.

  crm.py --brokers B --alerts T --events E --plan F --expect N --timeout S

F is a JSON object:
  {"sla_ms": {"ALERT_PRIORITY_CRITICAL": ms, ...},
   "by_customer": {customer_id: [[send_frac, occurred_frac, state, outcome, root_cause], ...]}}
Each step is sent once the wall clock passes emitted_at + send_frac * SLA,
with occurred_at = emitted_at + occurred_frac * SLA (so a step may be sent
late, or carry an older time than one sent before it: a stale event).
Alerts of customers not in the plan get nothing. The script ends when N
alerts were read and every step was sent, and prints one JSON object:
{alert_id: {"customer": c, "priority": p, "emitted_ms": t}}.
"""
import argparse
import heapq
import re
import json
import sys
import time
from datetime import datetime, timedelta, timezone

from confluent_kafka import Consumer, Producer, TopicPartition


def rfc3339_ms(text):
    """Unix ms of an RFC 3339 time (any fraction digits, Z or an offset)."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if not m:
        raise ValueError(f"not RFC 3339: {text}")
    base, frac, zone = m.groups()
    dt = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S")
    if zone == "Z":
        zone = "+00:00"
    sign = 1 if zone[0] == "+" else -1
    offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])) * sign
    dt = dt.replace(tzinfo=timezone(offset))
    ms = int((frac or "0").ljust(3, "0")[:3])
    return int(dt.timestamp()) * 1000 + ms


def iso(ms):
    dt = datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--alerts", required=True)
    ap.add_argument("--events", required=True)
    ap.add_argument("--plan", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    with open(args.plan, encoding="utf-8") as f:
        plan = json.load(f)
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": "crm-test",
        "enable.auto.commit": False,
    })
    md = consumer.list_topics(args.alerts, timeout=10)
    parts = list(md.topics[args.alerts].partitions.keys())
    consumer.assign([TopicPartition(args.alerts, p, 0) for p in parts])
    producer = Producer({"bootstrap.servers": args.brokers, "linger.ms": 5})
    failures = []

    def on_delivery(err, _msg):
        if err is not None:
            failures.append(str(err))

    seen = {}
    agenda = []  # (send_at_ms, seq, key, value)
    seq = 0
    deadline = time.time() + args.timeout
    while time.time() < deadline:
        msg = consumer.poll(0.05)
        if msg is not None and msg.error() is None and msg.value():
            alert = json.loads(msg.value())
            alert_id = alert["alertId"]
            if alert_id not in seen:
                customer = alert.get("customerId", "")
                priority = alert.get("priority", "ALERT_PRIORITY_NORMAL")
                emitted = rfc3339_ms(alert["emittedAt"])
                seen[alert_id] = {"customer": customer, "priority": priority,
                                  "emitted_ms": emitted}
                sla = plan["sla_ms"][priority]
                for send_frac, occurred_frac, state, outcome, cause in plan["by_customer"].get(customer, []):
                    event = {"alertId": alert_id, "customerId": customer, "state": state,
                             "occurredAt": iso(emitted + int(occurred_frac * sla)),
                             "owner": "agente-7"}
                    if outcome:
                        event["outcome"] = outcome
                    if cause:
                        event["rootCause"] = cause
                    seq += 1
                    heapq.heappush(agenda, (emitted + int(send_frac * sla), seq, customer,
                                            json.dumps(event)))
        now = int(time.time() * 1000)
        while agenda and agenda[0][0] <= now:
            _, _, key, value = heapq.heappop(agenda)
            producer.produce(args.events, key=key, value=value.encode(), on_delivery=on_delivery)
        producer.poll(0)
        if len(seen) >= args.expect and not agenda:
            break
    left = producer.flush(30)
    if left or failures or len(seen) < args.expect or agenda:
        print(f"crm: {len(seen)}/{args.expect} alerts, {len(agenda)} steps unsent, "
              f"{left} undelivered, failures {failures[:3]}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
