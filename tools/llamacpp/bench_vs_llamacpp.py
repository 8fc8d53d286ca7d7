#!/usr/bin/env python3
"""Prompt and decode speed of edgemoe vs llama.cpp on one GGUF file, same threads.

    tools/llamacpp/bench_vs_llamacpp.py MODEL.gguf [-t 1,2] [-p 512] [-n 128] [-r 5] [--json out.json]

Runs llama.cpp's `llama-bench -m MODEL -t T -p P -n N -r R -o json` and
`edgemoe bench -m MODEL -t T -p P -n N -r R --json` (the same tests: pp P evaluates P random
tokens as one batch, tg N decodes N random tokens one at a time, each after a warm-up) and prints
tokens/s of both (mean ± standard deviation over the repetitions) and edgemoe / llama.cpp, of
the means and of each program's fastest repetition (steadier on a machine shared with other work). The file must be a stock llama.cpp GGUF (llama.cpp
cannot read edgemoe's packed layout: convert one with tools/fixtures/packed_to_stock.py).

Environment: LLAMA_BIN (directory with llama-bench; default: what tools/llamacpp/build_llamacpp.sh
prints), EDGEMOE (the edgemoe binary; default: `cargo build --release` in this repository and
$CARGO_TARGET_DIR/release/edgemoe). Needs only the Python standard library.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def llama_bin() -> Path:
    if os.environ.get("LLAMA_BIN"):
        return Path(os.environ["LLAMA_BIN"])
    out = subprocess.run([str(REPO / "tools/llamacpp/build_llamacpp.sh")], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def edgemoe_bin() -> Path:
    if os.environ.get("EDGEMOE"):
        return Path(os.environ["EDGEMOE"])
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "release/edgemoe"


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("-t", "--threads", default="1", help="comma-separated thread counts")
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-r", "--repetitions", type=int, default=5)
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args()

    bench = llama_bin() / "llama-bench"
    edgemoe = edgemoe_bin()
    rows = []
    for t in [int(x) for x in a.threads.split(",")]:
        common = ["-m", a.model, "-t", str(t), "-p", str(a.n_prompt), "-n", str(a.n_gen), "-r", str(a.repetitions)]
        ll = json.loads(subprocess.run([str(bench), *common, "-o", "json"], check=True, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, text=True).stdout)
        em = json.loads(subprocess.run([str(edgemoe), "bench", *common, "--json"], check=True,
                                       stdout=subprocess.PIPE, text=True).stdout)
        for test, n in (("pp", a.n_prompt), ("tg", a.n_gen)):
            if n == 0:
                continue
            l = next(r for r in ll if (r["n_prompt"], r["n_gen"]) == ((n, 0) if test == "pp" else (0, n)))
            e = next(r for r in em["results"] if r["test"] == f"{test}{n}")
            rows.append({
                "threads": t, "test": f"{test}{n}",
                "llama_cpp_ts": l["avg_ts"], "llama_cpp_stddev": l["stddev_ts"],
                "edgemoe_ts": e["avg_ts"], "edgemoe_stddev": e["stddev_ts"],
                "ratio": e["avg_ts"] / l["avg_ts"],
                "llama_cpp_best_ts": max(l.get("samples_ts") or [l["avg_ts"]]),
                "edgemoe_best_ts": max(e["samples_ts"]),
                "llama_cpp_model_type": l.get("model_type"), "llama_cpp_build": l.get("build_commit"),
            })
    print(f"model {a.model} ({os.path.getsize(a.model) / 2**20:.1f} MiB), CPU {cpu_name()}, "
          f"{os.cpu_count()} CPUs; repetitions {a.repetitions}")
    if rows and rows[0]["llama_cpp_model_type"]:
        print(f"llama.cpp sees: {rows[0]['llama_cpp_model_type']} (build {rows[0]['llama_cpp_build']})")
    print(f"{'threads':>7} {'test':>7} {'llama.cpp tok/s':>18} {'edgemoe tok/s':>18} {'edgemoe/llama.cpp':>18}"
          f" {'best-run ratio':>15}")
    for r in rows:
        r["best_ratio"] = r["edgemoe_best_ts"] / r["llama_cpp_best_ts"]
        print(f"{r['threads']:>7} {r['test']:>7} {r['llama_cpp_ts']:>10.1f} ± {r['llama_cpp_stddev']:<5.1f} "
              f"{r['edgemoe_ts']:>10.1f} ± {r['edgemoe_stddev']:<5.1f} {r['ratio']:>18.3f} {r['best_ratio']:>15.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"model": a.model, "cpu": cpu_name(), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
