"""Images of HTML pages: ``img`` src and srcset, ``picture``/``source``, ``og:image``
(and ``twitter:image``) meta tags, links to image files; and same-site links to follow.

Parsed with the standard library's :mod:`html.parser` (tolerant of broken markup).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlsplit

from ..imageinfo import has_image_extension
from .fetch import Fetched, Fetcher
from .sources import Item

_META_IMAGE = {"og:image", "og:image:url", "og:image:secure_url", "twitter:image"}


@dataclass(slots=True)
class PageLinks:
    images: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)


def best_srcset(srcset: str) -> str | None:
    """The largest candidate of a ``srcset`` (by its ``w`` or ``x`` descriptor; the
    first one when none has a descriptor)."""
    best: tuple[float, str] | None = None
    for candidate in srcset.split(","):
        parts = candidate.strip().split()
        if not parts:
            continue
        size = 1.0
        if len(parts) > 1:
            desc = parts[1].lower()
            try:
                size = float(desc[:-1]) if desc[-1:] in ("w", "x") else 1.0
            except ValueError:  # a malformed descriptor: treat as 1x
                size = 1.0
        if best is None or size > best[0]:
            best = (size, parts[0])
    return best[1] if best else None


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): v for k, v in attrs if v is not None}
        if tag == "base" and "href" in a and self.base is None:
            self.base = a["href"]
        elif tag in ("img", "source"):
            if a.get("src"):
                self.images.append(a["src"])
            if a.get("srcset"):
                best = best_srcset(a["srcset"])
                if best:
                    self.images.append(best)
        elif tag == "meta":
            prop = (a.get("property") or a.get("name") or "").lower()
            if prop in _META_IMAGE and a.get("content"):
                self.images.append(a["content"])
        elif tag in ("a", "area") and a.get("href"):
            href = a["href"]
            path = urlsplit(href).path
            if has_image_extension(path):
                self.images.append(href)
            else:
                self.links.append(href)


def parse_page(html: str, page_url: str) -> PageLinks:
    """Absolute http(s) URLs of the images and of the links of a page, in document
    order, each once (fragments dropped)."""
    p = _Parser()
    p.feed(html)
    p.close()
    base = urljoin(page_url, p.base) if p.base else page_url
    return PageLinks(_absolute(p.images, base), _absolute(p.links, base))


def _absolute(urls: list[str], base: str) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for u in urls:
        u = u.strip()
        if not u or u.startswith(("data:", "javascript:", "mailto:")):
            continue
        try:
            full = urldefrag(urljoin(base, u))[0]
            parts = urlsplit(full)
        except ValueError:  # a malformed URL in someone's page: skip it
            continue
        if parts.scheme in ("http", "https") and parts.hostname and full not in seen:
            seen.add(full)
            out.append(full)
    return out


def decode_html(fetched: Fetched) -> str:
    data = fetched.data or b""
    charset = "utf-8"
    ctype = fetched.content_type or ""
    for piece in ctype.split(";")[1:]:
        key, _, value = piece.strip().partition("=")
        if key.lower() == "charset" and value:
            charset = value.strip("\"' ")
    try:
        return data.decode(charset, "replace")
    except LookupError:  # an unknown charset name: UTF-8 is the best guess
        return data.decode("utf-8", "replace")


@dataclass(slots=True)
class PageFailure:
    url: str
    reason: str
    detail: str | None


def discover(
    fetcher: Fetcher,
    start: str,
    *,
    depth: int = 0,
    label: str | None = None,
    keyword: str | None = None,
    provider: str | None = None,
    max_pages: int = 100,
) -> tuple[list[Item], list[PageFailure]]:
    """The images of ``start`` and of the pages on the same site reachable from it by
    at most ``depth`` links (breadth first, at most ``max_pages`` pages), in order."""
    site = urlsplit(start).netloc.lower()
    queue: deque[tuple[str, int]] = deque([(start, 0)])
    seen_pages = {start}
    items: list[Item] = []
    failures: list[PageFailure] = []
    pages = 0
    while queue and pages < max_pages:
        url, d = queue.popleft()
        pages += 1
        fetched = fetcher.fetch_page(url)
        if fetched.kind != "ok":
            failures.append(PageFailure(url, fetched.reason or "failed", fetched.detail))
            continue
        page = fetched.final_url or url
        found = parse_page(decode_html(fetched), page)
        for img in found.images:
            items.append(Item(img, label, page, keyword, provider))
        if d < depth:
            for link in found.links:
                if urlsplit(link).netloc.lower() == site and link not in seen_pages:
                    seen_pages.add(link)
                    queue.append((link, d + 1))
    return items, failures
