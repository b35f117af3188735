"""One unit of crawl work: fetch, validate, identify and store a chunk of URLs.

:func:`process_chunk` is a function of (options, items) alone, apart from the
network and the content-addressed media store it writes to (writes that are
idempotent: the same bytes land under the same name). That is what makes it a
Celery task in waiting: a worker that receives ``(options.to_json(), [item.to_json()
...])`` can run it, and running it twice stores nothing twice. Its result is plain
JSON-able data, one :class:`Outcome` per item, in the chunk's order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..imageinfo import ImageInfo, InvalidImage, inspect_image, sniff
from .fetch import Fetcher
from .options import CrawlOptions
from .sources import Item

#: What an outcome's ``status`` may be.
STORED, INVALID, FAILED = "stored", "invalid", "failed"


@dataclass(slots=True)
class Outcome:
    """What became of one URL. ``stored`` outcomes carry the image's facts."""

    url: str
    status: str  # "stored" | "invalid" | "failed"
    reason: str | None = None
    detail: str | None = None
    oid: str | None = None
    size: int | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    phash: str | None = None
    http: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": self.url, "status": self.status}
        for key in (
            "reason",
            "detail",
            "oid",
            "size",
            "format",
            "width",
            "height",
            "mode",
            "phash",
        ):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.http:
            out["http"] = self.http
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        return cls(
            data["url"],
            data["status"],
            data.get("reason"),
            data.get("detail"),
            data.get("oid"),
            data.get("size"),
            data.get("format"),
            data.get("width"),
            data.get("height"),
            data.get("mode"),
            data.get("phash"),
            dict(data.get("http") or {}),
        )

    def info(self) -> ImageInfo | None:
        if self.status != STORED or self.width is None or self.height is None:
            return None
        return ImageInfo(
            self.width, self.height, self.format or "", self.mode or "", self.phash or ""
        )


def classify_invalid(message: str) -> str:
    """The reason code of an :class:`InvalidImage` message."""
    m = message.lower()
    if m.startswith("decompression bomb") or "frames exceeds" in m:
        return "decompression-bomb"
    if m.startswith("empty"):
        return "empty"
    if m.startswith("not an image"):
        return "not-an-image"
    return "does-not-decode"


def validate(data: bytes, options: CrawlOptions) -> tuple[ImageInfo | None, str | None, str | None]:
    """``(info, None, None)`` for an acceptable image, else ``(None, reason, detail)``.
    The format is checked from the magic bytes before anything is decoded; bombs are
    refused from the header (:func:`pixvcs.imageinfo.inspect_image`)."""
    if len(data) > options.max_bytes:
        return None, "too-large", f"{len(data)} bytes exceeds the limit of {options.max_bytes}"
    fmt = sniff(data[:32])
    if fmt is None:
        return None, "not-an-image", "unrecognised content"
    if fmt not in options.formats:
        return None, "format-not-allowed", f"{fmt} is not one of {', '.join(options.formats)}"
    try:
        info = inspect_image(data, max_pixels=options.max_pixels)
    except InvalidImage as e:
        return None, classify_invalid(str(e)), str(e)
    if info.width < options.min_width or info.height < options.min_height:
        return (
            None,
            "too-small",
            f"{info.width}x{info.height} is below {options.min_width}x{options.min_height}",
        )
    return info, None, None


def process_item(
    item: Item, options: CrawlOptions, fetcher: Fetcher, store: Callable[[bytes, str], None]
) -> Outcome:
    fetched = fetcher.fetch_image(item.url)
    http = {k: v for k, v in fetched.http_facts().items() if v is not None}
    if fetched.kind != "ok" or fetched.data is None:
        status = INVALID if fetched.kind == "invalid" else FAILED
        return Outcome(item.url, status, fetched.reason, fetched.detail, http=http)
    data = fetched.data
    info, reason, detail = validate(data, options)
    if info is None:
        return Outcome(item.url, INVALID, reason, detail, size=len(data), http=http)
    oid = hashlib.sha256(data).hexdigest()
    store(data, oid)
    return Outcome(
        item.url,
        STORED,
        oid=oid,
        size=len(data),
        format=info.format,
        width=info.width,
        height=info.height,
        mode=info.mode,
        phash=info.phash,
        http=http,
    )


def process_chunk(
    options: CrawlOptions,
    items: Sequence[Item],
    *,
    fetcher: Fetcher,
    store: Callable[[bytes, str], None],
    report: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Fetch, validate, hash and store each item of the chunk, in order.
    ``store(data, oid)`` must put the bytes in the media store (idempotently);
    ``report(outcome)``, if given, hears of each item as soon as it is done (so a
    job can record progress within a chunk)."""
    out = []
    for item in items:
        outcome = process_item(item, options, fetcher, store)
        if report is not None:
            report(outcome)
        out.append(outcome)
    return out
