"""Loading datasets into memory (:func:`load`) or as a prefetched stream (:func:`stream`).

Named datasets are read with ``tfds.data_source`` (random access to the prepared
``array_record`` files, no TensorFlow); records are parsed and decoded here
(see :mod:`hebbjax.data.images` for why). The decoded uint8 arrays of a split are
cached as ``.npy`` next to the prepared dataset
(``<tfds_dir>/_hebbjax_cache/<name>/<version>/``), keyed by its ``dataset_info.json``,
so later loads take well under a second.

Pixel conventions (as SoftHebb's data pipelines, Journé et al., ICLR 2023, and Holca-Lamarre's):

* ``unit``: uint8 / 255 -> float32 in [0, 1] (MNIST, Fashion-MNIST, CIFAR, STL-10).
* ``imagenet``: [0, 1] then ``(x - mean) / std`` per channel with the ImageNet
  statistics (ImageNette, ImageNet); images are resized so the shorter side is
  160 px (bilinear, antialiased, like torchvision ``Resize(160)``) and centre-cropped
  to 160 x 160 so that they batch.
* ``digits`` (scikit-learn's 8x8 digits, values 0..16): divided by 16 -> float32 in
  [0, 1], exactly (no uint8 rounding). Split: a fixed seeded stratified 1347 / 450
  train / test split (:func:`stratified_split`, seed 0).

STL-10 ``unlabelled`` (100k images) is returned as **uint8** by default (2.8 GB
instead of 11 GB as float32); convert batches on the device with
:meth:`Dataset.to_float`, which is a no-op on float input, so training code can
call it unconditionally. ``dtype="uint8"`` does the same for any dataset of pixels (e.g.
ImageNette train: 0.7 GB instead of 2.9 GB). ImageNet is only streamed
(:func:`stream`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import queue
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hebbjax.data.errors import MissingFileError
from hebbjax.data.images import decode_batch
from hebbjax.data.preparation import FileChecksums, prepare, prepared_path
from hebbjax.data.registry import IMAGENET_MEAN, IMAGENET_STD, DatasetSpec, get_spec

VALIDATION_FRACTION = 0.2
_DIGITS_TEST_SIZE = 450
_CHUNK = 4096  # records read and decoded at a time


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A split held in host memory.

    Attributes:
      images: (N, H, W, C) float32 ([0, 1], or ImageNet-normalised), or uint8 when
        requested / for STL-10 ``unlabelled`` (see :meth:`to_float`).
      labels: (N,) int32; -1 for unlabelled images.
      num_classes: number of classes.
      name: dataset name ("" for arrays of your own).
      split: "train", "test", "unlabelled"; with ``validation=True``, "train"
        (80 % of train) or "validation" (the held-out 20 % of train).
      normalization: "unit" or "imagenet" (how :meth:`to_float` maps uint8).
      class_names: label names, when known.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str = ""
    split: str = ""
    normalization: str = "unit"
    class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, split={self.split!r}, images={self.images.dtype}{self.images.shape}, "
            f"labels={self.labels.dtype}{self.labels.shape}, num_classes={self.num_classes}, "
            f"normalization={self.normalization!r})"
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def to_float(self, images: Any) -> Any:
        """Maps a uint8 batch (numpy or jax) to float32 with this dataset's
        normalisation; float input is returned unchanged. Usable inside ``jit``."""
        return to_float(images, self.normalization)


def to_float(images: Any, normalization: str = "unit") -> Any:
    """uint8 -> float32 in [0, 1], then ImageNet mean/std if ``normalization == "imagenet"``.

    Works on numpy and jax arrays (dtype is static under ``jit``); float input
    is returned as is. A jax array is mapped through a table of the 256 values
    computed by numpy, so the device gives bit for bit what the host gives (XLA
    turns ``x / 255`` into ``x * (1 / 255)``, one rounding off): a dataset kept
    as uint8 on the device feeds the network the same inputs as its float32 copy.
    """
    if images.dtype != np.uint8:
        return images
    if isinstance(images, np.ndarray):
        return _to_float_numpy(images, normalization)
    import jax.numpy as jnp

    table = jnp.asarray(_float_table(normalization))  # (256, 1) or (256, channels)
    if table.shape[1] == 1:
        return table[images.astype(jnp.int32), 0]
    return table[images.astype(jnp.int32), jnp.arange(images.shape[-1])]


def _to_float_numpy(images: np.ndarray, normalization: str) -> np.ndarray:
    out = images.astype(np.float32) / np.float32(255.0)
    if normalization == "imagenet":
        out = (out - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return out


@functools.cache
def _float_table(normalization: str) -> np.ndarray:
    """``to_float`` of every uint8 value: (256, 1), or (256, 3) per ImageNet channel."""
    values = np.arange(256, dtype=np.uint8).reshape(256, 1)
    if normalization == "imagenet":
        values = np.repeat(values, len(IMAGENET_MEAN), axis=1)
    return _to_float_numpy(values, normalization)


def _to_float_chunked(images: np.ndarray, normalization: str) -> np.ndarray:
    """Host conversion in chunks, so no (N, H, W, C) float64 temporary is made."""
    out = np.empty(images.shape, np.float32)
    for start in range(0, len(images), _CHUNK):
        out[start : start + _CHUNK] = to_float(images[start : start + _CHUNK], normalization)
    return out


class FloatView:
    """uint8 images seen as float32 (:func:`to_float`), converted only where indexed: a slice is
    another view, any other index (or ``np.asarray`` of the view) the floats of those rows. Over a
    memory-mapped split, a process that copies only its rows to its devices reads only their pages,
    and gets the floats a float32 :func:`load` would have given, bit for bit."""

    dtype = np.dtype(np.float32)

    def __init__(self, images: np.ndarray, normalization: str = "unit"):
        if images.dtype != np.uint8:
            raise ValueError(f"images: expected uint8, got {images.dtype}")
        self.images, self.normalization = images, normalization

    @property
    def shape(self) -> tuple[int, ...]:
        return self.images.shape

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return FloatView(self.images[index], self.normalization)
        return _to_float_numpy(np.asarray(self.images[index]), self.normalization)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = _to_float_chunked(self.images, self.normalization)
        return out if dtype is None else out.astype(dtype, copy=False)


# --------------------------------------------------------------------------- splits


def validation_split(n: int, seed: int = 0, fraction: float = VALIDATION_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into (fit, held-out) sorted index arrays.

    A plain seeded permutation (no stratification): it depends only on ``n`` and
    ``seed``, so :func:`load` and :func:`stream` agree without reading labels.
    """
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(fraction * n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _resolve_split(spec: DatasetSpec, split: str, validation: bool) -> tuple[str, str, bool | None]:
    """(split to read, name to report, which part of a validation split: True =
    held-out part, False = remaining part, None = whole split)."""
    spec.tfds_split(split)  # validates the name
    if not validation or split not in ("train", "test"):
        return split, split, None
    return ("train", "validation", True) if split == "test" else ("train", "train", False)


# --------------------------------------------------------------------------- digits


def stratified_split(labels: np.ndarray, test_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of ``range(len(labels))`` into sorted (train, test) indices.

    Each class gives ``test_size * class_count / n`` test examples, rounded down,
    plus one for the classes with the largest remainders, so the total is exact.
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * test_size / len(labels)
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take), kind="stable")[: test_size - take.sum()]] += 1
    per_class = zip(classes, take, strict=True)
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in per_class])
    return np.setdiff1d(np.arange(len(labels)), test), np.sort(test)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1797 x 64 values 0..16, labels 0..9).

    Read from the CSV that scikit-learn ships, without importing scikit-learn
    (whose import takes seconds); falls back to ``load_digits`` if it moved.
    """
    found = importlib.util.find_spec("sklearn")
    locations = list(found.submodule_search_locations or []) if found else []
    for folder in locations:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            data = np.loadtxt(path, delimiter=",")
            return data[:, :-1], data[:, -1]
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data, bunch.target


def _out_dtype(spec: DatasetSpec, dtype: str | np.dtype | None, default: np.dtype) -> np.dtype:
    """The images' dtype asked for, checked before anything is read: float32, or the dtype the
    dataset is stored in (``spec.stored_dtype``: uint8 pixels, float32 for the bundled digits)."""
    stored = np.dtype(spec.stored_dtype)
    try:
        out = np.dtype(dtype) if dtype is not None else default
    except TypeError:
        raise ValueError(f"dtype: expected 'float32' or '{stored}', got {dtype!r}") from None
    if out not in (np.dtype(np.float32), stored):
        raise ValueError(f"dtype: {spec.name!r} cannot be returned as {out} (it is stored as {stored}); expected 'float32' or '{stored}'")
    return out


@functools.cache
def _digits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    pixels, target = _digits_arrays()
    images = (pixels.reshape(-1, 8, 8, 1) / 16.0).astype(np.float32)  # 0..16 -> [0, 1], exact
    labels = target.astype(np.int32)
    train, test = stratified_split(labels, _DIGITS_TEST_SIZE, seed=0)
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


# --------------------------------------------------------------------------- tfds reading


@functools.cache
def _example_parser() -> Any:
    from tensorflow_datasets.proto import tf_example_pb2  # protobuf only, no TensorFlow

    return tf_example_pb2.Example.FromString


def _record_fields(record: bytes) -> tuple[bytes, int]:
    """(image bytes, label) of one serialized tfds example (a tf.train.Example)."""
    feature = _example_parser()(record).features.feature
    return feature["image"].bytes_list.value[0], int(feature["label"].int64_list.value[0])


def _decode_records(records: Sequence[bytes], spec: DatasetSpec, out: np.ndarray, labels: np.ndarray) -> None:
    fields = [_record_fields(r) for r in records]
    labels[:] = [label for _, label in fields]
    decode_batch([blob for blob, _ in fields], spec.image_shape, size=spec.resize, out=out)


def _decode_parallel(
    records: Sequence[bytes], spec: DatasetSpec, pool: concurrent.futures.Executor, parts: int
) -> tuple[np.ndarray, np.ndarray]:
    """Decodes records into (uint8 images, int32 labels), ``parts`` slices in parallel.

    Records are fetched by the caller on one thread; only decoding (JPEG decoding
    and zlib release the GIL) is spread over the pool.
    """
    n = len(records)
    images = np.empty((n, *spec.image_shape), np.uint8)
    labels = np.empty(n, np.int32)
    bounds = np.linspace(0, n, min(parts, n) + 1).astype(int)
    jobs = [
        pool.submit(_decode_records, records[lo:hi], spec, images[lo:hi], labels[lo:hi])
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    for job in jobs:
        job.result()  # re-raises decoding errors
    return images, labels


def _check_split_prepared(spec: DatasetSpec, tfds_dir: Path, split: str) -> None:
    """ImageNet is prepared from whichever split tars exist, as in tfds; say so
    clearly when the requested split was not among them."""
    folder = prepared_path(spec, tfds_dir)
    info = json.loads((folder / "dataset_info.json").read_text())
    available = [s.get("name") for s in info.get("splits", [])]
    if spec.tfds_split(split) not in available:
        raise MissingFileError(
            f"{spec.name!r} was prepared in {folder} without its {spec.tfds_split(split)!r} split "
            f"(its archive was missing then; prepared splits: {available}). Add the archive "
            f"({', '.join(f.name for v in spec.variants for f in v.files)}) and delete {folder} to prepare it again."
        )


def _data_source(spec: DatasetSpec, tfds_dir: Path, split: str) -> Any:
    """Random access to the split's serialized records, via ``tfds.data_source``."""
    import tensorflow_datasets as tfds

    _check_split_prepared(spec, tfds_dir, split)
    return tfds.data_source(
        spec.tfds_name,
        split=spec.tfds_split(split),
        data_dir=str(tfds_dir),
        download=False,
        deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES,
    )


def _class_names(spec: DatasetSpec, tfds_dir: Path) -> tuple[str, ...]:
    names = prepared_path(spec, tfds_dir) / "label.labels.txt"  # written by tfds' ClassLabel
    if names.is_file():
        return tuple(n for n in names.read_text().splitlines() if n)
    return tuple(str(i) for i in range(spec.num_classes))  # ClassLabel(num_classes=...) has no names


def _read_split(spec: DatasetSpec, tfds_dir: Path, split: str, num_threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Reads and decodes a whole split into uint8 images and int32 labels."""
    source = _data_source(spec, tfds_dir, split)
    n = len(source)
    images = np.empty((n, *spec.image_shape), np.uint8)
    labels = np.empty(n, np.int32)
    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        for start in range(0, n, _CHUNK):
            stop = min(n, start + _CHUNK)
            records = source.__getitems__(list(range(start, stop)))
            images[start:stop], labels[start:stop] = _decode_parallel(records, spec, pool, num_threads)
    return images, labels


def _cache_dir(spec: DatasetSpec, tfds_dir: Path) -> tuple[Path, str]:
    """Cache folder of ``spec`` and the key of its current prepared version."""
    info = prepared_path(spec, tfds_dir) / "dataset_info.json"
    key = hashlib.sha1(info.read_bytes() + repr(spec.image_shape).encode()).hexdigest()[:16]
    version = prepared_path(spec, tfds_dir).name
    return tfds_dir / "_hebbjax_cache" / spec.tfds_name / version, key


def _read_split_cached(
    spec: DatasetSpec, tfds_dir: Path, split: str, *, cache: bool, num_threads: int
) -> tuple[np.ndarray, np.ndarray]:
    if not cache:
        return _read_split(spec, tfds_dir, split, num_threads)
    folder, key = _cache_dir(spec, tfds_dir)
    images_path, labels_path = folder / f"{split}-{key}-images.npy", folder / f"{split}-{key}-labels.npy"
    if images_path.is_file() and labels_path.is_file():
        # mapped, not read: a process that places only its rows reads only their pages; copy on
        # write, so a caller's in-place change never reaches the file
        return np.load(images_path, mmap_mode="c"), np.load(labels_path)
    images, labels = _read_split(spec, tfds_dir, split, num_threads)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path, array in ((images_path, images), (labels_path, labels)):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, array)
            os.replace(tmp, path)  # readers never see a partial file
    except OSError:
        pass  # a read-only tfds_dir only costs the cache
    return images, labels


# --------------------------------------------------------------------------- public API


def load(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    validation: bool = False,
    seed: int = 0,
    tfds_dir: str | os.PathLike | None = None,
    download: bool | None = None,
    verify_checksums: bool = True,
    file_checksums: FileChecksums | None = None,
    dtype: str | np.dtype | None = None,
    cache: bool = True,
    num_threads: int | None = None,
) -> Dataset:
    """Loads one split of a dataset into host memory, preparing it first if needed.

    Args:
      name: "digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "stl10",
        "imagenette" (ImageNet itself: use :func:`stream`).
      split: "train", "test" (ImageNet(te): the official validation set), or
        "unlabelled" (STL-10).
      data_dir: folder of original archives for offline preparation
        (default ``$HEBBJAX_DATA_DIR``); see :mod:`hebbjax.data.preparation`.
      validation: hold out a seeded 20 % of *train*: "train" then returns the
        other 80 % and "test" the held-out 20 % (disjoint; same seed, same split).
      seed: seed of the validation split.
      tfds_dir, download, verify_checksums, file_checksums: see
        :func:`hebbjax.data.preparation.prepare`.
      dtype: "float32" or "uint8" (raw pixels, see :meth:`Dataset.to_float`);
        default float32, except uint8 for STL-10 ``unlabelled``. Digits are
        stored as float32: ``"uint8"`` is refused for them (a ValueError, as is any other dtype).
      cache: keep decoded arrays as .npy next to the prepared dataset; a cached
        split's uint8 images come back memory-mapped (copy on write): only the
        rows indexed are read from disk.
      num_threads: decoding threads (default: number of CPUs, at most 8).

    Returns:
      A :class:`Dataset`.
    """
    spec = get_spec(name)
    if not spec.in_memory:
        raise ValueError(
            f"{spec.name!r} is too large to load into memory; use "
            f"hebbjax.data.stream({spec.name!r}, split, batch_size) instead"
        )
    read_split, report_split, part = _resolve_split(spec, split, validation)
    out_dtype = _out_dtype(spec, dtype, np.dtype(np.uint8) if split in spec.uint8_splits else np.dtype(np.float32))
    if spec.name == "digits":
        images, labels = _digits()[read_split]
        class_names: tuple[str, ...] = tuple(str(i) for i in range(10))
    else:
        tfds_root = prepare(
            spec.name,
            data_dir=data_dir,
            tfds_dir=tfds_dir,
            download=download,
            verify_checksums=verify_checksums,
            file_checksums=file_checksums,
        )
        threads = num_threads or min(8, os.cpu_count() or 1)
        images, labels = _read_split_cached(spec, tfds_root, read_split, cache=cache, num_threads=threads)
        class_names = _class_names(spec, tfds_root)
    if part is not None:
        fit, held_out = validation_split(len(labels), seed)
        index = held_out if part else fit
        images, labels = images[index], labels[index]
    if images.dtype == np.uint8 and out_dtype == np.float32:
        images = _to_float_chunked(images, spec.normalization)
    return Dataset(
        images=images,
        labels=labels.astype(np.int32, copy=False),
        num_classes=spec.num_classes,
        name=spec.name,
        split=report_split,
        normalization=spec.normalization,
        class_names=class_names,
    )


def _batch_indices(
    indices: np.ndarray, batch_size: int, seed: int, epochs: int | None, shuffle: bool, drop: bool
) -> Iterator[np.ndarray]:
    """Index batches, in a fresh seeded order each epoch (seed, epoch)."""
    epoch = 0
    while epochs is None or epoch < epochs:
        order = np.random.default_rng([seed, epoch]).permutation(indices) if shuffle else indices
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            if len(batch) < batch_size and drop:
                break
            yield batch
        epoch += 1


def _produce(batches: Iterator[np.ndarray], load_batch: Any, out: queue.Queue, stop: threading.Event) -> None:
    """Producer thread: loads batches into ``out`` until done or ``stop`` is set.

    It holds no reference to the :class:`BatchStream`, so an abandoned stream is
    garbage-collected and its finalizer stops this thread.
    """

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for index in batches:
            if stop.is_set() or not put(load_batch(index)):
                return
        put(StopIteration())
    except BaseException as e:  # noqa: BLE001 - forwarded to the consumer
        put(e)


def _stop(stop: threading.Event, pool: concurrent.futures.ThreadPoolExecutor) -> None:
    stop.set()
    pool.shutdown(wait=False, cancel_futures=True)


class BatchStream:
    """Iterator of ``(images, labels)`` numpy batches, decoded by a background thread.

    A producer thread reads records (from ``tfds.data_source``, or the in-memory
    digits), decodes them with a thread pool and keeps up to ``prefetch`` batches
    ready, so the training step does not wait on the host. Producer errors are
    raised by ``next()``. Call :meth:`close` (or use ``with``) to stop early; an
    abandoned stream is stopped when garbage-collected.

    ``read(index, pool) -> (images, labels)`` loads one batch of indices; ``batches`` yields the
    batches of indices to load, in order.
    """

    def __init__(
        self,
        spec: DatasetSpec,
        read: Any,
        batches: Iterator[np.ndarray],
        num_examples: int,
        batch_size: int,
        *,
        drop_remainder: bool,
        prefetch: int,
        out_dtype: np.dtype,
        num_threads: int,
    ) -> None:
        self.spec, self.batch_size = spec, batch_size
        self._n, self._drop = num_examples, drop_remainder
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        pool = concurrent.futures.ThreadPoolExecutor(num_threads)
        normalization = spec.normalization

        def load_batch(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            images, labels = read(index, pool)
            labels = labels.astype(np.int32, copy=False)
            if images.dtype == np.uint8 and out_dtype == np.float32:
                images = to_float(images, normalization)
            return images, labels

        self._thread = threading.Thread(
            target=_produce, args=(batches, load_batch, self._queue, self._stop), name="hebbjax-stream", daemon=True
        )
        self._finalizer = weakref.finalize(self, _stop, self._stop, pool)
        self._thread.start()

    @property
    def num_examples(self) -> int:
        """Examples per epoch (the split, or its validation part)."""
        return self._n

    def __len__(self) -> int:
        """Batches per epoch."""
        return self._n // self.batch_size if self._drop else -(-self._n // self.batch_size)

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        if self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, StopIteration):
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item

    def close(self) -> None:
        """Stops the producer thread and frees the decoding pool."""
        self._finalizer()
        self._thread.join(timeout=10)

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream(
    name: str,
    split: str,
    batch_size: int,
    *,
    seed: int = 0,
    shuffle_seed: int | None = None,
    limit: int | None = None,
    data_dir: str | os.PathLike | None = None,
    prefetch: int = 2,
    validation: bool = False,
    epochs: int | None = 1,
    shuffle: bool = True,
    drop_remainder: bool = True,
    dtype: str | np.dtype | None = None,
    num_threads: int | None = None,
    tfds_dir: str | os.PathLike | None = None,
    download: bool | None = None,
    verify_checksums: bool = True,
    file_checksums: FileChecksums | None = None,
    order: Iterable[np.ndarray] | None = None,
) -> BatchStream:
    """Streams ``(images, labels)`` numpy batches of any dataset (ImageNet included).

    Records are read at random from ``tfds.data_source`` in a seeded order per
    epoch (``shuffle_seed``, default ``seed``, and the epoch number), decoded on a background thread pool,
    with ``prefetch`` batches kept ready. Images are float32 like :func:`load`
    (``dtype="uint8"`` sends 4x fewer bytes to the device; use
    :func:`to_float` there). ``validation`` selects the same 80 / 20 parts of
    train as :func:`load` (``seed`` is the seed of that split; a training loop varies only
    ``shuffle_seed`` between its passes). ``limit``: only the first ``limit`` examples of that
    (part of the) split, in stored order. ``epochs=None`` repeats forever. Other arguments: see
    :func:`load`. ``order``: the batches to read, as arrays of positions in the (part of the,
    limited) split, in that order; it replaces ``shuffle_seed``, ``epochs``, ``shuffle`` and
    ``drop_remainder`` (the training loop passes the order it drew).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    spec = get_spec(name)
    read_split, _, part = _resolve_split(spec, split, validation)
    out_dtype = _out_dtype(spec, dtype, np.dtype(np.float32))
    threads = num_threads or min(8, os.cpu_count() or 1)
    if spec.name == "digits":
        images, labels = _digits()[read_split]
        n = len(labels)

        def read(index: np.ndarray, pool: concurrent.futures.Executor) -> tuple[np.ndarray, np.ndarray]:
            return images[index], labels[index]

    else:
        tfds_root = prepare(
            spec.name,
            data_dir=data_dir,
            tfds_dir=tfds_dir,
            download=download,
            verify_checksums=verify_checksums,
            file_checksums=file_checksums,
        )
        source = _data_source(spec, tfds_root, read_split)
        n = len(source)

        def read(index: np.ndarray, pool: concurrent.futures.Executor) -> tuple[np.ndarray, np.ndarray]:
            records = source.__getitems__([int(i) for i in index])  # on the producer thread only
            return _decode_parallel(records, spec, pool, threads)

    indices = np.arange(n)
    if part is not None:
        fit, held_out = validation_split(n, seed)
        indices = held_out if part else fit
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit: expected a positive number of examples, got {limit}")
        indices = indices[:limit]
    if order is None:
        batches = _batch_indices(indices, batch_size, seed if shuffle_seed is None else shuffle_seed, epochs, shuffle, drop_remainder)
    else:
        batches = (indices[np.asarray(positions)] for positions in order)
    return BatchStream(
        spec, read, batches, len(indices), batch_size,
        drop_remainder=drop_remainder, prefetch=prefetch, out_dtype=out_dtype, num_threads=threads,
    )
