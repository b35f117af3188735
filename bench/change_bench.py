"""Operations after changing 1% of the images: pixvcs against git + git-lfs on
the same change, in the same run (issue #2: time proportional to the change,
and no slower than git-lfs).

Usage::

    python bench/change_bench.py                      # 20000 and 100000 images
    python bench/change_bench.py --sizes 2000         # a smoke run

Per size it uses the two repositories ``bench/status_bench.py`` keeps under
``bench/work/status/<N>/`` (a pixvcs repository and a git + git-lfs one of the
same generated images; built untimed when absent, ``--fresh`` rebuilds them).
Each round re-encodes the same 1% of the images in both work trees
(``gen_dataset.change_images``: identical bytes in both), then times, for
each tool in turn: ``add .``, ``commit``, ``diff HEAD~1 HEAD``, ``checkout
HEAD~1``, ``checkout main`` (the steps and commands of ``run.py``'s section
4). ``--rounds`` rounds; medians. Before every timed step ``sync`` runs, so no
step pays for the previous one's dirty pages. The repositories keep the new
commits (each round is a further 1% change); both stay clean.

Results: the ``change-bench`` section of bench/results.md and
bench/results-change.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
import status_bench  # noqa: E402

SECTION = "change-bench"
STEPS = ("add", "commit", "diff", "checkout_prev", "checkout_back")


def bench_size(args: argparse.Namespace, runner: bench.Runner, size: int) -> dict[str, Any]:
    dataset = os.path.join(args.work, "datasets", f"n{size}-s{args.seed}")
    gen_dataset.generate(dataset, size, args.seed)
    pv, git = status_bench.setup(
        runner, dataset, os.path.join(args.work, "status", str(size)), args.fresh
    )
    times: dict[str, dict[str, list[float]]] = {
        tool: {s: [] for s in STEPS} for tool in ("pixvcs", "git-lfs")
    }
    changed_files = 0
    for n in range(args.rounds):
        salt = f"change-bench-{time.time_ns()}-{n}"
        changed = gen_dataset.change_images(pv, fraction=0.01, count=None, seed=n, salt=salt)
        changed_git = gen_dataset.change_images(git, fraction=0.01, count=None, seed=n, salt=salt)
        assert changed == changed_git, "the two repositories must get the same change"
        for rel in changed[:20]:  # the same bytes on both sides
            with open(os.path.join(pv, rel), "rb") as a, open(os.path.join(git, rel), "rb") as b:
                assert a.read() == b.read(), rel
        changed_files = len(changed)
        msg = f"change bench round {n}"
        for tool, cwd in (("pixvcs", pv), ("git-lfs", git)):
            for step, cmd in bench.change_commands(msg)[tool]:
                runner.settle()
                times[tool][step].append(runner.timed(cmd, cwd)["seconds"])
        print(
            f"{size} round {n}: "
            + ", ".join(
                f"{s} {times['pixvcs'][s][-1]:.2f}/{times['git-lfs'][s][-1]:.2f}" for s in STEPS
            ),
            flush=True,
        )
    clean_pv = json.loads(runner.run([bench.PIXVCS, "status", "--json"], pv))["clean"]
    clean_git = runner.run(["git", "status", "--porcelain"], git).strip() == ""
    med = {t: {s: statistics.median(v) for s, v in steps.items()} for t, steps in times.items()}
    return {
        "size": size,
        "changed_files": changed_files,
        "times": times,
        "median": med,
        "clean_after": {"pixvcs": clean_pv, "git-lfs": clean_git},
    }


def render(data: dict[str, Any]) -> str:
    runs = data["runs"]
    lines = [
        "## Operations after a 1% change: pixvcs vs git-lfs (issue #2)",
        "",
        f"Written by `bench/change_bench.py` ({data['date']}, {data['rounds']} rounds, medians, "
        "seconds, whole processes). Each round re-encodes the same 1% of the images in a "
        "pixvcs repository and a git + git-lfs repository of the same files (identical "
        "bytes), then times add, commit, diff HEAD~1 HEAD, checkout HEAD~1, checkout main for "
        "each tool, a `sync` before every step. *git-lfs / pixvcs* above 1 means pixvcs is "
        f"faster. Machine: {data['machine']}.",
        "",
        "| step | "
        + " | ".join(f"pixvcs {r['size']} | git-lfs {r['size']} | git-lfs / pixvcs" for r in runs)
        + " |",
        "|---|" + "---:|---:|---:|" * len(runs),
    ]
    for step in STEPS:
        cells = []
        for r in runs:
            p, g = r["median"]["pixvcs"][step], r["median"]["git-lfs"][step]
            cells.append(f"{p:.3f} | {g:.3f} | {g / p:.2f}x")
        lines.append(f"| {step.replace('_', ' ')} | " + " | ".join(cells) + " |")
    if len(runs) >= 2:
        small, big = runs[0], runs[-1]
        scale = big["size"] / small["size"]
        lines += [
            "",
            f"Scaling {small['size']} -> {big['size']} images ({scale:.0f}x the data and "
            f"{big['changed_files'] / max(1, small['changed_files']):.0f}x the change):",
            "",
            "| step | pixvcs | git-lfs |",
            "|---|---:|---:|",
        ]
        for step in STEPS:
            cells = [
                f"{big['median'][t][step] / small['median'][t][step]:.2f}x"
                for t in ("pixvcs", "git-lfs")
            ]
            lines.append(f"| {step.replace('_', ' ')} | " + " | ".join(cells) + " |")
    clean = all(all(r["clean_after"].values()) for r in runs)
    lines += ["", f"Both repositories clean after every run: {'yes' if clean else '**no**'}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="20000,100000")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--fresh", action="store_true", help="rebuild the repositories")
    ap.add_argument("--results-md", default=os.path.join(HERE, "results.md"))
    ap.add_argument("--out", default=os.path.join(HERE, "results-change.json"))
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    env = {k: v for k, v in bench.make_env(args.work).items() if k != "PYTHONDONTWRITEBYTECODE"}
    runner = bench.Runner(env, os.path.join(args.work, "change-bench.log"), False)
    runs = [bench_size(args, runner, int(s)) for s in args.sizes.split(",")]
    git = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    data = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rounds": args.rounds,
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}, {git}",
        "runs": runs,
    }
    with open(args.out, "w") as f:
        json.dump(data, f, indent=1)
    mdsections.splice(args.results_md, SECTION, render(data))
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
