"""CPU per answer of a running nps-stream while it consumes a backlog.

Usage: steady.py PID PORT N

Polls the service's /api/v1/summary (a small JSON document) and, each time
the service has refreshed its view (`refreshed_at_ms` changed, once a
second), reads the process's user + system CPU from /proc/PID/stat. The
figure is the CPU spent between the first refresh that has counted 10% of
the N answers and the first that has counted 90%, divided by the answers
counted in between: start-up, the wait for the group, the idle tail
before the commit and whatever periodic work falls in it are left out,
so two builds compare on the work per answer alone. Prints one line:
`steady <µs per answer> <answers> <CPU s>`.
"""

import http.client
import json
import os
import sys
import time

pid, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tick = os.sysconf("SC_CLK_TCK")


def cpu():
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; 12 and 13 after the ")".
    return (int(fields[11]) + int(fields[12])) / tick


conn = None
last = None
start = end = None
deadline = time.monotonic() + 600
while end is None and time.monotonic() < deadline:
    time.sleep(0.02)
    try:
        conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/api/v1/summary")
        body = json.loads(conn.getresponse().read())
    except (OSError, ValueError, http.client.HTTPException):
        conn = None
        continue
    at, consumed = body.get("refreshed_at_ms"), body.get("consumed", 0)
    if at == last:
        continue
    last = at
    point = (consumed, cpu())
    if start is None and consumed >= n // 10:
        start = point
    elif start is not None and consumed >= n * 9 // 10:
        end = point
if start is None or end is None or end[0] <= start[0]:
    sys.exit("steady: the service did not count the answers in time")
answers, seconds = end[0] - start[0], end[1] - start[1]
print(f"steady {seconds * 1e6 / answers:.3f} {answers} {seconds:.2f}")
