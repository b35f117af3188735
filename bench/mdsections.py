"""Sections of bench/results.md written by separate benchmarks.

bench/run.py renders results.md whole; the transfer and crawl benchmarks each own
a section between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``. :func:`splice`
puts one in place (appended when absent); :func:`sections` lists the ones a file
holds, so a re-render keeps them.
"""

from __future__ import annotations

import os
import re

_SECTION = re.compile(r"<!-- ([a-z-]+):start -->.*?<!-- \1:end -->", re.S)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def sections(text: str) -> list[str]:
    """Every marked section of ``text``, in order, markers included."""
    return [m.group(0) for m in _SECTION.finditer(text)]


def splice(md_path: str, name: str, body: str) -> None:
    """Put ``body`` (without markers) into ``md_path`` as section ``name``."""
    start, end = markers(name)
    section = f"{start}\n{body.strip()}\n{end}"
    text = ""
    if os.path.exists(md_path):
        with open(md_path) as f:
            text = f.read()
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    tmp = md_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, md_path)
