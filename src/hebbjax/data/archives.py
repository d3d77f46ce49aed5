"""Readers of the original dataset archives with gzip/tarfile/numpy (no TensorFlow).

Each reader turns a truncated, corrupt or mis-formatted archive into an
:class:`~hebbjax.data.errors.ArchiveFormatError` naming the file and the expected
format. Archives are streamed, never extracted to disk.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from hebbjax.data.errors import ArchiveFormatError, ChecksumError, MissingFileError
from hebbjax.data.registry import FileSpec

# What gzip/tarfile raise on truncated or corrupt input.
_READ_ERRORS = (EOFError, OSError, zlib.error, tarfile.TarError, struct.error)


# --------------------------------------------------------------------------- checksums


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 23) -> str:
    """SHA-256 hex digest of a file, read in 8 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, spec: FileSpec) -> None:
    """Checks that ``path`` exists and has the registered size and SHA-256.

    The size is compared first, so a truncated download fails without hashing.
    """
    if not path.is_file():
        raise MissingFileError(f"missing file {path} (expected {spec.name}: {spec.size} bytes, sha256 {spec.sha256})")
    size = path.stat().st_size
    if size != spec.size:
        raise ChecksumError(
            f"{path} has {size} bytes, expected {spec.size} bytes "
            f"(sha256 {spec.sha256}); the file is truncated or not the original {spec.name}"
        )
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise ChecksumError(
            f"{path} has sha256 {digest}, expected {spec.sha256} ({spec.size} bytes); "
            f"the file is corrupt or not the original {spec.name}"
        )


# --------------------------------------------------------------------------- IDX (MNIST)

_IDX_UBYTE = 0x08  # IDX type code for unsigned bytes


def read_idx_gz(path: Path, ndim: int) -> np.ndarray:
    """Reads a gzip-compressed IDX file of unsigned bytes with ``ndim`` dimensions.

    MNIST images are ndim 3 (magic 2051), labels ndim 1 (magic 2049).
    """
    expected = f"a gzip-compressed IDX file of uint8 with {ndim} dims (magic {0x800 + ndim})"
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except _READ_ERRORS as e:
        raise ArchiveFormatError(f"{path}: truncated or corrupt gzip ({e}); expected {expected}") from e
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ArchiveFormatError(f"{path}: {len(data)} bytes, too short for {expected}")
    magic = int.from_bytes(data[:4], "big")
    if magic != (_IDX_UBYTE << 8) | ndim:
        raise ArchiveFormatError(f"{path}: magic number {magic}, expected {expected}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) - header != int(np.prod(shape)):
        raise ArchiveFormatError(
            f"{path}: header announces shape {shape} ({int(np.prod(shape))} bytes) but "
            f"holds {len(data) - header} bytes; expected {expected}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def read_mnist_split(files: Mapping[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) and labels (N,) of an MNIST-format split ("train"/"test")."""
    prefix = {"train": "train", "test": "t10k"}[split]
    images_path = files[f"{prefix}-images-idx3-ubyte.gz"]
    labels_path = files[f"{prefix}-labels-idx1-ubyte.gz"]
    images = read_idx_gz(images_path, 3)
    labels = read_idx_gz(labels_path, 1)
    if len(images) != len(labels):
        raise ArchiveFormatError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels")
    return images, labels


# --------------------------------------------------------------------------- tar helpers


def iter_tar(path: Path | IO[bytes], expected: str) -> Iterator[tuple[str, IO[bytes]]]:
    """Streams the regular files of a (possibly gzip-compressed) tar archive.

    Yields (member name, readable file object). The file object is only valid
    until the next item: the archive is read sequentially, which is the only
    efficient way through a .tar.gz.
    """
    name = getattr(path, "name", path)
    try:
        source = {"name": path} if isinstance(path, (str, os.PathLike)) else {"fileobj": path}
        with tarfile.open(mode="r|*", **source) as tar:  # "r|*": sequential, any compression
            for member in tar:
                if member.isfile():
                    fobj = tar.extractfile(member)
                    assert fobj is not None
                    yield member.name, fobj
    except _READ_ERRORS as e:
        raise ArchiveFormatError(f"{name}: truncated or corrupt archive ({e}); expected {expected}") from e


def read_tar_members(path: Path, wanted: Callable[[str], bool], expected: str) -> dict[str, bytes]:
    """Reads the members whose name satisfies ``wanted`` in one pass over the archive."""
    found: dict[str, bytes] = {}
    for name, fobj in iter_tar(path, expected):
        if wanted(name):
            try:
                found[name] = fobj.read()
            except _READ_ERRORS as e:
                raise ArchiveFormatError(
                    f"{path}: truncated or corrupt member {name} ({e}); expected {expected}"
                ) from e
    return found


def _require(members: Mapping[str, bytes], names: list[str], path: Path, expected: str) -> list[bytes]:
    missing = [n for n in names if n not in members]
    if missing:
        raise ArchiveFormatError(f"{path} lacks {', '.join(missing)}; expected {expected}")
    return [members[n] for n in names]


# --------------------------------------------------------------------------- CIFAR


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays (CIFAR's python batches).

    Checksum verification can be switched off, so never let a pickle run code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "numpy.core.multiarray":  # numpy 2 renamed it; avoid its warning
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _unpickle(data: bytes, what: str) -> dict[bytes, Any]:
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any failure means "not a CIFAR batch"
        raise ArchiveFormatError(f"{what}: not a CIFAR python batch ({e})") from e
    if not isinstance(obj, dict):
        raise ArchiveFormatError(f"{what}: not a CIFAR python batch (got {type(obj).__name__})")
    # The originals were pickled by Python 2 (bytes keys); accept str keys too.
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def _chw_rows_to_hwc(rows: np.ndarray, side: int) -> np.ndarray:
    """CIFAR rows: 1024 red, 1024 green, 1024 blue values, each row-major 32x32."""
    return np.ascontiguousarray(rows.reshape(-1, 3, side, side).transpose(0, 2, 3, 1))


CifarSplit = dict[str, np.ndarray]  # "image" (N,32,32,3), "label" (N,), maybe "coarse_label"

_CIFAR_PY = {
    10: ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"),
    100: ("cifar-100-python", ["train"], ["test"], "meta"),
}
_CIFAR_BIN = {
    10: (
        "cifar-10-batches-bin",
        [f"data_batch_{i}.bin" for i in range(1, 6)],
        ["test_batch.bin"],
        ["batches.meta.txt"],
    ),
    100: ("cifar-100-binary", ["train.bin"], ["test.bin"], ["coarse_label_names.txt", "fine_label_names.txt"]),
}


def read_cifar_python(path: Path, num_classes: int) -> tuple[dict[str, CifarSplit], list[str]]:
    """Reads ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``.

    Returns ({"train": ..., "test": ...}, fine label names).
    """
    folder, train, test, meta = _CIFAR_PY[num_classes]
    expected = f"CIFAR-{num_classes} python archive with {folder}/{{{', '.join(train + test)}, {meta}}}"
    members = read_tar_members(path, lambda n: n.startswith(folder + "/"), expected)
    label_key = b"labels" if num_classes == 10 else b"fine_labels"
    splits = {}
    for split, names in (("train", train), ("test", test)):
        images, labels, coarse = [], [], []
        for name, data in zip(names, _require(members, [f"{folder}/{n}" for n in names], path, expected), strict=True):
            batch = _unpickle(data, f"{path}:{folder}/{name}")
            try:
                rows = np.asarray(batch[b"data"], np.uint8)
                labels.append(np.asarray(batch[label_key], np.int64))
                if num_classes == 100:
                    coarse.append(np.asarray(batch[b"coarse_labels"], np.int64))
            except KeyError as e:
                raise ArchiveFormatError(f"{path}:{folder}/{name} lacks key {e}; expected {expected}") from e
            if rows.ndim != 2 or rows.shape[1] != 3072 or len(rows) != len(labels[-1]):
                raise ArchiveFormatError(
                    f"{path}:{folder}/{name}: data of shape {rows.shape} with {len(labels[-1])} labels; "
                    "expected (N, 3072) uint8 and N labels"
                )
            images.append(_chw_rows_to_hwc(rows, 32))
        split_data = {"image": np.concatenate(images), "label": np.concatenate(labels)}
        if coarse:
            split_data["coarse_label"] = np.concatenate(coarse)
        splits[split] = split_data
    meta_obj = _unpickle(_require(members, [f"{folder}/{meta}"], path, expected)[0], f"{path}:{folder}/{meta}")
    names_key = b"label_names" if num_classes == 10 else b"fine_label_names"
    label_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta_obj.get(names_key, [])]
    return splits, label_names


def read_cifar_binary(path: Path, num_classes: int) -> tuple[dict[str, CifarSplit], list[str]]:
    """Reads ``cifar-10-binary.tar.gz`` / ``cifar-100-binary.tar.gz`` (the tfds sources).

    Each record is the label byte(s) (CIFAR-100: coarse, then fine) then 3072 pixels.
    """
    folder, train, test, label_files = _CIFAR_BIN[num_classes]
    n_labels = 1 if num_classes == 10 else 2
    record = n_labels + 3072
    expected = f"CIFAR-{num_classes} binary archive with {folder}/{{{', '.join(train + test)}}}"
    members = read_tar_members(path, lambda n: n.startswith(folder + "/"), expected)
    splits = {}
    for split, names in (("train", train), ("test", test)):
        blobs = _require(members, [f"{folder}/{n}" for n in names], path, expected)
        data = b"".join(blobs)
        if len(data) % record:
            raise ArchiveFormatError(
                f"{path}: {split} records total {len(data)} bytes, not a multiple of {record}; expected {expected}"
            )
        rows = np.frombuffer(data, np.uint8).reshape(-1, record)
        split_data = {
            "image": _chw_rows_to_hwc(rows[:, n_labels:], 32),
            "label": rows[:, n_labels - 1].astype(np.int64),
        }
        if n_labels == 2:
            split_data["coarse_label"] = rows[:, 0].astype(np.int64)
        splits[split] = split_data
    names_blob = members.get(f"{folder}/{label_files[-1]}", b"")
    label_names = [n for n in names_blob.decode("utf-8", "replace").split("\n") if n.strip()]
    return splits, label_names


# --------------------------------------------------------------------------- STL-10

_STL_FOLDER = "stl10_binary"
_STL_IMAGE_BYTES = 3 * 96 * 96
_STL_EXPECTED = "STL-10 binary archive stl10_binary/{train_X,train_y,test_X,test_y,unlabeled_X}.bin"


def stl10_to_hwc(raw: np.ndarray) -> np.ndarray:
    """STL-10 images are stored column-major per channel: (N, 3, W, H) -> (N, H, W, 3)."""
    return np.ascontiguousarray(raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1))


def read_stl10_class_names(path: Path) -> list[str]:
    """Class names from ``stl10_binary/class_names.txt`` (empty list if absent)."""
    members = read_tar_members(path, lambda n: n == f"{_STL_FOLDER}/class_names.txt", _STL_EXPECTED)
    blob = members.get(f"{_STL_FOLDER}/class_names.txt", b"")
    return [line.strip() for line in blob.decode("utf-8", "replace").splitlines() if line.strip()]


def iter_stl10(path: Path, split: str, chunk: int = 1000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields (images (n, 96, 96, 3), labels (n,)) chunks of an STL-10 split.

    ``unlabelled`` (100k images, 2.8 GB) is streamed chunk by chunk and gets
    labels -1, as in tfds; train/test labels are shifted from 1..10 to 0..9.
    """
    stem = {"train": "train", "test": "test", "unlabelled": "unlabeled"}[split]
    x_name, y_name = f"{_STL_FOLDER}/{stem}_X.bin", f"{_STL_FOLDER}/{stem}_y.bin"
    labels: np.ndarray | None = None
    images: np.ndarray | None = None
    seen_x = False
    for name, fobj in iter_tar(path, _STL_EXPECTED):
        if name == y_name:
            labels = np.frombuffer(fobj.read(), np.uint8).astype(np.int64) - 1
        elif name == x_name and split == "unlabelled":
            seen_x = True
            yield from _stream_stl_images(path, name, fobj, chunk)
        elif name == x_name:
            seen_x = True
            images = _read_stl_images(path, name, fobj.read())
        if split != "unlabelled" and images is not None and labels is not None:
            break
    if not seen_x or (split != "unlabelled" and labels is None):
        raise ArchiveFormatError(f"{path} lacks {x_name if not seen_x else y_name}; expected {_STL_EXPECTED}")
    if images is not None and labels is not None:
        if len(images) != len(labels):
            raise ArchiveFormatError(f"{path}: {x_name} holds {len(images)} images but {y_name} {len(labels)} labels")
        for start in range(0, len(images), chunk):
            yield images[start : start + chunk], labels[start : start + chunk]


def _read_stl_images(path: Path, name: str, data: bytes) -> np.ndarray:
    if len(data) % _STL_IMAGE_BYTES:
        raise ArchiveFormatError(
            f"{path}:{name} has {len(data)} bytes, not a multiple of {_STL_IMAGE_BYTES} (3x96x96 uint8 images)"
        )
    return stl10_to_hwc(np.frombuffer(data, np.uint8))


def _stream_stl_images(path: Path, name: str, fobj: IO[bytes], chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    while True:
        try:
            data = fobj.read(chunk * _STL_IMAGE_BYTES)
        except _READ_ERRORS as e:
            raise ArchiveFormatError(
                f"{path}: truncated or corrupt member {name} ({e}); expected {_STL_EXPECTED}"
            ) from e
        if not data:
            return
        images = _read_stl_images(path, name, data)
        yield images, np.full(len(images), -1, np.int64)


# --------------------------------------------------------------------------- ImageNet(te)


def iter_imagenette(path: Path, folder: str, split: str) -> Iterator[tuple[str, str, bytes]]:
    """Yields (file name, wnid label, JPEG bytes) of ``<folder>/<split>/<wnid>/*.JPEG``."""
    expected = f"ImageNette archive with {folder}/{split}/<wnid>/*.JPEG"
    prefix = f"{folder}/{split}/"
    count = 0
    for name, fobj in iter_tar(path, expected):
        parts = name[len(prefix) :].split("/") if name.startswith(prefix) else []
        if len(parts) == 2 and parts[1].endswith(".JPEG"):
            count += 1
            yield parts[1], parts[0], _read_member(path, name, fobj, expected)
    if not count:
        raise ArchiveFormatError(f"{path} holds no {prefix}<wnid>/*.JPEG; expected {expected}")


def iter_imagenet_train(path: Path) -> Iterator[tuple[str, str, bytes]]:
    """Yields (file name, wnid, image bytes) from ``ILSVRC2012_img_train.tar``.

    That tar holds one tar per synset (``n01440764.tar``) of JPEGs.
    """
    expected = "ILSVRC2012 train tar of per-synset tars <wnid>.tar holding JPEGs"
    for name, fobj in iter_tar(path, expected):
        if not name.endswith(".tar"):
            continue
        wnid = os.path.basename(name)[:-4]
        inner = io.BytesIO(_read_member(path, name, fobj, expected))
        for image_name, image in iter_tar(inner, f"{path}:{name}: {expected}"):
            yield os.path.basename(image_name), wnid, _read_member(path, image_name, image, expected)


def imagenet_validation_labels(path: Path, labels_file: Path) -> dict[str, str]:
    """Maps each validation file name to its wnid, as tfds does.

    tfds' ``validation_labels.txt`` lists the wnid of each image in the sorted
    order of the names in ``ILSVRC2012_img_val.tar``.
    """
    names = sorted(name for name, _ in iter_tar(path, "ILSVRC2012 validation tar of JPEGs"))
    labels = labels_file.read_text().strip().splitlines()
    return dict(zip(names, labels, strict=False))  # the labels file lists all 50k images


def iter_imagenet_validation(path: Path, labels: Mapping[str, str]) -> Iterator[tuple[str, str, bytes]]:
    """Yields (file name, wnid, image bytes) from ``ILSVRC2012_img_val.tar``."""
    expected = "ILSVRC2012 validation tar of JPEGs"
    for name, fobj in iter_tar(path, expected):
        if name not in labels:
            raise ArchiveFormatError(f"{path}: no validation label for {name}; expected {expected}")
        yield name, labels[name], _read_member(path, name, fobj, expected)


def _read_member(path: Path, name: str, fobj: IO[bytes], expected: str) -> bytes:
    try:
        return fobj.read()
    except _READ_ERRORS as e:
        raise ArchiveFormatError(f"{path}: truncated or corrupt member {name} ({e}); expected {expected}") from e
