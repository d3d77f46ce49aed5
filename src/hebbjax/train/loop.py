"""The one training loop: epochs of a step over a source, in compiled chunks, with callbacks.

:func:`run_epochs` serves every phase (Hebbian, readout, backprop, simultaneous) and both kinds
of :class:`~hebbjax.train.sources.Source`. After each chunk it calls the callbacks with a
:class:`Chunk` (state before and after, metrics, position): stopping on a non-finite update,
progress, checkpoints are callbacks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from hebbjax.train.sources import Runner, Source, close
from hebbjax.train.state import TrainState

Step = Callable[[TrainState, dict], tuple[TrainState, dict]]


class NonFiniteUpdate(FloatingPointError):
    """An update, loss or parameter became NaN/inf; ``state`` is the last finite state (the one
    before the chunk where it happened)."""

    def __init__(self, message: str, state: TrainState | None = None) -> None:
        super().__init__(message)
        self.state = state


@dataclasses.dataclass(frozen=True)
class Chunk:
    """What a callback sees after a chunk of steps of a phase."""

    name: str  # the phase
    before: TrainState
    state: TrainState
    metrics: dict[str, Any]  # per step of the chunk (zero for padded steps)
    valid: np.ndarray  # which steps of the chunk were real
    done: int  # steps of the phase done after this chunk
    total: int  # steps of the phase
    steps_per_epoch: int


Callback = Callable[[Chunk], None]


def counted(step: Step, steps_per_epoch: int) -> Step:
    """``step`` that also advances the state's position (``step``, ``epoch``)."""

    def counted_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        new, metrics = step(state, batch)
        done = new.step + 1
        return new.replace(step=done, epoch=done // steps_per_epoch), metrics

    return counted_step


def run_epochs(
    step: Step, state: TrainState, source: Source, *, name: str, batch_size: int, epochs: int, key: jax.Array,
    mesh: Mesh, steps_per_chunk: int, callbacks: Sequence[Callback] = (), runner: Runner | None = None,
) -> TrainState:
    """``epochs`` shuffled (drop-last) passes of ``step`` over ``source``, continuing from
    ``state.step`` steps done; the sample order is drawn from ``key``. ``runner``: the compiled
    ``source.runner(counted(step, ...), mesh)`` to reuse."""
    steps_per_epoch = source.num_examples // batch_size
    total = epochs * steps_per_epoch
    start = int(state.step)
    if start >= total:
        return state
    if steps_per_epoch == 0:
        raise ValueError(f"{name}: batch size {batch_size} is larger than the dataset ({source.num_examples} samples)")
    run = runner or source.runner(counted(step, steps_per_epoch), mesh)
    chunks = source.chunks(key, batch_size, epochs, steps_per_chunk, start, mesh)
    done = start
    try:
        ahead = next(chunks, None)
        while ahead is not None:
            args, valid = ahead
            new, metrics = run(state, *args)  # dispatched: the next chunk is read while it runs
            ahead = next(chunks, None)
            jax.block_until_ready(metrics)  # bound what is in flight (host reads may outpace the device)
            done += int(np.sum(valid))
            chunk = Chunk(name, state, new, metrics, valid, done, total, steps_per_epoch)
            for callback in callbacks:
                callback(chunk)
            state = new
    finally:
        close(chunks)
    return state


def stop_if_not_finite(chunk: Chunk) -> None:
    """Raise :class:`NonFiniteUpdate` keeping the state before a chunk with a non-finite step."""
    finite = chunk.metrics.get("finite")
    if finite is None or bool(np.all(np.asarray(finite) | ~chunk.valid)):
        return
    first = chunk.done - int(np.sum(chunk.valid))
    raise NonFiniteUpdate(
        f"{chunk.name}: an update or loss was NaN/inf in epoch {first // chunk.steps_per_epoch}, within steps "
        f"{first}-{chunk.done}; the last finite parameters were kept (check the input data and learning rates)",
        chunk.before,
    )


class Progress:
    """A progress bar over a phase's steps (``enabled=False``: silent); a callback."""

    def __init__(self, name: str, total: int, start: int, enabled: bool) -> None:
        self.bar = tqdm(total=total, initial=start, desc=name, unit="step", disable=not enabled, leave=False, mininterval=1.0)

    def __call__(self, chunk: Chunk) -> None:
        steps = int(np.sum(chunk.valid))
        self.bar.update(steps)
        if not self.bar.disable:  # the chunk's means (padded steps report 0)
            shown = {k: float(np.sum(chunk.metrics[k]) / max(1, steps)) for k in ("loss", "accuracy") if k in chunk.metrics}
            if shown:
                self.bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        self.bar.close()
