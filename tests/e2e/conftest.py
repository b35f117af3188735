"""Fixtures for end-to-end tests: real ``git`` / ``git lfs`` binaries and the
``pixvcs`` command line run as subprocesses, in an environment that never
reads or writes the user's own git configuration."""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import subprocess
import sys
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
