"""Exporting a pinned version to the formats ML tools read.

Three formats, each a pure function of the version's bytes (same version,
same filters → byte-identical output, whatever machine or catalog state):

``imagefolder``
    ``DEST/<label>/<file>``, the layout torchvision's ``ImageFolder`` and
    Hugging Face's ``imagefolder`` loader read. Images are hardlinked from the
    read-only media objects where the filesystem allows (after verifying
    their hash), else copied.
``webdataset``
    ``DEST/shard-000000.tar``, ...: ``shard_size`` images per shard, each
    sample an image member ``<key>.<ext>`` and a ``<key>.json`` sidecar.
    Tar headers carry fixed metadata (mtime 0, uid/gid 0, no user names,
    mode 0644), so shards depend only on the images.
``csv-manifest``
    One CSV file ``path,label,oid,size``, one row per image.

Nothing is written for an export that cannot be completed as asked (a
non-empty DEST, unlabelled images in an ImageFolder, colliding names): those
are checked before the first file is written.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import posixpath
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import UnsafeTreeEntry, UsageError

if TYPE_CHECKING:  # loaded by the functions that need them: `pixvcs --help` stays fast
    from .dataset import Dataset, Record

FORMATS = ("imagefolder", "webdataset", "csv-manifest")
DEFAULT_SHARD_SIZE = 1000
MANIFEST_COLUMNS = ("path", "label", "oid", "size")
#: Every tar member gets these header fields, so shards are reproducible.
TAR_MTIME = 0
TAR_MODE = 0o644
_FORMAT_EXT = {
    "JPEG": "jpg",
    "PNG": "png",
    "GIF": "gif",
    "WEBP": "webp",
    "BMP": "bmp",
    "TIFF": "tif",
}
#: Errors from os.link that mean "cannot link here": fall back to a copy.
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES}

Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


@dataclass
class ExportResult:
    format: str
    dest: str
    commit: str
    images: int = 0
    files: int = 0  # files written (images, shards, or the manifest)
    linked: int = 0  # images hardlinked rather than copied (imagefolder)
    bytes: int = 0  # bytes written (hardlinked images count their size)
    shards: list[str] = field(default_factory=list)  # shard names (webdataset)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "dest": self.dest,
            "commit": self.commit,
            "images": self.images,
            "files": self.files,
            "linked": self.linked,
            "bytes": self.bytes,
            "shards": self.shards,
        }


def export(
    dataset: Dataset,
    dest: str,
    *,
    format: str,
    shard_size: int = DEFAULT_SHARD_SIZE,
    link: bool = True,
    progress: Progress = _no_progress,
) -> ExportResult:
    """Write ``dataset`` to ``dest`` in ``format`` (one of :data:`FORMATS`).

    ``dest`` is a directory (created; must be empty) for ``imagefolder`` and
    ``webdataset``, a file (must not exist) for ``csv-manifest``. ``link=False``
    copies images instead of hardlinking them (imagefolder).
    """
    if format not in FORMATS:
        raise UsageError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if shard_size < 1:
        raise UsageError("shard size must be at least 1")
    dest = os.path.abspath(dest)
    result = ExportResult(format, dest, dataset.commit, images=len(dataset))
    if format == "csv-manifest":
        _csv_manifest(dataset, dest, result)
    elif format == "imagefolder":
        _imagefolder(dataset, dest, result, link=link, progress=progress)
    else:
        _webdataset(dataset, dest, result, shard_size=shard_size, progress=progress)
    return result


def _empty_dir(dest: str) -> None:
    if os.path.isdir(dest):
        if os.listdir(dest):
            raise UsageError(f"{dest}: the export destination must be empty or not exist")
    elif os.path.exists(dest):
        raise UsageError(f"{dest}: exists and is not a directory")
    os.makedirs(dest, exist_ok=True)


def _write_new(path: str, data: bytes) -> None:
    """Write a new file through a temporary name and a rename (no half files)."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# -- csv-manifest ----------------------------------------------------------------------------
def _csv_manifest(dataset: Dataset, dest: str, result: ExportResult) -> None:
    if os.path.exists(dest):
        raise UsageError(f"{dest}: the manifest file already exists")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for r in dataset:
        writer.writerow([r.path, r.label or "", r.oid, r.size])
    data = buf.getvalue().encode("utf-8")
    _write_new(dest, data)
    result.files, result.bytes = 1, len(data)


# -- imagefolder -----------------------------------------------------------------------------
def imagefolder_path(record: Record) -> str:
    """``<label>/<file>``: the path below its class folder when the label is that
    folder (the usual layout), else the whole version path under the label."""
    if record.label is None:
        raise UsageError(f"{record.path} has no label")
    prefix = record.label + "/"
    rest = record.path[len(prefix) :] if record.path.startswith(prefix) else record.path
    return f"{record.label}/{rest}"


def _imagefolder(
    dataset: Dataset, dest: str, result: ExportResult, *, link: bool, progress: Progress
) -> None:
    targets: dict[str, str] = {}
    unlabelled = [r.path for r in dataset if r.label is None]
    if unlabelled:
        raise UsageError(
            f"{len(unlabelled)} image(s) have no label (e.g. {unlabelled[0]}); an ImageFolder "
            "needs one folder per label: select labelled images with --include or --where"
        )
    for r in dataset:
        rel = imagefolder_path(r)
        try:
            from .trees import check_name

            check_name(str(r.label).encode(), "")  # a label is one folder name
        except UnsafeTreeEntry:
            raise UsageError(f"{r.path}: its label {r.label!r} cannot be a folder name") from None
        if rel in targets:
            raise UsageError(f"{targets[rel]} and {r.path} would both be exported as {rel}")
        targets[rel] = r.path
    _empty_dir(dest)
    made: set[str] = set()
    total = len(dataset)
    # every object hashed before it is linked or written, whatever the dataset trusts
    for n, (r, data) in enumerate(dataset.iter_bytes(verify=True), 1):
        rel = imagefolder_path(r)
        path = os.path.join(dest, *rel.split("/"))
        parent = os.path.dirname(path)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        if link and _try_link(dataset, r, path):
            result.linked += 1
        else:
            _write_new(path, data)
        result.files += 1
        result.bytes += len(data)
        progress("export", n, total)


def _try_link(dataset: Dataset, record: Record, path: str) -> bool:
    src = dataset.source.object_path(record.oid)
    if src is None:
        return False
    try:
        os.link(src, path)
    except OSError as e:
        if e.errno in _NO_LINK:  # another filesystem, or no hardlinks here: copy instead
            return False
        raise
    return True


# -- webdataset ------------------------------------------------------------------------------
def shard_name(n: int) -> str:
    return f"shard-{n:06d}.tar"


def sample_keys(records: list[Record]) -> list[str]:
    """A stable WebDataset key per record: its path without the extension, with
    dots in the file name replaced by ``_`` (WebDataset splits the key from the
    extension at the first dot of the name). Keys that would collide get a
    short hash of their path appended."""
    keys = []
    for r in records:
        folder, name = posixpath.split(r.path)
        stem = name.rsplit(".", 1)[0] if "." in name[1:] else name
        stem = stem.replace(".", "_") or "_"
        keys.append(posixpath.join(folder, stem))
    seen: dict[str, int] = {}
    for k in keys:
        seen[k] = seen.get(k, 0) + 1
    return [
        k if seen[k] == 1 else f"{k}_{hashlib.sha256(r.path.encode()).hexdigest()[:12]}"
        for k, r in zip(keys, records, strict=True)
    ]


def _extension(record: Record, data: bytes) -> str:
    name = posixpath.basename(record.path)
    if "." in name[1:]:
        ext = name.rsplit(".", 1)[1].lower()
        if ext and ext != "json":
            return ext
    from .imageinfo import sniff

    return _FORMAT_EXT.get(sniff(data[:32]) or "", "bin")


def _dims(record: Record, data: bytes) -> tuple[int | None, int | None]:
    if record.width is not None and record.height is not None:
        return record.width, record.height
    # not in the catalog: read the header, so the sidecar never depends on catalog state
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):  # invalid image
        return None, None


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = TAR_MTIME
    info.mode = TAR_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    tar.addfile(info, io.BytesIO(data))


def _provenance(dataset: Dataset) -> dict[str, dict[str, object]]:
    """oid -> provenance record, from the version's provenance/*.jsonl files."""
    from .provenance import is_provenance_file, objects_by_oid

    source = dataset.source
    files = [
        (e.path, source.read_blob(e.blob))
        for e in source.list_entries(dataset.commit)
        if e.kind == "blob" and is_provenance_file(e.path)
    ]
    return objects_by_oid(files)


def _webdataset(
    dataset: Dataset, dest: str, result: ExportResult, *, shard_size: int, progress: Progress
) -> None:
    records = list(dataset)
    keys = sample_keys(records)
    provenance = _provenance(dataset)
    _empty_dir(dest)
    total = len(records)
    tar: tarfile.TarFile | None = None
    tmp = ""
    try:
        for n, ((r, data), key) in enumerate(
            zip(dataset.iter_bytes(verify=True), keys, strict=True)
        ):
            if n % shard_size == 0:
                if tar is not None:
                    result.bytes += _close_shard(tar, tmp, dest, result)
                name = shard_name(n // shard_size)
                tmp = os.path.join(dest, f".{name}.tmp")
                # closed by _close_shard, or in the finally below on failure
                tar = tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
                result.shards.append(name)
            assert tar is not None
            width, height = _dims(r, data)
            sidecar = {
                "label": r.label,
                "oid": r.oid,
                "path": r.path,
                "width": width,
                "height": height,
                "size": r.size,
                "provenance": provenance.get(r.oid),
            }
            _tar_member(tar, f"{key}.{_extension(r, data)}", data)
            meta = json.dumps(sidecar, sort_keys=True, separators=(",", ":")).encode()
            _tar_member(tar, f"{key}.json", meta)
            progress("export", n + 1, total)
        if tar is not None:
            result.bytes += _close_shard(tar, tmp, dest, result)
            tar = None
    finally:
        if tar is not None:  # failed half-way: leave no partial shard behind
            tar.close()
            os.unlink(tmp)


def _close_shard(tar: tarfile.TarFile, tmp: str, dest: str, result: ExportResult) -> int:
    tar.close()
    final = os.path.join(dest, result.shards[-1])
    os.replace(tmp, final)
    result.files += 1
    return os.path.getsize(final)
