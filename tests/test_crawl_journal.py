"""Following a job's chunk journals as workers append to them; images a power loss
left short are fetched again."""

from __future__ import annotations

import os
from pathlib import Path

from pixvcs import Repo
from pixvcs.crawl import CrawlOptions, CrawlRequest, start
from pixvcs.crawl.chunk import Outcome
from pixvcs.crawl.job import JobStore, JournalProgress
from pixvcs.crawl.pipeline import _base_facts, forget_lost_images, wave
from tests.crawl.site import Site, image, pattern_image

JOB = "20260101T120000Z-1a2b3c"


def test_progress_reads_only_what_was_appended(tmp_path: Path) -> None:
    store = JobStore(str(tmp_path / "state"), str(tmp_path / "tmp"))
    progress = JournalProgress(store, JOB)
    assert progress.count() == 0  # no journal yet
    for n in range(3):
        store.append_outcome(JOB, 0, Outcome(f"http://h/{n}", "stored", oid="a" * 64))
    store.append_outcome(JOB, 1, Outcome("http://h/x", "failed", "http-404"))
    assert progress.count() == 4
    # a line still being written is not counted until it is whole
    path = os.path.join(store.journal_dir(JOB), "000001.jsonl")
    with open(path, "ab") as f:
        f.write(b'{"status": "invalid", "url": "http://h/y"')
    assert progress.count() == 4
    with open(path, "ab") as f:
        f.write(b"}\n")
    # the same URL journalled again (a redelivered chunk) counts once
    store.append_outcome(JOB, 2, Outcome("http://h/0", "stored", oid="a" * 64))
    assert progress.count() == 5
    assert progress.count() == len(store.read_journal(JOB))


def test_a_torn_line_is_skipped_as_read_journal_skips_it(tmp_path: Path) -> None:
    store = JobStore(str(tmp_path / "state"), str(tmp_path / "tmp"))
    os.makedirs(store.journal_dir(JOB))
    with open(os.path.join(store.journal_dir(JOB), "000000.jsonl"), "wb") as f:
        f.write(b'{"status": "stored", "url": "http://h/a", "oi')  # killed mid-write
    store.append_outcome(JOB, 0, Outcome("http://h/b", "failed", "timeout"))
    progress = JournalProgress(store, JOB)
    assert progress.count() == len(store.read_journal(JOB)) == 0  # one torn line
    store.append_outcome(JOB, 0, Outcome("http://h/c", "failed", "timeout"))
    assert progress.count() == len(store.read_journal(JOB)) == 1


def test_images_a_power_loss_left_short_are_fetched_again(tmp_path: Path) -> None:
    repo = Repo.init(str(tmp_path / "r"))
    site = Site({f"/{n}.png": image(pattern_image(40 + n)) for n in range(3)})
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"http://h.example/{n}.png\n" for n in range(3)))
    opts = CrawlOptions(per_host_rate=0, retries=0)
    state = start(repo, CrawlRequest(urls_file=str(urls)), opts, transport=site.transport())
    assert forget_lost_images(repo, state) == []
    short, gone = (state.outcomes[f"http://h.example/{n}.png"] for n in (0, 1))
    assert short.oid and gone.oid
    for oid in (short.oid, gone.oid):
        os.chmod(repo.media.path(oid), 0o644)
    with open(repo.media.path(short.oid), "r+b") as f:
        f.truncate(10)
    os.unlink(repo.media.path(gone.oid))
    assert sorted(forget_lost_images(repo, state)) == [short.url, gone.url]
    todo = wave(repo, state, _base_facts(repo, None), retry_failed=False)
    assert sorted(it.url for it in todo) == [short.url, gone.url]
