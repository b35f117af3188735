"""``pixvcs serve``: serve the bare repositories under a directory over HTTP
(the work is in :mod:`pixvcs.server`).
"""

from __future__ import annotations

import os
import sys

import click

from .cli import handle_errors, main, user_path


@main.command()
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--auth",
    "auth_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Token file: lines of 'TOKEN read' or 'TOKEN write'. Without it the "
    "server binds to loopback only and anyone who can connect may push.",
)
@click.option(
    "--media-url",
    default=None,
    metavar="s3://BUCKET/PREFIX",
    help="Keep media in this S3 bucket (under PREFIX/NAME/ for repository NAME), "
    "for every repository whose own config names no media URL. Clients get "
    "presigned URLs. Credentials: the standard AWS chain (AWS_ACCESS_KEY_ID, ...).",
)
@click.option(
    "--s3-endpoint",
    default=None,
    metavar="URL",
    help="Endpoint of an S3-compatible store (MinIO, Ceph, ...); default: AWS. "
    "Clients must reach it at this URL too.",
)
@click.option("--s3-region", default=None, help="Region of the bucket.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Processes answering requests (each a thread per request); "
    "default: one per core, at most 8.",
)
@click.pass_context
@handle_errors
def serve(
    ctx: click.Context,
    root: str,
    host: str,
    port: int,
    auth_file: str | None,
    media_url: str | None,
    s3_endpoint: str | None,
    s3_region: str | None,
    workers: int | None,
) -> None:
    """Serve every bare repository under ROOT over HTTP: ROOT/NAME at
    http://HOST:PORT/NAME, for pixvcs, stock git and git-lfs alike (git smart
    HTTP and the git-lfs Batch API). Runs until interrupted.

    \b
    Example:
      pixvcs init --bare /srv/datasets/animals
      echo "$(openssl rand -hex 20) write" > tokens
      pixvcs serve /srv/datasets --host 0.0.0.0 --port 8000 --auth tokens
      pixvcs clone http://me:TOKEN@server:8000/animals
      pixvcs serve /srv/datasets --auth tokens --media-url s3://my-bucket/datasets
    """
    from .errors import UsageError
    from .server import (
        default_workers,
        is_loopback,
        make_app,
        make_server,
        repositories,
        serve_in_processes,
    )

    if auth_file is None and not is_loopback(host):
        raise UsageError(
            f"refusing to serve on {host} without --auth: anyone could push; "
            "give a token file, or serve on 127.0.0.1"
        )
    app = make_app(
        user_path(ctx, root),
        user_path(ctx, auth_file) if auth_file else None,
        media_url=media_url,
        s3_endpoint=s3_endpoint,
        s3_region=s3_region,
    )
    try:
        server = make_server(app, host, port)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"serving {app.root} at http://{shown}:{server.server_port}/NAME")
    names = repositories(app.root)
    for name in names:
        click.echo(f"  http://{shown}:{server.server_port}/{name}")
    if not names:
        click.echo(f"  (no repository yet: create one with pixvcs init --bare {app.root}/NAME)")
    if app.media is not None:
        click.echo(f"media: {app.media.url}NAME/ (unless a repository's config names its own)")
    if auth_file is None:
        click.echo("no --auth: listening on loopback only, and every client may push")
    processes = workers if workers is not None else default_workers()
    if not hasattr(os, "fork"):
        processes = 1  # the platform cannot fork: threads in this process
    click.echo(f"{processes} worker process(es); stop with Ctrl-C or SIGTERM", nl=True)
    sys.stdout.flush()  # before the workers fork: nothing printed twice
    try:
        serve_in_processes(server, processes)
    finally:
        server.server_close()
