"""Reports of a check: text, JSON, Markdown, HTML and JUnit XML.

JSON (``CheckResult.to_json()``) is the canonical form; the others are views of
it for people and CI systems:

- ``text``: the terminal summary;
- ``markdown``: fits a pull-request comment (counts, the per-class table before and
  after, the rules, a bounded number of violations per rule);
- ``html``: one self-contained file (no external resource: CSS inline, thumbnails as
  ``data:`` URIs made from the media store) with side-by-side duplicate and
  leakage pairs, the per-class table, and thumbnails of added and removed images;
- ``junit``: one test case per rule, a ``<failure>`` per failed rule, so CI
  systems show failures natively.

Everything taken from the data (paths, class names, messages) is escaped for the
format it goes into.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # check imports numpy (through neardup): not for a diff report
    from .check import CheckResult, Violation

FORMATS = ("text", "json", "markdown", "html", "junit")
#: Violations shown per rule in Markdown and text (all are in JSON).
EXAMPLES_PER_RULE = 10
#: Rows of the class table in Markdown (a PR comment is limited to 65,536 characters).
MAX_CLASS_ROWS = 50
#: Pairs with thumbnails, other violations, added and removed thumbnails in HTML.
HTML_PAIRS = 60
HTML_VIOLATIONS = 300
HTML_CHANGED = 48
THUMBNAIL_SIZE = 128

ReadMedia = Callable[[str], bytes]


def render(result: CheckResult, fmt: str, *, read_media: ReadMedia | None = None) -> str:
    """The report of ``result`` in ``fmt`` (one of :data:`FORMATS`). ``read_media``
    (oid -> bytes) is used for HTML thumbnails; without it they are left out."""
    if fmt == "json":
        return json.dumps(result.to_json(), indent=2) + "\n"
    if fmt == "text":
        return text(result)
    if fmt == "markdown":
        return markdown(result)
    if fmt == "html":
        return html_report(result, read_media)
    if fmt == "junit":
        return junit(result)
    raise ValueError(f"unknown report format {fmt!r} (one of {', '.join(FORMATS)})")


def _scope(result: CheckResult) -> str:
    head = result.head_rev + (f" ({result.head_commit[:12]})" if result.head_commit else "")
    if result.mode == "version":
        return f"version {head}"
    if result.mode == "staged":
        return f"staged changes against HEAD ({(result.base_commit or 'unborn')[:12]})"
    return f"{result.base_rev}..{head} (from {(result.base_commit or '')[:12]})"


def _by_rule(result: CheckResult) -> dict[str, list[Violation]]:
    out: dict[str, list[Violation]] = {r.rule: [] for r in result.rules}
    for v in result.violations:
        out.setdefault(v.rule, []).append(v)
    return out


# -- text -----------------------------------------------------------------------------
def text(result: CheckResult) -> str:
    j = result.to_json()
    c = j["counts"]
    lines = [f"checked {_scope(result)}: {c['images']} images, {c['checked']} checked"]
    if result.changes is not None:
        lines.append(
            f"change: {c['added']} added, {c['removed']} removed, {c['modified']} modified, "
            f"{c['renamed']} renamed"
        )
    lines.append(f"policy: {result.policy.source or 'defaults (no pixvcs.toml)'}")
    by_rule = _by_rule(result)
    for r in result.rules:
        lines.append(f"  {'ok  ' if r.ok else 'FAIL'}  {r.rule}  ({r.checked} checked)")
        shown = by_rule.get(r.rule, [])[:EXAMPLES_PER_RULE]
        for v in shown:
            lines.append(f"        {_one_line(v.message)}")
        if r.violations > len(shown):
            lines.append(f"        ... and {r.violations - len(shown)} more (see --format json)")
    failed = sum(1 for r in result.rules if not r.ok)
    lines.append(
        "policy holds"
        if result.ok
        else f"policy violated: {c['violations']} violation(s) of {failed} rule(s)"
    )
    return "\n".join(lines) + "\n"


def _one_line(s: str) -> str:
    return " ".join(s.split())


# -- markdown -------------------------------------------------------------------------
def _code(s: str) -> str:
    """A Markdown code span holding ``s`` exactly, safe inside a table cell."""
    s = _one_line(s).replace("|", "\\|")
    longest = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


def _md_text(s: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", _one_line(s))


def markdown(result: CheckResult) -> str:
    j = result.to_json()
    c = j["counts"]
    status = "✅ passed" if result.ok else "❌ failed"
    out = [f"## pixvcs check: {status}", ""]
    out.append(f"Checked {_md_text(_scope(result))}.")
    out.append(f"Policy: {_code(result.policy.source or 'defaults (no pixvcs.toml)')}.")
    out.append("")
    if result.changes is not None:
        out += [
            "| images | checked | added | removed | modified | renamed |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {c['images']} | {c['checked']} | {c['added']} | {c['removed']} "
            f"| {c['modified']} | {c['renamed']} |",
        ]
    else:
        out += ["| images | checked |", "|---:|---:|", f"| {c['images']} | {c['checked']} |"]
    out.append("")
    if result.classes:
        out += ["### Classes", ""]
        if result.changes is not None:
            out += ["| class | before | after | change |", "|---|---:|---:|---:|"]
        else:
            out += ["| class | images |", "|---|---:|"]
        rows = list(result.classes.items())
        for cls, n in rows[:MAX_CLASS_ROWS]:
            if result.changes is not None:
                before, after = n["before"] or 0, n["after"] or 0
                out.append(f"| {_code(cls)} | {before} | {after} | {after - before:+d} |")
            else:
                out.append(f"| {_code(cls)} | {n['after']} |")
        if len(rows) > MAX_CLASS_ROWS:
            out.append(f"\n… and {len(rows) - MAX_CLASS_ROWS} more classes (see the JSON report)")
        out.append("")
    out += ["### Rules", "", "| rule | result | checked | violations |", "|---|---|---:|---:|"]
    for r in result.rules:
        mark = "✅" if r.ok else "❌"
        out.append(f"| {_code(r.rule)} | {mark} | {r.checked} | {r.violations} |")
    out.append("")
    if not result.ok:
        out += ["### Violations", ""]
        by_rule = _by_rule(result)
        for r in result.rules:
            if r.ok:
                continue
            out.append(f"**{_code(r.rule)}**: {_md_text(r.description)}")
            out.append("")
            shown = by_rule.get(r.rule, [])[:EXAMPLES_PER_RULE]
            for v in shown:
                paths = " ↔ ".join(_code(p) for p in v.paths[:2]) if v.distance is not None else ""
                if v.distance is not None:
                    out.append(f"- {paths}: {v.kind} duplicate, distance {v.distance}")
                else:
                    out.append(f"- {_md_text(v.message)}")
            if r.violations > len(shown):
                out.append(f"- … and {r.violations - len(shown)} more")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


# -- html -----------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1280px}
h1 .ok{color:#1a7f37} h1 .fail{color:#cf222e}
table{border-collapse:collapse;margin:1em 0} td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f6f8fa;text-align:left} td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.fail td{background:#ffebe9}
.pairs,.grid{display:flex;flex-wrap:wrap;gap:.75em;margin:1em 0}
.pair{display:flex;gap:.75em;align-items:flex-start;padding:.5em;border:1px solid #ddd;
border-radius:4px}
.pair .dist{align-self:center;text-align:center;font-size:13px;min-width:8em}
.pair .dist b{display:block;font-size:17px;margin-top:.2em}
figure{margin:0;width:136px;text-align:center}
.thumb{display:flex;align-items:center;justify-content:center;width:128px;height:128px;
margin:0 auto;background:#f6f8fa;border:1px solid #e5e5e5}
.thumb img{max-width:128px;max-height:128px}
.missing{color:#666;font-size:12px}
figcaption{font-size:12px;word-break:break-all;margin-top:4px}
code{word-break:break-all}
"""


class _Thumbs:
    """``data:`` URIs of small PNG thumbnails, one decode per oid."""

    def __init__(self, read_media: ReadMedia | None) -> None:
        self.read = read_media
        self.cache: dict[str, str | None] = {}

    def __call__(self, oid: str | None) -> str | None:
        if oid is None or self.read is None:
            return None
        if oid not in self.cache:
            self.cache[oid] = self._make(oid)
        return self.cache[oid]

    def _make(self, oid: str) -> str | None:
        from PIL import Image

        from .imageinfo import MAX_PIXELS

        assert self.read is not None
        try:
            data = self.read(oid)
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                src = Image.open(io.BytesIO(data))
                if src.width * src.height > MAX_PIXELS:
                    return None
                src.draft("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE))
                im = src.convert("RGB")
                im.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
                buf = io.BytesIO()
                im.save(buf, format="PNG")
        except Exception:  # noqa: BLE001 - any unreadable image gets a placeholder, not a crash
            return None
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(thumbs: _Thumbs, path: str, oid: str | None) -> str:
    e = html.escape
    uri = thumbs(oid)
    img = (
        f'<div class="thumb"><img src="{e(uri)}" alt="{e(path)}"></div>'
        if uri
        else '<div class="thumb missing">no preview</div>'
    )
    return f"<figure>{img}<figcaption>{e(path)}</figcaption></figure>"


def html_report(result: CheckResult, read_media: ReadMedia | None = None) -> str:
    e = html.escape
    thumbs = _Thumbs(read_media)
    j = result.to_json()
    c = j["counts"]
    status = '<span class="ok">passed</span>' if result.ok else '<span class="fail">failed</span>'
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>pixvcs check: {'passed' if result.ok else 'failed'}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>pixvcs check: {status}</h1>",
        f"<p>Checked {e(_scope(result))}. Policy: <code>"
        f"{e(result.policy.source or 'defaults (no pixvcs.toml)')}</code>.</p>",
        '<table class="counts"><tr>',
    ]
    keys = ["images", "checked"]
    if result.changes is not None:
        keys += ["added", "removed", "modified", "renamed"]
    out.append("".join(f"<th>{k}</th>" for k in keys) + "</tr><tr>")
    out.append("".join(f'<td class="n">{int(c[k])}</td>' for k in keys) + "</tr></table>")
    if result.classes:
        out.append('<h2>Classes</h2><table class="classes"><tr><th>class</th>')
        if result.changes is not None:
            out.append("<th>before</th><th>after</th><th>change</th></tr>")
        else:
            out.append("<th>images</th></tr>")
        for cls, n in result.classes.items():
            after = int(n["after"] or 0)
            if result.changes is not None:
                before = int(n["before"] or 0)
                out.append(
                    f"<tr><td><code>{e(cls)}</code></td><td class=n>{before}</td>"
                    f"<td class=n>{after}</td><td class=n>{after - before:+d}</td></tr>"
                )
            else:
                out.append(f"<tr><td><code>{e(cls)}</code></td><td class=n>{after}</td></tr>")
        out.append("</table>")
    out.append(
        '<h2>Rules</h2><table class="rules"><tr><th>rule</th><th>result</th><th>checked</th>'
    )
    out.append("<th>violations</th><th>meaning</th></tr>")
    for r in result.rules:
        out.append(
            f'<tr class="{"ok" if r.ok else "fail"}"><td><code>{e(r.rule)}</code></td>'
            f"<td>{'ok' if r.ok else 'FAIL'}</td><td class=n>{r.checked}</td>"
            f"<td class=n>{r.violations}</td><td>{e(r.description)}</td></tr>"
        )
    out.append("</table>")
    pairs = [v for v in result.violations if v.distance is not None and len(v.paths) == 2]
    if pairs:
        out.append(f'<h2>Duplicate and leakage pairs ({len(pairs)} listed)</h2><div class="pairs">')
        for v in pairs[:HTML_PAIRS]:
            oids = v.oids if len(v.oids) == 2 else [None, None]
            kind = {"exact": "same bytes", "near": "near-duplicate"}.get(v.kind or "", "")
            out.append(
                f'<div class="pair">{_figure(thumbs, v.paths[0], oids[0])}'
                f'<div class="dist"><code>{e(v.rule)}</code><br>{e(kind)}'
                f"<b>distance {int(v.distance or 0)}</b></div>"
                f"{_figure(thumbs, v.paths[1], oids[1])}</div>"
            )
        out.append("</div>")
        if len(pairs) > HTML_PAIRS:
            out.append(f"<p>… and {len(pairs) - HTML_PAIRS} more pairs (see the JSON report)</p>")
    others = [v for v in result.violations if v.distance is None]
    if others:
        out.append("<h2>Other violations</h2><ul>")
        for v in others[:HTML_VIOLATIONS]:
            out.append(f"<li><code>{e(v.rule)}</code>: {e(v.message)}</li>")
        out.append("</ul>")
        if len(others) > HTML_VIOLATIONS:
            out.append(f"<p>… and {len(others) - HTML_VIOLATIONS} more (see the JSON report)</p>")
    if result.changes is not None:
        for title, key in (("Added", "added"), ("Removed", "removed")):
            paths = [p for p in result.changes[key] if p in result.oids]
            if not paths:
                continue
            out.append(f'<h2>{title} images ({len(paths)})</h2><div class="grid {key}">')
            for p in paths[:HTML_CHANGED]:
                out.append(_figure(thumbs, p, result.oids.get(p)))
            out.append("</div>")
            if len(paths) > HTML_CHANGED:
                out.append(f"<p>… and {len(paths) - HTML_CHANGED} more</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# -- junit ----------------------------------------------------------------------------
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _x(s: str) -> str:
    """Text XML 1.0 can hold (control characters from the data replaced)."""
    return _XML_BAD.sub("\ufffd", s)


def junit(result: CheckResult) -> str:
    failed = sum(1 for r in result.rules if not r.ok)
    suites = ET.Element("testsuites", name="pixvcs check")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=_x(f"pixvcs check {_scope(result)}"),
        tests=str(len(result.rules)),
        failures=str(failed),
        errors="0",
        skipped="0",
    )
    by_rule = _by_rule(result)
    for r in result.rules:
        case = ET.SubElement(suite, "testcase", classname="pixvcs.check", name=r.rule)
        if not r.ok:
            failure = ET.SubElement(
                case,
                "failure",
                message=_x(f"{r.violations} violation(s): {r.description}"),
                type=r.rule,
            )
            lines = [_x(_one_line(v.message)) for v in by_rule.get(r.rule, [])[:1000]]
            if r.violations > len(lines):
                lines.append(f"... and {r.violations - len(lines)} more")
            failure.text = "\n".join(lines)
    body: str = ET.tostring(suites, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def summary_line(result: CheckResult) -> str:
    """One line for a terminal when the report went to a file."""
    c: dict[str, Any] = result.to_json()["counts"]
    if result.ok:
        return f"policy holds ({c['rules']} rules, {c['checked']} images checked)"
    return f"policy violated: {c['violations']} violation(s) of {c['rules_failed']} rule(s)"
