"""The coordinator's progress while chunks run elsewhere (tasks._wait)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pixvcs import tasks
from pixvcs.crawl.job import JobState, JobStore
from pixvcs.crawl.options import CrawlOptions
from pixvcs.crawl.sources import Item

JOB = "20260101T120000Z-1a2b3c"


@dataclass
class _Result:
    app: _App
    tid: str

    def ready(self) -> bool:
        return self.app.ready(self.tid)

    def failed(self) -> bool:
        return False

    @property
    def result(self) -> Any:
        return self.app.values.get(self.tid)


@dataclass
class _App:
    """A result backend on a clock: a task is ready from its tick on."""

    ready_at: dict[str, int]
    values: dict[str, Any] = field(default_factory=dict)
    ticks: int = 0

    def AsyncResult(self, tid: str) -> _Result:  # noqa: N802 - Celery's name
        return _Result(self, tid)

    def ready(self, tid: str) -> bool:
        return self.ticks >= self.ready_at[tid]


def test_progress_counts_chunks_finished_on_other_machines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No journal here (the workers are elsewhere): the URLs of finished chunks,
    as the result backend reports them, move the progress, across waves."""
    store = JobStore(str(tmp_path / "state"), str(tmp_path / "tmp"))
    items = [Item(f"http://example.invalid/{i}.jpg") for i in range(10)]
    state = JobState(JOB, "main", None, None, CrawlOptions(), [], items=items)
    state.tasks = {"callback": "cb1", "wave": [["c1", 4], ["c2", 4], ["c3", 2]], "wave_base": 0}
    store.save(state)
    app = _App({"c1": 1, "c2": 3, "c3": 6, "cb1": 10, "cb2": 16, "c4": 13})
    app.values = {"cb1": {"job": JOB, "next": "cb2"}, "cb2": {"job": JOB, "commit": "x"}}
    seen: list[tuple[str, int, int]] = []

    def sleep(_s: float) -> None:
        app.ticks += 1
        if app.ticks == 9:  # the commit task saved the second wave (2 lost URLs)
            nxt = store.load(JOB)
            nxt.tasks.update(callback="cb2", wave=[["c4", 2]], wave_base=8)
            store.save(nxt)

    monkeypatch.setattr(tasks.time, "sleep", sleep)
    tasks._wait(app, store, state, lambda stage, done, total: seen.append((stage, done, total)))  # type: ignore[arg-type]
    fetch = [done for stage, done, total in seen if stage == "fetch"]
    assert fetch == sorted(fetch), "progress never goes back"
    assert 8 in fetch and 10 in fetch  # chunks are looked at every fourth poll
    assert fetch[0] == 0 and max(fetch) == 10
    assert seen[-1] == ("commit", 1, 1)
    assert all(total == 10 for _, _, total in seen if _ == "fetch")
