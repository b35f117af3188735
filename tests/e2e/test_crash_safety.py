"""Crash safety: ``pixvcs`` killed with SIGKILL at random moments.

DESIGN.md: "A crash at any point leaves a repository that ``pixvcs fsck``
accepts, possibly with unreferenced objects", and the repository lock is an
flock "the kernel drops when its holder dies". After every kill the
repository must pass fsck, the next command must not wait for the lock, and
``checkout --force`` of every committed version must bring back its exact bytes.

The delays are drawn from a seeded generator; the moments they hit still
depend on the machine's speed, so every failure message names the iteration,
the operation and the delay.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dulwich.repo import Repo as GitRepo

from .conftest import Tools, image_bytes, worktree_hashes, write_file, write_images

pytestmark = pytest.mark.e2e

SEED = 20240611
ITERATIONS = 9  # three of each operation; about 3 s each
LOCK_WAIT_LIMIT = 15.0  # the lock timeout is 30 s: a blocked command would take that long


@dataclass
class Run:
    """What a killed command was doing, for failure messages."""

    iteration: int
    op: str
    args: tuple[str, ...]
    delay: float
    finished: bool = False
    returncode: int | None = None
    stderr: str = ""

    def __str__(self) -> str:
        how = f"finished (exit {self.returncode})" if self.finished else "killed"
        return (
            f"[seed {SEED}, iteration {self.iteration}] pixvcs {' '.join(self.args)} "
            f"{how} after {self.delay:.3f}s"
        )


@dataclass
class Versions:
    """Committed versions: revision -> manifest (path -> sha256)."""

    manifests: dict[str, dict[str, str]] = field(default_factory=dict)

    def committed_paths(self) -> set[str]:
        return {p for m in self.manifests.values() for p in m}


def _start(tools: Tools, repo: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        tools.pixvcs_argv(repo, *args),
        env=tools.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the command and its workers
    )


def _kill_group(p: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:  # the whole group has already exited
        pass


def _run_and_kill(tools: Tools, repo: Path, run: Run) -> None:
    """Start the command, SIGKILL it (workers included) after ``run.delay`` seconds."""
    p = _start(tools, repo, *run.args)
    try:
        try:
            p.wait(timeout=run.delay)
            run.finished = True
        except subprocess.TimeoutExpired:
            _kill_group(p)
        _, err = p.communicate()
        run.returncode = p.returncode
        run.stderr = err.decode("utf-8", "replace")
    finally:
        _kill_group(p)
    if run.finished:
        assert run.returncode == 0, f"{run}: {run.stderr}"


def _main_commit(repo: Path) -> str:
    git = GitRepo(str(repo / ".pixvcs"), bare=True)
    try:
        return git.refs[b"refs/heads/main"].decode()
    finally:
        git.close()


def _parents(repo: Path, commit: str) -> list[str]:
    git = GitRepo(str(repo / ".pixvcs"), bare=True)
    try:
        return [p.decode() for p in git[commit.encode()].parents]
    finally:
        git.close()


def _timed(tools: Tools, repo: Path, *args: str) -> float:
    t0 = time.monotonic()
    tools.pixvcs(repo, *args)
    return time.monotonic() - t0


def _commit_version(
    tools: Tools, repo: Path, message: str, tag: str, durations: dict[str, float]
) -> dict[str, str]:
    """Add and commit everything, tag it; record how long add and commit took."""
    durations["add"] = _timed(tools, repo, "add", ".")
    durations["commit"] = _timed(tools, repo, "commit", "-m", message)
    tools.pixvcs(repo, "tag", tag)
    return worktree_hashes(repo)


def _mutate(repo: Path, rng: random.Random, iteration: int) -> dict[str, str]:
    """Re-encode some images, delete some, add new ones; return the new manifest."""
    images = sorted(p for p in worktree_hashes(repo) if p.endswith((".jpg", ".png")))
    picked = rng.sample(images, 25)
    for n, rel in enumerate(picked[:15]):
        fmt = "PNG" if rel.endswith(".png") else "JPEG"
        write_file(repo, rel, image_bytes(1_000_000 + iteration * 1000 + n, fmt))
    for rel in picked[15:]:
        (repo / rel).unlink()
    write_images(repo, [f"it{iteration:02d}/{n:03d}.jpg" for n in range(40)], seed=500 + iteration)
    return worktree_hashes(repo)


def _verify_checkout(
    tools: Tools, repo: Path, rev: str, manifest: dict[str, str], committed: set[str], run: Run
) -> None:
    t0 = time.monotonic()
    proc = tools.pixvcs(repo, "checkout", "--force", rev, check=False, timeout=60)
    took = time.monotonic() - t0
    assert proc.returncode == 0, f"{run}: checkout --force {rev} failed: {proc.stderr}"
    assert took < LOCK_WAIT_LIMIT, f"{run}: checkout --force {rev} waited {took:.1f}s (lock?)"
    have = worktree_hashes(repo)
    wrong = sorted(p for p, h in manifest.items() if have.get(p) != h)
    assert not wrong, f"{run}: after checkout --force {rev}, wrong or missing: {wrong[:10]}"
    extra = set(have) - set(manifest)
    leaked = sorted(extra & committed)
    assert not leaked, f"{run}: checkout --force {rev} left files of other versions: {leaked[:10]}"
    status = json.loads(tools.pixvcs(repo, "status", "--json").stdout)
    assert status["clean"], f"{run}: status after checkout --force {rev}: {status}"
    assert extra <= set(status["untracked"]), f"{run}: {sorted(extra - set(status['untracked']))}"


def test_sigkill_at_random_moments_leaves_a_consistent_repository(
    tools: Tools, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    repo = tmp_path / "ds"
    tools.pixvcs(tmp_path, "init", str(repo))
    write_images(repo, [f"a/{i:03d}.jpg" for i in range(100)], seed=1)
    write_images(repo, [f"b/{i:03d}.png" for i in range(100)], seed=2)
    write_file(repo, "labels.csv", b"path,label\na/000.jpg,a\n")
    versions = Versions()
    durations: dict[str, float] = {}  # how long each operation runs unkilled, here and now
    versions.manifests["v1"] = _commit_version(tools, repo, "v1", "v1", durations)
    for i in range(30):
        (repo / f"a/{i:03d}.jpg").unlink()
    write_images(repo, [f"b/{i:03d}.png" for i in range(30)], seed=3)  # re-encoded
    write_images(repo, [f"c/{i:03d}.jpg" for i in range(40)], seed=4)
    versions.manifests["v2"] = _commit_version(tools, repo, "v2", "v2", durations)
    main = _main_commit(repo)
    versions.manifests[main] = versions.manifests["v2"]
    durations["checkout"] = _timed(tools, repo, "checkout", "v1")
    durations["checkout"] += _timed(tools, repo, "checkout", "main")
    durations["checkout"] /= 2
    killed = 0

    ops = ["add", "commit", "checkout"] * (ITERATIONS // 3)
    rng.shuffle(ops)
    for iteration, op in enumerate(ops):
        main_before = _main_commit(repo)
        staged: dict[str, str] | None = None
        # most of a short command's life is interpreter start-up: aim at its second half
        delay = rng.uniform(0.5, 1.0) * durations[op]
        if op == "add":
            staged = _mutate(repo, rng, iteration)
            run = Run(iteration, op, ("add", "."), delay)
        elif op == "commit":
            staged = _mutate(repo, rng, iteration)
            tools.pixvcs(repo, "add", ".")
            run = Run(iteration, op, ("commit", "-m", f"iteration {iteration}"), delay)
        else:
            current = versions.manifests[main_before]
            target = rng.choice([v for v in ("v1", "v2") if versions.manifests[v] != current])
            run = Run(iteration, op, ("checkout", target), delay)
        _run_and_kill(tools, repo, run)
        killed += not run.finished

        fsck = tools.pixvcs(repo, "fsck", check=False, timeout=60)
        assert fsck.returncode == 0, f"{run}: fsck failed:\n{fsck.stdout}{fsck.stderr}"

        main_now = _main_commit(repo)
        if main_now != main_before:
            # a commit is all there or not there at all
            assert op == "commit", f"{run}: main moved from {main_before} to {main_now}"
            assert _parents(repo, main_now) == [main_before], run
            assert staged is not None
            versions.manifests[main_now] = staged
        elif run.finished and op == "commit":
            pytest.fail(f"{run}: commit exited 0 but main did not move")

        committed = versions.committed_paths()
        checks = ["v1", "v2"] + ([main_now] if main_now != main else [])
        rng.shuffle(checks)
        for rev in [*checks, "main"]:
            manifest = versions.manifests[main_now if rev == "main" else rev]
            _verify_checkout(tools, repo, rev, manifest, committed, run)
        # next iteration starts on main with no untracked leftovers
        for rel in set(worktree_hashes(repo)) - set(versions.manifests[main_now]):
            (repo / rel).unlink()
    # not a timing assertion: with no kill inside a command, the test proved nothing
    assert killed >= ITERATIONS // 3, f"only {killed} of {ITERATIONS} commands were killed"


def test_sigkill_of_the_main_process_during_parallel_add_does_not_hold_the_lock(
    tools: Tools, tmp_path: Path
) -> None:
    """Only the pixvcs process is killed (as ``kill -9 PID`` or the OOM killer
    would): worker processes it started must not keep the repository locked."""
    repo = tmp_path / "ds"
    tools.pixvcs(tmp_path, "init", str(repo))
    write_images(repo, [f"a/{i:03d}.jpg" for i in range(400)], seed=9)
    objects = repo / ".pixvcs" / "lfs" / "objects"

    def published() -> bool:
        return any(files for _, _, files in os.walk(objects))

    p = _start(tools, repo, "add", "--jobs", "2", ".")
    try:
        deadline = time.monotonic() + 60
        while not published():
            assert p.poll() is None, "add finished before any object was seen; cannot test"
            assert time.monotonic() < deadline, "no media object appeared within 60 s"
            time.sleep(0.002)
        os.kill(p.pid, signal.SIGKILL)  # the main process only, not its workers
        p.wait()

        try:
            proc = tools.pixvcs(repo, "add", ".", check=False, timeout=LOCK_WAIT_LIMIT)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the next 'pixvcs add' was still waiting for the repository lock after "
                f"{LOCK_WAIT_LIMIT:.0f}s: the killed command's worker processes hold it"
            )
        assert proc.returncode == 0, proc.stderr
        tools.pixvcs(repo, "commit", "-m", "after the crash")
        assert tools.pixvcs(repo, "fsck").returncode == 0
        status = json.loads(tools.pixvcs(repo, "status", "--json").stdout)
        assert status["clean"] and not status["untracked"], status
    finally:
        _kill_group(p)  # workers orphaned by the kill, if any survived it
