"""Fixtures for end-to-end tests: real ``git`` / ``git lfs`` binaries and the
``pixvcs`` command line run as subprocesses, in an environment that never
reads or writes the user's own git configuration."""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

# variables that would point git at another repository or another config
_GIT_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CONFIG",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_COUNT",
    "GIT_CEILING_DIRECTORIES",
    "GIT_LFS_SKIP_SMUDGE",
    "GIT_NAMESPACE",
)


def image_bytes(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (32, 32)) -> bytes:
    """A small deterministic image: a seeded background colour plus seeded noise."""
    rng = random.Random(seed)
    im = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    px = im.load()
    assert px is not None
    for _ in range(40):
        px[rng.randrange(size[0]), rng.randrange(size[1])] = (
            rng.randrange(256),
            rng.randrange(256),
            rng.randrange(256),
        )
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def write_file(root: Path, rel: str, data: bytes) -> None:
    dest = root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)


def write_images(root: Path, paths: list[str], seed: int) -> dict[str, bytes]:
    """Write one image per path (PNG for ``.png`` names, JPEG otherwise)."""
    out = {}
    for n, rel in enumerate(paths):
        data = image_bytes(seed * 100_003 + n, "PNG" if rel.endswith(".png") else "JPEG")
        write_file(root, rel, data)
        out[rel] = data
    return out


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def worktree_hashes(root: Path) -> dict[str, str]:
    """Every file of a work tree (``.pixvcs`` and ``.git`` excluded): path -> sha256."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in (".pixvcs", ".git")]
        for name in filenames:
            full = Path(dirpath) / name
            out[full.relative_to(root).as_posix()] = sha256(full.read_bytes())
    return out


@dataclass
class Tools:
    """Runs real binaries with an isolated HOME and git configuration."""

    env: dict[str, str]
    home: Path

    def run(
        self,
        args: list[str],
        *,
        cwd: Path | None = None,
        check: bool = True,
        timeout: float = 120,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self.env, **(extra_env or {}))
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"{' '.join(map(str, args))} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def git(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run(["git", *args], **kw)  # type: ignore[arg-type]

    def git_dir(self, repo: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        """git on a pixvcs repository: its git directory plus its work tree."""
        return self.git("--git-dir", str(repo / ".pixvcs"), "--work-tree", str(repo), *args, **kw)

    def pixvcs_argv(self, repo: Path, *args: str) -> list[str]:
        return [sys.executable, "-m", "pixvcs.cli", "-C", str(repo), *args]

    def pixvcs(self, repo: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run(self.pixvcs_argv(repo, *args), **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def _binaries() -> None:
    # CI installs both (make system-deps); a missing binary is a failure, not a skip
    assert shutil.which("git"), "git is not installed (make system-deps)"
    assert shutil.which("git-lfs"), "git-lfs is not installed (make system-deps)"


@pytest.fixture
def tools(tmp_path: Path, _binaries: None) -> Tools:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in _GIT_VARS}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME="Ada Tester",
        GIT_AUTHOR_EMAIL="ada@example.org",
        GIT_COMMITTER_NAME="Ada Tester",
        GIT_COMMITTER_EMAIL="ada@example.org",
        LC_ALL="C",
        LANG="C",
        CI="1",
    )
    return Tools(env=env, home=home)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on loopback (CI installs Debian's: make system-deps)."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (make system-deps installs it)"
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert proc.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Workers:
    """`pixvcs worker` processes for one repository, each in its own process group."""

    def __init__(self, tools: Tools, repo: Path, broker: str, logdir: Path) -> None:
        self.tools, self.repo, self.broker, self.logdir = tools, repo, broker, logdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, n: int = 1, *extra: str) -> None:
        for _ in range(n):
            log = open(self.logdir / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
            argv = self.tools.pixvcs_argv(
                self.repo, "worker", "--broker", self.broker, "--concurrency", "1", *extra
            )
            self.procs.append(
                subprocess.Popen(
                    argv, env=self.tools.env, stdout=log, stderr=log, start_new_session=True
                )
            )
        self.wait_ready(len(self.procs))

    def wait_ready(self, n: int) -> None:
        from pixvcs import Repo
        from pixvcs.tasks import _workers_serving, make_app, queue_for

        app = make_app(self.broker)
        repo = Repo.open(str(self.repo))
        queue = queue_for(repo)
        repo.close()
        deadline = time.monotonic() + 60
        while len(_workers_serving(app, queue)) < n:
            dead = [p for p in self.procs if p.poll() is not None]
            assert not dead, f"a worker exited: {self.logs()}"
            assert time.monotonic() < deadline, f"workers not ready: {self.logs()}"
            time.sleep(0.3)

    def kill(self, index: int) -> None:
        os.killpg(self.procs[index].pid, signal.SIGKILL)
        self.procs[index].wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.logdir.glob("*.log"))

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


@pytest.fixture
def workers_for(tools: Tools, redis_url: str, tmp_path: Path) -> Iterator[object]:
    made: list[Workers] = []

    def make(repo: Path) -> Workers:
        logdir = tmp_path / f"logs-{len(made)}"
        logdir.mkdir()
        w = Workers(tools, repo, redis_url, logdir)
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop()
