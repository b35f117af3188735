"""The ``pixvcs`` command line: each command opens the repo, makes one library
call, and formats the result. Library errors become a message and an exit code."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import click

from .errors import PixvcsError

F = TypeVar("F", bound=Callable[..., Any])


# -- shared plumbing ------------------------------------------------------------------
class Progress:
    """Progress on stderr when it is a terminal; silent in pipes, CI and --json."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0
        self.stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and stage == self.stage and now - self.last < 0.1:
            return
        self.last, self.stage = now, stage
        pct = 100 * done // total if total else 100
        sys.stderr.write(f"\r{stage}: {done}/{total} ({pct}%)")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def progress_for(as_json: bool) -> Progress:
    return Progress(enabled=not as_json and sys.stderr.isatty() and os.environ.get("CI", "") == "")


def sparse_options(f: F) -> F:
    """--include / --where: a sparse work tree (pixvcs.sparse), as pixvcs.open selects."""
    f = click.option(
        "--where",
        multiple=True,
        metavar="KEY=VALUE",
        help="Only images passing this filter: label=NAME (repeatable: any), "
        "min_width/min_height/max_width/max_height=N, added_since=REV.",
    )(f)
    return click.option(
        "--include",
        multiple=True,
        metavar="GLOB",
        help="Only images whose path matches (repeatable: any); other files always come.",
    )(f)


def json_option(f: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout."
    )(f)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


@contextmanager
def open_repo(ctx: click.Context) -> Iterator[Any]:
    from .repo import Repo

    repo = Repo.open(ctx.obj["cwd"])
    # the command line's one source of a token from the environment: HTTP
    # remotes with none in their URL or config use PIXVCS_TOKEN
    repo.token = os.environ.get("PIXVCS_TOKEN") or None
    try:
        yield repo
    finally:
        repo.close()


def user_path(ctx: click.Context, p: str) -> str:
    """Paths on the command line are relative to the (-C adjusted) current directory."""
    return os.path.abspath(os.path.join(ctx.obj["cwd"], p))


def handle_errors(f: F) -> F:
    @wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except PixvcsError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)

    return wrapper  # type: ignore[return-value]


def write_report(ctx: click.Context, report: str, output: str | None, summary: str) -> None:
    """A report to stdout, or to OUTPUT with a one-line summary on stdout."""
    if not output:
        click.echo(report, nl=False)
        return
    path = user_path(ctx, output)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(report)
    click.echo(f"{summary} report written to {output}")


def identity_from_env() -> str | None:
    name, email = os.environ.get("GIT_AUTHOR_NAME"), os.environ.get("GIT_AUTHOR_EMAIL")
    if name and email:
        return f"{name} <{email}>"
    return None


# -- the group ----------------------------------------------------------------------
#: Commands kept in modules of their own (which register themselves on ``main``
#: when imported), by command name.
_COMMAND_MODULES = {
    "cache": "cli_cache",
    "check": "cli_check",
    "crawl": "cli_crawl",
    "worker": "cli_crawl",
    "export": "cli_export",
    "serve": "cli_serve",
}


class _Commands(dict[str, click.Command]):
    """``main``'s subcommands, importing the module of a command kept elsewhere
    only when that command is looked up, or when the whole mapping is listed
    (``--help``, an unknown command's suggestions, the docs generator). So
    ``pixvcs status`` does not pay for ``export``'s or ``crawl``'s imports."""

    def _load(self, name: str | None = None) -> None:
        for cmd, module in _COMMAND_MODULES.items():
            if (name is None or name == cmd) and not dict.__contains__(self, cmd):
                importlib.import_module(f"{__package__}.{module}")

    def __getitem__(self, name: str) -> click.Command:
        self._load(name)
        return dict.__getitem__(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        self._load(name)
        return dict.get(self, name, default)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self._load(name)
        return dict.__contains__(self, name)

    def __iter__(self) -> Iterator[str]:
        self._load()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._load()
        return dict.__len__(self)

    def keys(self) -> Any:
        self._load()
        return dict.keys(self)

    def values(self) -> Any:
        self._load()
        return dict.values(self)

    def items(self) -> Any:
        self._load()
        return dict.items(self)


@click.group(commands=_Commands(), context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-C",
    "directory",
    type=click.Path(file_okay=False),
    default=None,
    help="Run as if pixvcs was started in this directory.",
)
@click.version_option(package_name="pixvcs")
@click.pass_context
def main(ctx: click.Context, directory: str | None) -> None:
    """pixvcs: git-native versioning for image datasets.

    \b
    Example:
      pixvcs init photos && cd photos
      cp -r ~/raw/cats cats && pixvcs add . && pixvcs commit -m "first cats"
      pixvcs diff v1 main
    """
    cwd = os.path.abspath(directory) if directory else os.getcwd()
    ctx.obj = {"cwd": cwd}


@main.command()
@click.argument("directory", required=False, default=".")
@click.option("--bare", is_flag=True, help="A repository with no work tree (a remote).")
@click.option("-b", "--initial-branch", default="main", show_default=True)
@click.option(
    "--media-url",
    default=None,
    metavar="s3://BUCKET/PREFIX",
    help="With --bare: keep the media in this S3 bucket instead of lfs/objects "
    "(recorded in the config; credentials come from the AWS chain, never the repository).",
)
@click.option("--s3-endpoint", default=None, metavar="URL", help="S3-compatible endpoint URL.")
@click.option("--s3-region", default=None, help="Region of the bucket.")
@click.pass_context
@handle_errors
def init(
    ctx: click.Context,
    directory: str,
    bare: bool,
    initial_branch: str,
    media_url: str | None,
    s3_endpoint: str | None,
    s3_region: str | None,
) -> None:
    """Create a repository in DIRECTORY (default: here).

    \b
    Example:
      pixvcs init my-dataset
      pixvcs init --bare /srv/datasets/animals --media-url s3://my-bucket/animals
    """
    from .errors import UsageError
    from .repo import Repo
    from .s3media import make_config, write_config

    media = None
    if media_url is not None or s3_endpoint is not None or s3_region is not None:
        if not bare or media_url is None:
            raise UsageError("--media-url (with --s3-endpoint, --s3-region) needs --bare")
        media = make_config(media_url, endpoint_url=s3_endpoint, region=s3_region)
    path = user_path(ctx, directory)
    Repo.init(path, bare=bare, branch=initial_branch).close()
    if media is not None:
        write_config(path, media)
    click.echo(f"Initialized empty pixvcs repository in {path}")


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--allow-invalid",
    is_flag=True,
    help="Stage images that do not decode, recorded as invalid, instead of refusing.",
)
@click.option("-f", "--force", is_flag=True, help="Add files even if .pixvcsignore ignores them.")
@click.option(
    "--link",
    is_flag=True,
    help="Hardlink files into the media store instead of copying (fast; the files "
    "become read-only, see docs/format.md).",
)
@click.option("-j", "--jobs", type=int, default=None, help="Worker processes (default: cores).")
@json_option
@click.pass_context
@handle_errors
def add(
    ctx: click.Context,
    paths: tuple[str, ...],
    allow_invalid: bool,
    force: bool,
    link: bool,
    jobs: int | None,
    as_json: bool,
) -> None:
    """Stage files; every image is validated and fingerprinted once.

    A file that looks like an image but does not fully decode (truncated,
    empty, a decompression bomb) refuses the whole call: nothing is staged.

    \b
    Example:
      pixvcs add cats/ dogs/ labels.csv
    """
    with open_repo(ctx) as repo:
        result = repo.add(
            [user_path(ctx, p) for p in paths],
            allow_invalid=allow_invalid,
            force=force,
            link=link,
            jobs=jobs,
            progress=progress_for(as_json),
        )
    if as_json:
        emit_json(
            {
                "added": result.added,
                "unchanged": result.unchanged,
                "invalid": [{"path": p, "error": e} for p, e in result.invalid],
            }
        )
        return
    click.echo(f"staged {len(result.added)} file(s), {result.unchanged} unchanged")
    for p, e in result.invalid:
        click.echo(f"  recorded as invalid: {p}: {e}")


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("-r", "recursive", is_flag=True, help="Remove directories recursively.")
@click.option("--cached", is_flag=True, help="Only untrack; keep the files in the work tree.")
@click.pass_context
@handle_errors
def rm(ctx: click.Context, paths: tuple[str, ...], recursive: bool, cached: bool) -> None:
    """Stop tracking files (and delete them, unless --cached).

    \b
    Example:
      pixvcs rm -r blurry/
    """
    with open_repo(ctx) as repo:
        removed = repo.rm([user_path(ctx, p) for p in paths], recursive=recursive, cached=cached)
    for p in removed:
        click.echo(f"rm {p}")


def _print_list(title: str, paths: list[str], limit: int = 50) -> None:
    if not paths:
        return
    click.echo(f"{title} ({len(paths)}):")
    for p in paths[:limit]:
        click.echo(f"  {p}")
    if len(paths) > limit:
        click.echo(f"  ... and {len(paths) - limit} more (use --json for all)")


@main.command()
@json_option
@click.pass_context
@handle_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """Show staged, modified, deleted and untracked files.

    Files whose size, mtime and inode match the index are not read again.
    """
    with open_repo(ctx) as repo:
        st = repo.status(progress=progress_for(as_json))
    if as_json:
        emit_json(st.to_json())
        return
    click.echo(
        f"On branch {st.branch}" if st.branch else f"HEAD detached at {(st.head or '')[:12]}"
    )
    _print_list("Staged, new", st.staged_added)
    _print_list("Staged, modified", st.staged_modified)
    _print_list("Staged, deleted", st.staged_deleted)
    _print_list("Modified, not staged", st.modified)
    _print_list("Deleted, not staged", st.deleted)
    _print_list("Untracked", st.untracked)
    if st.clean and not st.untracked:
        click.echo("nothing to commit, working tree clean")


@main.command()
@click.option("-m", "--message", required=True, help="The commit message.")
@click.option("--author", default=None, help='Override the author: "Name <email>".')
@click.option("--allow-empty", is_flag=True, help="Record a commit even with nothing staged.")
@click.option("--no-verify", is_flag=True, help="Do not run the pre-commit hook.")
@json_option
@click.pass_context
@handle_errors
def commit(
    ctx: click.Context,
    message: str,
    author: str | None,
    allow_empty: bool,
    no_verify: bool,
    as_json: bool,
) -> None:
    """Record the staged files as a new version.

    \b
    Example:
      pixvcs commit -m "add 2k crawled cats" --author "Ana <ana@example.org>"
    """
    with open_repo(ctx) as repo:
        who = author or identity_from_env()
        cid = repo.commit(message, author=who, allow_empty=allow_empty, verify=not no_verify)
        info = repo.commit_info(cid)
        branch = repo.current_branch()
    if as_json:
        emit_json(info.to_json())
        return
    click.echo(f"[{branch or 'detached'} {cid[:12]}] {message.splitlines()[0] if message else ''}")


def _format_time(ts: int, tz: int) -> str:
    t = time.gmtime(ts + tz)
    sign = "+" if tz >= 0 else "-"
    return (
        time.strftime("%Y-%m-%d %H:%M:%S", t)
        + f" {sign}{abs(tz) // 3600:02d}{abs(tz) % 3600 // 60:02d}"
    )


@main.command()
@click.argument("rev", required=False)
@click.option("--oneline", is_flag=True, help="One line per commit.")
@click.option("-n", "--max-count", type=int, default=None, help="Show at most N commits.")
@json_option
@click.pass_context
@handle_errors
def log(
    ctx: click.Context, rev: str | None, oneline: bool, max_count: int | None, as_json: bool
) -> None:
    """Show the versions, newest first.

    \b
    Example:
      pixvcs log --oneline main
    """
    with open_repo(ctx) as repo:
        commits = repo.log(rev, max_count=max_count)
    if as_json:
        emit_json([c.to_json() for c in commits])
        return
    for c in commits:
        if oneline:
            click.echo(f"{c.id[:12]} {c.message.splitlines()[0] if c.message else ''}")
        else:
            click.echo(f"commit {c.id}")
            if len(c.parents) > 1:
                click.echo("Merge: " + " ".join(p[:12] for p in c.parents))
            click.echo(f"Author: {c.author}")
            click.echo(f"Date:   {_format_time(c.time, c.timezone)}\n")
            for line in c.message.rstrip("\n").splitlines():
                click.echo(f"    {line}")
            click.echo()


@main.command()
@click.argument("rev", default="HEAD")
@json_option
@click.pass_context
@handle_errors
def show(ctx: click.Context, rev: str, as_json: bool) -> None:
    """Show one version: its commit and what it changed against its first parent."""
    with open_repo(ctx) as repo:
        cid = repo.resolve(rev)
        info = repo.commit_info(cid)
        d = repo.diff(info.parents[0], cid) if info.parents else _initial_diff(repo, cid)
    if as_json:
        emit_json({**info.to_json(), "diff": d.to_json()})
        return
    click.echo(
        f"commit {info.id}\nAuthor: {info.author}\nDate:   {_format_time(info.time, info.timezone)}\n"
    )
    for line in info.message.rstrip("\n").splitlines():
        click.echo(f"    {line}")
    click.echo()
    _print_diff(d, stat_only=False)


def _initial_diff(repo: Any, cid: str) -> Any:
    from .diff import diff_trees

    return diff_trees(repo, None, repo.tree_of(cid), old_label=None, new_label=cid)


def _print_diff(d: Any, *, stat_only: bool) -> None:
    from .diffreport import text

    click.echo(text(d, stat_only=stat_only), nl=False)


@main.command()
@click.argument("revs", nargs=-1)
@click.option("--stat", "stat_only", is_flag=True, help="Counts and the per-class table only.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown", "html"]),
    default=None,
    help="Output format (default: text; markdown for a pull-request comment, html for a "
    "self-contained page with thumbnails).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the report to FILE; a one-line summary still goes to stdout.",
)
@json_option
@click.pass_context
@handle_errors
def diff(
    ctx: click.Context,
    revs: tuple[str, ...],
    stat_only: bool,
    fmt: str | None,
    output: str | None,
    as_json: bool,
) -> None:
    """Show what changed: images added, removed, modified, renamed; per-class counts.

    With no REV, the work tree against HEAD; with one, REV against the work
    tree; with two, between them. --json is --format json; --stat applies to
    text and markdown.

    \b
    Examples:
      pixvcs diff v1 v2 --stat
      pixvcs diff main feature --format markdown -o diff.md
      pixvcs diff main feature --format html -o diff.html
    """
    from .diffreport import render, summary_line

    if len(revs) > 2:
        raise click.UsageError("diff takes at most two revisions")
    if as_json and fmt not in (None, "json"):
        raise click.UsageError("--json is --format json; give one of them")
    fmt = "json" if as_json else (fmt or "text")
    with open_repo(ctx) as repo:
        d = repo.diff(
            revs[0] if revs else None,
            revs[1] if len(revs) > 1 else None,
            progress=progress_for(fmt != "text" or output is not None),
        )
        report = render(d, fmt, read_media=repo.media.read, stat_only=stat_only)
    write_report(ctx, report, output, f"{summary_line(d)}; {fmt}")


@main.command()
@click.argument("rev")
@click.argument("paths", nargs=-1)
@click.option("-f", "--force", is_flag=True, help="Discard local changes.")
@click.option("-b", "new_branch", default=None, help="Create a branch at REV and switch to it.")
@click.option(
    "--link",
    is_flag=True,
    help="Hardlink files to the read-only media objects instead of copying "
    "(fastest; replace files rather than editing them in place, see docs/format.md).",
)
@sparse_options
@click.option(
    "--all", "whole", is_flag=True, help="Check out every image again (end a sparse work tree)."
)
@json_option
@click.pass_context
@handle_errors
def checkout(
    ctx: click.Context,
    rev: str,
    paths: tuple[str, ...],
    force: bool,
    new_branch: str | None,
    link: bool,
    include: tuple[str, ...],
    where: tuple[str, ...],
    whole: bool,
    as_json: bool,
) -> None:
    """Make the work tree exactly REV (a branch, tag or commit).

    Only paths whose content differs are touched; uncommitted changes are
    never overwritten unless --force. After `--`, restore only those paths.

    With --include/--where the work tree holds only those images from now
    on (a sparse work tree: the others stay in history and in commits, but
    not on disk, and their media are not fetched); --all brings back all.

    \b
    Example:
      pixvcs checkout v1
      pixvcs checkout main -- cats/
      pixvcs checkout main --where label=cat --where min_width=224
      pixvcs checkout main --all
    """
    if whole and (include or where):
        raise click.UsageError("--all cannot be combined with --include or --where")
    selection: dict[str, Any] = {}
    if include or where or whole:
        from .dataset import parse_where

        selection = {"include": list(include), "where": parse_where(where)}
    with open_repo(ctx) as repo:
        if new_branch:
            repo.create_branch(new_branch, rev)
            rev = new_branch
        result = repo.checkout(
            rev,
            force=force,
            link=link,
            paths=[user_path(ctx, p) for p in paths] if paths else None,
            progress=progress_for(as_json),
            **selection,
        )
    if as_json:
        emit_json(
            {
                "commit": result.target,
                "branch": result.branch,
                "written": result.written,
                "removed": result.removed,
            }
        )
        return
    at = f"branch {result.branch}" if result.branch else result.target[:12]
    click.echo(f"checked out {at}: {result.written} written, {result.removed} removed")


@main.command()
@click.argument("rev")
@click.option("-m", "--message", default=None, help="Message for the rollback commit.")
@click.option("--author", default=None, help='"Name <email>".')
@click.option("-f", "--force", is_flag=True, help="Discard local changes.")
@json_option
@click.pass_context
@handle_errors
def rollback(
    ctx: click.Context,
    rev: str,
    message: str | None,
    author: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Commit REV's exact content on the current branch, keeping history.

    \b
    Example:
      pixvcs rollback v3 -m "undo bad crawl"
    """
    with open_repo(ctx) as repo:
        cid = repo.rollback(
            rev,
            message=message,
            author=author or identity_from_env(),
            force=force,
            progress=progress_for(as_json),
        )
        info = repo.commit_info(cid)
    if as_json:
        emit_json(info.to_json())
        return
    click.echo(f"rolled back to {rev} as commit {cid[:12]}")


@main.command()
@click.argument("name", required=False)
@click.argument("rev", required=False)
@click.option("-d", "--delete", "delete", default=None, metavar="NAME", help="Delete a branch.")
@click.option("-f", "--force", is_flag=True, help="Move an existing branch.")
@json_option
@click.pass_context
@handle_errors
def branch(
    ctx: click.Context,
    name: str | None,
    rev: str | None,
    delete: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """List branches, create NAME at REV (default HEAD), or delete one.

    \b
    Example:
      pixvcs branch cleanup v2
    """
    with open_repo(ctx) as repo:
        if delete:
            old = repo.delete_branch(delete)
            if as_json:
                emit_json({"deleted": delete, "commit": old})
            else:
                click.echo(f"deleted branch {delete} (was {old[:12]})")
            return
        if name:
            target = repo.create_branch(name, rev, force=force)
            if as_json:
                emit_json({"name": name, "commit": target})
            else:
                click.echo(f"branch {name} at {target[:12]}")
            return
        branches = repo.branches()
        current = repo.current_branch()
    if as_json:
        emit_json(
            [{"name": n, "commit": c, "current": n == current} for n, c in sorted(branches.items())]
        )
        return
    for n, c in sorted(branches.items()):
        click.echo(f"{'*' if n == current else ' '} {n} {c[:12]}")


@main.command()
@click.argument("name", required=False)
@click.argument("rev", required=False)
@click.option("-m", "--message", default=None, help="Make an annotated tag with this message.")
@click.option("-d", "--delete", "delete", is_flag=True, help="Delete the tag NAME.")
@click.option("-f", "--force", is_flag=True, help="Move an existing tag.")
@json_option
@click.pass_context
@handle_errors
def tag(
    ctx: click.Context,
    name: str | None,
    rev: str | None,
    message: str | None,
    delete: bool,
    force: bool,
    as_json: bool,
) -> None:
    """List tags, or tag REV (default HEAD) as NAME.

    \b
    Example:
      pixvcs tag v1 -m "first release of the dataset"
    """
    with open_repo(ctx) as repo:
        if name and delete:
            old = repo.delete_tag(name)
            if as_json:
                emit_json({"deleted": name, "commit": old})
            else:
                click.echo(f"deleted tag {name}")
            return
        if name:
            target = repo.create_tag(name, rev, message=message, force=force)
            if as_json:
                emit_json({"name": name, "commit": target})
            else:
                click.echo(f"tag {name} at {target[:12]}")
            return
        tags = repo.tags()
    if as_json:
        emit_json([{"name": n, "commit": c} for n, c in sorted(tags.items())])
        return
    for n in sorted(tags):
        click.echo(n)


@main.command()
@click.argument("rev")
@click.option("-m", "--message", default=None, help="Message for a merge commit.")
@click.option("--author", default=None, help='"Name <email>".')
@json_option
@click.pass_context
@handle_errors
def merge(
    ctx: click.Context, rev: str, message: str | None, author: str | None, as_json: bool
) -> None:
    """Merge REV into the current branch.

    Fast-forwards when possible; otherwise makes a merge commit when the two
    sides changed different paths. Conflicting paths are reported and nothing
    is changed.

    \b
    Example:
      pixvcs merge crawl/2024-06-01
    """
    with open_repo(ctx) as repo:
        result = repo.merge(
            rev,
            message=message,
            author=author or identity_from_env(),
            progress=progress_for(as_json),
        )
    if as_json:
        emit_json({"result": result.kind, "commit": result.commit, "changed": result.changed})
        return
    if result.kind == "up-to-date":
        click.echo("already up to date")
    else:
        click.echo(
            f"{result.kind}: now at {(result.commit or '')[:12]} ({result.changed} paths changed)"
        )


@main.command(name="ls")
@click.argument("rev", required=False)
@json_option
@click.pass_context
@handle_errors
def ls_cmd(ctx: click.Context, rev: str | None, as_json: bool) -> None:
    """List tracked files of REV (default HEAD) with oid, size and image facts.

    \b
    Example:
      pixvcs ls v2 --json | jq '.[] | select(.width < 224)'
    """
    with open_repo(ctx) as repo:
        entries = repo.ls(rev)
    if as_json:
        emit_json([e.to_json() for e in entries])
        return
    for e in entries:
        dims = f"{e.width}x{e.height} {e.format}" if e.width else e.kind
        ident = (e.oid or e.blob)[:16]
        click.echo(f"{ident}  {e.size:>10}  {dims:<16}  {e.path}")


@main.command()
@json_option
@click.pass_context
@handle_errors
def fsck(ctx: click.Context, as_json: bool) -> None:
    """Verify every reachable object and every media object's hash.

    Exits non-zero naming every problem (path and oid).
    """
    with open_repo(ctx) as repo:
        report = repo.fsck(progress=progress_for(as_json))
    if as_json:
        emit_json(report.to_json())
    else:
        for p in report.problems:
            click.echo(f"error: {p['message']}")
        click.echo(
            f"checked {report.commits} commits, {report.trees} trees, {report.blobs} blobs, "
            f"{report.media_checked} media objects: "
            + ("ok" if report.ok else f"{len(report.problems)} problem(s)")
        )
    if not report.ok:
        sys.exit(1)


@main.command()
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    help="Seconds: keep temporary files, and unreachable objects of a bucket "
    "(media in S3, where a push may not have moved its ref yet), younger than this.",
)
@json_option
@click.pass_context
@handle_errors
def gc(ctx: click.Context, grace: float, as_json: bool) -> None:
    """Remove media objects no ref or index entry reaches; pack loose git objects.

    In a bare repository whose media are in S3, the bucket is swept instead:
    unreachable objects older than --grace, and staged uploads (incoming/)
    older than --grace or than their presigned URLs' lifetime, are deleted."""
    with open_repo(ctx) as repo:
        report = repo.gc(progress=progress_for(as_json), grace=grace)
    if as_json:
        emit_json(report.to_json())
        return
    young = f", {report.kept_young} unreachable but younger than --grace" if report.kept_young else ""
    click.echo(
        f"removed {report.removed_media} unreachable media object(s) "
        f"({report.removed_bytes} bytes) from {report.media}, kept {report.kept_media}{young}, "
        f"packed {report.packed_objects} loose git object(s)"
    )


@main.group(invoke_without_command=True)
@json_option
@click.pass_context
@handle_errors
def remote(ctx: click.Context, as_json: bool) -> None:
    """Manage remotes: where versions are pushed to and fetched from.

    With no subcommand, list them.

    \b
    Example:
      pixvcs remote add origin /shared/datasets/animals.git
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(remote_list, as_json=as_json)


@remote.command(name="add")
@click.argument("name")
@click.argument("url")
@click.pass_context
@handle_errors
def remote_add(ctx: click.Context, name: str, url: str) -> None:
    """Add a remote NAME at URL (a directory, or file:// URL, of a repository)."""
    with open_repo(ctx) as repo:
        if "://" not in url and not os.path.isabs(url):
            url = os.path.relpath(user_path(ctx, url), repo.root)
        repo.add_remote(name, url)
    click.echo(f"remote {name} -> {url}")


@remote.command(name="remove")
@click.argument("name")
@click.pass_context
@handle_errors
def remote_remove(ctx: click.Context, name: str) -> None:
    """Remove the remote NAME and its remote-tracking branches."""
    with open_repo(ctx) as repo:
        repo.remove_remote(name)
    click.echo(f"removed remote {name}")


@remote.command(name="list")
@json_option
@click.pass_context
@handle_errors
def remote_list(ctx: click.Context, as_json: bool) -> None:
    """List remotes with their URLs."""
    with open_repo(ctx) as repo:
        found = repo.remotes()
    if as_json:
        emit_json([{"name": n, "url": u} for n, u in found.items()])
        return
    for name, url in found.items():
        click.echo(f"{name}\t{url}")


@main.command()
@click.argument("remote_name", metavar="[REMOTE]", required=False, default="origin")
@click.argument("branches", nargs=-1)
@click.option("--tags", is_flag=True, help="Push all tags too.")
@click.option("-f", "--force", is_flag=True, help="Allow a non-fast-forward update.")
@click.option("--no-verify", is_flag=True, help="Do not run the pre-push hook.")
@json_option
@click.pass_context
@handle_errors
def push(
    ctx: click.Context,
    remote_name: str,
    branches: tuple[str, ...],
    tags: bool,
    force: bool,
    no_verify: bool,
    as_json: bool,
) -> None:
    """Send versions to REMOTE (default origin): images first, then history,
    then the branch by compare-and-swap. Only what the remote lacks moves.

    \b
    Example:
      pixvcs push origin main --tags
    """
    with open_repo(ctx) as repo:
        result = repo.push(
            remote_name,
            branches,
            tags=tags,
            force=force,
            verify=not no_verify,
            progress=progress_for(as_json),
        )
    if as_json:
        emit_json(result.to_json())
        return
    for ref, change in result.updated.items():
        old = (change["old"] or "(new)")[:12]
        click.echo(f"{ref}: {old} -> {(change['new'] or '')[:12]}")
    for ref in result.up_to_date:
        click.echo(f"{ref}: up to date")
    click.echo(f"sent {result.media_sent} media object(s) to {remote_name}")


@main.command()
@click.argument("remote_name", metavar="[REMOTE]", required=False, default="origin")
@click.option(
    "--all-media",
    is_flag=True,
    help="Also download the images of every fetched version (default: on demand).",
)
@json_option
@click.pass_context
@handle_errors
def fetch(ctx: click.Context, remote_name: str, all_media: bool, as_json: bool) -> None:
    """Get history from REMOTE into refs/remotes/REMOTE/*; images come when needed.

    \b
    Example:
      pixvcs fetch origin --all-media
    """
    with open_repo(ctx) as repo:
        result = repo.fetch(remote_name, all_media=all_media, progress=progress_for(as_json))
    if as_json:
        emit_json(result.to_json())
        return
    for ref, change in result.updated.items():
        click.echo(f"{ref}: {(change['old'] or '(new)')[:12]} -> {(change['new'] or '')[:12]}")
    if all_media:
        click.echo(f"fetched {result.media_fetched} media object(s)")


@main.command()
@click.argument("remote_name", metavar="[REMOTE]", required=False)
@click.argument("branch", required=False)
@json_option
@click.pass_context
@handle_errors
def pull(ctx: click.Context, remote_name: str | None, branch: str | None, as_json: bool) -> None:
    """Fetch, then merge REMOTE's BRANCH (default: the current branch's upstream).

    \b
    Example:
      pixvcs pull origin main
    """
    with open_repo(ctx) as repo:
        result = repo.pull(remote_name, branch, progress=progress_for(as_json))
    if as_json:
        emit_json({"result": result.kind, "commit": result.commit, "changed": result.changed})
        return
    if result.kind == "up-to-date":
        click.echo("already up to date")
    else:
        click.echo(f"{result.kind}: now at {(result.commit or '')[:12]}")


@main.command()
@click.argument("url")
@click.argument("directory", required=False)
@click.option("--rev", default=None, help="Check out this branch, tag or commit.")
@click.option(
    "--lfs-url",
    default=None,
    metavar="URL",
    help="The LFS server, when it is not URL.git/info/lfs (kept as remote.origin.lfsurl).",
)
@sparse_options
@json_option
@click.pass_context
@handle_errors
def clone(
    ctx: click.Context,
    url: str,
    directory: str | None,
    rev: str | None,
    lfs_url: str | None,
    include: tuple[str, ...],
    where: tuple[str, ...],
    as_json: bool,
) -> None:
    """Copy a repository: all history, and the images of the checked-out version
    only (other versions' images are fetched when needed).

    --include/--where narrow it to those images: a sparse work tree (see
    `pixvcs checkout --all` to widen it later).

    \b
    Example:
      pixvcs clone /shared/datasets/animals.git animals
      pixvcs clone https://host/animals --include 'cat/*' --where min_width=224
    """
    from .dataset import parse_where
    from .repo import Repo

    if "://" not in url:
        url = user_path(ctx, url)
    name = directory or os.path.basename(url.rstrip("/")).removesuffix(".git") or "dataset"
    dest = user_path(ctx, name)
    repo = Repo.clone(
        url,
        dest,
        rev=rev,
        token=os.environ.get("PIXVCS_TOKEN") or None,
        lfs_url=lfs_url,
        include=list(include),
        where=parse_where(where),
        progress=progress_for(as_json),
    )
    try:
        head, branch = repo.head_commit(), repo.current_branch()
        media = sum(1 for _ in repo.media)
    finally:
        repo.close()
    if as_json:
        emit_json({"path": dest, "commit": head, "branch": branch, "media": media})
        return
    click.echo(f"cloned into {dest}: {branch or (head or '')[:12]}, {media} media object(s)")


@main.group(hidden=True)
def hook() -> None:
    """Entry points for git hooks that pixvcs installs."""


@hook.command(name="pre-receive")
@click.pass_context
def hook_pre_receive(ctx: click.Context) -> None:
    """git's pre-receive hook of a bare repository: refuse updates whose images
    are missing. Reads "OLD NEW REF" lines on stdin."""
    from .repo import Repo
    from .transfer import check_incoming

    updates = []
    for line in sys.stdin.read().splitlines():
        parts = line.split()
        if len(parts) == 3:
            updates.append((parts[0], parts[1], parts[2]))
    # git runs the hook in the repository with the pushed objects in a
    # quarantine directory named by these variables
    dirs = [os.environ[v] for v in ("GIT_OBJECT_DIRECTORY",) if os.environ.get(v)]
    dirs += [d for d in os.environ.get("GIT_ALTERNATE_OBJECT_DIRECTORIES", "").split(":") if d]
    git_dir = os.environ.get("GIT_DIR", ".")
    try:
        repo = Repo(os.path.abspath(git_dir), bare=True)
    except PixvcsError as e:
        click.echo(f"pixvcs: {e}", err=True)
        sys.exit(1)
    try:
        problems = check_incoming(repo, updates, object_dirs=dirs)
    finally:
        repo.close()
    for p in problems:
        click.echo(f"pixvcs: refusing {p}", err=True)
    if problems:
        sys.exit(1)


@main.group(name="hooks")
def hooks_group() -> None:
    """Hooks that run pixvcs check before commits and pushes."""


@hooks_group.command(name="install")
@click.argument("names", nargs=-1)
@click.option("-f", "--force", is_flag=True, help="Replace existing hooks of the same name.")
@click.pass_context
@handle_errors
def hooks_install(ctx: click.Context, names: tuple[str, ...], force: bool) -> None:
    """Install the pre-commit and pre-push hooks (or only NAMES) into the
    repository: commits and pushes then have to satisfy pixvcs.toml.

    \b
    Example:
      pixvcs hooks install
    """
    from .hooks import SCRIPTS, install

    with open_repo(ctx) as repo:
        written = install(repo, names or tuple(SCRIPTS), force=force)
    for path in written:
        click.echo(f"installed {path}")


@main.group()
def catalog() -> None:
    """The image catalog (derived data: dimensions, format, perceptual hash)."""


@catalog.command(name="rebuild")
@json_option
@click.pass_context
@handle_errors
def catalog_rebuild(ctx: click.Context, as_json: bool) -> None:
    """Recreate the catalog by decoding every media object again."""
    with open_repo(ctx) as repo:
        result = repo.rebuild_catalog(progress=progress_for(as_json))
    if as_json:
        emit_json(result)
        return
    click.echo(f"catalog rebuilt: {result['objects']} objects, {result['invalid']} invalid")


if __name__ == "__main__":  # pragma: no cover - `python -m pixvcs.cli`
    # run the `main` of the imported module, where the other modules' commands
    # registered, not this __main__ copy of it
    from pixvcs.cli import main as _main

    _main()
