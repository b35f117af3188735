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
