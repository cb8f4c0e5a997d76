#!/usr/bin/env python3
"""Plots the rollout benchmark (target/bench/rollouts.json, written by `make bench`): step
lateness p50/p99 and the operator's peak RSS against N, with the targets as dashed lines.
With --peers (target/bench/peers.json, written by `make bench PEERS=argo`): the side-by-side
comparison instead, each controller's wall time (and the ideal), CPU, peak RSS and writes per
object against N (medians over the runs).

    scripts/bench-plot.py [--json target/bench/rollouts.json] [--out target/bench/rollouts.png]
    scripts/bench-plot.py --peers target/bench/peers.json --out target/bench/peers.png

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
    ap.add_argument("--peers", default="", help="plot this peers.json (make bench PEERS=argo) instead")
    args = ap.parse_args()
    if args.peers:
        return plot_peers(args.peers, args.out)
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


def median(values):
    values = sorted(v for v in values if isinstance(v, (int, float)))
    return values[len(values) // 2] if values else float("nan")


def plot_peers(path: str, out: str) -> int:
    with open(path, encoding="utf-8") as f:
        summary = json.load(f)
    sizes = sorted(summary["sizes"], key=lambda s: s["n"])
    if not sizes:
        print("no sizes in", path, file=sys.stderr)
        return 1
    n = [s["n"] for s in sizes]
    columns = [("ours", "deployer-operator", "o-"), ("argo", "Argo Rollouts", "s-")]
    panels = [
        ("wall, bump → all finished (s)", lambda r: r["wall_s"]),
        ("controller CPU (s)", lambda r: r["cpu_s"]),
        ("controller peak RSS (MiB)", lambda r: r["peak_rss_mib"]),
        ("API writes per object (with Events)", lambda r: r["per_object"]["writes"]),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    for ax, (title, get) in zip(axes, panels):
        for key, label, style in columns:
            ys = [median([get(r) for r in s.get(key) or []]) for s in sizes]
            if any(y == y for y in ys):  # not all NaN
                ax.plot(n, ys, style, label=label)
        if title.startswith("wall"):
            ideal = [median([r["ideal_s"]["p50"] for r in s.get("ours") or []]) for s in sizes]
            ax.plot(n, ideal, "k:", lw=1, label="ideal p50 (ours' run)")
        ax.set(xscale="log", xlabel="objects rolled out at once (N)", title=title)
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    machine = summary.get("machine", {})
    fig.suptitle(f"Same workload, one controller at a time: R = 10, canary 10%/6 s, 30%/3 s, 60%/3 s, 100% — "
                 f"{machine.get('cores', '?')} cores, {summary.get('at', '')[:10]} (medians over runs)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print("saved", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
