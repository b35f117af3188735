"""Exports of a pinned version, read back; deterministic to the byte."""

from __future__ import annotations

import csv
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import pixvcs
from pixvcs import Repo, UsageError
from pixvcs.cli import main
from pixvcs.export import export, sample_keys
from tests.imagegen import make_dataset, snapshot, write_image

AUTHOR = "Test <test@example.org>"


@pytest.fixture
def ds_root(tmp_path: Path) -> Path:
    """v1: cat/0000-0002, dog/0000-0001, nested/a/x.jpg, a README; v2 adds bird/0000."""
    root = tmp_path / "ds"
    with Repo.init(str(root)) as repo:
        make_dataset(str(root), {"cat": 3, "dog": 2})
        write_image(str(root / "nested" / "a" / "x.jpg"), 40, "PNG", (30, 20))
        (root / "README.txt").write_text("hello\n")
        repo.add(["."])
        repo.commit("v1", author=AUTHOR)
        repo.create_tag("v1")
        write_image(str(root / "bird" / "0000.jpg"), 41)
        repo.add(["."])
        repo.commit("v2", author=AUTHOR)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)).replace(os.sep, "/"): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_imagefolder_hardlinks_read_only_objects(ds_root: Path, tmp_path: Path) -> None:
    ds = pixvcs.open(str(ds_root), "v1")
    result = export(ds, str(tmp_path / "out"), format="imagefolder")
    v1 = {r.path: r.bytes() for r in ds}
    # label/file; nested folders under the class folder are kept
    assert _files(tmp_path / "out") == v1
    assert result.images == result.files == result.linked == 6
    for r in ds:
        out = os.stat(tmp_path / "out" / r.path)
        obj = ds.source.object_path(r.oid)
        assert obj is not None
        assert out.st_ino == os.stat(obj).st_ino  # a hardlink to the media object...
        assert not out.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)  # ...read-only
    copied = export(ds, str(tmp_path / "copy"), format="imagefolder", link=False)
    assert copied.linked == 0 and _files(tmp_path / "copy") == v1
    assert os.stat(tmp_path / "copy" / "cat" / "0000.jpg").st_nlink == 1


def test_imagefolder_refusals_write_nothing(ds_root: Path, tmp_path: Path) -> None:
    with Repo.open(str(ds_root)) as repo:
        write_image(str(ds_root / "loose.jpg"), 42)  # at the root: no label
        repo.add(["."])
        repo.commit("v3", author=AUTHOR)
    ds = pixvcs.open(str(ds_root))
    with pytest.raises(UsageError, match="no label"):
        export(ds, str(tmp_path / "out"), format="imagefolder")
    assert not (tmp_path / "out").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="must be empty"):
        export(ds[:2], str(tmp_path / "busy"), format="webdataset")
    assert os.listdir(tmp_path / "busy") == ["keep.txt"]
    (tmp_path / "m.csv").write_text("mine")
    with pytest.raises(UsageError, match="already exists"):
        export(ds, str(tmp_path / "m.csv"), format="csv-manifest")
    bad_label = pixvcs.Record("cat/0000.jpg", "..", ds[1].oid, 1, None, None, ds[1]._source)
    with pytest.raises(UsageError, match="cannot be a folder name"):
        export(pixvcs.Dataset(ds.source, ds.commit, [bad_label]), str(tmp_path / "o"),
               format="imagefolder")  # fmt: skip
    assert not (tmp_path / "o").exists()
    with pytest.raises(UsageError, match="unknown export format"):
        export(ds, str(tmp_path / "x"), format="parquet")


def test_webdataset_shards_read_back(ds_root: Path, tmp_path: Path) -> None:
    ds = pixvcs.open(str(ds_root), "v1")
    result = export(ds, str(tmp_path / "wds"), format="webdataset", shard_size=4)
    assert result.shards == ["shard-000000.tar", "shard-000001.tar"]
    assert sorted(os.listdir(tmp_path / "wds")) == result.shards  # no temporary files left
    samples: dict[str, dict[str, bytes]] = {}
    for shard in result.shards:
        with tarfile.open(tmp_path / "wds" / shard) as tar:
            for m in tar.getmembers():
                assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644)
                key, ext = m.name.split(".", 1)
                f = tar.extractfile(m)
                assert f is not None
                samples.setdefault(key, {})[ext] = f.read()
    assert list(samples)[:4] == ["cat/0000", "cat/0001", "cat/0002", "dog/0000"]
    assert len(samples) == len(ds)
    for r in ds:
        key = r.path.rsplit(".", 1)[0]
        meta = json.loads(samples[key]["json"])
        assert meta == {
            "label": r.label,
            "oid": r.oid,
            "path": r.path,
            "width": r.width,
            "height": r.height,
            "size": r.size,
            "provenance": None,  # v1 has no provenance records
        }
        assert samples[key][r.path.rsplit(".", 1)[1]] == r.bytes()
    assert json.loads(samples["nested/a/x"]["json"])["width"] == 30


def test_webdataset_sidecars_carry_provenance(ds_root: Path, tmp_path: Path) -> None:
    """Records of provenance/*.jsonl (crawled images, or hand-written ones) go into
    the sidecar of the image they name, matched by oid; a broken file is an error."""
    ds = pixvcs.open(str(ds_root), "HEAD")
    cat = next(r for r in ds if r.path == "cat/0001.jpg")
    record = {"oid": cat.oid, "path": cat.path, "url": "https://example.org/c.jpg", "page": None}
    prov = ds_root / "provenance" / "hand.jsonl"
    prov.parent.mkdir()
    prov.write_text(json.dumps(record) + "\n")
    with Repo.open(str(ds_root)) as repo:
        repo.add(["provenance"])
        repo.commit("provenance", author=AUTHOR)
    ds = pixvcs.open(str(ds_root), "HEAD")
    export(ds, str(tmp_path / "wds"), format="webdataset")
    with tarfile.open(tmp_path / "wds" / "shard-000000.tar") as tar:
        metas = {
            m.name[: -len(".json")]: json.load(tar.extractfile(m))  # type: ignore[arg-type]
            for m in tar.getmembers()
            if m.name.endswith(".json")
        }
    assert metas["cat/0001"]["provenance"] == record
    assert metas["cat/0000"]["provenance"] is None
    prov.write_text("{not json\n")
    with Repo.open(str(ds_root)) as repo:
        repo.add(["provenance"])
        repo.commit("broken", author=AUTHOR)
    with pytest.raises(pixvcs.ProvenanceError, match="provenance/hand.jsonl:1"):
        export(pixvcs.open(str(ds_root), "HEAD"), str(tmp_path / "wds2"), format="webdataset")
    assert not (tmp_path / "wds2").exists() or not os.listdir(tmp_path / "wds2")


def test_csv_manifest_reads_back(ds_root: Path, tmp_path: Path) -> None:
    ds = pixvcs.open(str(ds_root), "v1", where={"label": ["cat", "nested"]})
    export(ds, str(tmp_path / "sub" / "manifest.csv"), format="csv-manifest")
    with open(tmp_path / "sub" / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [
        {"path": r.path, "label": r.label or "", "oid": r.oid, "size": str(r.size)} for r in ds
    ]
    assert [row["path"] for row in rows] == ["cat/0000.jpg", "cat/0001.jpg", "cat/0002.jpg",
                                             "nested/a/x.jpg"]  # fmt: skip


def test_exports_are_deterministic(ds_root: Path, tmp_path: Path) -> None:
    ds = pixvcs.open(str(ds_root), "v1")
    for fmt in ("imagefolder", "webdataset", "csv-manifest"):
        export(ds, str(tmp_path / f"{fmt}-1"), format=fmt, shard_size=3)
    # the catalog is derived data: without it, the output must not change
    state = ds_root / ".pixvcs" / "pixvcs"
    for name in os.listdir(state):
        if name.startswith("catalog.db"):
            os.unlink(state / name)
    again = pixvcs.open(str(ds_root), "v1")
    assert again[0].width is None
    for fmt in ("imagefolder", "webdataset", "csv-manifest"):
        export(again, str(tmp_path / f"{fmt}-2"), format=fmt, shard_size=3)
        one, two = tmp_path / f"{fmt}-1", tmp_path / f"{fmt}-2"
        if fmt == "csv-manifest":
            assert one.read_bytes() == two.read_bytes()
        else:
            assert snapshot(str(one)) == snapshot(str(two))


def test_sample_keys_are_stable_and_unique(ds_root: Path) -> None:
    ds = pixvcs.open(str(ds_root), "v1")
    r = ds[0]
    fake = [
        pixvcs.Record(p, None, r.oid, r.size, None, None, r._source)
        for p in ("a/x.jpg", "a/x.png", "a/y.tar.gz.jpg", "b/.hidden", "c/noext")
    ]
    keys = sample_keys(fake)
    assert keys[2:] == ["a/y_tar_gz", "b/_hidden", "c/noext"]
    assert keys[0].startswith("a/x_") and keys[1].startswith("a/x_") and keys[0] != keys[1]
    assert sample_keys(fake) == keys
    assert all("." not in k.rsplit("/", 1)[1] for k in keys)


# -- the command ----------------------------------------------------------------------------
def run(cwd: Path, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, ["-C", str(cwd), *args], catch_exceptions=False)
    assert result.exit_code == code, (args, result.output)
    return result


def test_cli_export(ds_root: Path, tmp_path: Path) -> None:
    out = json.loads(
        run(ds_root, "export", "v1", "--format", "webdataset", "../wds", "--shard-size", "2",
            "--json").output
    )  # fmt: skip
    assert out["images"] == 6 and out["shards"] == [f"shard-00000{i}.tar" for i in range(3)]
    assert out["dest"] == str(tmp_path / "wds")
    with Repo.open(str(ds_root)) as repo:
        assert out["commit"] == repo.resolve("v1")

    text = run(
        ds_root,
        "export",
        "--format",
        "csv-manifest",
        "../head.csv",
        "--include",
        "bird/*",
        "--include",
        "dog/*",
        "--where",
        "label=dog",
        "--where",
        "label=bird",
    )
    assert "exported 3 image(s)" in text.output  # HEAD (v2) has bird/0000.jpg
    with open(tmp_path / "head.csv", newline="") as f:
        assert [row["path"] for row in csv.DictReader(f)] == [
            "bird/0000.jpg", "dog/0000.jpg", "dog/0001.jpg"]  # fmt: skip

    text = run(ds_root, "export", "v1", "--format", "imagefolder", "../if", "--where",
               "label=cat", "--copy")  # fmt: skip
    assert "0 hardlinked" in text.output
    assert sorted(os.listdir(tmp_path / "if" / "cat")) == ["0000.jpg", "0001.jpg", "0002.jpg"]

    bad = run(ds_root, "export", "--format", "csv-manifest", "x.csv", "--where", "hue=3", code=2)
    assert "unknown --where key" in bad.output
    run(ds_root, "export", "v1", "x", "y", "--format", "csv-manifest", code=2)
    run(ds_root, "export", "nope", "--format", "csv-manifest", "y.csv", code=1)
    assert not (ds_root / "y.csv").exists()
