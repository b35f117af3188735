"""``[provenance] required = true``: images need a record in provenance/*.jsonl.

The records pixvcs crawl writes satisfy the rule (a real crawl, through a mock
transport); hand-added images need a hand-written record; a malformed provenance
file stops the check with exit code 2, naming the file and the line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from pixvcs import Repo
from pixvcs.check import check
from pixvcs.cli import main
from pixvcs.crawl import CrawlOptions, CrawlRequest, start
from pixvcs.provenance import ProvenanceError, parse_records
from tests.crawl.site import Site, image, pattern_image
from tests.test_check import commit, encode, failing, textured, violations
from tests.test_docs import _read, code_blocks, fixtures

REQUIRED = "[provenance]\nrequired = true\n"


def oid(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record(path: str, data: bytes, **origin: str) -> str:
    """One provenance line (a hand-written one unless ``url`` is given)."""
    return json.dumps({"path": path, "oid": oid(data), **(origin or {"source": "hand-made"})})


def run_cli(repo: Repo, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["-C", repo.root, "check", *args])
    return r.exit_code, r.stdout, r.stderr


# -- passing --------------------------------------------------------------------------
def test_a_crawl_carries_the_provenance_the_policy_requires(repo: Repo, tmp_path: Path) -> None:
    hand = encode(textured(1))
    commit(
        repo,
        {
            "pixvcs.toml": REQUIRED,
            "cat/hand.jpg": hand,
            "provenance/hand-added.jsonl": record("cat/hand.jpg", hand) + "\n",
        },
    )
    site = Site({f"/{n}.png": image(pattern_image(n)) for n in range(3)})
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"http://h.example/{n}.png\n" for n in range(3)))
    state = start(
        repo,
        CrawlRequest(urls_file=str(urls), label="web"),
        CrawlOptions(per_host_rate=0, retries=0, backoff=0.0),
        author="Crawl <crawl@example.org>",
        transport=site.transport(),
        sleep=lambda s: None,
    )
    assert state.summary["added"] == 3 and state.branch is not None

    result = check(repo, f"main..{state.branch}")
    rule = result.rule("provenance.required")
    assert result.ok and rule is not None and rule.checked == 3
    assert check(repo, state.branch).ok  # the whole version: crawled and hand-added
    code, out, _ = run_cli(repo, f"main..{state.branch}")
    assert code == 0 and "ok    provenance.required  (3 checked)" in out


def test_a_relabelled_image_keeps_its_record(repo: Repo) -> None:
    data = encode(textured(2))
    commit(
        repo,
        {
            "pixvcs.toml": REQUIRED,
            "unsorted/a.jpg": data,
            "provenance/p.jsonl": record("unsorted/a.jpg", data, url="https://x.example/a.jpg"),
        },
        "v1",
    )
    repo.create_branch("base")
    repo.rm(["unsorted/a.jpg"])
    commit(repo, {"cat/a.jpg": data}, "relabel")
    result = check(repo, "base..HEAD")
    assert result.ok and result.changes is not None
    assert result.changes["renamed"] == [{"from": "unsorted/a.jpg", "to": "cat/a.jpg"}]
    assert result.rule("provenance.required") is not None


# -- failing --------------------------------------------------------------------------
def test_images_without_a_record_fail_by_path(repo: Repo) -> None:
    a, b, c = (encode(textured(n)) for n in (3, 4, 5))
    commit(
        repo,
        {
            "pixvcs.toml": REQUIRED,
            "cat/a.jpg": a,
            "cat/b.jpg": b,
            "dog/c.jpg": c,
            "provenance/p.jsonl": record("cat/a.jpg", a) + "\n",
        },
    )
    result = check(repo)
    assert failing(result) == {"provenance.required"}
    found = violations(result, "provenance.required")
    assert [v["paths"] for v in found] == [["cat/b.jpg"], ["dog/c.jpg"]]
    assert [v["oids"] for v in found] == [[oid(b)], [oid(c)]]
    assert "no provenance record (oid " in str(found[0]["message"])
    assert "is in none of the 1 provenance file(s)" in str(found[0]["message"])

    code, out, _ = run_cli(repo)
    assert code == 1 and "FAIL  provenance.required" in out
    assert "cat/b.jpg: no provenance record" in out and "dog/c.jpg" in out
    code, out, _ = run_cli(repo, "--format", "junit")
    assert code == 1 and 'type="provenance.required"' in out


def test_a_version_without_provenance_files_says_so(repo: Repo) -> None:
    commit(repo, {"pixvcs.toml": REQUIRED, "cat/a.jpg": encode(textured(6))})
    (v,) = violations(check(repo), "provenance.required")
    assert str(v["message"]).endswith("the version has no provenance/*.jsonl file)")


def test_new_bytes_at_a_recorded_path_need_a_new_record(repo: Repo) -> None:
    old, new = encode(textured(7)), encode(textured(8))
    commit(
        repo,
        {
            "pixvcs.toml": REQUIRED,
            "cat/a.jpg": old,
            "provenance/p.jsonl": record("cat/a.jpg", old) + "\n",
        },
        "v1",
    )
    repo.create_branch("base")
    commit(repo, {"cat/a.jpg": new}, "re-encoded")
    (v,) = violations(check(repo, "base..HEAD"), "provenance.required")
    assert v["paths"] == ["cat/a.jpg"]
    assert "provenance/p.jsonl:1 records other bytes" in str(v["message"])
    commit(repo, {"provenance/p.jsonl": record("cat/a.jpg", new) + "\n"}, "record it")
    assert check(repo, "base..HEAD").ok


def test_a_change_checks_only_its_new_images(repo: Repo) -> None:
    legacy = {f"cat/{n}.jpg": encode(textured(10 + n)) for n in range(3)}
    commit(repo, {**legacy, "pixvcs.toml": REQUIRED}, "legacy, before the rule")
    repo.create_branch("base")
    new = encode(textured(20))
    commit(repo, {"dog/new.jpg": new, "provenance/new.jsonl": record("dog/new.jpg", new)}, "v2")
    result = check(repo, "base..HEAD")
    assert result.ok and result.checked == 1
    whole = check(repo)  # the whole version: the legacy images have no record
    assert [v["paths"] for v in violations(whole, "provenance.required")] == [
        [p] for p in sorted(legacy)
    ]


def test_staged_reads_the_records_of_the_index(repo: Repo) -> None:
    commit(repo, {"pixvcs.toml": REQUIRED}, "policy")
    data = encode(textured(30))
    from tests.test_check import put

    put(repo, "cat/a.jpg", data)
    repo.add(["cat/a.jpg"])
    put(repo, "provenance/p.jsonl", record("cat/a.jpg", data))  # not staged: not read
    assert failing(check(repo, staged=True)) == {"provenance.required"}
    repo.add(["provenance/p.jsonl"])
    assert check(repo, staged=True).ok


def test_not_required_means_not_read(repo: Repo) -> None:
    commit(repo, {"cat/a.jpg": encode(textured(31)), "provenance/p.jsonl": "not json\n"})
    result = check(repo)
    assert result.ok and result.rule("provenance.required") is None


# -- malformed files ------------------------------------------------------------------
GOOD = json.dumps({"path": "cat/a.jpg", "oid": "a" * 64, "url": "https://x.example/a.jpg"})


@pytest.mark.parametrize(
    ("content", "line", "why"),
    [
        (b"{not json}\n", 1, "not JSON"),
        (GOOD.encode() + b"\n[1, 2]\n", 2, "not a JSON object"),
        (b'{"path": "a.jpg", "oid": "ABC", "url": "u"}\n', 1, "'oid' must be 64 lowercase hex"),
        (f'{{"oid": "{"b" * 64}", "url": "u"}}\n'.encode(), 1, "'path' must be a non-empty"),
        (f'{{"path": "a", "oid": "{"b" * 64}"}}\n'.encode(), 1, "no origin"),
        (f'{{"path": "a", "oid": "{"b" * 64}", "url": 3}}\n'.encode(), 1, "'url' must be"),
        (f'{{"path": "a", "oid": "{"b" * 64}", "source": " "}}\n'.encode(), 1, "'source' must"),
        (GOOD.encode() + b"\n\n" + b"\xff\xfe\n", 3, "not UTF-8"),
    ],
)
def test_malformed_records_name_file_and_line(content: bytes, line: int, why: str) -> None:
    with pytest.raises(ProvenanceError) as exc:
        parse_records(content, "provenance/p.jsonl")
    assert (exc.value.source, exc.value.line, exc.value.exit_code) == (
        "provenance/p.jsonl",
        line,
        2,
    )
    assert why in str(exc.value) and f"provenance/p.jsonl:{line}" in str(exc.value)


def test_a_malformed_file_stops_the_check_with_exit_2(repo: Repo) -> None:
    data = encode(textured(40))
    commit(
        repo,
        {
            "pixvcs.toml": REQUIRED,
            "cat/a.jpg": data,
            "provenance/a-good.jsonl": record("cat/a.jpg", data) + "\n",
            "provenance/team/broken.jsonl": record("cat/a.jpg", data) + "\n{\n",
        },
    )
    with pytest.raises(ProvenanceError, match="provenance/team/broken.jsonl:2"):
        check(repo)
    code, out, err = run_cli(repo)
    assert code == 2 and out == ""
    assert "error: malformed provenance file provenance/team/broken.jsonl:2: not JSON" in err


def test_blank_lines_and_unknown_keys_are_fine() -> None:
    text = "\n" + GOOD[:-1] + ', "licence": "cc-by", "extra": {"k": [1]}}' + "\n\n  \n" + GOOD
    records = parse_records(text.encode(), "provenance/x.jsonl")
    assert [(r.oid, r.path, r.line) for r in records] == [("a" * 64, "cat/a.jpg", 2)] * 1 + [
        ("a" * 64, "cat/a.jpg", 5)
    ]
    assert records[0].origin == "https://x.example/a.jpg"


def test_the_format_md_example_is_a_valid_record() -> None:
    example = fixtures(_read("format.md"))["crawl-provenance"]
    (r,) = parse_records(example.encode(), "provenance/20260101T120000Z-1a2b3c.jsonl")
    assert r.path == "rose/6b9a555c4b26ea92.jpg" and r.oid.startswith("6b9a555c4b26ea92")


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=300)
    | st.text(max_size=300).map(str.encode)
    | st.lists(
        st.dictionaries(
            st.sampled_from(["path", "oid", "url", "source", "x"]),
            st.none() | st.text(max_size=5) | st.just("c" * 64) | st.integers(),
        ),
        max_size=4,
    ).map(lambda objs: "\n".join(json.dumps(o) for o in objs).encode())
)
def test_any_bytes_give_records_or_a_provenance_error(data: bytes) -> None:
    try:
        records = parse_records(data, "provenance/h.jsonl")
    except ProvenanceError as e:
        assert e.line >= 1 and str(e).startswith("malformed provenance file provenance/h.jsonl:")
        return
    for r in records:
        assert len(r.oid) == 64 and r.path and r.origin.strip() and r.line >= 1


def test_the_hand_written_record_of_ci_md_is_valid() -> None:
    (example,) = [b for b in code_blocks(_read("ci.md"), "json") if "<sha256 of the file>" in b]
    (r,) = parse_records(example.replace("<sha256 of the file>", "d" * 64).encode(), "p.jsonl")
    assert r.path == "cat/studio-0001.jpg" and r.origin.startswith("photographed")
