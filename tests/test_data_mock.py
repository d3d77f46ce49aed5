"""The loaders against ``tfds.testing.mock_data``: tfds' own builders, features and examples.

Where tests/test_data_loading.py prepares archives written by hebbjax, here tfds
generates the examples (``RandomFakeGenerator``, from each real builder's
``FeaturesDict``) and serializes them itself, so the tests catch any disagreement
between :mod:`hebbjax.data.registry` (tfds names, configs, versions, split names,
image shapes, number of classes, feature keys) and tfds' builders.

Metadata: ``mock_data`` reads ``dataset_info.json`` from ``<data_dir>/<name>/<version>``.
The tfds wheel does not ship ``testing/metadata``, so the fixture writes it from
the real builder (``builder.info``: features, label names, file format) with the
split names and sizes that tfds publishes (``TFDS_SPLITS``). hebbjax is given the
same folder as ``tfds_dir``, where :func:`prepare` finds the dataset prepared.

Two shims of tfds itself, both confined to the ``mocked`` context manager:

* tfds encodes images with TensorFlow (``tf.image.encode_png/jpeg``), which is not
  installed; the shim encodes with PIL instead (PNG lossless; JPEG at quality 100
  without chroma subsampling, so decoded pixels stay within a few levels).
* the mock's ``__getitems__`` is broken in tfds 4.9.10 (an unbound
  ``functools.partial(_getitems, ...)`` set on a MagicMock, so the keys land in
  ``self``); the shim accepts the keys as its first argument.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.core.features import image_feature
from tensorflow_datasets.testing import mocking

import hebbjax.data.preparation as preparation
from hebbjax.data import MissingFileError, load, stream, validation_split
from hebbjax.data.registry import DATASETS, IMAGENET_MEAN, IMAGENET_STD, get_spec

#: tfds name (with config) -> split name -> number of examples, as tfds publishes
#: them (tensorflow_datasets/testing/metadata/<name>/<version>/dataset_info.json
#: upstream, and the tfds catalog). Keyed by tfds name, not through the registry,
#: so that a wrong name or config in the registry finds nothing prepared.
TFDS_SPLITS: dict[str, dict[str, int]] = {
    "mnist": {"train": 60000, "test": 10000},
    "fashion_mnist": {"train": 60000, "test": 10000},
    "cifar10": {"train": 50000, "test": 10000},
    "cifar100": {"train": 50000, "test": 10000},
    "stl10": {"train": 5000, "test": 8000, "unlabelled": 100000},
    "imagenette/160px-v2": {"train": 9469, "validation": 3925},
    "imagenet2012": {"train": 1281167, "validation": 50000, "test": 100000},
}
TFDS_DATASETS = sorted(n.split("/")[0] for n in TFDS_SPLITS)  # hebbjax names
NUM_EXAMPLES = 6
#: Variable-size JPEG datasets: resized / centre-cropped to 160 x 160, ImageNet-normalised.
IMAGENET_LIKE = ("imagenette", "imagenet2012")
# Every (dataset, hebbjax split) pair that hebbjax registers.
SPLITS = [(name, split) for name in TFDS_DATASETS for split in get_spec(name).splits]


def tfds_split_of(name: str, split: str) -> str:
    """The tfds split that hebbjax must read: ImageNet(te)'s labelled held-out set is
    "validation" (ImageNet's tfds "test" split has no labels); otherwise the same name."""
    return "validation" if split == "test" and name in IMAGENET_LIKE else split


def _encode_with_pil(self: image_feature._ImageEncoder, np_image: np.ndarray) -> bytes:
    """``_ImageEncoder._encode_image`` without TensorFlow (same validation, same format)."""
    image_feature._validate_np_array(np_image, shape=self.shape, dtype=self.np_dtype)
    img = Image.fromarray(np_image[..., 0] if np_image.shape[-1] == 1 else np_image)
    out = io.BytesIO()
    if self.encoding_format == "jpeg":
        img.save(out, format="JPEG", quality=100, subsampling=0)
    else:
        img.save(out, format="PNG")
    return out.getvalue()


def _getitems(record_keys, generator) -> list:
    return [generator[k] for k in record_keys]


@contextlib.contextmanager
def mocked(metadata_dir: Path, num_examples: int = NUM_EXAMPLES) -> Iterator[None]:
    """``tfds.testing.mock_data`` on the real metadata in ``metadata_dir``, with the shims above."""
    with (
        mock.patch.object(image_feature._ImageEncoder, "_encode_image", _encode_with_pil),
        mock.patch.object(mocking, "_getitems", _getitems),
        tfds.testing.mock_data(
            num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_FILES, data_dir=str(metadata_dir)
        ),
    ):
        yield


@pytest.fixture(scope="module")
def metadata_dir(tmp_path_factory) -> Path:
    """dataset_info.json (+ features.json, label names) of every tfds dataset of the registry."""
    root = tmp_path_factory.mktemp("tfds_metadata")
    for tfds_name, splits in TFDS_SPLITS.items():
        builder = tfds.builder(tfds_name, data_dir=str(root), file_format="array_record")
        template = tfds.core.ShardedFileTemplate(
            data_dir=builder.data_path, dataset_name=builder.name, filetype_suffix="array_record"
        )
        builder.info.set_splits(
            tfds.core.SplitDict(
                [
                    tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0, filename_template=template)
                    for s, n in splits.items()
                ]
            )
        )
        Path(builder.data_dir).mkdir(parents=True)
        builder.info.write_to_directory(builder.data_dir)
    return root


@pytest.fixture
def no_preparation(monkeypatch):
    """The mocked datasets count as prepared: building or probing the network is an error."""

    def fail(*args, **kwargs):
        raise AssertionError("prepare() tried to build or download a mocked dataset")

    monkeypatch.setattr(preparation, "_build", fail)
    monkeypatch.setattr(preparation, "_network_reachable", fail)


@pytest.fixture
def requested(monkeypatch) -> list[str]:
    """The split names passed to ``tfds.data_source`` during the test."""
    splits: list[str] = []
    data_source = tfds.data_source

    def spy(name, *, split, **kwargs):
        splits.append(split)
        return data_source(name, split=split, **kwargs)

    monkeypatch.setattr(tfds, "data_source", spy)
    return splits


def mock_examples(name: str, tfds_split: str) -> list[dict]:
    """The decoded examples that the mock generates for a split (call inside ``mocked``)."""
    source = tfds.data_source(get_spec(name).tfds_name, split=tfds_split)
    return [source[i] for i in range(len(source))]


def resized(image: np.ndarray, size: int = 160) -> np.ndarray:
    """Shorter side to ``size`` (bilinear, PIL) then centre crop, computed here independently."""
    img = Image.fromarray(image)
    w, h = img.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    img = img.resize((nw, nh), Image.BILINEAR)
    x, y = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((x, y, x + size, y + size)))


def expected_uint8(name: str, examples: list[dict]) -> np.ndarray:
    """What hebbjax should return as uint8 for the mock's examples (before JPEG loss)."""
    images = [resized(e["image"], 160) if name in IMAGENET_LIKE else e["image"] for e in examples]
    return np.stack(images)


def assert_pixels_match(name: str, got: np.ndarray, expected: np.ndarray) -> None:
    """Exact for PNG datasets; JPEG ones (ImageNet-like) within the JPEG error, far
    below what a wrong resize, crop offset or channel order would give on random pixels."""
    assert got.shape == expected.shape and got.dtype == np.uint8
    if name not in IMAGENET_LIKE:
        np.testing.assert_array_equal(got, expected)
    else:
        diff = np.abs(got.astype(int) - expected.astype(int))
        assert diff.mean() < 1.0 and diff.max() <= 8, (diff.mean(), diff.max())


# --------------------------------------------------------------------------- the mock itself


def test_the_mock_generates_distinct_examples_deterministically(metadata_dir):
    """Comparisons with the mock's examples mean something only if they repeat and differ."""
    with mocked(metadata_dir):
        first = mock_examples("cifar10", "train")
    with mocked(metadata_dir):
        again = mock_examples("cifar10", "train")
    assert len(first) == NUM_EXAMPLES
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        assert a["label"] == b["label"]
    assert len({e["image"].tobytes() for e in first}) == NUM_EXAMPLES
    assert len({int(e["label"]) for e in first}) > 1


def test_the_metadata_is_the_tfds_builders(metadata_dir):
    """Split names checked by the mock are tfds' ones: a misspelt split is refused."""
    with mocked(metadata_dir):
        assert set(tfds.builder("stl10").info.splits) == {"train", "test", "unlabelled"}
        with pytest.raises(ValueError, match="Unknown split 'unlabeled'"):
            tfds.data_source("stl10", split="unlabeled")


# --------------------------------------------------------------------------- registry vs tfds


@pytest.mark.parametrize("name", TFDS_DATASETS)
def test_registry_agrees_with_the_tfds_builder(metadata_dir, name):
    spec = get_spec(name)
    with mocked(metadata_dir):
        builder = tfds.builder(spec.tfds_name)
    features = builder.info.features
    assert spec.tfds_name in TFDS_SPLITS and str(builder.version) == spec.tfds_version
    assert set(spec.splits.values()) <= set(builder.info.splits)
    assert features["label"].num_classes == spec.num_classes
    image_shape = features["image"].shape
    if spec.resize is None:
        assert image_shape == spec.image_shape
    else:  # variable size, resized and centre-cropped to a square by hebbjax
        assert image_shape == (None, None, spec.image_shape[-1]) and spec.image_shape == (spec.resize,) * 2 + (3,)


def test_every_registered_dataset_but_digits_is_covered():
    assert set(DATASETS) - {"digits"} == set(TFDS_DATASETS)


# --------------------------------------------------------------------------- load


@pytest.mark.parametrize("name,split", [(n, s) for n, s in SPLITS if get_spec(n).in_memory])
def test_load_returns_the_mocked_examples(metadata_dir, no_preparation, requested, name, split):
    spec = get_spec(name)
    with mocked(metadata_dir):
        raw = load(name, split, tfds_dir=metadata_dir, dtype="uint8", cache=False)
        default = load(name, split, tfds_dir=metadata_dir, cache=False)
        examples = mock_examples(name, tfds_split_of(name, split))
    assert requested == [tfds_split_of(name, split)] * 3  # the mock yields the same examples for every split
    assert len(raw) == len(default) == NUM_EXAMPLES
    assert raw.labels.dtype == np.int32
    np.testing.assert_array_equal(raw.labels, [int(e["label"]) for e in examples])
    assert raw.labels.min() >= 0 and raw.labels.max() < spec.num_classes
    assert_pixels_match(name, raw.images, expected_uint8(name, examples))
    assert (raw.name, raw.split, raw.num_classes) == (name, split, spec.num_classes)
    # Float conversion: /255, then ImageNet mean/std for ImageNet-like datasets.
    if split in spec.uint8_splits:
        assert default.images.dtype == np.uint8
        np.testing.assert_array_equal(default.images, raw.images)
    else:
        expected = raw.images / np.float32(255)
        if spec.normalization == "imagenet":
            expected = (expected - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
        assert default.images.dtype == np.float32
        np.testing.assert_allclose(default.images, expected, atol=1e-6)
    np.testing.assert_array_equal(default.labels, raw.labels)


def test_imagenette_is_imagenet_normalised_and_class_names_come_from_tfds(metadata_dir, no_preparation):
    with mocked(metadata_dir):
        ds = load("imagenette", "train", tfds_dir=metadata_dir, cache=False)
        names = tfds.builder("imagenette/160px-v2").info.features["label"].names
    assert ds.normalization == "imagenet" and ds.images.shape == (NUM_EXAMPLES, 160, 160, 3)
    # Normalised per channel: no longer in [0, 1] (random pixels span it fully).
    assert ds.images.min() < -1.5 and ds.images.max() > 2.0
    assert ds.class_names == tuple(names) and ds.class_names[0] == "n01440764"


def test_load_validation_split_holds_out_the_seeded_mocked_examples(metadata_dir, no_preparation):
    with mocked(metadata_dir):
        fit = load("mnist", "train", tfds_dir=metadata_dir, validation=True, dtype="uint8", cache=False)
        held = load("mnist", "test", tfds_dir=metadata_dir, validation=True, dtype="uint8", cache=False)
        examples = mock_examples("mnist", "train")
    fit_index, held_index = validation_split(NUM_EXAMPLES, seed=0)
    images = expected_uint8("mnist", examples)
    np.testing.assert_array_equal(fit.images, images[fit_index])
    np.testing.assert_array_equal(held.images, images[held_index])
    assert held.split == "validation" and len(fit) + len(held) == NUM_EXAMPLES


def test_load_refuses_imagenet_as_too_large(metadata_dir, no_preparation):
    with mocked(metadata_dir), pytest.raises(ValueError, match="use hebbjax.data.stream"):
        load("imagenet2012", "train", tfds_dir=metadata_dir)


def test_a_split_missing_from_the_metadata_is_reported(metadata_dir, tmp_path, no_preparation):
    """hebbjax checks the prepared split names itself (the ImageNet case of a missing tar)."""
    folder = tmp_path / "imagenet2012" / "5.1.0"
    shutil.copytree(metadata_dir / "imagenet2012" / "5.1.0", folder)
    info = (folder / "dataset_info.json").read_text().replace('"name": "train"', '"name": "unprepared"')
    (folder / "dataset_info.json").write_text(info)
    with mocked(metadata_dir), pytest.raises(MissingFileError, match="without its 'train' split"):
        stream("imagenet2012", "train", 2, tfds_dir=tmp_path)


# --------------------------------------------------------------------------- stream


@pytest.mark.parametrize("split", ["train", "test"])
def test_imagenet_streams_resized_normalised_mocked_examples(metadata_dir, no_preparation, requested, split):
    with mocked(metadata_dir, num_examples=5):
        batches = list(stream("imagenet2012", split, 2, tfds_dir=metadata_dir, shuffle=False, drop_remainder=False))
        examples = mock_examples("imagenet2012", tfds_split_of("imagenet2012", split))
    assert requested == [tfds_split_of("imagenet2012", split)] * 2
    assert [len(y) for _, y in batches] == [2, 2, 1]
    images = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    assert images.dtype == np.float32 and labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [int(e["label"]) for e in examples])
    assert labels.min() >= 0 and labels.max() < 1000
    # Undo the ImageNet normalisation to compare pixels.
    pixels = np.rint((images * np.float32(IMAGENET_STD) + np.float32(IMAGENET_MEAN)) * 255).astype(np.uint8)
    assert_pixels_match("imagenet2012", pixels, expected_uint8("imagenet2012", examples))


@pytest.mark.parametrize("name,split", [("cifar100", "train"), ("stl10", "unlabelled"), ("imagenette", "test")])
def test_stream_yields_each_mocked_example_once_per_epoch(metadata_dir, no_preparation, name, split):
    with mocked(metadata_dir):
        loaded = load(name, split, tfds_dir=metadata_dir, dtype="uint8", cache=False)
        batches = list(stream(name, split, 3, tfds_dir=metadata_dir, dtype="uint8", seed=1, epochs=2))
    assert len(batches) == 2 * NUM_EXAMPLES // 3
    for epoch in (batches[:2], batches[2:]):
        images = np.concatenate([x for x, _ in epoch])
        labels = np.concatenate([y for _, y in epoch])
        order = [next(i for i in range(NUM_EXAMPLES) if np.array_equal(loaded.images[i], x)) for x in images]
        assert sorted(order) == list(range(NUM_EXAMPLES))
        np.testing.assert_array_equal(labels, loaded.labels[order])
