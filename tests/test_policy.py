"""pixvcs.toml: defaults, every key, and errors that name the key at fault."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pixvcs.policy import Policy, PolicyError, parse_policy

FULL = b"""
[images]
formats = ["jpeg", "PNG", "jpg"]
min_width = 32
min_height = 24
max_width = 4096
max_height = 4096
min_bytes = 100
max_bytes = 10_000_000
modes = ["RGB", "L"]

[duplicates]
near_distance = 4
allow_exact = true
allow_near = false

[splits]
folders = ["train", "valid"]

[classes]
allowed = ["cat", "dog"]
min_per_class = 10
max_imbalance = 3

[changes]
max_removed_fraction = 0.05
max_added = 5000

[provenance]
required = false
"""


def test_defaults_without_a_file() -> None:
    p = Policy()
    assert p.duplicates.near_distance == 6
    assert (p.duplicates.allow_exact, p.duplicates.allow_near) == (False, True)
    assert p.splits.folders == ["train", "val", "test"]
    assert p.images.formats is None and p.classes.allowed is None
    assert parse_policy(b"") == Policy(source="pixvcs.toml")


def test_every_key_parses() -> None:
    p = parse_policy(FULL)
    assert p.images.formats == ["JPEG", "PNG"]
    assert (p.images.min_width, p.images.max_bytes, p.images.modes) == (32, 10_000_000, ["RGB", "L"])
    assert (p.duplicates.near_distance, p.duplicates.allow_exact, p.duplicates.allow_near) == (
        4,
        True,
        False,
    )
    assert p.splits.folders == ["train", "valid"]
    assert (p.classes.allowed, p.classes.min_per_class, p.classes.max_imbalance) == (
        ["cat", "dog"],
        10,
        3.0,
    )
    assert (p.changes.max_removed_fraction, p.changes.max_added) == (0.05, 5000)
    assert p.to_json()["duplicates"]["near_distance"] == 4
    assert parse_policy(b"[splits]\nfolders = []\n").splits.folders == []
    assert parse_policy(b"[provenance]\nrequired = true\n").provenance.required is True
    assert p.provenance.required is False


@pytest.mark.parametrize(
    ("text", "key", "why"),
    [
        ("[image]\nmin_width = 3\n", "image", "unknown section"),
        ("[images]\nmin_widht = 3\n", "images.min_widht", "unknown key"),
        ("[images]\nmin_width = '3'\n", "images.min_width", "must be an integer"),
        ("[images]\nmin_width = -1\n", "images.min_width", ">= 0"),
        ("[images]\nmin_width = true\n", "images.min_width", "must be an integer"),
        ("[images]\nmin_width = 10\nmax_width = 5\n", "images.max_width", "below min_width"),
        ("[images]\nformats = ['jpeg', 'heic']\n", "images.formats", "unknown format 'heic'"),
        ("[images]\nformats = 'jpeg'\n", "images.formats", "list of non-empty strings"),
        ("[images]\nmodes = ['RGBX', 'rgb']\n", "images.modes", "unknown Pillow mode 'rgb'"),
        ("[duplicates]\nnear_distance = 40\n", "duplicates.near_distance", "between 0 and 32"),
        ("[duplicates]\nnear_distance = 6.5\n", "duplicates.near_distance", "must be an integer"),
        ("[duplicates]\nallow_near = 'no'\n", "duplicates.allow_near", "true or false"),
        ("[splits]\nfolders = ['train/a']\n", "splits.folders", "not a top-level folder"),
        ("[splits]\nfolders = ['a', 'a']\n", "splits.folders", "twice"),
        ("[classes]\nmax_imbalance = 0.5\n", "classes.max_imbalance", ">= 1.0"),
        ("[classes]\nallowed = [1, 2]\n", "classes.allowed", "list of non-empty strings"),
        ("[changes]\nmax_removed_fraction = 2\n", "changes.max_removed_fraction", "between"),
        ("[changes]\nmax_added = 1.5\n", "changes.max_added", "must be an integer"),
        ("[provenance]\nrequired = 'yes'\n", "provenance.required", "true or false"),
        ("[provenance]\npaths = ['web']\n", "provenance.paths", "unknown key"),
        ("images = 3\n", "images", "must be a table"),
    ],
)
def test_errors_name_the_key(text: str, key: str, why: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy(text.encode())
    assert exc.value.key == key
    assert why in str(exc.value) and key in str(exc.value)
    assert exc.value.exit_code == 2


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"[images\n", "not valid TOML"),
        (b"\xff\xfe", "not UTF-8"),
        (b"#" * (2 << 20), "larger than"),
    ],
)
def test_unparseable_files(data: bytes, why: str) -> None:
    with pytest.raises(PolicyError, match=why) as exc:
        parse_policy(data)
    assert exc.value.key is None


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_give_a_policy_or_a_policy_error(data: bytes) -> None:
    try:
        p = parse_policy(data)
    except PolicyError:
        return
    assert isinstance(p, Policy)
