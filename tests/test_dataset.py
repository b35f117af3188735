"""pixvcs.open(): a pinned version read from training code, with no checkout."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import pickle
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
from PIL import Image

import pixvcs
from pixvcs import CorruptObject, MissingMedia, Repo, UsageError
from pixvcs.dataset import LabelsFileError, MissingDependency, parse_labels, parse_where
from pixvcs.export import export
from tests.imagegen import image_bytes, make_dataset, write_image
from tests.test_docs import fixtures

DOCS = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"

AUTHOR = "Test <test@example.org>"


def _commit(repo: Repo, message: str, tag: str | None = None) -> str:
    repo.add(["."])
    cid = repo.commit(message, author=AUTHOR)
    if tag:
        repo.create_tag(tag)
    return cid


@pytest.fixture
def ds_repo(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """v1: cat/0000-0002, dog/0000-0001 (48x40 JPEGs), a README and a root image."""
    root = tmp_path / "ds"
    with Repo.init(str(root)) as repo:
        files = make_dataset(str(root), {"cat": 3, "dog": 2})
        (root / "README.txt").write_text("not an image\n")
        files["big/wide.png"] = write_image(str(root / "big" / "wide.png"), 9, "PNG", (96, 30))
        files["root.jpg"] = write_image(str(root / "root.jpg"), 8)
        _commit(repo, "v1", "v1")
    return root, files


def test_records_of_a_version(ds_repo: tuple[Path, dict[str, bytes]]) -> None:
    root, files = ds_repo
    ds = pixvcs.open(str(root), "v1")
    with Repo.open(str(root)) as repo:
        assert ds.commit == repo.resolve("v1")
    # only images, sorted by path; the README and .gitattributes are not records
    assert [r.path for r in ds] == sorted(files)
    assert len(ds) == 7
    r = ds[0]
    assert r.path == "big/wide.png" and r.label == "big"
    assert (r.width, r.height) == (96, 30)  # from the catalog
    assert r.oid == hashlib.sha256(files[r.path]).hexdigest() and r.size == len(files[r.path])
    assert r.bytes() == files[r.path]
    assert r.image().size == (96, 30)
    root_image = next(x for x in ds if x.path == "root.jpg")
    assert root_image.label is None  # no class folder
    assert ds.classes == ["big", "cat", "dog"]
    assert "7 images" in repr(ds)


def test_pinned_after_new_commits_and_without_work_tree(
    ds_repo: tuple[Path, dict[str, bytes]],
) -> None:
    root, files = ds_repo
    ds = pixvcs.open(str(root), "v1")
    with Repo.open(str(root)) as repo:
        write_image(str(root / "cat" / "0000.jpg"), 500)  # re-encoded
        os.rename(root / "dog" / "0001.jpg", root / "cat" / "from-dog.jpg")  # relabelled
        write_image(str(root / "bird" / "0000.jpg"), 501)
        _commit(repo, "v2", "v2")
    # the work tree vanishes: reading a version needs only the git directory
    for name in os.listdir(root):
        if name != ".pixvcs":
            path = root / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for dataset in (ds, pixvcs.open(str(root), "v1")):
        assert [r.path for r in dataset] == sorted(files)
        assert {r.path: r.bytes() for r in dataset} == files
    head = pixvcs.open(str(root))  # HEAD is v2 now
    assert head.commit != ds.commit
    paths = [r.path for r in head]
    assert "bird/0000.jpg" in paths and "cat/from-dog.jpg" in paths and "dog/0001.jpg" not in paths
    assert head[paths.index("cat/0000.jpg")].bytes() == image_bytes(500)

    # added_since: path + oid not in that version (new, re-encoded, moved)
    new = pixvcs.open(str(root), "v2", where={"added_since": "v1"})
    assert [r.path for r in new] == ["bird/0000.jpg", "cat/0000.jpg", "cat/from-dog.jpg"]


def test_bare_copy_of_the_git_directory(
    ds_repo: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    root, files = ds_repo
    shutil.copytree(root / ".pixvcs", tmp_path / "bare.pixvcs")  # a bare repository
    ds = pixvcs.open(str(tmp_path / "bare.pixvcs"), "v1")
    assert {r.path: r.bytes() for r in ds} == files
    assert ds.commit == pixvcs.open(str(root), "v1").commit


def test_include_and_where(ds_repo: tuple[Path, dict[str, bytes]]) -> None:
    root, _ = ds_repo
    path = str(root)

    def paths(**kw: object) -> list[str]:
        return [r.path for r in pixvcs.open(path, "v1", **kw)]  # type: ignore[arg-type]

    assert paths(include="cat/*") == ["cat/0000.jpg", "cat/0001.jpg", "cat/0002.jpg"]
    assert paths(include=["dog/*", "*.png"]) == ["big/wide.png", "dog/0000.jpg", "dog/0001.jpg"]
    assert paths(include="*0001*") == ["cat/0001.jpg", "dog/0001.jpg"]  # '*' crosses '/'
    assert paths(include="Cat/*") == []  # case-sensitive
    assert paths(where={"label": "dog"}) == ["dog/0000.jpg", "dog/0001.jpg"]
    assert paths(where={"label": ["dog", "big"]}) == [
        "big/wide.png",
        "dog/0000.jpg",
        "dog/0001.jpg",
    ]
    assert paths(where={"min_width": 64}) == ["big/wide.png"]
    assert paths(where={"max_height": 35}) == ["big/wide.png"]
    assert len(paths(where={"min_width": 48, "max_width": 48, "min_height": 40})) == 6
    assert paths(include="cat/*", where={"label": "dog"}) == []
    with pytest.raises(UsageError, match="unknown 'where' key"):
        pixvcs.open(path, where={"colour": "red"})
    with pytest.raises(UsageError, match="non-negative integer"):
        pixvcs.open(path, where={"min_width": "64"})
    with pytest.raises(pixvcs.BadRevision):
        pixvcs.open(path, where={"added_since": "no-such-tag"})
    with pytest.raises(UsageError, match="unsupported remote URL"):
        pixvcs.open("ftp://example.org/ds.pixvcs", cache_dir=str(root.parent / "cache"))
    assert not (root.parent / "cache" / "repos").exists()


def test_parse_where() -> None:
    assert parse_where(["label=cat", "label=dog", "min-width=64", "added_since=v1"]) == {
        "label": ["cat", "dog"],
        "min_width": 64,
        "added_since": "v1",
    }
    for bad in (["label"], ["size=3"], ["min_width=big"], ["min_height=-1"]):
        with pytest.raises(UsageError):
            parse_where(bad)


def test_sizes_without_a_catalog(ds_repo: tuple[Path, dict[str, bytes]]) -> None:
    root, _ = ds_repo
    for name in os.listdir(root / ".pixvcs" / "pixvcs"):
        if name.startswith("catalog.db"):
            os.unlink(root / ".pixvcs" / "pixvcs" / name)
    ds = pixvcs.open(str(root), "v1")
    assert all(r.width is None and r.height is None for r in ds)  # unknown until read
    assert ds[0].image().size == (96, 30)
    wide = pixvcs.open(str(root), "v1", where={"min_width": 64})  # reads the headers
    assert [(r.path, r.width, r.height) for r in wide] == [("big/wide.png", 96, 30)]
    assert not os.path.exists(root / ".pixvcs" / "pixvcs" / "catalog.db")  # opening never writes


def test_labels_csv(ds_repo: tuple[Path, dict[str, bytes]]) -> None:
    root, _ = ds_repo
    with Repo.open(str(root)) as repo:
        (root / "labels.csv").write_text(
            "path,label,note\ncat/0000.jpg,tabby,x\nroot.jpg,tabby,\ndog/0000.jpg,,unsure\n"
        )
        _commit(repo, "labels", "labelled")
    ds = pixvcs.open(str(root), "labelled")
    labels = {r.path: r.label for r in ds}
    assert labels["cat/0000.jpg"] == "tabby" and labels["root.jpg"] == "tabby"
    assert labels["dog/0000.jpg"] is None  # empty label: unlabelled
    assert labels["cat/0001.jpg"] is None  # not listed: no folder fallback
    assert "labels.csv" not in labels
    assert [r.path for r in pixvcs.open(str(root), "labelled", where={"label": "tabby"})] == [
        "cat/0000.jpg",
        "root.jpg",
    ]
    assert pixvcs.open(str(root), "v1")[1].label == "cat"  # v1 has no labels.csv


def test_parse_labels_rejects_malformed_files() -> None:
    assert parse_labels(b"\xef\xbb\xbfpath,label\r\na.jpg,x\r\n") == {"a.jpg": "x"}  # BOM, CRLF
    assert parse_labels(b"path,label\na.jpg,x\na.jpg,x\n") == {"a.jpg": "x"}
    for bad, why in (
        (b"file,class\na.jpg,x\n", "header"),
        (b"path,label\na.jpg,x\na.jpg,y\n", "labelled twice"),
        (b"path,label\na.jpg\n", "missing"),
        (b"path,label\n,x\n", "empty path"),
        (b"path,label\n\xff,x\n", "UTF-8"),
    ):
        with pytest.raises(LabelsFileError, match=why):
            parse_labels(bad)


def test_indexing_and_slicing(ds_repo: tuple[Path, dict[str, bytes]]) -> None:
    root, _ = ds_repo
    ds = pixvcs.open(str(root), "v1")
    assert ds[-1].path == "root.jpg" and ds[len(ds) - 1] == ds[-1]
    part = ds[1:4]
    assert isinstance(part, pixvcs.Dataset) and part.commit == ds.commit
    assert [r.path for r in part] == ["cat/0000.jpg", "cat/0001.jpg", "cat/0002.jpg"]
    assert [r.path for r in ds[::3]] == [ds[0].path, ds[3].path, ds[6].path]
    with pytest.raises(IndexError):
        ds[len(ds)]
    labelled = ds.with_transform(_label_and_digest)
    assert len(labelled) == len(ds)
    assert labelled[1] == ("cat", ds[1].oid)


def _label_and_digest(record: pixvcs.Record) -> tuple[str | None, str]:
    return record.label, hashlib.sha256(record.bytes()).hexdigest()


def test_iter_bytes_and_exif(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    im = Image.new("RGB", (48, 40), (10, 200, 30))
    exif = im.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    with Repo.init(str(root)) as repo:
        make_dataset(str(root), {"a": 20})
        (root / "b").mkdir()
        (root / "b" / "rotated.jpg").write_bytes(buf.getvalue())
        _commit(repo, "v1")
    ds = pixvcs.open(str(root))
    got = list(ds.iter_bytes(prefetch=4))
    assert [r for r, _ in got] == list(ds)
    assert all(hashlib.sha256(data).hexdigest() == r.oid for r, data in got)
    assert [d for _, d in ds.iter_bytes(prefetch=1)] == [d for _, d in got]
    rotated = ds[-1]
    assert rotated.image().size == (48, 40)
    assert rotated.image(exif_transpose=True).size == (40, 48)


def test_corrupt_and_missing_objects_are_detected(ds_repo: tuple[Path, dict[str, bytes]]) -> None:
    root, files = ds_repo
    ds = pixvcs.open(str(root), "v1")
    victim = ds[1]
    obj = ds.source.object_path(victim.oid)
    assert obj is not None
    os.chmod(obj, 0o644)
    with open(obj, "r+b") as f:
        f.write(b"\x00\x00\x00")  # a few flipped bytes, same size
    with pytest.raises(CorruptObject) as e:
        victim.bytes()
    assert e.value.expected == victim.oid
    with pytest.raises(CorruptObject):
        victim.image()
    with pytest.raises(CorruptObject):
        list(ds.iter_bytes())
    assert ds[2].bytes() == files[ds[2].path]  # the others still read
    os.unlink(obj)
    with pytest.raises(MissingMedia) as missing:
        victim.bytes()
    assert missing.value.missing == [(victim.path, victim.oid)]


def test_pickle_round_trip_holds_no_handles(ds_repo: tuple[Path, dict[str, bytes]]) -> None:
    root, files = ds_repo
    with Repo.open(str(root)) as repo:
        ds = pixvcs.open(repo, "v1")  # an open Repo is accepted, too
        ds.source.list_entries(ds.commit)  # the source now holds an open repository
        blob = pickle.dumps(ds)
    assert b"sqlite" not in blob and b"dulwich" not in blob
    copy = pickle.loads(blob)
    assert copy.commit == ds.commit and list(copy) == list(ds)
    assert {r.path: r.bytes() for r in copy} == files
    assert copy.source.resolve("v1") == ds.commit  # reopened lazily
    copy.close()


# -- several processes, as DataLoader workers -------------------------------------------
_WORKER_DATASET: object = None


def _worker_init(dataset: object) -> None:
    global _WORKER_DATASET
    _WORKER_DATASET = dataset


def _worker_batch(indices: list[int]) -> list[tuple[str | None, str]]:
    dataset = _WORKER_DATASET
    assert dataset is not None
    return [dataset[i] for i in indices]  # type: ignore[index]


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_dataloader_style_workers(ds_repo: tuple[Path, dict[str, bytes]], method: str) -> None:
    if method not in multiprocessing.get_all_start_methods():
        method = "spawn"  # pragma: no cover - fork exists on every POSIX system we run on
    root, _ = ds_repo
    ds = pixvcs.open(str(root), "v1")
    ds.source.resolve("HEAD")  # the parent has used (and holds) its repository
    items = ds.with_transform(_label_and_digest)
    batches = [[0, 1, 2], [3, 4], [5, 6]]
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2, initializer=_worker_init, initargs=(items,)) as pool:
        got = [item for batch in pool.map(_worker_batch, batches) for item in batch]
    assert got == [(r.label, r.oid) for r in ds]


def test_to_hf_without_datasets(
    ds_repo: tuple[Path, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = ds_repo
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    ds = pixvcs.open(str(root), "v1")
    with pytest.raises(MissingDependency, match="pip install datasets") as e:
        ds.to_hf()
    assert isinstance(e.value, pixvcs.PixvcsError) and isinstance(e.value, ImportError)


# -- docs/python-api.md, "Reading a pinned version" ---------------------------------------
def test_docs_dataset_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = fixtures(DOCS.read_text(encoding="utf-8"))["dataset-example"]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/python-api.md", "exec"), {"__name__": "__docs__"})


def test_docs_pytorch_example_compiles() -> None:
    """Only compiled: torch is not a dependency, and the example must not need it here."""
    example = fixtures(DOCS.read_text(encoding="utf-8"))["pytorch-example"]
    code = compile(example, "docs/python-api.md", "exec")
    assert "with_transform" in example and "DataLoader" in code.co_names
    for name in ("open", "with_transform", "image", "classes", "commit"):
        assert name in example


def test_docs_document_the_dataset_api() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for name in ("open", "iter_bytes", "with_transform", "to_hf", "bytes", "image", "export"):
        assert f"`{name}(" in text or f"`pixvcs.{name}(" in text or f".{name}(" in text, name
    for name in pixvcs.dataset.WHERE_KEYS:
        assert f"`{name}`" in text, name
    for error in ("LabelsFileError", "MissingDependency"):
        assert error in text


# -- verification modes --------------------------------------------------------------------
def _rot_in_place(path: str) -> None:
    """Flip bytes of a read-only object and make it read-only again, as a stray
    tool with write access would: size, mode and link count unchanged."""
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"\x00\x00\x00")
    os.chmod(path, 0o444)


def test_verify_modes_on_a_silently_rotten_object(
    ds_repo: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    root, files = ds_repo
    ds = pixvcs.open(str(root), "v1")
    victim = ds[1]
    obj = ds.source.object_path(victim.oid)
    assert obj is not None
    _rot_in_place(obj)
    # the default trusts the repository's own read-only, unlinked objects (fsck checks them)
    assert victim.bytes() != files[victim.path]
    # ... and hashes them when asked: per read, or for the whole dataset
    with pytest.raises(CorruptObject) as e:
        list(ds.iter_bytes(verify=True))
    assert e.value.expected == victim.oid
    strict = pixvcs.open(str(root), "v1", verify="always")
    with pytest.raises(CorruptObject):
        strict[1].bytes()
    with pytest.raises(CorruptObject):
        list(strict.iter_bytes())
    assert strict[2].bytes() == files[strict[2].path]
    # export always hashes before it links or writes
    with pytest.raises(CorruptObject):
        export(ds[:4], str(tmp_path / "out"), format="imagefolder")
    with Repo.open(str(root)) as repo:
        assert not repo.fsck().ok
    with pytest.raises(UsageError, match="verify"):
        pixvcs.open(str(root), "v1", verify="never")


def test_objects_something_else_can_write_are_always_hashed(
    ds_repo: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    root, files = ds_repo
    ds = pixvcs.open(str(root), "v1")
    a, b = ds[1], ds[2]
    obj_a, obj_b = ds.source.object_path(a.oid), ds.source.object_path(b.oid)
    assert obj_a is not None and obj_b is not None
    # writable: someone chmodded it (the store publishes 0444)
    os.chmod(obj_a, 0o644)
    assert a.bytes() == files[a.path]  # hashed, and fine
    with open(obj_a, "r+b") as f:
        f.write(b"\x00\x00\x00")
    with pytest.raises(CorruptObject):
        a.bytes()
    # hardlinked (add --link, an export): the other name can be edited
    os.link(obj_b, tmp_path / "elsewhere.jpg")
    _rot_in_place(obj_b)
    with pytest.raises(CorruptObject):
        b.bytes()
    with pytest.raises(CorruptObject):
        list(ds[2:3].iter_bytes())


def test_iter_bytes_yields_in_order_up_to_a_missing_object(
    ds_repo: tuple[Path, dict[str, bytes]],
) -> None:
    root, files = ds_repo
    ds = pixvcs.open(str(root), "v1")
    victim = ds[3]
    obj = ds.source.object_path(victim.oid)
    assert obj is not None
    os.unlink(obj)
    got: list[str] = []
    with pytest.raises(MissingMedia):
        for record, data in ds.iter_bytes():
            assert data == files[record.path]
            got.append(record.path)
    assert got == [r.path for r in ds[:3]]
    with pytest.raises(CorruptObject):  # never a path of our making
        ds.source.read("../../../etc/passwd")


def test_listing_trusts_the_index_only_where_the_blob_id_agrees(
    ds_repo: tuple[Path, dict[str, bytes]],
) -> None:
    root, _ = ds_repo
    expected = [(r.path, r.oid, r.size) for r in pixvcs.open(str(root), "v1")]
    index = root / ".pixvcs" / "pixvcs" / "index.db"
    other = hashlib.sha256(b"not the image").hexdigest()

    db = sqlite3.connect(index)
    with db:  # a lying index: every media row names another object
        db.execute("UPDATE entries SET oid = ?, size = size + 1 WHERE kind = 'media'", (other,))
    db.close()
    ds = pixvcs.open(str(root), "v1")
    assert [(r.path, r.oid, r.size) for r in ds] == expected
    index.write_bytes(b"not a database")
    assert [(r.path, r.oid, r.size) for r in pixvcs.open(str(root), "v1")] == expected
