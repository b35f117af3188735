"""Search providers: how a keyword becomes image URLs.

A provider is anything with a ``name`` and a ``search(keyword, limit, fetcher)``
method returning :class:`~pixvcs.crawl.sources.Item` objects (with ``keyword`` and
``provider`` set) and the pages that could not be read. pixvcs ships one:
:class:`TemplateProvider`, configured by a URL template whose result page is read
the way ``--page`` reads a page. docs/crawling.md shows how to add others.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import quote_plus

from ..errors import CrawlInputError
from .fetch import Fetcher
from .pages import PageFailure, discover
from .sources import Item, check_url


class SearchProvider(Protocol):
    name: str

    def search(
        self, keyword: str, limit: int | None, fetcher: Fetcher, *, label: str | None = None
    ) -> tuple[list[Item], list[PageFailure]]:
        """At most ``limit`` image items for ``keyword``, best first."""
        ...


class TemplateProvider:
    """``https://host/search?q={keyword}``: the keyword is URL-encoded into the
    template, and the images of the result page are the results (in page order)."""

    name = "search-url"

    def __init__(self, template: str) -> None:
        if template.count("{keyword}") != 1:
            raise CrawlInputError("--search-url", 0, "the template must contain {keyword} once")
        check_url(template.replace("{keyword}", "x"), "--search-url")
        self.template = template

    def url_for(self, keyword: str) -> str:
        return self.template.replace("{keyword}", quote_plus(keyword))

    def search(
        self, keyword: str, limit: int | None, fetcher: Fetcher, *, label: str | None = None
    ) -> tuple[list[Item], list[PageFailure]]:
        items, failures = discover(
            fetcher, self.url_for(keyword), depth=0, label=label, keyword=keyword,
            provider=self.name,
        )  # fmt: skip
        return (items[:limit] if limit else items), failures
