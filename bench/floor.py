"""The reference floor: the least work any tool that versions these images must do.

For every file under SRC, over all cores (one process per core, files in
batches):

- ``full`` (default): read every byte, SHA-256 it, decode the image once
  (Pillow JPEG draft mode, ``im.draft('L', (128, 128)); im.load()``, as pixvcs
  does to validate), and write it once to a content-addressed DEST store
  (``DEST/<oid[0:2]>/<oid[2:4]>/<oid>``); one ``syncfs`` at the end makes the
  store durable, the same guarantee pixvcs gives.
- ``nodecode``: the same without decoding (read + hash + write + sync).
- ``link``: read + hash + decode, nothing written (what a hardlinking tool
  cannot avoid).

Usage::

    python bench/floor.py SRC [DEST] --mode full|nodecode|link [--jobs N]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import hashlib
import io
import json
import os
import sys
import time
from multiprocessing import Pool

BATCH = 64
MODES = ("full", "nodecode", "link")


def list_files(src: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out.extend(os.path.join(dirpath, n) for n in filenames if not n.startswith("."))
    out.sort()
    return out


def _work(args: tuple[list[str], str | None, bool]) -> tuple[int, int]:
    paths, dest, decode = args
    from PIL import Image

    nbytes = 0
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        oid = hashlib.sha256(data).hexdigest()
        if decode:
            im = Image.open(io.BytesIO(data))
            im.draft("L", (128, 128))
            im.load()
        if dest is not None:
            d = os.path.join(dest, oid[0:2], oid[2:4])
            os.makedirs(d, exist_ok=True)
            final = os.path.join(d, oid)
            if not os.path.exists(final):
                with open(final, "wb") as f:
                    f.write(data)
        nbytes += len(data)
    return len(paths), nbytes


def _syncfs(path: str) -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):  # not glibc: fall back to a global sync
        pass
    os.sync()


def run_floor(src: str, dest: str | None, mode: str, jobs: int | None = None) -> dict[str, float]:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    t0 = time.perf_counter()
    files = list_files(src)
    write = mode != "link"
    if write:
        if dest is None:
            raise ValueError(f"mode {mode} needs a DEST store")
        os.makedirs(dest, exist_ok=True)
    decode = mode != "nodecode"
    jobs = jobs or os.cpu_count() or 1
    chunks = [
        (files[i : i + BATCH], dest if write else None, decode) for i in range(0, len(files), BATCH)
    ]
    n = total = 0
    with Pool(jobs) as pool:
        for count, nbytes in pool.imap_unordered(_work, chunks):
            n += count
            total += nbytes
    if write and dest is not None:
        _syncfs(dest)
    return {"files": n, "bytes": total, "seconds": time.perf_counter() - t0, "mode": mode}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dest", nargs="?", default=None)
    ap.add_argument("--mode", choices=MODES, default="full")
    ap.add_argument("--jobs", type=int, default=None)
    args = ap.parse_args(argv)
    print(json.dumps(run_floor(args.src, args.dest, args.mode, args.jobs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
