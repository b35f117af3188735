"""The knobs of a crawl: politeness, limits and validation, with sane defaults.

A :class:`CrawlOptions` is plain data (JSON round-trip), so a job can store it
and a worker on another machine can receive it with a chunk of work.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import CrawlInputError
from ..imageinfo import MAX_PIXELS

#: Formats a crawl accepts unless told otherwise (as :func:`pixvcs.imageinfo.sniff` names them).
ALL_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")


@dataclass(frozen=True, slots=True)
class CrawlOptions:
    """Everything a chunk of crawl work needs besides its URLs (see docs/crawling.md)."""

    # -- politeness ----------------------------------------------------------------
    contact: str | None = None  # put in the User-Agent: an email or URL
    respect_robots: bool = True
    per_host_concurrency: int = 2  # requests in flight to one host
    per_host_rate: float = 4.0  # requests per second to one host; 0 = no limit
    workers: int = 8  # in-process threads
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    fetch_deadline: float = 120.0  # whole fetch of one URL, redirects and retries aside
    max_redirects: int = 5
    retries: int = 3  # after the first attempt, for network errors, 429 and 5xx
    backoff: float = 0.5  # seconds; doubled on each retry
    max_retry_after: float = 60.0  # a longer Retry-After is waited this long at most
    # -- limits and validation -------------------------------------------------------
    max_bytes: int = 20 * 1024 * 1024  # per image; the download stops there
    max_page_bytes: int = 5 * 1024 * 1024  # per HTML page
    max_pages: int = 100  # pages read per --page source (depth > 0)
    min_width: int = 32
    min_height: int = 32
    formats: tuple[str, ...] = ALL_FORMATS
    max_pixels: int = MAX_PIXELS
    near_distance: int = 6
    chunk_size: int = 16  # URLs per unit of work

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("contact",):
                if value is not None and (not isinstance(value, str) or "\n" in value):
                    raise CrawlInputError("options", 0, f"{f.name} must be a one-line string")
                continue
            if f.name == "respect_robots":
                if not isinstance(value, bool):
                    raise CrawlInputError("options", 0, "respect_robots must be a boolean")
                continue
            if f.name == "formats":
                bad = [x for x in value if x not in ALL_FORMATS]
                if not value or bad:
                    raise CrawlInputError(
                        "options", 0, f"formats must be some of {', '.join(ALL_FORMATS)}: {bad}"
                    )
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise CrawlInputError("options", 0, f"{f.name} must be a number, got {value!r}")
            if value < 0:
                raise CrawlInputError("options", 0, f"{f.name} must not be negative")
        for name in ("per_host_concurrency", "workers", "chunk_size", "max_bytes", "max_pixels"):
            if getattr(self, name) < 1:
                raise CrawlInputError("options", 0, f"{name} must be at least 1")
        if self.near_distance > 32:
            raise CrawlInputError("options", 0, "near_distance must be between 0 and 32")

    def user_agent(self, version: str) -> str:
        contact = f"; contact: {self.contact}" if self.contact else ""
        return f"pixvcs/{version} (+https://github.com/pixvcs/pixvcs; dataset crawler{contact})"

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["formats"] = list(self.formats)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CrawlOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CrawlInputError("options", 0, f"unknown option(s): {', '.join(unknown)}")
        values = dict(data)
        if "formats" in values:
            if not isinstance(values["formats"], list | tuple):
                raise CrawlInputError("options", 0, "formats must be a list")
            values["formats"] = tuple(values["formats"])
        return cls(**values)

    def replace(self, **changes: Any) -> CrawlOptions:
        return dataclasses.replace(self, **changes)
