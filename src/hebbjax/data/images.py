"""Image encoding and decoding on the host, without TensorFlow.

tfds stores images as PNG/JPEG bytes. Its own numpy decoding goes through PIL at
~0.7 ms per small image, which makes loading 70k MNIST-sized images slow, so:

* :func:`encode_png` writes minimal PNGs (one IDAT, filter type 0 on every row);
* :func:`decode_png_batch` decodes such PNGs with zlib + numpy, ~50x faster, and
  falls back to PIL for any PNG it does not handle (e.g. ones written by
  TensorFlow when a dataset was prepared by stock tfds);
* :func:`decode_image` decodes any format with PIL, optionally resizing to a
  square (shorter side to ``size``, then centre crop), as for ImageNet(te).
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type
_CHANNELS = {v: k for k, v in _COLOR_TYPE.items()}


def _chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(tag))
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


_IEND = _chunk(b"IEND", b"")


@functools.cache
def _png_head(shape: tuple[int, int, int]) -> bytes:
    """Signature + IHDR chunk: the same for every image of ``shape``."""
    return _PNG_SIGNATURE + _chunk(b"IHDR", _ihdr(shape))


def encode_png_batch(images: np.ndarray, level: int = 1) -> list[bytes]:
    """Encodes uint8 images (N, H, W) or (N, H, W, C), C in 1..4, as PNGs.

    Rows are laid out for the whole batch in one numpy operation (filter type
    "None"), leaving one zlib call per image. zlib level 1: on small images it is
    ~5x faster than the default level 6 and the files are only ~2 % larger.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"PNG encoding needs uint8 pixels, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    n, h, w, c = images.shape
    raw = np.zeros((n, h, 1 + w * c), np.uint8)  # leading 0 per row: filter type "None"
    raw[:, :, 1:] = images.reshape(n, h, w * c)
    head = _png_head((h, w, c))
    return [head + _chunk(b"IDAT", zlib.compress(row.tobytes(), level)) + _IEND for row in raw]


def encode_png(image: np.ndarray, level: int = 1) -> bytes:
    """Encodes one uint8 (H, W) or (H, W, C) image as a PNG (see :func:`encode_png_batch`)."""
    return encode_png_batch(np.asarray(image)[None], level)[0]


def _ihdr(shape: tuple[int, int, int]) -> bytes:
    """IHDR body of an 8-bit, non-interlaced PNG of ``shape`` (H, W, C)."""
    h, w, c = shape
    return struct.pack(">IIBBBBB", w, h, 8, _COLOR_TYPE[c], 0, 0, 0)


def _idat(data: bytes, ihdr: bytes) -> bytes | None:
    """The IDAT payload of a PNG whose IHDR body is ``ihdr``; None otherwise.

    The IHDR chunk always comes first (PNG spec), so its body is at bytes 16..29.
    """
    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or data[16:29] != ihdr:
        return None
    pos, parts, end = 33, [], len(data)
    while pos + 8 <= end:
        length = int.from_bytes(data[pos : pos + 4], "big")
        tag = data[pos + 4 : pos + 8]
        if tag == b"IDAT":
            parts.append(data[pos + 8 : pos + 8 + length])
        elif tag == b"IEND":
            break
        pos += 12 + length
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _decode_png_batch(blobs: Sequence[bytes], shape: tuple[int, int, int], out: np.ndarray) -> list[int]:
    """Decodes PNGs of ``shape`` into ``out`` with zlib + numpy, vectorised over the batch.

    Handles rows filtered with "None" (0) or "Up" (2), which covers every PNG
    :func:`encode_png` writes. Returns the indices it could not decode (other
    filters, other formats, corrupt data), left for PIL; it never writes wrong pixels.
    """
    h, w, c = shape
    size = h * (1 + w * c)
    ihdr = _ihdr(shape)
    raws, done, failed = [], [], []
    for i, blob in enumerate(blobs):
        payload = _idat(blob, ihdr)
        try:
            raw = zlib.decompress(payload, bufsize=size) if payload is not None else b""
        except zlib.error:
            raw = b""
        if len(raw) == size:
            raws.append(raw)
            done.append(i)
        else:
            failed.append(i)
    if not done:
        return failed
    rows = np.frombuffer(b"".join(raws), np.uint8).reshape(len(done), h, 1 + w * c)
    filters, pixels = rows[:, :, 0], rows[:, :, 1:]
    if filters.any():
        unsupported = ((filters != 0) & (filters != 2)).any(axis=1)
        pixels = pixels.copy()
        up = filters == 2
        for r in range(1, h):  # "Up" adds the row above (already unfiltered); row 0 adds zeros
            if up[:, r].any():
                pixels[up[:, r], r] += pixels[up[:, r], r - 1]  # uint8 wraps modulo 256, as PNG requires
        failed.extend(done[k] for k in np.nonzero(unsupported)[0])
        keep = np.nonzero(~unsupported)[0]
        out[np.asarray(done)[keep]] = pixels[keep].reshape(-1, h, w, c)
    elif len(done) == len(blobs):
        out[:] = pixels.reshape(-1, h, w, c)
    else:
        out[np.asarray(done)] = pixels.reshape(-1, h, w, c)
    return sorted(failed)


def _decode_png_fast(data: bytes) -> np.ndarray | None:
    """Single-image :func:`_decode_png_batch`; None when PIL is needed."""
    if data[12:16] != b"IHDR" or len(data) < 29:
        return None
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if depth != 8 or interlace or ctype not in _CHANNELS or not (0 < h * w <= 1 << 26):
        return None
    out = np.empty((1, h, w, _CHANNELS[ctype]), np.uint8)
    return None if _decode_png_batch([data], out.shape[1:], out) else out[0]


def decode_image(data: bytes, *, channels: int | None = None, size: int | None = None) -> np.ndarray:
    """Decodes PNG/JPEG bytes to uint8 (H, W, C).

    Args:
      data: encoded image.
      channels: 1 or 3 to force grey/RGB (CMYK and palette images become RGB);
        None keeps grey as 1 channel and converts everything else to RGB.
      size: if given, resize so the shorter side is ``size`` (bilinear with
        antialiasing, as torchvision ``Resize(size)``) and centre-crop to
        ``size`` x ``size``.
    """
    if size is None and channels != 3:
        fast = _decode_png_fast(data)
        if fast is not None and (channels is None or fast.shape[-1] == channels):
            return fast
    with Image.open(io.BytesIO(data)) as img:
        if size is not None and img.format == "JPEG":
            img.draft("RGB", (size, size))  # decode JPEG at a reduced scale: much faster
        mode = {1: "L", 3: "RGB"}.get(channels or 0) or ("L" if img.mode == "L" else "RGB")
        img = img.convert(mode)
        if size is not None:
            img = _resize_center_crop(img, size)
        array = np.asarray(img, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def _resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def decode_batch(
    blobs: Sequence[bytes],
    shape: tuple[int, int, int],
    *,
    size: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decodes images into one uint8 array of ``shape`` per image.

    ``size`` resizes/crops (see :func:`decode_image`) and must then equal
    ``shape[0] == shape[1]``.
    """
    if out is None:
        out = np.empty((len(blobs), *shape), np.uint8)
    channels = shape[-1]
    todo = range(len(blobs)) if size is not None else _decode_png_batch(blobs, shape, out)
    for i in todo:  # JPEGs, resizing, or PNGs the fast path leaves to PIL
        blob = blobs[i]
        image = decode_image(blob, channels=channels, size=size)
        if image.shape != shape:
            raise ValueError(f"decoded image {i} has shape {image.shape}, expected {shape}")
        out[i] = image
    return out


def jpeg_bytes(data: bytes, quality: int = 100) -> bytes:
    """Returns ``data`` if it is an RGB or grey JPEG, else re-encodes it as RGB JPEG.

    Mirrors the stock ImageNet builder, which converts its CMYK and PNG files
    (with TensorFlow, quality 100); this uses PIL and detects them by content.
    """
    with Image.open(io.BytesIO(data)) as img:
        if img.format == "JPEG" and img.mode in ("RGB", "L"):
            return data
        out = io.BytesIO()
        img.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()
