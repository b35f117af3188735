"""``pixvcs check``: one call into pixvcs.check, one report out (see docs/ci.md)."""

from __future__ import annotations

import sys

import click

from .cli import handle_errors, json_option, main, open_repo, progress_for, write_report


@main.command()
@click.argument("spec", metavar="[REV | BASE..HEAD]", required=False)
@click.option("--staged", is_flag=True, help="Check the staged changes (the index) against HEAD.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown", "html", "junit"]),
    default=None,
    help="Report format (default: text).",
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
def check(
    ctx: click.Context,
    spec: str | None,
    staged: bool,
    fmt: str | None,
    output: str | None,
    as_json: bool,
) -> None:
    """Check a version or a change against the dataset's policy (pixvcs.toml).

    With REV (default HEAD), every image of that version is checked. With
    BASE..HEAD, the images new since the merge base are checked, and
    duplicates and split leakage are searched between them and the whole
    HEAD version; the [changes] limits apply. With --staged, the index is
    checked against HEAD (for a pre-commit hook). The policy is the
    pixvcs.toml of the version checked; without one, the defaults apply (see
    docs/ci.md).

    Exit status: 0 when the policy holds, 1 when it does not, 2 for a usage
    error or a malformed policy.

    \b
    Examples:
      pixvcs check                       # HEAD
      pixvcs check main..HEAD --format markdown -o report.md
      pixvcs check --staged
      pixvcs check v3 --format junit -o pixvcs-junit.xml
    """
    from .check import check as run_check
    from .report import render, summary_line

    if as_json and fmt not in (None, "json"):
        raise click.UsageError("--json is --format json; give one of them")
    fmt = "json" if as_json else (fmt or "text")
    with open_repo(ctx) as repo:
        result = run_check(repo, spec, staged=staged, progress=progress_for(fmt != "text"))
        report = render(result, fmt, read_media=repo.media.read)
    write_report(ctx, report, output, f"{summary_line(result)}; {fmt}")
    sys.exit(0 if result.ok else 1)
