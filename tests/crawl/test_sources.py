from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pixvcs.crawl.fetch import Fetcher
from pixvcs.crawl.options import CrawlOptions
from pixvcs.crawl.pages import best_srcset, discover, parse_page
from pixvcs.crawl.providers import TemplateProvider
from pixvcs.crawl.sources import (
    Item,
    parse_csv,
    parse_keyword_config,
    parse_lines,
    read_url_file,
)
from pixvcs.errors import CrawlInputError, UsageError
from tests.crawl.site import Site, html

FAST = CrawlOptions(per_host_rate=0, respect_robots=False)


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


# -- URL lists -----------------------------------------------------------------------
def test_text_list(tmp_path: Path) -> None:
    path = write(
        tmp_path, "u.txt", "# comment\nhttps://a.example/1.jpg\n\n  http://b.example/x  \n"
    )
    items = read_url_file(path, label="cat")
    assert [i.url for i in items] == ["https://a.example/1.jpg", "http://b.example/x"]
    assert all(i.label == "cat" for i in items)


def test_csv_list_keeps_extra_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "u.csv",
        "url,label,page,licence\nhttps://a.example/1.jpg,dog,https://a.example/,cc-by\n"
        "https://a.example/2.jpg,,,cc0\n",
    )
    items = read_url_file(path, label="fallback")
    assert items[0] == Item(
        "https://a.example/1.jpg", "dog", "https://a.example/", extra={"licence": "cc-by"}
    )
    assert items[1].label == "fallback" and items[1].page is None
    assert items[1].extra == {"licence": "cc0"}


def test_jsonl_list(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "u.jsonl",
        '{"url": "https://a.example/1.png", "label": "cat", "score": 0.9}\n\n'
        '{"url": "https://a.example/2.png"}\n',
    )
    items = read_url_file(path)
    assert items[0].label == "cat" and items[0].extra == {"score": 0.9}
    assert items[1].label is None


@pytest.mark.parametrize(
    ("name", "text", "line", "why"),
    [
        ("u.txt", "https://ok.example/a\nftp://x.example/a\n", 2, "not an http(s) URL"),
        ("u.txt", "https://ok.example/a b\n", 1, "whitespace"),
        ("u.txt", "https://ok.example:99999/\n", 1, "malformed URL"),
        ("u.csv", "link,label\nhttps://a.example/,x\n", 1, "no 'url' column"),
        ("u.csv", "url,label\nhttps://a.example/,x,extra\n", 2, "3 fields"),
        ("u.csv", "url,label\nhttps://a.example/,x\n,y\n", 3, "missing or empty 'url'"),
        ("u.csv", "url,label\nhttps://a.example/,../up\n", 2, "invalid label"),
        ("u.jsonl", '{"url": "https://a.example/"}\n{"url": 3}\n', 2, "'url'"),
        ("u.jsonl", '{"url": "https://a.example/"}\n[1]\n', 2, "JSON object"),
        ("u.jsonl", '{"url": "https://a.example/"\n', 1, "malformed JSON"),
        ("u.jsonl", '{"url": "https://a.example/", "label": 5}\n', 1, "'label'"),
    ],
)
def test_malformed_lists_name_the_line(
    tmp_path: Path, name: str, text: str, line: int, why: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(CrawlInputError) as e:
        read_url_file(path)
    assert e.value.line == line and why in e.value.why and e.value.source == path
    assert f"{path}:{line}" in str(e.value)
    assert isinstance(e.value, UsageError)


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "u.txt"
    p.write_bytes(b"https://a.example/\nhttps://b.example/\xff\n")
    with pytest.raises(CrawlInputError) as e:
        read_url_file(str(p))
    assert e.value.line == 2


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)))
def test_line_parser_never_crashes(lines: list[str]) -> None:
    try:
        items = parse_lines("\n".join(lines), "prop")
    except CrawlInputError:
        return
    assert all(i.url.startswith(("http://", "https://")) for i in items)


@given(st.text(max_size=200))
def test_csv_parser_never_crashes(text: str) -> None:
    try:
        parse_csv(text, "prop")
    except CrawlInputError:
        pass


# -- pages ---------------------------------------------------------------------------
PAGE = """<!doctype html><html><head>
<meta property="og:image" content="/og.jpg">
<meta name="twitter:image" content="https://cdn.example/tw.png">
</head><body>
<img src="a.png" srcset="a-small.png 320w, a-large.png 1280w, a-mid.png 640w">
<picture><source srcset="pic.webp 1x, pic@2x.webp 2x" type="image/webp"><img src="pic.jpg"></picture>
<img src="data:image/png;base64,AAAA">
<a href="big.JPG#frag">full size</a>
<a href="/other/page.html">next</a>
<a href="https://elsewhere.example/page">away</a>
<a href="a.png">same image again</a>
<img src="a.png">
<p>unclosed <b>markup
</body>"""


def test_parse_page_finds_every_kind_of_image() -> None:
    found = parse_page(PAGE, "https://site.example/gallery/index.html")
    base = "https://site.example/gallery/"
    assert found.images == [
        "https://site.example/og.jpg",
        "https://cdn.example/tw.png",
        base + "a.png",
        base + "a-large.png",
        base + "pic@2x.webp",
        base + "pic.jpg",
        base + "big.JPG",
    ]
    assert found.links == [
        "https://site.example/other/page.html",
        "https://elsewhere.example/page",
    ]


def test_base_href_and_srcset() -> None:
    found = parse_page(
        '<base href="https://img.example/x/"><img src="y.png">', "https://a.example/"
    )
    assert found.images == ["https://img.example/x/y.png"]
    assert best_srcset("a.png, b.png 2x") == "b.png"
    assert best_srcset("a.png 100w, b.png bogusw") == "a.png"
    assert best_srcset(" , ") is None


def test_discover_follows_same_site_links_to_depth() -> None:
    site = Site(
        {
            "/": html('<img src="/0.png"><a href="/p1">1</a><a href="http://other.example/">x</a>'),
            "/p1": html('<img src="/1.png"><a href="/p2">2</a><a href="/">home</a>'),
            "/p2": html('<img src="/2.png">'),
        }
    )
    with Fetcher(FAST, transport=site.transport()) as f:
        items, failures = discover(f, "http://site.example/", depth=1, label="L")
    assert [i.url for i in items] == ["http://site.example/0.png", "http://site.example/1.png"]
    assert items[1].page == "http://site.example/p1" and items[1].label == "L"
    assert failures == []
    assert "/p2" not in site.log and site.log.count("/") == 1
    with Fetcher(FAST, transport=site.transport()) as f:
        items, failures = discover(f, "http://site.example/missing", depth=3)
    assert items == [] and failures[0].reason == "http-404"


def test_template_provider_reads_the_result_page() -> None:
    site = Site(
        {"/search?q=red+rose": html('<img src="/r1.jpg"><img src="/r2.jpg"><img src="/r3.jpg">')}
    )
    provider = TemplateProvider("http://search.example/search?q={keyword}")
    with Fetcher(FAST, transport=site.transport()) as f:
        items, _ = provider.search("red rose", 2, f, label="rose")
    assert [i.url for i in items] == [
        "http://search.example/r1.jpg",
        "http://search.example/r2.jpg",
    ]
    assert {(i.keyword, i.provider, i.label) for i in items} == {("red rose", "search-url", "rose")}
    with pytest.raises(CrawlInputError):
        TemplateProvider("http://search.example/search")


# -- keyword configs -----------------------------------------------------------------
def test_keyword_config() -> None:
    cfg = parse_keyword_config(
        '{"dataset_name": "flowers", "categories": {"rose": ["red rose", "rose"], '
        '"tulip": ["tulip"]}, "options": {"max_images": 5}}',
        "c.json",
    )
    assert cfg.dataset_name == "flowers" and cfg.max_images == 5
    assert cfg.categories == {"rose": ["red rose", "rose"], "tulip": ["tulip"]}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"dataset_name": "x", "categories": {"a": ["b"]}, "extra": 1}', "unknown key(s): extra"),
        (
            '{"dataset_name": "x", "categories": {"a": ["b"]}, "options": {"max_imgs": 1}}',
            "max_imgs",
        ),
        (
            '{"dataset_name": "x", "categories": {"a": ["b"]}, "options": {"max_images": "5"}}',
            "max_images",
        ),
        (
            '{"dataset_name": "x", "categories": {"a": ["b"]}, "options": {"max_images": true}}',
            "max_images",
        ),
        ('{"dataset_name": 3, "categories": {"a": ["b"]}}', "dataset_name"),
        ('{"dataset_name": "x", "categories": {"a": "b"}}', "categories.a"),
        ('{"dataset_name": "x", "categories": {"a": [1]}}', "categories.a"),
        ('{"dataset_name": "x", "categories": {}}', "categories"),
        ('{"dataset_name": "x", "categories": {"..": ["b"]}}', "invalid label"),
        ("[1]", "JSON object"),
        ('{"dataset_name": "x",\n "categories": }', "malformed JSON"),
    ],
)
def test_keyword_config_is_strict(text: str, why: str) -> None:
    with pytest.raises(CrawlInputError) as e:
        parse_keyword_config(text, "c.json")
    assert why in str(e.value)


def test_options_are_strict() -> None:
    with pytest.raises(CrawlInputError, match="unknown option"):
        CrawlOptions.from_json({"workers": 2, "speed": 3})
    with pytest.raises(CrawlInputError, match="workers"):
        CrawlOptions.from_json({"workers": "2"})
    with pytest.raises(CrawlInputError, match="formats"):
        CrawlOptions(formats=("JPEG", "SVG"))
    opts = CrawlOptions(min_width=10, formats=("PNG",))
    assert CrawlOptions.from_json(opts.to_json()) == opts
