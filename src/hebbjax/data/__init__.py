"""Datasets for hebbjax: tensorflow-datasets online and offline, augmentation on device.

Usage::

    from hebbjax.data import load, stream, augment

    train = load("fashion_mnist", "train")             # Dataset, float32 in [0, 1]
    test = load("fashion_mnist", "test")
    fit = load("cifar10", "train", validation=True)     # 80 % of train
    val = load("cifar10", "test", validation=True)      # the other 20 % of train
    for images, labels in stream("imagenet2012", "train", 32, seed=0):
        ...
    aug = augment.make_augmentation(["crop", "flip"])   # fn(key, images), jit-compiled parts

Named datasets are tfds datasets prepared as ``array_record`` and read with
``tfds.data_source`` (no TensorFlow). Offline, put the original archives in
``$HEBBJAX_DATA_DIR/<tfds name>/`` (or pass ``data_dir``); see
:mod:`hebbjax.data.preparation` for folders, checksums and failure behaviour and
:mod:`hebbjax.data.loading` for pixel conventions. ``digits`` (scikit-learn's
8x8 digits) is embedded and needs neither files nor network.
:mod:`hebbjax.testing` writes small archives in the original formats
(for tests and offline dry runs).
"""

from hebbjax.data import augment
from hebbjax.data.errors import (
    ArchiveFormatError,
    ChecksumError,
    DataError,
    MissingFileError,
    OfflineError,
    UnknownDatasetError,
)
from hebbjax.data.loading import BatchStream, Dataset, load, stream, to_float, validation_split
from hebbjax.data.preparation import ENV_DATA_DIR, ENV_TFDS_DIR, prepare
from hebbjax.data.registry import DATASETS, DatasetSpec, get_spec

__all__ = [
    "ArchiveFormatError",
    "BatchStream",
    "ChecksumError",
    "DATASETS",
    "DataError",
    "Dataset",
    "DatasetSpec",
    "ENV_DATA_DIR",
    "ENV_TFDS_DIR",
    "MissingFileError",
    "OfflineError",
    "UnknownDatasetError",
    "augment",
    "get_spec",
    "load",
    "prepare",
    "stream",
    "to_float",
    "validation_split",
]
