"""Checkpoints of a run (orbax): the :class:`~hebbjax.train.state.TrainState` and where the run is.

``<run dir>/checkpoints/<n>/`` holds the state (``state``) and JSON metadata (``meta``: the
config, the phase and step, seconds so far). Orbax writes each checkpoint into a temporary folder
and renames it when complete, so a killed run leaves its earlier checkpoints intact; the copy to
disk runs in a background thread (saving does not wait for the disk).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hebbjax.config import from_dict
from hebbjax.nn import HebbianNetwork
from hebbjax.train import build
from hebbjax.train.loop import Chunk
from hebbjax.train.state import TrainState

log = logging.getLogger(__name__)

FOLDER = "checkpoints"


def _saveable(state: TrainState) -> TrainState:
    return state.replace(key=jax.random.key_data(state.key))  # typed PRNG keys as their raw words


class Checkpoints:
    """The checkpoints of one run directory: save every ``every_minutes`` (and when forced),
    keep the newest ``keep``, restore the newest complete one."""

    def __init__(self, run_dir: str | Path, *, every_minutes: float = 5.0, keep: int = 2, read_only: bool = False) -> None:
        import orbax.checkpoint as ocp

        self.ocp = ocp
        self.directory = Path(run_dir).resolve() / FOLDER
        if read_only and not self.directory.is_dir():
            raise FileNotFoundError(f"{run_dir}: no {FOLDER}/ folder (not a hebbjax run directory, or checkpoint.enabled=false)")
        self.every = every_minutes * 60.0
        self.last_save = time.monotonic()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, cleanup_tmp_directories=not read_only, create=not read_only,
                                               read_only=read_only)
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self.next = max(self.manager.all_steps(), default=-1) + 1
        self.save_seconds = 0.0  # time the training loop waited for saves

    def save(self, state: TrainState, meta: dict[str, Any], force: bool = False) -> bool:
        """Save ``state`` with ``meta`` if forced or ``every_minutes`` have passed since the last save."""
        due = force or time.monotonic() - self.last_save >= self.every
        if jax.process_count() > 1 and not force:  # every process saves together (orbax), when process 0's clock says so
            from jax.experimental import multihost_utils

            due = bool(multihost_utils.broadcast_one_to_all(np.asarray(due)))
        if not due:
            return False
        start = time.perf_counter()
        args = self.ocp.args.Composite(state=self.ocp.args.StandardSave(_saveable(state)), meta=self.ocp.args.JsonSave(meta))
        self.manager.save(self.next, args=args)
        self.next += 1
        self.last_save = time.monotonic()
        self.save_seconds += time.perf_counter() - start
        return True

    def callback(self, meta: Callable[[Chunk], dict[str, Any]]) -> Callable[[Chunk], None]:
        """A :func:`~hebbjax.train.loop.run_epochs` callback saving at chunk boundaries."""
        return lambda chunk: self.save(chunk.state, meta(chunk))

    def metas(self) -> list[tuple[int, dict[str, Any]]]:
        """``(number, meta)`` of every complete checkpoint, newest first (unreadable ones skipped
        with a warning)."""
        found = []
        for number in sorted(self.manager.all_steps(), reverse=True):
            try:
                meta = self.manager.restore(number, args=self.ocp.args.Composite(meta=self.ocp.args.JsonRestore()))["meta"]
            except Exception as err:  # noqa: BLE001 - a damaged checkpoint: fall back to an older one
                warnings.warn(f"checkpoint {self.directory / str(number)} is unreadable ({type(err).__name__}); skipping it", stacklevel=2)
                continue
            found.append((number, dict(meta)))
        return found

    def restore(self, template: Callable[[dict[str, Any]], TrainState]) -> tuple[TrainState, dict[str, Any]] | None:
        """The newest checkpoint that restores completely, as ``(state, meta)``; ``template(meta)``
        gives a state of the structure saved then (its phase's optimiser states). None if there
        is none; a damaged newer checkpoint is skipped with a warning naming it."""
        for number, meta in self.metas():
            target = template(meta)
            state = self._state(number, jax.eval_shape(lambda: _saveable(target)))
            if state is not None:
                return state.replace(key=jax.random.wrap_key_data(state.key, impl=jax.random.key_impl(target.key))), meta
        return None

    def restore_raw(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The newest complete checkpoint as saved (nested dicts of arrays) and its meta."""
        for number, meta in self.metas():
            state = self._state(number, None)
            if state is not None:
                return state, meta
        raise FileNotFoundError(f"{self.directory}: no complete checkpoint")

    def _state(self, number: int, abstract: Any) -> Any:
        """Checkpoint ``number``'s state (as ``abstract``, or as saved), or None with a warning."""
        args = self.ocp.args.StandardRestore(abstract) if abstract is not None else self.ocp.args.StandardRestore()
        try:
            return self.manager.restore(number, args=self.ocp.args.Composite(state=args))["state"]
        except Exception as err:  # noqa: BLE001 - a damaged checkpoint: fall back to an older one
            warnings.warn(f"checkpoint {self.directory / str(number)} is damaged ({type(err).__name__}: {str(err)[:200]}); "
                          f"falling back to an older one", stacklevel=3)
            return None

    def close(self) -> None:
        """Wait for the saves in flight to reach the disk (a second call does nothing)."""
        if self.manager is None:
            return
        start = time.perf_counter()
        self.manager.wait_until_finished()
        self.save_seconds += time.perf_counter() - start
        self.manager.close()
        self.manager = None


class Model(NamedTuple):
    """A trained network and its variables: ``network.apply(variables, images)`` gives logits,
    ``network.apply(variables, images, classify=False)`` the features."""

    network: HebbianNetwork
    variables: dict[str, Any]


def load_model(run_dir: str | Path) -> Model:
    """The network a run trained and its variables, from the run's newest complete checkpoint.

    Images go in as the run's dataset gives them (:func:`hebbjax.data.load`: float32, NHWC)."""
    raw, meta = Checkpoints(run_dir, read_only=True).restore_raw()
    cfg = from_dict(meta["config"])
    network = build.network(cfg.model, int(meta["num_classes"]))
    variables = {k: jax.tree_util.tree_map(jnp.asarray, raw.get(k) or {}) for k in ("params", "batch_stats", "rule_state")}
    return Model(network, variables)
