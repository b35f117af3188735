from __future__ import annotations

import hashlib
import random

from pixvcs.crawl.dedupe import Candidate, dedupe
from pixvcs.imageinfo import inspect_image
from tests.crawl.site import pattern_image, resized_copy


def cand(order: int, data: bytes, url: str | None = None) -> Candidate:
    return Candidate(
        order,
        url or f"http://h.example/{order}",
        hashlib.sha256(data).hexdigest(),
        inspect_image(data).phash,
    )


A = pattern_image(1)
A_SMALL = resized_copy(A, (96, 96))  # resized and re-encoded as JPEG
A_PNG = resized_copy(A, (200, 200), "PNG")
B = pattern_image(2)
C = pattern_image(3)


def test_exact_and_near_within_the_crawl_first_copy_stays() -> None:
    cands = [
        cand(0, A),
        cand(1, B),
        cand(2, A, "http://h.example/again"),
        cand(3, A_SMALL),
        cand(4, A_PNG),
    ]
    d = dedupe(cands, base_oids={}, base_hashes=[], distance=6)
    assert [c.order for c in d.kept] == [0, 1]
    reasons = {x["url"]: (x["reason"], x["of"]) for x in d.dropped}
    assert reasons == {
        "http://h.example/again": ("exact-crawl", "http://h.example/0"),
        "http://h.example/3": ("near-crawl", "http://h.example/0"),
        "http://h.example/4": ("near-crawl", "http://h.example/0"),
    }
    assert all("distance" in x for x in d.dropped if x["reason"] == "near-crawl")


def test_decision_does_not_depend_on_arrival_order() -> None:
    cands = [
        cand(0, A_SMALL),
        cand(1, B),
        cand(2, A),
        cand(3, A_PNG),
        cand(4, C),
        cand(5, B, "http://z/"),
    ]
    first = dedupe(cands, base_oids={}, base_hashes=[], distance=6)
    for seed in range(5):
        shuffled = list(cands)
        random.Random(seed).shuffle(shuffled)
        again = dedupe(shuffled, base_oids={}, base_hashes=[], distance=6)
        assert again.kept == first.kept and again.dropped == first.dropped
    assert [c.order for c in first.kept] == [0, 1, 4]  # the resized copy came first: it stays


def test_against_the_base_version() -> None:
    base_a = cand(99, A)
    cands = [cand(0, A), cand(1, A_SMALL), cand(2, C)]
    d = dedupe(
        cands,
        base_oids={base_a.oid: "cat/a.png"},
        base_hashes=[("cat/a.png", base_a.phash or "")],
        distance=6,
    )
    assert [c.order for c in d.kept] == [2]
    assert [(x["reason"], x["of"]) for x in d.dropped] == [
        ("exact-base", "cat/a.png"),
        ("near-base", "cat/a.png"),
    ]
    png = cand(1, A_PNG)
    d_png = bin(int(png.phash or "", 16) ^ int(base_a.phash or "", 16)).count("1")
    assert 0 < d_png <= 6
    base = [("cat/a.png", base_a.phash or "")]
    strict = dedupe([png], base_oids={}, base_hashes=base, distance=d_png - 1)
    assert strict.kept == [png]  # below its distance, the resized copy is new
    assert dedupe([png], base_oids={}, base_hashes=base, distance=d_png).kept == []
