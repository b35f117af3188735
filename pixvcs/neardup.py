"""Near-duplicate search over 64-bit perceptual hashes, without comparing every pair.

Multi-index hashing, generalised. Cut the 64 bits into ``k = d + s`` contiguous
blocks. Two hashes within Hamming distance ``d`` differ in at most ``d`` blocks,
so they agree *exactly* on at least ``s`` of the ``k`` blocks: on at least one of
the ``C(k, s)`` combinations of ``s`` blocks. For each combination (a *key*), the
hashes are grouped by the bits of those blocks; only hashes that share a group
are candidates, and every candidate is verified by a popcount of the XOR.
Nothing within distance ``d`` is missed; nothing beyond it is returned.

``s = 1`` is classic multi-index hashing (``k = d + 1`` blocks, one exact block
in common). It is the cheapest when the set is small, but at ``d = 6`` its keys
are only 9 bits wide, so a million hashes put ~2,000 in every group and the
candidates number in the billions. Wider keys (``s = 2, 3``: 16 or 21 bits) cost
more keys but far fewer candidates; :func:`choose_blocks` picks ``s`` from a cost
model of both, per call. Very small inputs are compared by brute force.

All work is vectorised with numpy: each key is one sort (all pairs) or one
membership pass plus a sorted join (queries). Inputs are deduplicated first, so
many copies of one hash cost one group, not a quadratic number of candidates.

Hashes are 16 hex digits in the catalog (see ``imageinfo.PHASH_RECIPE``);
:func:`parse_hex` turns them into the ``uint64`` arrays used here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

#: Largest distance accepted (beyond it, "near" means little for a 64-bit hash).
MAX_DISTANCE = 32
#: Inputs at most this large (pairs: n; queries: n * m / 64) are compared by brute force.
BRUTE_FORCE_WORK = 4_000_000
#: Widest key table of a query (2**22 counters: 32 MiB); wider keys are hashed down.
QUERY_TABLE_BITS = 22
#: Golden-ratio multiplier for hashing masked keys down to a narrower width.
_MULT = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True, slots=True)
class Plan:
    """How a search cuts the hashes: ``blocks`` (start, width) pairs, ``per_key`` blocks
    combined into each key, and the estimated cost the choice was made on."""

    distance: int
    blocks: tuple[tuple[int, int], ...]
    per_key: int
    cost: float

    @property
    def keys(self) -> list[int]:
        """The bit mask of every key (each a combination of ``per_key`` blocks)."""
        masks = [((1 << w) - 1) << start for start, w in self.blocks]
        return [sum(c) for c in combinations(masks, self.per_key)]

    def key_bits(self) -> int:
        """Width of the narrowest key."""
        widths = sorted(w for _, w in self.blocks)
        return sum(widths[: self.per_key])


def _blocks(k: int) -> tuple[tuple[int, int], ...]:
    base, extra = divmod(64, k)
    out, start = [], 0
    for i in range(k):
        w = base + (1 if i < extra else 0)
        out.append((start, w))
        start += w
    return tuple(out)


def choose_blocks(n: int, m: int | None, distance: int) -> Plan:
    """The plan with the lowest estimated cost for ``n`` hashes (``m`` queries, or
    None for all pairs within the ``n``) at ``distance``."""
    _check_distance(distance)
    best: Plan | None = None
    for s in range(1, 7):
        k = distance + s
        if k > 64:
            break
        nkeys = math.comb(k, s)
        plan = Plan(distance, _blocks(k), s, 0.0)
        bits = min(plan.key_bits(), 63)
        if m is None:
            per_key = n * max(1.0, math.log2(max(n, 2))) / 8 + 2.0 * n * n / 2 / 2.0**bits
        else:
            per_key = float(n + m) + 2.0 * n * m / 2.0**bits
        cost = nkeys * per_key
        if best is None or cost < best.cost:
            best = Plan(distance, plan.blocks, s, cost)
    assert best is not None
    return best


def _check_distance(distance: int) -> None:
    if isinstance(distance, bool) or not isinstance(distance, int):
        raise TypeError("distance must be an int")
    if not 0 <= distance <= MAX_DISTANCE:
        raise ValueError(f"distance must be between 0 and {MAX_DISTANCE}, got {distance}")


def parse_hex(hashes: Iterable[str]) -> U64:
    """``uint64`` array of 16-hex-digit hashes (as the catalog stores them)."""
    return np.array([int(h, 16) for h in hashes], dtype=np.uint64)


def as_array(hashes: Sequence[int] | U64) -> U64:
    if isinstance(hashes, np.ndarray):
        return hashes.astype(np.uint64, copy=False)
    return np.array(list(hashes), dtype=np.uint64)


def distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


# -- the two searches ---------------------------------------------------------------
def find_pairs(
    hashes: Sequence[int] | U64, max_distance: int, *, plan: Plan | None = None
) -> list[tuple[int, int, int]]:
    """Every pair ``(i, j, distance)`` with ``i < j`` (positions in ``hashes``) whose
    Hamming distance is at most ``max_distance``, sorted. Equal hashes pair at 0."""
    _check_distance(max_distance)
    h = as_array(hashes)
    uniq, inverse, counts = np.unique(h, return_inverse=True, return_counts=True)
    a, b, d = _unique_pairs(uniq, max_distance, plan)
    groups = _Groups(inverse, counts)
    out: list[tuple[int, int, int]] = []
    for g in np.flatnonzero(counts > 1).tolist():  # equal hashes: every pair of a group
        out.extend((x, y, 0) for x, y in combinations(groups[g], 2))
    for ua, ub, dist in zip(a.tolist(), b.tolist(), d.tolist(), strict=True):
        for x in groups[ua]:
            for y in groups[ub]:
                out.append((min(x, y), max(x, y), dist))
    out.sort()
    return out


def query(
    existing: Sequence[int] | U64,
    new: Sequence[int] | U64,
    max_distance: int,
    *,
    plan: Plan | None = None,
) -> list[tuple[int, int, int]]:
    """Every ``(i_new, j_existing, distance)`` with distance at most ``max_distance``,
    sorted. Pairs inside ``new`` are not searched (use :func:`find_pairs` for those)."""
    _check_distance(max_distance)
    e = as_array(existing)
    q = as_array(new)
    if len(e) == 0 or len(q) == 0:
        return []
    ue, inv_e, cnt_e = np.unique(e, return_inverse=True, return_counts=True)
    uq, inv_q, cnt_q = np.unique(q, return_inverse=True, return_counts=True)
    qi, ei, d = _unique_query(ue, uq, max_distance, plan)
    groups_e, groups_q = _Groups(inv_e, cnt_e), _Groups(inv_q, cnt_q)
    out: list[tuple[int, int, int]] = []
    for a, b, dist in zip(qi.tolist(), ei.tolist(), d.tolist(), strict=True):
        for x in groups_q[a]:
            for y in groups_e[b]:
                out.append((x, y, dist))
    out.sort()
    return out


class _Groups:
    """Positions in the input of each distinct hash (``np.unique``'s inverse, grouped)."""

    def __init__(self, inverse: npt.NDArray[Any], counts: npt.NDArray[Any]) -> None:
        self.order = np.argsort(inverse.ravel(), kind="stable")
        self.starts = np.cumsum(counts) - counts
        self.counts = counts

    def __getitem__(self, g: int) -> list[int]:
        start = int(self.starts[g])
        return [int(x) for x in self.order[start : start + int(self.counts[g])].tolist()]


# -- on distinct hashes -------------------------------------------------------------
def _popcount(x: U64) -> npt.NDArray[np.uint8]:
    return np.bitwise_count(x)


def _unique_pairs(h: U64, d: int, plan: Plan | None) -> tuple[I64, I64, I64]:
    """Pairs of positions in the distinct, sorted hashes ``h`` within distance ``d``."""
    n = len(h)
    if n < 2 or d == 0:  # distinct hashes are never at distance 0
        return _empty3()
    if plan is None and n * n // 2 <= BRUTE_FORCE_WORK:
        return _brute_pairs(h, d)
    plan = plan or choose_blocks(n, None, d)
    idx_bits = max(1, (n - 1).bit_length())
    idx = np.arange(n, dtype=np.uint64)
    idx_mask = np.uint64((1 << idx_bits) - 1)
    codes: list[I64] = []
    for mask in plan.keys:
        key = _hash_key(h, mask, min(mask.bit_count(), 64 - idx_bits))
        packed = np.sort((key << np.uint64(idx_bits)) | idx)
        a, b = _run_pairs(packed >> np.uint64(idx_bits), packed)
        a = (a & idx_mask).astype(np.int64)
        b = (b & idx_mask).astype(np.int64)
        if len(a) == 0:
            continue
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        ok = _popcount(h[lo] ^ h[hi]) <= d
        codes.append(lo[ok] * n + hi[ok])
    return _decode(codes, n, h, h)


def _unique_query(e: U64, q: U64, d: int, plan: Plan | None) -> tuple[I64, I64, I64]:
    """``(positions in q, positions in e, distance)`` for distinct ``e`` and ``q``."""
    n, m = len(e), len(q)
    if plan is None and n * m <= BRUTE_FORCE_WORK:
        return _brute_query(e, q, d)
    plan = plan or choose_blocks(n, m, d)
    codes: list[I64] = []
    for mask in plan.keys:
        hbits = min(mask.bit_count(), QUERY_TABLE_BITS)
        ke = _hash_key(e, mask, hbits)
        kq = _hash_key(q, mask, hbits)
        # a table over all key values: how many queries have each, and where they start
        # in the queries sorted by key; one gather per existing hash finds its partners
        per_key = np.bincount(kq.astype(np.intp), minlength=1 << hbits)
        first = np.cumsum(per_key) - per_key
        order = np.argsort(kq, kind="stable")
        cnt = per_key[ke.astype(np.intp)]
        sel = np.flatnonzero(cnt)
        if len(sel) == 0:
            continue
        cnt = cnt[sel]
        total = int(cnt.sum())
        lo = first[ke[sel].astype(np.intp)]
        e_idx = np.repeat(sel, cnt)
        starts = np.repeat(lo - (np.cumsum(cnt) - cnt), cnt)
        q_idx = order[starts + np.arange(total)]
        ok = _popcount(e[e_idx] ^ q[q_idx]) <= d
        codes.append(q_idx[ok].astype(np.int64) * n + e_idx[ok].astype(np.int64))
    return _decode(codes, n, q, e)


def _hash_key(h: U64, mask: int, bits: int) -> U64:
    """The bits of ``mask`` in each hash, squeezed (by multiplicative hashing) into
    ``bits`` bits. Unequal keys may collide; that only adds candidates to verify."""
    masked = h & np.uint64(mask)
    if mask.bit_length() <= bits:
        return masked
    return (masked * _MULT) >> np.uint64(64 - bits)


def _run_pairs(keys_sorted: U64, ids: U64) -> tuple[U64, U64]:
    """All pairs of ids inside each run of equal keys (keys sorted). Work is
    proportional to the number of pairs: each pass keeps only the positions whose
    run is still long enough."""
    eq = keys_sorted[1:] == keys_sorted[:-1]
    cand = np.flatnonzero(eq)
    a_parts: list[U64] = []
    b_parts: list[U64] = []
    offset = 1
    while len(cand):
        a_parts.append(ids[cand])
        b_parts.append(ids[cand + offset])
        offset += 1
        cand = cand[cand + offset - 1 < len(eq)]
        cand = cand[eq[cand + offset - 1]]
    if not a_parts:
        return np.empty(0, np.uint64), np.empty(0, np.uint64)
    return np.concatenate(a_parts), np.concatenate(b_parts)


def _decode(codes: list[I64], n: int, left: U64, right: U64) -> tuple[I64, I64, I64]:
    if not codes:
        return _empty3()
    u = np.unique(np.concatenate(codes))
    a, b = u // n, u % n
    dist = _popcount(left[a] ^ right[b]).astype(np.int64)
    return a, b, dist


def _brute_pairs(h: U64, d: int) -> tuple[I64, I64, I64]:
    n = len(h)
    a_parts: list[I64] = []
    b_parts: list[I64] = []
    for i in range(n - 1):
        dist = _popcount(h[i + 1 :] ^ h[i])
        hit = np.flatnonzero(dist <= d)
        if len(hit):
            a_parts.append(np.full(len(hit), i, dtype=np.int64))
            b_parts.append(hit.astype(np.int64) + i + 1)
    if not a_parts:
        return _empty3()
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    return a, b, _popcount(h[a] ^ h[b]).astype(np.int64)


def _brute_query(e: U64, q: U64, d: int) -> tuple[I64, I64, I64]:
    a_parts: list[I64] = []
    b_parts: list[I64] = []
    for i in range(len(q)):
        hit = np.flatnonzero(_popcount(e ^ q[i]) <= d)
        if len(hit):
            a_parts.append(np.full(len(hit), i, dtype=np.int64))
            b_parts.append(hit.astype(np.int64))
    if not a_parts:
        return _empty3()
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    return a, b, _popcount(q[a] ^ e[b]).astype(np.int64)


def _empty3() -> tuple[I64, I64, I64]:
    return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
