"""Small archives in the ORIGINAL formats, for tests and offline dry runs.

Each ``write_*`` function creates ``<folder>/<registered file name>`` exactly
as the dataset's authors distribute it (layout, member names, byte order), filled
with seeded random images, and returns the arrays written, so that a loader can
be checked pixel for pixel. Their checksums are of course not the registered
ones: pass :func:`checksums` of the files as ``file_checksums`` (or
``verify_checksums=False``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from PIL import Image

Arrays = dict[str, dict[str, np.ndarray]]  # split -> {"image": (N,H,W,C) uint8, "label": (N,), ...}


def checksums(paths: Iterable[Path]) -> dict[str, tuple[int, str]]:
    """{file name: (size, sha256)} of files, for ``file_checksums=``."""
    out = {}
    for path in paths:
        data = Path(path).read_bytes()
        out[Path(path).name] = (len(data), hashlib.sha256(data).hexdigest())
    return out


def _images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _write_tar(path: Path, members: Mapping[str, bytes], mode: str = "w:gz") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            _add_bytes(tar, name, data)
    return path


# --------------------------------------------------------------------------- MNIST


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def write_mnist(folder: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> Arrays:
    """MNIST / Fashion-MNIST: four gzip IDX files in ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out: Arrays = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = _images(rng, n, (28, 28))
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
        out[split] = {"image": images[..., None], "label": labels.astype(np.int64)}
    return out


# --------------------------------------------------------------------------- CIFAR


def _cifar_data(rng: np.random.Generator, n: int, num_classes: int) -> dict[str, np.ndarray]:
    images = _images(rng, n, (32, 32, 3))
    data = {"image": images, "label": rng.integers(0, num_classes, n)}
    if num_classes == 100:
        data["coarse_label"] = data["label"] // 5
    return data


def _chw_rows(images: np.ndarray) -> np.ndarray:
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # R plane, G plane, B plane


def write_cifar_python(
    folder: Path, num_classes: int = 10, n_train: int = 50, n_test: int = 20, seed: int = 0
) -> Arrays:
    """``cifar-10-python.tar.gz`` (5 train batches + test_batch + batches.meta in
    ``cifar-10-batches-py/``) or ``cifar-100-python.tar.gz`` (train, test, meta in
    ``cifar-100-python/``), pickled with bytes keys like the originals."""
    rng = np.random.default_rng(seed)
    out = {"train": _cifar_data(rng, n_train, num_classes), "test": _cifar_data(rng, n_test, num_classes)}
    members: dict[str, bytes] = {}

    def batch(data: dict[str, np.ndarray], lo: int, hi: int) -> bytes:
        d = {b"data": _chw_rows(data["image"][lo:hi])}
        if num_classes == 10:
            d[b"labels"] = [int(v) for v in data["label"][lo:hi]]
        else:
            d[b"fine_labels"] = [int(v) for v in data["label"][lo:hi]]
            d[b"coarse_labels"] = [int(v) for v in data["coarse_label"][lo:hi]]
        return pickle.dumps(d, protocol=2)

    if num_classes == 10:
        folder_name, filename = "cifar-10-batches-py", "cifar-10-python.tar.gz"
        bounds = np.linspace(0, n_train, 6).astype(int)
        for i in range(5):
            members[f"{folder_name}/data_batch_{i + 1}"] = batch(out["train"], bounds[i], bounds[i + 1])
        members[f"{folder_name}/test_batch"] = batch(out["test"], 0, n_test)
        meta = {b"label_names": [f"class{i}".encode() for i in range(10)]}
        members[f"{folder_name}/batches.meta"] = pickle.dumps(meta, protocol=2)
    else:
        folder_name, filename = "cifar-100-python", "cifar-100-python.tar.gz"
        members[f"{folder_name}/train"] = batch(out["train"], 0, n_train)
        members[f"{folder_name}/test"] = batch(out["test"], 0, n_test)
        meta = {
            b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
        }
        members[f"{folder_name}/meta"] = pickle.dumps(meta, protocol=2)
    _write_tar(folder / filename, members)
    return out


def write_cifar_binary(
    folder: Path, num_classes: int = 10, n_train: int = 50, n_test: int = 20, seed: int = 0
) -> Arrays:
    """``cifar-10-binary.tar.gz`` / ``cifar-100-binary.tar.gz``: records of label
    byte(s) (CIFAR-100: coarse then fine) followed by 3072 pixel bytes."""
    rng = np.random.default_rng(seed)
    out = {"train": _cifar_data(rng, n_train, num_classes), "test": _cifar_data(rng, n_test, num_classes)}

    def records(data: dict[str, np.ndarray], lo: int, hi: int) -> bytes:
        labels = [data["label"][lo:hi, None]]
        if num_classes == 100:
            labels.insert(0, data["coarse_label"][lo:hi, None])
        return np.concatenate([*labels, _chw_rows(data["image"][lo:hi])], axis=1).astype(np.uint8).tobytes()

    members: dict[str, bytes] = {}
    if num_classes == 10:
        folder_name, filename = "cifar-10-batches-bin", "cifar-10-binary.tar.gz"
        bounds = np.linspace(0, n_train, 6).astype(int)
        for i in range(5):
            members[f"{folder_name}/data_batch_{i + 1}.bin"] = records(out["train"], bounds[i], bounds[i + 1])
        members[f"{folder_name}/test_batch.bin"] = records(out["test"], 0, n_test)
        members[f"{folder_name}/batches.meta.txt"] = "\n".join(f"class{i}" for i in range(10)).encode() + b"\n\n"
    else:
        folder_name, filename = "cifar-100-binary", "cifar-100-binary.tar.gz"
        members[f"{folder_name}/train.bin"] = records(out["train"], 0, n_train)
        members[f"{folder_name}/test.bin"] = records(out["test"], 0, n_test)
        members[f"{folder_name}/fine_label_names.txt"] = "\n".join(f"fine{i}" for i in range(100)).encode()
        members[f"{folder_name}/coarse_label_names.txt"] = "\n".join(f"coarse{i}" for i in range(20)).encode()
    _write_tar(folder / filename, members)
    return out


# --------------------------------------------------------------------------- STL-10


def write_stl10(folder: Path, n_train: int = 20, n_test: int = 10, n_unlabelled: int = 30, seed: int = 0) -> Arrays:
    """``stl10_binary.tar.gz``: ``stl10_binary/{train,test}_{X,y}.bin``,
    ``unlabeled_X.bin`` and ``class_names.txt``. Images are stored as
    (N, 3, 96, 96) in column-major order (i.e. each channel transposed) and
    labels as 1..10."""
    rng = np.random.default_rng(seed)
    members: dict[str, bytes] = {
        "stl10_binary/class_names.txt": "\n".join(f"stl{i}" for i in range(10)).encode() + b"\n"
    }
    out: Arrays = {}
    for split, stem, n in (
        ("train", "train", n_train),
        ("test", "test", n_test),
        ("unlabelled", "unlabeled", n_unlabelled),
    ):
        images = _images(rng, n, (96, 96, 3))
        members[f"stl10_binary/{stem}_X.bin"] = images.transpose(0, 3, 2, 1).tobytes()  # (N, C, W, H)
        labels = rng.integers(0, 10, n) if split != "unlabelled" else np.full(n, -1)
        if split != "unlabelled":
            members[f"stl10_binary/{stem}_y.bin"] = (labels + 1).astype(np.uint8).tobytes()
        out[split] = {"image": images, "label": labels}
    _write_tar(folder / "stl10_binary.tar.gz", members)
    return out


# --------------------------------------------------------------------------- ImageNet(te)


def _jpeg(image: np.ndarray, quality: int = 95, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(image)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _smooth_images(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """Smooth random images (JPEG-friendly: little ringing, so decoded values
    stay close to these)."""
    low = rng.integers(0, 256, (n, h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(x).resize((w, h), Image.BILINEAR)) for x in low])


def write_imagenette(
    folder: Path,
    wnids: list[str],
    per_class: int = 2,
    n_val: int = 1,
    shape: tuple[int, int] = (160, 200),
    seed: int = 0,
) -> dict[str, dict[str, bytes]]:
    """``imagenette2-160.tgz``: ``imagenette2-160/{train,val}/<wnid>/<name>.JPEG``.

    Returns {split dir: {file name: JPEG bytes}}; labels are the wnid folders.
    """
    rng = np.random.default_rng(seed)
    members, out = {}, {"train": {}, "val": {}}
    for split, count in (("train", per_class), ("val", n_val)):
        for wnid in wnids:
            for i, image in enumerate(_smooth_images(rng, count, *shape)):
                name = f"{wnid}_{split}{i}.JPEG"
                out[split][name] = _jpeg(image)
                members[f"imagenette2-160/{split}/{wnid}/{name}"] = out[split][name]
    _write_tar(folder / "imagenette2-160.tgz", members)
    return out


def write_imagenet(
    folder: Path,
    wnids: list[str],
    per_class: int = 2,
    n_val: int = 4,
    shape: tuple[int, int] = (120, 180),
    seed: int = 0,
) -> dict[str, dict[str, bytes]]:
    """``ILSVRC2012_img_train.tar`` (one ``<wnid>.tar`` of ``<wnid>_<i>.JPEG`` per
    class; the first image of the first class is CMYK, the second a PNG, as a few
    real ones are) and ``ILSVRC2012_img_val.tar`` (``ILSVRC2012_val_<8 digits>.JPEG``;
    tfds takes their labels from its ``validation_labels.txt``).

    Returns {"train": {name: bytes}, "val": {name: bytes}}.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, bytes]] = {"train": {}, "val": {}}
    outer: dict[str, bytes] = {}
    for c, wnid in enumerate(wnids):
        inner: dict[str, bytes] = {}
        for i, image in enumerate(_smooth_images(rng, per_class, *shape)):
            name = f"{wnid}_{i}.JPEG"
            if c == 0 and i == 0:
                data = _jpeg(image, mode="CMYK")
            elif c == 0 and i == 1:
                buf = io.BytesIO()
                Image.fromarray(image).save(buf, format="PNG")
                data = buf.getvalue()
            else:
                data = _jpeg(image)
            inner[name] = out["train"][name] = data
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in inner.items():
                _add_bytes(tar, name, data)
        outer[f"{wnid}.tar"] = buf.getvalue()
    _write_tar(folder / "ILSVRC2012_img_train.tar", outer, mode="w")
    val = {f"ILSVRC2012_val_{i + 1:08d}.JPEG": _jpeg(x) for i, x in enumerate(_smooth_images(rng, n_val, *shape))}
    out["val"] = val
    _write_tar(folder / "ILSVRC2012_img_val.tar", val, mode="w")
    return out
