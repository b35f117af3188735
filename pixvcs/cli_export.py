"""``pixvcs export``: a pinned version as an ImageFolder tree, WebDataset shards
or a CSV manifest (the work is in :mod:`pixvcs.export`)."""

from __future__ import annotations

import click

from .cli import emit_json, handle_errors, json_option, main, open_repo, progress_for, user_path
from .export import DEFAULT_SHARD_SIZE, FORMATS


@main.command()
@click.argument("args", nargs=-1, required=True, metavar="[REV] DEST")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True, help="What to write.")
@click.option(
    "--include",
    multiple=True,
    metavar="GLOB",
    help="Only paths matching GLOB (fnmatch: '*' also matches '/'); repeatable, any matches.",
)
@click.option(
    "--where",
    multiple=True,
    metavar="KEY=VALUE",
    help="Filter: label=NAME (repeatable), min_width, min_height, max_width, max_height "
    "(pixels), added_since=REV.",
)
@click.option(
    "--shard-size",
    type=click.IntRange(min=1),
    default=DEFAULT_SHARD_SIZE,
    show_default=True,
    help="Images per WebDataset shard.",
)
@click.option(
    "--copy",
    is_flag=True,
    help="ImageFolder: copy images instead of hardlinking the read-only media objects.",
)
@json_option
@click.pass_context
@handle_errors
def export(
    ctx: click.Context,
    args: tuple[str, ...],
    fmt: str,
    include: tuple[str, ...],
    where: tuple[str, ...],
    shard_size: int,
    copy: bool,
    as_json: bool,
) -> None:
    """Write the images of REV (default HEAD) to DEST in a format ML tools read.

    \b
    imagefolder   DEST/<label>/<file>: hardlinks to the read-only media
                  objects where possible (the files are read-only: replace
                  them, do not edit them in place), else copies
    webdataset    DEST/shard-000000.tar, ...: each image with a .json
                  sidecar (label, oid, path, width, height, size,
                  provenance: the image's crawl/provenance record or null)
    csv-manifest  the file DEST: path,label,oid,size

    The same version and filters always give byte-identical output. DEST
    must be empty or not exist (a directory; a file for csv-manifest).

    \b
    Example:
      pixvcs export v3 --format webdataset shards/ --where min_width=224
      pixvcs export --format imagefolder train/ --include 'cat/*' --include 'dog/*'
    """
    from .dataset import open as open_dataset
    from .dataset import parse_where
    from .export import export as run_export

    if len(args) > 2:
        raise click.UsageError("export takes at most REV and DEST")
    rev, dest = (args[0], args[1]) if len(args) == 2 else ("HEAD", args[0])
    filters = parse_where(where)
    with open_repo(ctx) as repo, open_dataset(repo, rev, include=include, where=filters) as ds:
        result = run_export(
            ds,
            user_path(ctx, dest),
            format=fmt,
            shard_size=shard_size,
            link=not copy,
            progress=progress_for(as_json),
        )
    if as_json:
        emit_json(result.to_json())
        return
    how = f", {result.linked} hardlinked" if fmt == "imagefolder" else ""
    click.echo(
        f"exported {result.images} image(s) of {result.commit[:12]} as {fmt} to {result.dest}: "
        f"{result.files} file(s){how}, {result.bytes} bytes"
    )
