"""A crawled image is recorded with exactly the facts `pixvcs add` records for the same
file (the same validating decode and the same perceptual-hash recipe), whether it is
examined on the crawl's threads, in its examining processes or in crawling processes
that fetch too; and what does not decode
fully is refused either way."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pixvcs import Repo
from pixvcs.crawl import CrawlOptions, CrawlRequest, pipeline, start
from pixvcs.crawl.chunk import ExaminerError, ProcessExaminer, can_fork, examine
from pixvcs.imageinfo import inspect_image
from pixvcs.media import MediaStore
from tests.crawl.site import Site, image, pattern_image, resized_copy

AUTHOR = "Crawl Test <crawl@example.org>"
OPTS = CrawlOptions(per_host_rate=0, workers=4, chunk_size=3, retries=0, backoff=0.0)


def _images() -> dict[str, bytes]:
    """JPEGs large enough for draft decoding (the reduced-scale decode), small ones,
    PNG, GIF and WebP."""
    out: dict[str, bytes] = {}
    for i in range(6):
        out[f"/big{i}.jpg"] = resized_copy(pattern_image(100 + i), (301 + 17 * i, 267 + 9 * i))
        out[f"/small{i}.jpg"] = pattern_image(200 + i, (64, 48), fmt="JPEG")
        out[f"/p{i}.png"] = pattern_image(300 + i, (96 + i, 80))
    out["/a.gif"] = pattern_image(400, (90, 70), fmt="GIF")
    out["/a.webp"] = pattern_image(401, (150, 100), fmt="WEBP")
    return out


# the examining processes are forked: every platform CI runs on has fork, and a
# test that cannot run here is a failure, not a skip
assert can_fork(), "these tests need os.fork (the crawl's examining processes are forked)"
TRUNCATED = resized_copy(pattern_image(500), (320, 240))[:-600]


def _facts(repo: Repo, oids: list[str]) -> dict[str, tuple[object, ...]]:
    rows = repo.catalog.get_many(oids)
    return {o: (r.width, r.height, r.format, r.mode, r.phash) for o, r in rows.items()}


@pytest.mark.parametrize("mode", ["threads", "examiners", "crawl-processes"])
def test_crawl_records_what_add_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    images = _images()
    monkeypatch.setattr(pipeline, "EXAMINE_IN_PROCESSES_FROM", 10**9)
    monkeypatch.setattr(pipeline, "CRAWL_IN_PROCESSES_FROM", 10**9)
    if mode == "examiners":  # examine in worker processes even for this small crawl
        monkeypatch.setattr(pipeline, "EXAMINE_PROCESSES", 2)
        monkeypatch.setattr(pipeline, "EXAMINE_IN_PROCESSES_FROM", 1)
    elif mode == "crawl-processes":  # fetch and examine in 2 crawling processes
        monkeypatch.setattr(pipeline, "CRAWL_PROCESSES", 2)
        monkeypatch.setattr(pipeline, "CRAWL_IN_PROCESSES_FROM", 1)
    site = Site({p: image(d) for p, d in images.items()})
    site["/truncated.jpg"] = image(TRUNCATED, "image/jpeg")
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"http://h.example{p}\n" for p in [*images, "/truncated.jpg"]))

    crawled = Repo.init(str(tmp_path / "crawled"))
    state = start(
        crawled,
        CrawlRequest(urls_file=str(urls), label="web"),
        OPTS,
        author=AUTHOR,
        transport=site.transport(),
    )
    assert state.summary["added"] == len(images)
    assert state.summary["reasons"]["invalid"] == {"does-not-decode": 1}

    added = Repo.init(str(tmp_path / "added"))
    os.makedirs(tmp_path / "added" / "web")
    for p, data in images.items():
        (tmp_path / "added" / "web" / p.lstrip("/")).write_bytes(data)
    added.add(["."])

    oids = sorted(hashlib.sha256(d).hexdigest() for d in images.values())
    want = _facts(added, oids)
    assert sorted(want) == oids and all(f[4] for f in want.values())
    assert _facts(crawled, oids) == want
    # the provenance records and the job's outcomes carry the same hashes
    stored = {o.oid: o.phash for o in state.outcomes.values() if o.oid}
    assert stored == {o: f[4] for o, f in want.items()}


def test_process_examiner_examines_as_this_process_does(tmp_path: Path) -> None:
    bodies = [*_images().values(), TRUNCATED, b"not an image at all", b""]
    here = MediaStore.create(str(tmp_path / "here"))
    there = MediaStore.create(str(tmp_path / "there"))
    with ProcessExaminer(OPTS, there.root, 2) as examiner:
        got = [examiner(b) for b in bodies]
    want = [examine(b, OPTS, lambda d, o: here.add_bytes(d, oid=o)) for b in bodies]
    assert got == want
    assert [g.reason for g in got[-3:]] == ["does-not-decode", "not-an-image", "not-an-image"]
    for body, g in zip(bodies, got, strict=True):
        if g.info is not None:
            assert g.info == inspect_image(body)
            assert g.oid is not None and there.read(g.oid) == body  # stored by the worker


def test_answers_match_askers_when_many_threads_share_the_workers(tmp_path: Path) -> None:
    """Many threads share two workers: each gets the verdict on its own image."""
    from concurrent.futures import ThreadPoolExecutor

    bodies = [pattern_image(n) for n in range(40)] + [b"not an image"] * 5
    store = MediaStore.create(str(tmp_path / "m"))
    with ProcessExaminer(OPTS, store.root, 2) as examiner, ThreadPoolExecutor(16) as pool:
        got = list(pool.map(examiner, bodies))
    for body, g in zip(bodies, got, strict=True):
        if body == b"not an image":
            assert g.oid is None and g.reason == "not-an-image"
        else:
            assert g.oid == hashlib.sha256(body).hexdigest() and g.info == inspect_image(body)


def test_a_dead_examiner_is_an_error_not_a_hang(tmp_path: Path) -> None:
    examiner = ProcessExaminer(OPTS, MediaStore.create(str(tmp_path / "m")).root, 1)
    try:
        for proc in examiner._procs:
            proc.kill()
            proc.join()
        assert not examiner.alive
        for _ in range(3):  # every caller hears of it; none waits for a worker forever
            with pytest.raises(ExaminerError):
                examiner(pattern_image(1))
    finally:
        examiner.close()
