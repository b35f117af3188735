from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from pixvcs import Repo
from pixvcs.cli import main
from pixvcs.crawl import CrawlOptions, CrawlRequest, resume, start, status
from pixvcs.crawl.chunk import STORED
from pixvcs.crawl.job import JobStore
from pixvcs.errors import CrawlInputError, UsageError
from tests.crawl.site import Resp, Site, always, html, image, pattern_image, resized_copy
from tests.imagegen import snapshot

AUTHOR = "Crawl Test <crawl@example.org>"
OPTS = CrawlOptions(per_host_rate=0, workers=3, chunk_size=2, retries=1, backoff=0.0)

BASE_IMG = pattern_image(10)
A = pattern_image(1)
B = pattern_image(2, fmt="JPEG")
C = pattern_image(3)


def oid(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_site() -> Site:
    return Site(
        {
            "/a.png": image(A, ETag='"a1"', **{"Last-Modified": "Mon, 02 Jan 2023 00:00:00 GMT"}),
            "/b.jpg": image(B, "image/jpeg"),
            "/c.png": image(C),
            "/a-copy.png": image(A),
            "/a-small.jpg": image(resized_copy(A, (96, 96)), "image/jpeg"),
            "/base.png": image(BASE_IMG),
            "/base-big.png": image(resized_copy(BASE_IMG, (256, 256), "PNG")),
            "/fake.jpg": always(
                Resp(200, b"<html>" + b"x" * 100 + b"</html>", {"content-type": "image/jpeg"})
            ),
            "/tiny.png": image(pattern_image(4, (16, 16))),
            "/flaky.png": always(Resp(503)),
        }
    )


URLS = """url,label,licence
http://h.example/a.png,cat,cc-by
http://h.example/b.jpg,dog,cc0
http://h.example/a-copy.png,dog,cc0
http://h.example/a-small.jpg,cat,
http://h.example/base.png,cat,
http://h.example/base-big.png,,
http://h.example/fake.jpg,cat,
http://h.example/tiny.png,cat,
http://h.example/missing.png,cat,
http://h.example/flaky.png,cat,
http://h.example/c.png,,
http://h.example/a.png,dog,
"""


@pytest.fixture
def base_repo(tmp_path: Path) -> Repo:
    r = Repo.init(str(tmp_path / "ds"))
    os.makedirs(tmp_path / "ds" / "cat")
    (tmp_path / "ds" / "cat" / "base.png").write_bytes(BASE_IMG)
    r.add(["."])
    r.commit("v1", author=AUTHOR)
    return r


def urls_file(tmp_path: Path, text: str = URLS) -> str:
    p = tmp_path / ("urls.csv" if text.startswith("url,") else "urls.txt")
    p.write_text(text)
    return str(p)


def test_crawl_stages_one_reviewable_commit(base_repo: Repo, tmp_path: Path) -> None:
    repo = base_repo
    main_head = repo.head_commit()
    before = snapshot(repo.root)
    site = make_site()
    state = start(
        repo,
        CrawlRequest(urls_file=urls_file(tmp_path), label="misc"),
        OPTS,
        author=AUTHOR,
        transport=site.transport(),
        sleep=lambda s: None,
    )
    assert state.status == "done" and state.branch == f"crawl/{state.job}"
    s = state.summary
    assert (s["added"], s["duplicates"], s["near_duplicates"], s["invalid"], s["failed"]) == (
        3,
        2,
        2,
        2,
        2,
    )
    assert s["reasons"] == {
        "failed": {"http-404": 1, "http-503": 1},
        "invalid": {"not-an-image": 1, "too-small": 1},
        "duplicates": {"exact-base": 1, "exact-crawl": 1},
        "near_duplicates": {"near-base": 1, "near-crawl": 1},
        "skipped": {"same-url": 1},
    }
    assert s["fetched"] == 9 and s["robots"] == "respected"

    # the work tree, the index and main are untouched
    assert snapshot(repo.root) == before and repo.head_commit() == main_head
    assert repo.status().clean and repo.current_branch() == "main"

    info = repo.commit_info(state.commit or "")
    assert info.parents == [main_head]
    assert info.message.startswith(f"crawl {state.job}: 3 image(s) added\n")
    assert "failed: 2 (http-404: 1, http-503: 1)" in info.message
    assert "near-duplicates: 2 (near-base: 1, near-crawl: 1)" in info.message
    assert "robots.txt: respected" in info.message

    files = {e.path: e for e in repo.ls(state.branch)}
    expected = {
        f"cat/{oid(A)[:16]}.png": A,
        f"dog/{oid(B)[:16]}.jpg": B,
        f"misc/{oid(C)[:16]}.png": C,
    }
    for path, data in expected.items():
        assert files[path].oid == oid(data) and files[path].kind == "media"
        assert files[path].width == 128  # the catalog learned them
    prov_path = f"provenance/{state.job}.jsonl"
    assert set(files) == {".gitattributes", "cat/base.png", prov_path, *expected}

    from pixvcs import trees

    records = [
        json.loads(x) for x in trees.blob_bytes(repo.store, files[prov_path].blob).splitlines()
    ]
    assert [r["path"] for r in records] == sorted(expected)
    a = records[0]
    assert a["url"] == "http://h.example/a.png" and a["label"] == "cat" and a["status"] == 200
    assert a["etag"] == '"a1"' and a["last_modified"].startswith("Mon")
    assert a["content_type"] == "image/png" and a["bytes"] == len(A) and a["oid"] == oid(A)
    assert a["extra"] == {"licence": "cc-by"} and a["job"] == state.job and a["fetched_at"]
    assert a["page"] is None and a["keyword"] is None
    assert {d["url"] for d in a["duplicates"]} == {
        "http://h.example/a-copy.png",
        "http://h.example/a-small.jpg",
    }

    # review and merge
    d = repo.diff("main", state.branch)
    assert sorted(d.added) == sorted([prov_path, *expected]) and d.removed == []
    result = repo.merge(state.branch, author=AUTHOR)
    assert result.kind == "fast-forward"
    assert (Path(repo.root) / f"dog/{oid(B)[:16]}.jpg").read_bytes() == B
    assert repo.fsck().ok

    # status
    [again] = status(repo, state.job)
    assert again.overview()["added"] == 3 and again.commit == state.commit
    assert [st.job for st in status(repo)] == [state.job]


def test_cli_diff_shows_the_additions(base_repo: Repo, tmp_path: Path) -> None:
    site = Site({"/c.png": image(C)})
    state = start(
        base_repo,
        CrawlRequest(urls_file=urls_file(tmp_path, "http://h.example/c.png\n"), label="bird"),
        OPTS,
        transport=site.transport(),
    )
    out = CliRunner().invoke(main, ["-C", base_repo.root, "diff", "main", state.branch, "--json"])
    assert out.exit_code == 0, out.output
    assert f"bird/{oid(C)[:16]}.png" in json.loads(out.output)["added"]
    out = CliRunner().invoke(main, ["-C", base_repo.root, "crawl", "status", state.job, "--json"])
    data = json.loads(out.output)
    assert data["job"] == state.job and data["added"] == 1 and data["status"] == "done"
    out = CliRunner().invoke(main, ["-C", base_repo.root, "crawl", "status"])
    assert state.job in out.output and "done" in out.output


def test_resume_fetches_nothing_already_stored(base_repo: Repo, tmp_path: Path) -> None:
    images = {f"/{i}.png": pattern_image(100 + i) for i in range(8)}
    site = Site({p: image(d) for p, d in images.items()})
    site["/gone.png"] = always(Resp(404))
    listing = "".join(f"http://h.example{p}\n" for p in [*images, "/gone.png"])
    transport = site.transport()
    served = {"n": 0}

    def dies_midway(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/robots.txt":
            served["n"] += 1
            if served["n"] == 5:
                raise RuntimeError("power cut")
        return transport.handle_request(request)

    opts = OPTS.replace(workers=1)
    with pytest.raises(RuntimeError, match="power cut"):
        start(
            base_repo,
            CrawlRequest(urls_file=urls_file(tmp_path, listing), label="x"),
            opts,
            transport=httpx.MockTransport(dies_midway),
        )
    [job] = JobStore(base_repo.state_dir, base_repo.tmp_dir).jobs()
    [state] = status(base_repo, job)
    assert state.status == "fetching" and "power cut" in (state.error or "")
    assert len(state.outcomes) >= 4 and state.commit is None  # recorded as they were done
    # outcomes recorded before the cut surfaced; the single fetching thread may
    # have gone on to later URLs meanwhile (a 404 among them: a failure, which a
    # resume tries again by design), so "stored" is what has its image
    stored = {
        o.url.removeprefix("http://h.example")
        for o in state.outcomes.values()
        if o.status == STORED
    }
    assert {"/0.png", "/1.png", "/2.png", "/3.png"} <= stored and "/4.png" not in stored
    first = site.hits()

    state = resume(base_repo, job, transport=site.transport())
    second = site.hits() - first
    assert state.status == "done" and state.summary["added"] == 8 and state.error is None
    assert not stored & set(second)  # nothing stored before was fetched again
    assert set(second) == {*images, "/gone.png"} - stored
    assert state.summary["failed"] == 1

    # a finished job is finished: resuming it fetches nothing
    n = len(site.log)
    assert resume(base_repo, job, transport=site.transport()).commit == state.commit
    assert len(site.log) == n


def test_resume_after_commit_before_state_was_saved(base_repo: Repo, tmp_path: Path) -> None:
    site = Site({"/c.png": image(C)})
    state = start(
        base_repo,
        CrawlRequest(urls_file=urls_file(tmp_path, "http://h.example/c.png\n")),
        OPTS,
        transport=site.transport(),
    )
    store = JobStore(base_repo.state_dir, base_repo.tmp_dir)
    state.status, state.commit = "committing", None  # as if killed right after the commit
    store.save(state)
    again = resume(base_repo, state.job, transport=site.transport())
    assert again.status == "done" and again.commit == base_repo.branches()[state.branch]
    assert len(base_repo.log(state.branch)) == 2  # no second commit


def test_keyword_config_through_the_search_provider(base_repo: Repo, tmp_path: Path) -> None:
    site = Site(
        {
            "/s?q=red+rose": html('<img src="/r1.png"><img src="/r2.png"><img src="/r3.png">'),
            "/s?q=tulip": html('<meta property="og:image" content="/t1.png">'),
            "/r1.png": image(pattern_image(21)),
            "/r2.png": image(pattern_image(22)),
            "/r3.png": image(pattern_image(23)),
            "/t1.png": image(pattern_image(24)),
        }
    )
    cfg = tmp_path / "flowers.json"
    cfg.write_text(
        json.dumps(
            {
                "dataset_name": "flowers",
                "categories": {"rose": ["red rose"], "tulip": ["tulip"]},
                "options": {"max_images": 2},
            }
        )
    )
    state = start(
        base_repo,
        CrawlRequest(config_file=str(cfg), search_url="http://s.example/s?q={keyword}"),
        OPTS,
        transport=site.transport(),
    )
    assert state.summary["added"] == 3
    paths = sorted(
        e.path for e in base_repo.ls(state.branch) if e.path.startswith(("rose/", "tulip/"))
    )
    assert [p.split("/")[0] for p in paths] == ["rose", "rose", "tulip"]
    assert "/r3.png" not in site.log  # max_images per keyword
    from pixvcs import trees

    prov = next(e for e in base_repo.ls(state.branch) if e.path.startswith("provenance/"))
    recs = [json.loads(x) for x in trees.blob_bytes(base_repo.store, prov.blob).splitlines()]
    assert {(r["keyword"], r["provider"]) for r in recs} == {
        ("red rose", "search-url"),
        ("tulip", "search-url"),
    }
    assert {r["page"] for r in recs} == {
        "http://s.example/s?q=red+rose",
        "http://s.example/s?q=tulip",
    }


def test_bad_input_is_refused_before_anything_is_fetched(base_repo: Repo, tmp_path: Path) -> None:
    site = Site()
    with pytest.raises(CrawlInputError):
        start(
            base_repo,
            CrawlRequest(urls_file=urls_file(tmp_path, "not a url\n")),
            OPTS,
            transport=site.transport(),
        )
    with pytest.raises(CrawlInputError, match="--search-url"):
        cfg = tmp_path / "c.json"
        cfg.write_text('{"dataset_name": "x", "categories": {"a": ["b"]}}')
        start(base_repo, CrawlRequest(config_file=str(cfg)), OPTS, transport=site.transport())
    with pytest.raises(UsageError, match="nothing to crawl"):
        start(base_repo, CrawlRequest(), OPTS, transport=site.transport())
    base_repo.create_branch("taken")
    with pytest.raises(UsageError, match="already exists"):
        start(
            base_repo,
            CrawlRequest(pages=["http://h.example/"], branch="taken"),
            OPTS,
            transport=site.transport(),
        )
    assert site.log == [] and JobStore(base_repo.state_dir, base_repo.tmp_dir).jobs() == []
    bad = tmp_path / "bad.txt"
    bad.write_text("http://ok.example/\nnope\n")
    out = CliRunner().invoke(main, ["-C", base_repo.root, "crawl", "--urls", str(bad)])
    assert out.exit_code == 2 and f"{bad}:2" in out.output


def test_nothing_new_makes_no_commit(base_repo: Repo, tmp_path: Path) -> None:
    site = Site({"/base.png": image(BASE_IMG)})
    state = start(
        base_repo,
        CrawlRequest(urls_file=urls_file(tmp_path, "http://h.example/base.png\n")),
        OPTS,
        transport=site.transport(),
    )
    assert state.status == "done" and state.commit is None and state.summary["duplicates"] == 1
    assert state.branch not in base_repo.branches()


def test_format_md_provenance_example_has_the_keys_we_write(
    base_repo: Repo, tmp_path: Path
) -> None:
    from pixvcs import trees
    from tests.test_docs import _read, fixtures

    example = json.loads(fixtures(_read("format.md"))["crawl-provenance"])
    site = Site({"/a.png": image(A), "/a-copy.jpg": image(resized_copy(A, (100, 100)))})
    p = tmp_path / "u.csv"
    p.write_text(
        "url,label,licence\nhttp://h.example/a.png,rose,cc-by\nhttp://h.example/a-copy.jpg,rose,\n"
    )
    state = start(base_repo, CrawlRequest(urls_file=str(p)), OPTS, transport=site.transport())
    prov = next(e for e in base_repo.ls(state.branch) if e.path.startswith("provenance/"))
    [record] = [json.loads(x) for x in trees.blob_bytes(base_repo.store, prov.blob).splitlines()]
    assert set(record) == set(example)
    assert set(record["duplicates"][0]) == set(example["duplicates"][0])
    assert json.dumps(example, sort_keys=True) == json.dumps(example)  # keys sorted, as written


def test_ignore_robots_is_said_in_the_commit_and_summary(base_repo: Repo, tmp_path: Path) -> None:
    site = Site(
        {
            "/robots.txt": always(Resp(200, b"User-agent: *\nDisallow: /\n")),
            "/c.png": image(C),
        }
    )
    listing = urls_file(tmp_path, "http://h.example/c.png\n")
    polite = start(base_repo, CrawlRequest(urls_file=listing), OPTS, transport=site.transport())
    assert polite.summary["reasons"]["failed"] == {"robots": 1} and polite.commit is None
    state = start(
        base_repo,
        CrawlRequest(urls_file=listing),
        OPTS.replace(respect_robots=False),
        transport=site.transport(),
    )
    assert state.summary["robots"] == "ignored" and state.summary["added"] == 1
    assert "robots.txt: IGNORED (--ignore-robots)" in base_repo.commit_info(state.commit or "").message
    assert site.log.count("/robots.txt") == 1  # the second job never asked
    out = CliRunner().invoke(main, ["-C", base_repo.root, "crawl", "--resume", state.job, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert (data["commit"], data["robots"], data["added"]) == (state.commit, "ignored", 1)
    out = CliRunner().invoke(main, ["-C", base_repo.root, "crawl", "--resume", state.job, "--urls", listing])
    assert out.exit_code == 2


def test_max_images_adds_at_most_n_and_fetches_only_what_is_needed(
    base_repo: Repo, tmp_path: Path
) -> None:
    site = make_site()
    site["/d.png"] = image(pattern_image(5))
    site["/e.png"] = image(pattern_image(6))
    listing = "".join(
        f"http://h.example/{p}\n"
        for p in ["base.png", "a.png", "a-copy.png", "b.jpg", "c.png", "d.png", "e.png"]
    )
    state = start(
        base_repo,
        CrawlRequest(urls_file=urls_file(tmp_path, listing), max_images=3),
        OPTS,
        transport=site.transport(),
    )
    s = state.summary
    assert (s["added"], s["duplicates"], s["skipped"]) == (3, 2, 2)
    assert s["reasons"]["skipped"] == {"max-images": 2}
    assert "/d.png" not in site.log and "/e.png" not in site.log
    added = {e.oid for e in base_repo.ls(state.branch) if e.path.startswith("unlabelled/")}
    assert added == {oid(A), oid(B), oid(C)}
