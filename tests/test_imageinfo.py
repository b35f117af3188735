from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image, ImageDraw

from pixvcs.imageinfo import InvalidImage, inspect_image, sniff
from tests.imagegen import image_bytes


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_every_supported_format_is_recognised_and_decoded(fmt: str) -> None:
    data = image_bytes(1, fmt, (40, 30))
    assert sniff(data[:32]) == fmt
    info = inspect_image(data)
    assert (info.width, info.height, info.format) == (40, 30, fmt)
    assert len(info.phash) == 16


def test_phash_is_stable_across_reencoding() -> None:
    rng = random.Random(7)
    im = Image.new("RGB", (300, 200), (90, 90, 90))
    draw = ImageDraw.Draw(im)
    for _ in range(30):
        x, y = rng.randrange(300), rng.randrange(200)
        box = [x, y, x + rng.randrange(10, 80), y + rng.randrange(10, 80)]
        draw.ellipse(box, fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    a, b = io.BytesIO(), io.BytesIO()
    im.save(a, "JPEG", quality=95)
    im.save(b, "PNG")
    ha, hb = inspect_image(a.getvalue()).phash, inspect_image(b.getvalue()).phash
    assert bin(int(ha, 16) ^ int(hb, 16)).count("1") <= 4


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
def test_truncated_images_are_invalid(fmt: str) -> None:
    data = image_bytes(2, fmt, (64, 64))
    with pytest.raises(InvalidImage):
        inspect_image(data[: len(data) // 2])


def test_empty_and_non_images() -> None:
    with pytest.raises(InvalidImage, match="empty"):
        inspect_image(b"")
    with pytest.raises(InvalidImage, match="not an image"):
        inspect_image(b"hello, world")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_from_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    # If any pixel were decoded the load would be attempted; make that fail loudly.
    def no_load(self: object) -> None:
        raise AssertionError("a bomb must not be decoded")

    monkeypatch.setattr(Image.Image, "load", no_load)
    with pytest.raises(InvalidImage, match="decompression bomb"):
        inspect_image(_png_header_only(100_000, 100_000))


def test_custom_pixel_limit() -> None:
    with pytest.raises(InvalidImage, match="decompression bomb"):
        inspect_image(image_bytes(3, "PNG", (100, 100)), max_pixels=5000)


def test_fast_phash_agrees_with_imagehash() -> None:
    import imagehash

    from pixvcs.imageinfo import phash_of

    rng = random.Random(11)
    for i in range(40):
        im = Image.new("RGB", (rng.randrange(40, 200), rng.randrange(40, 200)), (i * 5, 40, 90))
        draw = ImageDraw.Draw(im)
        for _ in range(12):
            x, y = rng.randrange(im.width), rng.randrange(im.height)
            draw.rectangle([x, y, x + rng.randrange(5, 60), y + rng.randrange(5, 60)],
                           fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        gray = im.convert("L")
        assert phash_of(gray) == str(imagehash.phash(gray)), i
