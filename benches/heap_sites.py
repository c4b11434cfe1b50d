"""Peak heap of nps-stream by what holds it, from a heaptrack profile.

    heaptrack_print -f FILE.zst --flamegraph-cost-type peak -F stacks.txt
    python3 benches/heap_sites.py stacks.txt KEYS

Each line of stacks.txt is a call stack (outermost frame first, frames
separated by ';') and the peak bytes allocated through it. Stacks through
librdkafka are grouped by its innermost rd_kafka function; the others by
the innermost three frames in nps-stream's own source files. Prints the
biggest groups with their bytes per key (KEYS: the keys in the engine).
"""

import collections
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).parent.parent / "src"
# Frames name only a file's base name: a `mod.rs` frame is ours when its
# function is one that src/**/mod.rs defines.
OURS = {p.name for p in SRC.rglob("*.rs")} - {"mod.rs"}
MOD_FNS = {
    m.group(1)
    for p in SRC.rglob("mod.rs")
    for m in re.finditer(r"\bfn (\w+)", p.read_text())
}


def ours(frame):
    name, _, file = frame.rpartition(" (")
    file = file.rstrip(")")
    return file in OURS or (file == "mod.rs" and name.split("<")[0] in MOD_FNS)


def site(frames):
    if any(f.startswith("rd_") for f in frames):
        rd = [f for f in frames if f.startswith("rd_kafka")]
        return "librdkafka: " + (rd[-1] if rd else frames[-1])
    mine = [f for f in frames if ours(f)]
    return " > ".join(mine[-3:]) or "(elsewhere)"


def main():
    path, keys = sys.argv[1], int(sys.argv[2])
    peaks = collections.Counter()
    for line in open(path):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if stack:
            peaks[site(stack.split(";"))] += int(n)
    print(f"{'peak MB':>8} {'B/key':>7}  where")
    for where, n in peaks.most_common(14):
        print(f"{n / 1e6:8.2f} {n / keys:7.0f}  {where[:150]}")


if __name__ == "__main__":
    main()
