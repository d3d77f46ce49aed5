"""Where a training phase gets its images: device-resident arrays or a host stream.

* :class:`ArrayData`: a split small enough for device memory (MNIST .. STL-10's 100k unlabelled
  images as uint8). It is copied to the device(s) once; every step gathers its batch there.
* :class:`StreamData`: a split read batch by batch on the host (ImageNet), e.g. from
  :func:`hebbjax.data.stream`. The loop stacks consecutive batches into a chunk, starts copying
  the next chunk while the current one computes (:func:`chunks`), and runs the chunk in one jit
  call, so neither Python nor the host transfer sits between two steps.

Both carry uint8 pixels or floats; uint8 is mapped to floats on the device by the split's
``normalization`` (:func:`hebbjax.data.to_float`), which sends 4x fewer bytes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np

CHUNK_BYTES = 64 * 2**20  # images of one streamed chunk on the host (and in flight to the device)


@dataclasses.dataclass(frozen=True)
class ArrayData:
    """In-memory images ``(N, H, W, C)`` (float32, or uint8 mapped by ``normalization``) and
    labels ``(N,)`` int32 (-1: unlabelled)."""

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    normalization: str = "unit"

    @property
    def num_examples(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])


# open(batch_size, *, epochs, seed, shuffle, drop_remainder) -> iterator of (images, labels)
Opener = Callable[..., Iterable[tuple[np.ndarray, np.ndarray]]]


@dataclasses.dataclass(frozen=True)
class StreamData:
    """A split too large for device memory, read from the host in batches.

    ``open(batch_size, *, epochs, seed, shuffle, drop_remainder)`` returns an iterator of numpy
    ``(images, labels)`` batches (``epochs`` passes, each in an order drawn from ``seed`` when
    ``shuffle``); an iterator with ``close()`` (e.g. :class:`hebbjax.data.BatchStream`) is closed
    when the loop leaves it early. :meth:`from_stream` wraps :func:`hebbjax.data.stream`.
    """

    open: Opener
    num_examples: int
    image_shape: tuple[int, ...]
    num_classes: int
    normalization: str = "unit"

    @classmethod
    def from_arrays(cls, data: ArrayData) -> StreamData:
        """Host arrays read batch by batch (a dataset of your own too large for device memory):
        each epoch in a fresh order drawn from ``(seed, epoch)``, as :func:`hebbjax.data.stream`."""
        n = data.num_examples

        def open_(batch_size: int, *, epochs: int, seed: int, shuffle: bool, drop_remainder: bool):
            for epoch in range(epochs):
                order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
                for start in range(0, n, batch_size):
                    index = order[start : start + batch_size]
                    if len(index) < batch_size and drop_remainder:
                        break
                    yield data.images[index], data.labels[index]

        return cls(open_, n, data.image_shape, data.num_classes, data.normalization)

    @classmethod
    def from_stream(cls, name: str, split: str, **stream_kwargs) -> StreamData:
        """A named dataset split read with :func:`hebbjax.data.stream` as uint8 (``stream_kwargs``:
        ``data_dir``, ``validation``, ``seed`` of the validation split, ...). Prepares it first."""
        from hebbjax.data import get_spec, stream

        spec = get_spec(name)
        kwargs = {"dtype": "uint8", **stream_kwargs}
        with stream(name, split, 1, epochs=0, **kwargs) as probe:  # prepares; counts the split
            n = probe.num_examples

        def open_(batch_size: int, *, epochs: int, seed: int, shuffle: bool, drop_remainder: bool):
            return stream(name, split, batch_size, epochs=epochs, shuffle_seed=seed, shuffle=shuffle,
                          drop_remainder=drop_remainder, **kwargs)

        return cls(open_, n, spec.image_shape, spec.num_classes, spec.normalization)


Source = ArrayData | StreamData


def chunk_steps(batch_size: int, image_shape: tuple[int, ...], itemsize: int, most: int) -> int:
    """Batches per streamed chunk: at most ``most``, and about :data:`CHUNK_BYTES` of images."""
    batch_bytes = batch_size * math.prod(image_shape) * itemsize
    return max(1, min(most, CHUNK_BYTES // max(1, batch_bytes)))


def chunks(batches: Iterable[tuple[np.ndarray, np.ndarray]], steps: int) -> Iterator[tuple[dict, np.ndarray]]:
    """Consecutive batches stacked into ``({"image": (steps, B, ...), "label": (steps, B)}, valid)``;
    the last chunk is zero-padded to ``steps`` and ``valid`` marks its real batches (so every
    chunk has one shape and one compiled program)."""
    buffer: dict | None = None
    filled = 0
    for images, labels in batches:
        if buffer is None:
            buffer = {"image": np.zeros((steps, *images.shape), images.dtype),
                      "label": np.zeros((steps, *labels.shape), np.int32)}
        buffer["image"][filled], buffer["label"][filled] = images, labels
        filled += 1
        if filled == steps:
            yield buffer, np.ones(steps, bool)
            buffer, filled = None, 0  # a fresh buffer: the previous one may still be in flight
    if buffer is not None and filled:  # np.zeros: the padding is already zero
        yield buffer, np.arange(steps) < filled


def close(iterator: object) -> None:
    """Stops a stream's producer thread, if it has one."""
    closer = getattr(iterator, "close", None)
    if callable(closer):
        closer()
