"""Recognising, validating and fingerprinting images.

An image is recognised by its content (magic bytes) or, failing that, by an
image extension; either way it must then decode completely with Pillow or it
is invalid. Decompression bombs are refused from the header alone, before any
pixel is decoded.

The perceptual hash recipe is versioned (:data:`PHASH_RECIPE`) because the
values depend on the decoder: the catalog records it with the library
versions, and a catalog built under another recipe is rebuilt, not mixed.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
#: Default ceiling on width*height; above it an image is a decompression bomb.
MAX_PIXELS = 89_478_485
#: Frames decoded at most when validating an animated image.
MAX_FRAMES = 1000
PHASH_RECIPE = (
    "phash-v1: Pillow decode (JPEG draft to >=128px), convert('L'), "
    "imagehash.phash(hash_size=8, highfreq_factor=4), 16 hex digits"
)

_BMP_DIB_SIZES = {12, 40, 52, 56, 64, 108, 124}


def sniff(head: bytes) -> str | None:
    """The image format named by the first bytes of a file, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if (
        head[:2] == b"BM"
        and len(head) >= 18
        and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES
    ):
        return "BMP"
    return None


def has_image_extension(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


@dataclass(frozen=True, slots=True)
class ImageInfo:
    width: int
    height: int
    format: str
    mode: str
    phash: str  # 16 hex digits, see PHASH_RECIPE


class InvalidImage(ValueError):
    """The bytes are not a complete, decodable, reasonably sized image."""


def inspect_image(data: bytes, *, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Decode ``data`` fully once; return its facts or raise :class:`InvalidImage`."""
    from PIL import Image

    if not data:
        raise InvalidImage("empty file")
    fmt = sniff(data[:32])
    if fmt is None:
        raise InvalidImage("not an image (unrecognised content)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = im.size
            if width <= 0 or height <= 0:
                raise InvalidImage(f"invalid dimensions {width}x{height}")
            if width * height > max_pixels:
                raise InvalidImage(
                    f"decompression bomb: {width}x{height} = {width * height} pixels "
                    f"exceeds the limit of {max_pixels}"
                )
            mode = im.mode
            n_frames = getattr(im, "n_frames", 1)
            if n_frames > MAX_FRAMES:
                raise InvalidImage(f"{n_frames} frames exceeds the limit of {MAX_FRAMES}")
            if n_frames * width * height > max_pixels * 4:
                raise InvalidImage(f"decompression bomb: {n_frames} frames of {width}x{height}")
            if fmt == "JPEG":
                # Draft mode decodes at 1/2..1/8 scale but still reads the whole scan,
                # so truncation and corrupt entropy data are still caught.
                im.draft("L", (128, 128))
            im.load()
            gray = im.convert("L")
            for frame in range(1, n_frames):
                im.seek(frame)
                im.load()
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InvalidImage(f"decompression bomb: {e}") from None
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        IndexError,
        TypeError,
        struct_error(),
        ZeroDivisionError,
        MemoryError,
    ) as e:
        # Pillow reports broken files through any of these; all mean "does not decode"
        raise InvalidImage(f"does not decode: {_describe(e)}") from None
    return ImageInfo(width, height, fmt, mode, phash_of(gray))


def struct_error() -> type[Exception]:
    import struct

    return struct.error


def _describe(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text if len(text) < 200 else text[:197] + "..."


def phash_of(gray: Image.Image) -> str:
    import imagehash

    return str(imagehash.phash(gray, hash_size=8, highfreq_factor=4))


def library_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {"pillow": version("pillow"), "imagehash": version("imagehash")}
