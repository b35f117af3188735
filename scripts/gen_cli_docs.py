#!/usr/bin/env python3
"""Generate docs/cli.md from the ``--help`` of every pixvcs command.

    python scripts/gen_cli_docs.py > docs/cli.md

The whole file comes from here: the intro, the help text of every command and
subcommand (walked recursively from ``pixvcs.cli.main``), and the description
of each command's ``--json`` output (``JSON_OUTPUT`` below). tests/test_docs.py
checks that docs/cli.md equals this script's output, so the reference cannot
drift from the code: after changing a command, re-run the line above.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import click

from pixvcs.cli import main as cli_main

#: Help is rendered at a fixed width (what an 80-column terminal shows), so the
#: output does not depend on the terminal it is generated in.
WIDTH = 78

#: Commands in reading order; commands not listed follow in alphabetical order.
ORDER = [
    "init",
    "add",
    "rm",
    "status",
    "commit",
    "log",
    "show",
    "diff",
    "checkout",
    "rollback",
    "branch",
    "tag",
    "merge",
    "ls",
    "fsck",
    "gc",
    "catalog",
]

_COMMIT_KEYS = """\
| key | type | meaning |
|-----|------|---------|
| `id` | string | commit id (40 hex digits) |
| `message` | string | full commit message, ending in a newline |
| `author` | string | `Name <email>` |
| `committer` | string | `Name <email>` |
| `time` | integer | author time, seconds since the epoch |
| `timezone` | integer | author's offset from UTC, in seconds |
| `parents` | list of strings | parent commit ids (two for a merge) |
| `tree` | string | root tree id |
"""

_DIFF_KEYS = """\
| key | type | meaning |
|-----|------|---------|
| `old` | string or null | the old side as given (`"HEAD"` when no revision was given; null for the first commit in `show`) |
| `new` | string or null | the new side as given; null = the work tree |
| `added` | list of paths | paths only in the new side (renames excluded) |
| `removed` | list of paths | paths only in the old side (renames excluded) |
| `modified` | list of paths | paths in both sides with different content or mode |
| `renamed` | list of `{"from", "to"}` | the same bytes (same oid, or same blob for non-images) removed at `from` and added at `to`; across class folders this is a relabel |
| `classes` | object | class (top-level folder; `"."` for files at the root) → `{"before": n, "after": n}` image counts |
| `counts` | object | `{"added", "removed", "modified", "renamed"}`: the lengths of the lists |
| `details` | object | modified image path → `old_oid`, `new_oid`, `old_size`, `new_size`, and when the catalog knows both images `old_format`, `new_format`, `old_dims` / `new_dims` (`[width, height]`) and `phash_distance` (Hamming distance of the perceptual hashes, 0–64) |
"""

#: What ``--json`` prints, per command path. Every command with a --json option
#: must have an entry (tests/test_docs.py checks it).
JSON_OUTPUT: dict[str, str] = {
    "add": """\
An object:

| key | type | meaning |
|-----|------|---------|
| `added` | list of paths | files staged by this call (new or changed) |
| `unchanged` | integer | files whose content the index already had (not staged again) |
| `invalid` | list of `{"path", "error"}` | images that do not decode, staged anyway because of `--allow-invalid` |

Without `--allow-invalid`, invalid images make the command fail (exit 1)
with the list on stderr, and nothing is printed on stdout.
""",
    "status": """\
An object:

| key | type | meaning |
|-----|------|---------|
| `branch` | string or null | current branch; null when HEAD is detached |
| `head` | string or null | HEAD's commit id; null before the first commit |
| `staged` | object | `{"added", "modified", "deleted"}`: lists of paths staged for the next commit |
| `modified` | list of paths | tracked files whose work-tree content differs from the index |
| `deleted` | list of paths | tracked files missing from the work tree |
| `untracked` | list of paths | files not tracked and not ignored by `.pixvcsignore` |
| `clean` | boolean | nothing staged, modified or deleted (untracked files do not count) |

All lists are sorted.
""",
    "commit": "The new commit, as an object:\n\n" + _COMMIT_KEYS,
    "log": "A list of commits, newest first, each an object:\n\n" + _COMMIT_KEYS,
    "show": "The commit's keys (as `log`), plus `diff`: the dataset diff against "
    "its first parent, an object as printed by `diff --json`.\n",
    "diff": "An object:\n\n" + _DIFF_KEYS,
    "checkout": """\
An object:

| key | type | meaning |
|-----|------|---------|
| `commit` | string | the commit now checked out (or that the paths were restored from) |
| `branch` | string or null | the branch HEAD now points at; null when detached or when restoring paths |
| `written` | integer | files written to the work tree |
| `removed` | integer | files deleted from the work tree |
""",
    "rollback": "The new rollback commit, as an object:\n\n" + _COMMIT_KEYS,
    "branch": """\
Listing: a list of `{"name", "commit", "current"}` (`current` is true for the
branch HEAD points at), sorted by name. Creating: `{"name", "commit"}`.
Deleting: `{"deleted", "commit"}` (the commit the branch pointed at).
""",
    "tag": """\
Listing: a list of `{"name", "commit"}` sorted by name, where `commit` is the
tagged commit (annotated tags are peeled). Creating: `{"name", "commit"}`.
Deleting: `{"deleted", "commit"}` (the commit the tag pointed at).
""",
    "merge": """\
An object:

| key | type | meaning |
|-----|------|---------|
| `result` | string | `"up-to-date"`, `"fast-forward"` or `"merge"` |
| `commit` | string or null | the commit the branch is at afterwards |
| `changed` | integer | work-tree paths written or removed |
""",
    "ls": """\
A list of objects, one per tracked file, sorted by path:

| key | type | meaning |
|-----|------|---------|
| `path` | string | path in the version |
| `kind` | string | `"media"` (an image, stored as an LFS pointer) or `"blob"` |
| `oid` | string or null | SHA-256 of the image bytes; null for blobs |
| `size` | integer | size in bytes |
| `blob` | string | git blob id (of the pointer, for images) |
| `mode` | string | git mode in octal, `"100644"` or `"100755"` |
| `width`, `height` | integer or null | from the catalog; null if unknown or invalid |
| `format` | string or null | `"JPEG"`, `"PNG"`, ... from the catalog |
""",
    "fsck": """\
An object; the exit code is 1 when `ok` is false:

| key | type | meaning |
|-----|------|---------|
| `ok` | boolean | no problem found |
| `commits`, `trees`, `blobs` | integer | reachable git objects checked |
| `media_checked` | integer | media objects re-hashed |
| `problems` | list of objects | each with `kind` (`missing-object`, `corrupt-object`, `unsafe-entry`, `bad-pointer`, `missing-media`, `corrupt-media`, `pointer-size-mismatch`), `message`, and where known `path`, `oid`, `object`, `ref` |
""",
    "gc": """\
An object:

| key | type | meaning |
|-----|------|---------|
| `removed_media` | integer | unreferenced media objects deleted |
| `removed_bytes` | integer | their total size |
| `kept_media` | integer | media objects still referenced |
| `kept_young` | integer | unreferenced objects of a bucket kept because they are younger than `--grace` (always 0 for a local store) |
| `packed_objects` | integer | loose git objects packed |
| `removed_temp` | integer | stale temporary files (older than `--grace`) deleted; for media in S3, staged uploads (`incoming/`) |
| `media` | string | where the media were swept: `"lfs"` (the repository's store) or the bucket's `s3://` URL |
""",
    "cache info": """\
An object: `dir` (string: the cache directory), `media` (object: `packs`,
`objects`, `bytes`, integers: what the media store holds) and `mirrors`
(object: `count`, `bytes`, integers: the history mirrors of remotes).
""",
    "cache clear": """\
What was deleted, as `cache info` counted it just before: `dir`, `media`
(`packs`, `objects`, `bytes`) and `mirrors` (`count`, `bytes`; zeros with
`--media-only`).
""",
    "catalog rebuild": """\
An object: `objects` (integer: media objects decoded) and `invalid` (integer:
those that do not decode).
""",
    "check": """\
`--json` is `--format json`: the check report, an object (schema
`pixvcs-check/1`, described in full in [ci.md](ci.md#the-json-report)); the
exit code is 1 when `ok` is false:

| key | type | meaning |
|-----|------|---------|
| `schema` | string | `"pixvcs-check/1"` |
| `ok` | boolean | every evaluated rule holds |
| `mode` | string | `"version"`, `"range"` (BASE..HEAD) or `"staged"` |
| `head`, `base` | object or null | `{"rev", "commit"}` of each side (`base` null for a version; `head.commit` null for the index) |
| `policy` | object | the effective policy, every key, and `source` (`"pixvcs.toml"` or null for the defaults) |
| `counts` | object | `images`, `checked`, `added`, `removed`, `modified`, `renamed` (null for a version), `rules`, `rules_failed`, `violations` |
| `classes`, `splits` | object | name → `{"before", "after"}` image counts (`before` null for a version) |
| `changes` | object or null | `added`, `removed`, `modified` (paths), `renamed` (`{"from", "to"}`); null for a version |
| `rules` | list of objects | each evaluated rule: `rule`, `description`, `ok`, `checked`, `violations`, `omitted` |
| `violations` | list of objects | `rule`, `message`, `paths`, and where they apply `oids`, `distance`, `kind` (`"exact"`/`"near"`), `more_paths` |
""",
    "export": """\
An object:

| key | type | meaning |
|-----|------|---------|
| `format` | string | `"imagefolder"`, `"webdataset"` or `"csv-manifest"` |
| `dest` | string | the absolute path written (a directory, or the manifest file) |
| `commit` | string | the commit exported (REV resolved once) |
| `images` | integer | images exported (after `--include` / `--where`) |
| `files` | integer | files written: images (imagefolder), shards (webdataset), 1 (csv-manifest) |
| `linked` | integer | imagefolder: images hardlinked to the read-only media objects rather than copied |
| `bytes` | integer | bytes written (hardlinked images count their size; shards their tar size) |
| `shards` | list of strings | webdataset: the shard file names in order; otherwise empty |
""",
    "crawl": """\
An object (also printed by `--resume`):

| key | type | meaning |
|-----|------|---------|
| `job` | string | the job id, `YYYYMMDDTHHMMSSZ-xxxxxx` |
| `status` | string | `"done"` (a failed run exits 1 with the error on stderr; see `crawl status`) |
| `branch` | string | the crawl branch (it exists only when `commit` is not null) |
| `base` | string or null | the base revision as given (default: the current branch) |
| `base_commit` | string or null | the commit the job started from: the parent of `commit` |
| `commit` | string or null | the staged commit; null when nothing new was found |
| `added` | integer | images added by the commit |
| `fetched` | integer | URLs answered with a 2xx status |
| `failed` | integer | URLs (and pages) whose bytes could not be fetched |
| `invalid` | integer | URLs whose bytes are not an acceptable image |
| `duplicates` | integer | exact duplicates left out (of the base, or within the crawl) |
| `near_duplicates` | integer | near-duplicates left out (perceptual-hash distance at most `--near-distance`) |
| `skipped` | integer | URLs listed twice, or not added because of `--max-images` |
| `reasons` | object | `failed`, `invalid`, `duplicates`, `near_duplicates`, `skipped`: each reason → count (the reasons are listed in [crawling.md](crawling.md#the-pipeline)) |
| `robots` | string | `"respected"` or `"ignored"` (`--ignore-robots`) |
| `provenance` | string or null | path of the provenance file in the commit |
""",
    "crawl status": """\
With JOB, an object; without, a list of them (oldest first):

| key | type | meaning |
|-----|------|---------|
| `job`, `status`, `branch`, `base`, `base_commit`, `commit` | | as for `crawl --json`; `status` is `"discovering"`, `"fetching"`, `"committing"` or `"done"` |
| `created`, `updated` | string | UTC times, `YYYY-MM-DDTHH:MM:SSZ` |
| `error` | string or null | the error that stopped the last run (resume it with `crawl --resume JOB`) |
| `sources` | list of objects | what was asked for: `{"kind": "urls" \\| "page" \\| "keywords", ...}` |
| `items` | integer or null | URLs to fetch (null until discovery is done) |
| `processed` | integer | URLs fetched so far (stored, invalid or failed) |
| `fetched`, `failed`, `invalid`, `duplicates`, `near_duplicates`, `skipped`, `added`, `reasons`, `robots` | | the summary, as for `crawl --json` (present once the job has committed) |
| `requests` | integer | HTTP requests made by the last run (present once done) |
""",
    "remote": """\
A list of `{"name", "url"}`, sorted by name (also `remote list --json`).
""",
    "remote list": """\
A list of `{"name", "url"}`, sorted by name.
""",
    "push": """\
An object:

| Key | Type | Meaning |
|-----|------|---------|
| `remote` | string | the remote's name |
| `updated` | object | ref name -> `{"old", "new"}` commit ids (`old` null for a new ref) |
| `up_to_date` | list of strings | refs the remote already had at the same commit |
| `media_sent` | integer | media objects uploaded (only those the remote lacked) |
""",
    "fetch": """\
An object: `remote` (string), `updated` (ref name -> `{"old", "new"}`, for
`refs/remotes/REMOTE/*` and new tags) and `media_fetched` (integer; non-zero
only with `--all-media`).
""",
    "pull": """\
The merge result, as for `merge`: `result` (`"up-to-date"`, `"fast-forward"`
or `"merge"`), `commit`, `changed`.
""",
    "clone": """\
An object: `path` (the new work tree), `commit` (HEAD), `branch` (null when
detached by `--rev`), `media` (media objects fetched: those of the checked-out
version only).
""",
}

INTRO = """\
# pixvcs command reference

This file is generated by `scripts/gen_cli_docs.py` from the `--help` of every
command; do not edit it by hand. To change it, change the command (or the
JSON descriptions in the script) and run

    python scripts/gen_cli_docs.py > docs/cli.md

## Conventions

- **One call per command.** Each command opens the repository found at or
  above the current directory (or the `-C DIR` directory), makes one call
  into the Python API (see [python-api.md](python-api.md)) and prints the
  result.
- **Paths** on the command line are relative to the current directory (after
  `-C`). Inside the repository they are always `/`-separated and relative to
  the work tree.
- **Revisions** (REV) are a branch, a tag, a full or abbreviated commit id,
  `HEAD`, or any of these followed by `~N`, `~` or `^` (first parents).
- **`--json`** prints one JSON document on stdout instead of text; each
  command's keys are described below its help. Progress goes to stderr, only
  when stderr is a terminal, never with `--json` and never when `CI` is set.
- **Identity.** `commit`, `rollback` and `merge` record as author the
  `--author` option; else `GIT_AUTHOR_NAME` and `GIT_AUTHOR_EMAIL` (both must
  be set); else git's `user.name` and `user.email` (repository config, then
  global); else `user <user@hostname>`.
- **Exit codes.** 0 on success; 1 for an error pixvcs detected (the message is
  one line on stderr, starting with `error:`) and for `fsck` problems; 2 for
  a usage error (a bad option, or a request that makes no sense, like
  deleting the current branch).

The on-disk format these commands read and write is specified in
[format.md](format.md).
"""


def _ctx(cmd: click.Command, name: str, parent: click.Context | None) -> click.Context:
    # the command's own context_settings (e.g. help_option_names) apply, as in make_context
    settings = {**cmd.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    return click.Context(cmd, info_name=name, parent=parent, **settings)


def _children(group: click.Group, ctx: click.Context) -> list[str]:
    names = group.list_commands(ctx)
    listed = [n for n in ORDER if n in names]
    return listed + sorted(n for n in names if n not in listed)


def walk(
    cmd: click.Command = cli_main,
    path: tuple[str, ...] = (),
    parent: click.Context | None = None,
) -> Iterator[tuple[tuple[str, ...], click.Command, click.Context]]:
    """Every command below ``cmd`` as ``(path, command, context)``, depth first.

    ``path`` is the command's words after ``pixvcs`` (empty for the group itself).
    """
    ctx = _ctx(cmd, path[-1] if path else "pixvcs", parent)
    yield path, cmd, ctx
    if isinstance(cmd, click.Group):
        for name in _children(cmd, ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk(sub, (*path, name), ctx)


def has_json(cmd: click.Command) -> bool:
    return any(isinstance(p, click.Option) and "--json" in p.opts for p in cmd.params)


def undocumented_json() -> list[str]:
    """Commands with a --json option but no entry in JSON_OUTPUT."""
    return [" ".join(p) for p, cmd, _ in walk() if has_json(cmd) and " ".join(p) not in JSON_OUTPUT]


def _anchor(title: str) -> str:
    return title.lower().replace(" ", "-")


def render() -> str:
    """The complete text of docs/cli.md."""
    commands = list(walk())
    out = [INTRO]
    out.append("## Commands\n")
    for path, cmd, _ in commands:
        title = " ".join(("pixvcs", *path))
        summary = cmd.get_short_help_str(limit=200)
        out.append(f"- [`{title}`](#{_anchor(title)}): {summary}")
    out.append("")
    for path, cmd, ctx in commands:
        title = " ".join(("pixvcs", *path))
        out.append(f"## {title}\n")
        out.append("```text")
        out.append(cmd.get_help(ctx).rstrip())
        out.append("```\n")
        key = " ".join(path)
        if has_json(cmd):
            out.append("### JSON output\n")
            out.append(JSON_OUTPUT.get(key, "*(not documented yet)*\n").rstrip() + "\n")
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    missing = undocumented_json()
    if missing:
        print(f"warning: --json output not described for: {', '.join(missing)}", file=sys.stderr)
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
