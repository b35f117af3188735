"""End to end: `pixvcs crawl` against a real threaded HTTP server on 127.0.0.1 serving
generated images and pages, broken ones included; then review, merge and fsck."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from click.testing import CliRunner, Result

from pixvcs import Repo
from pixvcs.cli import main
from tests.crawl.site import (
    Resp,
    Site,
    always,
    bomb_png,
    html,
    image,
    pattern_image,
    resized_copy,
    sequence,
)

AUTHOR = "E2E <e2e@example.org>"


def run(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def test_crawl_a_real_server(tmp_path: Path) -> None:
    good = {f"/img/{i}.png": pattern_image(200 + i) for i in range(4)}
    jpeg = pattern_image(300, fmt="JPEG")
    base_img = pattern_image(400)
    site = Site(
        {
            "/robots.txt": always(Resp(200, b"User-agent: *\nDisallow: /private/\n")),
            **{p: image(d) for p, d in good.items()},
            "/index.html": html(
                '<img src="/img/0.png" srcset="/img/1.png 2x">'
                '<meta property="og:image" content="/photo.jpg">'
                '<a href="/more.html">more</a><a href="/private/secret.html">no</a>'
            ),
            "/more.html": html(
                '<picture><source srcset="/img/2.png"></picture><a href="/img/3.png">x</a>'
            ),
            "/private/secret.html": html('<img src="/img/secret.png">'),
            "/photo.jpg": always(Resp(200, jpeg, {"content-type": "application/octet-stream"})),
            "/flaky.png": sequence(
                Resp(500), Resp(200, pattern_image(500), {"content-type": "image/png"})
            ),
            "/busy.png": sequence(
                Resp(429, headers={"retry-after": "1"}),
                Resp(200, pattern_image(501), {"content-type": "image/png"}),
            ),
            "/slow.png": always(
                Resp(200, pattern_image(502), {"content-type": "image/png"}, delay=2.5)
            ),
            "/truncated.png": always(
                Resp(200, pattern_image(503), {"content-type": "image/png"}, truncate=100)
            ),
            "/page.jpg": always(
                Resp(
                    200, b"<!doctype html><p>not a picture</p>" * 4, {"content-type": "image/jpeg"}
                )
            ),
            "/bomb.png": image(bomb_png()),
            "/loop": always(Resp(302, headers={"location": "/loop2"})),
            "/loop2": always(Resp(302, headers={"location": "/loop"})),
            "/dup.png": image(good["/img/0.png"]),
            "/near.jpg": image(resized_copy(good["/img/1.png"], (90, 90)), "image/jpeg"),
            "/base-copy.png": image(base_img),
            "/private/x.png": image(pattern_image(504)),
            "/down.png": always(Resp(503)),
        }
    )
    ds = tmp_path / "ds"
    run("init", str(ds))
    (ds / "cat").mkdir()
    (ds / "cat" / "base.png").write_bytes(base_img)
    run("-C", str(ds), "add", ".")
    run("-C", str(ds), "commit", "-m", "v1", "--author", AUTHOR)
    run("-C", str(ds), "tag", "v1")

    with site.serve() as origin:
        paths = [
            "/flaky.png", "/busy.png", "/slow.png", "/truncated.png", "/page.jpg", "/bomb.png",
            "/loop", "/dup.png", "/near.jpg", "/base-copy.png", "/private/x.png", "/down.png",
            "/missing.png",
        ]  # fmt: skip
        urls = tmp_path / "urls.txt"
        urls.write_text("".join(f"{origin}{p}\n" for p in paths))
        out = run(
            "-C", str(ds), "crawl", "--page", f"{origin}/index.html", "--depth", "1",
            "--urls", str(urls), "--label", "web", "--timeout", "1.0", "--retries", "2",
            "--rate", "0", "--contact", "e2e@example.org", "--json",
        )  # fmt: skip
    result = json.loads(out.stdout)
    assert set(result) >= {
        "job",
        "branch",
        "commit",
        "added",
        "duplicates",
        "near_duplicates",
        "invalid",
        "failed",
    }
    assert result["reasons"]["failed"] == {
        "http-404": 1,
        "http-503": 1,
        "network": 1,
        "page-robots": 1,  # the /private/ page the index links to
        "robots": 1,
        "timeout": 1,
        "too-many-redirects": 1,
    }
    assert result["reasons"]["invalid"] == {"decompression-bomb": 1, "not-an-image": 1}
    assert result["reasons"]["duplicates"] == {"exact-base": 1, "exact-crawl": 1}
    assert result["reasons"]["near_duplicates"] == {"near-crawl": 1}
    assert result["added"] == 7  # 4 from the pages, the og:image photo, flaky, busy
    assert "/private/secret.html" not in site.log and "/private/x.png" not in site.log
    assert site.log.count("/flaky.png") == 2 and site.log.count("/busy.png") == 2

    branch, job = result["branch"], result["job"]
    assert branch == f"crawl/{job}"
    diff = json.loads(run("-C", str(ds), "diff", "main", branch, "--json").stdout)
    assert len(diff["added"]) == 8 and f"provenance/{job}.jsonl" in diff["added"]
    sha = hashlib.sha256(jpeg).hexdigest()
    assert f"web/{sha[:16]}.jpg" in diff["added"]
    assert not (ds / "web").exists()  # nothing touched until the merge

    status = json.loads(run("-C", str(ds), "crawl", "status", job, "--json").stdout)
    assert status["status"] == "done" and status["commit"] == result["commit"]
    run("-C", str(ds), "merge", branch)
    assert (ds / "web" / f"{sha[:16]}.jpg").read_bytes() == jpeg
    prov = [json.loads(x) for x in (ds / "provenance" / f"{job}.jsonl").read_text().splitlines()]
    photo = next(r for r in prov if r["oid"] == sha)
    assert (
        photo["page"] == f"{origin}/index.html"
        and photo["content_type"] == "application/octet-stream"
    )
    with Repo.open(str(ds)) as repo:
        assert repo.fsck().ok
        message = repo.commit_info(result["commit"]).message
    assert "robots.txt: respected" in message
    run("-C", str(ds), "checkout", "v1")
    assert not (ds / "web").exists()
