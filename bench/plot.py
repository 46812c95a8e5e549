"""Plots for docs/benchmarks.md from bench/results.json (run by porthole-bench).

Bar charts: the median over rounds, whiskers from min to max.
Usage: python plot.py RESULTS.json OUT_DIR
"""

import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAMES = {
    "porthole": "porthole-proxy",
    "porthole-one-worker": "porthole\n1 worker",
    "porthole-features": "porthole\n+rec +token",
    "websockify": "websockify",
    "socat": "socat relay",
    "direct": "direct\n(no proxy)",
}
ORDER = list(NAMES)
PLAIN, TLS = "#4c72b0", "#dd8452"


def spread(values):
    """(median, lower whisker, upper whisker) or None."""
    if not values:
        return None
    m = statistics.median(values)
    return m, m - min(values), max(values) - m


def bars(ax, series, ylabel, title, limit=None, limit_label=None, cap=None):
    """series: [(label, colour, {contender: [values]})]. Bars above `cap` are
    cut at it, with their value written on them."""
    contenders = [c for c in ORDER if any(c in s[2] and s[2][c] for s in series)]
    width = 0.8 / max(len(series), 1)
    for i, (label, colour, data) in enumerate(series):
        xs, ys, lo, hi = [], [], [], []
        for x, c in enumerate(contenders):
            s = spread(data.get(c, []))
            if s:
                xs.append(x + (i - (len(series) - 1) / 2) * width)
                ys.append(s[0])
                lo.append(s[1])
                hi.append(s[2])
        if cap is not None:
            shown = [min(y, cap) for y in ys]
            lo = [0 if y > cap else e for y, e in zip(ys, lo)]
            hi = [0 if y > cap else e for y, e in zip(ys, hi)]
        else:
            shown = ys
        ax.bar(xs, shown, width, yerr=[lo, hi], capsize=4, color=colour, label=label)
        for x, y, top, up in zip(xs, ys, shown, hi):
            text = f"{y:.3g}" if top == y else f"{y:.3g} (cut)"
            ax.annotate(text, (x, top + up), ha="center", va="bottom", fontsize=8,
                        xytext=(0, 2), textcoords="offset points")
    if cap is not None:
        ax.set_ylim(0, cap * 1.1)
    if limit is not None:
        ax.axhline(limit, color="#c44e52", linestyle="--", linewidth=1, label=limit_label)
    ax.set_xticks(range(len(contenders)))
    ax.set_xticklabels([NAMES[c] for c in contenders], fontsize=9)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def by(samples, key, tls=None):
    out = {}
    for s in samples:
        if tls is not None and s["tls"] != tls:
            continue
        out.setdefault(s["contender"], []).append(key(s))
    return out


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def main():
    results = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    bulk, latency, startup = results["bulk"], results["latency"], results["startup"]
    with_process = [s for s in bulk if s["contender"] != "direct"]

    fig, ax = plt.subplots(figsize=(9, 4.5))
    # The recording variant costs tens of times the others: cut its bar.
    others = [s["cpu_s_per_gib"] for s in with_process if s["contender"] != "porthole-features"]
    bars(ax, [("plain", PLAIN, by(with_process, lambda s: s["cpu_s_per_gib"], False)),
              ("TLS", TLS, by(with_process, lambda s: s["cpu_s_per_gib"], True))],
         "CPU seconds per GiB (user + sys)", "Bulk transfer: the contender's CPU per GiB",
         cap=max(others) * 1.3 if others else None)
    save(fig, out / "bulk-cpu.png")

    fig, ax = plt.subplots(figsize=(9, 4.5))
    bars(ax, [("plain", PLAIN, by(bulk, lambda s: s["gib_per_s"], False)),
              ("TLS", TLS, by(bulk, lambda s: s["gib_per_s"], True))],
         "GiB/s", "Bulk transfer: throughput")
    save(fig, out / "bulk-throughput.png")

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, tls in zip(axes, (False, True)):
        bars(ax, [("p50", PLAIN, by(latency, lambda s: s["latencies"]["p50_us"], tls)),
                  ("p99", TLS, by(latency, lambda s: s["latencies"]["p99_us"], tls))],
             "round trip µs", "Small messages, " + ("TLS" if tls else "plain"))
    save(fig, out / "latency.png")

    fig, ax = plt.subplots(figsize=(9, 4.5))
    # Peak per round: the larger VmHWM sum, after the bulk or the small-message run.
    after_latency = {(s["contender"], s["round"]): s["after"]["hwm_kib"]
                     for s in latency if not s["tls"]}
    peaks = by([s for s in with_process if not s["tls"]],
               lambda s: max(s["after"]["hwm_kib"],
                             after_latency.get((s["contender"], s["round"]), 0)) / 1024)
    bars(ax, [("idle RSS", PLAIN, by(startup, lambda s: s["idle"]["rss_kib"] / 1024)),
              ("peak RSS under load", TLS, peaks)],
         "MiB (sum over the contender's processes)", "Memory", limit=8,
         limit_label="target for porthole-proxy: 8 MiB")
    save(fig, out / "memory.png")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    bars(ax, [("start to accepting", PLAIN, by(startup, lambda s: s["ready_ms"]))],
         "ms", "Start-up", limit=20, limit_label="target for porthole-proxy: 20 ms")
    save(fig, out / "startup.png")


if __name__ == "__main__":
    main()
