#!/usr/bin/env python3
"""Issue #6: reading a pinned version, locally and from ``pixvcs serve``.

    .venv/bin/python bench/read_bench.py                   # 20000 images (+ 2000 for memory)
    .venv/bin/python bench/read_bench.py --count 2000      # a quick run

Everything is one run, so every ratio compares measurements taken minutes apart
on the same machine. The repository is the one ``bench/dataset_bench.py`` builds
(``bench/work/dataset-bench/repo``: the first ``--count`` generated images, tag
``v1``); it is pushed once to a bare repository under ``--work`` that a real
``pixvcs serve`` subprocess serves on loopback (with a read token).

Local, warm page cache, best of ``--repeats`` (one untimed pass first; the
repeats interleave the ways of reading, so outside load hits them alike):

- ``plain``: ``open(path, "rb").read()`` of the same files in the work tree,
  in path order; ``plain+sha256`` hashes them too;
- ``pixvcs bytes()``: ``for r in ds: r.bytes()`` (default ``verify="untrusted"``);
- ``pixvcs iter_bytes``: ``for r, data in ds.iter_bytes()``;
- ``pixvcs iter_bytes(verify=True)``: every object hashed (what
  ``verify="always"`` costs);
- opening: ``pixvcs.open`` against ``os.walk`` + sort of the folder.

Remote (``pixvcs.open("http://127.0.0.1:PORT/NAME", "v1", cache_dir=...)``),
each in a fresh child process so its peak RSS is its own: open (history into a
new cache), ``iter_bytes`` with the media cache empty (cold), then again
(warm, every cached object hashed); best of ``--remote-repeats`` such children,
each after a ``sync`` (bench/README.md, Caveats: writing new page-cache pages).
The server reads its objects from the page cache (warmed). Peak RSS (``VmHWM`` of the iterating process) at 2,000 and
at ``--count`` images, local and remote-cold, shows whether memory grows with
the dataset.

Writes the ``dataset-bench`` section of ``bench/results.md`` and
``bench/results-dataset.json``. Not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import dataset_bench  # noqa: E402
import mdsections  # noqa: E402
import run  # noqa: E402

import pixvcs  # noqa: E402
from pixvcs import Repo  # noqa: E402

VENV_BIN = os.path.dirname(os.path.abspath(sys.executable))
PIXVCS = shutil.which("pixvcs", path=VENV_BIN) or "pixvcs"
TOKEN = "read-bench-token-0123456789"
NAME = "bench"
SMALL = 2000


# -- the child: one iteration in a fresh process -----------------------------------------
def child(args: argparse.Namespace) -> int:
    """Open, iterate (cold, then warm when asked), print one JSON line."""
    t = time.perf_counter()
    if args.url:
        ds = pixvcs.open(args.url, "v1", cache_dir=args.cache_dir, token=TOKEN)
    else:
        ds = pixvcs.open(args.repo, "v1")
    out: dict[str, Any] = {"open": time.perf_counter() - t}
    ds = ds[: args.limit]
    rss_open = _maxrss_mb()
    passes = ["cold", "warm"] if args.warm else ["cold"]
    for name in passes:
        t = time.perf_counter()
        nbytes = sum(len(data) for _r, data in ds.iter_bytes())
        out[name] = time.perf_counter() - t
        out["bytes"] = nbytes
    out["images"] = len(ds)
    out["rss_open_mb"] = rss_open
    out["rss_peak_mb"] = _maxrss_mb()
    print(json.dumps(out))
    return 0


def _maxrss_mb() -> float:
    """This program's peak RSS since its exec (``VmHWM``): ``ru_maxrss`` would
    start from the RSS of the benchmark process that spawned it."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: an upper bound


#: The environment of the timed processes (the children and the server): pixvcs
#: as installed, its bytecode compiled (set by main(); see run.as_installed).
ENV: dict[str, str] = dict(os.environ)


def run_child(extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *extra]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=ENV)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the server --------------------------------------------------------------------------
class Server:
    """``pixvcs serve ROOT --port 0 --auth TOKENS`` as a subprocess on loopback."""

    def __init__(self, root: str, tokens: str, log: str) -> None:
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        env = dict(ENV)
        env.pop("PIXVCS_TOKEN", None)
        self.proc = subprocess.Popen(
            [PIXVCS, "serve", root, "--port", "0", "--auth", tokens],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.port = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            with open(log) as f:
                found = re.search(r"http://127\.0\.0\.1:(\d+)/", f.read())
            if found:
                self.port = int(found[1])
                break
            time.sleep(0.05)
        if not self.port:
            self.stop()
            with open(log) as f:
                sys.exit(f"pixvcs serve did not start:\n{f.read()[-2000:]}")

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{NAME}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


def ensure_served(work: str, repo_dir: str, count: int) -> str:
    """A bare copy of the benchmark repository under ``work/srv/NAME`` (pushed once)."""
    srv = os.path.join(work, "srv")
    bare = os.path.join(srv, NAME)
    marker = os.path.join(work, ".read-bench.json")
    with Repo.open(repo_dir) as repo:
        want = {"repo": repo_dir, "count": count, "commit": repo.resolve("v1")}
        try:
            with open(marker) as f:
                if json.load(f) == want:
                    return srv
        except (FileNotFoundError, ValueError):  # no or broken marker: push again
            pass
        shutil.rmtree(srv, ignore_errors=True)
        os.makedirs(srv)
        Repo.init(bare, bare=True).close()
        if "read-bench" in repo.remotes():
            repo.remove_remote("read-bench")
        repo.add_remote("read-bench", bare)
        t = time.perf_counter()
        repo.push("read-bench", tags=True)
        print(f"pushed the repository to {bare} in {time.perf_counter() - t:.1f} s")
    with open(marker, "w") as f:
        json.dump(want, f)
    return srv


def warm(paths: list[str]) -> None:
    for p in paths:
        with open(p, "rb") as f:
            f.read()


# -- the run -----------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=20000, help="images (default 20000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--remote-repeats", type=int, default=3, help="full remote reads (best of)")
    ap.add_argument("--work", default=os.path.join(HERE, "work", "read-bench"))
    ap.add_argument("--repo-work", default=os.path.join(HERE, "work", "dataset-bench"))
    ap.add_argument("--no-report", action="store_true", help="print only")
    # the child process
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--repo", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    global ENV
    ENV = run.as_installed(dict(os.environ))

    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    source = dataset_bench.ensure_source(args.count, args.seed)
    repo_dir = dataset_bench.ensure_repo(os.path.abspath(args.repo_work), source, args.count)
    paths = dataset_bench.list_folder(repo_dir)
    assert len(paths) == args.count, (len(paths), args.count)
    srv = ensure_served(work, repo_dir, args.count)

    ds = pixvcs.open(repo_dir, "v1")
    assert len(ds) == args.count
    served = [
        os.path.join(srv, NAME, "lfs", "objects", o[:2], o[2:4], o) for o in (r.oid for r in ds)
    ]

    def plain() -> int:
        total = 0
        for p in paths:
            with open(p, "rb") as f:
                total += len(f.read())
        return total

    def plain_sha() -> int:
        total = 0
        for p in paths:
            with open(p, "rb") as f:
                data = f.read()
            hashlib.sha256(data).digest()
            total += len(data)
        return total

    def seq() -> int:
        return sum(len(r.bytes()) for r in ds)

    def it() -> int:
        return sum(len(d) for _r, d in ds.iter_bytes())

    def it_verify() -> int:
        return sum(len(d) for _r, d in ds.iter_bytes(verify=True))

    local: dict[str, float] = {}
    runs: list[tuple[str, Callable[[], int]]] = [
        ("plain", plain),
        ("plain_sha256", plain_sha),
        ("bytes", seq),
        ("iter_bytes", it),
        ("iter_bytes_verify", it_verify),
    ]
    # interleaved: every repeat times each way once, so load from elsewhere on a
    # shared machine lands on all of them alike; best of the repeats
    sizes = {name: fn() for name, fn in runs}  # warm the page cache and the code paths
    nbytes = sizes["plain"]
    assert set(sizes.values()) == {nbytes}, sizes
    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    for _ in range(args.repeats):
        for name, fn in runs:
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    for name, _ in runs:
        local[name] = min(times[name])
        print(f"  local {name:<20} {local[name]:7.3f} s")
    local["list_folder"], _ = dataset_bench.best(
        lambda: len(dataset_bench.list_folder(repo_dir)), args.repeats
    )
    local["open"], _ = dataset_bench.best(lambda: len(pixvcs.open(repo_dir, "v1")), args.repeats)
    print(f"  local open {local['open']:.3f} s, os.walk {local['list_folder']:.3f} s")

    # -- memory, local: a fresh process per size
    mem: dict[str, dict[str, float]] = {"local": {}, "remote_cold": {}, "after_open": {}}
    for n in sorted({min(SMALL, args.count), args.count}):
        got = run_child(["--repo", repo_dir, "--limit", str(n)])
        mem["local"][str(n)] = got["rss_peak_mb"]
        mem["after_open"][str(n)] = got["rss_open_mb"]
        print(f"  local child {n}: {got['cold']:.3f} s, peak RSS {got['rss_peak_mb']:.0f} MB")

    # -- remote
    tokens = os.path.join(work, "tokens")
    with open(tokens, "w") as f:
        f.write(f"{TOKEN} read\n")
    warm(served)
    server = Server(srv, tokens, os.path.join(work, "serve.log"))
    full: list[dict[str, Any]] = []
    try:
        # the full read several times, best of them as for the local reads: a cold
        # read writes the whole dataset into new page-cache pages, whose cost
        # varies up to twofold from run to run on this VM (README.md, Caveats);
        # then the small read, for memory. Each after a `sync`.
        plan = [args.count] * args.remote_repeats + [min(SMALL, args.count)]
        for i, n in enumerate(plan):
            cache = tempfile.mkdtemp(prefix="cache-", dir=work)
            try:
                os.sync()
                extra = ["--url", server.url(), "--cache-dir", cache, "--limit", str(n)]
                got = run_child([*extra, "--warm"] if i < args.remote_repeats else extra)
            finally:
                shutil.rmtree(cache, ignore_errors=True)
            rss = mem["remote_cold"].get(str(n), 0.0)
            mem["remote_cold"][str(n)] = max(rss, got["rss_peak_mb"])
            if i < args.remote_repeats:
                assert got["bytes"] == nbytes
                full.append(got)
            print(
                f"  remote child {n}: open {got['open']:.2f} s, cold {got['cold']:.2f} s"
                + (f", warm {got['warm']:.2f} s" if "warm" in got else "")
                + f", peak RSS {got['rss_peak_mb']:.0f} MB"
            )
    finally:
        server.stop()
    remote: dict[str, Any] = {k: min(g[k] for g in full) for k in ("open", "cold", "warm")}
    remote["runs"] = {k: [round(g[k], 3) for g in full] for k in ("open", "cold", "warm")}

    ratios = {
        "local_bytes_vs_plain": local["bytes"] / local["plain"],
        "local_iter_bytes_vs_plain": local["iter_bytes"] / local["plain"],
        "local_verify_vs_plain": local["iter_bytes_verify"] / local["plain"],
        "local_verify_vs_plain_sha256": local["iter_bytes_verify"] / local["plain_sha256"],
        "open_vs_list_folder": local["open"] / local["list_folder"],
        "remote_cold_vs_local": remote["cold"] / local["iter_bytes"],
        "remote_warm_vs_local": remote["warm"] / local["iter_bytes"],
        "remote_cold_vs_local_verified": remote["cold"] / local["iter_bytes_verify"],
    }
    small, big = str(min(SMALL, args.count)), str(args.count)
    data = {
        "issue": 6,
        "images": args.count,
        "bytes": nbytes,
        "repeats": args.repeats,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "local_seconds": local,
        "remote_seconds": {k: remote[k] for k in ("open", "cold", "warm")},
        "remote_runs": remote["runs"],
        "remote_repeats": args.remote_repeats,
        "peak_rss_mb": mem,
        "ratios": ratios,
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    for k, v in ratios.items():
        print(f"  {k:<32} {v:6.2f}x")
    if args.no_report:
        return 0
    with open(os.path.join(HERE, "results-dataset.json"), "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    mdsections.splice(os.path.join(HERE, "results.md"), "dataset-bench", render(data, small, big))
    return 0


def render(d: dict[str, Any], small: str, big: str) -> str:
    n = d["images"]
    loc, rem, r, mem = d["local_seconds"], d["remote_seconds"], d["ratios"], d["peak_rss_mb"]

    def rate(t: float) -> str:
        return f"{n / t:,.0f}"

    lines = [
        "## Reading a pinned version (issue #6)",
        "",
        f"`bench/read_bench.py`: {n:,} images ({d['bytes'] / 1e6:.0f} MB), "
        f"{d['machine']['cores']} cores, {d['when']}. Local times: best of {d['repeats']}, "
        "warm page cache. Remote: `pixvcs serve` as a subprocess on loopback, a fresh "
        f"cache directory, each in a fresh child process after a `sync`; best of "
        f"{d['remote_repeats']} runs (cold: {', '.join(f'{t:.2f}' for t in d['remote_runs']['cold'])} s; "
        f"warm: {', '.join(f'{t:.2f}' for t in d['remote_runs']['warm'])} s).",
        "",
        "| read | seconds | images/s | vs plain |",
        "|------|--------:|---------:|---------:|",
        f"| plain folder, `open().read()` | {loc['plain']:.3f} | {rate(loc['plain'])} | 1.00x |",
        f"| plain folder + SHA-256 | {loc['plain_sha256']:.3f} | {rate(loc['plain_sha256'])} "
        f"| {loc['plain_sha256'] / loc['plain']:.2f}x |",
        f"| pixvcs `r.bytes()` (default verify) | {loc['bytes']:.3f} | {rate(loc['bytes'])} "
        f"| {r['local_bytes_vs_plain']:.2f}x |",
        f"| pixvcs `iter_bytes()` (default verify) | {loc['iter_bytes']:.3f} "
        f"| {rate(loc['iter_bytes'])} | {r['local_iter_bytes_vs_plain']:.2f}x |",
        f"| pixvcs `iter_bytes(verify=True)` | {loc['iter_bytes_verify']:.3f} "
        f"| {rate(loc['iter_bytes_verify'])} | {r['local_verify_vs_plain']:.2f}x |",
        f"| remote, cold cache (`iter_bytes()`) | {rem['cold']:.3f} | {rate(rem['cold'])} "
        f"| {rem['cold'] / loc['plain']:.2f}x |",
        f"| remote, warm cache (`iter_bytes()`) | {rem['warm']:.3f} | {rate(rem['warm'])} "
        f"| {rem['warm'] / loc['plain']:.2f}x |",
        "",
        f"- Targets: local within 1.2x of plain: **{r['local_iter_bytes_vs_plain']:.2f}x** "
        f"(`iter_bytes`), **{r['local_bytes_vs_plain']:.2f}x** (`bytes()`); remote cold within "
        f"3x of local: **{r['remote_cold_vs_local']:.2f}x** (warm: "
        f"{r['remote_warm_vs_local']:.2f}x). Like for like (a remote read hashes every "
        f"object; so does `iter_bytes(verify=True)`): cold "
        f"**{r['remote_cold_vs_local_verified']:.2f}x** the local verified read.",
        "- The cold read: the server streams each object as stored, up to 1000 per "
        "request (pixvcs-multi; after the first Batch API answer the client sends its "
        "downloads straight to the href it gave), one request at a time; the client "
        "hashes each object once on arrival, appends it to a pack of the cache "
        '(docs/format.md, "The reader\'s media cache") and hands the verified bytes to '
        f"the loop from memory. Writing {d['bytes'] / 1e6:.0f} MB into new page-cache "
        "pages is part of it.",
        f"- Verification: hashing every object costs {r['local_verify_vs_plain']:.2f}x plain "
        f"({r['local_verify_vs_plain_sha256']:.2f}x plain + SHA-256); the default hashes "
        "remote/cached objects always and local objects only when writable or hardlinked.",
        f"- Opening (listing the version): {loc['open']:.3f} s vs `os.walk`+sort "
        f"{loc['list_folder']:.3f} s ({r['open_vs_list_folder']:.1f}x); remote open (history "
        f"into an empty cache): {rem['open']:.2f} s.",
        f"- Peak RSS of the iterating process, {small} vs {big} images: local "
        f"{mem['local'][small]:.0f} / {mem['local'][big]:.0f} MB, remote cold "
        f"{mem['remote_cold'][small]:.0f} / {mem['remote_cold'][big]:.0f} MB. Both iterate "
        f"a slice of one opened {n:,}-image version, so the difference is what reading "
        "more images costs: image bytes are held only within the read-ahead window. "
        f"After opening, before reading: {mem['after_open'][big]:.0f} MB.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
