#!/usr/bin/env python3
"""Print the simulator's request log, one request a line, for tests.

    python3 test/simulator/sim_requests.py [--clear] [--contains TEXT]

Each line is `METHOD PATH STATUS`, the path without the fault prefix and
the /v1/accounts/{accountId} part, and continuation tokens shown as
<ctoken> (they are opaque, and differ from run to run). --clear empties the
log instead. Requests made through a /_fault/ prefix are left out unless
--contains selects them: the log records a request when its answer goes,
so one an earlier test left waiting on latency_ms would otherwise turn up
in a later test's window. The simulator is $MAESTRO_SIM_URL (default
http://127.0.0.1:57480). Standard library only.
"""

import argparse
import json
import os
import re
import sys
import urllib.parse
import urllib.request


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clear", action="store_true", help="empty the request log")
    ap.add_argument("--contains", help="only requests whose path contains this")
    args = ap.parse_args()
    base = os.environ.get("MAESTRO_SIM_URL", "http://127.0.0.1:57480").rstrip("/")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    if args.clear:
        opener.open(urllib.request.Request(base + "/__sim/requests", method="DELETE"), timeout=30)
        return 0
    url = base + "/__sim/requests"
    if args.contains:
        url += "?path_contains=" + urllib.parse.quote(args.contains)
    with opener.open(url, timeout=30) as r:
        entries = json.load(r)
    for e in entries:
        if e.get("fault") and not args.contains:
            continue
        path = re.sub(r"^.*?/v1/accounts/[^/]+", "", e["path"])
        path = re.sub(r"ctoken=[^&]+", "ctoken=<ctoken>", path)
        print(e["method"], path, e["status"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
