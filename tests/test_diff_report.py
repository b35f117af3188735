"""pixvcs diff reports: Markdown content, a self-contained and escaped HTML page
(every <img> a decodable data: image), --format / --json / --stat / --output."""

from __future__ import annotations

import base64
import io
import json
import os
from html.parser import HTMLParser

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pixvcs import Repo
from pixvcs.cli import main
from pixvcs.diff import DatasetDiff
from pixvcs.diffreport import LIST_LIMIT, render

AUTHOR = "Test <test@example.org>"
HOSTILE = "cat/<script>alert(1)</script> `|*_.jpg"


def image(seed: int, size: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    im = Image.fromarray(small, "RGB").resize((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def commit(repo: Repo, files: dict[str, bytes], message: str) -> str:
    for rel, data in files.items():
        full = os.path.join(repo.root, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
    repo.add(["."])
    return repo.commit(message, author=AUTHOR)


@pytest.fixture
def changed(repo: Repo) -> DatasetDiff:
    commit(
        repo,
        {
            "cat/0.jpg": image(0),
            "cat/1.jpg": image(1),
            "dog/0.jpg": image(2),
            "dog/1.jpg": image(3),
        },
        "v1",
    )
    repo.create_branch("base")
    repo.rm(["dog/0.jpg", "cat/1.jpg"])
    commit(
        repo,
        {
            HOSTILE: image(10),
            "bird/0.jpg": image(11),
            "dog/9.jpg": image(1),  # cat/1.jpg relabelled as a dog
            "cat/0.jpg": image(0, size=48),  # modified: resized
        },
        "v2",
    )
    return repo.diff("base", "HEAD")


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.srcs.append(dict(attrs).get("src") or "")
        for name, value in attrs:  # nothing from the data becomes markup or a URL
            assert name in ("src", "alt", "class", "lang", "charset")
            assert not (value or "").startswith("javascript:")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_diff_sees_the_change(changed: DatasetDiff) -> None:
    assert changed.added == ["bird/0.jpg", HOSTILE]
    assert changed.removed == ["dog/0.jpg"]
    assert changed.modified == ["cat/0.jpg"]
    assert changed.renamed == [{"from": "cat/1.jpg", "to": "dog/9.jpg"}]
    assert set(changed.oids) >= {HOSTILE, "bird/0.jpg", "dog/0.jpg", "cat/1.jpg", "dog/9.jpg"}
    assert changed.oids["cat/1.jpg"] == changed.oids["dog/9.jpg"]


def test_markdown(changed: DatasetDiff) -> None:
    md = render(changed, "markdown")
    assert md.startswith("## pixvcs diff: base → HEAD\n")
    assert "| added | removed | modified | renamed |" in md and "| 2 | 1 | 1 | 1 |" in md
    assert "| class | before | after | change |" in md
    assert "| `bird` | 0 | 1 | +1 |" in md
    assert "| `cat` | 2 | 2 | +0 |" in md and "| `dog` | 2 | 2 | +0 |" in md
    assert "### Added (2)" in md and "### Removed (1)" in md
    assert "- `cat/1.jpg` → `dog/9.jpg`" in md
    assert "64×64 → 48×48" in md  # the catalog's view of the modified image
    # the hostile name is one code span (fence longer than its backtick, | escaped)
    assert "``cat/<script>alert(1)</script> `\\|*_.jpg``" in md
    stat = render(changed, "markdown", stat_only=True)
    assert "### Classes" in stat and "### Added" not in stat


def test_markdown_lists_are_bounded() -> None:
    d = DatasetDiff("a", "b", added=[f"c/{i}.jpg" for i in range(LIST_LIMIT + 7)])
    md = render(d, "markdown")
    assert md.count("\n- `c/") == LIST_LIMIT and "- … and 7 more" in md


def test_html_self_contained_escaped_thumbnails(repo: Repo, changed: DatasetDiff) -> None:
    page = render(changed, "html", read_media=repo.media.read)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    parser = _Page()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags
    assert len(parser.srcs) == 2 + 1 + 1  # added, removed, the renamed pair
    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            im.load()
            assert max(im.size) <= 128
    text = "".join(parser.text)
    assert HOSTILE in text and "dog/9.jpg" in text and "cat/0.jpg" in text
    assert "Classes" in text and "bird" in text
    assert "no preview" in render(changed, "html")  # without media: placeholders, no <img>


def test_cli_formats_and_output(repo: Repo, changed: DatasetDiff) -> None:
    runner = CliRunner()
    base = ["-C", repo.root, "diff", "base", "HEAD"]
    as_json = runner.invoke(main, [*base, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == changed.to_json()
    fmt_json = runner.invoke(main, [*base, "--format", "json"])
    assert fmt_json.output == as_json.output
    text = runner.invoke(main, base)
    assert text.output.startswith("2 added, 1 removed, 1 modified, 1 renamed\n")
    assert "Renamed / relabelled (1):\n  cat/1.jpg -> dog/9.jpg" in text.output
    stat = runner.invoke(main, [*base, "--stat"])
    assert "Added" not in stat.output and "bird" in stat.output
    md = runner.invoke(main, [*base, "--format", "markdown"])
    assert md.exit_code == 0 and md.output == render(changed, "markdown")
    out = os.path.join(repo.root, "..", "reports", "diff.html")
    written = runner.invoke(main, [*base, "--format", "html", "-o", out])
    assert written.exit_code == 0, written.output
    assert (
        written.output
        == "2 added, 1 removed, 1 modified, 1 renamed; html report written to " + out + "\n"
    )
    with open(out, encoding="utf-8") as f:
        assert f.read() == render(changed, "html", read_media=repo.media.read)
    both = runner.invoke(main, [*base, "--json", "--format", "html"])
    assert both.exit_code == 2
