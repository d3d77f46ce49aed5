"""Data parallelism: the pmap pattern written with ``jax.shard_map`` over a 1-d ``data`` mesh.

Batches are sharded over all devices (of every process, in a ``jax.distributed`` run), and so
are the rows of a device-resident dataset (:func:`shard_rows`: each device holds ``1/devices`` of
it, each process places only its own devices' rows); parameters and optimiser state are
replicated. A step function runs per device on its shard and
reduces explicitly (``lax.psum`` of Hebbian updates, ``lax.pmean`` of gradients and BatchNorm
statistics) *before* any non-linear post-processing, so the result equals single-device training
on the same global batch. On a mesh of one device the step wrappers run without JAX's
varying-value checks and this module's :func:`psum` / :func:`pmean` are no collective at all.

Many steps run inside one jit call (``lax.scan`` over a chunk of batches, gathered on the device
from the device-resident dataset by :func:`scan_chunk`, or stacked on the host and copied ahead
for a streamed one by :func:`scan_batches`), so Python is not the bottleneck at SoftHebb's batch
of 10.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"


def per_device(tree: Any) -> Any:
    """Mark replicated values as device-varying inside ``shard_map``, so that ``jax.grad`` w.r.t.
    them returns this device's local gradient (JAX would otherwise all-reduce the cotangent of a
    replicated input implicitly); the step then reduces explicitly with ``lax.pmean``/``psum``."""
    from hebbjax.rules.hebbian import _varying_axes

    def cast(a):
        return a if AXIS in _varying_axes(a) else jax.lax.pcast(a, (AXIS,), to="varying")

    return jax.tree_util.tree_map(cast, tree)


def psum(tree: Any, axis_name: str = AXIS) -> Any:
    """``lax.psum(tree, axis_name)``, with no collective at all over one device where JAX does not
    type ``tree`` as device-varying: inside the step wrappers below, which run a one-device mesh
    without JAX's varying-value checks (``check_vma=False``). XLA's CPU backend keeps an all-reduce
    over one device, a full copy: 21 MB a step for conv3's Hebbian update in ``cifar_softhebb4``."""
    from hebbjax.rules.hebbian import _varying_axes

    def one(a):
        if jax.lax.axis_size(axis_name) == 1 and axis_name not in _varying_axes(a):
            return a  # a sum over one device (of a replicated value: a * 1)
        return jax.lax.psum(a, axis_name)

    return jax.tree_util.tree_map(one, tree)


def pmean(tree: Any, axis_name: str = AXIS) -> Any:
    """``lax.pmean``, with no collective over one device as in :func:`psum` (``a / 1 == a``)."""
    if jax.lax.axis_size(axis_name) == 1:
        return psum(tree, axis_name)
    return jax.lax.pmean(tree, axis_name)


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-d mesh over ``devices`` (default: every device of every process) with axis ``data``."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


def _put(a: Any, sharding: NamedSharding) -> Any:
    """``device_put(a, sharding)``, also onto a mesh that spans several processes: there an array
    committed to this process's devices goes by way of the host (every process holds the same
    value; ``device_put`` checks it), a PRNG key by way of its key data."""
    if jax.process_count() > 1 and isinstance(a, jax.Array) and a.is_fully_addressable:
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            data = jax.device_put(np.asarray(jax.random.key_data(a)), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
        a = np.asarray(a)
    return jax.device_put(a, sharding)


def _place(tree: Any, sharding: NamedSharding) -> Any:
    return jax.tree_util.tree_map(lambda a: _put(a, sharding), tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    return _place(tree, NamedSharding(mesh, P()))


def is_primary() -> bool:
    """This process writes the run's files: process 0 of a ``jax.distributed`` run (always, in one process)."""
    return jax.process_index() == 0


def shard_rows(tree: Any, mesh: Mesh) -> Any:
    """Arrays split by rows over the devices: ``(padded_size(n, devices), ...)``, sharded along
    axis 0, zero rows appended. Host arrays are cut on the host, so each process copies only its
    own devices' rows (and one device's worth at a time); device arrays are resharded (no copy when
    they already are)."""
    sharding = NamedSharding(mesh, P(AXIS))
    d = mesh.devices.size

    def one(a):
        n = a.shape[0]
        m = padded_size(n, d)
        if isinstance(a, jax.Array) and not (jax.process_count() > 1 and a.is_fully_addressable):
            if m == n and a.sharding.is_equivalent_to(sharding, a.ndim):
                return a
            return _pad_rows(a, m, sharding)
        if isinstance(a, jax.Array) or not hasattr(a, "shape"):
            a = np.asarray(a)

        def rows(index):
            start, stop, _ = index[0].indices(m)
            part = a[start:min(stop, n)]
            if stop > n:
                part = np.concatenate([part, np.zeros((stop - max(start, n), *part.shape[1:]), part.dtype)])
            return part

        return jax.make_array_from_callback((m, *a.shape[1:]), sharding, rows)

    return jax.tree_util.tree_map(one, tree)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _pad_rows(a: jax.Array, m: int, sharding: NamedSharding) -> jax.Array:
    return jax.lax.with_sharding_constraint(jnp.pad(a, ((0, m - a.shape[0]),) + ((0, 0),) * (a.ndim - 1)), sharding)


def gather_rows(data: Any, idx: jax.Array, devices: int) -> Any:
    """Inside ``shard_map``: rows ``idx`` (global row numbers, the same on every device) of
    row-sharded ``data`` (:func:`shard_rows`), as this device's shard of that batch.

    Each device copies the rows it holds and zeros for the others, one all-reduce of their bytes
    (as 32-bit words: ``w + 0`` is exact, so are the values, -0.0 included) gives every device the
    batch, and it keeps its part: batches cross the interconnect, the dataset never does. One
    all-reduce for every leaf (images and labels): with reduce-scatters instead, a run over two
    CPU processes (collectives over gloo) now and then trained on corrupted batches (2 runs in
    about 30; none in the same number with this form)."""
    if devices == 1:
        return jax.tree_util.tree_map(lambda d: d[idx], data)
    leaves, tree = jax.tree_util.tree_flatten(data)
    b, n = idx.shape[0], leaves[0].shape[0]  # every leaf holds the same n rows per device
    local = idx - jax.lax.axis_index(AXIS) * n
    own, at_row = (local >= 0) & (local < n), jnp.clip(local, 0, n - 1)
    parts = []
    for d in leaves:
        rows = jnp.where(own.reshape(-1, *([1] * (d.ndim - 1))), d[at_row], jnp.zeros((), d.dtype))
        parts.append(_row_bytes(rows))
    sizes = [p.shape[1] for p in parts]
    raw = jnp.concatenate(parts, axis=1)
    pad = -raw.shape[1] % 4
    words = jax.lax.bitcast_convert_type(jnp.pad(raw, ((0, 0), (0, pad))).reshape(b, -1, 4), jnp.uint32)
    local = b // devices
    mine = jax.lax.dynamic_slice_in_dim(jax.lax.psum(words, AXIS), jax.lax.axis_index(AXIS) * local, local)
    raw = jax.lax.bitcast_convert_type(mine, jnp.uint8).reshape(mine.shape[0], -1)
    out, at = [], 0
    for d, size in zip(leaves, sizes):
        out.append(_from_row_bytes(raw[:, at:at + size], d))
        at += size
    return jax.tree_util.tree_unflatten(tree, out)


def _row_bytes(rows: jax.Array) -> jax.Array:
    """``(rows, bytes)`` uint8 view of an array's rows."""
    raw = rows if rows.dtype == jnp.uint8 else jax.lax.bitcast_convert_type(rows, jnp.uint8)
    return raw.reshape(rows.shape[0], -1)


def _from_row_bytes(raw: jax.Array, like: jax.Array) -> jax.Array:
    """The rows of ``raw`` (from :func:`_row_bytes`) as ``like``'s dtype and row shape."""
    shape = (raw.shape[0], *like.shape[1:])
    if like.dtype.itemsize == 1:
        return jax.lax.bitcast_convert_type(raw.reshape(shape), like.dtype)
    return jax.lax.bitcast_convert_type(raw.reshape(*shape, like.dtype.itemsize), like.dtype)


def to_host(tree: Any) -> Any:
    """numpy copies of arrays, on every process (an array spread over several processes'
    devices is gathered first: a collective, so every process must call it)."""
    from jax.experimental import multihost_utils

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable and not a.is_fully_replicated:
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jax.tree_util.tree_map(one, tree)


def same_text(text: str, most: int = 4096) -> str:
    """Process 0's ``text`` on every process (``text`` itself in a single process)."""
    if jax.process_count() == 1:
        return text
    from jax.experimental import multihost_utils

    raw = text.encode()
    if len(raw) > most:
        raise ValueError(f"same_text: {len(raw)} bytes, at most {most}")
    buffer = np.zeros(most + 4, np.uint8)
    buffer[:4] = np.frombuffer(np.int32(len(raw)).tobytes(), np.uint8)
    buffer[4:4 + len(raw)] = np.frombuffer(raw, np.uint8)
    got = np.asarray(multihost_utils.broadcast_one_to_all(buffer))
    return bytes(got[4:4 + int(got[:4].view(np.int32)[0])]).decode()


def padded_size(batch_size: int, devices: int) -> int:
    """The global batch a step runs on: ``batch_size`` rounded up to a multiple of ``devices``.

    Rows past ``batch_size`` are padding: every step gives them weight 0 (in the Hebbian sums, the
    BatchNorm statistics, the loss and the metrics; ``rows=batch_size`` in :mod:`hebbjax.train.steps`),
    so any batch size runs on any number of devices with the result of one device."""
    return -(-batch_size // devices) * devices


def epoch_indices(
    key: jax.Array, n: int, batch_size: int, epochs: int, steps_per_chunk: int, shuffle: bool = True, devices: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """Sample indices for ``epochs`` epochs (each a fresh permutation, drop-last), laid out as
    ``(chunks, steps_per_chunk, padded_size(batch_size, devices))``, and a ``(chunks,
    steps_per_chunk)`` mask of real steps (the last chunk is padded). Chunks run across epoch
    boundaries, so small datasets do not waste steps. The padding rows of a batch (beyond
    ``batch_size``) read row 0; the steps give them weight 0."""
    steps = n // batch_size
    if steps == 0:
        raise ValueError(f"batch size {batch_size} is larger than the dataset ({n} samples)")

    def one_epoch(k):
        order = jax.random.permutation(k, n) if shuffle else jnp.arange(n)
        return order[: steps * batch_size].reshape(steps, batch_size)

    idx = jax.vmap(one_epoch)(jax.random.split(key, epochs)).reshape(epochs * steps, batch_size)
    total = epochs * steps
    chunks = -(-total // steps_per_chunk)
    pad = chunks * steps_per_chunk - total
    idx = jnp.concatenate([idx, jnp.zeros((pad, batch_size), idx.dtype)]).reshape(chunks, steps_per_chunk, batch_size)
    valid = (jnp.arange(chunks * steps_per_chunk) < total).reshape(chunks, steps_per_chunk)
    extra = padded_size(batch_size, devices) - batch_size
    if extra:
        idx = jnp.pad(idx, ((0, 0), (0, 0), (0, extra)))
    return idx, valid


def _skipping_padded(step: Callable, get_batch: Callable) -> Callable:
    """Scan body ``(carry, (x, ok))``: ``step(carry, get_batch(x))`` where ``ok``, else the carry
    unchanged and zero metrics (``lax.cond``: a padded step costs no compute). The batch is
    gathered inside the branch, in the step's computation, so that XLA can fuse the gather into
    its first use (the readout's dropout reads the gathered rows directly: one 64 x 24576 copy
    less a step)."""

    def run(c, x):
        return step(c, get_batch(x))

    def body(c, inp):
        x, ok = inp
        zeros = jax.tree_util.tree_map(lambda m: jnp.zeros(m.shape, m.dtype), jax.eval_shape(run, c, x)[1])
        return jax.lax.cond(ok, run, lambda c, _: (c, zeros), c, x)

    return body


def scan_chunk(step: Callable, mesh: Mesh, donate: bool = True) -> Callable:
    """Compile ``run(carry, data, idx, valid) -> (carry, metrics)``.

    ``step(carry, batch) -> (carry, metrics)`` runs per device on its shard of ``batch`` (a pytree
    gathered as ``data[idx[s]]`` from the row-sharded ``data`` of :func:`shard_rows`); it must
    reduce across ``AXIS`` itself so that ``carry`` and ``metrics`` stay replicated. Padded steps (``valid == False``) are skipped (``lax.cond``:
    no compute, carry unchanged, metrics zero), so a short last chunk costs only its real steps.
    Each step gathers its own batch inside the scan: materialising a whole chunk of batches
    first (100 x 64 cached feature vectors are 320 MB) made the readout memory-bound.
    """

    devices = mesh.devices.size

    def local(carry, data, idx, valid):
        gather = lambda i: gather_rows(data, i, devices)
        return jax.lax.scan(_skipping_padded(step, gather), carry, (idx, valid))

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(AXIS), P(), P()), out_specs=(P(), P()), check_vma=devices > 1)
    compiled = jax.jit(sharded, donate_argnums=(0,) if donate else ())

    def run(carry, data, idx, valid):
        # Same (replicated) placement on every call, or jit would compile a second time for the
        # shardings its own outputs carry.
        return compiled(replicate(carry, mesh), data, replicate(idx, mesh), replicate(valid, mesh))

    return run


def scan_batches(step: Callable, mesh: Mesh) -> Callable:
    """Compile ``run(carry, batches, valid) -> (carry, metrics)`` for data streamed from the host.

    ``batches``: a pytree of ``(steps, batch, ...)`` arrays, a chunk of consecutive batches stacked
    on the host and sharded over the devices along the batch axis (:func:`put_batches`);
    ``valid``: ``(steps,)`` mask of real steps (a short last chunk is padded). ``step`` is as in
    :func:`scan_chunk`. One call runs the whole chunk, so Python dispatch is paid per chunk, not
    per SoftHebb batch of 10.
    """

    def local(carry, batches, valid):
        return jax.lax.scan(_skipping_padded(step, lambda b: b), carry, (batches, valid))

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(None, AXIS), P()), out_specs=(P(), P()),
                            check_vma=mesh.devices.size > 1)
    compiled = jax.jit(sharded)

    def run(carry, batches, valid):
        return compiled(replicate(carry, mesh), batches, replicate(valid, mesh))

    return run


def process_rows(rows: int, mesh: Mesh) -> tuple[int, int]:
    """``(lo, hi)``: the rows of a global batch of ``rows`` (split over the mesh's devices) that
    this process's devices hold; ``(0, rows)`` in a single process."""
    shards = NamedSharding(mesh, P(AXIS)).addressable_devices_indices_map((rows,)).values()
    spans = sorted(index[0].indices(rows)[:2] for index in shards)
    if any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
        raise ValueError(f"this process's devices hold rows {spans} of the batch: expected one contiguous range")
    return spans[0][0], spans[-1][1]


def put_batches(tree: Any, mesh: Mesh, rows: int, axis: int = 1) -> Any:
    """Start copying host arrays to the devices, split along ``axis`` (the batch axis, ``rows``
    long in all), without waiting: the copy overlaps with the computation already dispatched.
    Each process passes only its own rows, ``process_rows(rows, mesh)``, of that axis."""
    sharding = NamedSharding(mesh, P(*([None] * axis), AXIS))

    def one(a):
        shape = (*a.shape[:axis], rows, *a.shape[axis + 1:])
        return jax.make_array_from_process_local_data(sharding, np.asarray(a), shape)

    return jax.tree_util.tree_map(one, tree)


def map_batches(fn: Callable, mesh: Mesh, batch_size: int) -> Callable:
    """Compile ``apply(args, data) -> outputs``: ``fn(args, batch)`` over the rows of ``data``.

    Each device takes a contiguous range of rows and scans over it in batches of
    ``ceil(batch_size / devices)``, writing every batch's output in place into one preallocated
    array (the last batch is shifted back to end at the last row, so no padding, no crop and no
    copy of the, possibly multi-gigabyte, output). ``fn`` must be row-wise (evaluation mode).
    """
    n_dev = mesh.devices.size

    def local(args, data):
        m = jax.tree_util.tree_leaves(data)[0].shape[0]
        b = min(-(-batch_size // n_dev), m)
        starts = jnp.minimum(jnp.arange(-(-m // b)) * b, m - b)
        take = lambda s: jax.tree_util.tree_map(lambda d: jax.lax.dynamic_slice_in_dim(d, s, b), data)
        shapes = jax.eval_shape(lambda: fn(args, take(0)))
        out = per_device(jax.tree_util.tree_map(lambda o: jnp.zeros((m, *o.shape[1:]), o.dtype), shapes))

        def body(out, s):
            y = fn(args, take(s))
            return jax.tree_util.tree_map(lambda o, v: jax.lax.dynamic_update_slice_in_dim(o, v, s, 0), out, y), None

        return jax.lax.scan(body, out, starts)[0]

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P(AXIS))

    @jax.jit
    def compiled(args, data):
        n = jax.tree_util.tree_leaves(data)[0].shape[0]
        pad = -n % n_dev
        if pad:  # rows divisible by the devices (a copy only in that rare case)
            data = jax.tree_util.tree_map(lambda d: jnp.concatenate([d, jnp.zeros((pad, *d.shape[1:]), d.dtype)]), data)
        out = sharded(args, data)
        return jax.tree_util.tree_map(lambda o: o[:n], out) if pad else out

    def apply(args, data):
        return compiled(replicate(args, mesh), data)

    return apply
