"""Near-duplicate search against brute force: nothing within the distance is
missed, nothing beyond it is returned, whatever plan the search uses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pixvcs import neardup

HASH = st.integers(min_value=0, max_value=2**64 - 1)


def brute_pairs(h: list[int], d: int) -> list[tuple[int, int, int]]:
    """Every pair, compared (numpy, one row at a time)."""
    a = np.array(h, dtype=np.uint64)
    out = []
    for i in range(len(h)):
        dist = np.bitwise_count(a[i + 1 :] ^ a[i])
        out += [(i, i + 1 + int(j), int(dist[j])) for j in np.flatnonzero(dist <= d)]
    return out


def brute_query(e: list[int], q: list[int], d: int) -> list[tuple[int, int, int]]:
    a = np.array(e, dtype=np.uint64)
    out = []
    for i, x in enumerate(q):
        dist = np.bitwise_count(a ^ np.uint64(x))
        out += [(i, int(j), int(dist[j])) for j in np.flatnonzero(dist <= d)]
    return out


def clustered(rng: np.random.Generator, n: int, flips: int) -> list[int]:
    """Random hashes plus copies of some of them with a few bits flipped, and exact
    repeats: the shapes real near-duplicates take."""
    base = [int(x) for x in rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)]
    out = list(base)
    for x in base[: n // 3]:
        for _ in range(int(rng.integers(1, 3))):
            y = x
            for b in rng.choice(64, int(rng.integers(0, flips + 1)), replace=False):
                y ^= 1 << int(b)
            out.append(y)
    out += base[:3]
    order = rng.permutation(len(out))
    return [out[i] for i in order]


@pytest.mark.parametrize("d", [0, 1, 3, 6, 10])
@pytest.mark.parametrize("per_key", [1, 2, 3])
def test_every_plan_finds_exactly_the_brute_force_pairs(d: int, per_key: int) -> None:
    rng = np.random.default_rng(d * 10 + per_key)
    h = clustered(rng, 300, flips=d + 2)
    plan = neardup.Plan(d, neardup._blocks(d + per_key), per_key, 0.0)
    assert neardup.find_pairs(h, d, plan=plan) == brute_pairs(h, d)
    q = clustered(rng, 60, flips=d + 2) + h[:20]
    assert neardup.query(h, q, d, plan=plan) == brute_query(h, q, d)


def test_chosen_plans_beat_brute_force_thresholds() -> None:
    """Above the brute-force threshold the chosen plan is used; it must agree too."""
    rng = np.random.default_rng(7)
    h = clustered(rng, 2200, flips=8)
    assert len(set(h)) ** 2 // 2 > neardup.BRUTE_FORCE_WORK
    assert neardup.find_pairs(h, 6) == brute_pairs(h, 6)
    q = clustered(rng, 2100, flips=8)[:2100]
    assert len(set(q)) * len(set(h)) > neardup.BRUTE_FORCE_WORK
    assert neardup.query(h, q, 6) == brute_query(h, q, 6)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(HASH, max_size=40),
    st.lists(st.tuples(st.integers(0, 39), st.integers(0, 2**64 - 1)), max_size=30),
    st.integers(0, 12),
    st.integers(1, 3),
)
def test_property_pairs_and_queries_match_brute_force(
    base: list[int], noise: list[tuple[int, int]], d: int, per_key: int
) -> None:
    # near copies: XOR a base hash with a sparse mask (keep ~d bits of the random mask)
    h = list(base)
    for i, mask in noise:
        if base:
            sparse = mask & (mask >> 7) & (mask >> 13)
            h.append(base[i % len(base)] ^ sparse)
    plan = neardup.Plan(d, neardup._blocks(d + per_key), per_key, 0.0)
    assert neardup.find_pairs(h, d, plan=plan) == brute_pairs(h, d)
    half = len(h) // 2
    assert neardup.query(h[:half], h[half:], d, plan=plan) == brute_query(h[:half], h[half:], d)


def test_choose_blocks_prefers_wider_keys_for_big_sets() -> None:
    assert neardup.choose_blocks(1_000, None, 6).per_key <= 2
    assert neardup.choose_blocks(1_000_000, None, 6).per_key == 3
    plan = neardup.choose_blocks(1_000_000, 10_000, 6)
    assert len(plan.blocks) == 6 + plan.per_key
    assert sum(w for _, w in plan.blocks) == 64
    assert neardup.choose_blocks(10, None, 0).blocks == ((0, 64),)


def test_parse_hex_and_bad_distances() -> None:
    h = neardup.parse_hex(["ffffffffffffffff", "0000000000000001"])
    assert h.dtype == np.uint64 and int(h[0]) == 2**64 - 1
    assert neardup.find_pairs(h, 64 // 2) == []
    assert neardup.distance(0b1011, 0b0001) == 2
    with pytest.raises(ValueError, match="between 0 and 32"):
        neardup.find_pairs([1, 2], 33)
    with pytest.raises(TypeError):
        neardup.query([1], [2], True)
    assert neardup.query([], [1], 3) == [] and neardup.find_pairs([], 3) == []
