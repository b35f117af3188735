"""``pixvcs crawl``: grow a dataset from the web into a reviewable commit on a crawl
branch (the work is in :mod:`pixvcs.crawl`; see docs/crawling.md)."""

from __future__ import annotations

from typing import Any

import click

from .cli import (
    emit_json,
    handle_errors,
    identity_from_env,
    json_option,
    main,
    open_repo,
    progress_for,
    user_path,
)

_RESULT_KEYS = ("fetched", "failed", "invalid", "duplicates", "near_duplicates", "skipped")


def _result_json(state: Any) -> dict[str, Any]:
    s = state.summary
    return {
        "job": state.job,
        "status": state.status,
        "branch": state.branch,
        "base": state.base,
        "base_commit": state.base_commit,
        "commit": state.commit,
        "added": s.get("added", 0),
        **{k: s.get(k, 0) for k in _RESULT_KEYS},
        "reasons": s.get("reasons", {}),
        "robots": s.get("robots", "respected" if state.options.respect_robots else "ignored"),
        "provenance": f"provenance/{state.job}.jsonl" if state.commit else None,
    }


def _print_summary(state: Any) -> None:
    s = state.summary
    reasons = s.get("reasons", {})
    click.echo(f"crawl {state.job}: {state.status}")
    for key in ("fetched", "failed", "invalid", "duplicates", "near_duplicates", "skipped"):
        detail = ", ".join(f"{k}: {v}" for k, v in reasons.get(key, {}).items())
        click.echo(
            f"  {key.replace('_', '-')}: {s.get(key, 0)}" + (f" ({detail})" if detail else "")
        )
    click.echo(f"  added: {s.get('added', 0)}")
    if s.get("robots") == "ignored":
        click.echo("  robots.txt: IGNORED (--ignore-robots)")
    if state.commit:
        click.echo(f"committed {state.commit[:12]} on {state.branch} (parent: {state.base})")
        click.echo(f"review: pixvcs diff {state.base} {state.branch}")
    elif state.status == "done":
        click.echo("nothing new to add: no commit made")
    if state.error:
        click.echo(f"  error: {state.error}")


@main.group(invoke_without_command=True)
@click.option(
    "--urls",
    "urls_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="A URL list: one URL per line, or .csv/.jsonl with a 'url' column "
    "(optional 'label', 'page'; other columns kept as provenance).",
)
@click.option(
    "--page",
    "pages",
    multiple=True,
    metavar="URL",
    help="An HTML page whose images to crawl (repeatable).",
)
@click.option(
    "--depth",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="With --page: follow same-site links this many levels deep.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="A PixCrawler keyword config (JSON): dataset_name, categories, options.max_images.",
)
@click.option(
    "--search-url",
    default=None,
    metavar="TEMPLATE",
    help="With --config: search provider URL with {keyword}; the images of "
    "its result page are the results.",
)
@click.option(
    "--label",
    default=None,
    metavar="LABEL",
    help="Class folder for images whose source gives none (default: unlabelled).",
)
@click.option(
    "--branch", default=None, metavar="NAME", help="Branch to commit to (default: crawl/<job-id>)."
)
@click.option(
    "--base", default=None, metavar="REV", help="Parent version (default: the current branch)."
)
@click.option(
    "--max-images",
    type=click.IntRange(min=1),
    default=None,
    help="Add at most N images (URLs are fetched in source order, only as many as needed).",
)
@click.option(
    "--near-distance",
    type=click.IntRange(0, 32),
    default=6,
    show_default=True,
    help="Perceptual-hash Hamming distance at or below which images are near-duplicates.",
)
@click.option(
    "--min-width",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Narrower images are invalid (too-small).",
)
@click.option(
    "--min-height",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Lower images are invalid (too-small).",
)
@click.option(
    "--formats",
    default=None,
    metavar="LIST",
    help="Allowed formats, comma-separated (default: JPEG,PNG,GIF,WEBP,BMP,TIFF).",
)
@click.option(
    "--max-bytes",
    type=click.IntRange(min=1),
    default=20 * 1024 * 1024,
    show_default=True,
    help="Largest image accepted; downloads stop there.",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=8, show_default=True, help="Fetching threads."
)
@click.option(
    "--per-host",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Requests in flight to one host.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=4.0,
    show_default=True,
    help="Requests per second to one host (0: no limit).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Read timeout in seconds (connect: 10 s).",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Retries of network errors, 429 and 5xx (exponential backoff).",
)
@click.option(
    "--ignore-robots", is_flag=True, help="Do not consult robots.txt (the commit message says so)."
)
@click.option(
    "--contact",
    default=None,
    help="Contact for the User-Agent (default: config pixvcs.crawlcontact).",
)
@click.option(
    "--broker",
    default=None,
    metavar="URL",
    help="Send the work to `pixvcs worker` processes through this Celery broker "
    "(e.g. redis://127.0.0.1:6379/0; default: PIXVCS_BROKER_URL, else config "
    "pixvcs.broker, else in-process).",
)
@click.option(
    "--queue",
    "shared_queue",
    default=None,
    metavar="NAME",
    help="With a broker: send the chunks to this shared queue, served by workers "
    "on other machines (default: config pixvcs.crawlqueue, else this repository's "
    "own workers).",
)
@click.option(
    "--resume",
    "resume_job",
    default=None,
    metavar="JOB",
    help="Continue an interrupted job; stored images are not fetched again.",
)
@json_option
@click.pass_context
@handle_errors
def crawl(
    ctx: click.Context,
    urls_file: str | None,
    pages: tuple[str, ...],
    depth: int,
    config_file: str | None,
    search_url: str | None,
    label: str | None,
    branch: str | None,
    base: str | None,
    max_images: int | None,
    near_distance: int,
    min_width: int,
    min_height: int,
    formats: str | None,
    max_bytes: int,
    workers: int,
    per_host: int,
    rate: float,
    timeout: float,
    retries: int,
    ignore_robots: bool,
    contact: str | None,
    broker: str | None,
    shared_queue: str | None,
    resume_job: str | None,
    as_json: bool,
) -> None:
    """Fetch, validate and deduplicate images from the web, and stage them as one
    commit on a crawl branch for review.

    Images go to <label>/<first 16 hex of their SHA-256>.<ext>; provenance of
    every added image (URL, page, keyword, HTTP facts) to
    provenance/<job>.jsonl. Exact and near duplicates of the base version and
    within the crawl are left out. Nothing is merged: review the branch with
    `pixvcs diff`, then `pixvcs merge` it. An interrupted job continues with
    --resume JOB (see `pixvcs crawl status`).

    \b
    Examples:
      pixvcs crawl --urls urls.csv --label cat
      pixvcs crawl --page https://example.org/gallery --depth 1 --label bird
      pixvcs crawl --config flowers.json --search-url 'https://host/search?q={keyword}'
      pixvcs diff main crawl/20260101T120000Z-1a2b3c && pixvcs merge crawl/20260101T120000Z-1a2b3c
      pixvcs crawl --broker redis://127.0.0.1:6379/0 --urls urls.txt   # with `pixvcs worker`s
    """
    if ctx.invoked_subcommand is not None:
        return
    from .crawl import CrawlOptions, CrawlRequest
    from .crawl import resume as resume_crawl
    from .crawl import start as start_crawl
    from .crawl.options import ALL_FORMATS

    author = identity_from_env()
    progress = progress_for(as_json)
    from .tasks import broker_url, shared_queue_of

    with open_repo(ctx) as repo:
        broker = broker_url(repo, broker)
        shared_queue = shared_queue_of(repo, shared_queue) if broker else None
        if resume_job:
            if urls_file or pages or config_file:
                raise click.UsageError("--resume continues a job as it was: give no sources")
            state = resume_crawl(
                repo,
                resume_job,
                author=author,
                progress=progress,
                broker=broker,
                shared_queue=shared_queue,
            )
        else:
            options = CrawlOptions(
                contact=contact,
                respect_robots=not ignore_robots,
                per_host_concurrency=per_host,
                per_host_rate=rate,
                workers=workers,
                read_timeout=timeout,
                retries=retries,
                max_bytes=max_bytes,
                min_width=min_width,
                min_height=min_height,
                near_distance=near_distance,
                formats=_formats(formats) if formats else ALL_FORMATS,
            )
            request = CrawlRequest(
                urls_file=user_path(ctx, urls_file) if urls_file else None,
                pages=pages,
                depth=depth,
                config_file=user_path(ctx, config_file) if config_file else None,
                search_url=search_url,
                label=label,
                branch=branch,
                base=base,
                max_images=max_images,
            )
            state = start_crawl(
                repo,
                request,
                options,
                author=author,
                progress=progress,
                broker=broker,
                shared_queue=shared_queue,
            )
    if as_json:
        emit_json(_result_json(state))
        return
    _print_summary(state)


def _formats(text: str) -> tuple[str, ...]:
    names = tuple(f.strip().upper() for f in text.split(",") if f.strip())
    return tuple("JPEG" if n == "JPG" else "TIFF" if n == "TIF" else n for n in names)


@crawl.command(name="status")
@click.argument("job", required=False)
@json_option
@click.pass_context
@handle_errors
def crawl_status(ctx: click.Context, job: str | None, as_json: bool) -> None:
    """Show a crawl job's state and summary, or list every job.

    \b
    Example:
      pixvcs crawl status
      pixvcs crawl status 20260101T120000Z-1a2b3c --json
    """
    from .crawl import status as crawl_states

    with open_repo(ctx) as repo:
        states = crawl_states(repo, job)
    if as_json:
        data = [s.overview() for s in states]
        emit_json(data[0] if job else data)
        return
    if not states:
        click.echo("no crawl jobs")
        return
    if job:
        _print_summary(states[0])
        return
    for s in states:
        added = s.summary.get("added", "-")
        commit = (s.commit or "")[:12] or "-"
        click.echo(f"{s.job}  {s.status:<11} added {added:<6} {commit:<12} {s.branch}")


@main.command()
@click.option(
    "--broker",
    default=None,
    metavar="URL",
    help="Celery broker URL (default: PIXVCS_BROKER_URL, else config pixvcs.broker).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (default: the number of CPUs); each fetches with --workers threads.",
)
@click.option(
    "--visibility-timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds before a chunk a dead worker left unfinished goes to another worker.",
)
@click.option(
    "--queue",
    "shared_queue",
    default=None,
    metavar="NAME",
    help="Also fetch chunks from this shared queue (a worker on another machine, "
    "in a clone of the shared remote; default: config pixvcs.crawlqueue).",
)
@click.option(
    "--push-to",
    default="origin",
    show_default=True,
    metavar="REMOTE",
    help="With --queue: the remote that receives the images this worker fetches.",
)
@click.option(
    "--loglevel",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.pass_context
@handle_errors
def worker(
    ctx: click.Context,
    broker: str | None,
    concurrency: int | None,
    visibility_timeout: float,
    shared_queue: str | None,
    push_to: str,
    loglevel: str,
) -> None:
    """Run a Celery worker that crawls for this repository: it fetches, validates
    and stores the chunks `pixvcs crawl --broker` sends, and stages the commit.

    A worker serves its own repository's queue. With --queue NAME it also
    fetches chunks from a shared queue for jobs of other repositories (a worker
    on another machine, in a clone of the shared remote): it pushes the images
    it stores to --push-to, and the committing repository fetches them from
    there. Stop it with Ctrl-C (it finishes the chunks it holds; a killed
    worker's chunks go to another worker after --visibility-timeout).

    \b
    Examples:
      pixvcs -C dataset worker --broker redis://127.0.0.1:6379/0 --concurrency 2
      pixvcs -C clone worker --broker redis://broker:6379/0 --queue flowers
    """
    from .errors import UsageError
    from .tasks import broker_url, run_worker, shared_queue_of

    with open_repo(ctx) as repo:
        url = broker_url(repo, broker)
        if url is None:
            raise UsageError(
                "no broker: give --broker URL, PIXVCS_BROKER_URL or config pixvcs.broker"
            )
        shared = shared_queue_of(repo, shared_queue)
        root = repo.root
    from .repo import Repo

    run_worker(
        Repo.open(root),
        url,
        concurrency=concurrency,
        loglevel=loglevel.upper(),
        visibility_timeout=visibility_timeout,
        shared_queue=shared,
        push_to=push_to,
    )
