#!/usr/bin/env python3
"""A/B of two edgemoe binaries with `edgemoe bench`, engines alternated round by round.

    tools/bench/ab_bench.py --a OLD_BIN --b NEW_BIN --rounds 4 \
        --case demo:models/demo.gguf::-p,128,-n,64,-r,3 \
        --case q8:/tmp/moe-q8.gguf::-p,64,-n,32,-r,2 \
        --case q8-25pct:/tmp/moe-q8.gguf:--memory,150M:-p,64,-n,32,-r,2

Each case is NAME:MODEL:EXTRA_ARGS:BENCH_ARGS (comma-separated arguments). Prints, per case
and test (pp/tg), each binary's mean tokens/s over the rounds and the ratio B/A.
"""
import argparse
import json
import statistics
import subprocess
import sys


def run(binary, model, extra, bench):
    cmd = [binary, "bench", "-m", model, "--json", *extra, *bench]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    return {r["test"]: r["avg_ts"] for r in doc["results"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--case", action="append", required=True)
    args = ap.parse_args()
    cases = []
    for c in args.case:
        name, model, extra, bench = c.split(":")
        split = lambda s: [x for x in s.split(",") if x]
        cases.append((name, model, split(extra), split(bench)))
    results = {}
    for r in range(args.rounds):
        for name, model, extra, bench in cases:
            order = [("a", args.a), ("b", args.b)] if r % 2 == 0 else [("b", args.b), ("a", args.a)]
            for label, binary in order:
                for test, ts in run(binary, model, extra, bench).items():
                    results.setdefault((name, test, label), []).append(ts)
        print(f"round {r + 1} done", file=sys.stderr)
    print("| case | test | A tok/s | B tok/s | B/A |")
    print("|---|---|---:|---:|---:|")
    for name, _, _, _ in cases:
        tests = sorted({t for (n, t, _) in results if n == name})
        for t in tests:
            a = statistics.mean(results[(name, t, "a")])
            b = statistics.mean(results[(name, t, "b")])
            print(f"| {name} | {t} | {a:.1f} | {b:.1f} | {b / a:.3f} |")


if __name__ == "__main__":
    main()
