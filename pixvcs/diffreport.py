"""Reports of a dataset diff (``pixvcs diff --format``): text, JSON, Markdown, HTML.

JSON (``DatasetDiff.to_json()``) is the canonical form; the others are views:

- ``text``: the terminal listing (what ``pixvcs diff`` always printed);
- ``markdown``: fits a pull-request comment: counts, the per-class table before
  and after, bounded lists of added, removed, modified and renamed paths;
- ``html``: one self-contained file (CSS inline, thumbnails as ``data:`` URIs made
  from the media store) with thumbnails of added and removed images, renamed
  pairs side by side, modified paths and the per-class table.

Escaping and thumbnails are shared with the check reports (:mod:`pixvcs.report`):
everything taken from the data (paths, class names, revisions) is escaped for
the format it goes into.
"""

from __future__ import annotations

import html
import json

from .diff import DatasetDiff
from .report import (
    _CSS,
    HTML_CHANGED,
    MAX_CLASS_ROWS,
    ReadMedia,
    _code,
    _figure,
    _md_text,
    _Thumbs,
)

FORMATS = ("text", "json", "markdown", "html")
#: Paths listed per kind (added, removed, ...) in text and Markdown (all are in JSON).
LIST_LIMIT = 50
#: Renamed pairs and modified paths listed in HTML.
HTML_LIST = 300


def render(
    d: DatasetDiff, fmt: str, *, read_media: ReadMedia | None = None, stat_only: bool = False
) -> str:
    """The report of ``d`` in ``fmt`` (one of :data:`FORMATS`). ``read_media`` (oid ->
    bytes) makes the HTML thumbnails; without it they are left out. ``stat_only``
    keeps only the counts and the class table (text and Markdown)."""
    if fmt == "json":
        return json.dumps(d.to_json(), indent=2) + "\n"
    if fmt == "text":
        return text(d, stat_only=stat_only)
    if fmt == "markdown":
        return markdown(d, stat_only=stat_only)
    if fmt == "html":
        return html_report(d, read_media)
    raise ValueError(f"unknown diff format {fmt!r} (one of {', '.join(FORMATS)})")


def _side(label: str | None, *, old: bool) -> str:
    if label is None:
        return "(nothing)" if old else "the work tree"
    return label


def _title(d: DatasetDiff) -> str:
    return f"{_side(d.old, old=True)} → {_side(d.new, old=False)}"


def summary_line(d: DatasetDiff) -> str:
    return (
        f"{len(d.added)} added, {len(d.removed)} removed, {len(d.modified)} modified, "
        f"{len(d.renamed)} renamed"
    )


# -- text -----------------------------------------------------------------------------
def text(d: DatasetDiff, *, stat_only: bool = False) -> str:
    lines = [summary_line(d)]
    if d.classes:
        width = max(8, *(len(c) for c in d.classes))
        lines.append(f"\n  {'class':<{width}}  {'before':>8}  {'after':>8}  {'change':>7}")
        for cls, n in d.classes.items():
            delta = n["after"] - n["before"]
            lines.append(f"  {cls:<{width}}  {n['before']:>8}  {n['after']:>8}  {delta:>+7}")
    if stat_only:
        return "\n".join(lines) + "\n"
    lines.append("")
    for title, paths in (("Added", d.added), ("Removed", d.removed), ("Modified", d.modified)):
        if not paths:
            continue
        lines.append(f"{title} ({len(paths)}):")
        lines += [f"  {p}" for p in paths[:LIST_LIMIT]]
        if len(paths) > LIST_LIMIT:
            lines.append(f"  ... and {len(paths) - LIST_LIMIT} more (use --json for all)")
    if d.renamed:
        lines.append(f"Renamed / relabelled ({len(d.renamed)}):")
        lines += [f"  {r['from']} -> {r['to']}" for r in d.renamed[:LIST_LIMIT]]
        if len(d.renamed) > LIST_LIMIT:
            lines.append(f"  ... and {len(d.renamed) - LIST_LIMIT} more (use --json for all)")
    return "\n".join(lines) + "\n"


# -- markdown -------------------------------------------------------------------------
def markdown(d: DatasetDiff, *, stat_only: bool = False) -> str:
    out = [f"## pixvcs diff: {_md_text(_title(d))}", ""]
    out += [
        "| added | removed | modified | renamed |",
        "|---:|---:|---:|---:|",
        f"| {len(d.added)} | {len(d.removed)} | {len(d.modified)} | {len(d.renamed)} |",
        "",
    ]
    if d.classes:
        out += ["### Classes", "", "| class | before | after | change |", "|---|---:|---:|---:|"]
        rows = list(d.classes.items())
        for cls, n in rows[:MAX_CLASS_ROWS]:
            before, after = int(n["before"]), int(n["after"])
            out.append(f"| {_code(cls)} | {before} | {after} | {after - before:+d} |")
        if len(rows) > MAX_CLASS_ROWS:
            out.append(f"\n… and {len(rows) - MAX_CLASS_ROWS} more classes (see the JSON output)")
        out.append("")
    if stat_only:
        return "\n".join(out).rstrip() + "\n"
    for title, paths in (("Added", d.added), ("Removed", d.removed)):
        if paths:
            out += [f"### {title} ({len(paths)})", ""]
            out += [f"- {_code(p)}" for p in paths[:LIST_LIMIT]]
            if len(paths) > LIST_LIMIT:
                out.append(f"- … and {len(paths) - LIST_LIMIT} more")
            out.append("")
    if d.modified:
        out += [f"### Modified ({len(d.modified)})", ""]
        for p in d.modified[:LIST_LIMIT]:
            out.append(f"- {_code(p)}{_md_detail(d, p)}")
        if len(d.modified) > LIST_LIMIT:
            out.append(f"- … and {len(d.modified) - LIST_LIMIT} more")
        out.append("")
    if d.renamed:
        out += [f"### Renamed / relabelled ({len(d.renamed)})", ""]
        for r in d.renamed[:LIST_LIMIT]:
            out.append(f"- {_code(r['from'])} → {_code(r['to'])}")
        if len(d.renamed) > LIST_LIMIT:
            out.append(f"- … and {len(d.renamed) - LIST_LIMIT} more")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _detail(d: DatasetDiff, path: str) -> str:
    """What the catalog says changed in a modified image, as plain text (or '')."""
    info = d.details.get(path)
    if not info or "old_dims" not in info:
        return ""
    parts = []
    if info["old_format"] != info["new_format"]:
        parts.append(f"{info['old_format']} → {info['new_format']}")
    if info["old_dims"] != info["new_dims"]:
        (ow, oh), (nw, nh) = info["old_dims"], info["new_dims"]
        parts.append(f"{int(ow)}×{int(oh)} → {int(nw)}×{int(nh)}")
    if info.get("phash_distance") is not None:
        parts.append(f"perceptual-hash distance {int(info['phash_distance'])}")
    return ", ".join(parts)


def _md_detail(d: DatasetDiff, path: str) -> str:
    detail = _detail(d, path)
    return f": {_md_text(detail)}" if detail else ""


# -- html -----------------------------------------------------------------------------
def html_report(d: DatasetDiff, read_media: ReadMedia | None = None) -> str:
    e = html.escape
    thumbs = _Thumbs(read_media)
    title = f"pixvcs diff: {_title(d)}"
    keys = (
        ("added", d.added),
        ("removed", d.removed),
        ("modified", d.modified),
        ("renamed", d.renamed),
    )
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        '<table class="counts"><tr>' + "".join(f"<th>{k}</th>" for k, _ in keys) + "</tr><tr>",
        "".join(f'<td class="n">{len(v)}</td>' for _, v in keys) + "</tr></table>",
    ]
    if d.classes:
        out.append('<h2>Classes</h2><table class="classes"><tr><th>class</th>')
        out.append("<th>before</th><th>after</th><th>change</th></tr>")
        for cls, n in d.classes.items():
            before, after = int(n["before"]), int(n["after"])
            out.append(
                f"<tr><td><code>{e(cls)}</code></td><td class=n>{before}</td>"
                f"<td class=n>{after}</td><td class=n>{after - before:+d}</td></tr>"
            )
        out.append("</table>")
    for title_, paths in (("Added", d.added), ("Removed", d.removed)):
        images = [p for p in paths if p in d.oids]
        if images:
            kind = title_.lower()
            out.append(f'<h2>{title_} images ({len(images)})</h2><div class="grid {kind}">')
            for p in images[:HTML_CHANGED]:
                out.append(_figure(thumbs, p, d.oids[p]))
            out.append("</div>")
            if len(images) > HTML_CHANGED:
                out.append(f"<p>… and {len(images) - HTML_CHANGED} more</p>")
        others = [p for p in paths if p not in d.oids]
        if others:
            out.append(f"<h2>{title_} other files ({len(others)})</h2><ul>")
            out += [f"<li><code>{e(p)}</code></li>" for p in others[:HTML_LIST]]
            out.append("</ul>")
            if len(others) > HTML_LIST:
                out.append(f"<p>… and {len(others) - HTML_LIST} more</p>")
    if d.renamed:
        out.append(f'<h2>Renamed / relabelled ({len(d.renamed)})</h2><div class="pairs">')
        for i, r in enumerate(d.renamed[:HTML_LIST]):
            src, dst = r["from"], r["to"]
            oid = d.oids.get(dst) if i < HTML_CHANGED else None
            if oid is not None:
                out.append(
                    f'<div class="pair">{_figure(thumbs, src, oid)}<div class="dist">→</div>'
                    f"<div><code>{e(dst)}</code></div></div>"
                )
            else:
                out.append(f'<div class="pair"><code>{e(src)}</code> → <code>{e(dst)}</code></div>')
        out.append("</div>")
        if len(d.renamed) > HTML_LIST:
            out.append(f"<p>… and {len(d.renamed) - HTML_LIST} more</p>")
    if d.modified:
        out.append(f"<h2>Modified ({len(d.modified)})</h2><ul>")
        for p in d.modified[:HTML_LIST]:
            detail = _detail(d, p)
            out.append(f"<li><code>{e(p)}</code>{': ' + e(detail) if detail else ''}</li>")
        out.append("</ul>")
        if len(d.modified) > HTML_LIST:
            out.append(f"<p>… and {len(d.modified) - HTML_LIST} more</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
