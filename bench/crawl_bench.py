"""Crawl throughput: images per second from a loopback HTTP server, pixvcs against
img2dataset on the same URL list in the same run.

The server (a separate process: ThreadingHTTPServer, HTTP/1.1 keep-alive,
TCP_NODELAY) serves the first N images of the generated benchmark dataset
(bench/gen_dataset.py: 10-60 KB JPEGs). Without TCP_NODELAY every response sat
~44 ms behind Nagle's algorithm and the client's delayed ACK (measured: 44.3 ms a
request on one connection, 0.5 ms with it), so runs before 2026-11-27 measured
connections in flight / 44 ms, not the tools. Measured, each from a cold start of
its command:

* ``pixvcs crawl --urls`` in-process: fetch, validate (full decode), SHA-256,
  perceptual hash, store (durably), deduplicate, commit on a crawl branch;
* ``pixvcs crawl --broker`` with 2 ``pixvcs worker`` processes (Celery over a
  real redis-server started here): the same work, plus the chord; the workers
  are started (and ready) before the clock starts;
* ``img2dataset`` (from PyPI, in its own venv: bench/work/i2d-venv), output
  format ``files``, ``--resize_mode no``, ``--disable_all_reencoding``: fetch and
  write files (it decodes nothing when it does not re-encode), with 2 processes.

Politeness is switched off for the measurement (``--rate 0``, ``--per-host`` twice
the threads: no pace, and a per-host limit that never binds): the server is local.
Every tool gets the same thread budget: 16 per process. On this loopback server
all three tools ran faster with 16 than with 32 (10,000 URLs, alternated runs:
img2dataset 12.0-12.4 s against 12.6-12.9 s; pixvcs in-process 9.9-10.0 s against
10.9-11.6 s; 2 Celery workers 12.2-12.7 s against 14.3-17.5 s): with a server this
close, threads wait on each other's interpreter lock, not on the network.

Usage::

    python bench/crawl_bench.py --sizes 1000,10000          # -> bench/results-crawl.json
    python bench/crawl_bench.py --report-only                # re-render the results.md section
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work"
I2D_VENV = WORK / "i2d-venv"
THREADS = 16
TOOLS = ("img2dataset", "pixvcs_inprocess", "pixvcs_workers2")

sys.path.insert(0, str(HERE))
import run as bench_run  # noqa: E402

SERVER = r"""
import sys, functools
from http.server import ThreadingHTTPServer, SimpleHTTPRequestHandler
class H(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as production servers set it (nginx: tcp_nodelay on): without it the
    # body waits behind the headers for the client's delayed ACK, 40 ms a response
    disable_nagle_algorithm = True
    def log_message(self, *a): pass
root, port = sys.argv[1], int(sys.argv[2])
srv = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(H, directory=root))
srv.daemon_threads = True
srv.request_queue_size = 256
srv.serve_forever()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def dataset(n: int) -> Path:
    """The first n images of the benchmark dataset (generated once, cached)."""
    sys.path.insert(0, str(HERE))
    import gen_dataset

    count = 2000 if n <= 2000 else 20000 if n <= 20000 else 100000
    src = WORK / "datasets" / f"n{count}-s1"  # shared with bench/run.py
    if not gen_dataset.is_complete(str(src), count, 1):
        gen_dataset.generate(str(src), count, 1)
    return src


def url_list(src: Path, n: int, origin: str, dest: Path) -> int:
    sys.path.insert(0, str(HERE))
    import gen_dataset

    paths = gen_dataset.list_images(str(src))[:n]
    dest.write_text("".join(f"{origin}/{p}\n" for p in paths))
    return sum(os.path.getsize(src / p) for p in paths)


def settle() -> None:
    """Before a timed crawl: no deletion in the last few minutes and no dirty pages
    pending (bench/README.md, Caveats: files created right after a big deletion cost
    several times more, and a crawl creates thousands)."""
    bench_run.TRASH.before_timed_step(str(WORK))
    os.sync()


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return took


def pixvcs(*args: str) -> list[str]:
    return [sys.executable, "-m", "pixvcs.cli", *args]


# politeness off: no pace, and a per-host limit (shared by all workers of a job, through
# Redis) that never binds: every thread of both worker processes may be in flight
CRAWL_FLAGS = ["--rate", "0", "--per-host", str(2 * THREADS), "--workers", str(THREADS), "--json"]


def bench_inprocess(work: Path, urls: Path, tag: str = "") -> float:
    repo = work / f"inproc{tag}"
    run(pixvcs("init", str(repo)))
    settle()
    return run(
        pixvcs("-C", str(repo), "crawl", "--urls", str(urls), "--label", "web", *CRAWL_FLAGS)
    )


def bench_workers(work: Path, urls: Path, n_workers: int = 2, tag: str = "") -> float:
    repo = work / f"celery{tag}"
    run(pixvcs("init", str(repo)))
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(work)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    workers: list[subprocess.Popen[bytes]] = []
    broker = f"redis://127.0.0.1:{port}/0"
    try:
        wait_port(port)
        for i in range(n_workers):
            log = open(work / f"worker{tag}-{i}.log", "wb")  # noqa: SIM115
            workers.append(
                subprocess.Popen(
                    pixvcs(
                        "-C",
                        str(repo),
                        "worker",
                        "--broker",
                        broker,
                        "--concurrency",
                        "1",
                        "--loglevel",
                        "WARNING",
                    ),
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )  # fmt: skip
            )
        sys.path.insert(0, str(ROOT))
        from pixvcs import Repo
        from pixvcs.tasks import _workers_serving, make_app, queue_for

        app = make_app(broker)
        r = Repo.open(str(repo))
        queue = queue_for(r)
        r.close()
        deadline = time.monotonic() + 60
        while len(_workers_serving(app, queue)) < n_workers:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start")
            time.sleep(0.3)
        settle()
        return run(
            pixvcs("-C", str(repo), "crawl", "--broker", broker, "--urls", str(urls),
                   "--label", "web", *CRAWL_FLAGS)
        )  # fmt: skip
    finally:
        for w in workers:
            os.killpg(w.pid, signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(w.pid, signal.SIGKILL)
        redis.terminate()
        redis.wait()


def ensure_img2dataset() -> Path:
    exe = I2D_VENV / "bin" / "img2dataset"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(I2D_VENV)], check=True)
        subprocess.run([str(I2D_VENV / "bin" / "pip"), "install", "-q", "img2dataset"], check=True)
    return exe


def bench_img2dataset(work: Path, urls: Path, processes: int = 2, tag: str = "") -> float:
    exe = ensure_img2dataset()
    out = work / f"i2d{tag}"
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    settle()
    return run(
        [str(exe), "--url_list", str(urls), "--input_format", "txt", "--output_format", "files",
         "--output_folder", str(out), "--resize_mode", "no", "--disable_all_reencoding", "True",
         "--processes_count", str(processes), "--thread_count", str(THREADS),
         "--enable_wandb", "False", "--timeout", "30", "--retries", "0"],
        env=env,
    )  # fmt: skip


def count_files(path: Path, suffix: str) -> int:
    return sum(1 for p in path.rglob(f"*{suffix}"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--out", default=str(HERE / "results-crawl.json"))
    ap.add_argument("--md", default=str(HERE / "results.md"), help="results.md to put a section in")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each tool (median kept)")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--note", help="conditions of the run worth saying (kept in the results)")
    args = ap.parse_args(argv)
    # every command and worker below inherits it: pixvcs runs as installed
    installed = bench_run.as_installed(dict(os.environ))
    os.environ.clear()
    os.environ.update(installed)
    if args.report_only:
        results = json.loads(Path(args.out).read_text())
        if args.note:
            results["note"] = args.note
            Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        write_section(args.md, results)
        return 0
    assert shutil.which("redis-server"), "redis-server is missing (make system-deps)"
    results: dict[str, Any] = {
        "cores": os.cpu_count(),
        "threads_per_process": THREADS,
        "repeats": args.repeats,
        "runs": {},
    }
    for n in (int(x) for x in args.sizes.split(",")):
        src = dataset(n)
        work = WORK / f"crawl-{n}"
        bench_run.rmtree(str(work))  # into the trash: deleted after the run
        work.mkdir(parents=True)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(src), str(port)])
        try:
            wait_port(port)
            urls = work / "urls.txt"
            total_bytes = url_list(src, n, f"http://127.0.0.1:{port}", urls)
            row: dict[str, Any] = {"images": n, "bytes": total_bytes}
            samples: dict[str, list[float]] = {k: [] for k in TOOLS}
            for rep in range(args.repeats):  # alternated, so a slow spell hits every tool
                tag = f"-{rep}"
                samples["img2dataset"].append(bench_img2dataset(work, urls, tag=tag))
                row["img2dataset_files"] = count_files(work / f"i2d{tag}", ".jpg")
                samples["pixvcs_inprocess"].append(bench_inprocess(work, urls, tag=tag))
                samples["pixvcs_workers2"].append(bench_workers(work, urls, tag=tag))
                print(
                    f"   {n} images, run {rep + 1}: "
                    + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in samples.items()),
                    flush=True,
                )
            for key, got in samples.items():
                row[f"{key}_samples"] = [round(x, 3) for x in got]
                row[f"{key}_s"] = statistics.median(got)
        finally:
            server.terminate()
            server.wait()
        for key in TOOLS:
            row[f"{key}_ips"] = n / row[f"{key}_s"]
        row["inprocess_vs_img2dataset"] = row["pixvcs_inprocess_ips"] / row["img2dataset_ips"]
        row["workers2_vs_img2dataset"] = row["pixvcs_workers2_ips"] / row["img2dataset_ips"]
        results["runs"][str(n)] = row
        print(json.dumps(row, indent=1), flush=True)
        bench_run.rmtree(str(work))
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if args.note:
        results["note"] = args.note
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    write_section(args.md, results)
    return 0


def write_section(md: str, results: dict[str, Any]) -> None:
    sys.path.insert(0, str(HERE))
    from mdsections import splice

    lines = [
        "## Crawl: images per second from a loopback server (issue #4)",
        "",
        f"Run finished {results.get('finished', '?')}, {results['cores']} cores, "
        f"{results['threads_per_process']} fetching threads per process for every tool. "
        "Generated 10-60 KB JPEGs served by a separate Python HTTP/1.1 process (TCP_NODELAY: "
        "earlier runs, without it, waited ~44 ms a response for delayed ACKs); politeness "
        f"off (`--rate 0 --per-host {2 * results['threads_per_process']}`). *pixvcs* = "
        "fetch + full decode + SHA-256 + perceptual hash + store + dedupe + commit; *img2dataset* = fetch + write files (`--resize_mode no "
        "--disable_all_reencoding`, 2 processes: it decodes nothing). Each command timed "
        "from its start (Python start-up included); workers started before the clock; "
        "before each, `sync` and nothing deleted in the last 310 s (README.md, Caveats); "
        "pixvcs runs with its bytecode compiled, as installed. "
        f"Each figure is the median of {results.get('repeats', 1)} run(s), the tools "
        "alternated (every run is in results-crawl.json).",
        "",
        "| images | img2dataset | pixvcs in-process | pixvcs, 2 workers | in-process / img2dataset "
        "| 2 workers / img2dataset |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n, row in results["runs"].items():
        lines.append(
            f"| {n} | {row['img2dataset_ips']:.0f} img/s | {row['pixvcs_inprocess_ips']:.0f} img/s "
            f"| {row['pixvcs_workers2_ips']:.0f} img/s | {row['inprocess_vs_img2dataset']:.2f}x "
            f"| {row['workers2_vs_img2dataset']:.2f}x |"
        )
    lines += [
        "",
        "Ratios above 1 mean pixvcs is faster. Command: `python bench/crawl_bench.py "
        "--sizes 1000,10000`.",
    ]
    if results.get("note"):
        lines += ["", f"Note on this run: {results['note']}"]
    splice(md, "crawl-bench", "\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
