"""pixvcs check: every rule's passing and failing case, exact and near leakage,
change scopes, the policy's origin, and the reports (JSON, JUnit, HTML, Markdown)."""

from __future__ import annotations

import io
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageEnhance

from pixvcs import Repo
from pixvcs.check import MAX_VIOLATIONS_PER_RULE, CheckResult, check, parse_spec
from pixvcs.cli import main
from pixvcs.errors import UsageError
from pixvcs.policy import PolicyError
from pixvcs.report import render

AUTHOR = "Test <test@example.org>"


# -- images ---------------------------------------------------------------------------
def textured(seed: int, size: int = 96) -> Image.Image:
    """A smooth random texture: distinct seeds are far apart in perceptual hash,
    and resized / re-encoded / brightened copies stay close."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small, "RGB").resize((size, size), Image.Resampling.BICUBIC)


def encode(im: Image.Image, fmt: str = "JPEG", **kw: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


TRANSFORMS: dict[str, Callable[[Image.Image], bytes]] = {
    "resize": lambda im: encode(im.resize((64, 64), Image.Resampling.LANCZOS), quality=90),
    "jpeg-quality": lambda im: encode(im, quality=40),
    "brightness": lambda im: encode(ImageEnhance.Brightness(im).enhance(1.08), quality=90),
}


def put(repo: Repo, rel: str, data: bytes | str) -> None:
    full = os.path.join(repo.root, rel)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def commit(repo: Repo, files: dict[str, bytes | str], message: str = "v") -> str:
    for rel, data in files.items():
        put(repo, rel, data)
    repo.add(["."], allow_invalid=True)
    return repo.commit(message, author=AUTHOR)


def dataset(n: int = 3, seed: int = 0) -> dict[str, bytes | str]:
    files: dict[str, bytes | str] = {}
    for i in range(n):
        files[f"train/cat/{i}.jpg"] = encode(textured(seed + i), quality=90)
        files[f"train/dog/{i}.jpg"] = encode(textured(seed + 100 + i), quality=90)
        files[f"test/cat/{i}.jpg"] = encode(textured(seed + 200 + i), quality=90)
        files[f"test/dog/{i}.jpg"] = encode(textured(seed + 300 + i), quality=90)
    return files


def failing(result: CheckResult) -> set[str]:
    return {r.rule for r in result.rules if not r.ok}


def violations(result: CheckResult, rule: str) -> list[dict[str, object]]:
    return [v.to_json() for v in result.violations if v.rule == rule]


# -- defaults -------------------------------------------------------------------------
def test_defaults_hold_for_a_clean_version(repo: Repo) -> None:
    commit(repo, dataset())
    result = check(repo)
    assert result.ok and result.policy.source is None
    assert [r.rule for r in result.rules] == [
        "images.decodable",
        "duplicates.exact",
        "splits.leakage",
    ]
    assert result.classes == {
        "cat": {"before": None, "after": 6},
        "dog": {"before": None, "after": 6},
    }
    assert result.splits["train"]["after"] == 6 and result.checked == result.images == 12


def test_exact_copy_across_splits_is_leakage(repo: Repo) -> None:
    files = dataset()
    files["test/cat/copy.jpg"] = files["train/cat/1.jpg"]
    commit(repo, files)
    result = check(repo)
    assert failing(result) == {"splits.leakage"}
    (v,) = violations(result, "splits.leakage")
    assert v["paths"] == ["test/cat/copy.jpg", "train/cat/1.jpg"]
    assert (v["distance"], v["kind"]) == (0, "exact")
    assert "across splits test and train" in str(v["message"])


def test_exact_copy_within_a_split_is_a_duplicate(repo: Repo) -> None:
    files = dataset()
    files["train/dog/again.jpg"] = files["train/cat/0.jpg"]
    commit(repo, files)
    result = check(repo)
    assert failing(result) == {"duplicates.exact"}
    (v,) = violations(result, "duplicates.exact")
    assert set(v["paths"]) == {"train/cat/0.jpg", "train/dog/again.jpg"}  # type: ignore[arg-type]


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
def test_near_copy_across_splits_is_leakage_in_a_change(repo: Repo, transform: str) -> None:
    commit(repo, dataset(), "v1")
    repo.create_branch("base")
    near = TRANSFORMS[transform](textured(1))  # a modified train/cat/1.jpg
    commit(repo, {"test/cat/near.jpg": near}, "v2")
    result = check(repo, "base..HEAD")
    assert result.mode == "range" and result.checked == 1
    assert failing(result) == {"splits.leakage"}
    (v,) = violations(result, "splits.leakage")
    assert v["paths"] == ["train/cat/1.jpg", "test/cat/near.jpg"]
    assert v["kind"] == "near" and 0 <= int(v["distance"]) <= 6  # type: ignore[call-overload]
    assert f"(distance {v['distance']})" in str(v["message"])


def test_near_duplicates_within_a_split_only_when_forbidden(repo: Repo) -> None:
    files = dataset()
    files["train/cat/near.jpg"] = TRANSFORMS["resize"](textured(0))
    commit(repo, files)
    assert check(repo).ok  # allowed by default
    commit(repo, {"pixvcs.toml": "[duplicates]\nallow_near = false\n"})
    result = check(repo)
    assert failing(result) == {"duplicates.near"}
    (v,) = violations(result, "duplicates.near")
    assert v["paths"] == ["train/cat/0.jpg", "train/cat/near.jpg"]
    commit(repo, {"pixvcs.toml": "[duplicates]\nallow_near = false\nnear_distance = 0\n"})
    assert check(repo).ok is (v["distance"] != 0)


def test_leakage_can_be_switched_off_and_splits_renamed(repo: Repo) -> None:
    files = dataset()
    files["test/cat/copy.jpg"] = files["train/cat/1.jpg"]
    files["pixvcs.toml"] = "[splits]\nfolders = []\n[duplicates]\nallow_exact = true\n"
    commit(repo, files)
    result = check(repo)
    assert result.ok and result.rule("splits.leakage") is None
    commit(repo, {"pixvcs.toml": "[splits]\nfolders = ['train', 'test']\n"})
    assert failing(check(repo)) == {"splits.leakage"}


def test_a_change_reports_only_pairs_with_a_new_image(repo: Repo) -> None:
    files = dataset()
    files["train/cat/dup.jpg"] = files["train/cat/0.jpg"]  # old problem
    commit(repo, files, "v1")
    repo.create_branch("base")
    commit(repo, {"train/dog/new.jpg": encode(textured(999), quality=90)}, "v2")
    assert check(repo, "base..HEAD").ok
    assert failing(check(repo)) == {"duplicates.exact"}
    commit(repo, {"train/dog/dup2.jpg": files["train/dog/1.jpg"]}, "v3")
    result = check(repo, "base..HEAD")
    assert [v["paths"] for v in violations(result, "duplicates.exact")] == [
        ["train/dog/1.jpg", "train/dog/dup2.jpg"]
    ]
    assert result.changes is not None and result.changes["added"] == [
        "train/dog/dup2.jpg",
        "train/dog/new.jpg",
    ]


# -- image rules ----------------------------------------------------------------------
IMAGE_RULES = [
    ("images.formats", "formats = ['jpeg', 'png']", "formats = ['png']"),
    ("images.modes", "modes = ['RGB', 'L']", "modes = ['RGB']"),
    ("images.min_width", "min_width = 32", "min_width = 33"),
    ("images.min_height", "min_height = 24", "min_height = 25"),
    ("images.max_width", "max_width = 96", "max_width = 95"),
    ("images.max_height", "max_height = 96", "max_height = 95"),
    ("images.min_bytes", "min_bytes = 10", "min_bytes = 1000000"),
    ("images.max_bytes", "max_bytes = 1000000", "max_bytes = 10"),
]


@pytest.mark.parametrize(("rule", "passing", "failing_"), IMAGE_RULES)
def test_image_rules(repo: Repo, rule: str, passing: str, failing_: str) -> None:
    files: dict[str, bytes | str] = {
        "cat/big.jpg": encode(textured(1)),  # 96x96 RGB JPEG
        "cat/small.png": encode(textured(2, 48).resize((32, 24)).convert("L"), "PNG"),
    }
    commit(repo, {**files, "pixvcs.toml": f"[images]\n{passing}\n"})
    result = check(repo)
    assert result.ok and result.rule(rule) is not None
    commit(repo, {"pixvcs.toml": f"[images]\n{failing_}\n"})
    result = check(repo)
    assert failing(result) == {rule}
    for v in violations(result, rule):
        assert len(v["paths"]) == 1 and v["paths"][0] in files  # type: ignore[arg-type,index]


def test_undecodable_images_fail_by_default(repo: Repo) -> None:
    good = encode(textured(5))
    commit(repo, {"cat/ok.jpg": good, "cat/truncated.jpg": good[: len(good) // 2]})
    result = check(repo)
    assert failing(result) == {"images.decodable"}
    (v,) = violations(result, "images.decodable")
    assert v["paths"] == ["cat/truncated.jpg"] and "does not decode" in str(v["message"])


# -- classes --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rule", "passing", "failing_"),
    [
        ("classes.allowed", "allowed = ['cat', 'dog']", "allowed = ['cat', 'bird']"),
        ("classes.min_per_class", "min_per_class = 2", "min_per_class = 5"),
        ("classes.max_imbalance", "max_imbalance = 2", "max_imbalance = 1.5"),
    ],
)
def test_class_rules(repo: Repo, rule: str, passing: str, failing_: str) -> None:
    files: dict[str, bytes | str] = {f"train/cat/{i}.jpg": encode(textured(i)) for i in range(4)}
    files.update({f"test/dog/{i}.jpg": encode(textured(50 + i)) for i in range(2)})
    commit(repo, {**files, "pixvcs.toml": f"[classes]\n{passing}\n"})
    assert check(repo).ok
    commit(repo, {"pixvcs.toml": f"[classes]\n{failing_}\n"})
    result = check(repo)
    assert failing(result) == {rule}
    assert all(v["paths"] for v in violations(result, rule))


def test_a_listed_class_without_images_is_below_the_minimum(repo: Repo) -> None:
    commit(
        repo,
        {
            "cat/0.jpg": encode(textured(1)),
            "pixvcs.toml": "[classes]\nallowed = ['cat', 'bird']\nmin_per_class = 1\n",
        },
    )
    (v,) = violations(check(repo), "classes.min_per_class")
    assert "'bird' has 0" in str(v["message"]) and v["paths"] == ["bird/"]


# -- changes --------------------------------------------------------------------------
def test_change_rules(repo: Repo) -> None:
    commit(repo, {f"cat/{i}.jpg": encode(textured(i)) for i in range(10)}, "v1")
    repo.create_branch("base")
    repo.rm(["cat/0.jpg", "cat/1.jpg"])
    policy = "[changes]\nmax_added = 2\nmax_removed_fraction = 0.2\n"
    commit(repo, {"cat/new.jpg": encode(textured(77)), "pixvcs.toml": policy}, "v2")
    result = check(repo, "base..HEAD")
    assert result.ok and result.rule("changes.max_added") is not None
    assert check(repo).rule("changes.max_added") is None  # a version has no change
    repo.rm(["cat/2.jpg"])
    commit(repo, {f"dog/{i}.jpg": encode(textured(80 + i)) for i in range(3)}, "v3")
    result = check(repo, "base..HEAD")
    assert failing(result) == {"changes.max_added", "changes.max_removed_fraction"}
    (removed,) = violations(result, "changes.max_removed_fraction")
    assert removed["paths"] == ["cat/0.jpg", "cat/1.jpg", "cat/2.jpg"]
    assert "3 of 10 images removed (30.0%)" in str(removed["message"])


def test_a_range_starts_at_the_merge_base(repo: Repo) -> None:
    commit(repo, {f"cat/{i}.jpg": encode(textured(i)) for i in range(4)}, "v1")
    repo.create_branch("feature")
    commit(repo, {f"cat/main{i}.jpg": encode(textured(40 + i)) for i in range(3)}, "main moves")
    repo.checkout("feature")
    commit(repo, {"dog/0.jpg": encode(textured(60))}, "feature")
    result = check(repo, "main..feature")
    assert result.changes is not None
    assert result.changes["added"] == ["dog/0.jpg"] and result.changes["removed"] == []


def test_staged_checks_the_index_and_its_policy(repo: Repo) -> None:
    commit(repo, dataset(), "v1")
    put(repo, "test/dog/leak.jpg", encode(textured(2), quality=90))  # = train/cat/2.jpg
    repo.add(["."])
    result = check(repo, staged=True)
    assert result.mode == "staged" and result.head_commit is None
    assert failing(result) == {"splits.leakage"} and result.checked == 1
    put(repo, "pixvcs.toml", "[splits]\nfolders = []\n[duplicates]\nallow_exact = true\n")
    assert not check(repo, staged=True).ok  # not staged: not used
    repo.add(["pixvcs.toml"])
    assert check(repo, staged=True).ok
    with pytest.raises(UsageError):
        check(repo, "HEAD", staged=True)


def test_the_policy_comes_from_the_checked_version(repo: Repo) -> None:
    commit(repo, {**dataset(), "pixvcs.toml": "[images]\nmin_width = 10\n"}, "v1")
    put(repo, "pixvcs.toml", "[images]\nmin_width = 1000\n")  # work tree only
    assert check(repo).ok
    put(repo, "pixvcs.toml", "[images]\nmin_widht = 10\n")
    repo.add(["pixvcs.toml"])
    with pytest.raises(PolicyError, match="images.min_widht: unknown key"):
        check(repo, staged=True)
    assert check(repo, "HEAD").ok


def test_images_missing_from_the_catalog_are_decoded_and_recorded(repo: Repo) -> None:
    files = dataset(n=1)
    files["test/cat/copy.jpg"] = files["train/cat/0.jpg"]
    commit(repo, files)
    repo.catalog.clear()
    assert repo.catalog.count() == 0
    assert failing(check(repo)) == {"splits.leakage"}
    assert repo.catalog.count() == 4


def test_violations_are_capped_per_rule(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    import pixvcs.check

    monkeypatch.setattr(pixvcs.check, "MAX_VIOLATIONS_PER_RULE", 2)
    data = encode(textured(3))
    commit(repo, {f"cat/{i}.jpg": data for i in range(4)})  # 6 pairs of the same bytes
    r = check(repo).rule("duplicates.exact")
    assert r is not None and (r.violations, r.omitted) == (6, 4)
    assert MAX_VIOLATIONS_PER_RULE >= 1000


def test_parse_spec() -> None:
    assert parse_spec(None) == (None, "HEAD")
    assert parse_spec("v3") == (None, "v3")
    assert parse_spec("main..HEAD") == ("main", "HEAD")
    assert parse_spec("main..") == ("main", "HEAD")
    assert parse_spec("..x") == ("HEAD", "x")
    for bad in ("a...b", "a..b..c", ""):
        with pytest.raises(UsageError):
            parse_spec(bad)


# -- reports --------------------------------------------------------------------------
class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.srcs.append(dict(attrs).get("src") or "")
        for name, value in attrs:  # nothing from the data becomes markup or a URL elsewhere
            assert name in ("src", "alt", "class", "lang", "charset")
            assert not (value or "").startswith("javascript:")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture
def leaky(repo: Repo) -> CheckResult:
    files = dataset()
    commit(repo, files, "v1")
    repo.create_branch("base")
    repo.rm(["test/dog/0.jpg"])
    commit(
        repo,
        {
            "test/cat/<script>alert(1)</script>.jpg": files["train/cat/1.jpg"],
            "test/dog/near`|*.jpg": TRANSFORMS["brightness"](textured(100)),
            "train/bird/0.jpg": encode(textured(555)),
        },
        "v2",
    )
    return check(repo, "base..HEAD")


def test_json_report_schema(leaky: CheckResult) -> None:
    doc = json.loads(render(leaky, "json"))
    assert doc["schema"] == "pixvcs-check/1" and doc["ok"] is False and doc["mode"] == "range"
    assert set(doc) == {
        "schema", "ok", "mode", "head", "base", "policy", "counts", "classes", "splits",
        "changes", "rules", "violations",
    }  # fmt: skip
    assert doc["base"]["rev"] == "base" and len(doc["base"]["commit"]) == 40
    assert doc["counts"]["added"] == 3 and doc["counts"]["removed"] == 1
    assert doc["counts"]["violations"] == 2 and doc["counts"]["rules_failed"] == 1
    assert doc["classes"]["bird"] == {"before": 0, "after": 1}
    for r in doc["rules"]:
        assert set(r) == {"rule", "description", "ok", "checked", "violations", "omitted"}
    for v in doc["violations"]:
        assert v["rule"] == "splits.leakage" and len(v["paths"]) == 2 and len(v["oids"]) == 2
        assert isinstance(v["distance"], int) and v["kind"] in ("exact", "near")


def test_junit_report(leaky: CheckResult) -> None:
    root = ET.fromstring(render(leaky, "junit").encode())
    suite = root.find("testsuite")
    assert suite is not None
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == {r.rule for r in leaky.rules}
    assert suite.get("tests") == str(len(cases)) and suite.get("failures") == "1"
    failure = cases["splits.leakage"].find("failure")
    assert failure is not None and "2 violation(s)" in (failure.get("message") or "")
    assert "<script>alert(1)</script>" in (failure.text or "")  # escaped by XML, read back
    assert cases["images.decodable"].find("failure") is None


def test_html_report_is_self_contained_and_escaped(repo: Repo, leaky: CheckResult) -> None:
    page = render(leaky, "html", read_media=repo.media.read)
    assert "<script>" not in page and "&lt;script&gt;" in page
    parser = _Images()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags
    assert len(parser.srcs) >= 4 + 3 + 1  # two pairs, added and removed images
    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(__import__("base64").b64decode(src.split(",", 1)[1]))).load()
    assert "distance" in "".join(parser.text)
    assert "no preview" in render(leaky, "html")  # without media: placeholders, no <img>


def test_markdown_report(leaky: CheckResult) -> None:
    md = render(leaky, "markdown")
    assert md.startswith("## pixvcs check: ❌ failed")
    assert "| class | before | after | change |" in md and "| `bird` | 0 | 1 | +1 |" in md
    assert "| `splits.leakage` | ❌ |" in md
    assert "``test/dog/near`\\|*.jpg``" in md  # a backtick and a pipe stay inside the code span
    assert "exact duplicate, distance 0" in md


def test_text_report(leaky: CheckResult) -> None:
    out = render(leaky, "text")
    assert "FAIL  splits.leakage" in out and out.rstrip().endswith("1 rule(s)")


# -- the command ----------------------------------------------------------------------
def test_cli_exit_codes_and_reports(repo: Repo, tmp_path: Path) -> None:
    files = dataset(n=2)
    commit(repo, files, "v1")

    def run(*args: str) -> tuple[int, str]:
        r = CliRunner().invoke(main, ["-C", repo.root, "check", *args], catch_exceptions=False)
        return r.exit_code, r.output

    code, out = run()
    assert code == 0 and "policy holds" in out
    commit(repo, {"test/dog/leak.jpg": files["train/dog/1.jpg"]}, "v2")
    code, out = run("HEAD~1..HEAD")
    assert code == 1 and "train/dog/1.jpg and test/dog/leak.jpg" in out
    code, out = run("--json")
    assert code == 1 and json.loads(out)["ok"] is False
    report = tmp_path / "out" / "junit.xml"
    code, out = run("--format", "junit", "--output", str(report))
    assert code == 1 and "junit report written" in out and "1 violation(s)" in out
    assert ET.parse(report).getroot().tag == "testsuites"
    code, out = run("--staged", "HEAD")
    assert code == 2
    code, out = run("a...b")
    assert code == 2
    commit(repo, {"pixvcs.toml": "[duplicates]\nnear_distance = 'six'\n"}, "v3")
    r = CliRunner().invoke(main, ["-C", repo.root, "check"])
    assert r.exit_code == 2
    assert "duplicates.near_distance: must be an integer" in r.output


def _schema_validator() -> object:
    import jsonschema

    schema = json.loads(
        (Path(__file__).parent.parent / "docs" / "check-report.schema.json").read_text()
    )
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_json_reports_validate_against_the_published_schema(repo: Repo, leaky: CheckResult) -> None:
    """docs/check-report.schema.json is the contract: a range with violations, a
    whole version, the index, and a policy that fails many rules all validate;
    and the schema is strict enough to reject a report with a wrong field."""
    validator = _schema_validator()
    reports = [leaky, check(repo, "HEAD")]
    put(repo, "pixvcs.toml", (
        "[images]\nmin_width = 4000\nmax_bytes = 10\n[classes]\nmin_per_class = 99\n"
        "max_imbalance = 1.0\n[changes]\nmax_added = 0\n[provenance]\nrequired = true\n"
    ))  # fmt: skip
    put(repo, "cat/extra.jpg", encode(textured(77)))
    repo.add(["."])
    reports.append(check(repo, staged=True))
    assert len(failing(reports[-1])) >= 4
    for result in reports:
        doc = json.loads(render(result, "json"))
        errors = list(validator.iter_errors(doc))  # type: ignore[attr-defined]
        assert not errors, [e.message for e in errors]
    doc = json.loads(render(leaky, "json"))
    doc["violations"][0]["distance"] = "two"
    assert list(validator.iter_errors(doc))  # type: ignore[attr-defined]
