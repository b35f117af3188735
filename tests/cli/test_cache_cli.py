"""``pixvcs cache info`` / ``pixvcs cache clear`` on the cache of a remote dataset."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import pixvcs
from pixvcs import Repo
from pixvcs.cli import main
from tests.conftest import AUTHOR
from tests.imagegen import make_dataset


def test_cache_info_and_clear(tmp_path: Path) -> None:
    Repo.init(str(tmp_path / "shared.git"), bare=True).close()
    work = Repo.init(str(tmp_path / "work"))
    work.add_remote("origin", str(tmp_path / "shared.git"))
    files = make_dataset(work.root, {"cat": 3, "dog": 2})
    work.add(["."])
    work.commit("v1", author=AUTHOR)
    work.push()
    work.close()
    cache = tmp_path / "cache"
    url = f"file://{tmp_path / 'shared.git'}"
    ds = pixvcs.open(url, "main", cache_dir=str(cache))
    assert {r.path: d for r, d in ds.iter_bytes()} == files
    ds.close()

    runner = CliRunner()
    out = runner.invoke(main, ["cache", "info", "--cache-dir", str(cache), "--json"])
    assert out.exit_code == 0, out.output
    info = json.loads(out.stdout)
    assert info["dir"] == str(cache)
    assert info["media"]["objects"] == len(files) and info["media"]["packs"] >= 1
    assert info["media"]["bytes"] >= sum(len(d) for d in files.values())
    assert info["mirrors"]["count"] == 1 and info["mirrors"]["bytes"] > 0
    text = runner.invoke(main, ["cache", "info", "--cache-dir", str(cache)])
    assert f"{len(files)} media object(s)" in text.stdout

    out = runner.invoke(
        main, ["cache", "clear", "--cache-dir", str(cache), "--media-only", "--json"]
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["media"]["objects"] == len(files)
    after = json.loads(
        runner.invoke(main, ["cache", "info", "--cache-dir", str(cache), "--json"]).stdout
    )
    assert after["media"] == {"packs": 0, "objects": 0, "bytes": 0}
    assert after["mirrors"]["count"] == 1, "--media-only keeps the mirrors"

    again = pixvcs.open(url, "main", cache_dir=str(cache))  # fetched again, byte-exact
    assert {r.path: d for r, d in again.iter_bytes()} == files
    again.close()
    out = runner.invoke(main, ["cache", "clear", "--cache-dir", str(cache)])
    assert out.exit_code == 0 and "deleted" in out.stdout
    gone = json.loads(
        runner.invoke(main, ["cache", "info", "--cache-dir", str(cache), "--json"]).stdout
    )
    assert gone["media"]["objects"] == 0 and gone["mirrors"]["count"] == 0
