"""The HTML reports, rendered by a real browser: Debian's Chromium, headless,
driven by Playwright (no browser of Playwright's own: ``executable_path``).

A person opens the one file the CLI wrote, from disk. What the browser itself
sees is asserted: every thumbnail finished loading as a real image, the
per-class table holds the numbers of the JSON report, every duplicate or
leakage pair shows both images side by side with its distance, and the page
asks for nothing over the network nor from the disk (no request but the page
itself, no external resource in the DOM or the style sheets, no resource-timing
entry). A path holding markup is part of the data, so an escaping bug would
show up as a request.

Chromium is installed by ``make system-deps`` and Playwright by the test extra;
when either is missing the tests fail, saying which, rather than skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pixvcs import Repo
from tests.test_check import TRANSFORMS, commit, dataset, encode, textured

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("PIXVCS_CHROMIUM", "/usr/bin/chromium")
#: A closed network, running as root: no sandbox, no GPU, nothing fetched in the background.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: A file name that is markup: unescaped, the browser would request leak.png.
HOSTILE = "test/cat/<img src=leak.png>.jpg"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: run `make system-deps` "
            "(Debian package chromium), or set PIXVCS_CHROMIUM to a Chromium binary"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python package playwright is missing: pip install -e '.[test]'")
    with sync_playwright() as p:
        # launch() gives the browser a fresh temporary profile (--user-data-dir) of its own
        b = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield b
        finally:
            b.close()


@dataclass
class Opened:
    page: Page
    url: str
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def js(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(30_000)
    try:
        yield ctx
    finally:
        ctx.close()


def open_report(context: BrowserContext, path: Path) -> Opened:
    page = context.new_page()
    opened = Opened(page, path.resolve().as_uri())
    context.on("request", lambda r: opened.requests.append(r.url))
    context.on("requestfailed", lambda r: opened.failed.append(r.url))
    page.on("console", lambda m: opened.console.append(f"{m.type}: {m.text}"))
    page.goto(opened.url, wait_until="load")
    return opened


# -- the dataset --------------------------------------------------------------------
@dataclass
class Reports:
    repo: Path
    check_html: Path
    check_json: dict[str, Any]
    diff_html: Path
    diff_json: dict[str, Any]


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pixvcs.cli", "-C", str(root), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Reports:
    """v1: 12 images in train/ and test/; v2 removes one, adds an exact copy across
    splits (under a file name that is markup), a near copy across splits, a new
    class and a truncated image; the reports are written by the CLI."""
    root = tmp_path_factory.mktemp("reports")
    with Repo.init(str(root / "ds")) as repo:
        files = dataset()
        commit(repo, files, "v1")
        repo.create_branch("base")
        repo.rm(["test/dog/0.jpg"])
        commit(
            repo,
            {
                HOSTILE: files["train/cat/1.jpg"],
                "test/dog/near.jpg": TRANSFORMS["brightness"](textured(100)),
                "train/bird/0.jpg": encode(textured(555)),
                "train/bird/broken.jpg": encode(textured(556))[:300],
            },
            "v2",
        )
    ds = root / "ds"
    out = Reports(ds, root / "check.html", {}, root / "diff.html", {})
    for args, code in (
        (["check", "base..HEAD", "--format", "html", "-o", str(out.check_html)], 1),
        (["diff", "base", "HEAD", "--format", "html", "-o", str(out.diff_html)], 0),
    ):
        proc = cli(ds, *args)
        assert proc.returncode == code, proc.stderr
    check_json = cli(ds, "check", "base..HEAD", "--json")
    out.check_json = json.loads(check_json.stdout)
    out.diff_json = json.loads(cli(ds, "diff", "base", "HEAD", "--json").stdout)
    return out


# -- what the browser sees ----------------------------------------------------------
_IMAGES = """() => Array.from(document.images).map(i => {
  const r = i.getBoundingClientRect();
  let opaque = 0;
  if (i.complete && i.naturalWidth > 0) {
    // the pixels as decoded: a thumbnail is an opaque RGB PNG, so every pixel of a
    // completely decoded one is opaque (a truncated image leaves transparent rows)
    const c = document.createElement('canvas');
    c.width = i.naturalWidth;
    c.height = i.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(i, 0, 0);
    const px = g.getImageData(0, 0, c.width, c.height).data;
    for (let k = 3; k < px.length; k += 4) if (px[k] === 255) opaque++;
    opaque /= c.width * c.height;
  }
  return {scheme: i.currentSrc.split(',')[0], complete: i.complete, w: i.naturalWidth,
          h: i.naturalHeight, opaque: opaque, shownW: r.width, shownH: r.height};
})"""

_TABLE = """sel => Array.from(document.querySelectorAll(sel + ' tr')).slice(1)
  .map(tr => Array.from(tr.cells).map(td => td.innerText.trim()))"""

_PAIRS = """() => Array.from(document.querySelectorAll('.pair')).map(p => ({
  captions: Array.from(p.querySelectorAll('figcaption')).map(c => c.textContent),
  middle: p.querySelector('.dist') ? p.querySelector('.dist').innerText : '',
  images: Array.from(p.querySelectorAll('img')).map(i => {
    const r = i.getBoundingClientRect();
    return {complete: i.complete, w: i.naturalWidth, left: r.left, right: r.right,
            top: r.top, bottom: r.bottom};
  }),
}))"""

_FIGURES = """sel => Array.from(document.querySelectorAll(sel + ' figure')).map(f => ({
  caption: f.querySelector('figcaption').textContent,
  loaded: !!f.querySelector('img') && f.querySelector('img').complete
          && f.querySelector('img').naturalWidth > 0,
  placeholder: !f.querySelector('img') && f.innerText.includes('no preview'),
}))"""

#: Everything in the page that could load something: elements, URL attributes, CSS.
_EXTERNAL = """() => {
  const bad = [];
  const tags = 'script,link,iframe,frame,object,embed,base,video,audio,source,track,'
             + 'meta[http-equiv],form,svg image,use';
  for (const el of document.querySelectorAll(tags)) bad.push('<' + el.tagName + '>');
  const attrs = ['src', 'href', 'srcset', 'poster', 'action', 'data', 'background',
                 'formaction', 'xlink:href', 'ping', 'style'];
  for (const el of document.querySelectorAll('*')) {
    for (const a of attrs) {
      const v = el.getAttribute(a);
      if (v !== null && !(a === 'src' && el.tagName === 'IMG' && v.startsWith('data:image/')))
        bad.push(el.tagName + ' ' + a + '=' + v.slice(0, 60));
    }
  }
  for (const sheet of document.styleSheets) {
    if (sheet.href) bad.push('stylesheet ' + sheet.href);
    for (const rule of sheet.cssRules)
      if (/url\\(|@import|@font-face/i.test(rule.cssText)) bad.push(rule.cssText.slice(0, 80));
  }
  return bad;
}"""


def assert_self_contained(opened: Opened) -> None:
    assert opened.requests == [opened.url], "the page requested more than itself"
    assert opened.failed == []
    assert opened.js(_EXTERNAL) == []
    entries = opened.js("() => performance.getEntriesByType('resource').map(e => e.name)")
    assert [e for e in entries if not e.startswith("data:")] == []
    assert opened.console == []


def assert_images_loaded(opened: Opened, expected: int) -> None:
    images = opened.js(_IMAGES)
    assert len(images) == expected
    for im in images:
        assert im["scheme"] == "data:image/png;base64"
        assert im["complete"] and im["w"] > 0 and im["h"] > 0, im  # a real image
        assert im["opaque"] == 1, im  # decoded completely: every pixel painted
        assert im["shownW"] > 0 and im["shownH"] > 0, im  # and laid out, visible


def test_check_report_in_a_browser(context: BrowserContext, reports: Reports) -> None:
    j = reports.check_json
    opened = open_report(context, reports.check_html)
    assert_self_contained(opened)
    assert opened.page.title() == "pixvcs check: failed"
    # 2 pairs (4 images), added: 3 of 4 decodable (the truncated one has no preview), removed: 1
    assert_images_loaded(opened, 4 + 3 + 1)

    rows = opened.js(_TABLE, "table.classes")
    assert rows == [
        [cls, str(n["before"]), str(n["after"]), f"{n['after'] - n['before']:+d}"]
        for cls, n in j["classes"].items()
    ]
    assert rows == [["bird", "0", "2", "+2"], ["cat", "6", "7", "+1"], ["dog", "6", "6", "+0"]]
    rules = {r[0]: r[1:4] for r in opened.js(_TABLE, "table.rules")}
    assert rules["splits.leakage"] == ["FAIL", "15", "2"]  # images in split folders
    assert rules["images.decodable"] == ["FAIL", "4", "1"]

    pairs = opened.js(_PAIRS)
    expected = [v for v in j["violations"] if "distance" in v]
    assert [p["captions"] for p in pairs] == [v["paths"] for v in expected]
    assert {tuple(v["paths"]) for v in expected} == {
        ("train/cat/1.jpg", HOSTILE),
        ("train/dog/0.jpg", "test/dog/near.jpg"),
    }
    for pair, v in zip(pairs, expected, strict=True):
        assert f"distance {v['distance']}" in pair["middle"] and v["rule"] in pair["middle"]
        a, b = pair["images"]
        assert a["complete"] and b["complete"] and a["w"] > 0 and b["w"] > 0
        assert a["right"] <= b["left"], "the two images of a pair are side by side"
        assert a["top"] < b["bottom"] and b["top"] < a["bottom"], "... on one line"

    added = opened.js(_FIGURES, ".grid.added")
    assert [f["caption"] for f in added] == [p for p in j["changes"]["added"] if p.endswith(".jpg")]
    assert {f["caption"]: (f["loaded"], f["placeholder"]) for f in added} == {
        HOSTILE: (True, False),
        "test/dog/near.jpg": (True, False),
        "train/bird/0.jpg": (True, False),
        "train/bird/broken.jpg": (False, True),
    }
    removed = opened.js(_FIGURES, ".grid.removed")
    assert removed == [{"caption": "test/dog/0.jpg", "loaded": True, "placeholder": False}]
    text = opened.js("() => document.body.innerText")
    assert "train/bird/broken.jpg: does not decode" in text


def test_diff_report_in_a_browser(context: BrowserContext, reports: Reports) -> None:
    j = reports.diff_json
    opened = open_report(context, reports.diff_html)
    assert_self_contained(opened)
    assert opened.page.title() == "pixvcs diff: base → HEAD"
    assert_images_loaded(opened, 3 + 1)
    assert opened.js(_TABLE, "table.counts") == [["4", "1", "0", "0"]]
    rows = opened.js(_TABLE, "table.classes")
    assert rows == [
        [cls, str(n["before"]), str(n["after"]), f"{n['after'] - n['before']:+d}"]
        for cls, n in j["classes"].items()
    ]
    assert rows == [["test", "6", "7", "+1"], ["train", "6", "8", "+2"]]
    added = opened.js(_FIGURES, ".grid.added")
    assert [f["caption"] for f in added] == sorted(j["added"])
    assert [f["loaded"] for f in added] == [f["caption"] != "train/bird/broken.jpg" for f in added]
    assert opened.js(_FIGURES, ".grid.removed") == [
        {"caption": "test/dog/0.jpg", "loaded": True, "placeholder": False}
    ]


def test_a_screenshot_of_the_report_is_not_blank(
    context: BrowserContext, reports: Reports, tmp_path: Path
) -> None:
    """What a person sees: the page paints its thumbnails (many distinct colours),
    not an empty or broken page."""
    from PIL import Image

    opened = open_report(context, reports.check_html)
    shot = tmp_path / "check.png"
    opened.page.screenshot(path=str(shot), full_page=True)
    with Image.open(shot) as im:
        assert im.width == 1280 and im.height > 900  # the whole report, taller than a screen
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 1000
