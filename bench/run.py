"""pixvcs benchmark: pixvcs vs a reference floor, git + git-lfs and DVC, on the same files.

Usage::

    python bench/run.py                       # sizes 20000,100000 (or $BENCH_SIZES)
    python bench/run.py --quick               # 2000 images, a smoke run
    python bench/run.py --sizes 20000,50000 --repeats 3 --big-repeats 1
    python bench/run.py --report-only         # re-render results.md from results.json

Everything runs under bench/work/ (gitignored): datasets are cached in
bench/work/datasets/ and reused, run directories are removed at the end.
DVC is installed on first use into bench/work/dvc-venv (it is not a pixvcs
dependency). See bench/README.md for what is measured and the caveats.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import gen_dataset  # noqa: E402

VENV_BIN = os.path.dirname(os.path.abspath(sys.executable))
PIXVCS = shutil.which("pixvcs", path=VENV_BIN) or shutil.which("pixvcs") or "pixvcs"
PY = sys.executable


# -- running and measuring commands ---------------------------------------------------
class CommandFailed(RuntimeError):
    pass


def _tree_memory_kb(root_pid: int) -> tuple[int, int]:
    """(summed VmRSS, largest VmHWM) over a process and its descendants (via /proc).

    VmHWM is the per-process peak RSS of the program after its exec; the
    ``ru_maxrss`` that ``wait4``/``getrusage`` report would instead start from
    the RSS of the (large) Python parent at fork time."""
    total = hwm = 0
    stack, seen = [root_pid], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]))
                    elif line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
            continue
    return total, hwm


class Runner:
    def __init__(self, env: dict[str, str], log_path: str, drop_caches: bool) -> None:
        self.env = env
        self.log_path = log_path
        self.drop_caches = drop_caches

    def log(self, text: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(text + "\n")

    def run(self, cmd: list[str] | str, cwd: str, *, check: bool = True) -> str:
        """Untimed helper command; returns stdout."""
        p = subprocess.run(
            cmd, cwd=cwd, env=self.env, shell=isinstance(cmd, str), capture_output=True, text=True
        )
        if check and p.returncode != 0:
            raise CommandFailed(
                f"{cmd} in {cwd}: rc={p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
            )
        return p.stdout

    def timed(self, cmd: list[str] | str, cwd: str, *, sample_mem: bool = False) -> dict[str, Any]:
        """Wall time of one command, its max RSS (wait4: the largest single process
        of the tree) and, if ``sample_mem``, the peak of the summed RSS of its
        process tree sampled every 50 ms."""
        shell = isinstance(cmd, str)
        out_path = self.log_path + ".cmd"
        with open(out_path, "w") as out:
            t0 = time.perf_counter()
            p = subprocess.Popen(
                cmd, cwd=cwd, env=self.env, shell=shell, stdout=out, stderr=subprocess.STDOUT
            )
            peak = [0, 0]
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    tree, hwm = _tree_memory_kb(p.pid)
                    peak[0] = max(peak[0], tree)
                    peak[1] = max(peak[1], hwm)
                    stop.wait(0.05)

            th = threading.Thread(target=sample, daemon=True) if sample_mem else None
            if th:
                th.start()
            _, status, usage = os.wait4(p.pid, 0)
            seconds = time.perf_counter() - t0
            if th:
                stop.set()
                th.join()
            p.returncode = os.waitstatus_to_exitcode(status)
        with open(out_path) as f:
            output = f.read()
        self.log(
            f"$ {cmd if shell else ' '.join(cmd)}   (cwd={cwd})  {seconds:.3f}s rc={p.returncode}"
        )
        if output.strip():
            self.log("  " + "\n  ".join(output.strip().splitlines()[-6:]))
        if p.returncode != 0:
            raise CommandFailed(f"{cmd} in {cwd}: rc={p.returncode}\n{output[-3000:]}")
        res: dict[str, Any] = {"seconds": seconds, "wait4_maxrss_kb": usage.ru_maxrss}
        if sample_mem:
            res["peak_tree_rss_kb"] = peak[0]
            res["maxrss_kb"] = peak[1]
        res["output"] = output
        return res

    def settle(self, where: str | None = None) -> None:
        """Before a timed step: no deletion in the last few minutes (:class:`Trash`)
        and no dirty pages pending from earlier steps."""
        TRASH.before_timed_step(where or HERE)
        os.sync()
        if self.drop_caches:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")


def prewarm(root: str) -> None:
    """Read every file once so all tools start from a warm page cache."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for n in filenames:
            with open(os.path.join(dirpath, n), "rb") as f:
                while f.read(1 << 20):
                    pass


def copy_dataset(src: str, dest: str) -> None:
    """A real copy (no shared inodes) of the class folders of ``src`` into ``dest``."""
    if os.path.exists(dest):
        rmtree(dest)
    os.makedirs(dest)
    classes = sorted(d for d in os.listdir(src) if not d.startswith("."))
    subprocess.run(["cp", "-r", *[os.path.join(src, c) for c in classes], dest], check=True)


def rmtree(path: str) -> None:
    """Remove ``path`` from the run: renamed into the trash now, deleted later
    (:class:`Trash`), so no timed step runs right after a big deletion."""
    TRASH.put(path)


def delete_now(path: str) -> None:
    if not os.path.lexists(path):
        return
    # pixvcs makes media objects (and --link sources) read-only; rm -rf copes as root
    subprocess.run(["chmod", "-R", "u+w", path], check=False)
    for _ in range(5):  # a straggling background writer (git hooks) can race the first try
        if subprocess.run(["rm", "-rf", path], check=False).returncode == 0:
            return
        time.sleep(1)
    subprocess.run(["rm", "-rf", path], check=True)


class Trash:
    """Deletions postponed until disk space runs low, then waited out.

    On this VM's ext4 volume (no journal) the inode allocator skips every inode
    freed in the last ~300 s (``recently_deleted``: 5 s, 300 s while the inode's
    table block is dirty), looking each candidate up as it goes: creating 40,000
    files took 1.1 s on a settled volume, 5.1 s right after an ``rm -rf`` of
    80,000 and still 3.0 s 90 s later; 310 s later, 1.1 s again. A benchmark
    that deletes the last tool's output just before timing the next one charges
    that to whoever creates the most inodes. So the run renames what it is done
    with into the trash (a rename frees nothing), empties the trash only when
    free space drops below ``BENCH_MIN_FREE_GB`` (default 15), and before the
    next timed step waits until ``BENCH_DELETE_SETTLE`` seconds (default 310;
    0 turns it off) have passed since the last deletion, that of other
    benchmark processes included (``bench/work/.last-delete``)."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.settle_s = float(os.environ.get("BENCH_DELETE_SETTLE", "310"))
        self.min_free = float(os.environ.get("BENCH_MIN_FREE_GB", "15")) * 2**30
        self.stamp = os.path.join(HERE, "work", ".last-delete")

    def put(self, path: str) -> None:
        if not os.path.lexists(path):
            return
        parked = f"{path.rstrip(os.sep)}.trash-{os.getpid()}-{time.time_ns()}"
        os.rename(path, parked)
        self.items.append(parked)

    def empty(self) -> None:
        if not self.items:
            return
        for p in self.items:
            delete_now(p)
        self.items.clear()
        os.makedirs(os.path.dirname(self.stamp), exist_ok=True)
        with open(self.stamp, "w") as f:
            f.write(f"{time.time():.3f}\n")

    def before_timed_step(self, where: str) -> None:
        if self.items and shutil.disk_usage(where).free < self.min_free:
            self.empty()
        try:
            with open(self.stamp) as f:
                last = float(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return
        wait = last + self.settle_s - time.time()
        if wait > 0:
            print(
                f"   (waiting {wait:.0f} s: files were deleted; see README.md, Caveats)", flush=True
            )
            time.sleep(wait)


TRASH = Trash()
atexit.register(TRASH.empty)  # whatever the run leaves, also after a failure


# -- recording ---------------------------------------------------------------------
class Results:
    def __init__(self, path: str) -> None:
        self.path = path
        self.data: dict[str, Any] = {"meta": {}, "sizes": {}}

    def add(self, size: int, name: str, seconds: float, **extra: Any) -> None:
        m = (
            self.data["sizes"]
            .setdefault(str(size), {})
            .setdefault(name, {"samples": [], "extra": []})
        )
        m["samples"].append(round(seconds, 4))
        m["median"] = round(statistics.median(m["samples"]), 4)
        if extra:
            m["extra"].append(extra)

    def set_info(self, size: int, key: str, value: Any) -> None:
        self.data["sizes"].setdefault(str(size), {}).setdefault("_info", {})[key] = value

    def save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)


def med(results: Results, size: int, name: str) -> float | None:
    m = results.data["sizes"].get(str(size), {}).get(name)
    return None if m is None else float(m["median"])


# -- the tools -----------------------------------------------------------------------
def ensure_dvc(work: str) -> str:
    venv = os.path.join(work, "dvc-venv")
    dvc = os.path.join(venv, "bin", "dvc")
    if not os.path.exists(dvc):
        print("installing DVC into", venv, flush=True)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "dvc"], check=True)
    return dvc


def ingest(
    runner: Runner,
    res: Results,
    size: int,
    tool: str,
    work_dir: str,
    dvc: str | None,
) -> None:
    """init + add + commit of one tool on a fresh copy in ``work_dir``; records each step."""
    steps: list[tuple[str, list[str] | str]] = []
    msg = f"bench: {size} images"
    if tool in ("pixvcs", "pixvcs-link"):
        add = [PIXVCS, "add", "--link", "."] if tool == "pixvcs-link" else [PIXVCS, "add", "."]
        steps = [
            ("init", [PIXVCS, "init", "."]),
            ("add", add),
            ("commit", [PIXVCS, "commit", "-m", msg]),
        ]
    elif tool == "git-lfs":
        steps = [
            ("init", "git init -q -b main && git lfs install --local && git lfs track '*.jpg'"),
            ("add", ["git", "add", "."]),
            ("commit", ["git", "commit", "-q", "-m", msg]),
        ]
    elif tool in ("dvc", "dvc-link"):
        assert dvc is not None
        classes = sorted(d for d in os.listdir(work_dir) if not d.startswith("."))
        init = f"git init -q -b main && {dvc} init -q"
        if tool == "dvc-link":
            init += f" && {dvc} config cache.type hardlink"
        steps = [
            ("init", init),
            ("add", [dvc, "add", "-q", *classes]),
            ("commit", f"git add -A && git commit -q -m '{msg}'"),
        ]
    else:
        raise ValueError(tool)
    prewarm(work_dir)
    runner.settle()
    total = 0.0
    for step, cmd in steps:
        r = runner.timed(cmd, work_dir, sample_mem=step in ("add", "commit"))
        total += r["seconds"]
        res.add(
            size,
            f"{tool}.{step}",
            r["seconds"],
            maxrss_kb=r.get("maxrss_kb"),
            peak_tree_rss_kb=r.get("peak_tree_rss_kb"),
        )
    r = runner.timed(["sync"], work_dir)
    res.add(size, f"{tool}.sync", r["seconds"])
    res.add(size, f"{tool}.total", total)
    res.add(size, f"{tool}.durable", total + r["seconds"])


def floor(runner: Runner, res: Results, size: int, dataset: str, dest: str, mode: str) -> None:
    rmtree(dest)
    prewarm(dataset)
    runner.settle()
    cmd = [PY, os.path.join(HERE, "floor.py"), dataset]
    if mode != "link":
        cmd.append(dest)
    r = runner.timed([*cmd, "--mode", mode], ROOT, sample_mem=True)
    res.add(
        size,
        f"floor.{mode}",
        r["seconds"],
        maxrss_kb=r.get("maxrss_kb"),
        peak_tree_rss_kb=r.get("peak_tree_rss_kb"),
    )
    rmtree(dest)


def status_bench(
    runner: Runner, res: Results, size: int, pv_dir: str, git_dir: str, n: int
) -> None:
    for name, cmd, cwd in (
        ("status.pixvcs", [PIXVCS, "status"], pv_dir),
        ("status.git", ["git", "status"], git_dir),
    ):
        runner.settle()
        first = runner.timed(cmd, cwd)
        res.add(size, name + ".first", first["seconds"])
        for _ in range(n):
            r = runner.timed(cmd, cwd)
            res.add(size, name, r["seconds"])
        if name == "status.pixvcs":
            clean = "nothing to commit" in r["output"]
            res.set_info(size, "pixvcs_status_clean", clean)


def change_commands(msg: str) -> dict[str, list[tuple[str, list[str]]]]:
    """The steps after a change, per tool: add, commit, diff, checkout HEAD~1, checkout main."""
    return {
        "pixvcs": [
            ("add", [PIXVCS, "add", "."]),
            ("commit", [PIXVCS, "commit", "-m", msg]),
            ("diff", [PIXVCS, "diff", "HEAD~1", "HEAD"]),
            ("checkout_prev", [PIXVCS, "checkout", "HEAD~1"]),
            ("checkout_back", [PIXVCS, "checkout", "main"]),
        ],
        "git-lfs": [
            ("add", ["git", "add", "."]),
            ("commit", ["git", "commit", "-q", "-m", msg]),
            ("diff", ["git", "diff", "--stat", "HEAD~1", "HEAD"]),
            ("checkout_prev", ["git", "checkout", "-q", "HEAD~1"]),
            ("checkout_back", ["git", "checkout", "-q", "main"]),
        ],
    }


def change_bench(
    runner: Runner,
    res: Results,
    size: int,
    pv_dir: str,
    git_dir: str,
    label: str,
    *,
    fraction: float | None,
    count: int | None,
    seed: int,
) -> None:
    salt = f"bench-{label}"
    changed = gen_dataset.change_images(
        pv_dir, fraction=fraction, count=count, seed=seed, salt=salt
    )
    changed_git = gen_dataset.change_images(
        git_dir, fraction=fraction, count=count, seed=seed, salt=salt
    )
    assert changed == changed_git, "the two repositories must get the same change"
    res.set_info(size, f"change.{label}.files", len(changed))
    ops = change_commands(f"bench: change {label}")
    for tool, cwd in (("pixvcs", pv_dir), ("git-lfs", git_dir)):
        runner.settle()
        for step, cmd in ops[tool]:
            r = runner.timed(cmd, cwd, sample_mem=step in ("add", "commit"))
            res.add(
                size,
                f"change.{label}.{tool}.{step}",
                r["seconds"],
                maxrss_kb=r.get("maxrss_kb"),
                peak_tree_rss_kb=r.get("peak_tree_rss_kb"),
            )
            if tool == "pixvcs" and step == "add":
                res.set_info(size, f"change.{label}.pixvcs_add_output", r["output"].strip()[-200:])
    # sanity: what the tools say about the change (untimed)
    d = json.loads(runner.run([PIXVCS, "diff", "--json", "HEAD~1", "HEAD"], pv_dir))
    res.set_info(size, f"change.{label}.pixvcs_diff_counts", d["counts"])
    st = json.loads(runner.run([PIXVCS, "status", "--json"], pv_dir))
    res.set_info(size, f"change.{label}.pixvcs_clean_after_checkouts", bool(st["clean"]))
    gst = runner.run(["git", "status", "--porcelain"], git_dir)
    res.set_info(size, f"change.{label}.git_clean_after_checkouts", gst.strip() == "")


# -- environment ---------------------------------------------------------------------
def as_installed(env: dict[str, str]) -> dict[str, str]:
    """``env`` for running pixvcs as an installed package runs: with its bytecode
    compiled (``pip install`` compiles it; this checkout is an editable install)
    and Python allowed to keep it (a ``PYTHONDONTWRITEBYTECODE`` inherited from
    the shell would make every timed command compile pixvcs's modules again,
    about 20-80 ms of each short command: not what a user's commands cost).
    The peers installed from PyPI (DVC, img2dataset) have theirs from pip."""
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", os.path.join(os.path.dirname(HERE), "pixvcs")],
        env=env,
        check=True,
        capture_output=True,
    )
    return env


def make_env(work: str) -> dict[str, str]:
    home = os.path.join(work, "home")
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(home, ".gitconfig"), "w") as f:
        f.write(
            "[user]\n\tname = Bench\n\temail = bench@example.org\n"
            "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n"
            # no detached auto-gc after a commit: it would compete with the next measurement
            "[gc]\n\tauto = 0\n"
        )
    env = dict(os.environ)
    env.update(
        HOME=home,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Bench",
        GIT_AUTHOR_EMAIL="bench@example.org",
        GIT_COMMITTER_NAME="Bench",
        GIT_COMMITTER_EMAIL="bench@example.org",
        DVC_NO_ANALYTICS="1",
        DVC_NO_UPDATER="1",  # no version check over the network
        GIT_TERMINAL_PROMPT="0",
        PATH=VENV_BIN + os.pathsep + env.get("PATH", ""),
    )
    return as_installed(env)


def machine_info(work: str, env: dict[str, str], dvc: str | None) -> dict[str, Any]:
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, env=env).stdout.strip()
        except OSError:
            return "?"

    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    import PIL

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "filesystem": out(["findmnt", "-no", "FSTYPE", "-T", work])
        or out(["stat", "-f", "-c", "%T", work]),
        "kernel": platform.release(),
        "pixvcs": out([PIXVCS, "--version"]),
        "git": out(["git", "--version"]),
        "git_lfs": out(["git", "lfs", "version"]),
        "dvc": out([dvc, "--version"]) if dvc else "not run",
        "python": platform.python_version(),
        "pillow": PIL.__version__,
    }


# -- the run -------------------------------------------------------------------------
def bench_size(
    args: argparse.Namespace, runner: Runner, res: Results, size: int, dvc: str | None
) -> None:
    work = args.work
    repeats = args.repeats if size <= args.big_threshold else args.big_repeats
    res.set_info(size, "repeats", repeats)
    print(f"== {size} images, {repeats} repeat(s) per ingest", flush=True)
    dataset = os.path.join(work, "datasets", f"n{size}-s{args.seed}")
    t0 = time.perf_counter()
    info = gen_dataset.generate(dataset, size, args.seed)
    res.set_info(size, "dataset", info)
    print(
        f"   dataset ready ({time.perf_counter() - t0:.0f}s): {info.get('mean_kb')} KB mean",
        flush=True,
    )
    run_dir = os.path.join(work, "run", str(size))
    rmtree(run_dir)
    os.makedirs(run_dir)
    store = os.path.join(run_dir, "floor-store")
    tools = ["pixvcs", "pixvcs-link", "git-lfs"]
    if dvc:
        tools += ["dvc"] + (["dvc-link"] if args.dvc_link else [])
    keep: dict[str, str] = {}
    # Round robin: each repeat runs every floor and every tool once, so they all
    # meet the filesystem in about the same state (creating files costs more
    # right after a big deletion: see README.md, "Caveats").
    for r in range(repeats):
        for mode in ("full", "nodecode", "link"):
            floor(runner, res, size, dataset, store, mode)
        for tool in tools:
            d = os.path.join(run_dir, f"{tool}-{r}")
            copy_dataset(dataset, d)
            ingest(runner, res, size, tool, d, dvc)
            if tool in ("pixvcs", "git-lfs") and r == repeats - 1:
                keep[tool] = d
            else:
                rmtree(d)
        res.save()
    for mode in ("full", "nodecode", "link"):
        print(f"   floor {mode}: {med(res, size, 'floor.' + mode):.2f}s", flush=True)
    for tool in tools:
        print(
            f"   {tool}: {med(res, size, tool + '.total'):.2f}s (+sync {med(res, size, tool + '.sync'):.2f}s)",
            flush=True,
        )
    status_bench(runner, res, size, keep["pixvcs"], keep["git-lfs"], args.status_repeats)
    print(
        f"   status: pixvcs {med(res, size, 'status.pixvcs'):.3f}s, git {med(res, size, 'status.git'):.3f}s",
        flush=True,
    )
    change_bench(
        runner,
        res,
        size,
        keep["pixvcs"],
        keep["git-lfs"],
        "1pct",
        fraction=0.01,
        count=None,
        seed=args.seed,
    )
    change_bench(
        runner,
        res,
        size,
        keep["pixvcs"],
        keep["git-lfs"],
        "fixed",
        fraction=None,
        count=args.fixed_change,
        seed=args.seed,
    )
    print(
        f"   1% change: pixvcs add {med(res, size, 'change.1pct.pixvcs.add'):.2f}s, "
        f"git add {med(res, size, 'change.1pct.git-lfs.add'):.2f}s",
        flush=True,
    )
    res.save()
    if not args.keep:
        rmtree(run_dir)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=os.environ.get("BENCH_SIZES", "20000,100000"))
    ap.add_argument("--quick", action="store_true", help="2000 images (smoke run)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="ingest repeats at small sizes")
    ap.add_argument(
        "--big-repeats", type=int, default=1, help="ingest repeats above --big-threshold"
    )
    ap.add_argument("--big-threshold", type=int, default=20000)
    ap.add_argument("--status-repeats", type=int, default=5)
    ap.add_argument(
        "--fixed-change",
        type=int,
        default=200,
        help="images changed in the fixed-size change step (1%% of 20k)",
    )
    ap.add_argument("--no-dvc", action="store_true")
    ap.add_argument(
        "--dvc-link",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run DVC with cache.type=hardlink",
    )
    ap.add_argument(
        "--drop-caches",
        action="store_true",
        help="drop the page cache before every timed step (root only)",
    )
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--out", default=HERE, help="where results.md / results.json go")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    json_path = os.path.join(args.out, "results.json")
    md_path = os.path.join(args.out, "results.md")
    if args.report_only:
        with open(json_path) as f:
            data = json.load(f)
        write_md(md_path, render(data))
        print("wrote", md_path)
        return 0
    if args.quick:
        args.sizes, args.fixed_change = "2000", 20
    sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    args.work = os.path.abspath(args.work)
    os.makedirs(args.work, exist_ok=True)
    env = make_env(args.work)
    dvc = None if args.no_dvc else ensure_dvc(args.work)
    log_path = os.path.join(args.work, "bench.log")
    runner = Runner(env, log_path, args.drop_caches)
    res = Results(json_path)
    res.data["meta"] = {
        "machine": machine_info(args.work, env, dvc),
        "sizes": sizes,
        "seed": args.seed,
        "repeats": args.repeats,
        "big_repeats": args.big_repeats,
        "big_threshold": args.big_threshold,
        "status_repeats": args.status_repeats,
        "fixed_change": args.fixed_change,
        "drop_caches": args.drop_caches,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv),
    }
    t0 = time.perf_counter()
    for size in sizes:
        bench_size(args, runner, res, size, dvc)
        res.data["meta"]["elapsed_s"] = round(time.perf_counter() - t0)
        res.save()
        write_md(md_path, render(res.data))
    print("wrote", md_path, "and", json_path, flush=True)
    return 0


def write_md(md_path: str, text: str) -> None:
    """Write results.md, keeping the sections other benchmarks own (mdsections)."""
    from mdsections import sections

    kept: list[str] = []
    if os.path.exists(md_path):
        with open(md_path) as f:
            kept = sections(f.read())
    with open(md_path, "w") as f:
        f.write(text.rstrip("\n") + "".join("\n\n" + k for k in kept) + "\n")


# -- the report ----------------------------------------------------------------------
TOOL_LABELS = {
    "floor.full": "floor: read + SHA-256 + decode + write + syncfs",
    "floor.nodecode": "floor without decode: read + SHA-256 + write + syncfs",
    "floor.link": "floor, link mode: read + SHA-256 + decode (no write)",
    "pixvcs": "pixvcs init + add + commit (copy mode)",
    "pixvcs-link": "pixvcs init + add --link + commit",
    "git-lfs": "git init + lfs track + git add + commit",
    "dvc": "git init + dvc init + dvc add + git commit",
    "dvc-link": "same, DVC cache.type=hardlink",
}


def _fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


def render(data: dict[str, Any]) -> str:  # noqa: C901 - one linear report
    meta = data.get("meta", {})
    mach = meta.get("machine", {})
    sizes = [int(s) for s in sorted(data.get("sizes", {}), key=int)]
    by = data.get("sizes", {})

    def m(size: int, name: str) -> float | None:
        e = by.get(str(size), {}).get(name)
        return None if e is None else float(e["median"])

    def info(size: int, key: str) -> Any:
        return by.get(str(size), {}).get("_info", {}).get(key)

    def peak(size: int, name: str, key: str) -> int | None:
        e = by.get(str(size), {}).get(name)
        vals = [x.get(key) for x in (e or {}).get("extra", []) if x.get(key)]
        return max(vals) if vals else None

    L: list[str] = []
    L.append("# pixvcs benchmark results\n")
    L.append(
        f"Generated by `bench/run.py` (`{meta.get('command', '')}`), started {meta.get('started', '?')}, "
        f"took {meta.get('elapsed_s', '?')} s. Raw numbers: `bench/results.json`; method and caveats: "
        "`bench/README.md`. Times are wall-clock seconds of the commands as a user runs them "
        "(process start-up included). Ratios matter, not absolute seconds.\n"
    )
    L.append("## Machine and versions\n")
    L.append("| | |\n|---|---|")
    for k, label in (
        ("cpu", "CPU"),
        ("cores", "cores"),
        ("ram_gib", "RAM (GiB)"),
        ("filesystem", "filesystem of bench/work"),
        ("kernel", "kernel"),
        ("pixvcs", "pixvcs"),
        ("git", "git"),
        ("git_lfs", "git-lfs"),
        ("dvc", "DVC"),
        ("python", "Python"),
        ("pillow", "Pillow"),
    ):
        L.append(f"| {label} | {mach.get(k, '?')} |")
    L.append(
        f"\nPage cache: {'dropped before every timed step' if meta.get('drop_caches') else 'warm for every tool alike (each tool gets a fresh copy of the dataset written just before it, every file is read once more untimed, and `sync` runs before each timed sequence so no dirty pages from the copy are pending)'}.\n"
    )
    L.append("## Dataset\n")
    L.append(
        "Generated by `bench/gen_dataset.py` (seeded, deterministic): JPEGs of a smooth random "
        "colour field, 2-8 filled shapes and seeded grain, 224-400 × 192-352 px, quality 60-92, "
        "in 10 class folders (`class_XX/img_NNNNNNN.jpg`).\n"
    )
    L.append(
        "| images | total MB | min KB | p5 KB | median KB | p95 KB | max KB | ingest repeats |"
    )
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in sizes:
        d = info(s, "dataset") or {}
        L.append(
            f"| {s} | {d.get('bytes', 0) / 1e6:.0f} | {d.get('min_kb')} | {d.get('p05_kb')} | {d.get('median_kb')} "
            f"| {d.get('p95_kb')} | {d.get('max_kb')} | {info(s, 'repeats')} |"
        )
    L.append("")

    # ingest
    L.append("## 1. Ingest a dataset: init + add + commit\n")
    L.append(
        "Median seconds. *steps* = the tool's commands; *+sync* = a `sync` right after, i.e. until the "
        "data is on disk (pixvcs and the floor already `syncfs` themselves; git-lfs and DVC do not). "
        "Ratios use the durable time (*steps + sync*), against the floor with decode (link modes: "
        "against the link-mode floor).\n"
    )
    head = "| what | " + " | ".join(f"{s}: steps | +sync | × floor" for s in sizes) + " |"
    L.append(head)
    L.append("|---|" + "---:|---:|---:|" * len(sizes))
    for key in ("floor.full", "floor.nodecode", "floor.link"):
        cells = []
        for s in sizes:
            ref = m(s, "floor.link" if key == "floor.link" else "floor.full")
            cells.append(f"{_fmt(m(s, key))} | — | {_ratio(m(s, key), ref)}")
        L.append(f"| {TOOL_LABELS[key]} | " + " | ".join(cells) + " |")
    for tool in ("pixvcs", "pixvcs-link", "git-lfs", "dvc", "dvc-link"):
        if all(m(s, tool + ".total") is None for s in sizes):
            continue
        cells = []
        for s in sizes:
            ref = m(s, "floor.link" if tool.endswith("-link") else "floor.full")
            cells.append(
                f"{_fmt(m(s, tool + '.total'))} | {_fmt(m(s, tool + '.durable'))} | "
                f"{_ratio(m(s, tool + '.durable'), ref)}"
            )
        L.append(f"| {TOOL_LABELS[tool]} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("Per step (median seconds):\n")
    L.append("| tool | size | init | add | commit | sync after |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for tool in ("pixvcs", "pixvcs-link", "git-lfs", "dvc", "dvc-link"):
        for s in sizes:
            if m(s, tool + ".total") is None:
                continue
            L.append(
                f"| {tool} | {s} | {_fmt(m(s, tool + '.init'))} | {_fmt(m(s, tool + '.add'))} | "
                f"{_fmt(m(s, tool + '.commit'))} | {_fmt(m(s, tool + '.sync'))} |"
            )
    L.append("")

    # key ratios
    L.append("## 2. Key ratios\n")
    L.append("| ratio | " + " | ".join(str(s) for s in sizes) + " |")
    L.append("|---|" + "---:|" * len(sizes))

    def row(label: str, a: str, b: str) -> None:
        L.append(f"| {label} | " + " | ".join(_ratio(m(s, a), m(s, b)) for s in sizes) + " |")

    row("pixvcs / floor (copy mode, durable)", "pixvcs.durable", "floor.full")
    row("pixvcs / floor without decode", "pixvcs.durable", "floor.nodecode")
    row("pixvcs --link / link-mode floor", "pixvcs-link.durable", "floor.link")
    row("git-lfs / floor", "git-lfs.durable", "floor.full")
    row("DVC / floor", "dvc.durable", "floor.full")
    row("**git-lfs / pixvcs** (how much faster pixvcs is)", "git-lfs.durable", "pixvcs.durable")
    row("**DVC / pixvcs**", "dvc.durable", "pixvcs.durable")
    row("git-lfs / pixvcs --link", "git-lfs.durable", "pixvcs-link.durable")
    row("DVC / pixvcs --link", "dvc.durable", "pixvcs-link.durable")
    row("DVC hardlink / pixvcs --link", "dvc-link.durable", "pixvcs-link.durable")
    row("git-lfs / pixvcs, steps only (no sync)", "git-lfs.total", "pixvcs.total")
    row("DVC / pixvcs, steps only (no sync)", "dvc.total", "pixvcs.total")
    row("**git status / pixvcs status** (nothing changed)", "status.git", "status.pixvcs")
    row(
        "git-lfs / pixvcs: add+commit of the 1% change",
        "change.1pct.git-lfs.add",
        "change.1pct.pixvcs.add",
    )
    L.append("")
    if len(sizes) >= 2:
        a, b = sizes[0], sizes[-1]
        L.append(
            f"Scaling from {a} to {b} images ({b / a:.1f}× the data; time in proportion to "
            f"the change would give 1.0× on the *fixed* rows):\n"
        )
        L.append(f"| operation | pixvcs {b}/{a} | git-lfs {b}/{a} |")
        L.append("|---|---:|---:|")
        L.append(
            f"| ingest (durable) | {_ratio(m(b, 'pixvcs.durable'), m(a, 'pixvcs.durable'))} | "
            f"{_ratio(m(b, 'git-lfs.durable'), m(a, 'git-lfs.durable'))} |"
        )
        L.append(
            f"| status, nothing changed | {_ratio(m(b, 'status.pixvcs'), m(a, 'status.pixvcs'))} | "
            f"{_ratio(m(b, 'status.git'), m(a, 'status.git'))} |"
        )
        for lab in ("1pct", "fixed"):
            for op in ("add", "commit", "diff", "checkout_prev", "checkout_back"):
                L.append(
                    f"| {lab} change: {op} | "
                    f"{_ratio(m(b, f'change.{lab}.pixvcs.{op}'), m(a, f'change.{lab}.pixvcs.{op}'))} | "
                    f"{_ratio(m(b, f'change.{lab}.git-lfs.{op}'), m(a, f'change.{lab}.git-lfs.{op}'))} |"
                )
        L.append("")

    # status
    L.append("## 3. Status with nothing changed\n")
    L.append(
        f"Median of {meta.get('status_repeats', 5)} runs after one untimed-for-the-median first run "
        "(the first run is shown too: it may refresh racily-clean stat entries).\n"
    )
    L.append(
        "| size | pixvcs status | git status (git-lfs repo) | git / pixvcs | pixvcs first run | git first run |"
    )
    L.append("|---:|---:|---:|---:|---:|---:|")
    for s in sizes:
        L.append(
            f"| {s} | {_fmt(m(s, 'status.pixvcs'), 3)} | {_fmt(m(s, 'status.git'), 3)} | "
            f"{_ratio(m(s, 'status.git'), m(s, 'status.pixvcs'))} | {_fmt(m(s, 'status.pixvcs.first'), 3)} | "
            f"{_fmt(m(s, 'status.git.first'), 3)} |"
        )
    L.append("")

    # change
    L.append("## 4. Operations after a change\n")
    L.append(
        "Two change steps on the repositories from section 1: *1pct* re-encodes 1% of the images "
        f"(the change grows with the dataset), *fixed* re-encodes {meta.get('fixed_change')} images at "
        "every size (the same change on a bigger dataset). Then: add, commit, diff HEAD~1 HEAD, "
        "checkout HEAD~1, checkout main. Single runs; seconds.\n"
    )
    for lab in ("1pct", "fixed"):
        L.append(
            f"**{lab}** ("
            + ", ".join(f"{s}: {info(s, f'change.{lab}.files')} files" for s in sizes)
            + ")\n"
        )
        L.append(
            "| operation | "
            + " | ".join(f"pixvcs {s}" for s in sizes)
            + " | "
            + " | ".join(f"git-lfs {s}" for s in sizes)
            + " |"
        )
        L.append("|---|" + "---:|" * (2 * len(sizes)))
        for op, label in (
            ("add", "add ."),
            ("commit", "commit"),
            ("diff", "diff HEAD~1 HEAD"),
            ("checkout_prev", "checkout HEAD~1"),
            ("checkout_back", "checkout main"),
        ):
            L.append(
                f"| {label} | "
                + " | ".join(_fmt(m(s, f"change.{lab}.pixvcs.{op}"), 3) for s in sizes)
                + " | "
                + " | ".join(_fmt(m(s, f"change.{lab}.git-lfs.{op}"), 3) for s in sizes)
                + " |"
            )
        L.append("")

    # memory
    L.append("## 5. Peak memory\n")
    L.append(
        "*max RSS* = peak RSS (VmHWM) of the largest single process of the command's tree; "
        "*tree* = peak of the summed RSS of the whole process tree (main process + workers). Both "
        "sampled from /proc every 50 ms (growth in a command's last 50 ms can be missed; pages "
        "that forked workers share with their parent count once per process, so *tree* "
        "overstates). `wait4`'s ru_maxrss is not used: after fork+exec it starts from the "
        "benchmark's own RSS. MiB.\n"
    )
    L.append("| command | " + " | ".join(f"{s}: max RSS | tree" for s in sizes) + " |")
    L.append("|---|" + "---:|---:|" * len(sizes))
    for name in (
        "floor.full",
        "pixvcs.add",
        "pixvcs.commit",
        "pixvcs-link.add",
        "git-lfs.add",
        "git-lfs.commit",
        "dvc.add",
        "change.1pct.pixvcs.add",
        "change.1pct.pixvcs.commit",
    ):
        cells = []
        for s in sizes:
            a = peak(s, name, "maxrss_kb")
            b = peak(s, name, "peak_tree_rss_kb")
            cells.append(f"{_fmt(a / 1024 if a else None, 0)} | {_fmt(b / 1024 if b else None, 0)}")
        L.append(f"| {name} | " + " | ".join(cells) + " |")
    L.append("")

    # sanity
    L.append("## Checks\n")
    for s in sizes:
        for lab in ("1pct", "fixed"):
            L.append(
                f"- {s}, {lab}: {info(s, f'change.{lab}.files')} files changed; pixvcs diff counts "
                f"{info(s, f'change.{lab}.pixvcs_diff_counts')}; clean after checkout round trip: "
                f"pixvcs {info(s, f'change.{lab}.pixvcs_clean_after_checkouts')}, "
                f"git {info(s, f'change.{lab}.git_clean_after_checkouts')}"
            )
        L.append(
            f"- {s}: `pixvcs status` said clean after ingest: {info(s, 'pixvcs_status_clean')}"
        )
    L.append("")
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
