"""tfds builders that prepare datasets from the original archives without TensorFlow.

Each builder subclasses the stock tfds builder, keeping its name, version,
``_info()`` (features, label names, citation) and module (so tfds finds the
registered checksums when it downloads), and replaces only ``_split_generators``:
the archives are read with gzip/tarfile/numpy (:mod:`hebbjax.data.archives`) and
images are handed to tfds as encoded bytes (PNG via :func:`~hebbjax.data.images.encode_png`,
JPEGs as they are), which ``tfds.features.Image`` stores as-is. Encoding numpy
arrays, extracting archives and the stock readers all need TensorFlow; this path
does not. The prepared dataset has the stock layout, so ``tfds.data_source`` reads it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from hebbjax.data import archives
from hebbjax.data.images import encode_png_batch, jpeg_bytes
from hebbjax.data.registry import DatasetSpec, SourceVariant

Example = tuple[Any, dict[str, Any]]
SplitGenerators = dict[str, Iterator[Example]]


@functools.cache
def builder_class(name: str) -> type[tfds.core.GeneratorBasedBuilder]:
    """The hebbjax builder class of the tfds dataset ``name`` (cached)."""
    stock = tfds.builder_cls(name)
    namespace = {
        "name": stock.name,
        # The stock module: tfds finds the registered checksums and the metadata
        # (description, citation) next to the builder's module.
        "__module__": stock.__module__,
        "__qualname__": f"Hebbjax{stock.__name__}",
        "__doc__": f"{stock.__name__} prepared from its original archives without TensorFlow.",
    }
    # skip_registration: the stock builder keeps its name in the tfds registry.
    return type(f"Hebbjax{stock.__name__}", (_ArchiveBuilderMixin, stock), namespace, skip_registration=True)


def make_builder(
    spec: DatasetSpec,
    tfds_dir: Path,
    variant: SourceVariant,
    files: Mapping[str, Path] | None,
) -> tfds.core.GeneratorBasedBuilder:
    """A builder preparing ``spec`` into ``tfds_dir``.

    Args:
      files: registered file name -> local path (offline). None downloads the
        variant's files with the tfds download manager (which verifies the
        registered checksums).
    """
    cls = builder_class(spec.name)
    return cls(
        data_dir=str(tfds_dir),
        config=spec.tfds_config,
        hebbjax_spec=spec,
        hebbjax_variant=variant,
        hebbjax_files=None if files is None else dict(files),
    )


class _ArchiveBuilderMixin:
    """Replaces the stock ``_split_generators`` by archive readers."""

    def __init__(
        self,
        *,
        hebbjax_spec: DatasetSpec,
        hebbjax_variant: SourceVariant,
        hebbjax_files: dict[str, Path] | None,
        **kwargs: Any,
    ) -> None:
        self._hebbjax_spec = hebbjax_spec
        self._hebbjax_variant = hebbjax_variant
        self._hebbjax_files = hebbjax_files
        super().__init__(**kwargs)  # type: ignore[call-arg]

    def _split_generators(self, dl_manager: Any) -> SplitGenerators:
        files = self._hebbjax_files
        if files is None:
            urls = {f.name: f.url for f in self._hebbjax_variant.files}
            files = {k: Path(v) for k, v in dl_manager.download(urls).items()}
        reader = _READERS[self._hebbjax_variant.format]
        return reader(self, self._hebbjax_spec, files)

    def _set_label_names(self, names: list[str], key: str = "label") -> None:
        """Stores class names read from the archive, as the stock builders do."""
        feature = self.info.features[key]  # type: ignore[attr-defined]
        if names and len(names) == feature.num_classes:
            feature.names = names


# --------------------------------------------------------------------------- readers


def _pngs(images: np.ndarray, chunk: int = 1000) -> Iterator[bytes]:
    """PNG bytes of each image, encoded a chunk at a time (bounded memory)."""
    for start in range(0, len(images), chunk):
        yield from encode_png_batch(images[start : start + chunk])


def _idx_splits(builder: _ArchiveBuilderMixin, spec: DatasetSpec, files: Mapping[str, Path]) -> SplitGenerators:
    del builder, spec

    def generate(split: str) -> Iterator[Example]:
        images, labels = archives.read_mnist_split(files, split)
        for i, (png, label) in enumerate(zip(_pngs(images), labels, strict=True)):
            yield i, {"image": png, "label": int(label)}

    return {"train": generate("train"), "test": generate("test")}


def _cifar_splits(builder: _ArchiveBuilderMixin, spec: DatasetSpec, files: Mapping[str, Path]) -> SplitGenerators:
    (path,) = files.values()
    read = (
        archives.read_cifar_python if builder._hebbjax_variant.format == "cifar_python" else archives.read_cifar_binary
    )
    splits, label_names = read(path, spec.num_classes)  # small: read eagerly, errors surface now
    builder._set_label_names(label_names)

    def generate(split: str) -> Iterator[Example]:
        data = splits[split]
        for i, png in enumerate(_pngs(data["image"])):
            example = {"id": f"{split}_{i:05d}", "image": png, "label": int(data["label"][i])}
            if "coarse_label" in data:
                example["coarse_label"] = int(data["coarse_label"][i])
            yield i, example

    return {"train": generate("train"), "test": generate("test")}


def _stl10_splits(builder: _ArchiveBuilderMixin, spec: DatasetSpec, files: Mapping[str, Path]) -> SplitGenerators:
    del spec
    (path,) = files.values()
    builder._set_label_names(archives.read_stl10_class_names(path))

    def generate(split: str) -> Iterator[Example]:
        index = 0
        for images, labels in archives.iter_stl10(path, split):
            for png, label in zip(_pngs(images), labels, strict=True):
                yield index, {"image": png, "label": int(label)}
                index += 1

    return {split: generate(split) for split in ("train", "test", "unlabelled")}


def _imagenette_splits(builder: _ArchiveBuilderMixin, spec: DatasetSpec, files: Mapping[str, Path]) -> SplitGenerators:
    del builder, spec
    ((name, path),) = files.items()
    folder = name.removesuffix(".tgz")  # imagenette2-160.tgz holds imagenette2-160/{train,val}/...

    def generate(split_dir: str) -> Iterator[Example]:
        for fname, wnid, data in archives.iter_imagenette(path, folder, split_dir):
            yield fname, {"image": data, "label": wnid}

    return {"train": generate("train"), "validation": generate("val")}


def _imagenet_splits(builder: _ArchiveBuilderMixin, spec: DatasetSpec, files: Mapping[str, Path]) -> SplitGenerators:
    del builder, spec
    train, val = files.get("ILSVRC2012_img_train.tar"), files.get("ILSVRC2012_img_val.tar")

    def generate(items: Iterator[tuple[str, str, bytes]]) -> Iterator[Example]:
        for fname, wnid, data in items:
            yield fname, {"file_name": fname, "image": jpeg_bytes(data), "label": wnid}

    def validation() -> Iterator[tuple[str, str, bytes]]:
        assert val is not None
        labels_file = Path(tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt"))
        yield from archives.iter_imagenet_validation(val, archives.imagenet_validation_labels(val, labels_file))

    splits: SplitGenerators = {}
    if train is not None:
        splits["train"] = generate(archives.iter_imagenet_train(train))
    if val is not None:
        splits["validation"] = generate(validation())
    return splits


_READERS = {
    "idx_gz": _idx_splits,
    "cifar_python": _cifar_splits,
    "cifar_binary": _cifar_splits,
    "stl10_binary": _stl10_splits,
    "imagenette_tgz": _imagenette_splits,
    "imagenet_tar": _imagenet_splits,
}
