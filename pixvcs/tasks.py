"""Celery: the crawl pipeline spread over ``pixvcs worker`` processes (docs/crawling.md,
"Workers").

The coordinator (``pixvcs crawl --broker URL``) discovers the URLs itself, cuts them
into chunks and sends them as a Celery chord to the queue of its repository: a
``pixvcs.crawl.chunk`` task per chunk, and ``pixvcs.crawl.commit`` as the callback,
which deduplicates and stages the commit on the crawl branch (or, while
``--max-images`` still wants images, sends the next wave of URLs as a new chord with
itself as the callback). The coordinator then waits for that callback, showing the
progress the workers journal.

Why nothing is lost or done twice when a worker dies mid-chunk:

* tasks are acknowledged late (after they finish) and rejected back to the queue when
  their worker process is lost, so an unfinished chunk is delivered again; over Redis,
  an unacknowledged message returns after the broker's *visibility timeout*, which
  :func:`make_app` sets to :data:`VISIBILITY_TIMEOUT` (not Redis's default of an hour)
  with a restore sweep every few seconds;
* a chunk task is idempotent: media are content-addressed (the same bytes land under
  the same name, written without fsync: the callback syncs the filesystem once before
  it commits, and fetches again what a power loss left short), and each finished URL
  is journalled
  (``.pixvcs/pixvcs/crawl/<job>.chunks/<n>.jsonl``) before the next, so a redelivered
  chunk fetches only what its killed predecessor had not finished;
* the callback merges the journals as well as the results it is handed, re-sends any
  URL that has no outcome at all (a chunk that was lost), and commits once: a commit
  carries the job's trailer, and a callback that finds it does not commit again.

Every task names the repository's queue (:func:`queue_for`), and a worker refuses
tasks of another repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import httpx

from .errors import CrawlWorkerError, LockTimeout, MissingDependency, UsageError

if TYPE_CHECKING:
    from celery import Celery

    from .crawl.job import JobState, JobStore
    from .repo import Repo

Progress = Callable[[str, int, int], None]

#: Seconds before Redis hands an unacknowledged crawl chunk to another worker. A chunk
#: that runs longer than this is delivered twice (harmless: chunks are idempotent).
VISIBILITY_TIMEOUT = 60.0
#: Seconds between sweeps that return expired unacknowledged messages to the queue.
RESTORE_INTERVAL = 5.0
#: Chunks sent per worker serving the queue (more: finer balance; fewer: less overhead).
CHUNKS_PER_WORKER = 8
#: Largest chunk, in URLs, with no pace per host. A chunk's end costs its worker
#: idle threads while its last URLs finish, and a round trip through the broker:
#: 10,000 URLs on 2 workers took 14.1-14.7 s in 20 chunks of 512, 15.3 s in 40 of
#: 256, 17.0-18.2 s in 79 of 128 (alternated runs): about 0.1 s a chunk and worker.
MAX_CHUNK = 512
#: Largest chunk with a pace per host (``per_host_rate``): 128 URLs of one host at
#: 4 a second take 32 s, within the visibility timeout.
MAX_CHUNK_PACED = 128
#: Waves of re-sent URLs a job may go through before it gives up.
MAX_WAVES = 20
#: Where a worker finds its repository (set by :func:`run_worker`, inherited by the
#: pool's forked processes).
_WORKER: dict[str, str] = {}


def broker_url(repo: Repo, given: str | None) -> str | None:
    """The broker: ``given`` (``--broker``), else ``PIXVCS_BROKER_URL``, else the
    repository's config ``pixvcs.broker``; ``None`` means in-process."""
    if given:
        return given
    env = os.environ.get("PIXVCS_BROKER_URL")
    if env:
        return env
    try:
        value = repo.git.get_config().get((b"pixvcs",), b"broker")
    except KeyError:
        return None
    return value.decode().strip() or None


def queue_for(repo: Repo) -> str:
    """The Celery queue of a repository: named after its real path, so the workers
    of one repository never receive another's chunks."""
    where = os.path.realpath(repo.git_dir).encode()
    return f"pixvcs.crawl.{hashlib.sha256(where).hexdigest()[:16]}"


def make_app(
    broker: str,
    *,
    visibility_timeout: float = VISIBILITY_TIMEOUT,
    restore_interval: float = RESTORE_INTERVAL,
) -> Celery:
    """A Celery app for ``broker`` (also its result backend), with the crawl tasks."""
    try:
        from celery import Celery
    except ImportError as e:  # a dependency, but say what is wrong if it is missing
        raise MissingDependency("celery", "crawling with workers (--broker)") from e
    app = Celery("pixvcs", broker=broker, backend=broker, set_as_current=False)
    transport = {
        "visibility_timeout": visibility_timeout,
        "unacked_restore_interval": restore_interval,
        "unacked_restore_throttle": 1,
    }
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        result_expires=7 * 24 * 3600,
        result_extended=False,
        worker_hijack_root_logger=False,
        task_default_queue="pixvcs.crawl",
    )
    app.task(name="pixvcs.crawl.chunk", bind=True)(_chunk_task)
    app.task(name="pixvcs.crawl.commit", bind=True, max_retries=None)(_commit_task)
    return app


# -- the worker side ------------------------------------------------------------------
def run_worker(
    repo: Repo,
    broker: str,
    *,
    concurrency: int | None = None,
    loglevel: str = "INFO",
    visibility_timeout: float = VISIBILITY_TIMEOUT,
    shared_queue: str | None = None,
    push_to: str = "origin",
) -> None:
    """Serve the repository's crawl queue until stopped (``pixvcs worker``). With
    ``shared_queue``, also fetch chunks of other repositories' jobs from it (a
    worker on another machine): their images go to remote ``push_to``, from which
    the committing repository fetches them."""
    queue = queue_for(repo)
    queues = [queue]
    if shared_queue:
        check_shared_queue(shared_queue)
        if push_to not in repo.remotes():
            raise UsageError(
                f"a worker of a shared queue pushes the images it fetches: this repository "
                f"has no remote {push_to!r} (clone the shared remote, or give --push-to)"
            )
        queues.append(shared_queue)
        _WORKER["push_to"] = push_to
    _WORKER["root"] = repo.root
    _WORKER["queue"] = queue
    _WORKER["broker"] = broker
    app = make_app(broker, visibility_timeout=visibility_timeout)
    argv = [
        "worker",
        "--queues",
        ",".join(queues),
        "--loglevel",
        loglevel,
        "--hostname",
        f"pixvcs-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
        "--concurrency",
        str(concurrency or os.cpu_count() or 1),
    ]
    app.worker_main(argv=argv)


def _worker_repo(queue: str, *, shared: bool = False) -> Repo:
    """The worker's repository, for a task of the repository whose queue is
    ``queue``: the same one, or (``shared``: a chunk from a shared queue) any."""
    from .repo import Repo

    root = _WORKER.get("root")
    if root is None:
        raise CrawlWorkerError("this process is not a pixvcs worker (no repository)")
    if queue != _WORKER.get("queue") and not (shared and "push_to" in _WORKER):
        raise CrawlWorkerError(
            f"task for queue {queue!r} reached the worker of {root} ({_WORKER.get('queue')})"
        )
    return Repo.open(root)


_SHARED_QUEUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_shared_queue(name: str) -> str:
    if not _SHARED_QUEUE.match(name) or name.startswith("pixvcs.crawl."):
        raise UsageError(
            f"bad crawl queue name {name!r}: letters, digits, '.', '_', '-' (not pixvcs.crawl.*)"
        )
    return name


def shared_queue_of(repo: Repo, given: str | None) -> str | None:
    """The shared fetch queue: ``given`` (``--queue``), else config ``pixvcs.crawlqueue``."""
    if given:
        return check_shared_queue(given)
    try:
        value = repo.git.get_config().get((b"pixvcs",), b"crawlqueue").decode().strip()
    except KeyError:
        return None
    return check_shared_queue(value) if value else None


#: The worker process's Fetcher for its current job: robots.txt answers and kept-alive
#: connections carry over from chunk to chunk.
_FETCHERS: dict[str, Any] = {}


def _fetcher(job: str, opts: Any) -> Any:
    from .crawl.fetch import Fetcher
    from .crawl.pipeline import _version

    key = f"{job}:{json.dumps(opts.to_json(), sort_keys=True)}"
    fetcher = _FETCHERS.get(key)
    if fetcher is None:
        for old in _FETCHERS.values():  # one job at a time is the common case
            old.close()
        _FETCHERS.clear()
        fetcher = _FETCHERS[key] = Fetcher(opts, version=_version(), limits=_limits(job, opts))
    return fetcher


def _limits(job: str, opts: Any) -> Any:
    """Per-host limits shared by all the job's workers, kept in the Redis broker
    (other brokers: each worker process keeps its own)."""
    from .crawl.limits import RedisLimits

    broker = _WORKER.get("broker", "")
    if not broker.startswith(("redis://", "rediss://", "unix://")):
        return None
    # a live worker renews its slots; a killed one's free themselves after the lease
    return RedisLimits(broker, job, opts.per_host_concurrency)


def _chunk_task(
    task: Any,
    queue: str,
    job: str,
    index: int,
    options: dict[str, Any],
    items: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Fetch, validate, hash and store one chunk; returns its outcomes (JSON), in order.
    URLs a previous delivery finished (journalled, image still stored) are not
    fetched again."""
    from .crawl.chunk import Outcome, process_item
    from .crawl.job import JobStore
    from .crawl.options import CrawlOptions
    from .crawl.pipeline import _is_done
    from .crawl.sources import Item

    repo = _worker_repo(queue, shared=True)
    away = queue != _WORKER.get("queue")  # a chunk of another repository's job
    try:
        opts = CrawlOptions.from_json(options)
        its = [Item.from_json(i) for i in items]
        store = JobStore(repo.state_dir, repo.tmp_dir)
        journal = store.read_journal(job, index)
        out: dict[str, Outcome] = {}
        todo = []
        for it in its:
            done = journal.get(it.url)
            if done is not None and _is_done(repo, done):
                out[it.url] = done
            else:
                todo.append(it)
        if todo:

            def put(data: bytes, oid: str) -> None:
                repo.media.add_bytes(data, oid=oid, durable=False)

            fetcher = _fetcher(job, opts)
            pool = ThreadPoolExecutor(max_workers=min(opts.workers, len(todo)))
            try:
                # as_completed waits on all of them at once; wait(FIRST_COMPLETED)
                # in a loop took a lock round on every pending future per call
                futures = [pool.submit(process_item, it, opts, fetcher, put) for it in todo]
                for fut in as_completed(futures):
                    outcome = fut.result()
                    store.append_outcome(job, index, outcome)
                    out[outcome.url] = outcome
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
            # no syncfs here: the commit task syncs once before it commits, and
            # first fetches again any image a power loss left short (as an
            # in-process crawl does); one per chunk kept the worker idle ~12% of the time
        if away:
            _push_media(repo, [out[it.url] for it in its])
        return [out[it.url].to_json() for it in its]
    finally:
        repo.close()


def _push_media(repo: Repo, outcomes: list[Any]) -> None:
    """Send the chunk's stored images to the shared remote (what it lacks), so that
    the committing repository can fetch them: media travel as ``pixvcs push``
    moves them, verified on arrival."""
    from .transfer import endpoint_for

    sizes = {o.oid: o.size for o in outcomes if o.status == "stored" and o.oid and o.size}
    if not sizes:
        return
    endpoint = endpoint_for(repo, _WORKER["push_to"])
    lacking = endpoint.missing(list(sizes), sizes=sizes)
    if lacking:
        endpoint.upload(lacking, repo.media, lambda stage, done, total: None)


def _commit_task(
    task: Any,
    results: list[list[dict[str, Any]]] | None,
    queue: str,
    job: str,
    author: str | None,
) -> dict[str, Any]:
    """The chord's callback: merge the chunks' outcomes into the job, then send the
    next wave (URLs with no outcome: lost chunks, or more wanted by --max-images) or
    deduplicate and commit."""
    from .crawl.chunk import Outcome
    from .crawl.job import JobStore
    from .crawl.pipeline import _base_facts, finish, forget_lost_images, wave

    repo = _worker_repo(queue)
    try:
        store = JobStore(repo.state_dir, repo.tmp_dir)
        try:
            with store.running(job, timeout=2.0):
                state = store.load(job)
                if state.status == "done":
                    return {"job": job, "commit": state.commit}
                for chunk in results or []:
                    for data in chunk:
                        o = Outcome.from_json(data)
                        state.outcomes[o.url] = o
                if any(it.url not in state.outcomes for it in state.items or ()):
                    # a chunk's result is lost (its worker died): what it journalled
                    for url, o in store.read_journal(job).items():
                        state.outcomes.setdefault(url, o)
                _fetch_media(repo, state)
                # images are made durable only by finish()'s syncfs: one a power loss
                # left short (or missing) is fetched again in the next wave
                forget_lost_images(repo, state)
                base = _base_facts(repo, state.base_commit)
                todo = wave(repo, state, base, retry_failed=False)
                if todo:
                    waves = int(state.tasks.get("waves", 1))
                    if waves >= MAX_WAVES:
                        raise CrawlWorkerError(f"crawl job {job}: {len(todo)} URL(s) never done")
                    callback = _dispatch(task.app, queue, state, todo, author)
                    state.tasks.update(callback=callback, waves=waves + 1)
                    store.save(state)
                    return {"job": job, "next": callback}
                finish(repo, store, state, author)
                store.save(state)
                return {"job": job, "commit": state.commit}
        except LockTimeout:  # the coordinator is still saving the job: soon free
            raise task.retry(countdown=1.0) from None
    finally:
        repo.close()


def _fetch_media(repo: Repo, state: JobState) -> None:
    """Images that workers on other machines stored reach this repository through its
    remotes (they pushed them there first)."""
    from .crawl.chunk import STORED

    sizes = {
        o.oid: o.size
        for o in state.outcomes.values()
        if o.status == STORED and o.oid and o.size and not repo.media.has(o.oid)
    }
    if sizes:
        from .transfer import fetch_media

        fetch_media(repo, list(sizes), progress=lambda stage, done, total: None, sizes=sizes)


# -- the coordinator side ------------------------------------------------------------
def _dispatch(
    app: Celery,
    queue: str,
    state: JobState,
    todo: list[Any],
    author: str | None,
    workers: int = 2,
) -> str:
    """Send ``todo`` as a chord of chunk tasks with the commit task as its callback;
    returns the callback's task id. Chunks are ``chunk_size`` URLs or more: about
    :data:`CHUNKS_PER_WORKER` per worker (a task costs a round trip through the
    broker), at most :data:`MAX_CHUNK` (:data:`MAX_CHUNK_PACED` with a pace per
    host: a chunk should end well within the visibility timeout)."""
    from celery import chord, signature

    per_worker = -(-len(todo) // (CHUNKS_PER_WORKER * max(1, workers)))
    cap = MAX_CHUNK_PACED if state.options.per_host_rate > 0 else MAX_CHUNK
    size = max(1, state.options.chunk_size, min(cap, per_worker))
    # chunk numbers continue from earlier waves, so their journals never mix
    first = int(state.tasks.get("chunks", 0))
    options = state.options.to_json()
    header = [
        signature(
            "pixvcs.crawl.chunk",
            args=(
                queue,
                state.job,
                first + n,
                options,
                [it.to_json() for it in todo[i : i + size]],
            ),
            queue=state.tasks.get("fetch_queue") or queue,
            app=app,
        )
        for n, i in enumerate(range(0, len(todo), size))
    ]
    state.tasks["chunks"] = first + len(header)
    body = signature("pixvcs.crawl.commit", args=(queue, state.job, author), queue=queue, app=app)
    result = chord(header, app=app)(body)
    # for the coordinator's progress: chunks run on other machines journal there
    group = result.parent
    ids = [str(r.id) for r in group.results] if group is not None else []
    sizes = [min(size, len(todo) - i) for i in range(0, len(todo), size)]
    state.tasks["wave"] = [[tid, n] for tid, n in zip(ids, sizes, strict=False)]
    state.tasks["wave_base"] = len(state.outcomes)  # URLs done in earlier waves
    return str(result.id)


#: Seconds a broadcast asking the workers for their queues waits for answers: a
#: broadcast waits its whole timeout, and workers answer in milliseconds, so a short
#: one first; the longer one only when the short one found no worker serving.
INSPECT_TIMEOUTS = (0.25, 1.0)


def _active_queues(app: Celery, enough: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The workers' answers (worker -> its queues) to the first broadcast whose
    answers are ``enough`` (or to the last one)."""
    replies: dict[str, Any] = {}
    for timeout in INSPECT_TIMEOUTS:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
        if enough(replies):
            break
    return replies


def _workers_serving(app: Celery, queue: str) -> list[str]:
    return _serving(_active_queues(app, lambda r: bool(_serving(r, queue))), queue)


def _serving(replies: dict[str, Any], queue: str) -> list[str]:
    return sorted(w for w, queues in replies.items() if any(q.get("name") == queue for q in queues))


def run_distributed(
    repo: Repo,
    store: JobStore,
    state: JobState,
    broker: str,
    author: str | None,
    transport: httpx.BaseTransport | None,
    sleep: Callable[[float], None],
    progress: Progress,
    shared_queue: str | None = None,
) -> JobState:
    """Discover in this process, send the chunks to the workers, wait for the commit.
    With ``shared_queue``, the chunks go there (workers on other machines serve it)
    and only the commit to this repository's own queue."""
    from .crawl.fetch import Fetcher
    from .crawl.pipeline import _base_facts, _version, discover_items, wave

    app = make_app(broker)
    queue = queue_for(repo)
    try:
        replies = _active_queues(
            app,
            lambda r: (
                bool(_serving(r, queue))
                and (shared_queue is None or bool(_serving(r, shared_queue)))
            ),
        )
        home = _serving(replies, queue)
        if not home:
            raise CrawlWorkerError(
                f"no pixvcs worker serves this repository on {_redact(broker)}: start one "
                f"with `pixvcs -C {repo.root} worker --broker {_redact(broker)}`"
                + (" (it stages the commit)" if shared_queue else "")
            )
        serving = home
        if shared_queue:
            serving = _serving(replies, shared_queue)
            if not serving:
                raise CrawlWorkerError(
                    f"no pixvcs worker serves the crawl queue {shared_queue!r} on "
                    f"{_redact(broker)}: start one in a clone of the shared remote with "
                    f"`pixvcs worker --broker {_redact(broker)} --queue {shared_queue}`"
                )
        with store.running(state.job):
            state.error = None
            if state.items is None:
                fetcher = Fetcher(
                    state.options, transport=transport, sleep=sleep, version=_version()
                )
                try:
                    discover_items(state, fetcher, progress)
                finally:
                    fetcher.close()
            state.status = "fetching"
            todo = wave(repo, state, _base_facts(repo, state.base_commit), retry_failed=True)
            for it in todo:  # failed before: fetched again
                state.outcomes.pop(it.url, None)
            state.tasks.update(broker=_redact(broker), queue=queue, waves=1)
            if shared_queue:
                state.tasks["fetch_queue"] = shared_queue
            else:
                state.tasks.pop("fetch_queue", None)
            if todo:
                state.tasks["callback"] = _dispatch(
                    app, queue, state, todo, author, workers=len(serving)
                )
            else:
                body = app.signature("pixvcs.crawl.commit", args=([], queue, state.job, author))
                state.tasks["callback"] = str(body.apply_async(queue=queue).id)
            store.save(state)
        _wait(app, store, state, progress)
    except BaseException as e:
        if _is_broker_error(e):
            unreachable = CrawlWorkerError(
                f"cannot reach the broker {_redact(broker)} ({e}); the job is saved: "
                f"`pixvcs crawl --resume {state.job}` once the broker is up"
            )
            _record_error(store, state.job, unreachable)
            raise unreachable from None
        if not isinstance(e, KeyboardInterrupt):
            _record_error(store, state.job, e)
        raise
    return store.load(state.job)


def _is_broker_error(e: BaseException) -> bool:
    """A failure to talk to the broker (refused, unknown host, lost connection)."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError

    return isinstance(e, OperationalError | RedisConnectionError)


#: Seconds between the coordinator's looks at its journals (and, every fourth, at
#: the result backend for the chunks done elsewhere).
WAIT_POLL = 0.25


def _wait(app: Celery, store: JobStore, state: JobState, progress: Progress) -> None:
    """Follow the job's callbacks (one per wave) until one has committed.

    Progress counts the URLs the local journals have an outcome for, or (when
    that is more: chunks that workers on other machines ran journal there) the
    URLs of the wave's finished chunks, as the result backend reports them."""
    from .crawl.job import JournalProgress

    assert state.items is not None
    total = len(state.items)
    task_id = str(state.tasks["callback"])
    journals = JournalProgress(store, state.job)
    wave = _Wave(app, state)
    shown = 0  # never goes back (a new wave's first look may know less)
    while True:
        result = app.AsyncResult(task_id)
        polls = 0
        while not result.ready():
            if polls % 4 == 0:
                wave.poll()
            polls += 1
            shown = max(shown, min(total, max(journals.count(), wave.done())))
            progress("fetch", shown, total)
            time.sleep(WAIT_POLL)
        if result.failed():
            raise CrawlWorkerError(f"crawl job {state.job} failed on a worker: {result.result!r}")
        value = result.result
        if not isinstance(value, dict):
            raise CrawlWorkerError(f"crawl job {state.job}: unexpected task result {value!r}")
        if "next" not in value:
            progress("commit", 1, 1)
            return
        task_id = str(value["next"])
        with suppress(UsageError, OSError, ValueError):  # the next wave's chunks, if saved
            wave = _Wave(app, store.load(state.job))


class _Wave:
    """The chunk tasks of the wave being run and how many URLs each carries
    (``state.tasks["wave"]``, saved by :func:`_dispatch`)."""

    def __init__(self, app: Celery, state: JobState) -> None:
        self.app = app
        self.base = int(state.tasks.get("wave_base", 0) or 0)
        raw = state.tasks.get("wave") or []
        self.chunks = [(str(c[0]), int(c[1])) for c in raw if isinstance(c, list) and len(c) == 2]
        self.finished: set[str] = set()

    def poll(self) -> None:
        for tid, _n in self.chunks:
            if tid not in self.finished and self.app.AsyncResult(tid).ready():
                self.finished.add(tid)

    def done(self) -> int:
        return self.base + sum(n for tid, n in self.chunks if tid in self.finished)


def _record_error(store: JobStore, job: str, error: BaseException) -> None:
    try:
        with store.running(job, timeout=5.0):
            state = store.load(job)
            if state.status != "done":
                state.error = (
                    f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                )
                store.save(state)
    except (LockTimeout, UsageError):  # best effort: the error is raised anyway
        pass


def _redact(url: str) -> str:
    """A broker URL without its password, fit for messages and the job state."""
    parsed = httpx.URL(url) if "://" in url else None
    if parsed is None or not parsed.password:
        return url
    return str(parsed.copy_with(password="***"))
