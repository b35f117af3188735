"""``pixvcs status`` with nothing changed, against ``git status`` on the same files
(issue #2: under 1 s and within 5x of git at 100,000 files).

Usage::

    python bench/status_bench.py                          # 20000 and 100000 images
    python bench/status_bench.py --sizes 2000             # a smoke run
    python bench/status_bench.py --baseline /tmp/old      # also an older pixvcs, same run
    python bench/status_bench.py --report-only            # re-render from the JSON

Per size, on the cached dataset ``bench/work/datasets/n<N>-s<seed>`` (made by
``gen_dataset.py``, shared with ``run.py``), the untimed set-up builds two
repositories of the same files, as ``run.py`` does: ``pixvcs init/add/commit``
and ``git init`` + ``git lfs track '*.jpg'`` + ``git add`` + ``git commit``.
They are kept under ``bench/work/status/<N>/`` and reused by later runs
(``--fresh`` rebuilds them).

Then, after two untimed runs of each command (the first may refresh racily
clean stat entries, and writes Python's bytecode cache), ``--repeats`` rounds
each time ``pixvcs status`` and ``git status`` back to back, so both see the
same machine load; the report gives medians and the ratio of the medians.
Timed commands run without ``PYTHONDONTWRITEBYTECODE`` (an installed package
has its bytecode compiled; without it every run would also compile pixvcs).

``--baseline DIR`` also times ``pixvcs status`` from an older source tree (a
directory holding a ``pixvcs`` package, e.g. ``git archive REV pixvcs | tar -x
-C DIR``), started exactly like the console script, in the same rounds.

A phase breakdown (``python -c pass``, imports, index read, work-tree scan,
comparison) comes from running ``status_phases`` below in a fresh process per
round. Writes ``results-status.json`` into ``--out`` and splices a section into
``--results-md`` (default ``bench/results.md``) between its marker comments.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gen_dataset  # noqa: E402
import mdsections  # noqa: E402
import run as bench  # noqa: E402

PY = sys.executable
SECTION = "status-bench"

#: How the console script starts pixvcs (``.venv/bin/pixvcs``), for a baseline tree.
CONSOLE = "import sys; from pixvcs.cli import main; sys.argv[0] = 'pixvcs'; sys.exit(main())"

#: Run in a fresh interpreter: the phases of a clean status, in milliseconds.
PHASES = r"""
import json, sys, time
t0 = time.perf_counter()
import click
t1 = time.perf_counter()
import pixvcs.cli
t2 = time.perf_counter()
from pixvcs import staging
from pixvcs.repo import Repo
t3 = time.perf_counter()
repo = Repo.open(sys.argv[1])
index = repo.index
t4 = time.perf_counter()
cache = index.stat_rows()
t5 = time.perf_counter()
ignore = staging.ignore_filter(repo)
rows = staging.scan(repo.root, "", staging.dir_skipper(ignore, (c[0] for c in cache)))
t6 = time.perf_counter()
clean = len(rows) == len(cache) and cache.issuperset(rows)
t7 = time.perf_counter()
print(json.dumps({
    "import click": (t1 - t0) * 1e3,
    "import pixvcs.cli (without click)": (t2 - t1) * 1e3,
    "import pixvcs.repo + staging": (t3 - t2) * 1e3,
    "open repository and index": (t4 - t3) * 1e3,
    "index read (SQLite -> set of rows)": (t5 - t4) * 1e3,
    "work-tree scan (scandir + fstatat)": (t6 - t5) * 1e3,
    "comparison (set)": (t7 - t6) * 1e3,
    "clean": clean,
    "files": len(rows),
}))
"""


def timed(cmd: list[str], cwd: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def setup(runner: bench.Runner, dataset: str, size_dir: str, fresh: bool) -> tuple[str, str]:
    """The pixvcs and the git + git-lfs repository of ``dataset`` (untimed)."""
    pv, git = os.path.join(size_dir, "pixvcs"), os.path.join(size_dir, "git-lfs")
    ready = os.path.join(size_dir, "ready")
    if os.path.exists(ready) and not fresh:
        return pv, git
    bench.rmtree(size_dir)
    os.makedirs(size_dir)
    msg = "status bench"
    bench.copy_dataset(dataset, pv)
    for cmd in (["init", "."], ["add", "."], ["commit", "-m", msg]):
        runner.run([bench.PIXVCS, *cmd], pv)
    bench.copy_dataset(dataset, git)
    runner.run("git init -q -b main && git lfs install --local && git lfs track '*.jpg'", git)
    runner.run(["git", "add", "."], git)
    runner.run(["git", "commit", "-q", "-m", msg], git)
    with open(ready, "w") as f:
        f.write("ok\n")
    return pv, git


def bench_size(args: argparse.Namespace, runner: bench.Runner, size: int) -> dict[str, Any]:
    dataset = os.path.join(args.work, "datasets", f"n{size}-s{args.seed}")
    gen_dataset.generate(dataset, size, args.seed)
    pv, git = setup(runner, dataset, os.path.join(args.work, "status", str(size)), args.fresh)
    env = {k: v for k, v in runner.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cmds: dict[str, tuple[list[str], str, dict[str, str]]] = {
        "pixvcs": ([bench.PIXVCS, "status"], pv, env),
        "git": (["git", "status"], git, env),
    }
    if args.baseline:
        base_env = dict(env, PYTHONPATH=os.path.abspath(args.baseline))
        cmds["baseline"] = ([PY, "-c", CONSOLE, "status"], pv, base_env)
    out = subprocess.run(
        [bench.PIXVCS, "status"], cwd=pv, env=env, capture_output=True, text=True, check=True
    ).stdout
    clean = "nothing to commit" in out
    for cmd, cwd, e in cmds.values():  # untimed: racy refresh, bytecode cache, page cache
        for _ in range(2):
            timed(cmd, cwd, e)
    times: dict[str, list[float]] = {name: [] for name in cmds}
    phases: list[dict[str, Any]] = []
    startup: list[float] = []
    load = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for name, (cmd, cwd, e) in cmds.items():
            times[name].append(timed(cmd, cwd, e))
        startup.append(timed([PY, "-c", "pass"], pv, env))
        p = subprocess.run(
            [PY, "-c", PHASES, pv], env=env, capture_output=True, text=True, check=True
        )
        phases.append(json.loads(p.stdout))
    load.append(os.getloadavg()[0])
    med = {name: statistics.median(ts) for name, ts in times.items()}
    phase_med = {
        k: statistics.median(float(p[k]) for p in phases)
        for k, v in phases[0].items()
        if not isinstance(v, bool) and k != "files"
    }
    phase_med = {"python -c pass (interpreter start-up)": statistics.median(startup) * 1e3} | (
        phase_med
    )
    result = {
        "size": size,
        "clean": clean,
        "times": times,
        "median": med,
        "ratio": med["pixvcs"] / med["git"],
        "phases_ms": phase_med,
        "loadavg_1m": load,
    }
    if "baseline" in med:
        result["baseline_ratio"] = med["baseline"] / med["git"]
    print(
        f"{size}: pixvcs {med['pixvcs']:.3f}s git {med['git']:.3f}s "
        f"ratio {result['ratio']:.2f}"
        + (
            f" (baseline {med['baseline']:.3f}s, {result['baseline_ratio']:.2f})"
            if args.baseline
            else ""
        ),
        flush=True,
    )
    return result


def render(data: dict[str, Any]) -> str:
    runs = data["runs"]
    base = any("baseline" in r["median"] for r in runs)
    lines = [
        "## Status with nothing changed: pixvcs vs git (issue #2)",
        "",
        f"Written by `bench/status_bench.py` ({data['date']}). Target: `pixvcs status` "
        "within 5x of `git status`, and under 1 s, at 100,000 files (issue #2). Each "
        "size: a pixvcs repository and a git + git-lfs repository of the same generated images, both committed; two "
        f"untimed runs of each, then {data['repeats']} rounds timing `pixvcs status` and "
        "`git status` back to back (same machine load); medians, seconds, whole processes "
        "(interpreter start-up included). Python's bytecode cache is written, as for an "
        f"installed package. Machine: {data['machine']}.",
        "",
    ]
    head = "| files | pixvcs status | git status | pixvcs / git |"
    rule = "|---:|---:|---:|---:|"
    if base:
        head += f" {data['baseline_label']} | before / git |"
        rule += "---:|---:|"
    lines += [head, rule]
    for r in runs:
        m = r["median"]
        row = f"| {r['size']} | {m['pixvcs']:.3f} | {m['git']:.3f} | **{r['ratio']:.2f}x** |"
        if base:
            row += f" {m['baseline']:.3f} | {r['baseline_ratio']:.2f}x |"
        lines.append(row)
    lines += [
        "",
        "Where a clean `pixvcs status` spends its time (median ms of the same rounds, "
        "measured in a fresh interpreter; the repository's stat cache is compared as "
        "sets of `(path, size, mtime_ns, ino, x-bit)` tuples):",
        "",
        "| phase | " + " | ".join(f"{r['size']} files" for r in runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    for k in runs[0]["phases_ms"]:
        lines.append(f"| {k} | " + " | ".join(f"{r['phases_ms'][k]:.1f}" for r in runs) + " |")
    lines += [
        "",
        "1-minute load average before/after each size: "
        + ", ".join(f"{r['size']}: {r['loadavg_1m'][0]:.1f}/{r['loadavg_1m'][1]:.1f}" for r in runs)
        + f". {data.get('note') or ''}".rstrip(),
        "",
        "Every size reported `nothing to commit` before timing: "
        + ", ".join(f"{r['size']}: {r['clean']}" for r in runs)
        + ".",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="20000,100000")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--out", default=HERE, help="where results-status.json goes")
    ap.add_argument("--results-md", default=os.path.join(HERE, "results.md"))
    ap.add_argument("--baseline", default=None, help="a source tree of an older pixvcs")
    ap.add_argument("--baseline-label", default="before")
    ap.add_argument("--fresh", action="store_true", help="rebuild the repositories")
    ap.add_argument("--note", default="", help="a sentence for the report")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    json_path = os.path.join(args.out, "results-status.json")
    if not args.report_only:
        args.work = os.path.abspath(args.work)
        os.makedirs(args.work, exist_ok=True)
        env = bench.make_env(args.work)
        runner = bench.Runner(env, os.path.join(args.work, "status-bench.log"), False)
        runs = [bench_size(args, runner, int(s)) for s in args.sizes.split(",")]
        data = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, "
            + subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
            "repeats": args.repeats,
            "baseline_label": args.baseline_label,
            "note": args.note,
            "runs": runs,
        }
        with open(json_path, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
    with open(json_path) as f:
        data = json.load(f)
    mdsections.splice(args.results_md, SECTION, render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
