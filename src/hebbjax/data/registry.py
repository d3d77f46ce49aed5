"""Dataset specifications: names, original archives, checksums, shapes, normalisation.

Every named dataset is a tensorflow-datasets (tfds) dataset; its folder inside
``HEBBJAX_DATA_DIR`` carries the tfds name (``$HEBBJAX_DATA_DIR/fashion_mnist/...``).
The size and SHA-256 of each archive are the values tfds 4.9.10 registers in its
``url_checksums/<name>.txt`` or ``datasets/<name>/checksums.tsv`` (a test checks that
they still agree). CIFAR's *python* archives are not registered by tfds (it uses
the binary ones); their values are the published ones (also used by Keras).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping

from hebbjax.data.errors import UnknownDatasetError

#: Per-channel ImageNet statistics (torchvision ``Normalize``), used by SoftHebb
#: for ImageNet and ImageNette (its code's ImageNet pipelines, Journé et al., ICLR 2023).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class FileSpec:
    """One original file: its registered name, size in bytes, SHA-256 and URL."""

    name: str
    size: int
    sha256: str
    url: str | None = None


@dataclasses.dataclass(frozen=True)
class SourceVariant:
    """One accepted set of original files (e.g. CIFAR's python or binary archive).

    Files named in ``optional`` may be absent (ImageNet: either split tar), as with
    the stock tfds builder; the splits they feed are then not prepared.
    ``registered`` is False for archives that tfds does not download (CIFAR's
    python archives): they are accepted offline only.
    """

    format: str
    files: tuple[FileSpec, ...]
    optional: tuple[str, ...] = ()
    registered: bool = True


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Everything hebbjax needs to know about one dataset.

    Attributes:
      name: hebbjax name == tfds builder name == folder name in ``HEBBJAX_DATA_DIR``.
      tfds_version: version of the tfds builder (the prepared folder's name);
        known here so that reading a prepared dataset needs no builder import.
      tfds_config: tfds builder config (``imagenette/160px-v2``), or None.
      num_classes: number of label classes.
      image_shape: (H, W, C) of the images returned by :func:`hebbjax.data.load`.
      splits: hebbjax split name -> tfds split name.
      variants: accepted sets of original files for offline preparation, in order
        of preference.
      normalization: ``"unit"`` ([0, 1]) or ``"imagenet"`` ([0, 1] then ImageNet
        mean/std per channel).
      resize: target side for variable-size images (shorter side resized, then
        centre-cropped), or None for fixed-size datasets.
      in_memory: False for datasets too large for :func:`load` (use ``stream``).
      uint8_splits: splits that :func:`load` returns as uint8 by default (memory).
      manual_only: True when tfds cannot download the archives (ImageNet).
      stored_dtype: the dtype its images are stored in, the one besides float32 that
        :func:`hebbjax.data.load` and :func:`hebbjax.data.stream` can return (uint8 pixels).
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    splits: Mapping[str, str]
    variants: tuple[SourceVariant, ...] = ()
    tfds_version: str = ""
    tfds_config: str | None = None
    normalization: str = "unit"
    resize: int | None = None
    in_memory: bool = True
    uint8_splits: tuple[str, ...] = ()
    manual_only: bool = False
    stored_dtype: str = "uint8"

    @property
    def tfds_name(self) -> str:
        """The name to give ``tfds.builder`` / ``tfds.data_source``."""
        return f"{self.name}/{self.tfds_config}" if self.tfds_config else self.name

    def tfds_split(self, split: str) -> str:
        """Maps a hebbjax split name ("test") to the tfds one ("validation")."""
        if split not in self.splits:
            raise ValueError(f"dataset {self.name!r} has no split {split!r}; available: {sorted(self.splits)}")
        return self.splits[split]


_TRAIN_TEST = {"train": "train", "test": "test"}
_IDX = "idx_gz"


def _mnist_files(base: str, sizes_sha: Mapping[str, tuple[int, str]]) -> tuple[FileSpec, ...]:
    return tuple(FileSpec(n, s, h, base + n) for n, (s, h) in sizes_sha.items())


_MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_KRIZ = "https://www.cs.toronto.edu/~kriz/"
_FASTAI = "https://s3.amazonaws.com/fast-ai-imageclas/"
_IMAGENET = "http://www.image-net.org/challenges/LSVRC/2012/nnoupb/"

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="digits",  # scikit-learn's bundled 8x8 digits: embedded, offline default
            num_classes=10,
            image_shape=(8, 8, 1),
            splits=_TRAIN_TEST,
            stored_dtype="float32",  # 0..16 scaled to [0, 1] exactly
        ),
        DatasetSpec(
            name="mnist",
            tfds_version="3.0.1",
            num_classes=10,
            image_shape=(28, 28, 1),
            splits=_TRAIN_TEST,
            variants=(
                SourceVariant(
                    _IDX,
                    _mnist_files(
                        _MNIST_URL,
                        {
                            "train-images-idx3-ubyte.gz": (
                                9912422,
                                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                            ),
                            "train-labels-idx1-ubyte.gz": (
                                28881,
                                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                            ),
                            "t10k-images-idx3-ubyte.gz": (
                                1648877,
                                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                            ),
                            "t10k-labels-idx1-ubyte.gz": (
                                4542,
                                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                            ),
                        },
                    ),
                ),
            ),
        ),
        DatasetSpec(
            name="fashion_mnist",
            tfds_version="3.0.1",
            num_classes=10,
            image_shape=(28, 28, 1),
            splits=_TRAIN_TEST,
            variants=(
                SourceVariant(
                    _IDX,
                    _mnist_files(
                        _FASHION_URL,
                        {
                            "train-images-idx3-ubyte.gz": (
                                26421880,
                                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                            ),
                            "train-labels-idx1-ubyte.gz": (
                                29515,
                                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                            ),
                            "t10k-images-idx3-ubyte.gz": (
                                4422102,
                                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                            ),
                            "t10k-labels-idx1-ubyte.gz": (
                                5148,
                                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                            ),
                        },
                    ),
                ),
            ),
        ),
        DatasetSpec(
            name="cifar10",
            tfds_version="3.0.2",
            num_classes=10,
            image_shape=(32, 32, 3),
            splits=_TRAIN_TEST,
            variants=(
                SourceVariant(
                    "cifar_python",
                    (
                        FileSpec(
                            "cifar-10-python.tar.gz",
                            170498071,
                            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                            _KRIZ + "cifar-10-python.tar.gz",
                        ),
                    ),
                    registered=False,
                ),
                SourceVariant(
                    "cifar_binary",
                    (
                        FileSpec(
                            "cifar-10-binary.tar.gz",
                            170052171,
                            "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
                            _KRIZ + "cifar-10-binary.tar.gz",
                        ),
                    ),
                ),
            ),
        ),
        DatasetSpec(
            name="cifar100",
            tfds_version="3.0.2",
            num_classes=100,
            image_shape=(32, 32, 3),
            splits=_TRAIN_TEST,
            variants=(
                SourceVariant(
                    "cifar_python",
                    (
                        FileSpec(
                            "cifar-100-python.tar.gz",
                            169001437,
                            "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
                            _KRIZ + "cifar-100-python.tar.gz",
                        ),
                    ),
                    registered=False,
                ),
                SourceVariant(
                    "cifar_binary",
                    (
                        FileSpec(
                            "cifar-100-binary.tar.gz",
                            168513733,
                            "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
                            _KRIZ + "cifar-100-binary.tar.gz",
                        ),
                    ),
                ),
            ),
        ),
        DatasetSpec(
            name="stl10",
            tfds_version="1.0.0",
            num_classes=10,
            image_shape=(96, 96, 3),
            splits={"train": "train", "test": "test", "unlabelled": "unlabelled"},
            variants=(
                SourceVariant(
                    "stl10_binary",
                    (
                        FileSpec(
                            "stl10_binary.tar.gz",
                            2640397119,
                            "f31fd99273a1acb8609c8db427cebb1de3f71de77758cdc0e22956e1289b9866",
                            "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
                        ),
                    ),
                ),
            ),
            # 100k x 96x96x3 is 2.8 GB as uint8 but 11 GB as float32: keep it uint8.
            uint8_splits=("unlabelled",),
        ),
        DatasetSpec(
            name="imagenette",
            tfds_version="1.0.0",
            tfds_config="160px-v2",  # imagenette2-160: 9469 train / 3925 val, shorter side 160
            num_classes=10,
            image_shape=(160, 160, 3),
            splits={"train": "train", "test": "validation"},
            variants=(
                SourceVariant(
                    "imagenette_tgz",
                    (
                        FileSpec(
                            "imagenette2-160.tgz",
                            99003388,
                            "64d0c4859f35a461889e0147755a999a48b49bf38a7e0f9bd27003f10db02fe5",
                            _FASTAI + "imagenette2-160.tgz",
                        ),
                    ),
                ),
            ),
            normalization="imagenet",
            resize=160,
        ),
        DatasetSpec(
            name="imagenet2012",
            tfds_version="5.1.0",
            num_classes=1000,
            image_shape=(160, 160, 3),
            splits={"train": "train", "test": "validation"},
            variants=(
                SourceVariant(
                    "imagenet_tar",
                    (
                        FileSpec(
                            "ILSVRC2012_img_train.tar",
                            147897477120,
                            "b08200a27a8e34218a0e58fde36b0fe8f73bc377f4acea2d91602057c3ca45bb",
                            _IMAGENET + "ILSVRC2012_img_train.tar",
                        ),
                        FileSpec(
                            "ILSVRC2012_img_val.tar",
                            6744924160,
                            "c7e06a6c0baccf06d8dbeb6577d71efff84673a5dbdd50633ab44f8ea0456ae0",
                            _IMAGENET + "ILSVRC2012_img_val.tar",
                        ),
                    ),
                    optional=("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
                ),
            ),
            normalization="imagenet",
            resize=160,
            in_memory=False,
            manual_only=True,
        ),
    )
}

#: Common spellings accepted by :func:`get_spec`.
ALIASES: dict[str, str] = {
    "fashion-mnist": "fashion_mnist",
    "fashionmnist": "fashion_mnist",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "stl-10": "stl10",
    "imagenet": "imagenet2012",
}


def get_spec(name: str) -> DatasetSpec:
    """Returns the spec of a dataset by name (case-insensitive, aliases allowed).

    Raises:
      UnknownDatasetError: the name is not a supported dataset; the message lists
        the supported names and the closest match.
    """
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in DATASETS:
        return DATASETS[key]
    close = difflib.get_close_matches(key, [*DATASETS, *ALIASES], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownDatasetError(f"unknown dataset {name!r}. Supported: {', '.join(sorted(DATASETS))}.{hint}")
