"""``pixvcs cache``: the cache directory of remote datasets (``pixvcs.open(URL)``;
the work is in :mod:`pixvcs.cache`)."""

from __future__ import annotations

from typing import Any

import click

from .cli import emit_json, handle_errors, json_option, main


@main.group(name="cache")
def cache_group() -> None:
    """The cache of remote datasets: media fetched by pixvcs.open(URL), and
    history mirrors. Default directory: $PIXVCS_CACHE_DIR, else
    $XDG_CACHE_HOME/pixvcs, else ~/.cache/pixvcs."""


_DIR = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="The cache directory (default: as pixvcs.open uses).",
)


def _describe(info: dict[str, Any]) -> str:
    media, mirrors = info["media"], info["mirrors"]
    return (
        f"{info['dir']}: {media['objects']} media object(s) in {media['packs']} pack(s), "
        f"{media['bytes']} bytes; {mirrors['count']} history mirror(s), {mirrors['bytes']} bytes"
    )


@cache_group.command(name="info")
@_DIR
@json_option
@handle_errors
def cache_info_cmd(cache_dir: str | None, as_json: bool) -> None:
    """What the cache holds."""
    from .cache import cache_info

    info = cache_info(cache_dir)
    if as_json:
        emit_json(info)
        return
    click.echo(_describe(info))


@cache_group.command(name="clear")
@_DIR
@click.option("--media-only", is_flag=True, help="Keep the history mirrors.")
@json_option
@handle_errors
def cache_clear_cmd(cache_dir: str | None, media_only: bool, as_json: bool) -> None:
    """Delete the cached media (and history mirrors). Run it while nothing reads
    from the cache: the next read fetches again."""
    from .cache import clear_cache

    gone = clear_cache(cache_dir, mirrors=not media_only)
    if as_json:
        emit_json(gone)
        return
    click.echo("deleted " + _describe(gone))
