"""The in-process crawl in forked crawling processes (pixvcs/crawl/procs.py): each
fetches, examines and stores its share; politeness holds across them; a process
that dies is an error naming it, and the job resumes without fetching again what
was journalled."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pixvcs import Repo
from pixvcs.cli import main
from pixvcs.crawl import CrawlOptions, CrawlRequest, pipeline, procs, resume, start
from pixvcs.crawl.chunk import can_fork
from pixvcs.crawl.job import JobStore
from pixvcs.crawl.procs import CrawlProcessError, split_options
from tests.crawl.site import Resp, Site, always, bomb_png, pattern_image, sequence

AUTHOR = "Crawl Test <crawl@example.org>"
assert can_fork(), "the crawling processes are forked: a platform without fork fails here"


class InFlight:
    """Routes that count the requests in flight at once (from the route's call
    until the body is sent, the delay included), and the most seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def route(self, data: bytes, delay: float) -> Any:
        def body() -> Iterator[bytes]:
            with self.lock:
                self.now -= 1
            yield data

        def respond(n: int) -> Resp:
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            return Resp(200, body, {"content-type": "image/png"}, delay=delay)

        return respond


@pytest.fixture
def two_processes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Crawl in 2 crawling processes whatever the size; records each start's count."""
    monkeypatch.setattr(pipeline, "CRAWL_IN_PROCESSES_FROM", 1)
    monkeypatch.setattr(pipeline, "CRAWL_PROCESSES", 2)
    started: list[int] = []
    real = procs.CrawlProcesses.__init__

    def spy(self: procs.CrawlProcesses, *args: Any) -> None:
        started.append(args[-1])
        real(self, *args)

    monkeypatch.setattr(procs.CrawlProcesses, "__init__", spy)
    return started


def _served(data: bytes) -> Any:
    return lambda n: Resp(200, data, {"content-type": "image/png"})


def _png(k: int) -> Any:
    return _served(pattern_image(k))


def _urls(tmp_path: Path, base: str, paths: list[str]) -> str:
    f = tmp_path / "urls.txt"
    f.write_text("".join(f"{base}{p}\n" for p in paths))
    return str(f)


def test_split_options_keeps_politeness() -> None:
    opts = CrawlOptions(per_host_rate=0, per_host_concurrency=5, workers=8)
    each = split_options(opts, 2)
    assert each is not None and each.per_host_concurrency == 2 and each.workers == 8
    # a pace per host, or fewer slots than processes: not split (threads crawl)
    assert split_options(CrawlOptions(per_host_rate=4.0, per_host_concurrency=8), 2) is None
    assert split_options(CrawlOptions(per_host_rate=0, per_host_concurrency=1), 2) is None


def test_processes_crawl_keep_per_host_concurrency(
    tmp_path: Path, two_processes: list[int]
) -> None:
    counter = InFlight()
    paths = [f"/i{k}.png" for k in range(60)]
    site = Site({p: counter.route(pattern_image(k), 0.04) for k, p in enumerate(paths)})
    repo = Repo.init(str(tmp_path / "r"))
    opts = CrawlOptions(per_host_rate=0, per_host_concurrency=4, workers=8, chunk_size=4)
    with site.serve() as base:
        state = start(
            repo, CrawlRequest(urls_file=_urls(tmp_path, base, paths), label="web"), opts,
            author=AUTHOR,
        )  # fmt: skip
    assert two_processes == [2]
    assert state.status == "done" and state.summary["added"] == 60
    # each process had 2 of the host's 4 slots, and both used them at once
    assert 2 < counter.most <= 4
    # counted in the processes, summed: the images, and robots.txt once in each
    assert site.log.count("/robots.txt") == 2
    assert state.summary["requests"] == 62
    assert sorted(site.hits()) == sorted(paths) and set(site.hits().values()) == {1}
    images = {e.path for e in repo.ls(state.commit) if e.path.startswith("web/")}
    assert len(images) == 60


def test_a_pace_per_host_crawls_on_threads(tmp_path: Path, two_processes: list[int]) -> None:
    paths = [f"/i{k}.png" for k in range(6)]
    site = Site({p: _png(k) for k, p in enumerate(paths)})
    repo = Repo.init(str(tmp_path / "r"))
    opts = CrawlOptions(per_host_rate=200.0, per_host_concurrency=4, workers=4)
    with site.serve() as base:
        state = start(
            repo, CrawlRequest(urls_file=_urls(tmp_path, base, paths), label="web"), opts,
            author=AUTHOR,
        )  # fmt: skip
    assert two_processes == []  # the processes could not share one pace
    assert state.summary["added"] == 6


def test_a_killed_crawl_process_fails_the_job_and_it_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_processes: list[int]
) -> None:
    paths = [f"/i{k}.png" for k in range(40)]
    site = Site({p: _png(k) for k, p in enumerate(paths)})
    repo = Repo.init(str(tmp_path / "r"))
    opts = CrawlOptions(per_host_rate=0, per_host_concurrency=2, workers=2, chunk_size=2)
    real = procs.process_item

    def dies_on_i30(item: Any, *args: Any) -> Any:
        if item.url.endswith("/i30.png"):
            os.kill(os.getpid(), signal.SIGKILL)  # in the crawling process, mid-job
        return real(item, *args)

    monkeypatch.setattr(procs, "process_item", dies_on_i30)
    with site.serve() as base:
        request = CrawlRequest(urls_file=_urls(tmp_path, base, paths), label="web")
        with pytest.raises(CrawlProcessError, match=r"crawling process died .*exit code -9"):
            start(repo, request, opts, author=AUTHOR)
        store = JobStore(repo.state_dir, repo.tmp_dir)
        (job,) = store.jobs()
        journalled = store.read_journal(job)
        assert journalled and all(o.status == "stored" for o in journalled.values())
        assert len(journalled) < 40
        before = site.hits()

        monkeypatch.setattr(procs, "process_item", real)
        state = resume(repo, job, author=AUTHOR)
    assert state.status == "done" and state.summary["added"] == 40
    after = site.hits()
    for url in journalled:  # stored before the kill: not fetched again
        path = url[len(base) :]
        assert before[path] == after[path] == 1
    assert set(after) == set(paths)


def test_max_images_waves_reuse_the_processes(tmp_path: Path, two_processes: list[int]) -> None:
    """--max-images fetches in waves of what is still needed; the crawling processes
    serve every wave, and URLs never needed are never fetched."""
    a = pattern_image(1)
    routes = {"/a.png": _served(a), "/a-copy.png": _served(a)}
    routes.update({f"/{n}.png": _png(k) for k, n in enumerate("bcdef", start=2)})
    site = Site(routes)
    order = ["/a.png", "/a-copy.png", "/b.png", "/c.png", "/d.png", "/e.png", "/f.png"]
    repo = Repo.init(str(tmp_path / "r"))
    opts = CrawlOptions(per_host_rate=0, per_host_concurrency=2, workers=2, chunk_size=1)
    with site.serve() as base:
        request = CrawlRequest(urls_file=_urls(tmp_path, base, order), max_images=3)
        state = start(repo, request, opts, author=AUTHOR)
    assert two_processes == [2]  # started once, for both waves
    s = state.summary
    assert (s["added"], s["duplicates"], s["skipped"]) == (3, 1, 3)
    # wave 1: a, a-copy (a duplicate), b; wave 2: c; d, e and f were never needed
    assert sorted(site.hits()) == ["/a-copy.png", "/a.png", "/b.png", "/c.png"]


def test_cli_crawl_in_processes_matches_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_processes: list[int]
) -> None:
    """`pixvcs crawl --json` over good and broken URLs: crawling processes and the
    fetching threads report the same outcomes and commit the same images."""
    good = {f"/img/{k}.png": pattern_image(1000 + k) for k in range(70)}

    def site() -> Site:
        return Site(
            {
                "/robots.txt": always(Resp(200, b"User-agent: *\nDisallow: /private/\n")),
                **{p: _served(d) for p, d in good.items()},
                "/dup.png": _served(good["/img/0.png"]),
                "/flaky.png": sequence(
                    Resp(500), Resp(200, pattern_image(2000), {"content-type": "image/png"})
                ),
                "/truncated.png": always(
                    Resp(200, pattern_image(2001), {"content-type": "image/png"}, truncate=100)
                ),
                "/page.jpg": always(
                    Resp(200, b"<html>no</html>" * 8, {"content-type": "image/jpeg"})
                ),
                "/bomb.png": _served(bomb_png()),
                "/loop": always(Resp(302, headers={"location": "/loop"})),
                "/private/x.png": _png(2002),
            }
        )

    paths = [*good, "/dup.png", "/flaky.png", "/truncated.png", "/page.jpg", "/bomb.png",
             "/loop", "/private/x.png", "/missing.png"]  # fmt: skip
    results = {}
    for mode in ("processes", "threads"):
        if mode == "threads":
            monkeypatch.setattr(pipeline, "CRAWL_IN_PROCESSES_FROM", 10**9)
        repo = tmp_path / mode
        Repo.init(str(repo)).close()
        served = site()
        with served.serve() as base:
            out = CliRunner().invoke(
                main,
                [
                    "-C",
                    str(repo),
                    "crawl",
                    "--urls",
                    _urls(tmp_path, base, paths),
                    "--label",
                    "web",
                    "--rate",
                    "0",
                    "--per-host",
                    "4",
                    "--workers",
                    "4",
                    "--retries",
                    "1",
                    "--json",
                ],  # fmt: skip
                catch_exceptions=False,
            )
        assert out.exit_code == 0, out.output
        result = json.loads(out.stdout)
        with Repo.open(str(repo)) as r:
            images = {(e.path, e.oid) for e in r.ls(result["commit"]) if e.path.startswith("web/")}
        results[mode] = (result, images)
        assert two_processes == [2]  # the first run only
        assert served.log.count("/flaky.png") == 2 and "/private/x.png" not in served.log

    (procs_result, procs_images), (threads_result, threads_images) = results.values()
    assert procs_images == threads_images and len(procs_images) == 71  # 70 + flaky
    for key in ("added", "duplicates", "invalid", "failed", "reasons"):
        assert procs_result[key] == threads_result[key], key
    assert procs_result["reasons"]["failed"] == {
        "http-404": 1, "robots": 1, "too-many-redirects": 1, "network": 1,
    }  # fmt: skip
    assert procs_result["reasons"]["invalid"] == {"decompression-bomb": 1, "not-an-image": 1}
