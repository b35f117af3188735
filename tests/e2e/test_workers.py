"""End to end: `pixvcs crawl --broker` with a real Redis server and real `pixvcs worker`
processes (Celery), against a real HTTP server serving generated images; a worker
killed with SIGKILL mid-job; PixCrawler's keyword-config flow with merges and a
byte-exact rollback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pixvcs import Repo, trees
from tests.crawl.site import Resp, Site, always, bomb_png, html, image, pattern_image, resized_copy
from tests.e2e.conftest import Tools, worktree_hashes

AUTHOR = "Crawler <crawl@example.org>"


def _init(tools: Tools, path: Path, seed_image: bytes | None = None) -> Path:
    tools.run([sys.executable, "-m", "pixvcs.cli", "init", str(path)])
    if seed_image is not None:
        (path / "cat").mkdir()
        (path / "cat" / "base.png").write_bytes(seed_image)
        tools.pixvcs(path, "add", ".")
        tools.pixvcs(path, "commit", "-m", "v1", "--author", AUTHOR)
    return path


def _tree(repo_path: Path, rev: str) -> dict[str, str | None]:
    repo = Repo.open(str(repo_path))
    try:
        return {e.path: e.oid for e in repo.ls(rev) if not e.path.startswith("provenance/")}
    finally:
        repo.close()


def _site(n: int, delay: float = 0.0) -> tuple[Site, list[str]]:
    imgs = {f"/img/{i}.png": pattern_image(1000 + i) for i in range(n)}
    routes = {
        p: always(Resp(200, d, {"content-type": "image/png"}, delay=delay)) for p, d in imgs.items()
    }
    routes["/dup.png"] = image(imgs["/img/0.png"])
    routes["/near.jpg"] = image(resized_copy(imgs["/img/1.png"], (100, 100)), "image/jpeg")
    routes["/bomb.png"] = image(bomb_png())
    routes["/text.png"] = image(b"<html>not an image</html>" * 4)
    routes["/gone.png"] = always(Resp(404))
    paths = [*imgs, "/dup.png", "/near.jpg", "/bomb.png", "/text.png", "/gone.png"]
    return Site(routes), paths


@pytest.mark.e2e
def test_workers_commit_what_in_process_commits(
    tools: Tools, workers_for: object, redis_url: str, tmp_path: Path
) -> None:
    base = pattern_image(7)
    dist = _init(tools, tmp_path / "dist", base)
    local = _init(tools, tmp_path / "local", base)
    workers = workers_for(dist)  # type: ignore[operator]
    workers.start(2)
    site, paths = _site(24)
    with site.serve() as origin:
        urls = tmp_path / "urls.txt"
        urls.write_text("".join(f"{origin}{p}\n" for p in paths))
        common = ["--urls", str(urls), "--label", "web", "--rate", "0", "--retries", "0", "--json"]
        out = tools.pixvcs(dist, "crawl", "--broker", redis_url, *common, timeout=180)
        ref = tools.pixvcs(local, "crawl", *common, timeout=180)
    got, want = json.loads(out.stdout), json.loads(ref.stdout)
    for key in (
        "added",
        "fetched",
        "failed",
        "invalid",
        "duplicates",
        "near_duplicates",
        "reasons",
    ):
        assert got[key] == want[key], key
    assert got["added"] == 24  # the copy and the resized copy are left out
    assert got["reasons"]["invalid"] == {"decompression-bomb": 1, "not-an-image": 1}
    assert got["reasons"]["duplicates"] == {"exact-crawl": 1}
    assert _tree(dist, got["branch"]) == _tree(local, want["branch"])
    status = json.loads(tools.pixvcs(dist, "crawl", "status", got["job"], "--json").stdout)
    assert status["status"] == "done" and status["commit"] == got["commit"]
    assert status["tasks"]["queue"].startswith("pixvcs.crawl.")
    # the workers journalled their chunks; the fsck of the result is clean
    tools.pixvcs(dist, "fsck")


@pytest.mark.e2e
def test_a_worker_killed_mid_job_loses_and_duplicates_nothing(
    tools: Tools, workers_for: object, redis_url: str, tmp_path: Path
) -> None:
    ds = _init(tools, tmp_path / "ds")
    workers = workers_for(ds)  # type: ignore[operator]
    workers.start(2, "--visibility-timeout", "8")
    n = 40
    site, paths = _site(n, delay=0.25)
    with site.serve() as origin:
        urls = tmp_path / "urls.txt"
        urls.write_text("".join(f"{origin}{p}\n" for p in paths[:n]))
        crawl = subprocess.Popen(
            tools.pixvcs_argv(
                ds, "crawl", "--broker", redis_url, "--urls", str(urls), "--label", "web",
                "--rate", "0", "--workers", "2", "--json",
            ),
            env=tools.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        journal = ds / ".pixvcs" / "pixvcs" / "crawl"
        deadline = time.monotonic() + 60
        while True:  # kill once both workers have journalled some work
            lines = sum(p.read_text().count("\n") for p in journal.glob("*.chunks/*.jsonl"))
            if lines >= 6:
                break
            assert crawl.poll() is None, crawl.communicate()
            assert time.monotonic() < deadline, workers.logs()
            time.sleep(0.1)
        killed_at = time.monotonic()
        workers.kill(0)
        out, err = crawl.communicate(timeout=240)
        took = time.monotonic() - killed_at
    assert crawl.returncode == 0, err + workers.logs()
    result = json.loads(out)
    assert result["added"] == n and result["failed"] == 0, result
    assert took < 120, f"the job took {took:.0f} s after the kill"
    repo = Repo.open(ds)
    try:
        listing = repo.ls(result["branch"])
        entries = [e for e in listing if e.path.startswith("web/")]
        assert len(entries) == n and len({e.oid for e in entries}) == n
        prov = next(e for e in listing if e.path == f"provenance/{result['job']}.jsonl")
        provenance = trees.blob_bytes(repo.store, prov.blob)
    finally:
        repo.close()
    records = [json.loads(line) for line in provenance.decode().splitlines()]
    assert sorted(r["url"] for r in records) == sorted(f"{origin}{p}" for p in paths[:n])
    # at most the URLs in flight in the killed worker were fetched twice
    hits = site.hits("/img/")
    assert set(hits) == set(paths[:n])
    assert sum(hits.values()) - n <= 4, hits
    tools.pixvcs(ds, "fsck")


@pytest.mark.e2e
def test_no_worker_is_a_clear_error(tools: Tools, redis_url: str, tmp_path: Path) -> None:
    ds = _init(tools, tmp_path / "ds")
    urls = tmp_path / "urls.txt"
    urls.write_text("http://127.0.0.1:9/a.png\n")
    proc = tools.pixvcs(ds, "crawl", "--broker", redis_url, "--urls", str(urls), check=False)
    assert proc.returncode == 1
    assert "no pixvcs worker serves this repository" in proc.stderr
    assert "pixvcs -C" in proc.stderr and "worker --broker" in proc.stderr
    env_proc = tools.pixvcs(
        ds, "crawl", "--urls", str(urls), check=False, extra_env={"PIXVCS_BROKER_URL": redis_url}
    )
    assert "no pixvcs worker serves this repository" in env_proc.stderr
    # a broker that is not there: a clear error (its password not shown), no traceback
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://:hunter2@127.0.0.1:{sock.getsockname()[1]}/0"
    down = tools.pixvcs(ds, "crawl", "--broker", dead, "--urls", str(urls), check=False)
    assert down.returncode == 1, down.stderr
    assert "cannot reach the broker redis://:***@127.0.0.1" in down.stderr
    assert "hunter2" not in down.stderr and "Traceback" not in down.stderr
    assert "pixvcs crawl --resume" in down.stderr


@pytest.mark.e2e
def test_pixcrawler_flow_with_workers(
    tools: Tools, workers_for: object, redis_url: str, tmp_path: Path
) -> None:
    """PixCrawler's pending item: create a dataset from a keyword config -> crawl ->
    update the config and crawl again -> merge each -> roll back to the first
    version, byte-exact, every version visible in log and diff."""
    imgs = {f"/i/{k}{n}.png": pattern_image(ord(k) * 37 + n) for k in "abc" for n in range(3)}
    site = Site({p: image(d) for p, d in imgs.items()})

    def results(keyword: str) -> str:
        return "".join(f'<img src="/i/{keyword}{n}.png">' for n in range(3))

    site["/search?q=tabby"] = html(results("a"))
    site["/search?q=siamese"] = html(results("b"))
    site["/search?q=beagle"] = html(results("c"))
    ds = _init(tools, tmp_path / "ds")
    tools.run(["git", "--git-dir", str(ds / ".pixvcs"), "config", "pixvcs.broker", redis_url])
    workers = workers_for(ds)  # type: ignore[operator]
    workers.start(2)
    config = tmp_path / "cats.json"
    with site.serve() as origin:
        search = f"{origin}/search?q={{keyword}}"
        config.write_text(
            json.dumps(
                {
                    "dataset_name": "pets",
                    "categories": {"cat": ["tabby"]},
                    "options": {"max_images": 2},
                }
            )
        )
        first = json.loads(
            tools.pixvcs(
                ds,
                "crawl",
                "--config",
                str(config),
                "--search-url",
                search,
                "--rate",
                "0",
                "--json",
            ).stdout
        )
        assert first["added"] == 2
        tools.pixvcs(ds, "merge", first["branch"])
        tools.pixvcs(ds, "tag", "v1")
        v1 = worktree_hashes(ds)
        config.write_text(
            json.dumps(
                {
                    "dataset_name": "pets",
                    "categories": {"cat": ["tabby", "siamese"], "dog": ["beagle"]},
                    "options": {"max_images": 3},
                }
            )
        )
        second = json.loads(
            tools.pixvcs(
                ds,
                "crawl",
                "--config",
                str(config),
                "--search-url",
                search,
                "--rate",
                "0",
                "--json",
            ).stdout
        )
    # tabby's first two are already in v1 (exact duplicates of the base)
    assert second["added"] == 1 + 3 + 3, second
    assert second["reasons"]["duplicates"] == {"exact-base": 2}
    diff = json.loads(tools.pixvcs(ds, "diff", "v1", second["branch"], "--json").stdout)
    assert diff["classes"]["dog"] == {"before": 0, "after": 3}
    tools.pixvcs(ds, "merge", second["branch"])
    log = json.loads(tools.pixvcs(ds, "log", "--json").stdout)
    messages = [c["message"] for c in log]
    assert any(first["job"] in m for m in messages) and any(second["job"] in m for m in messages)
    tools.pixvcs(ds, "checkout", "v1")
    assert worktree_hashes(ds) == v1
    assert not (ds / "dog").exists()


@pytest.mark.e2e
def test_workers_on_other_machines_reach_the_media_through_the_shared_remote(
    tools: Tools, workers_for: object, redis_url: str, tmp_path: Path
) -> None:
    """The coordinator's repository A shares remote R (a bare repository); a worker
    on "another machine" works in its own clone B of R and serves the shared queue.
    It fetches every chunk, pushes the images to R; A's own worker fetches them
    from R and commits there."""
    base = pattern_image(11)
    a = _init(tools, tmp_path / "a", base)
    shared = tmp_path / "shared.git"
    tools.pixvcs(tmp_path, "init", "--bare", str(shared))
    tools.pixvcs(a, "remote", "add", "origin", str(shared))
    tools.pixvcs(a, "push", "origin", "main")
    b = tmp_path / "b"
    tools.pixvcs(tmp_path, "clone", str(shared), str(b))
    home = workers_for(a)  # type: ignore[operator]
    home.start(1)  # serves A's own queue only: it stages the commit
    away = workers_for(b)  # type: ignore[operator]
    away.start(1, "--queue", "pets-fetch")
    site, paths = _site(12)
    with site.serve() as origin:
        urls = tmp_path / "urls.txt"
        urls.write_text("".join(f"{origin}{p}\n" for p in paths))
        out = tools.pixvcs(
            a, "crawl", "--broker", redis_url, "--queue", "pets-fetch", "--urls", str(urls),
            "--label", "web", "--rate", "0", "--retries", "0", "--json", timeout=180,
        )  # fmt: skip
    result = json.loads(out.stdout)
    assert result["added"] == 12, result
    # every chunk ran in B: its journals are there, none in A
    assert list((b / ".pixvcs" / "pixvcs" / "crawl").glob(f"{result['job']}.chunks/*.jsonl"))
    assert not list((a / ".pixvcs" / "pixvcs" / "crawl").glob(f"{result['job']}.chunks/*"))
    # so the coordinator's progress came from the result backend: the wave's chunk
    # tasks (ids and URL counts) are in the job state
    state = json.loads((a / ".pixvcs" / "pixvcs" / "crawl" / f"{result['job']}.json").read_text())
    wave = state["tasks"]["wave"]
    assert wave and all(len(c) == 2 for c in wave) and sum(n for _, n in wave) == len(paths)
    # the images came to A through R, verified; A's branch is byte-exact
    repo = Repo.open(str(a))
    try:
        added = [e for e in repo.ls(result["branch"]) if e.path.startswith("web/")]
        assert len(added) == 12
        for e in added:
            assert e.oid is not None and repo.media.read(e.oid)  # read() verifies the hash
    finally:
        repo.close()
    shared_objects = {p.name for p in (shared / "lfs" / "objects").rglob("*") if p.is_file()}
    assert {e.oid for e in added} <= shared_objects
    # a worker of a shared queue needs a remote to push to
    lonely = _init(tools, tmp_path / "lonely")
    proc = tools.pixvcs(
        lonely, "worker", "--broker", redis_url, "--queue", "pets-fetch", check=False
    )
    assert proc.returncode == 2 and "has no remote 'origin'" in proc.stderr
    bad = tools.pixvcs(a, "crawl", "--broker", redis_url, "--queue", "no spaces", "--urls",
                       str(urls), check=False)  # fmt: skip
    assert bad.returncode == 2 and "bad crawl queue name" in bad.stderr
