#!/usr/bin/env python3
"""Counts API requests in the local control plane's audit log, by user agent prefix, verb and
resource. Used to measure how many calls a rollout costs.

    scripts/audit-count.py [--log .cluster/logs/audit.log] [--agent deployer-operator] [--since RFC3339]
"""
import argparse
import collections
import json
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log", default=".cluster/logs/audit.log")
    ap.add_argument("--agent", default="deployer-operator/")
    ap.add_argument("--since", default="", help="only requests at or after this RFC3339 time")
    ap.add_argument("--until", default="", help="only requests before this RFC3339 time")
    args = ap.parse_args()

    counts: collections.Counter = collections.Counter()
    with open(args.log, encoding="utf-8") as f:
        for line in f:
            ev = json.loads(line)
            if not ev.get("userAgent", "").startswith(args.agent):
                continue
            at = ev.get("requestReceivedTimestamp", "")
            if (args.since and at < args.since) or (args.until and at >= args.until):
                continue
            ref = ev.get("objectRef", {})
            resource = ref.get("resource", ev.get("requestURI", "?"))
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            counts[(ev.get("verb", "?"), resource)] += 1

    writes = sum(n for (verb, _), n in counts.items() if verb in ("create", "update", "patch", "delete"))
    for (verb, resource), n in sorted(counts.items()):
        print(f"{n:6d}  {verb:8s} {resource}")
    print(f"{writes:6d}  writes in all; {sum(counts.values())} requests in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
