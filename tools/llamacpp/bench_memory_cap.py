#!/usr/bin/env python3
"""Decode speed of edgemoe vs llama.cpp on one stock GGUF under the same memory cap.

    sudo tools/llamacpp/bench_memory_cap.py MODEL.gguf [--expert-share 0.25] [-t 2] [-n 32] [--json out.json]

The cap is resident (non-expert) weights + KV cache + scratch + `--expert-share` of the expert
bytes, as edgemoe's budget planner computes them (`edgemoe bench --sweep` prints the split), plus
`--slack` for code and allocator. Each engine runs in its own memory cgroup with that limit
(cgroup v2 `memory.max` or v1 `memory.limit_in_bytes`), which caps page cache too, so
llama.cpp's memory map cannot keep the whole model cached; the file's pages are dropped from
the page cache before each run (posix_fadvise). llama.cpp runs `llama-bench -p 0 -n N` (mmap,
its default); edgemoe runs `edgemoe bench -p 0 -n N --memory CAP-SLACK` (io_uring, O_DIRECT),
both on the same file and thread count. Prints tokens/s of each and the ratio.

Needs root (cgroups) and, as tools/llamacpp/bench_vs_llamacpp.py, LLAMA_BIN and EDGEMOE or a build.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_llamacpp import edgemoe_bin, llama_bin, cpu_name  # noqa: E402


class Cgroup:
    """A memory cgroup (v2 or v1) with a hard limit, removed on exit."""

    def __init__(self, name: str, limit: int):
        v2 = Path("/sys/fs/cgroup/cgroup.controllers")
        if v2.exists():
            self.dir = Path("/sys/fs/cgroup") / name
            self.dir.mkdir(exist_ok=True)
            (self.dir / "memory.max").write_text(str(limit))
            (self.dir / "memory.swap.max").write_text("0") if (self.dir / "memory.swap.max").exists() else None
            self.peak_file = self.dir / "memory.peak"
        else:
            self.dir = Path("/sys/fs/cgroup/memory") / name
            self.dir.mkdir(exist_ok=True)
            (self.dir / "memory.limit_in_bytes").write_text(str(limit))
            self.peak_file = self.dir / "memory.max_usage_in_bytes"
            try:
                (self.dir / "memory.max_usage_in_bytes").write_text("0")
            except OSError:
                pass

    def run(self, argv: list[str]) -> subprocess.CompletedProcess:
        # The child joins the cgroup before exec, so everything it maps is charged there.
        return subprocess.run(
            ["sh", "-c", f'echo $$ > {self.dir}/cgroup.procs && exec "$@"', "sh", *argv],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def peak(self) -> int | None:
        try:
            return int(self.peak_file.read_text())
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.dir.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def drop_cache(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--expert-share", type=float, default=0.25)
    ap.add_argument("--slack", type=int, default=64 << 20, help="bytes for code and allocator")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-n", "--n-gen", type=int, default=32)
    ap.add_argument("--json")
    a = ap.parse_args()
    emoe, llama = edgemoe_bin(), llama_bin()

    # The budget split edgemoe plans for this file: one sweep point at the chosen share.
    out = subprocess.run([str(emoe), "bench", "-m", a.model, "-n", "1", "-t", str(a.threads),
                          "--sweep", str(a.expert_share * 100), "--sweep-backends", "io_uring",
                          "--sweep-predictors", "none", "--out", "/tmp/emoe-cap-plan"],
                         check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    plan = json.load(open("/tmp/emoe-cap-plan/sweep.json"))
    budget = plan["runs"][0]["budget"]
    cap = budget + a.slack
    print(f"{a.model}: expert bytes {plan['expert_bytes'] / 2**20:.0f} MiB; budget {budget / 2**20:.0f} MiB "
          f"(resident + KV + scratch + {a.expert_share:.0%} of experts); cgroup cap {cap / 2**20:.0f} MiB; "
          f"{a.threads} threads; {cpu_name()}")

    results = {}
    g = Cgroup("emoe-cap-llamacpp", cap)
    drop_cache(a.model)
    t0 = time.time()
    r = g.run([str(llama / "llama-bench"), "-m", a.model, "-p", "0", "-n", str(a.n_gen),
               "-t", str(a.threads), "-r", "1", "-o", "json"])
    wall = time.time() - t0
    peak = g.peak()
    g.remove()
    if r.returncode != 0:
        print(f"llama.cpp failed (exit {r.returncode}; killed by the cgroup's OOM killer?):\n{r.stderr[-2000:]}")
        results["llama.cpp"] = {"tokens_per_second": 0.0, "failed": r.returncode, "peak": peak}
    else:
        tg = [x for x in json.loads(r.stdout) if x.get("n_gen", 0) > 0][0]
        results["llama.cpp"] = {"tokens_per_second": tg["avg_ts"], "peak": peak, "wall": wall}

    g = Cgroup("emoe-cap-edgemoe", cap)
    drop_cache(a.model)
    t0 = time.time()
    r = g.run([str(emoe), "bench", "-m", a.model, "-p", "0", "-n", str(a.n_gen), "-t", str(a.threads),
               "-r", "1", "--memory", str(budget), "--backend", "io_uring", "--json"])
    wall = time.time() - t0
    peak = g.peak()
    g.remove()
    if r.returncode != 0:
        print(f"edgemoe failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
        return 1
    doc = json.loads(r.stdout)
    results["edgemoe"] = {"tokens_per_second": doc["results"][0]["avg_ts"], "peak": peak, "wall": wall}

    for k, v in results.items():
        pk = f"{v['peak'] / 2**20:.0f} MiB" if v.get("peak") else "?"
        print(f"{k:>10}: {v['tokens_per_second']:.3f} tok/s decode (cgroup peak {pk})")
    l = results["llama.cpp"]["tokens_per_second"]
    e = results["edgemoe"]["tokens_per_second"]
    print(f"edgemoe / llama.cpp: {e / l:.2f}x" if l > 0 else "llama.cpp did not finish")
    if a.json:
        json.dump({"model": a.model, "cap": cap, "budget": budget, "threads": a.threads,
                   "results": results}, open(a.json, "w"), indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
