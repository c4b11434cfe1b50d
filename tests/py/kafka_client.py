#!/usr/bin/env python3
"""An independent Kafka client for the end-to-end tests (confluent-kafka).

nps-stream's own tests must not judge nps-stream with nps-stream's code, so
reading the alerts and dead-letter topics and writing raw payloads goes
through this script.

  produce --brokers B --topic T --file F
      F holds JSON lines {"key": str|null, "value_b64": str|null,
      "headers": {name: str}}; produced in order, then flushed.
  read --brokers B --topic T --expect N --timeout S
      Reads every partition from the beginning until N records were read
      (then lingers 1 s for extra ones) or S seconds passed; prints one JSON
      line per record: partition, offset, key, value_b64, headers.
  describe --brokers B --topic T
      Prints one JSON object: the topic's partition count and its configs
      as the broker reports them (DescribeConfigs).
"""
import argparse
import base64
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource


def produce(args):
    producer = Producer({"bootstrap.servers": args.brokers, "linger.ms": 5})
    failures = []

    def on_delivery(err, _msg):
        if err is not None:
            failures.append(str(err))

    count = 0
    with open(args.file, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            value = base64.b64decode(rec["value_b64"]) if rec.get("value_b64") is not None else None
            headers = [(k, v.encode()) for k, v in (rec.get("headers") or {}).items()]
            while True:
                try:
                    producer.produce(args.topic, value=value, key=rec.get("key"),
                                     headers=headers or None, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            count += 1
    left = producer.flush(60)
    if left or failures:
        print(f"produce: {left} undelivered, failures: {failures[:5]}", file=sys.stderr)
        sys.exit(1)
    print(f"produced {count}", file=sys.stderr)


def read(args):
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": f"reader-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    md = consumer.list_topics(args.topic, timeout=10)
    topic = md.topics.get(args.topic)
    if topic is None or topic.error is not None:
        raise KafkaException(f"topic {args.topic} not found")
    partitions = list(topic.partitions)
    consumer.assign([TopicPartition(args.topic, p, 0) for p in partitions])
    # Reads until --expect records came (or the timeout), then on to each
    # partition's end offset as the broker gives it then, then one more
    # second: a record beyond the expected count (a late duplicate) is read.
    deadline = time.monotonic() + args.timeout
    seen = 0
    ends = None
    next_offset = {}
    linger_until = None
    while time.monotonic() < deadline:
        if seen >= args.expect and ends is None:
            ends = {}
            for p in partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(args.topic, p), timeout=10)
                ends[p] = (low, high)
            deadline = max(deadline, time.monotonic() + 10)
        if ends is not None and linger_until is None and all(
                next_offset.get(p, low) >= high for p, (low, high) in ends.items()):
            linger_until = time.monotonic() + 1.0
        if linger_until is not None and time.monotonic() > linger_until:
            break
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            continue
        headers = {}
        for k, v in msg.headers() or []:
            headers[k] = v.decode("utf-8", "replace") if v is not None else None
        key = msg.key()
        print(json.dumps({
            "partition": msg.partition(),
            "offset": msg.offset(),
            "key": key.decode("utf-8", "replace") if key is not None else None,
            "value_b64": base64.b64encode(msg.value()).decode() if msg.value() is not None else None,
            "headers": headers,
        }))
        next_offset[msg.partition()] = msg.offset() + 1
        seen += 1
    consumer.close()
    print(f"read {seen}", file=sys.stderr)


def describe(args):
    admin = AdminClient({"bootstrap.servers": args.brokers})
    md = admin.list_topics(args.topic, timeout=10)
    topic = md.topics.get(args.topic)
    if topic is None or topic.error is not None:
        raise KafkaException(f"topic {args.topic} not found")
    resource = ConfigResource(ConfigResource.Type.TOPIC, args.topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    print(json.dumps({
        "partitions": len(topic.partitions),
        "configs": {k: v.value for k, v in configs.items()},
    }))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("produce")
    pp.add_argument("--brokers", required=True)
    pp.add_argument("--topic", required=True)
    pp.add_argument("--file", required=True)
    pr = sub.add_parser("read")
    pr.add_argument("--brokers", required=True)
    pr.add_argument("--topic", required=True)
    pr.add_argument("--expect", type=int, required=True)
    pr.add_argument("--timeout", type=float, default=60)
    pd = sub.add_parser("describe")
    pd.add_argument("--brokers", required=True)
    pd.add_argument("--topic", required=True)
    args = p.parse_args()
    {"produce": produce, "read": read, "describe": describe}[args.cmd](args)


if __name__ == "__main__":
    main()
