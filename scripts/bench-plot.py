#!/usr/bin/env python3
"""Plots the rollout benchmark (target/bench/rollouts.json, written by `make bench`): step
lateness p50/p99 and the operator's peak RSS against N, with the targets as dashed lines.

    scripts/bench-plot.py [--json target/bench/rollouts.json] [--out target/bench/rollouts.png]

Needs matplotlib: `make bench` installs it into the venv target/bench/venv.
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="target/bench/rollouts.json")
    ap.add_argument("--out", default="target/bench/rollouts.png")
    args = ap.parse_args()
    with open(args.json, encoding="utf-8") as f:
        summary = json.load(f)
    runs = sorted(summary["runs"], key=lambda r: r["n"])
    if not runs:
        print("no runs in", args.json, file=sys.stderr)
        return 1
    n = [r["n"] for r in runs]

    fig, (lat, rss) = plt.subplots(1, 2, figsize=(11, 4.2))
    lat.plot(n, [r["lateness_ms"]["p50"] for r in runs], "o-", label="lateness p50")
    lat.plot(n, [r["lateness_ms"]["p99"] for r in runs], "s-", label="lateness p99")
    lat.plot(n, [r["reaction_ms"]["p99"] for r in runs], "^:", label="reaction p99")
    lat.axhline(100, color="grey", ls="--", lw=1, label="target lateness p99 100 ms")
    lat.set(xscale="log", yscale="log", xlabel="Deployers rolled out at once (N)", ylabel="ms",
            title="Step lateness (transition − persisted deadline)")
    lat.legend(fontsize=8)
    lat.grid(True, which="both", alpha=0.3)

    rss.plot(n, [r["operator_peak_rss_mib"] for r in runs], "o-", label="operator peak RSS")
    rss.axhline(64, color="grey", ls="--", lw=1, label="target 64 MiB")
    rss.set(xscale="log", xlabel="Deployers rolled out at once (N)", ylabel="MiB", title="Operator peak RSS")
    rss.set_ylim(bottom=0)
    rss.legend(fontsize=8)
    rss.grid(True, which="both", alpha=0.3)

    machine = summary.get("machine", {})
    fig.suptitle(f"deployer-operator rollouts, R = 2, steps 50% (sleep 5 s), 100% — "
                 f"{machine.get('cores', '?')} cores ({machine.get('cpu') or 'unknown CPU'}), {summary.get('at', '')[:10]}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print("saved", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
