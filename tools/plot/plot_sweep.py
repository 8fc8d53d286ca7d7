#!/usr/bin/env python3
"""Draw `edgemoe bench --sweep` results (sweep.json) as a PNG: decode tokens/s, cache hit rate
and MiB read per token against the expert budget, one line per backend and predictor,
with the physical limit (the ideal tokens/s from resident compute and raw read bandwidth).

    tools/plot/plot_sweep.py sweep/sweep.json -o docs/benchmarks/sweep.png

Needs matplotlib (tools/requirements.txt).
"""
import argparse
import json
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--title", default=None)
    a = ap.parse_args()
    rep = json.load(open(a.report))
    lines = defaultdict(list)
    for r in rep["runs"]:
        lines[(r["backend"], r["predictor"])].append(r)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ideal = {}
    for (backend, predictor), runs in sorted(lines.items()):
        runs.sort(key=lambda r: r["percent"])
        x = [r["percent"] for r in runs]
        label = f"{backend}, predictor {predictor}" if predictor != "none" else f"{backend}, no preload"
        axes[0].plot(x, [r["tokens_per_second"] for r in runs], "o-", label=label)
        axes[1].plot(x, [r["served_rate"] for r in runs], "o-", label=label)
        axes[2].plot(x, [r["bytes_read_per_token"] / 2**20 for r in runs], "o-", label=label)
        for r in runs:
            ideal.setdefault(r["percent"], []).append(1e3 / r["ideal_ms_per_token"])
    xs = sorted(ideal)
    axes[0].plot(xs, [max(ideal[x]) for x in xs], "k--", label="ideal (max of compute, I/O)")
    axes[0].axhline(1e3 / rep["resident_ms_per_token"], color="grey", ls=":",
                    label="all experts resident")
    axes[0].set_ylabel("decode tokens/s")
    axes[1].set_ylabel("fetches served from memory (hits + preload hits)")
    axes[2].set_ylabel("MiB read per token")
    for ax in axes:
        ax.set_xlabel("expert pool, % of expert bytes")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    title = a.title or (
        f"{rep['model']}: {rep['threads']} threads, {rep['kernel']}; raw read "
        f"{rep['raw_read_bandwidth'] / 2**20:.0f} MiB/s"
    )
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(a.output, dpi=110)


if __name__ == "__main__":
    main()
