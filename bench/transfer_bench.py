"""pixvcs push/clone benchmark: directory remote and ``pixvcs serve``, against
``cp -r`` and stock git + git-lfs, on the same generated images in one run.

Usage::

    python bench/transfer_bench.py                    # 20000 images (or --sizes 2000,20000)
    python bench/transfer_bench.py --sizes 2000       # a smoke run
    python bench/transfer_bench.py --report-only      # re-render from the JSON

Per size, on the cached dataset ``bench/work/datasets/n<N>-s<seed>`` (made by
``gen_dataset.py``, shared with ``run.py``), with untimed set-up (a pixvcs
repository and a git-lfs repository of the same files, each committed):

- ``cp -r`` of the class folders, then ``sync`` (the floor: one copy of the bytes);
- ``pixvcs push`` to a bare directory remote, ``pixvcs clone`` from it, and a
  second ``pixvcs push`` with nothing new;
- the same three through ``pixvcs serve`` (a real subprocess on loopback with an
  ``--auth`` token file);
- stock ``git push`` of the git-lfs repository to the same server (git-lfs's
  pre-push hook uploads through the Batch API), ``GIT_LFS_SKIP_SMUDGE=1 git
  clone`` + ``git lfs pull`` from it, and a second ``git push``.

Every timed command is followed by a timed ``sync``; ratios use the durable time
(command + sync) on both sides. pixvcs makes its objects durable itself
(``syncfs``), ``cp`` and git-lfs do not: the ``sync`` after them is their share.
Writes ``results-transfer.json`` and ``results-transfer.md`` into ``--out`` and
splices the Markdown section into ``--results-md`` (default ``bench/results.md``)
between marker comments, leaving the rest of that file alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gen_dataset  # noqa: E402
import run as bench  # noqa: E402

PIXVCS = bench.PIXVCS
TOKEN = "transfer-bench-write-token-0123456789"
START = "<!-- transfer-bench:start -->"
END = "<!-- transfer-bench:end -->"

# (name in the JSON, what the step includes)
STEPS: dict[str, str] = {
    "cp": "`cp -r` of the 10 class folders, then `sync`",
    "pixvcs.dir.push": "`pixvcs push` to a bare directory remote (incl. its syncfs)",
    "pixvcs.dir.clone": "`pixvcs clone` from it: history + media + work-tree checkout",
    "pixvcs.dir.push2": "second `pixvcs push` to the directory, nothing new",
    "pixvcs.http.push": "`pixvcs push` to `pixvcs serve` (loopback, token)",
    "pixvcs.http.clone": "`pixvcs clone` from `pixvcs serve`",
    "pixvcs.http.push2": "second `pixvcs push` to `pixvcs serve`, nothing new",
    "git-lfs.http.push": "`git push` (git-lfs pre-push upload + pack) to `pixvcs serve`",
    "git-lfs.http.clone": "`GIT_LFS_SKIP_SMUDGE=1 git clone` from `pixvcs serve`",
    "git-lfs.http.lfs_pull": "`git lfs pull` in that clone",
    "git-lfs.http.push2": "second `git push`, nothing new",
}


RATIO_ORDER = (
    "dir.push/cp",
    "dir.clone/cp",
    "http.push/cp",
    "http.clone/cp",
    "git-lfs.push/pixvcs.http.push",
    "git-lfs.clone+pull/pixvcs.http.clone",
    "dir.push2 seconds",
    "http.push2 seconds",
)


# -- environment ----------------------------------------------------------------------------
def make_env(work: str) -> dict[str, str]:
    """An isolated HOME (not run.py's) with a global ``git lfs install``."""
    home = os.path.join(work, "transfer-home")
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(home, ".gitconfig"), "w") as f:
        f.write(
            "[user]\n\tname = Bench\n\temail = bench@example.org\n"
            "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n"
            "[gc]\n\tauto = 0\n"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        HOME=home,
        XDG_CONFIG_HOME=os.path.join(home, ".config"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Bench",
        GIT_AUTHOR_EMAIL="bench@example.org",
        GIT_COMMITTER_NAME="Bench",
        GIT_COMMITTER_EMAIL="bench@example.org",
        GIT_TERMINAL_PROMPT="0",
        PATH=bench.VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
    )
    env.pop("PIXVCS_TOKEN", None)
    env = bench.as_installed(env)
    subprocess.run(
        ["git", "lfs", "install", "--skip-repo"], env=env, check=True, capture_output=True
    )
    return env


class Server:
    """``pixvcs serve ROOT --port 0 --auth TOKENS`` as a subprocess; its output goes to a file."""

    def __init__(self, root: str, tokens: str, log: str, env: dict[str, str]) -> None:
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [PIXVCS, "serve", root, "--port", "0", "--auth", tokens],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        self.port = 0
        while time.monotonic() < deadline:
            with open(log) as f:
                found = re.search(r"http://127\.0\.0\.1:(\d+)/", f.read())
            if found:
                self.port = int(found[1])
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if not self.port:
            self.stop()
            with open(log) as f:
                raise bench.CommandFailed(f"pixvcs serve did not start:\n{f.read()[-2000:]}")

    def url(self, name: str) -> str:
        return f"http://x:{TOKEN}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


# -- memory state ---------------------------------------------------------------------------
def programs() -> list[str]:
    """What the tools run from: read once after the page cache is dropped."""
    found = [sys.prefix]  # pixvcs and its libraries (the venv)
    for tool in ("git", "git-lfs", "cp"):
        path = shutil.which(tool)
        if path:
            found.append(os.path.realpath(path))
    found.append("/usr/lib/git-core")
    return [p for p in found if os.path.exists(p)]


def read_all(path: str) -> None:
    """Every file under ``path`` (dot directories included), or the file itself."""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass
        return
    for dirpath, _dirnames, filenames in os.walk(path):
        for n in filenames:
            full = os.path.join(dirpath, n)
            if os.path.isfile(full) and not os.path.islink(full):
                with open(full, "rb") as f:
                    while f.read(1 << 20):
                        pass


def fresh_memory(inputs: list[str]) -> None:
    """``--fresh-memory``: write back and drop the page cache, then read the
    step's inputs and the programs once, so that every tool starts with the
    same, mostly free memory (root only)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    for path in [*inputs, *programs()]:
        read_all(path)


# -- checks ---------------------------------------------------------------------------------
def tree_digest(root: str) -> tuple[int, str]:
    """(number of .jpg files, one SHA-256 over every (path, content hash)) of a tree."""
    h = hashlib.sha256()
    paths = gen_dataset.list_images(root)
    for rel in paths:
        with open(os.path.join(root, *rel.split("/")), "rb") as f:
            h.update(rel.encode() + b"\0" + hashlib.sha256(f.read()).digest())
    return len(paths), h.hexdigest()


# -- the run --------------------------------------------------------------------------------
def bench_size(
    args: argparse.Namespace, runner: bench.Runner, data: dict[str, Any], size: int
) -> None:
    dataset = os.path.join(args.work, "datasets", f"n{size}-s{args.seed}")
    t0 = time.perf_counter()
    info = gen_dataset.generate(dataset, size, args.seed)
    print(
        f"== {size} images ({info.get('bytes', 0) / 1e6:.0f} MB), dataset ready "
        f"({time.perf_counter() - t0:.0f}s)",
        flush=True,
    )
    out: dict[str, Any] = {"dataset": info, "steps": {}, "checks": {}, "notes": []}
    data["sizes"][str(size)] = out
    expected = tree_digest(dataset)
    run_dir = os.path.join(args.work, "transfer-run", str(size))
    bench.rmtree(run_dir)
    os.makedirs(run_dir)
    srv_root = os.path.join(run_dir, "srv")
    os.makedirs(srv_root)
    tokens = os.path.join(run_dir, "tokens")
    with open(tokens, "w") as f:
        f.write(f"{TOKEN} write\n")
    os.chmod(tokens, 0o600)

    def timed(
        name: str,
        cmd: list[str] | str,
        cwd: str,
        *,
        warm: str | None = None,
        env: dict[str, str] | None = None,
        inputs: tuple[str, ...] = (),
    ) -> float:
        if args.fresh_memory:  # everything the step reads: the repositories, not only media
            fresh_memory([p for p in (warm, *inputs) if p])
        elif warm:
            bench.prewarm(warm)
        runner.settle()
        saved = runner.env
        if env is not None:
            runner.env = env
        try:
            r = runner.timed(cmd, cwd)
        finally:
            runner.env = saved
        s = runner.timed(["sync"], cwd)
        step = out["steps"].setdefault(name, {"samples": [], "sync": [], "durable": []})
        step["samples"].append(round(r["seconds"], 4))
        step["sync"].append(round(s["seconds"], 4))
        step["durable"].append(round(r["seconds"] + s["seconds"], 4))
        step["median"] = sorted(step["durable"])[len(step["durable"]) // 2]
        print(f"   {name}: {r['seconds']:.2f}s (+sync {s['seconds']:.2f}s)", flush=True)
        return float(r["seconds"])

    def check(name: str, root: str) -> None:
        got = tree_digest(root)
        out["checks"][name] = got == expected
        if got != expected:
            print(f"   CHECK FAILED: {name}: {got} != {expected}", flush=True)

    # -- untimed set-up: a pixvcs repository and a git-lfs repository of the same files
    src = os.path.join(run_dir, "src")
    bench.copy_dataset(dataset, src)
    runner.run([PIXVCS, "init", "."], src)
    runner.run([PIXVCS, "add", "."], src)
    runner.run([PIXVCS, "commit", "-m", f"bench: {size} images"], src)
    gsrc = os.path.join(run_dir, "gsrc")
    bench.copy_dataset(dataset, gsrc)
    runner.run("git init -q -b main && git lfs install --local && git lfs track '*.jpg'", gsrc)
    runner.run(["git", "add", "."], gsrc)
    runner.run(["git", "commit", "-q", "-m", f"bench: {size} images"], gsrc)
    pixvcs_store = os.path.join(src, ".pixvcs", "lfs")
    git_store = os.path.join(gsrc, ".git", "lfs")

    for rep in range(args.repeats):
        tag = f"-{rep}"
        # -- cp -r
        dest = os.path.join(run_dir, "cp" + tag)
        classes = sorted(d for d in os.listdir(dataset) if not d.startswith("."))
        os.makedirs(dest)
        timed(
            "cp",
            ["cp", "-r", *[os.path.join(dataset, c) for c in classes], dest + "/"],
            run_dir,
            warm=dataset,
        )
        check("cp", dest)
        bench.rmtree(dest)

        # -- directory remote
        bare = os.path.join(run_dir, "bare" + tag)
        runner.run([PIXVCS, "init", "--bare", bare], run_dir)
        runner.run([PIXVCS, "remote", "add", "dir" + tag, bare], src)
        timed(
            "pixvcs.dir.push",
            [PIXVCS, "push", "dir" + tag],
            src,
            warm=pixvcs_store,
            inputs=(os.path.join(src, ".pixvcs"), bare),
        )
        clone = os.path.join(run_dir, "dirclone" + tag)
        timed(
            "pixvcs.dir.clone",
            [PIXVCS, "clone", bare, clone],
            run_dir,
            warm=os.path.join(bare, "lfs"),
            inputs=(bare,),
        )
        check("pixvcs.dir.clone", clone)
        bench.rmtree(clone)
        timed(
            "pixvcs.dir.push2",
            [PIXVCS, "push", "dir" + tag],
            src,
            inputs=(os.path.join(src, ".pixvcs"), bare),
        )
        bench.rmtree(bare)

        # -- pixvcs serve
        name = "ds" + tag
        gname = "gitds" + tag
        runner.run([PIXVCS, "init", "--bare", os.path.join(srv_root, name)], run_dir)
        runner.run([PIXVCS, "init", "--bare", os.path.join(srv_root, gname)], run_dir)
        server = Server(srv_root, tokens, os.path.join(run_dir, f"serve{tag}.log"), runner.env)
        try:
            runner.run([PIXVCS, "remote", "add", "srv" + tag, server.url(name)], src)
            timed(
                "pixvcs.http.push",
                [PIXVCS, "push", "srv" + tag],
                src,
                warm=pixvcs_store,
                inputs=(os.path.join(src, ".pixvcs"), os.path.join(srv_root, name)),
            )
            clone = os.path.join(run_dir, "httpclone" + tag)
            timed(
                "pixvcs.http.clone",
                [PIXVCS, "clone", server.url(name), clone],
                run_dir,
                warm=os.path.join(srv_root, name, "lfs"),
                inputs=(os.path.join(srv_root, name),),
            )
            check("pixvcs.http.clone", clone)
            bench.rmtree(clone)
            timed(
                "pixvcs.http.push2",
                [PIXVCS, "push", "srv" + tag],
                src,
                inputs=(os.path.join(src, ".pixvcs"), os.path.join(srv_root, name)),
            )
            bench.rmtree(os.path.join(srv_root, name))

            # -- stock git + git-lfs against the same server
            timed(
                "git-lfs.http.push",
                ["git", "push", "-q", server.url(gname), "main"],
                gsrc,
                warm=git_store,
                inputs=(os.path.join(gsrc, ".git"), os.path.join(srv_root, gname)),
            )
            gclone = os.path.join(run_dir, "gitclone" + tag)
            skip = dict(runner.env, GIT_LFS_SKIP_SMUDGE="1")
            timed(
                "git-lfs.http.clone",
                ["git", "clone", "-q", server.url(gname), gclone],
                run_dir,
                warm=os.path.join(srv_root, gname, "lfs"),
                env=skip,
                inputs=(os.path.join(srv_root, gname),),
            )
            timed(
                "git-lfs.http.lfs_pull",
                ["git", "lfs", "pull"],
                gclone,
                inputs=(gclone, os.path.join(srv_root, gname)),
            )
            check("git-lfs.http.clone", gclone)
            status = runner.run(["git", "status", "--porcelain"], gclone)
            out["checks"]["git-lfs.http.clone.clean"] = status.strip() == ""
            bench.rmtree(gclone)
            timed(
                "git-lfs.http.push2",
                ["git", "push", "-q", server.url(gname), "main"],
                gsrc,
                inputs=(os.path.join(gsrc, ".git"), os.path.join(srv_root, gname)),
            )
            bench.rmtree(os.path.join(srv_root, gname))
        finally:
            server.stop()
    out["ratios"] = ratios(out["steps"])
    if not args.keep:
        bench.rmtree(run_dir)


def _m(steps: dict[str, Any], name: str) -> float | None:
    s = steps.get(name)
    return None if s is None else float(s["median"])


def ratios(steps: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, from median durable times."""
    cp = _m(steps, "cp")
    g_clone = None
    if (
        _m(steps, "git-lfs.http.clone") is not None
        and _m(steps, "git-lfs.http.lfs_pull") is not None
    ):
        g_clone = float(_m(steps, "git-lfs.http.clone") or 0) + float(
            _m(steps, "git-lfs.http.lfs_pull") or 0
        )

    def r(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b == 0 else round(a / b, 3)

    rows: dict[str, Any] = {
        "dir.push/cp": (r(_m(steps, "pixvcs.dir.push"), cp), "<=", 2.0),
        "dir.clone/cp": (r(_m(steps, "pixvcs.dir.clone"), cp), "<=", 2.0),
        "http.push/cp": (r(_m(steps, "pixvcs.http.push"), cp), "<=", 3.0),
        "http.clone/cp": (r(_m(steps, "pixvcs.http.clone"), cp), "<=", 3.0),
        "git-lfs.push/pixvcs.http.push": (
            r(_m(steps, "git-lfs.http.push"), _m(steps, "pixvcs.http.push")),
            ">=",
            3.0,
        ),
        "git-lfs.clone+pull/pixvcs.http.clone": (
            r(g_clone, _m(steps, "pixvcs.http.clone")),
            ">=",
            3.0,
        ),
        "dir.push2 seconds": (_m(steps, "pixvcs.dir.push2"), "<", 1.0),
        "http.push2 seconds": (_m(steps, "pixvcs.http.push2"), "<", 1.0),
    }
    out = {}
    for k, (value, op, target) in rows.items():
        met = None
        if value is not None:
            met = (
                value <= target if op == "<=" else value >= target if op == ">=" else value < target
            )
        out[k] = {"value": value, "target": f"{op} {target:g}", "met": met}
    return out


# -- the report -----------------------------------------------------------------------------
def render(data: dict[str, Any]) -> str:
    meta = data.get("meta", {})
    mach = meta.get("machine", {})
    fresh = bool(meta.get("fresh_memory"))
    title = "push and clone, fresh memory" if fresh else "push and clone"
    L: list[str] = [START, f"## Transfer: {title} (issue #3)\n"]
    L.append(
        f"Generated by `bench/transfer_bench.py` (`{meta.get('command', '')}`), started "
        f"{meta.get('started', '?')}, took {meta.get('elapsed_s', '?')} s; raw numbers in "
        f"`bench/results-transfer{'-fresh' if fresh else ''}.json`. Same machine as above ({mach.get('cores', '?')} cores, "
        f"{mach.get('filesystem', '?')}; {mach.get('git', '')}, {mach.get('git_lfs', '')}). "
        f"{meta.get('note', '')}\n"
    )
    L.append(
        "All on one machine, loopback only. Each timed command is followed by a timed `sync`; "
        "the times below are **command + sync** (durable), the median of "
        f"{meta.get('repeats', 1)} run(s). "
        + (
            "Before each step the page cache is written back and dropped, then the step's "
            "inputs (the repositories it reads, the dataset for `cp`) and the programs (the "
            "venv, git, git-lfs, cp) are read once: every tool starts with the same, mostly "
            "free memory, and nobody pays for reclaiming another tool's pages; "
            if fresh
            else "Before each step the source is read once (warm page cache for every tool "
            "alike) and `sync` runs so no earlier dirty pages are pending; "
        )
        + "nothing is deleted in the 310 s before a timed step (README.md, Caveats). "
        "pixvcs verifies every object's SHA-256 where it is received and makes it durable "
        "(an upload is also read verified from the sender's store; `pixvcs serve` sends a "
        "download unhashed, the client hashes it) (directory "
        "remote: push copies, one `syncfs` per batch of 100; clone hard-links each verified "
        "object; `pixvcs serve`: the pixvcs-multi transfer, 1000 objects a request after "
        "a first batch of 100 (an upload: a Batch API call and one request with two "
        "`syncfs` per batch; a download: sent straight to the href of the first Batch API "
        "answer); git-lfs uses the basic "
        "transfer, one request per "
        "object, an fsync + `syncfs` per upload). "
        "`cp` and git-lfs leave their dirty pages to the `sync` that follows them. "
        "A clone writes the bytes twice (the media store and the work tree), `cp -r` once. "
        "The git-lfs repository lives on the same `pixvcs serve` (its Batch API and smart "
        "HTTP), so the server's costs are shared by both clients."
        + (
            ""
            if fresh
            else " The page cache is full in this state (earlier steps' data): a writer "
            "must reclaim pages first, which on this VM slows `cp -r` about threefold; the "
            "*fresh memory* section (`--fresh-memory`) times every step after dropping the "
            "cache instead, where the ratios to `cp` are larger (bench/README.md, Caveats)."
        )
        + "\n"
    )
    for size, entry in sorted(data.get("sizes", {}).items(), key=lambda kv: int(kv[0])):
        steps = entry.get("steps", {})
        d = entry.get("dataset", {})
        L.append(f"### {size} images ({d.get('bytes', 0) / 1e6:.0f} MB)\n")
        L.append("| step | what it includes | command s | sync s | durable s |")
        L.append("|---|---|---:|---:|---:|")
        for name, label in STEPS.items():
            s = steps.get(name)
            if not s:
                continue
            med = sorted(range(len(s["durable"])), key=lambda i: s["durable"][i])[
                len(s["durable"]) // 2
            ]
            L.append(
                f"| {name} | {label} | {s['samples'][med]:.2f} | {s['sync'][med]:.2f} "
                f"| **{s['durable'][med]:.2f}** |"
            )
        L.append("")
        L.append("| target (issue #3) | measured | target | met |")
        L.append("|---|---:|---:|:---:|")
        found = entry.get("ratios", {})
        for k in [k for k in RATIO_ORDER if k in found] + [
            k for k in found if k not in RATIO_ORDER
        ]:
            v = found[k]
            value = v["value"]
            shown = (
                "—"
                if value is None
                else (f"{value:.2f} s" if k.endswith("seconds") else f"{value:.2f}×")
            )
            met = {True: "yes", False: "**no**", None: "—"}[v["met"]]
            L.append(f"| {k} | {shown} | {v['target']} | {met} |")
        L.append("")
        checks = entry.get("checks", {})
        if checks:
            L.append(
                "Checks (every clone's work tree byte-identical to the dataset; git clone clean "
                "after `git lfs pull`): "
                + ", ".join(f"{k}: {'ok' if ok else 'FAILED'}" for k, ok in checks.items())
                + "\n"
            )
        for note in entry.get("notes", []):
            L.append(f"- {note}")
        if entry.get("notes"):
            L.append("")
    L.append(END)
    return "\n".join(L) + "\n"


def splice(md_path: str, section: str, name: str = "transfer") -> None:
    """Put ``section`` (markers included) into ``md_path`` (bench/mdsections)."""
    from mdsections import splice as splice_section

    body = section.split(START, 1)[1].rsplit(END, 1)[0]
    splice_section(md_path, f"{name}-bench", body)


def write_outputs(args: argparse.Namespace, data: dict[str, Any]) -> None:
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, f"results-{args.section}.json")
    tmp = json_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, json_path)
    section = render(data)
    with open(os.path.join(args.out, f"results-{args.section}.md"), "w") as f:
        f.write(section)
    if args.results_md:
        splice(args.results_md, section, args.section)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="20000")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--out", default=HERE, help="where results-transfer.{json,md} go")
    ap.add_argument(
        "--results-md",
        default=os.path.join(HERE, "results.md"),
        help="splice the section into this file ('' to skip)",
    )
    ap.add_argument("--note", default="", help="a sentence for the report (e.g. machine load)")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument(
        "--fresh-memory",
        action="store_true",
        help="before each step drop the page cache (root), then read the step's inputs and "
        "the programs once; results go to results-transfer-fresh.* and their own section",
    )
    args = ap.parse_args(argv)
    args.section = "transfer-fresh" if args.fresh_memory else "transfer"
    if args.report_only:
        with open(os.path.join(args.out, f"results-{args.section}.json")) as f:
            write_outputs(args, json.load(f))
        return 0
    for tool in ("git", "git-lfs"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (make system-deps)", file=sys.stderr)
            return 2
    args.work = os.path.abspath(args.work)
    os.makedirs(args.work, exist_ok=True)
    env = make_env(args.work)
    runner = bench.Runner(env, os.path.join(args.work, "transfer-bench.log"), False)
    sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    data: dict[str, Any] = {
        "meta": {
            "machine": bench.machine_info(args.work, env, None),
            "sizes": sizes,
            "seed": args.seed,
            "repeats": args.repeats,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(["bench/transfer_bench.py", *(argv or sys.argv[1:])]),
            "note": args.note,
            "fresh_memory": args.fresh_memory,
            "loadavg_start": os.getloadavg(),
        },
        "sizes": {},
    }
    t0 = time.perf_counter()
    for size in sizes:
        bench_size(args, runner, data, size)
        data["meta"]["elapsed_s"] = round(time.perf_counter() - t0)
        data["meta"]["loadavg_end"] = os.getloadavg()
        write_outputs(args, data)
    print("wrote", os.path.join(args.out, f"results-{args.section}.json"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
