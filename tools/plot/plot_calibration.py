#!/usr/bin/env python3
"""Plots an `edgemoe calibrate` report (report.json) as two small PNGs.

    .venv/bin/python tools/plot/plot_calibration.py OUT/report.json docs/calibration/demo

writes <prefix>-pareto.png (expert bytes vs held-out perplexity and vs KL against the
baseline: uniform types, adapted assignments at each tolerance, and every assignment the
search measured) and <prefix>-layers.png (types per layer of the assignment at the requested
tolerance and of those matching each uniform type's held-out KL).
"""

import json
import sys
from collections import Counter

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MIB = 1024 * 1024


def main():
    report = json.load(open(sys.argv[1]))
    prefix = sys.argv[2]
    base = report["baseline"]

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=80)
    for ax, key, ylabel in [
        (axes[0], "perplexity", "held-out perplexity"),
        (axes[1], "kl", "held-out KL vs baseline (nats/token)"),
    ]:
        trace = sorted((p for _, p in report["search_trace"]), key=lambda p: p["expert_bytes"])
        ax.plot([p["expert_bytes"] / MIB for p in trace], [p[key] for p in trace],
                ".-", color="0.7", lw=1, ms=4, label="search path (greedy order)")
        u = report["uniform"]
        ax.plot([p["expert_bytes"] / MIB for p in u], [p[key] for p in u], "s-", color="C0",
                label="uniform")
        for p in u:
            ax.annotate(p["label"].replace("uniform ", ""), (p["expert_bytes"] / MIB, p[key]),
                        textcoords="offset points", xytext=(4, 4), fontsize=8, color="C0")
        a = report["adapted"] + [m[1] for m in report["kl_matched"]]
        ax.plot([p["expert_bytes"] / MIB for p in a], [p[key] for p in a], "o", color="C3",
                label="adapted (tolerances, KL-matched)")
        ax.set_xlabel("expert bytes (MiB)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].axhline(base["perplexity"] * 1.01, color="C2", ls="--", lw=1, label="+1% over baseline")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{report['model']}: candidates {', '.join(report['types'])}", fontsize=9)
    fig.tight_layout()
    fig.savefig(f"{prefix}-pareto.png")

    types = report["types"]
    # The assignment at the requested tolerance, and those matching each uniform type's KL.
    tables = [report["adapted_types"][0]] + report["kl_matched_types"]
    labels = [report["adapted"][0]["label"].replace("adapted, held-out perplexity within ", "ppl ")]
    labels += [m[1]["label"].replace("adapted, ", "") for m in report["kl_matched"]]
    picks = list(range(len(tables)))
    fig, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 2.8), dpi=80, squeeze=False)
    for ax, i in zip(axes[0], picks):
        layers = tables[i]
        bottom = [0] * len(layers)
        for j, t in enumerate(types):
            counts = [Counter(layer)[t] for layer in layers]
            ax.bar(range(len(layers)), counts, bottom=bottom, label=t, color=f"C{j}")
            bottom = [b + c for b, c in zip(bottom, counts)]
        ax.set_xlabel("layer")
        ax.set_ylabel("experts")
        ax.set_title(labels[i], fontsize=8)
        ax.set_xticks(range(len(layers)))
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{prefix}-layers.png")


if __name__ == "__main__":
    main()
