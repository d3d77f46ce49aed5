"""The real Fashion-MNIST (and partial MNIST) files, prepared offline.

The files live in ``<repo>/../shared/data`` or ``$HEBBJAX_SHARED_DATA``; without
them these tests are skipped. Full Fashion-MNIST is prepared once per module
into a temporary tfds folder, with every network connection refused.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hebbjax.data import ChecksumError, MissingFileError, load, prepare
from hebbjax.data.archives import verify_file
from hebbjax.data.registry import get_spec

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HEBBJAX_SHARED_DATA") or REPO.parent / "shared" / "data")
FASHION_FILES = [f.name for f in get_spec("fashion_mnist").variants[0].files]
HAVE_FASHION = all((SHARED / "fashion_mnist" / n).is_file() for n in FASHION_FILES)
MNIST_TEST_FILES = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"]
HAVE_MNIST_PART = all((SHARED / "mnist" / n).is_file() for n in MNIST_TEST_FILES)

needs_fashion = pytest.mark.skipif(
    not HAVE_FASHION,
    reason=f"no real Fashion-MNIST in {SHARED}/fashion_mnist (set HEBBJAX_SHARED_DATA to the shared/data folder)",
)
needs_mnist = pytest.mark.skipif(
    not HAVE_MNIST_PART,
    reason=f"real MNIST test files not found in {SHARED}/mnist (set HEBBJAX_SHARED_DATA to the shared data folder)",
)


@contextlib.contextmanager
def no_network() -> Iterator[list]:
    """Makes every socket connection attempt fail, and records it."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during offline preparation")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        mp.setattr(socket, "create_connection", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        yield attempts


def read_idx(path: Path) -> np.ndarray:
    """Independent IDX parser for the checks: big-endian header, then uint8 data."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def rows(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
    """(image, label) pairs as sorted byte strings (tfds stores records in a
    hashed order, so splits are compared as multisets)."""
    flat = np.concatenate([images.reshape(len(images), -1), labels.reshape(-1, 1).astype(np.uint8)], axis=1)
    return sorted(map(bytes, flat))


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> dict:
    tfds_dir = tmp_path_factory.mktemp("tfds_fashion")
    with no_network() as attempts:
        start = time.perf_counter()
        prepare("fashion_mnist", data_dir=SHARED, tfds_dir=tfds_dir)
        prepared_s = time.perf_counter() - start
        train = load("fashion_mnist", "train", data_dir=SHARED, tfds_dir=tfds_dir, dtype="uint8")
        test = load("fashion_mnist", "test", data_dir=SHARED, tfds_dir=tfds_dir, dtype="uint8")
        loaded_s = time.perf_counter() - start - prepared_s
    print(f"\nFashion-MNIST offline: prepared in {prepared_s:.1f} s, decoded in {loaded_s:.1f} s", file=sys.stderr)
    return {"tfds_dir": tfds_dir, "attempts": attempts, "train": train, "test": test, "prepared_s": prepared_s}


@needs_fashion
def test_offline_preparation_opened_no_connection(fashion):
    assert fashion["attempts"] == []
    version_dir = fashion["tfds_dir"] / "fashion_mnist" / "3.0.1"
    assert (version_dir / "dataset_info.json").is_file()
    assert sorted(p.name for p in version_dir.glob("*.array_record*")) == [
        "fashion_mnist-test.array_record-00000-of-00001",
        "fashion_mnist-train.array_record-00000-of-00001",
    ]
    assert not [p for p in fashion["tfds_dir"].iterdir() if p.name.startswith(".incomplete")]


@needs_fashion
def test_counts_shapes_and_label_histograms(fashion):
    train, test = fashion["train"], fashion["test"]
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert train.labels.shape == (60000,) and train.labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(train.labels, minlength=10), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), np.full(10, 1000))
    assert train.num_classes == 10 and train.class_names[0] == "T-shirt/top" and train.class_names[9] == "Ankle boot"


@needs_fashion
@pytest.mark.parametrize(("split", "prefix"), [("train", "train"), ("test", "t10k")])
def test_every_pixel_and_label_equals_the_idx_files(fashion, split, prefix):
    images = read_idx(SHARED / "fashion_mnist" / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(SHARED / "fashion_mnist" / f"{prefix}-labels-idx1-ubyte.gz")
    ds = fashion[split]
    assert rows(ds.images, ds.labels) == rows(images, labels)
    # A few images looked up one by one, with their labels.
    flat = ds.images.reshape(len(ds), -1)
    for i in (0, 1, 4321, len(images) - 1):
        match = np.nonzero(np.all(flat == images[i].reshape(-1), axis=1))[0]
        assert len(match) >= 1 and labels[i] in ds.labels[match]


@needs_fashion
def test_float_load_is_scaled_to_unit_range_and_cached(fashion):
    start = time.perf_counter()
    test = load("fashion_mnist", "test", data_dir=SHARED, tfds_dir=fashion["tfds_dir"])
    assert time.perf_counter() - start < 20  # from the .npy cache, no decoding
    assert test.images.dtype == np.float32 and test.images.min() == 0.0 and test.images.max() == 1.0
    np.testing.assert_array_equal(test.images, fashion["test"].images / np.float32(255))
    np.testing.assert_array_equal(test.labels, fashion["test"].labels)


@needs_fashion
def test_validation_split_of_real_train(fashion):
    kw = dict(data_dir=SHARED, tfds_dir=fashion["tfds_dir"], dtype="uint8", seed=5)
    fit = load("fashion_mnist", "train", validation=True, **kw)
    held = load("fashion_mnist", "test", validation=True, **kw)
    assert (len(fit), len(held)) == (48000, 12000)
    train = fashion["train"]
    assert sorted(rows(fit.images, fit.labels) + rows(held.images, held.labels)) == rows(train.images, train.labels)


@needs_fashion
def test_real_files_match_registered_checksums_and_a_changed_byte_does_not(tmp_path):
    spec = get_spec("fashion_mnist")
    for f in spec.variants[0].files:
        verify_file(SHARED / "fashion_mnist" / f.name, f)
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    for name in FASHION_FILES:
        (folder / name).symlink_to(SHARED / "fashion_mnist" / name)
    corrupt = folder / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(corrupt.read_bytes())
    data[100] ^= 0xFF
    corrupt.unlink()
    corrupt.write_bytes(bytes(data))  # same size, one byte changed
    start = time.perf_counter()
    with (
        no_network() as attempts,
        pytest.raises(ChecksumError, match=re.escape(str(corrupt)) + " has sha256 [0-9a-f]{64}, expected 67da17c7"),
    ):
        prepare("fashion_mnist", data_dir=tmp_path, tfds_dir=tmp_path / "tfds")
    assert time.perf_counter() - start < 10 and attempts == []
    assert not (tmp_path / "tfds" / "fashion_mnist").exists()


@needs_mnist
def test_partial_mnist_fails_fast_naming_the_missing_training_images(tmp_path):
    spec = get_spec("mnist")
    for f in spec.variants[0].files:
        if f.name in MNIST_TEST_FILES:
            verify_file(SHARED / "mnist" / f.name, f)  # the registered values are right
    start = time.perf_counter()
    with no_network() as attempts, pytest.raises(MissingFileError) as err:
        load("mnist", "test", data_dir=SHARED, tfds_dir=tmp_path / "tfds")
    assert time.perf_counter() - start < 10 and attempts == []
    message = str(err.value)
    assert str(SHARED / "mnist" / "train-images-idx3-ubyte.gz") in message
    assert "9912422 bytes" in message and "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609" in message
    assert not (tmp_path / "tfds").exists() or not any((tmp_path / "tfds").iterdir())
