"""Where a crawl's URLs come from: URL lists (text, CSV, JSONL) and PixCrawler keyword
configs. Pages and search providers (which need the network) are in
:mod:`pixvcs.crawl.pages` and :mod:`pixvcs.crawl.providers`.

Every input is untrusted: a malformed file raises :class:`CrawlInputError` naming the
file and the line, before anything is fetched.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..errors import CrawlInputError

#: Characters a label (a class folder) may not contain; it must also be a safe tree name.
_LABEL_FORBIDDEN = ("\\", "\x00", "\n", "\r")
#: Any whitespace (``\s`` matches exactly what ``str.isspace`` accepts).
_SPACE = re.compile(r"\s")


@dataclass(frozen=True, slots=True)
class Item:
    """One image URL to fetch, with where it came from (all kept as provenance)."""

    url: str
    label: str | None = None
    page: str | None = None
    keyword: str | None = None
    provider: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": self.url}
        for key in ("label", "page", "keyword", "provider"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Item:
        return cls(
            data["url"],
            data.get("label"),
            data.get("page"),
            data.get("keyword"),
            data.get("provider"),
            dict(data.get("extra") or {}),
        )


def check_url(url: str, source: str = "url", line: int = 0) -> str:
    """``url`` if it is an absolute http(s) URL with a host, else CrawlInputError."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as e:
        raise CrawlInputError(source, line, f"malformed URL {url!r}: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CrawlInputError(source, line, f"not an http(s) URL: {url!r}")
    if _SPACE.search(url):
        raise CrawlInputError(source, line, f"URL contains whitespace: {url!r}")
    return url


def check_label(label: str, source: str = "label", line: int = 0) -> str:
    """A label is a class folder: one or more safe path components, ``/``-separated."""
    if not isinstance(label, str) or any(c in label for c in _LABEL_FORBIDDEN):
        raise CrawlInputError(source, line, f"invalid label {label!r}")
    for part in label.split("/"):
        if part.lower() in ("", ".", "..", ".pixvcs", ".git") or part != part.strip():
            raise CrawlInputError(source, line, f"invalid label {label!r}")
    return label


# -- URL lists -----------------------------------------------------------------------
def read_url_file(path: str, *, label: str | None = None) -> list[Item]:
    """Items of a URL list, in file order. The format follows the extension:
    ``.csv`` (header with a ``url`` column), ``.jsonl``/``.ndjson`` (one object per
    line with a ``url`` key), anything else one URL per line (blank lines and
    ``#`` comments skipped). ``label``, ``page`` columns are understood; other columns
    are kept as provenance (``extra``). ``label`` is the default for rows without one."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise CrawlInputError(path, 0, f"cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise CrawlInputError(path, line, "not UTF-8") from None
    lower = path.lower()
    if lower.endswith(".csv"):
        return parse_csv(text, path, label=label)
    if lower.endswith((".jsonl", ".ndjson")):
        return parse_jsonl(text, path, label=label)
    return parse_lines(text, path, label=label)


def parse_lines(text: str, source: str, *, label: str | None = None) -> list[Item]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.append(Item(check_url(line, source, n), label))
    return out


def parse_csv(text: str, source: str, *, label: str | None = None) -> list[Item]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as e:
        raise CrawlInputError(source, 1, f"malformed CSV: {e}") from None
    names = [h.strip() for h in header]
    if "url" not in names:
        raise CrawlInputError(source, 1, "the header has no 'url' column")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes or "" in names:
        raise CrawlInputError(source, 1, f"empty or repeated column names: {dupes or ['']}")
    out = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise CrawlInputError(source, reader.line_num, f"malformed CSV: {e}") from None
        n = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(names):
            raise CrawlInputError(source, n, f"{len(row)} fields, the header has {len(names)}")
        rec = dict(zip(names, row, strict=True))
        out.append(_item_from_record(rec, source, n, label))
    return out


def parse_jsonl(text: str, source: str, *, label: str | None = None) -> list[Item]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise CrawlInputError(source, n, f"malformed JSON: {e.msg}") from None
        if not isinstance(rec, dict):
            raise CrawlInputError(source, n, "each line must be a JSON object")
        out.append(_item_from_record(rec, source, n, label))
    return out


def _item_from_record(rec: dict[str, Any], source: str, n: int, label: str | None) -> Item:
    url = rec.get("url")
    if not isinstance(url, str) or not url.strip():
        raise CrawlInputError(source, n, "missing or empty 'url'")
    row_label = rec.get("label")
    if row_label in (None, ""):
        row_label = label
    elif not isinstance(row_label, str):
        raise CrawlInputError(source, n, "'label' must be a string")
    if row_label is not None:
        check_label(row_label, source, n)
    page = rec.get("page")
    if page in (None, ""):
        page = None
    elif not isinstance(page, str):
        raise CrawlInputError(source, n, "'page' must be a string")
    extra = {k: v for k, v in rec.items() if k not in ("url", "label", "page")}
    return Item(check_url(url, source, n), row_label, page, extra=extra)


# -- PixCrawler keyword configs --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KeywordConfig:
    """PixCrawler's JSON: ``dataset_name``, ``categories`` (class -> keywords),
    ``options.max_images`` (per keyword)."""

    dataset_name: str
    categories: dict[str, list[str]]
    max_images: int | None = None


_CONFIG_KEYS = {"dataset_name", "categories", "options"}
_CONFIG_OPTIONS = {"max_images"}


def read_keyword_config(path: str) -> KeywordConfig:
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as e:
        raise CrawlInputError(path, 0, f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise CrawlInputError(path, 0, "not UTF-8") from None
    return parse_keyword_config(text, path)


def parse_keyword_config(text: str, source: str) -> KeywordConfig:
    """Validated strictly: unknown keys and wrong types are errors naming them."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CrawlInputError(source, e.lineno, f"malformed JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise CrawlInputError(source, 0, "the config must be a JSON object")
    unknown = sorted(set(data) - _CONFIG_KEYS)
    if unknown:
        raise CrawlInputError(source, 0, f"unknown key(s): {', '.join(unknown)}")
    name = data.get("dataset_name")
    if not isinstance(name, str) or not name.strip():
        raise CrawlInputError(source, 0, "'dataset_name' must be a non-empty string")
    cats = data.get("categories")
    if not isinstance(cats, dict) or not cats:
        raise CrawlInputError(source, 0, "'categories' must be a non-empty object")
    categories: dict[str, list[str]] = {}
    for cls, words in cats.items():
        check_label(cls, source, 0)
        if (
            not isinstance(words, list)
            or not words
            or not all(isinstance(w, str) and w.strip() for w in words)
        ):
            raise CrawlInputError(
                source, 0, f"categories.{cls} must be a non-empty list of non-empty strings"
            )
        categories[cls] = [w.strip() for w in words]
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise CrawlInputError(source, 0, "'options' must be an object")
    unknown = sorted(set(options) - _CONFIG_OPTIONS)
    if unknown:
        raise CrawlInputError(source, 0, f"unknown key(s) in options: {', '.join(unknown)}")
    max_images = options.get("max_images")
    if max_images is not None and (
        isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1
    ):
        raise CrawlInputError(source, 0, "options.max_images must be a positive integer")
    return KeywordConfig(name.strip(), categories, max_images)
