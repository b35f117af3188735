#!/usr/bin/env python3
"""Near-duplicate search at dataset scale (a benchmark, not a test).

    .venv/bin/python bench/neardup_bench.py [--n 1000000] [--queries 10000] [--distance 6]

Uniformly random 64-bit hashes: 10,000 new hashes queried against 1,000,000
existing ones, then all pairs within the 1,000,000. Also times brute force on a
slice and extrapolates, for scale. Results are printed (and, with --json, as
one JSON object); docs/ci.md quotes a run.

Random hashes are the easy case for bucket sizes; real perceptual hashes
cluster, which makes groups bigger and candidates more numerous (see docs/ci.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from pixvcs import neardup


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--distance", type=int, default=6)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--md", default=None, help="put a section into this results.md (e.g. bench/results.md)"
    )
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    existing = rng.integers(0, 2**64 - 1, args.n, dtype=np.uint64, endpoint=True)
    new = rng.integers(0, 2**64 - 1, args.queries, dtype=np.uint64, endpoint=True)
    # plant known near-duplicates so the searches have something to find
    planted = min(100, args.queries)
    flips = rng.integers(0, 64, (planted, args.distance), dtype=np.uint64)
    for i in range(planted):
        x = existing[i * 7]
        for b in flips[i]:
            x ^= np.uint64(1) << b
        new[i] = x
    d = args.distance

    t = time.perf_counter()
    hits = neardup.query(existing, new, d)
    t_query = time.perf_counter() - t
    found = {(i, j) for i, j, _ in hits}
    recall = sum((i, i * 7) in found for i in range(planted)) / planted

    t = time.perf_counter()
    pairs = neardup.find_pairs(existing, d)
    t_pairs = time.perf_counter() - t

    # classic multi-index hashing (k = d + 1 blocks, one exact block), for comparison
    classic = neardup.Plan(d, neardup._blocks(d + 1), 1, 0.0)
    t = time.perf_counter()
    neardup.query(existing, new, d, plan=classic)
    t_classic = time.perf_counter() - t

    sample = 2_000
    t = time.perf_counter()
    for i in range(sample):
        np.bitwise_count(existing ^ new[i])
    t_brute_query = (time.perf_counter() - t) * args.queries / sample

    qplan = neardup.choose_blocks(args.n, args.queries, d)
    pplan = neardup.choose_blocks(args.n, None, d)
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}",
        "n": args.n,
        "queries": args.queries,
        "distance": d,
        "query_seconds": round(t_query, 2),
        "query_matches": len(hits),
        "query_recall_on_planted": recall,
        "query_plan": f"{len(qplan.blocks)} blocks, keys of {qplan.per_key} ({len(qplan.keys)} keys)",
        "query_seconds_classic_mih": round(t_classic, 2),
        "pairs_seconds": round(t_pairs, 2),
        "pairs_found": len(pairs),
        "pairs_plan": f"{len(pplan.blocks)} blocks, keys of {pplan.per_key} ({len(pplan.keys)} keys)",
        "brute_force_query_seconds_estimate": round(t_brute_query, 1),
        "brute_force_pairs_seconds_estimate": round(t_brute_query * args.n / args.queries / 2, 0),
    }
    if args.md:
        write_section(args.md, out)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:36} {v}")
    return 0


def write_section(md: str, out: dict[str, object]) -> None:
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from mdsections import splice

    lines = [
        "## Near-duplicate search at scale (issue #5)",
        "",
        f"`bench/neardup_bench.py --md bench/results.md`, run {time.strftime('%Y-%m-%d %H:%M')} "
        f"on {out['machine']}. Uniformly random 64-bit hashes, distance <= {out['distance']}, "
        "100 planted near-duplicates. Brute force is timed on a 2,000-query slice and "
        "extrapolated.",
        "",
        "| search | pixvcs (generalised MIH) | brute force (numpy popcount) | speed-up |",
        "|---|---:|---:|---:|",
        f"| {out['queries']:,} new against {out['n']:,} existing | {out['query_seconds']} s "
        f"({out['query_plan']}) | {out['brute_force_query_seconds_estimate']} s | "
        f"{float(out['brute_force_query_seconds_estimate']) / max(float(out['query_seconds']), 1e-9):.0f}x |",
        f"| all pairs within {out['n']:,} | {out['pairs_seconds']} s ({out['pairs_plan']}) | "
        f"{out['brute_force_pairs_seconds_estimate']} s | "
        f"{float(out['brute_force_pairs_seconds_estimate']) / max(float(out['pairs_seconds']), 1e-9):.0f}x |",
        "",
        f"Recall on the planted pairs: {out['query_recall_on_planted']}; classic MIH "
        f"(d+1 blocks) for the same query: {out['query_seconds_classic_mih']} s. "
        "Detection quality on real photographs: bench/quality.md and docs/ci.md.",
    ]
    splice(md, "neardup-bench", "\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
