#!/usr/bin/env python3
"""Print the median, p10 and p90 of every criterion benchmark under target/criterion.

Criterion prints a mean-based estimate; BENCHMARKS.md reports medians. This
reads each benchmark's raw samples (new/sample.json: iterations and total
time per sample), turns them into per-iteration times and prints their median
and spread, with criterion's own median estimate and its 95% interval.

Usage: python3 crates/bench/scripts/criterion_medians.py [TARGET_DIR]
"""

import json
import pathlib
import statistics
import sys


def fmt(ns):
    if ns < 1_000:
        return f"{ns:.2f} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.1f} µs"
    return f"{ns / 1_000_000:.2f} ms"


def main():
    target = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target")
    for bench in sorted((target / "criterion").glob("**/new/sample.json")):
        sample = json.loads(bench.read_text())
        per_iter = sorted(t / n for t, n in zip(sample["times"], sample["iters"]))
        deciles = statistics.quantiles(per_iter, n=10)
        estimates = json.loads((bench.parent / "estimates.json").read_text())["median"]
        interval = estimates["confidence_interval"]
        name = bench.parent.parent.relative_to(target / "criterion")
        print(
            f"{str(name):<28} median {fmt(statistics.median(per_iter)):>10}  "
            f"p10 {fmt(deciles[0]):>10}  p90 {fmt(deciles[-1]):>10}  "
            f"(criterion median {fmt(estimates['point_estimate'])}, 95% CI "
            f"{fmt(interval['lower_bound'])} – {fmt(interval['upper_bound'])}; {len(per_iter)} samples)"
        )


if __name__ == "__main__":
    main()
