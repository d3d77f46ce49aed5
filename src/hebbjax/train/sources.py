"""Where a phase reads its batches: arrays on the device(s), or a stream from the host.

Both implement :class:`Source`, and this module is the only place that knows which is which:

* :class:`DeviceSource`: a split small enough for device memory (MNIST .. STL-10's 100k unlabelled
  images as uint8, or cached features), copied to the device(s) once; every step gathers its
  batch there (:func:`~hebbjax.train.parallel.scan_chunk`).
* :class:`StreamSource`: a split read batch by batch on the host (ImageNet), e.g. with
  :func:`hebbjax.data.stream`. Consecutive batches are stacked into a chunk (about
  :data:`CHUNK_BYTES`), the next chunk is copied while the current one computes, and each chunk
  runs in one jit call (:func:`~hebbjax.train.parallel.scan_batches`).

The order of the samples is the same for both: :func:`~hebbjax.train.parallel.epoch_indices`
draws it from the phase's key, and a stream reads the records in that order.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hebbjax.data.loading import Dataset
from hebbjax.train.parallel import (epoch_indices, map_batches, padded_size, process_rows, put_batches, scan_batches,
                                    scan_chunk, shard_rows, to_host)

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 2**20  # images of one streamed chunk on the host (and in flight to the device)

# map_batches(fn, mesh, batch_size), compiled once per (fn, mesh, batch_size)
_mapper = functools.lru_cache(maxsize=64)(map_batches)

#: ``run(state, *chunk) -> (state, metrics)``: one compiled chunk of steps.
Runner = Callable[..., tuple[Any, Any]]


class Source(Protocol):
    """What a training phase and an evaluation read. Batches are ``{"x": inputs, "y": labels}``."""

    num_examples: int  # rows a phase reads
    image_shape: tuple[int, ...]
    normalization: str
    resident: bool  # the rows are on the device(s): features of them can be cached there

    def runner(self, step: Callable, mesh: Mesh) -> Runner:
        """Compile ``step`` over chunks of this source's batches."""

    def chunks(
        self, key: jax.Array, batch_size: int, epochs: int, steps_per_chunk: int, start: int, mesh: Mesh,
    ) -> Iterator[tuple[tuple, np.ndarray]]:
        """``(runner arguments, valid steps)`` per chunk of at most ``steps_per_chunk`` steps of
        ``epochs`` shuffled drop-last epochs (order from ``key``), from step ``start``: 0 or where
        an earlier call's chunk ended."""

    def map(self, fn: Callable, args: Any, batch_size: int, mesh: Mesh) -> tuple[Any, Any]:
        """``(fn(args, x) for every row in order, labels)``; ``fn`` is row-wise."""

    def take(self, index: np.ndarray) -> Any:
        """The inputs of rows ``index`` (as stored: uint8 or float)."""


@dataclasses.dataclass(frozen=True, eq=False)
class DeviceSource:
    """Arrays ``{"x": (N', ...), "y": (N',)}`` split by rows over the mesh
    (:func:`~hebbjax.train.parallel.shard_rows`: ``size`` real rows, zero rows up to a multiple of
    the devices); a phase reads rows ``[0, rows)`` (a prefix without a copy: data.limit_unsup)."""

    arrays: dict[str, jax.Array]
    rows: int
    normalization: str = "unit"
    size: int | None = None  # real rows stored (default: rows)
    resident: ClassVar[bool] = True

    def __post_init__(self):
        if self.size is None:
            object.__setattr__(self, "size", self.rows)

    @classmethod
    def place(cls, data: Dataset, mesh: Mesh, dtype: Any = jnp.float32, rows: int | None = None) -> DeviceSource:
        """Copy a host split to the device(s) once, each device its share of the rows (uint8 stays
        uint8: 4x less memory)."""
        images = data.images if data.images.dtype == np.uint8 else _LazyCast(data.images, np.dtype(dtype))
        return cls.of(images, data.labels, mesh, rows, data.normalization)

    @classmethod
    def of(cls, x: Any, y: Any, mesh: Mesh, rows: int | None = None, normalization: str = "unit") -> DeviceSource:
        """Host or device arrays of ``len(y)`` rows as a source on ``mesh``; the phase reads ``rows`` (default: all)."""
        n = len(y)
        y = y.astype(jnp.int32) if isinstance(y, jax.Array) else np.asarray(y, np.int32)
        arrays = shard_rows({"x": x, "y": y}, mesh)
        if jax.process_count() > 1:
            lo, hi = process_rows(len(arrays["y"]), mesh)
            log.info("process %d holds rows %d-%d of %d on its devices", jax.process_index(), lo, min(hi, n), n)
        return cls(arrays, n if rows is None else min(rows, n), normalization, n)

    @property
    def num_examples(self) -> int:
        return self.rows

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.arrays["x"].shape[1:])

    def runner(self, step: Callable, mesh: Mesh) -> Runner:
        return scan_chunk(step, mesh, donate=False)

    def chunks(self, key, batch_size, epochs, steps_per_chunk, start, mesh):
        idx, valid = epoch_indices(key, self.rows, batch_size, epochs, steps_per_chunk, devices=mesh.devices.size)
        valid_host = np.asarray(valid)
        for c in range(start // steps_per_chunk, idx.shape[0]):
            yield (self.arrays, idx[c], valid[c]), valid_host[c]

    def map(self, fn, args, batch_size, mesh):
        out = _mapper(fn, mesh, batch_size)(args, self.arrays["x"])
        if self.size == len(self.arrays["y"]):
            return out, self.arrays["y"]
        return _rows(out, self.arrays["y"], self.size)

    def take(self, index):
        return _take(self.arrays["x"], jnp.asarray(index), _replicated(self.arrays["x"].sharding.mesh))


class _LazyCast:
    """A host array read as ``dtype`` slice by slice (no whole-split copy on the host)."""

    def __init__(self, a: np.ndarray, dtype: np.dtype):
        self.a, self.dtype, self.shape = a, dtype, a.shape

    def __getitem__(self, index):
        return np.asarray(self.a[index], self.dtype)


@functools.lru_cache(maxsize=8)
def _replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


@functools.partial(jax.jit, static_argnums=2)
def _take(x: jax.Array, index: jax.Array, out: NamedSharding) -> jax.Array:
    return jax.lax.with_sharding_constraint(x[index], out)


@functools.partial(jax.jit, static_argnums=2)
def _rows(out: Any, y: jax.Array, n: int) -> tuple[Any, jax.Array]:
    """The real rows of ``map_batches``'s outputs, and their labels."""
    return jax.tree_util.tree_map(lambda a: a[:n], out), y[:n]


@functools.partial(jax.jit, static_argnums=(2, 3))
def _concat(a: dict, b: dict, n: int, m: int) -> dict:
    return jax.tree_util.tree_map(lambda p, q: jnp.concatenate([p[:n], q[:m]]), a, b)


def place(data: Dataset | StreamSource, mesh: Mesh, dtype: Any = jnp.float32) -> DeviceSource | StreamSource:
    """The source of a split: a host :class:`~hebbjax.data.Dataset` goes to the device(s), a
    :class:`StreamSource` stays on the host."""
    return data if isinstance(data, StreamSource) else DeviceSource.place(data, mesh, dtype)


def concat(a: DeviceSource, b: DeviceSource) -> DeviceSource:
    """Both splits as one (one compiled pass over train and test)."""
    arrays = _concat(a.arrays, b.arrays, a.size, b.size)
    return DeviceSource.of(arrays["x"], arrays["y"], a.arrays["x"].sharding.mesh, normalization=a.normalization)


# read(index batches) -> iterator of (images, labels) numpy batches, in that order
Reader = Callable[[Iterable[np.ndarray]], Iterable[tuple[np.ndarray, np.ndarray]]]


@dataclasses.dataclass(frozen=True, eq=False)
class StreamSource:
    """A split too large for device memory, read from the host.

    ``read(index_batches)`` returns an iterator of numpy ``(images, labels)`` batches of those
    rows, in that order; an iterator with ``close()`` (:class:`hebbjax.data.BatchStream`) is closed
    when the loop leaves it early. :meth:`from_stream` reads a named dataset with
    :func:`hebbjax.data.stream`, :meth:`from_dataset` host arrays of your own.
    """

    read: Reader
    num_examples: int
    image_shape: tuple[int, ...]
    num_classes: int
    normalization: str = "unit"
    dtype: np.dtype = np.dtype(np.uint8)  # of the images read
    resident: ClassVar[bool] = False

    @classmethod
    def from_dataset(cls, data: Dataset) -> StreamSource:
        """Host arrays read batch by batch (a dataset of your own too large for device memory)."""
        def read(batches):
            return ((data.images[index], data.labels[index]) for index in batches)

        return cls(read, len(data.labels), data.image_shape, data.num_classes, data.normalization, data.images.dtype)

    @classmethod
    def from_stream(cls, name: str, split: str, **stream_kwargs) -> StreamSource:
        """A named dataset split read with :func:`hebbjax.data.stream` in the dtype it is stored in
        (uint8 pixels: 4x fewer bytes to the device than float32; ``stream_kwargs``:
        ``data_dir``, ``validation``, ``seed`` of the validation split, ``limit``, ...). Prepares it first."""
        from hebbjax.data import get_spec, stream

        spec = get_spec(name)
        kwargs = {"dtype": spec.stored_dtype, **stream_kwargs}
        with stream(name, split, 1, epochs=0, **kwargs) as probe:  # prepares; counts the split
            n = probe.num_examples

        def read(batches):
            return stream(name, split, 1, order=batches, **kwargs)

        return cls(read, n, spec.image_shape, spec.num_classes, spec.normalization, np.dtype(kwargs["dtype"]))

    def runner(self, step: Callable, mesh: Mesh) -> Runner:
        return scan_batches(step, mesh)

    def chunks(self, key, batch_size, epochs, steps_per_chunk, start, mesh):
        idx, valid = (np.asarray(a) for a in epoch_indices(key, self.num_examples, batch_size, epochs, steps_per_chunk))
        order = idx.reshape(-1, batch_size)[: int(valid.sum())][start:]  # the real steps from ``start``
        steps = chunk_steps(batch_size, self.image_shape, self.dtype.itemsize, steps_per_chunk)
        rows = padded_size(batch_size, mesh.devices.size)
        lo, hi = process_rows(rows, mesh)
        if jax.process_count() > 1:
            log.info("process %d reads rows %d-%d of every streamed batch of %d", jax.process_index(), lo, min(hi, batch_size), batch_size)
        stream = self._read_rows(order, lo, hi)
        try:
            for host, ok in stack(stream, steps, hi - lo):
                yield (put_batches(host, mesh, rows), ok), ok
        finally:
            close(stream)

    def _read_rows(self, batches: Iterable[np.ndarray], lo: int, hi: int) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """This process's rows ``[lo, hi)`` of each batch: a batch's rows past its end are padding
        (none are read; a process that holds only padding reads empty batches)."""
        return self.read(b[lo:hi] for b in batches)

    def take(self, index):
        stream = self.read([np.asarray(index)])
        try:
            return next(iter(stream))[0]
        finally:
            close(stream)

    def map(self, fn, args, batch_size, mesh):
        """One ordered pass; each batch is copied while the previous one is evaluated."""
        n = self.num_examples
        run = _mapper(fn, mesh, batch_size)
        rows = padded_size(batch_size, mesh.devices.size)  # shardable over the devices
        lo, hi = process_rows(rows, mesh)
        starts = range(0, n, batch_size)
        stream = self._read_rows((np.arange(s, min(s + batch_size, n)) for s in starts), lo, hi)
        outputs: list[tuple[jax.Array, jax.Array]] = []
        try:
            for images, labels in stream:
                # this process's rows, zero-padded: one shape, one compiled program; the padding is cut below
                batch = {"x": np.zeros((hi - lo, *images.shape[1:]), images.dtype), "y": np.zeros(hi - lo, np.int32)}
                batch["x"][: len(labels)], batch["y"][: len(labels)] = images, labels
                batch = put_batches(batch, mesh, rows, axis=0)
                outputs.append((run(args, batch["x"]), batch["y"]))
                if len(outputs) > 2:  # at most two batches in flight
                    jax.block_until_ready(outputs[-3][0])
        finally:
            close(stream)
        sizes = [min(batch_size, n - s) for s in starts]
        host = to_host(outputs)
        out = np.concatenate([o[:m] for (o, _), m in zip(host, sizes)])
        return out, np.concatenate([y[:m] for (_, y), m in zip(host, sizes)])


def chunk_steps(batch_size: int, image_shape: tuple[int, ...], itemsize: int, most: int) -> int:
    """Batches per streamed chunk: at most ``most``, and about :data:`CHUNK_BYTES` of images."""
    batch_bytes = batch_size * math.prod(image_shape) * itemsize
    return max(1, min(most, CHUNK_BYTES // max(1, batch_bytes)))


def stack(batches: Iterable[tuple[np.ndarray, np.ndarray]], steps: int, rows: int | None = None) -> Iterator[tuple[dict, np.ndarray]]:
    """Consecutive batches stacked into ``({"x": (steps, rows, ...), "y": (steps, rows)}, valid)``;
    the last chunk is zero-padded to ``steps`` and ``valid`` marks its real batches (so every
    chunk has one shape and one compiled program). ``rows``: each batch zero-padded to that many
    rows (a global batch padded to a multiple of the devices; default: as read)."""
    buffer: dict | None = None
    filled = 0
    for images, labels in batches:
        b = len(labels)
        if buffer is None:
            n = b if rows is None else rows
            buffer = {"x": np.zeros((steps, n, *images.shape[1:]), images.dtype), "y": np.zeros((steps, n), np.int32)}
        buffer["x"][filled, :b], buffer["y"][filled, :b] = images, labels
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
