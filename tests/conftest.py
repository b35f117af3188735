from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pixvcs import Repo

AUTHOR = "Test <test@example.org>"


@pytest.fixture
def repo(tmp_path: os.PathLike[str]) -> Iterator[Repo]:
    r = Repo.init(str(tmp_path / "ds"))
    try:
        yield r
    finally:
        r.close()


def race_pushes(repos: list[Repo]) -> list[str]:
    """Push every repository at the same moment (one thread each); returns
    "ok" for a push that landed and the RefConflict message for one refused."""
    import threading

    from pixvcs import RefConflict

    outcomes: list[str] = []
    barrier = threading.Barrier(len(repos))

    def go(repo: Repo) -> None:
        barrier.wait()
        try:
            repo.push()
            outcomes.append("ok")
        except RefConflict as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=go, args=(r,)) for r in repos]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes
