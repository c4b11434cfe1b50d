#!/usr/bin/env python3
"""An independent count of comment themes for tests/real_broker.rs, with
Python's unicodedata and tomllib only (none of nps-stream's code):

    themes.py --taxonomy src/themes/default.toml --data answers.jsonl --now-ms MS

reads the taxonomy and the answers (protobuf JSON mapping, one per line,
first versions only), matches each comment as docs/themes.md says
(lowercase, NFKD, marks removed, words of letters or digits, patterns as
word sequences, `word*` a prefix) and prints one JSON object:
{"themes": [[product, region, window, theme, category, count], ...],
 "commented": [[product, region, window, category, count], ...],
 "by_response": {response_id: [theme, ...]}}
over the windows 1h, 24h, 7d and 30d (an answer is in a window when its
age at --now-ms is below the window's length).
"""
import argparse
import collections
import json
import tomllib
import unicodedata
from datetime import datetime

WINDOWS = [("1h", 3600_000), ("24h", 86_400_000), ("7d", 7 * 86_400_000), ("30d", 30 * 86_400_000)]


def fold(text, keep_star=False):
    """The words of `text`: (word, ends with *) pairs."""
    words, cur, star = [], [], False
    def close(prefix):
        if cur:
            words.append(("".join(cur), prefix))
            cur.clear()
    for ch in text:
        if keep_star and ch == "*":
            close(True)
            continue
        for lo in ch.lower():
            for d in unicodedata.normalize("NFKD", lo):
                if unicodedata.category(d).startswith("M"):
                    continue
                if d.isalnum():
                    cur.append(d)
                else:
                    close(False)
    close(False)
    return words


def matches(pattern, words):
    n = len(pattern)
    for i in range(len(words) - n + 1):
        if all(words[i + k].startswith(p) if star else words[i + k] == p
               for k, (p, star) in enumerate(pattern)):
            return True
    return False


def category(score):
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


def ms(ts):
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--taxonomy", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--now-ms", type=int, required=True)
    args = ap.parse_args()
    with open(args.taxonomy, "rb") as f:
        taxonomy = [(t["name"], [fold(p, keep_star=True) for p in t["patterns"]])
                    for t in tomllib.load(f)["themes"]]
    themes, commented, by_response = collections.Counter(), collections.Counter(), {}
    with open(args.data, encoding="utf-8") as f:
        for line in f:
            a = json.loads(line)
            comment = a.get("comment", "")
            words = [w for w, _ in fold(comment)]
            found = sorted(name for name, patterns in taxonomy
                           if any(matches(p, words) for p in patterns))
            by_response[a["responseId"]] = found
            age = args.now_ms - ms(a["respondedAt"])
            cat = category(a["score"])
            for window, length in WINDOWS:
                if age < length:
                    for name in found:
                        themes[(a["product"], a["region"], window, name, cat)] += 1
                    if comment:
                        commented[(a["product"], a["region"], window, cat)] += 1
    print(json.dumps({
        "themes": [[*k, v] for k, v in sorted(themes.items())],
        "commented": [[*k, v] for k, v in sorted(commented.items())],
        "by_response": by_response,
    }))


if __name__ == "__main__":
    main()
