"""Loading from small archives in the original formats (written by hebbjax.testing).

CIFAR-10/100, STL-10, ImageNette and ImageNet cannot be downloaded here, so these
tests generate archives byte-compatible with the originals, prepare them offline
through tfds (with the checksums of the generated files, since they differ from
the registered ones) and compare what the loaders return with what was written.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import re
import shutil
import socket
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import hebbjax.data.preparation as prepare_module
from hebbjax.data import (
    ArchiveFormatError,
    ChecksumError,
    Dataset,
    MissingFileError,
    OfflineError,
    load,
    prepare,
    stream,
    validation_split,
)
from hebbjax.data.loading import BatchStream, FloatView
from hebbjax.data.registry import get_spec
from hebbjax import testing

IMAGENETTE_WNIDS = Path(tfds.core.tfds_path("image_classification/imagenette_labels.txt")).read_text().split()
IMAGENET_WNIDS = Path(tfds.core.tfds_path("datasets/imagenet2012/labels.txt")).read_text().split()
IMAGENET_VAL_WNIDS = Path(tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt")).read_text().split()


@contextlib.contextmanager
def no_network() -> Iterator[list]:
    """Makes every socket connection attempt fail, and records it."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during a test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        mp.setattr(socket, "create_connection", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        yield attempts


def rows(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
    """The (image, label) pairs as sorted bytes: tfds stores records in a hashed
    order, so splits are compared as multisets."""
    flat = np.concatenate(
        [
            np.ascontiguousarray(images).reshape(len(images), -1).view(np.uint8),
            labels.astype("<i8").reshape(-1, 1).view(np.uint8),
        ],
        axis=1,
    )
    return sorted(map(bytes, flat))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> dict:
    """Original-format archives for every dataset, prepared once, offline."""
    root = tmp_path_factory.mktemp("archives")
    tfds_dir = tmp_path_factory.mktemp("tfds")
    arrays = {
        "mnist": testing.write_mnist(root / "mnist", n_train=60, n_test=20),
        "cifar10": testing.write_cifar_python(root / "cifar10", 10, n_train=50, n_test=20),
        "cifar100": testing.write_cifar_python(root / "cifar100", 100, n_train=40, n_test=20),
        "stl10": testing.write_stl10(root / "stl10", n_train=12, n_test=6, n_unlabelled=20),
        "imagenette": testing.write_imagenette(root / "imagenette", IMAGENETTE_WNIDS[:3], per_class=2, n_val=1),
        "imagenet2012": testing.write_imagenet(root / "imagenet2012", IMAGENET_WNIDS[:3], per_class=2, n_val=4),
    }
    sums = {n: testing.checksums(sorted((root / n).iterdir())) for n in arrays}
    with no_network() as attempts:
        for name in arrays:
            prepare(name, data_dir=root, tfds_dir=tfds_dir, file_checksums=sums[name])
    assert attempts == []
    return {"root": root, "tfds_dir": tfds_dir, "arrays": arrays, "sums": sums}


def _load(synth: dict, name: str, split: str, **kw) -> Dataset:
    return load(name, split, data_dir=synth["root"], tfds_dir=synth["tfds_dir"], **kw)


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_pixels_and_labels_equal_the_archive(synth, name, split):
    written = synth["arrays"][name][split]
    ds = _load(synth, name, split, dtype="uint8", cache=False)
    assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int32
    assert ds.images.shape == written["image"].shape
    assert rows(ds.images, ds.labels) == rows(written["image"], written["label"])
    assert ds.num_classes == get_spec(name).num_classes and ds.name == name and ds.split == split


def test_float_images_are_uint8_over_255_and_cached_equal(synth):
    raw = _load(synth, "cifar10", "train", dtype="uint8", cache=False)
    first = _load(synth, "cifar10", "train")  # writes the cache
    cached = _load(synth, "cifar10", "train")
    assert first.images.dtype == np.float32
    np.testing.assert_array_equal(first.images, raw.images.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(cached.images, first.images)
    np.testing.assert_array_equal(cached.labels, raw.labels)
    assert list((synth["tfds_dir"] / "_hebbjax_cache" / "cifar10").rglob("train-*-images.npy"))
    assert raw.class_names == tuple(f"class{i}" for i in range(10))  # from batches.meta


def test_a_cached_split_is_mapped_from_its_file_and_writes_never_reach_it(synth):
    raw = _load(synth, "cifar10", "test", dtype="uint8", cache=False)
    _load(synth, "cifar10", "test", dtype="uint8")  # writes the cache
    mapped = _load(synth, "cifar10", "test", dtype="uint8")
    [path] = (synth["tfds_dir"] / "_hebbjax_cache" / "cifar10").rglob("test-*-images.npy")
    # a process that places only its rows reads only their pages
    assert isinstance(mapped.images, np.memmap) and Path(mapped.images.filename) == path
    np.testing.assert_array_equal(mapped.images, raw.images)
    mapped.images[0] = 255 - mapped.images[0]  # copy on write: the caller's array changes, the file does not
    assert not np.array_equal(mapped.images[0], raw.images[0])
    np.testing.assert_array_equal(_load(synth, "cifar10", "test", dtype="uint8").images, raw.images)


def test_a_float_view_of_a_mapped_split_is_the_float_load_bit_for_bit(synth):
    floats = _load(synth, "cifar10", "train").images
    view = FloatView(_load(synth, "cifar10", "train", dtype="uint8").images)
    part = view[2:9]
    assert isinstance(part, FloatView) and part.shape == (7, *floats.shape[1:])  # a slice converts nothing
    for got, want in ((np.asarray(view), floats), (np.asarray(part), floats[2:9]), (view[[0, 5, 3]], floats[[0, 5, 3]]),
                      (view[4], floats[4])):
        assert got.dtype == np.float32 and got.tobytes() == want.tobytes()
    with pytest.raises(ValueError, match="images: expected uint8, got float32"):
        FloatView(floats)


def test_a_run_places_the_floats_of_its_rows_read_from_the_mapped_split(synth, monkeypatch):
    from hebbjax.run import compose_config, load_data
    from hebbjax.train import DeviceSource
    from hebbjax.train.parallel import make_mesh

    monkeypatch.setenv("HEBBJAX_TFDS_DIR", str(synth["tfds_dir"]))
    floats = _load(synth, "cifar10", "train")  # and the cache
    data = load_data(compose_config("data.name=cifar10", f"data.dir={synth['root']}", "data.limit_train=20"))
    assert isinstance(data.train.images, FloatView) and isinstance(data.train.images.images, np.memmap)
    placed = DeviceSource.place(data.train, make_mesh()).arrays["x"]
    assert np.asarray(placed).tobytes() == floats.images[:20].tobytes()  # what the float32 split gives


def test_cifar100_binary_archive_gives_the_same_fine_labels(tmp_path):
    written = testing.write_cifar_binary(tmp_path / "src" / "cifar100", 100, n_train=30, n_test=10, seed=3)
    ds = load(
        "cifar100",
        "test",
        data_dir=tmp_path / "src",
        tfds_dir=tmp_path / "tfds",
        file_checksums=testing.checksums((tmp_path / "src" / "cifar100").iterdir()),
        dtype="uint8",
    )
    assert rows(ds.images, ds.labels) == rows(written["test"]["image"], written["test"]["label"])
    assert ds.class_names[:2] == ("fine0", "fine1")


@pytest.mark.parametrize("split", ["train", "test", "unlabelled"])
def test_stl10_column_major_images_and_labels(synth, split):
    written = synth["arrays"]["stl10"][split]
    ds = _load(synth, "stl10", split, dtype="uint8", cache=False)
    assert ds.images.shape[1:] == (96, 96, 3)
    assert rows(ds.images, ds.labels) == rows(written["image"], written["label"])
    if split == "unlabelled":
        assert np.all(ds.labels == -1)
    default = _load(synth, "stl10", split)
    # unlabelled stays uint8 by default (100k images: 2.8 GB instead of 11 GB).
    assert default.images.dtype == (np.uint8 if split == "unlabelled" else np.float32)
    np.testing.assert_array_equal(default.to_float(default.images[:3]), ds.images[:3] / np.float32(255))


def _imagenet_reference(data: bytes, size: int = 160) -> np.ndarray:
    """Resize(shorter side 160, bilinear) + centre crop 160, computed with PIL here."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BILINEAR)
    x, y = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((x, y, x + size, y + size)))


def test_imagenette_is_resized_cropped_and_imagenet_normalised(synth):
    written = synth["arrays"]["imagenette"]
    raw = _load(synth, "imagenette", "train", dtype="uint8", cache=False)
    expected_labels = [IMAGENETTE_WNIDS.index(n.split("_")[0]) for n in written["train"]]
    expected = np.stack([_imagenet_reference(b) for b in written["train"].values()])
    assert raw.images.shape == (6, 160, 160, 3)
    assert rows(raw.images, raw.labels) == rows(expected, np.array(expected_labels))
    ds = _load(synth, "imagenette", "train")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(ds.images, (raw.images / 255.0 - mean) / std, atol=1e-5)
    test = _load(synth, "imagenette", "test")  # "test" is ImageNette's validation split
    assert len(test) == 3 and test.split == "test"


def test_imagenet_streams_train_and_validation_with_tfds_labels(synth):
    written = synth["arrays"]["imagenet2012"]
    with pytest.raises(ValueError, match="use hebbjax.data.stream"):
        _load(synth, "imagenet2012", "train")
    with stream(
        "imagenet2012", "train", 2, data_dir=synth["root"], tfds_dir=synth["tfds_dir"], dtype="uint8"
    ) as batches:
        got = list(batches)
    assert len(got) == 3 and all(x.shape == (2, 160, 160, 3) and x.dtype == np.uint8 for x, _ in got)
    labels = np.concatenate([y for _, y in got])
    assert sorted(labels) == [0, 0, 1, 1, 2, 2]  # wnid order of tfds' labels.txt
    # The CMYK and PNG files were converted to RGB JPEG, like the stock builder does.
    images = np.concatenate([x for x, _ in got])
    assert images.std() > 10
    val = list(
        stream(
            "imagenet2012", "test", 4, data_dir=synth["root"], tfds_dir=synth["tfds_dir"], dtype="uint8", shuffle=False
        )
    )
    ((x, y),) = val
    expected = sorted(IMAGENET_WNIDS.index(w) for w in IMAGENET_VAL_WNIDS[:4])
    assert sorted(y.tolist()) == expected
    refs = {
        IMAGENET_WNIDS.index(IMAGENET_VAL_WNIDS[i]): _imagenet_reference(b)
        for i, b in enumerate(written["val"].values())
    }
    compared = 0
    for image, label in zip(x, y, strict=True):
        if list(y).count(label) == 1:  # unambiguous label -> compare pixels
            assert np.abs(image.astype(int) - refs[label].astype(int)).max() <= 1
            compared += 1
    assert compared >= 2


def test_imagenet_split_whose_tar_was_missing_is_reported(tmp_path):
    written = testing.write_imagenet(tmp_path / "src" / "imagenet2012", IMAGENET_WNIDS[:2], per_class=1, n_val=2)
    (tmp_path / "src" / "imagenet2012" / "ILSVRC2012_img_train.tar").unlink()  # as tfds: prepare what exists
    kw = dict(data_dir=tmp_path / "src", tfds_dir=tmp_path / "tfds", verify_checksums=False)
    assert len(list(stream("imagenet2012", "test", 2, **kw))) == 1
    with pytest.raises(MissingFileError, match="without its 'train' split.*ILSVRC2012_img_train.tar"):
        stream("imagenet2012", "train", 2, **kw)
    assert len(written["val"]) == 2


# --------------------------------------------------------------------------- validation split


def test_validation_split_is_seeded_disjoint_and_complete(synth):
    train = _load(synth, "cifar10", "train", dtype="uint8")
    fit = _load(synth, "cifar10", "train", validation=True, dtype="uint8")
    held = _load(synth, "cifar10", "test", validation=True, dtype="uint8")
    assert (len(fit), len(held)) == (40, 10) and (fit.split, held.split) == ("train", "validation")
    assert sorted(rows(fit.images, fit.labels) + rows(held.images, held.labels)) == rows(train.images, train.labels)
    again = _load(synth, "cifar10", "test", validation=True, dtype="uint8")
    np.testing.assert_array_equal(again.images, held.images)
    other = _load(synth, "cifar10", "test", validation=True, seed=1, dtype="uint8")
    assert rows(other.images, other.labels) != rows(held.images, held.labels)
    fit_idx, held_idx = validation_split(50, seed=0)
    assert len(np.intersect1d(fit_idx, held_idx)) == 0 and len(np.union1d(fit_idx, held_idx)) == 50


def test_digits_is_embedded_with_a_fixed_split():
    train, test = load("digits", "train"), load("digits", "test")
    assert train.images.shape == (1347, 8, 8, 1) and test.images.shape == (450, 8, 8, 1)
    assert train.images.dtype == np.float32 and train.images.min() == 0.0 and train.images.max() == 1.0
    np.testing.assert_array_equal(np.unique(train.images * 16), np.arange(17))  # 0..16 / 16, exact
    total = np.bincount(train.labels) + np.bincount(test.labels)
    assert np.all(np.abs(np.bincount(test.labels) - total * 450 / 1797) <= 1)  # stratified
    np.testing.assert_array_equal(load("digits", "test").images, test.images)
    fit, held = load("digits", "train", validation=True), load("digits", "test", validation=True)
    assert (len(fit), len(held)) == (1078, 269)


# --------------------------------------------------------------------------- streaming


def test_stream_yields_each_example_once_per_epoch_in_a_seeded_order(synth):
    kw = dict(data_dir=synth["root"], tfds_dir=synth["tfds_dir"], dtype="uint8")
    whole = _load(synth, "mnist", "test", dtype="uint8")
    batches = list(stream("mnist", "test", 6, seed=3, drop_remainder=False, **kw))
    assert [len(y) for _, y in batches] == [6, 6, 6, 2]
    images = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    assert rows(images, labels) == rows(whole.images, whole.labels)
    same = list(stream("mnist", "test", 6, seed=3, drop_remainder=False, **kw))
    np.testing.assert_array_equal(np.concatenate([x for x, _ in same]), images)
    two_epochs = stream("mnist", "test", 6, seed=3, epochs=2, **kw)
    assert len(two_epochs) == 3 and len(list(two_epochs)) == 6
    floats = next(iter(stream("mnist", "test", 4, data_dir=synth["root"], tfds_dir=synth["tfds_dir"])))[0]
    assert floats.dtype == np.float32 and floats.max() <= 1.0


def test_stream_validation_matches_load(synth):
    held = _load(synth, "cifar10", "test", validation=True, dtype="uint8")
    batches = list(
        stream(
            "cifar10",
            "test",
            3,
            validation=True,
            drop_remainder=False,
            data_dir=synth["root"],
            tfds_dir=synth["tfds_dir"],
            dtype="uint8",
        )
    )
    images = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    assert rows(images, labels) == rows(held.images, held.labels)


def test_stream_limit_and_shuffle_seed_stay_inside_the_validation_split(synth):
    """The held-out 20% never leaks into a limited or reshuffled training stream: ``seed`` fixes
    the split, ``shuffle_seed`` only the order, ``limit`` takes the first images of the part."""
    kw = dict(data_dir=synth["root"], tfds_dir=synth["tfds_dir"], dtype="uint8", validation=True, seed=3)
    fit, held_out = validation_split(50, seed=3)
    reference = _load(synth, "cifar10", "train", dtype="uint8")  # stored order: index i is row i
    row = {reference.images[i].tobytes(): i for i in range(50)}

    def indices(**more) -> list[int]:
        with stream("cifar10", "train", 5, **kw, **more) as batches:
            return [row[x.tobytes()] for images, _ in batches for x in images]

    limited = indices(limit=20, shuffle_seed=1)
    assert sorted(limited) == sorted(fit[:20].tolist())
    other_order = indices(limit=20, shuffle_seed=2)
    assert sorted(other_order) == sorted(limited) and other_order != limited
    with stream("cifar10", "test", 5, **kw) as batches:  # the held-out part, same seed
        held = [row[x.tobytes()] for images, _ in batches for x in images]
    assert sorted(held) == held_out.tolist() and not set(held) & set(indices(shuffle_seed=7))
    with pytest.raises(ValueError, match="limit: expected a positive number"):
        stream("cifar10", "train", 5, limit=0, **kw)


def test_stream_of_digits_prefetches_and_stops_on_close():
    s = stream("digits", "train", 32, seed=0, epochs=None, prefetch=2)
    first = next(s)
    assert first[0].shape == (32, 8, 8, 1) and first[1].dtype == np.int32
    time.sleep(0.2)
    assert s._queue.qsize() >= 1  # the producer works ahead of the consumer
    s.close()
    assert not s._thread.is_alive()
    with pytest.raises(StopIteration):
        next(s)


def test_stream_forwards_producer_errors():
    spec = get_spec("digits")

    def broken(index, pool):
        raise ArchiveFormatError("record 3 is corrupt")

    s = BatchStream(spec, broken, iter([np.arange(2)]), 10, 2, drop_remainder=True, prefetch=2,
                    out_dtype=np.dtype(np.float32), num_threads=1)
    with pytest.raises(ArchiveFormatError, match="record 3"):
        next(s)


def test_a_dtype_the_dataset_is_not_stored_in_is_refused_before_anything_is_read(tmp_path):
    """float32, or the stored dtype (uint8 pixels; the digits are stored as float32), from both
    readers; the archives of the missing folder are never looked for."""
    for read in (lambda **kw: load(**kw), lambda **kw: stream(batch_size=4, **kw)):
        with pytest.raises(ValueError, match=r"dtype: 'digits' cannot be returned as uint8 \(it is stored as float32\)"):
            read(name="digits", split="train", dtype="uint8")
        with pytest.raises(ValueError, match=r"dtype: 'cifar10' cannot be returned as float16 .*expected 'float32' or 'uint8'"):
            read(name="cifar10", split="train", dtype="float16", data_dir=tmp_path / "missing", tfds_dir=tmp_path / "tfds")
        with pytest.raises(ValueError, match=r"dtype: expected 'float32' or 'uint8', got 'pixels'"):
            read(name="cifar10", split="train", dtype="pixels", data_dir=tmp_path / "missing", tfds_dir=tmp_path / "tfds")
    images, _ = next(stream("digits", "train", 4, dtype="float32"))
    assert images.dtype == np.float32


@pytest.mark.parametrize("normalization", ["unit", "imagenet"])
def test_to_float_on_the_device_equals_the_host_for_every_value(normalization):
    import jax

    from hebbjax.data.loading import to_float

    values = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    device = np.asarray(jax.jit(lambda x: to_float(x, normalization))(values))
    np.testing.assert_array_equal(device, to_float(values, normalization))
    assert device.dtype == np.float32
    if normalization == "unit":
        assert (device.min(), device.max()) == (0.0, 1.0)


def test_to_float_works_on_device_arrays_under_jit(synth):
    import jax
    import jax.numpy as jnp

    ds = _load(synth, "imagenette", "test", dtype="uint8")
    out = jax.jit(ds.to_float)(jnp.asarray(ds.images))
    np.testing.assert_array_equal(np.asarray(out), _load(synth, "imagenette", "test").images)  # bit for bit
    assert ds.to_float(out) is out  # float input passes through


# --------------------------------------------------------------------------- bad data


def _leftovers(tfds_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(tfds_dir)) for p in tfds_dir.rglob("*")) if tfds_dir.exists() else []


def _fail_fast(exc, match, fn, probes: bool = False):
    """``fn`` raises ``exc`` within seconds, without touching the network (or, with
    ``probes``, after at most one connection attempt: the reachability probe)."""
    start = time.perf_counter()
    with no_network() as attempts, pytest.raises(exc, match=match):
        fn()
    assert time.perf_counter() - start < 10
    assert len(attempts) <= (1 if probes else 0)


def test_missing_file_names_path_size_and_sha256(tmp_path):
    testing.write_mnist(tmp_path / "fashion_mnist")
    (tmp_path / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    expected = tmp_path / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz"
    _fail_fast(
        MissingFileError,
        re.escape(f"{expected} (5148 bytes, sha256 67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5)"),
        lambda: load("fashion_mnist", "train", data_dir=tmp_path, tfds_dir=tmp_path / "tfds"),
    )
    assert _leftovers(tmp_path / "tfds") == []


def test_wrong_checksum_names_file_and_expected_values(tmp_path):
    testing.write_mnist(tmp_path / "mnist")
    # Registered checksums (the default) reject the synthetic files: size first.
    _fail_fast(
        ChecksumError,
        r"train-images-idx3-ubyte.gz has \d+ bytes, expected 9912422 bytes \(sha256 440fcabf",
        lambda: prepare("mnist", data_dir=tmp_path, tfds_dir=tmp_path / "tfds"),
    )
    # Same size, different content: the SHA-256 check.
    sums = testing.checksums((tmp_path / "mnist").iterdir())
    size, _ = sums["t10k-labels-idx1-ubyte.gz"]
    sums["t10k-labels-idx1-ubyte.gz"] = (size, "0" * 64)
    _fail_fast(
        ChecksumError,
        r"t10k-labels-idx1-ubyte.gz has sha256 [0-9a-f]{64}, expected 0{64}",
        lambda: prepare("mnist", data_dir=tmp_path, tfds_dir=tmp_path / "tfds", file_checksums=sums),
    )
    assert _leftovers(tmp_path / "tfds") == []


def test_truncated_gzip_is_a_format_error_and_leaves_nothing(tmp_path):
    testing.write_mnist(tmp_path / "mnist", n_train=500)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-200])
    _fail_fast(
        ArchiveFormatError,
        re.escape(f"{path}: truncated or corrupt gzip") + ".*expected a gzip-compressed IDX file",
        lambda: prepare("mnist", data_dir=tmp_path, tfds_dir=tmp_path / "tfds", verify_checksums=False),
    )
    assert _leftovers(tmp_path / "tfds") == []
    # A complete gzip whose IDX payload is short is caught by the header check.
    labels = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(testing.idx_bytes(np.zeros((500, 28, 28), np.uint8))[:-28]))
    _fail_fast(
        ArchiveFormatError,
        "header announces shape",
        lambda: prepare("mnist", data_dir=tmp_path, tfds_dir=tmp_path / "tfds", verify_checksums=False),
    )
    assert labels.exists() and _leftovers(tmp_path / "tfds") == []


def test_truncated_tar_is_caught_by_checksum_or_format(tmp_path):
    testing.write_cifar_python(tmp_path / "cifar10", 10, n_train=200, n_test=20)
    path = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    sums = testing.checksums([path])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _fail_fast(
        ChecksumError,
        re.escape(str(path)) + f" has \\d+ bytes, expected {sums[path.name][0]} bytes",
        lambda: prepare("cifar10", data_dir=tmp_path, tfds_dir=tmp_path / "tfds", file_checksums=sums),
    )
    _fail_fast(
        ArchiveFormatError,
        re.escape(f"{path}: truncated or corrupt") + ".*CIFAR-10 python archive",
        lambda: prepare("cifar10", data_dir=tmp_path, tfds_dir=tmp_path / "tfds", verify_checksums=False),
    )
    assert _leftovers(tmp_path / "tfds") == []


def test_archive_without_the_expected_members(tmp_path):
    folder = tmp_path / "stl10"
    folder.mkdir()
    with tarfile.open(folder / "stl10_binary.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("stl10_binary/readme.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    _fail_fast(
        ArchiveFormatError,
        "lacks stl10_binary/train_X.bin",
        lambda: prepare("stl10", data_dir=tmp_path, tfds_dir=tmp_path / "tfds", verify_checksums=False),
    )
    assert _leftovers(tmp_path / "tfds") == []


def test_offline_without_archives_fails_fast_with_instructions(tmp_path):
    _fail_fast(
        OfflineError,
        "unreachable.*"
        + re.escape(f"put the original archive(s) at: {tmp_path}/cifar10/cifar-10-python.tar.gz (170498071 bytes"),
        lambda: load("cifar10", "train", data_dir=tmp_path, tfds_dir=tmp_path / "tfds"),
        probes=True,
    )
    _fail_fast(
        MissingFileError,
        "download=False",
        lambda: load("cifar10", "train", data_dir=tmp_path, tfds_dir=tmp_path / "tfds", download=False),
    )
    _fail_fast(
        MissingFileError,
        "cannot be downloaded automatically.*ILSVRC2012_img_val.tar",
        lambda: prepare("imagenet2012", data_dir=tmp_path, tfds_dir=tmp_path / "tfds"),
    )
    assert _leftovers(tmp_path / "tfds") == []


def test_environment_variable_locates_archives_and_default_tfds_dir(tmp_path, monkeypatch):
    written = testing.write_mnist(tmp_path / "mnist", n_train=10, n_test=10)
    monkeypatch.setenv("HEBBJAX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HEBBJAX_TFDS_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # so ~/.cache/hebbjax holds nothing of the developer's
    with no_network() as attempts:
        ds = load("mnist", "test", verify_checksums=False, dtype="uint8")
    assert attempts == []
    assert rows(ds.images, ds.labels) == rows(written["test"]["image"], written["test"]["label"])
    assert (tmp_path / "tfds" / "mnist" / "3.0.1" / "dataset_info.json").is_file()
    assert not [p for p in (tmp_path / "tfds").iterdir() if p.name.startswith(".incomplete")]


def test_read_only_data_folder_is_left_untouched(tmp_path, monkeypatch):
    root = tmp_path / "readonly"
    testing.write_mnist(root / "mnist", n_train=10, n_test=10)
    root.chmod(0o555)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HEBBJAX_TFDS_DIR", raising=False)
    try:
        ds = load("mnist", "test", data_dir=root, verify_checksums=False)
    finally:
        root.chmod(0o755)
    assert len(ds) == 10 and not (root / "tfds").exists()
    assert (tmp_path / "home" / ".cache" / "hebbjax" / "tfds" / "mnist" / "3.0.1" / "dataset_info.json").is_file()


def test_online_path_downloads_through_tfds_then_reads_without_tensorflow(tmp_path, monkeypatch):
    """Simulates the network: tfds' download manager hands over local copies."""
    src = tmp_path / "server"
    written = testing.write_cifar_binary(src, 10, n_train=10, n_test=10)
    requested = []

    def fake_download(self, url_or_urls):
        requested.append(url_or_urls)
        return {key: src / url.rsplit("/", 1)[-1] for key, url in url_or_urls.items()}

    monkeypatch.setattr(prepare_module, "_network_reachable", lambda urls, timeout=3.0: True)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", fake_download)
    ds = load("cifar10", "test", data_dir=tmp_path / "no_archives_here", tfds_dir=tmp_path / "tfds", dtype="uint8")
    assert requested == [{"cifar-10-binary.tar.gz": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"}]
    assert rows(ds.images, ds.labels) == rows(written["test"]["image"], written["test"]["label"])
    assert ds.class_names[:2] == ("class0", "class1")


def test_a_prepared_dataset_is_reused_without_its_archives(synth, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synth["tfds_dir"] / "mnist", root / "tfds" / "mnist")
    with no_network() as attempts:
        ds = load("mnist", "train", data_dir=root, download=False, cache=False, dtype="uint8")
    assert attempts == [] and len(ds) == 60
