#!/usr/bin/env python3
"""Near-duplicate detection quality on real photographs (a study, not a test).

    python3 -m venv bench/work/quality-venv
    bench/work/quality-venv/bin/pip install scikit-image pillow imagehash numpy
    PYTHONPATH=. bench/work/quality-venv/bin/python bench/neardup_quality.py [--out bench/quality.md]

The photographs are the ones bundled in scikit-image's wheel (``skimage/data``),
read straight from the installed package: nothing is downloaded. Each photo is
hashed the way pixvcs hashes an added file (``imageinfo.inspect_image`` on the
encoded bytes: the phash-v2 recipe), then transformed copies of it are encoded
and hashed the same way. Reported, at the default threshold
(``DuplicatesPolicy().near_distance``) and a few others:

- recall per transform: the fraction of (photo, copy) pairs within the threshold;
- the false-positive rate over all pairs of distinct photos: the fraction of
  pairs of *different* photos within the threshold;
- the distance distributions (min / median / max).

A second false-positive figure uses the 200 small face photographs of
``skimage/data/lfw_subset.npy`` (25x25 grey crops of Labeled Faces in the Wild),
all of one kind, so similar in layout: a harder set for false positives.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
from collections.abc import Callable
from itertools import combinations

import numpy as np
from PIL import Image, ImageEnhance

from pixvcs import neardup
from pixvcs.imageinfo import PHASH_RECIPE, inspect_image
from pixvcs.policy import DuplicatesPolicy

#: The bundled files that are photographs (of scenes, objects, textures, specimens,
#: the sky, a printed page). Left out as not photographs: chessboard_*, color,
#: logo, phantom, horse (a silhouette), clock_motion (synthetic); and the
#: multi-page TIFFs and the GIF (tiny test files).
PHOTOS = [
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "microaneurysms.png",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
]
OTHER_DISTANCES = (2, 4, 8, 10, 12)


def encode(im: Image.Image, fmt: str = "PNG", **kw: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def resize(f: float) -> Callable[[Image.Image], bytes]:
    def t(im: Image.Image) -> bytes:
        size = (max(1, round(im.width * f)), max(1, round(im.height * f)))
        return encode(im.resize(size, Image.Resampling.LANCZOS))

    return t


def jpeg(q: int) -> Callable[[Image.Image], bytes]:
    return lambda im: encode(im, "JPEG", quality=q)


def crop(f: float, *, centred: bool) -> Callable[[Image.Image], bytes]:
    """Remove ``f`` of the width and of the height: half on each side (centred), or
    all of it from the right and bottom (keeping the top-left corner)."""

    def t(im: Image.Image) -> bytes:
        dx, dy = round(im.width * f), round(im.height * f)
        if centred:
            box = (dx // 2, dy // 2, im.width - (dx - dx // 2), im.height - (dy - dy // 2))
        else:
            box = (0, 0, im.width - dx, im.height - dy)
        return encode(im.crop(box))

    return t


def brightness(f: float) -> Callable[[Image.Image], bytes]:
    return lambda im: encode(ImageEnhance.Brightness(im).enhance(f))


TRANSFORMS: dict[str, Callable[[Image.Image], bytes]] = {
    "PNG re-encode (control)": encode,
    "resize 50%": resize(0.5),
    "resize 75%": resize(0.75),
    "JPEG q90": jpeg(90),
    "JPEG q70": jpeg(70),
    "JPEG q50": jpeg(50),
    "crop 5% (centred)": crop(0.05, centred=True),
    "crop 10% (centred)": crop(0.10, centred=True),
    "crop 5% (corner)": crop(0.05, centred=False),
    "crop 10% (corner)": crop(0.10, centred=False),
    "brightness +10%": brightness(1.1),
    "brightness -10%": brightness(0.9),
    "brightness +20%": brightness(1.2),
    "brightness -20%": brightness(0.8),
}


def phash(data: bytes) -> int:
    return int(inspect_image(data).phash, 16)


def dist(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def spread(values: list[int]) -> str:
    return f"{min(values)} / {statistics.median(values):g} / {max(values)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "quality.md"))
    ap.add_argument(
        "--results-md",
        default=os.path.join(os.path.dirname(__file__), "results.md"),
        help="the results.md that gets the summary section",
    )
    ap.add_argument(
        "--splice-only",
        action="store_true",
        help="only put the summary of an existing --out into --results-md",
    )
    args = ap.parse_args()
    if args.splice_only:
        with open(args.out, encoding="utf-8") as f:
            splice_summary(args.results_md, f.read())
        return 0
    import skimage

    d = DuplicatesPolicy().near_distance
    data_dir = os.path.join(os.path.dirname(skimage.__file__), "data")

    originals: dict[str, int] = {}
    copies: dict[str, dict[str, int]] = {t: {} for t in TRANSFORMS}
    for name in PHOTOS:
        with open(os.path.join(data_dir, name), "rb") as f:
            raw = f.read()
        originals[name] = phash(raw)
        with Image.open(io.BytesIO(raw)) as src:
            im = src.convert("RGB") if src.mode not in ("RGB", "L") else src.copy()
        for t, fn in TRANSFORMS.items():
            copies[t][name] = phash(fn(im))

    names = list(originals)
    distinct = {(a, b): dist(originals[a], originals[b]) for a, b in combinations(names, 2)}
    # the production search agrees with brute force on these pairs
    found = neardup.find_pairs([originals[n] for n in names], d)
    assert {(names[i], names[j]) for i, j, _ in found} == {p for p, v in distinct.items() if v <= d}

    faces = np.load(os.path.join(data_dir, "lfw_subset.npy"))
    face_hashes = [
        phash(encode(Image.fromarray(np.clip(f * 255.0, 0, 255).round().astype(np.uint8), "L")))
        for f in faces
    ]
    face_pairs = [dist(a, b) for a, b in combinations(face_hashes, 2)]

    out: list[str] = []
    w = out.append
    w("# Near-duplicate detection quality on real photographs\n")
    w("Generated by `bench/neardup_quality.py` (do not edit by hand).\n")
    w(
        f"- Photos: the {len(names)} photographs bundled in scikit-image "
        f"{skimage.__version__}'s wheel (`skimage/data`): "
        + ", ".join(f"`{n}`" for n in names)
        + "."
    )
    w(
        "- Hash: pixvcs's own pipeline, `imageinfo.inspect_image` on the encoded bytes "
        f"({PHASH_RECIPE.split(':')[0]}); threshold: the default `near_distance` = **{d}**."
    )
    w(
        "- Copies: each transform applied to the decoded photo, saved as PNG (lossless, so "
        "only the transform changes the pixels) except the JPEG transforms. Crop p% removes "
        "p% of the width and of the height: centred (half from each side) or from the right "
        "and bottom (corner). Brightness is `ImageEnhance.Brightness` (values clip at 255)."
    )
    import PIL

    w(f"- Python {platform.python_version()}, Pillow {PIL.__version__}, numpy {np.__version__}.\n")
    w(f"## Recall per transform (distance ≤ {d})\n")
    cols = " | ".join(f"≤ {x}" for x in OTHER_DISTANCES)
    w(f"| transform | recall at ≤ {d} | distance min / median / max | {cols} |")
    w("|---|---:|---|" + "---:|" * len(OTHER_DISTANCES))
    all_copies: list[int] = []
    for t in TRANSFORMS:
        ds = [dist(originals[n], copies[t][n]) for n in names]
        all_copies += ds
        hit = sum(x <= d for x in ds)
        others = " | ".join(f"{sum(x <= k for x in ds)}/{len(ds)}" for k in OTHER_DISTANCES)
        w(f"| {t} | **{hit}/{len(ds)}** ({hit / len(ds):.0%}) | {spread(ds)} | {others} |")
    hit = sum(x <= d for x in all_copies)
    w(
        f"| *all transforms* | **{hit}/{len(all_copies)}** ({hit / len(all_copies):.0%}) "
        f"| {spread(all_copies)} | "
        + " | ".join(
            f"{sum(x <= k for x in all_copies)}/{len(all_copies)}" for k in OTHER_DISTANCES
        )
        + " |\n"
    )
    w("Distance of every copy to its original (`·` = within the threshold, the number = missed):\n")
    short = [t.replace(" (control)", "").replace("brightness ", "") for t in TRANSFORMS]
    w("| photo | " + " | ".join(short) + " |")
    w("|---|" + "---:|" * len(TRANSFORMS))
    for n in names:
        row = []
        for t in TRANSFORMS:
            x = dist(originals[n], copies[t][n])
            row.append(f"{x}" if x > d else f"· {x}")
        w(f"| `{n}` | " + " | ".join(row) + " |")
    w("")

    w(f"## False positives: pairs of distinct photos (distance ≤ {d})\n")
    vals = list(distinct.values())
    fp = sum(v <= d for v in vals)
    w(
        f"- {len(names)} photos, {len(vals)} pairs: **{fp}/{len(vals)}** within {d} "
        f"(false-positive rate {fp / len(vals):.1%}); distance min / median / max "
        f"{spread(vals)}."
    )
    w(
        "- At other thresholds: "
        + ", ".join(f"≤ {k}: {sum(v <= k for v in vals)}" for k in OTHER_DISTANCES)
        + "."
    )
    closest = sorted((v, a, b) for (a, b), v in distinct.items())[:5]
    w(
        "- Closest pairs: "
        + "; ".join(f"`{a}` ↔ `{b}` at {v}" for v, a, b in closest)
        + ". (`motorcycle_left` / `motorcycle_right` are the two views of a stereo pair.)"
    )
    ffp = sum(v <= d for v in face_pairs)
    w(
        f"- Faces (`lfw_subset.npy`, {len(face_hashes)} grey 25×25 face crops, "
        f"{len(face_pairs)} pairs, some of them the same person): **{ffp}/{len(face_pairs)}** "
        f"within {d} ({ffp / len(face_pairs):.2%}); distance min / median / max "
        f"{spread(face_pairs)}; "
        + ", ".join(f"≤ {k}: {sum(v <= k for v in face_pairs)}" for k in OTHER_DISTANCES)
        + ".\n"
    )
    text = "\n".join(out)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    splice_summary(args.results_md, text)
    print(text)
    return 0


def splice_summary(results_md: str, quality: str) -> None:
    """The recall table and the false-positive figures of ``quality`` (this
    script's report) as the ``neardup-quality`` section of results.md."""
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from mdsections import splice

    recall = quality.split("## Recall per transform", 1)[1].split("\n\n", 2)
    table = recall[1].strip()
    fp = quality.split("## False positives", 1)[1].split("\n\n", 2)[1].strip()
    lines = [
        "## Near-duplicate detection quality on real photographs (issue #5)",
        "",
        "From `bench/neardup_quality.py` (full report: bench/quality.md): the 19 photographs "
        "bundled in scikit-image's wheel and transformed copies, hashed by pixvcs's own "
        "pipeline, at the default threshold (distance <= 6).",
        "",
        table,
        "",
        "False positives over all pairs of distinct photos:",
        "",
        fp,
    ]
    splice(results_md, "neardup-quality", "\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
