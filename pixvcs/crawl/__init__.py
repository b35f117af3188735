"""Growing a dataset from the web: sources -> fetch -> validate -> dedupe -> a commit.

Modules, one per concept (docs/crawling.md explains the whole):

    options.py    CrawlOptions: politeness, limits, validation (plain data)
    sources.py    Item; URL lists (txt, CSV, JSONL); PixCrawler keyword configs
    pages.py      images and links of HTML pages; same-site discovery
    providers.py  search providers (keyword -> image URLs); TemplateProvider
    fetch.py      Fetcher: polite, bounded, retrying HTTP with httpx
    limits.py     per-host slots and pace: per process, or shared through Redis
    chunk.py      process_chunk: one unit of work (fetch, validate, hash, store)
    procs.py      CrawlProcesses: forked processes that each fetch and examine
    dedupe.py     exact and near duplicates, deterministically
    job.py        job ids and resumable job state
    pipeline.py   start / resume / status: the in-process pipeline and the commit
"""

from __future__ import annotations

from .options import CrawlOptions
from .pipeline import CrawlRequest, resume, start, status

__all__ = ["CrawlOptions", "CrawlRequest", "resume", "start", "status"]
