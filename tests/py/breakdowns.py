#!/usr/bin/env python3
"""An independent count of breakdowns for tests/breakdowns_e2e.rs, with
Python's standard library only (none of nps-stream's code):

    breakdowns.py --data answers.jsonl --now-ms MS --attribute team \
        --min-responses 30 [--benchmark PRODUCT=MEDIAN ...]

reads the answers (protobuf JSON mapping, one per line, first versions
only) and counts each answer under the value of its attribute as
docs/breakdowns.md says: the value itself; `unknown` without it (or
empty); `invalid` when longer than 64 bytes (UTF-8) or holding a control
character. It prints one JSON object:
{"counts": [[value, window, category, n], ...],
 "nps": [[value, window, nps], ...]          (values with n >= min only),
 "by_response": {response_id: value},
 "vs_median": [[product, window, nps - median], ...]}
over the windows 1h, 24h, 7d and 30d (an answer is in a window when its
age at --now-ms is below the window's length).
"""
import argparse
import collections
import json
import unicodedata
from datetime import datetime

WINDOWS = [("1h", 3600_000), ("24h", 86_400_000), ("7d", 7 * 86_400_000), ("30d", 30 * 86_400_000)]


def category(score):
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


def value_of(attributes, attribute):
    v = attributes.get(attribute)
    if not v:
        return "unknown"
    if len(v.encode("utf-8")) > 64 or any(unicodedata.category(c) == "Cc" for c in v):
        return "invalid"
    return v


def millis(stamp):
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def nps(c):
    n = sum(c.values())
    return 100.0 * (c["promoter"] - c["detractor"]) / n


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--now-ms", type=int, required=True)
    p.add_argument("--attribute", required=True)
    p.add_argument("--min-responses", type=int, required=True)
    p.add_argument("--benchmark", action="append", default=[])
    a = p.parse_args()
    counts = collections.defaultdict(collections.Counter)
    products = collections.defaultdict(collections.Counter)
    by_response = {}
    with open(a.data, encoding="utf-8") as f:
        for line in f:
            m = json.loads(line)
            value = value_of(m.get("attributes", {}), a.attribute)
            by_response[m["responseId"]] = value
            cat = category(m["score"])
            age = a.now_ms - millis(m["respondedAt"])
            for window, length in WINDOWS:
                if age < length:
                    counts[(value, window)][cat] += 1
                    products[(m["product"], window)][cat] += 1
    medians = dict(b.split("=", 1) for b in a.benchmark)
    out = {
        "counts": [
            [v, w, cat, c[cat]]
            for (v, w), c in sorted(counts.items())
            for cat in ("promoter", "passive", "detractor")
        ],
        "nps": [
            [v, w, nps(c)]
            for (v, w), c in sorted(counts.items())
            if sum(c.values()) >= a.min_responses
        ],
        "by_response": by_response,
        "vs_median": [
            [product, w, nps(c) - float(medians.get(product, medians.get("*")))]
            for (product, w), c in sorted(products.items())
            if product in medians or "*" in medians
        ],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
