"""Deterministic generated JPEG dataset for the benchmark.

Layout: ``DEST/class_XX/img_NNNNNNN.jpg`` with ``--classes`` class folders
(default 10); image ``i`` goes to class ``i % classes``. Each image is drawn
from its own RNG seeded by ``(seed, i)``: a smooth colour field (bicubic
upscale of a tiny random grid), a few filled shapes, and a seeded amount of
fine grain, so JPEG sizes spread over roughly 10-60 KB. Image ``i`` is the same
bytes whatever ``--count`` is, so a 20k dataset is the first 20k of a 100k one.

Usage::

    python bench/gen_dataset.py DEST --count 20000 --seed 1
    python bench/gen_dataset.py DEST --change 0.01 --seed 1 --salt step1

``--change`` re-encodes a deterministic fraction of the existing images (a
shape drawn on them, a different quality), each replaced through a temporary
file and a rename, so a read-only hardlinked file is never written through.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image, ImageDraw

GENERATOR_VERSION = 1
MARKER = ".bench-dataset.json"
MIN_BYTES = 10 * 1024
MAX_BYTES = 60 * 1024


def _rng(seed: int, i: int, salt: str = "") -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{i}:{salt}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def render(seed: int, i: int) -> bytes:
    """The JPEG bytes of image ``i`` (deterministic)."""
    rng = _rng(seed, i)
    w = int(rng.integers(224, 400))
    h = int(rng.integers(192, 352))
    grid = rng.integers(0, 256, size=(int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3))
    im = Image.fromarray(grid.astype(np.uint8), "RGB").resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(2, 9))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    # fine grain: the main knob on the JPEG size; nudged until it lands in 10-60 KB
    amp = float(rng.uniform(3.0, 24.0))
    quality = int(rng.integers(70, 93))
    base = np.asarray(im, dtype=np.float32)
    noise = rng.normal(0.0, 1.0, size=(h, w, 1)).astype(np.float32)
    for _ in range(8):
        arr = np.clip(base + noise * amp, 0, 255).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(arr, "RGB").save(out, "JPEG", quality=quality)
        size = out.tell()
        if size < MIN_BYTES:
            amp = amp * 1.6 + 2.0
        elif size > MAX_BYTES:
            amp *= 0.7
            quality = max(60, quality - 4)
        else:
            break
    return out.getvalue()


def rel_path(i: int, classes: int) -> str:
    return f"class_{i % classes:02d}/img_{i:07d}.jpg"


def _write_range(dest: str, seed: int, classes: int, start: int, stop: int) -> int:
    total = 0
    for i in range(start, stop):
        data = render(seed, i)
        path = os.path.join(dest, rel_path(i, classes))
        with open(path, "wb") as f:
            f.write(data)
        total += len(data)
    return total


def params(count: int, seed: int, classes: int) -> dict[str, int]:
    return {"count": count, "seed": seed, "classes": classes, "generator": GENERATOR_VERSION}


def is_complete(dest: str, count: int, seed: int, classes: int = 10) -> bool:
    try:
        with open(os.path.join(dest, MARKER)) as f:
            found = json.load(f)
    except (FileNotFoundError, ValueError):
        return False
    return {k: found.get(k) for k in ("count", "seed", "classes", "generator")} == params(
        count, seed, classes
    )


def generate(
    dest: str, count: int, seed: int, *, classes: int = 10, jobs: int | None = None
) -> dict[str, float]:
    """Write the dataset (in parallel over the cores); reuse it if already complete.

    The marker file sits next to the class folders but is not part of the data:
    copies of the dataset are made from the class folders only."""
    if is_complete(dest, count, seed, classes):
        with open(os.path.join(dest, MARKER)) as f:
            return dict(json.load(f))
    if os.path.exists(dest):
        import shutil

        shutil.rmtree(dest)
    for c in range(classes):
        os.makedirs(os.path.join(dest, f"class_{c:02d}"), exist_ok=True)
    jobs = jobs or os.cpu_count() or 1
    chunk = 500
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [
            pool.submit(_write_range, dest, seed, classes, s, min(count, s + chunk))
            for s in range(0, count, chunk)
        ]
        total = sum(f.result() for f in futures)
    info = {
        **params(count, seed, classes),
        "bytes": total,
        "mean_kb": round(total / max(count, 1) / 1024, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    info.update(size_stats(dest))
    with open(os.path.join(dest, MARKER), "w") as f:
        json.dump(info, f, indent=2)
    return info


def list_images(root: str) -> list[str]:
    """Every ``.jpg`` under ``root`` as sorted "/" relative paths (skips dot dirs)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            if name.endswith(".jpg"):
                out.append(name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/"))
    return sorted(out)


def size_stats(root: str) -> dict[str, float]:
    sizes = np.array([os.path.getsize(os.path.join(root, p)) for p in list_images(root)])
    if not len(sizes):
        return {}
    return {
        "min_kb": round(float(sizes.min()) / 1024, 1),
        "p05_kb": round(float(np.percentile(sizes, 5)) / 1024, 1),
        "median_kb": round(float(np.median(sizes)) / 1024, 1),
        "p95_kb": round(float(np.percentile(sizes, 95)) / 1024, 1),
        "max_kb": round(float(sizes.max()) / 1024, 1),
    }


def pick_changes(paths: list[str], count: int, seed: int, salt: str) -> list[str]:
    """A deterministic sample of ``count`` of ``paths`` (sorted input, sorted output)."""
    rng = _rng(seed, -1, "pick:" + salt)
    idx = rng.choice(len(paths), size=min(count, len(paths)), replace=False)
    return sorted(paths[int(k)] for k in idx)


def modify(data: bytes, seed: int, rel: str, salt: str) -> bytes:
    """New JPEG bytes for an image: a mark drawn on it, re-encoded."""
    rng = _rng(seed, int(hashlib.sha256(rel.encode()).hexdigest()[:8], 16), "mod:" + salt)
    im = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = im.size
    draw = ImageDraw.Draw(im)
    x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
    draw.rectangle(
        (x0, y0, x0 + int(rng.integers(8, 64)), y0 + int(rng.integers(8, 64))),
        fill=tuple(int(c) for c in rng.integers(0, 256, size=3)),
    )
    out = io.BytesIO()
    im.save(out, "JPEG", quality=int(rng.integers(70, 93)))
    return out.getvalue()


def change_images(
    root: str,
    *,
    fraction: float | None = None,
    count: int | None = None,
    seed: int = 1,
    salt: str = "change",
) -> list[str]:
    """Re-encode a deterministic ``fraction`` (or ``count``) of the images under
    ``root`` in place (temp file + rename). Returns the changed relative paths.
    The same (root contents, seed, salt) always changes the same files to the same bytes."""
    paths = list_images(root)
    n = count if count is not None else max(1, round(len(paths) * (fraction or 0.01)))
    chosen = pick_changes(paths, n, seed, salt)
    for rel in chosen:
        full = os.path.join(root, *rel.split("/"))
        with open(full, "rb") as f:
            new = modify(f.read(), seed, rel, salt)
        tmp = full + ".bench-tmp"
        with open(tmp, "wb") as f:
            f.write(new)
        os.replace(tmp, full)
    return chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dest")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument(
        "--change",
        type=float,
        default=None,
        help="instead of generating, re-encode this fraction of DEST's images",
    )
    ap.add_argument("--salt", default="change", help="varies which images --change picks")
    args = ap.parse_args(argv)
    if args.change is not None:
        changed = change_images(args.dest, fraction=args.change, seed=args.seed, salt=args.salt)
        print(f"changed {len(changed)} image(s)")
        return 0
    info = generate(args.dest, args.count, args.seed, classes=args.classes, jobs=args.jobs)
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
