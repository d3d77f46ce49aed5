"""The host-side PNG codec used to store and read images without TensorFlow."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from hebbjax.data.images import _decode_png_fast, decode_batch, decode_image, encode_png, jpeg_bytes


def _pil_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


def _png_with_filters(image: np.ndarray, filters: list[int]) -> bytes:
    """A PNG whose row r uses filter "None" (0) or "Up" (2), written by hand."""
    h, w, c = image.shape
    flat = image.reshape(h, w * c).astype(np.int16)
    rows = []
    for r, f in enumerate(filters):
        above = flat[r - 1] if r > 0 else np.zeros(w * c, np.int16)
        data = flat[r] if f == 0 else (flat[r] - above) % 256
        rows.append(bytes([f]) + data.astype(np.uint8).tobytes())

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, {1: 0, 3: 2}[c], 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (5, 7, 3)])
def test_png_round_trip_and_pil_agrees(shape):
    images = np.random.default_rng(0).integers(0, 256, (6, *shape), dtype=np.uint8)
    blobs = [encode_png(x) for x in images]
    np.testing.assert_array_equal(decode_batch(blobs, shape), images)
    for blob, image in zip(blobs, images, strict=True):  # any PNG reader agrees
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(blob))).reshape(shape), image)


def test_pngs_from_other_writers_decode_through_the_fallback():
    rng = np.random.default_rng(1)
    smooth = np.cumsum(rng.integers(0, 3, (4, 16, 16, 1)), axis=2).astype(np.uint8)  # PIL picks Sub/Paeth filters
    mixed = [encode_png(smooth[0]), _pil_png(smooth[1]), encode_png(smooth[2]), _pil_png(smooth[3])]
    np.testing.assert_array_equal(decode_batch(mixed, (16, 16, 1)), smooth)


def test_up_filtered_rows_are_decoded_by_the_fast_path():
    image = np.random.default_rng(2).integers(0, 256, (6, 4, 3), dtype=np.uint8)
    blob = _png_with_filters(image, [2, 0, 2, 2, 0, 2])
    np.testing.assert_array_equal(_decode_png_fast(blob), image)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(blob))), image)


def test_decode_image_resizes_the_shorter_side_and_centre_crops():
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, 20:60] = 200  # the centre square is bright, the sides dark
    out = decode_image(encode_png(image), channels=3, size=20)
    assert out.shape == (20, 20, 3)
    assert out[:, 2:-2].min() > 150


def test_non_rgb_images_are_converted_to_rgb_jpeg():
    rgb = np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, format="JPEG")
    converted = jpeg_bytes(buf.getvalue())
    with Image.open(io.BytesIO(converted)) as img:
        assert (img.format, img.mode) == ("JPEG", "RGB")
    plain = io.BytesIO()
    Image.fromarray(rgb).save(plain, format="JPEG")
    assert jpeg_bytes(plain.getvalue()) == plain.getvalue()  # RGB JPEGs are kept byte for byte
