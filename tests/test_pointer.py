from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pixvcs.errors import InvalidPointer
from pixvcs.pointer import format_pointer, looks_like_pointer, parse_pointer

OID = hashlib.sha256(b"x").hexdigest()


def test_format_is_the_three_line_spec_form() -> None:
    assert format_pointer(OID, 12) == (
        b"version https://git-lfs.github.com/spec/v1\n"
        b"oid sha256:" + OID.encode() + b"\nsize 12\n"
    )


@given(st.binary(min_size=32, max_size=32), st.integers(min_value=0, max_value=2**62))
def test_round_trip(raw: bytes, size: int) -> None:
    oid = raw.hex()
    p = parse_pointer(format_pointer(oid, size))
    assert (p.oid, p.size) == (oid, size)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_invalid_pointer(data: bytes) -> None:
    try:
        p = parse_pointer(data)
    except InvalidPointer:
        return
    assert len(p.oid) == 64 and p.size >= 0


def test_extra_keys_in_order_are_accepted() -> None:
    data = (b"version https://git-lfs.github.com/spec/v1\n"
            b"ext-0-foo sha256:" + OID.encode() + b"\n"
            b"oid sha256:" + OID.encode() + b"\nsize 3\n")
    assert parse_pointer(data).size == 3


@pytest.mark.parametrize("data, why", [
    (b"version https://git-lfs.github.com/spec/v1\nsize 3\n", "no oid"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + OID.encode() + b"\n", "no size"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + OID.upper().encode() + b"\nsize 3\n", "hex"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 3\n", "hex"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + OID.encode() + b"\nsize -3\n", "size"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + OID.encode() + b"\nsize 03\n", "size"),
    (b"version https://git-lfs.github.com/spec/v1\nsize 3\noid sha256:" + OID.encode() + b"\n", "order"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + OID.encode() + b"\nsize 3", "newline"),
    (b"version https://example.com/v9\noid sha256:" + OID.encode() + b"\nsize 3\n", "first line"),
    (b"version https://git-lfs.github.com/spec/v1\n" + b"x" * 2000, "larger"),
])
def test_malformed_pointers_name_the_problem(data: bytes, why: str) -> None:
    with pytest.raises(InvalidPointer, match=why):
        parse_pointer(data)


def test_looks_like_pointer() -> None:
    assert looks_like_pointer(format_pointer(OID, 1))
    assert not looks_like_pointer(b"\xff\xd8\xff\xe0 a jpeg")


def test_a_second_version_line_is_rejected() -> None:
    data = format_pointer(OID, 3) + b"version https://git-lfs.github.com/spec/v1\n"
    with pytest.raises(InvalidPointer, match="duplicate"):
        parse_pointer(data)
