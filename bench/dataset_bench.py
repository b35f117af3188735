#!/usr/bin/env python3
"""Iterating a pinned version through ``pixvcs.open`` vs reading a plain folder.

    .venv/bin/python bench/dataset_bench.py                  # 20000 images
    .venv/bin/python bench/dataset_bench.py --count 2000     # a quick run

The source images are the benchmark's generated dataset (``bench/gen_dataset.py``,
cached in ``bench/work/datasets/n<N>-s<seed>/``; generated when missing). The
first ``--count`` of them (sorted by path) are copied into a fresh pixvcs
repository under ``--work`` (kept and reused while the parameters match), added
and tagged ``v1``. Then, with a warm page cache (one untimed pass each first),
best of ``--repeats``:

- ``plain``: ``open(path, "rb").read()`` over the sorted file list of the
  repository's work tree (the same files, the same disk);
- ``pixvcs``: ``for r in pixvcs.open(repo, "v1"): r.bytes()`` — sequential,
  every object's SHA-256 verified;
- ``pixvcs prefetch``: ``for r, data in ds.iter_bytes()`` — the same reads,
  verified, with background threads reading ahead (a bounded window);
- ``plain threads``: the plain reads through the same kind of thread pool, so
  the prefetch ratio is also shown against an equally parallel baseline.

Opening (listing the version) is timed separately from iteration, against
listing the plain folder (``os.walk`` + sort). Peak RSS is printed: the dataset
object holds records (paths, oids), never image bytes. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import pixvcs  # noqa: E402
from pixvcs import Repo  # noqa: E402
from pixvcs.dataset import DEFAULT_PREFETCH  # noqa: E402

MARKER = ".dataset-bench.json"


def list_folder(root: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".pixvcs")
        out.extend(os.path.join(dirpath, f) for f in filenames if f.endswith(".jpg"))
    out.sort()
    return out


def ensure_source(count: int, seed: int) -> str:
    """A generated dataset of at least ``count`` images (reusing a bigger one)."""
    datasets = os.path.join(HERE, "work", "datasets")
    if os.path.isdir(datasets):
        for name in sorted(os.listdir(datasets)):
            parts = name.split("-s")
            if len(parts) == 2 and parts[0].startswith("n") and parts[1] == str(seed):
                if int(parts[0][1:]) >= count:
                    return os.path.join(datasets, name)
    dest = os.path.join(datasets, f"n{count}-s{seed}")
    subprocess.run(
        [
            sys.executable,
            os.path.join(HERE, "gen_dataset.py"),
            dest,
            "--count",
            str(count),
            "--seed",
            str(seed),
        ],
        check=True,
    )
    return dest


def ensure_repo(work: str, source: str, count: int) -> str:
    repo_dir = os.path.join(work, "repo")
    want = {"source": os.path.abspath(source), "count": count, "version": 1}
    marker = os.path.join(work, MARKER)
    try:
        with open(marker) as f:
            if json.load(f) == want:
                return repo_dir
    except (FileNotFoundError, ValueError):  # no or broken marker: build again
        pass
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    files = list_folder(source)[:count]
    if len(files) < count:
        sys.exit(f"{source} has only {len(files)} images")
    t = time.perf_counter()
    with Repo.init(repo_dir) as repo:
        for src in files:
            rel = os.path.relpath(src, source)
            dst = os.path.join(repo_dir, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(src, dst)
        repo.add(["."])
        repo.commit("v1", author="Bench <bench@example.org>")
        repo.create_tag("v1")
    print(f"built the repository ({count} images) in {time.perf_counter() - t:.1f} s")
    with open(marker, "w") as f:
        json.dump(want, f)
    return repo_dir


def evict(paths: list[str]) -> None:
    """Drop these files (only these) from the page cache."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def best(fn: Callable[[], int], repeats: int, cold: list[str] | None = None) -> tuple[float, int]:
    """Best time of ``repeats`` runs: warm (after an untimed pass), or with
    ``cold`` files evicted from the page cache before each run."""
    if cold is None:
        fn()  # warm the page cache and the code paths
    times, n = [], 0
    for _ in range(repeats):
        if cold is not None:
            evict(cold)
        t = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t)
    return min(times), n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=20000, help="images (default 20000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prefetch", type=int, default=DEFAULT_PREFETCH)
    ap.add_argument("--source", default=None, help="a folder of class_XX/*.jpg images")
    ap.add_argument("--work", default=os.path.join(HERE, "work", "dataset-bench"))
    ap.add_argument(
        "--cold",
        action="store_true",
        help="evict the files read from the page cache before each run "
        "(posix_fadvise DONTNEED on those files only) instead of warming it",
    )
    args = ap.parse_args()

    source = args.source or ensure_source(args.count, args.seed)
    repo_dir = ensure_repo(os.path.abspath(args.work), source, args.count)
    paths = list_folder(repo_dir)
    assert len(paths) == args.count, (len(paths), args.count)

    def plain() -> int:
        total = 0
        for p in paths:
            with open(p, "rb") as f:
                total += len(f.read())
        return total

    def read_file(p: str) -> int:
        with open(p, "rb") as f:
            return len(f.read())

    def plain_threads() -> int:
        workers = min(4, os.cpu_count() or 1, args.prefetch)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return sum(pool.map(read_file, paths, chunksize=16))

    ds = pixvcs.open(repo_dir, "v1")
    assert len(ds) == args.count

    def seq() -> int:
        return sum(len(r.bytes()) for r in ds)

    def prefetch() -> int:
        return sum(len(data) for _r, data in ds.iter_bytes(prefetch=args.prefetch))

    t_list, _ = best(lambda: len(list_folder(repo_dir)), args.repeats)
    t_open, _ = best(lambda: len(pixvcs.open(repo_dir, "v1")), args.repeats)
    objects = [ds.source.object_path(r.oid) or "" for r in ds]
    cold_plain = paths if args.cold else None
    cold_objects = objects if args.cold else None
    t_plain, nbytes = best(plain, args.repeats, cold_plain)
    t_plain_thr, _ = best(plain_threads, args.repeats, cold_plain)
    t_seq, n_seq = best(seq, args.repeats, cold_objects)
    t_pre, n_pre = best(prefetch, args.repeats, cold_objects)
    assert nbytes == n_seq == n_pre

    rate = args.count / t_plain
    print(
        f"{args.count} images, {nbytes / 1e6:.0f} MB, "
        f"{'cold (evicted) page cache' if args.cold else 'warm page cache'}, best of {args.repeats}, "
        f"{os.cpu_count()} cores"
    )
    print(f"  list plain folder (os.walk+sort)    {t_list:8.3f} s")
    print(f"  pixvcs.open (list the version)      {t_open:8.3f} s   ratio {t_open / t_list:5.2f}x")
    print(f"  plain read, sequential               {t_plain:8.3f} s   ({rate:,.0f} images/s)")
    print(
        f"  plain read, {min(4, os.cpu_count() or 1, args.prefetch)} threads"
        f"                   {t_plain_thr:8.3f} s"
    )
    print(
        f"  pixvcs r.bytes(), sequential         {t_seq:8.3f} s   "
        f"ratio {t_seq / t_plain:5.2f}x vs plain sequential"
    )
    print(
        f"  pixvcs iter_bytes(prefetch={args.prefetch:<3})     {t_pre:8.3f} s   "
        f"ratio {t_pre / t_plain:5.2f}x vs plain sequential, "
        f"{t_pre / t_plain_thr:5.2f}x vs plain threads"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
