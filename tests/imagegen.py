"""Test images, generated with Pillow: deterministic, small, of every format."""

from __future__ import annotations

import io
import os
import random

from PIL import Image


def image_bytes(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (48, 40)) -> bytes:
    rng = random.Random(seed)
    im = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    px = im.load()
    assert px is not None
    for _ in range(60):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        px[x, y] = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def write_image(path: str, seed: int, fmt: str = "JPEG", size: tuple[int, int] = (48, 40)) -> bytes:
    data = image_bytes(seed, fmt, size)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return data


def make_dataset(root: str, classes: dict[str, int], seed: int = 0) -> dict[str, bytes]:
    """Class folders of JPEGs; returns relative path -> bytes."""
    out = {}
    n = seed * 10_000
    for cls, count in classes.items():
        for i in range(count):
            rel = f"{cls}/{i:04d}.jpg"
            out[rel] = write_image(os.path.join(root, cls, f"{i:04d}.jpg"), n)
            n += 1
    return out


def snapshot(root: str) -> dict[str, bytes]:
    """Every file under root except .pixvcs, as relative path -> bytes."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root and ".pixvcs" in dirnames:
            dirnames.remove(".pixvcs")
        for name in filenames:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, root).replace(os.sep, "/")] = f.read()
    return out
