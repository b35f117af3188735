"""The crawl pipeline, in-process: discover -> fetch/validate/store (chunks on a thread
pool; with several cores, the validating decode, hashing and storing in worker
processes: :class:`~pixvcs.crawl.chunk.ProcessExaminer`) -> deduplicate -> one commit
on the crawl branch.

:func:`start` begins a job, :func:`resume` continues an interrupted one; both return
the job's final :class:`~pixvcs.crawl.job.JobState`. The work is split into chunks
processed by :func:`pixvcs.crawl.chunk.process_chunk`; the in-process pool here is
the embedded default, and a Celery chord over the same function is the distributed
one (docs/crawling.md).
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from ..errors import CrawlInputError, UsageError
from ..imageinfo import ImageInfo, InvalidImage, inspect_image
from ..provenance import PROVENANCE_DIR
from .chunk import (
    FAILED,
    INVALID,
    STORED,
    Examiner,
    Outcome,
    ProcessExaminer,
    can_fork,
    process_chunk,
)
from .dedupe import Candidate, Decision, dedupe
from .fetch import Fetcher
from .job import JobState, JobStore, check_job_id, new_job_id
from .options import CrawlOptions
from .pages import discover
from .procs import CrawlProcesses, split_options
from .providers import TemplateProvider
from .sources import Item, check_label, check_url, read_keyword_config, read_url_file

if TYPE_CHECKING:
    from ..repo import Repo

Progress = Callable[[str, int, int], None]

#: Folder of images whose source gave no label.
DEFAULT_LABEL = "unlabelled"
#: File extension of each format, for the paths of added images.
EXTENSIONS = {
    "JPEG": "jpg",
    "PNG": "png",
    "GIF": "gif",
    "WEBP": "webp",
    "BMP": "bmp",
    "TIFF": "tif",
}
#: Trailer naming the job in the commit message (how a re-run finds its commit).
JOB_TRAILER = "Pixvcs-Crawl-Job"
#: Progress is shown this often while fetching (outcomes are journalled as they come).
SAVE_INTERVAL = 1.0
#: URLs to fetch from which images are examined in worker processes (:func:`_examiner`).
EXAMINE_IN_PROCESSES_FROM = 64
#: Worker processes examining images: None is one per core, at most 8 (and none on
#: one core, where they would only add the trip through a pipe).
EXAMINE_PROCESSES: int | None = None
#: URLs to fetch from which the crawl runs in crawling processes (:func:`_processes`).
CRAWL_IN_PROCESSES_FROM = 64
#: Crawling processes: None is one per core, at most 8.
CRAWL_PROCESSES: int | None = None


class _Stopped(Exception):
    """Ends a chunk early when the job is already failing (never escapes)."""


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


@dataclass(frozen=True, slots=True)
class CrawlRequest:
    """What to crawl. Paths are absolute (the CLI resolves them)."""

    urls_file: str | None = None
    pages: Sequence[str] = ()
    depth: int = 0
    config_file: str | None = None
    search_url: str | None = None
    label: str | None = None
    branch: str | None = None
    base: str | None = None
    max_images: int | None = None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pixvcs")
    except PackageNotFoundError:  # running from a source tree
        return "0"


def contact_from_config(repo: Repo) -> str | None:
    """``pixvcs.crawlcontact`` from the repository's git config, if set."""
    try:
        value = repo.git.get_config().get((b"pixvcs",), b"crawlcontact")
    except KeyError:
        return None
    text = value.decode("utf-8", "replace").strip()
    return text or None


def _sources(request: CrawlRequest) -> list[dict[str, Any]]:
    """Validate the request and turn it into self-contained source records."""
    if request.label is not None:
        check_label(request.label, "--label")
    if request.depth < 0:
        raise CrawlInputError("--depth", 0, "must not be negative")
    if request.max_images is not None and request.max_images < 1:
        raise CrawlInputError("--max-images", 0, "must be at least 1")
    out: list[dict[str, Any]] = []
    if request.urls_file:
        read_url_file(request.urls_file, label=request.label)  # validate now, not later
        out.append({"kind": "urls", "path": request.urls_file, "label": request.label})
    for page in request.pages:
        check_url(page, "--page")
        out.append({"kind": "page", "url": page, "depth": request.depth, "label": request.label})
    if request.config_file:
        config = read_keyword_config(request.config_file)
        if not request.search_url:
            raise CrawlInputError(
                request.config_file, 0, "a keyword config needs a search provider: --search-url"
            )
        TemplateProvider(request.search_url)
        out.append(
            {
                "kind": "keywords",
                "path": request.config_file,
                "dataset_name": config.dataset_name,
                "categories": config.categories,
                "max_images": config.max_images,
                "provider": {"name": TemplateProvider.name, "template": request.search_url},
            }
        )
    elif request.search_url:
        raise CrawlInputError("--search-url", 0, "needs a keyword config (--config)")
    if not out:
        raise UsageError("nothing to crawl: give --urls, --page or --config")
    return out


def start(
    repo: Repo,
    request: CrawlRequest,
    options: CrawlOptions | None = None,
    *,
    author: str | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    progress: Progress = _no_progress,
    job_id: str | None = None,
    broker: str | None = None,
    shared_queue: str | None = None,
) -> JobState:
    """Start a crawl job and run it to the end; returns its final state. Raises
    :class:`CrawlInputError` (nothing fetched) for malformed input. With ``broker``
    (a Celery broker URL), the chunks go to ``pixvcs worker`` processes and the
    chord's callback commits (:mod:`pixvcs.tasks`); ``shared_queue`` sends the
    chunks to workers on other machines (docs/crawling.md)."""
    options = options or CrawlOptions()
    if options.contact is None:
        options = options.replace(contact=contact_from_config(repo))
    sources = _sources(request)
    job = check_job_id(job_id) if job_id else new_job_id()
    branch = request.branch or f"crawl/{job}"
    from ..repo import _check_ref_name

    _check_ref_name(branch)
    if branch in repo.branches():
        raise UsageError(f"branch {branch!r} already exists; choose another --branch")
    base_commit = repo.resolve(request.base) if request.base else repo.head_commit()
    base = request.base or repo.current_branch() or base_commit
    state = JobState(
        job=job,
        branch=branch,
        base=base,
        base_commit=base_commit,
        options=options,
        sources=sources,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        max_images=request.max_images,
    )
    store = JobStore(repo.state_dir, repo.tmp_dir)
    store.save(state)
    if broker is not None:
        from ..tasks import run_distributed

        return run_distributed(
            repo, store, state, broker, author, transport, sleep, progress, shared_queue
        )
    return _run(repo, store, state, author, transport, sleep, progress)


def resume(
    repo: Repo,
    job: str,
    *,
    author: str | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    progress: Progress = _no_progress,
    broker: str | None = None,
    shared_queue: str | None = None,
) -> JobState:
    """Continue an interrupted job: URLs whose images are already stored (or were
    found invalid) are not fetched again. A finished job is returned as it is."""
    store = JobStore(repo.state_dir, repo.tmp_dir)
    state = store.load(job)
    if state.status == "done":
        return state
    # what workers journalled but no callback recorded (a job interrupted with a broker)
    state.outcomes.update(store.read_journal(state.job))  # the journals are the newer
    if broker is not None:
        from ..tasks import run_distributed

        return run_distributed(
            repo, store, state, broker, author, transport, sleep, progress, shared_queue
        )
    return _run(repo, store, state, author, transport, sleep, progress)


def status(repo: Repo, job: str | None = None) -> list[JobState]:
    """One job's state, or every job's (oldest first)."""
    store = JobStore(repo.state_dir, repo.tmp_dir)
    states = [store.load(job)] if job is not None else [store.load(j) for j in store.jobs()]
    for state in states:  # a running (or interrupted) job's progress is in its journals
        if state.status != "done":
            state.outcomes.update(store.read_journal(state.job))
    return states


# -- running --------------------------------------------------------------------------
def _run(
    repo: Repo,
    store: JobStore,
    state: JobState,
    author: str | None,
    transport: httpx.BaseTransport | None,
    sleep: Callable[[float], None],
    progress: Progress,
) -> JobState:
    with store.running(state.job):
        fetcher = Fetcher(state.options, transport=transport, sleep=sleep, version=_version())
        try:
            state.error = None
            if state.items is None:
                _discover(state, fetcher, progress)
                state.status = "fetching"
                store.save(state)
            base = _base_facts(repo, state.base_commit)
            _fetch(repo, store, state, fetcher, progress, base)
            finish(repo, store, state, author, progress, base)
            state.summary["requests"] = fetcher.requests
        except BaseException as e:
            state.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            raise
        finally:
            fetcher.close()
            store.save(state)
    return state


def finish(
    repo: Repo,
    store: JobStore,
    state: JobState,
    author: str | None,
    progress: Progress = _no_progress,
    base: BaseFacts | None = None,
) -> None:
    """Deduplicate what was fetched and commit it on the job's branch; the job is done."""
    if base is None:
        base = _base_facts(repo, state.base_commit)
    state.status = "committing"
    repo.media.sync()  # the fetched images, written without fsync, durable before the commit
    store.save(state)
    _commit(repo, state, author, progress, base)
    state.status = "done"
    state.error = None


def discover_items(state: JobState, fetcher: Fetcher, progress: Progress) -> None:
    """Read the job's sources into ``state.items`` (pages and search results fetched)."""
    _discover(state, fetcher, progress)


def wave(repo: Repo, state: JobState, base: BaseFacts, *, retry_failed: bool) -> list[Item]:
    """The URLs to fetch next: those with no outcome (or, with ``retry_failed``, also
    failed ones; never invalid ones or images still stored) — with ``max_images``, only
    as many as are still needed, in source order."""
    assert state.items is not None
    todo = [
        it
        for it in state.items
        if (retry_failed and not _is_done(repo, state.outcomes.get(it.url)))
        or it.url not in state.outcomes
    ]
    if state.max_images is not None:
        need = state.max_images - len(_decide(state, base).kept)
        todo = todo[: max(0, need)]
    return todo


def _discover(state: JobState, fetcher: Fetcher, progress: Progress) -> None:
    raw: list[Item] = []
    state.page_failures = []
    total = len(state.sources)
    for n, src in enumerate(state.sources, 1):
        kind = src["kind"]
        if kind == "urls":
            raw.extend(read_url_file(src["path"], label=src.get("label")))
        elif kind == "page":
            items, failures = discover(
                fetcher, src["url"], depth=src.get("depth", 0), label=src.get("label"),
                max_pages=state.options.max_pages,
            )  # fmt: skip
            raw.extend(items)
            state.page_failures.extend(vars_of(f) for f in failures)
        elif kind == "keywords":
            provider = TemplateProvider(src["provider"]["template"])
            for cls, words in src["categories"].items():
                for word in words:
                    items, failures = provider.search(
                        word, src.get("max_images"), fetcher, label=cls
                    )
                    raw.extend(items)
                    state.page_failures.extend(vars_of(f) for f in failures)
        else:  # only written by this module; a hand-edited state file
            raise UsageError(f"unknown source kind {kind!r} in the job state")
        progress("discover", n, total)
    seen: set[str] = set()
    items_out: list[Item] = []
    state.skipped = []
    for item in raw:
        if item.url in seen:
            state.skipped.append({"url": item.url, "reason": "same-url"})
        else:
            seen.add(item.url)
            items_out.append(item)
    state.items = items_out


def vars_of(f: Any) -> dict[str, Any]:
    return {"url": f.url, "reason": f.reason, "detail": f.detail}


def _is_done(repo: Repo, outcome: Outcome | None) -> bool:
    """Nothing to fetch again: invalid content, or an image still in the store.
    Failed fetches (network, server) are tried again."""
    if outcome is None:
        return False
    if outcome.status == INVALID:
        return True
    if outcome.status != STORED or outcome.oid is None:
        return False
    # media are flushed in batches: after a power loss an object may exist with
    # fewer bytes than it should (fsck would find it); such a URL is fetched again
    try:
        return os.path.getsize(repo.media.path(outcome.oid)) == outcome.size
    except OSError:
        return False


def forget_lost_images(repo: Repo, state: JobState) -> list[str]:
    """Drop the stored outcomes whose image is missing from the media store or
    shorter than journalled (images are written without fsync and synced once,
    before the commit: a power loss before that can leave some short), so that
    their URLs are fetched again; returns those URLs."""
    lost = [u for u, o in state.outcomes.items() if o.status == STORED and not _is_done(repo, o)]
    for url in lost:
        del state.outcomes[url]
    return lost


def _fetch(
    repo: Repo,
    store: JobStore,
    state: JobState,
    fetcher: Fetcher,
    progress: Progress,
    base: BaseFacts,
) -> None:
    """Fetch every URL not done yet; with ``max_images``, only as many as needed:
    waves of (images still needed) URLs in source order, until enough distinct
    images are kept or the URLs run out."""
    assert state.items is not None
    total = len(state.items)
    todo = [it for it in state.items if not _is_done(repo, state.outcomes.get(it.url))]
    wanted = len(todo) if state.max_images is None else min(len(todo), state.max_images)
    procs = _processes(repo, fetcher, state.options, wanted)
    examiner = None if procs is not None else _examiner(repo, state.options, wanted)
    workers: Examiner | CrawlProcesses | None = procs or examiner
    ok = False
    try:
        if state.max_images is None:
            _fetch_some(repo, store, state, fetcher, progress, todo, total, workers)
            ok = True
            return
        tried: set[str] = set()
        while True:
            need = state.max_images - len(_decide(state, base).kept)
            todo = [
                it
                for it in state.items
                if it.url not in tried and not _is_done(repo, state.outcomes.get(it.url))
            ][: max(0, need)]
            if not todo:
                break
            tried.update(it.url for it in todo)
            _fetch_some(repo, store, state, fetcher, progress, todo, total, workers)
        progress("fetch", total, total)
        ok = True
    finally:
        if examiner is not None:
            examiner.close()
        if procs is not None:
            if ok:
                procs.close()
                fetcher.requests += procs.requests
            else:
                procs.kill()


def _processes(
    repo: Repo, fetcher: Fetcher, options: CrawlOptions, count: int
) -> CrawlProcesses | None:
    """Crawling processes that fetch and examine on their own (one per core, at
    most 8), when there are several cores, enough URLs to repay starting them,
    and politeness settings they can split (:func:`split_options`); else None."""
    cores = os.cpu_count() or 1
    if cores < 2 or count < CRAWL_IN_PROCESSES_FROM or not can_fork():
        return None
    processes = CRAWL_PROCESSES or min(cores, 8)
    each = split_options(options, processes)
    if each is None:
        return None
    return CrawlProcesses(fetcher, each, repo.media.root, processes)


def _examiner(repo: Repo, options: CrawlOptions, count: int) -> ProcessExaminer | None:
    """Worker processes to examine (decode, hash, store) the images, when there are
    several cores and enough URLs to repay starting them; else None (this
    process's threads examine them)."""
    cores = os.cpu_count() or 1
    if cores < 2 or count < EXAMINE_IN_PROCESSES_FROM or not can_fork():
        return None
    processes = EXAMINE_PROCESSES or min(cores, 8)
    return ProcessExaminer(options, repo.media.root, processes)


def _fetch_some(
    repo: Repo,
    store: JobStore,
    state: JobState,
    fetcher: Fetcher,
    progress: Progress,
    todo: list[Item],
    total: int,
    workers: Examiner | CrawlProcesses | None = None,
) -> None:
    done = len(state.outcomes)
    progress("fetch", min(done, total), total)
    if not todo:
        return
    opts = state.options
    size = max(1, min(opts.chunk_size, -(-len(todo) // opts.workers)))
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]

    def put(data: bytes, oid: str) -> None:
        # made durable by one syncfs before the commit (finish), not one fsync each
        repo.media.add_bytes(data, oid=oid, durable=False)

    lock = threading.Lock()
    counter = {"done": done}
    if isinstance(workers, CrawlProcesses):
        first = int(state.tasks.get("chunks", 0))
        state.tasks["chunks"] = first + len(chunks)

        def record(index: int, outcomes: list[Outcome]) -> None:
            store.append_outcomes(state.job, index, outcomes)
            for outcome in outcomes:
                if outcome.url not in state.outcomes:
                    counter["done"] += 1
                state.outcomes[outcome.url] = outcome

        workers.run(
            [(first + n, chunk) for n, chunk in enumerate(chunks)],
            record,
            lambda: progress("fetch", min(counter["done"], total), total),
            SAVE_INTERVAL,
        )
        store.save(state)
        return
    examiner = workers

    stopping = threading.Event()
    # each chunk journals its outcomes as they come (one appended line each: no
    # lock, no rewrite of the whole state), as Celery workers do; resume and status
    # merge the journals
    first = int(state.tasks.get("chunks", 0))
    state.tasks["chunks"] = first + len(chunks)

    def reporter(index: int) -> Callable[[Outcome], None]:
        def report(outcome: Outcome) -> None:  # called from the pool's threads
            store.append_outcome(state.job, index, outcome)
            with lock:
                if outcome.url not in state.outcomes:
                    counter["done"] += 1
                state.outcomes[outcome.url] = outcome
            if stopping.is_set():  # the job is failing: end this chunk early
                raise _Stopped

        return report

    pool = ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="pixvcs-crawl")
    # finished chunks come through a queue: wait(FIRST_COMPLETED) over the pending
    # set costs a lock round on every pending future per call, O(chunks²) in all
    finished: queue.SimpleQueue[Future[list[Outcome]]] = queue.SimpleQueue()
    try:
        for n, chunk in enumerate(chunks):
            pool.submit(
                process_chunk,
                opts,
                chunk,
                fetcher=fetcher,
                store=put,
                report=reporter(first + n),
                examiner=examiner,
            ).add_done_callback(finished.put)
        left = len(chunks)
        while left:
            try:
                fut = finished.get(timeout=SAVE_INTERVAL)
            except queue.Empty:
                pass  # nothing finished this interval: report progress all the same
            else:
                left -= 1
                fut.result()  # re-raise what went wrong in the chunk
            with lock:
                progress("fetch", min(counter["done"], total), total)
        store.save(state)
    except BaseException:
        stopping.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- deduplicating and committing ----------------------------------------------------
BaseFacts = tuple[dict[str, str], list[tuple[str, str]]]


def _base_facts(repo: Repo, commit: str | None) -> BaseFacts:
    """oid -> first path, and (path, phash) of every image of the base version. Hashes
    the catalog lacks are computed from the media store (and recorded)."""
    if commit is None:
        return {}, []
    entries = sorted(
        (e for e in repo.ls(commit) if e.kind == "media" and e.oid), key=lambda e: e.path
    )
    oids: dict[str, str] = {}
    for e in entries:
        assert e.oid is not None
        oids.setdefault(e.oid, e.path)
    rows = repo.catalog.get_many(list(oids))
    learned: list[tuple[str, int, ImageInfo | None, str | None]] = []
    phash: dict[str, str] = {}
    for oid in oids:
        row = rows.get(oid)
        if row is not None:
            if row.phash:
                phash[oid] = row.phash
            continue
        if not repo.media.has(oid):  # not fetched locally: exact dedupe still applies
            continue
        data = repo.media.read(oid)
        try:
            info: ImageInfo | None = inspect_image(data)
            error = None
        except InvalidImage as e:
            info, error = None, str(e)
        learned.append((oid, len(data), info, error))
        if info is not None:
            phash[oid] = info.phash
    repo.catalog.record(learned)
    hashes = [(e.path, phash[e.oid]) for e in entries if e.oid in phash]
    return oids, hashes


def _count(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    return dict(sorted(Counter(r["reason"] for r in records).items()))


def _summary(state: JobState, added: int) -> dict[str, Any]:
    outcomes = list(state.outcomes.values())
    failed = [o.to_json() for o in outcomes if o.status == FAILED]
    failed += [{**f, "reason": f"page-{f['reason']}"} for f in state.page_failures]
    invalid = [o.to_json() for o in outcomes if o.status == INVALID]
    dupes = [d for d in state.dropped if d["reason"].startswith("exact")]
    near = [d for d in state.dropped if d["reason"].startswith("near")]
    fetched = sum(
        1 for o in outcomes if o.http.get("status") is not None and 200 <= o.http["status"] < 300
    )
    return {
        "fetched": fetched,
        "failed": len(failed),
        "invalid": len(invalid),
        "duplicates": len(dupes),
        "near_duplicates": len(near),
        "skipped": len(state.skipped),
        "added": added,
        "reasons": {
            "failed": _count(failed),
            "invalid": _count(invalid),
            "duplicates": _count(dupes),
            "near_duplicates": _count(near),
            "skipped": _count(state.skipped),
        },
        "robots": "respected" if state.options.respect_robots else "ignored",
    }


def _describe_source(src: dict[str, Any]) -> str:
    if src["kind"] == "urls":
        return f"urls {src['path']}"
    if src["kind"] == "page":
        return f"page {src['url']} (depth {src.get('depth', 0)})"
    return f"keywords {src['path']} via {src['provider']['template']}"


def commit_message(state: JobState) -> str:
    s = state.summary
    r = s["reasons"]

    def line(name: str, key: str) -> str:
        detail = ", ".join(f"{k}: {v}" for k, v in r[key].items())
        return f"{name}: {s[key]}" + (f" ({detail})" if detail else "")

    robots = (
        "respected"
        if state.options.respect_robots
        else "IGNORED (--ignore-robots): robots.txt was not consulted"
    )
    lines = [
        f"crawl {state.job}: {s['added']} image(s) added",
        "",
        f"fetched: {s['fetched']}",
        line("failed", "failed"),
        line("invalid", "invalid"),
        line("duplicates", "duplicates"),
        line("near-duplicates", "near_duplicates"),
        line("skipped", "skipped"),
        f"added: {s['added']}",
        f"robots.txt: {robots}",
        f"provenance: {PROVENANCE_DIR}/{state.job}.jsonl",
        *(f"source: {_describe_source(src)}" for src in state.sources),
        "",
        f"{JOB_TRAILER}: {state.job}",
    ]
    return "\n".join(lines) + "\n"


def _already_committed(repo: Repo, state: JobState) -> str | None:
    """The branch's head, when it is this job's commit (a run that died after
    committing but before saving its state)."""
    head = repo.branches().get(state.branch)
    if head is None:
        return None
    if f"\n{JOB_TRAILER}: {state.job}\n" in repo.commit_info(head).message:
        return head
    raise UsageError(f"branch {state.branch!r} exists and is not this job's; cannot commit")


def _decide(state: JobState, base: BaseFacts) -> Decision:
    """Deduplicate what is stored so far; with ``max_images``, keep the first N."""
    assert state.items is not None
    order = {it.url: n for n, it in enumerate(state.items)}
    candidates = [
        Candidate(order[o.url], o.url, o.oid, o.phash)
        for o in state.outcomes.values()
        if o.status == STORED and o.oid is not None and o.url in order
    ]
    decision = dedupe(
        candidates, base_oids=base[0], base_hashes=base[1], distance=state.options.near_distance
    )
    return decision


def _commit(
    repo: Repo, state: JobState, author: str | None, progress: Progress, base: BaseFacts
) -> None:
    assert state.items is not None
    item_of = {it.url: it for it in state.items}
    decision = _decide(state, base)
    state.skipped = [s for s in state.skipped if s["reason"] != "max-images"]
    if state.max_images is not None:
        for c in decision.kept[state.max_images :]:
            state.skipped.append({"url": c.url, "reason": "max-images", "stored": True})
        decision.kept = decision.kept[: state.max_images]
        for it in state.items:
            if it.url not in state.outcomes:
                state.skipped.append({"url": it.url, "reason": "max-images"})
    state.dropped = decision.dropped
    copies: dict[str, list[dict[str, Any]]] = {}
    for d in decision.dropped:
        if d["reason"].endswith("-crawl"):
            copies.setdefault(d["of"], []).append({k: v for k, v in d.items() if k != "of"})
    records: list[dict[str, Any]] = []
    files: list[tuple[str, str, int] | tuple[str, bytes]] = []
    used: set[str] = set()
    catalog_rows: list[tuple[str, int, ImageInfo | None, str | None]] = []
    for c in decision.kept:
        o = state.outcomes[c.url]
        item = item_of[c.url]
        assert o.oid is not None and o.size is not None
        label = item.label or DEFAULT_LABEL
        path = f"{label}/{o.oid[:16]}.{EXTENSIONS.get(o.format or '', 'img')}"
        if path in used:  # two different images sharing 64 bits of hash: use it all
            path = f"{label}/{o.oid}.{EXTENSIONS.get(o.format or '', 'img')}"
        used.add(path)
        files.append((path, o.oid, o.size))
        catalog_rows.append((o.oid, o.size, o.info(), None))
        http = o.http
        rec: dict[str, Any] = {
            "path": path,
            "oid": o.oid,
            "bytes": o.size,
            "label": item.label,
            "url": c.url,
            "final_url": http.get("final_url"),
            "page": item.page,
            "keyword": item.keyword,
            "provider": item.provider,
            "fetched_at": http.get("fetched_at"),
            "status": http.get("status"),
            "content_type": http.get("content_type"),
            "etag": http.get("etag"),
            "last_modified": http.get("last_modified"),
            "format": o.format,
            "width": o.width,
            "height": o.height,
            "phash": o.phash,
            "job": state.job,
        }
        if item.extra:
            rec["extra"] = item.extra
        if c.url in copies:
            rec["duplicates"] = copies[c.url]
        records.append(rec)
    records.sort(key=lambda r: r["path"])
    state.summary = _summary(state, len(records))
    progress("commit", 0, 1)
    existing = _already_committed(repo, state)
    if existing is not None:
        state.commit = existing
    elif records:
        provenance = "".join(
            json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records
        ).encode()
        files.append((f"{PROVENANCE_DIR}/{state.job}.jsonl", provenance))
        state.commit = repo.commit_files(
            state.branch, files, commit_message(state), base=state.base_commit, author=author
        )
    repo.catalog.record(catalog_rows)
    progress("commit", 1, 1)
