"""How the coordinator of a Celery job asks for workers and cuts the chunks
(tasks._active_queues, tasks._dispatch), without a broker."""

from __future__ import annotations

from typing import Any

import pytest

from pixvcs import tasks
from pixvcs.crawl.job import JobState
from pixvcs.crawl.options import CrawlOptions
from pixvcs.crawl.sources import Item

JOB = "20260101T120000Z-1a2b3c"


class _Control:
    def __init__(self, answers: dict[float, dict[str, Any]]) -> None:
        self.answers = answers
        self.asked: list[float] = []

    def inspect(self, timeout: float) -> Any:
        self.asked.append(timeout)
        control = self

        class _Inspect:
            def active_queues(self) -> dict[str, Any] | None:
                return control.answers.get(timeout)

        return _Inspect()


class _App:
    def __init__(self, answers: dict[float, dict[str, Any]]) -> None:
        self.control = _Control(answers)


SERVING = {"pixvcs-1@h": [{"name": "q"}]}


def test_a_short_broadcast_first_and_a_longer_one_only_when_it_found_none() -> None:
    quick = _App({0.25: SERVING, 1.0: SERVING})
    assert tasks._workers_serving(quick, "q") == ["pixvcs-1@h"]  # type: ignore[arg-type]
    assert quick.control.asked == [0.25]
    slow = _App({0.25: {}, 1.0: SERVING})  # answers only within the longer wait
    assert tasks._workers_serving(slow, "q") == ["pixvcs-1@h"]  # type: ignore[arg-type]
    assert slow.control.asked == [0.25, 1.0]
    none = _App({})
    assert tasks._workers_serving(none, "q") == []  # type: ignore[arg-type]
    assert none.control.asked == [0.25, 1.0]


@pytest.mark.parametrize("rate, size", [(0.0, tasks.MAX_CHUNK), (4.0, tasks.MAX_CHUNK_PACED)])
def test_chunks_are_bigger_without_a_pace_per_host(
    monkeypatch: pytest.MonkeyPatch, rate: float, size: int
) -> None:
    import celery

    sent: list[list[Any]] = []

    class _Chord:
        def __init__(self, header: list[Any], app: Any) -> None:
            sent.append(header)

        def __call__(self, body: Any) -> Any:
            class _Result:
                id = "callback"
                parent = None

            return _Result()

    monkeypatch.setattr(celery, "chord", _Chord)
    app = tasks.make_app("redis://127.0.0.1:1/0")  # never connected to
    items = [Item(f"http://example.invalid/{i}.jpg") for i in range(5000)]
    state = JobState(JOB, "main", None, None, CrawlOptions(per_host_rate=rate), [], items=items)
    assert tasks._dispatch(app, "q", state, items, None, workers=1) == "callback"
    (header,) = sent
    sizes = [len(sig.args[4]) for sig in header]
    assert sizes[0] == size and sum(sizes) == 5000
    assert state.tasks["chunks"] == len(header)
