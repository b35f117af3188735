"""Which fetched images a crawl keeps: exact and near duplicates, deterministically.

Candidates are considered in their order (source order: the order the sources listed
the URLs, then the URL), and the first copy stays:

1. ``exact-base``: the same bytes (oid) are already in the base version.
2. ``exact-crawl``: the same bytes were fetched from an earlier URL of this crawl.
3. ``near-base``: the perceptual hash is within ``distance`` of an image of the base.
4. ``near-crawl``: within ``distance`` of an image this crawl already keeps.

Every dropped candidate is recorded with what it duplicates (a base path or the
kept URL) and, for near duplicates, the Hamming distance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import neardup


@dataclass(frozen=True, slots=True)
class Candidate:
    order: int
    url: str
    oid: str
    phash: str | None


@dataclass(slots=True)
class Decision:
    kept: list[Candidate] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)  # url, reason, of, distance


def dedupe(
    candidates: Sequence[Candidate],
    *,
    base_oids: dict[str, str],
    base_hashes: Sequence[tuple[str, str]],
    distance: int,
) -> Decision:
    """``base_oids``: oid -> a path holding it in the base; ``base_hashes``:
    ``(path, phash)`` of the base's images."""
    out = Decision()
    ordered = sorted(candidates, key=lambda c: (c.order, c.url))
    first_of: dict[str, Candidate] = {}
    unique: list[Candidate] = []
    for c in ordered:
        if c.oid in base_oids:
            out.dropped.append({"url": c.url, "reason": "exact-base", "of": base_oids[c.oid]})
        elif c.oid in first_of:
            out.dropped.append({"url": c.url, "reason": "exact-crawl", "of": first_of[c.oid].url})
        else:
            first_of[c.oid] = c
            unique.append(c)
    hashed = [c for c in unique if c.phash]
    near_base: dict[int, tuple[int, int]] = {}  # position in hashed -> (base index, distance)
    if base_hashes and hashed:
        found = neardup.query(
            neardup.parse_hex(h for _, h in base_hashes),
            neardup.parse_hex(c.phash for c in hashed if c.phash),
            distance,
        )
        for qi, ei, d in found:  # sorted by query, then base index: the first is kept
            if qi not in near_base or d < near_base[qi][1]:
                near_base[qi] = (ei, d)
    neighbours: dict[int, list[tuple[int, int]]] = {}
    if len(hashed) > 1:
        pairs = neardup.find_pairs(neardup.parse_hex(c.phash for c in hashed if c.phash), distance)
        for i, j, d in pairs:
            neighbours.setdefault(j, []).append((i, d))
    position = {id(c): i for i, c in enumerate(hashed)}
    kept_positions: set[int] = set()
    for c in unique:
        pos = position.get(id(c))
        if pos is None:  # no perceptual hash: only exact duplicates apply
            out.kept.append(c)
            continue
        if pos in near_base:
            ei, d = near_base[pos]
            out.dropped.append(
                {"url": c.url, "reason": "near-base", "of": base_hashes[ei][0], "distance": d}
            )
            continue
        earlier = [(i, d) for i, d in neighbours.get(pos, []) if i in kept_positions]
        if earlier:
            i, d = min(earlier, key=lambda x: (x[1], x[0]))
            out.dropped.append(
                {"url": c.url, "reason": "near-crawl", "of": hashed[i].url, "distance": d}
            )
            continue
        kept_positions.add(pos)
        out.kept.append(c)
    return out
