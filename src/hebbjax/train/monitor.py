"""What a run records while it trains: ``metrics.jsonl``, Hebbian diagnostics, pictures, wandb.

The step functions compute the metrics on the device; the monitor only averages and writes them.
``<run dir>/metrics.jsonl`` gets one JSON object per line:

- ``{"event": "chunk", "phase", "phase_index", "epoch", "step", "time", "images_per_second",
  <the chunk's mean of every step metric: loss, accuracy, reward, ...>, "diagnostics": {...}}``
  (diagnostics every ``logging.diagnostics_every`` chunks, :mod:`hebbjax.train.diagnostics`);
- ``{"event": "epoch", "phase", "epoch", "loss", "accuracy", ...}``: the means over each epoch
  (with ``"steps"``, how many of its last steps, when the run was resumed within that epoch);
- ``{"event": "phase", ...}`` at the end of a phase (seconds, final diagnostics), and
  ``{"event": "results", ...}`` last.

Each line is written whole by one ``write``; a resumed run appends, so lines of the steps between
the last checkpoint and a kill appear twice (readers keep the last line of a ``(phase, step)``,
but an epoch's complete mean over a resumed one: :func:`read_metrics`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from hebbjax.train import diagnostics as diag
from hebbjax.train.loop import Chunk
from hebbjax.train.parallel import is_primary

if TYPE_CHECKING:
    from hebbjax.train.fit import Context
    from hebbjax.train.protocol import Plan
    from hebbjax.train.state import TrainState

log = logging.getLogger("hebbjax")

#: Diagnostics that are vectors (one value per neuron): kept for the pictures, not written per chunk.
VECTORS = ("win_rate",)


def _plain(tree: Any) -> Any:
    """Device values -> JSON numbers (vectors dropped)."""
    if isinstance(tree, dict):
        return {k: _plain(v) for k, v in tree.items() if k not in VECTORS}
    value = np.asarray(tree)
    return value.item() if value.size == 1 else value.tolist()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (unreadable lines skipped; of a repeated step the last
    kept, except that an epoch's mean over all its steps wins over a resumed run's mean over its
    last ones, marked ``steps``)."""
    records: dict[tuple, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                merge_record(records, json.loads(line))
            except ValueError:
                continue
    return list(records.values())


def merge_record(records: dict[tuple, dict], r: dict[str, Any]) -> None:
    """Add ``r`` to ``records`` (keyed by event, phase, step, epoch) as :func:`read_metrics` keeps them."""
    key = (r.get("event"), r.get("phase_index"), r.get("step"), r.get("epoch"))
    if not ("steps" in r and key in records and "steps" not in records[key]):
        records[key] = r


class Monitor:
    """Records one run (in ``run_dir``; None: console only)."""

    def __init__(self, cfg: Any, run_dir: str | Path | None, config: dict[str, Any] | None = None) -> None:
        self.cfg, self.log_cfg = cfg, cfg.logging
        # Several processes: every one computes the diagnostics (collectives), process 0 writes.
        self.run_dir = None if run_dir is None or not is_primary() else Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl" if self.run_dir is not None and self.log_cfg.metrics else None
        self.start = time.perf_counter()
        self._history: dict[tuple, dict[str, Any]] = {}  # epoch and phase records: the accuracy curves
        if getattr(cfg, "resume", None) is not None and self.path is not None and self.path.is_file():
            for r in read_metrics(self.path):  # a resumed run's curves start at its first epoch
                if r.get("event") in ("epoch", "phase"):
                    self._merge(r)
        self.last_diagnostics: dict[str, Any] = {}
        self.wandb = _wandb_run(cfg, self.run_dir, config) if self.log_cfg.wandb.enabled and self.run_dir is not None else None
        self.global_step = 0

    def write(self, record: dict[str, Any]) -> None:
        record = {**record, "time": round(time.perf_counter() - self.start, 3)}
        if record["event"] in ("epoch", "phase"):
            self._merge(record)
        if self.path is not None:
            line = (json.dumps(record, default=float) + "\n").encode()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)  # one write: a kill leaves whole lines
            finally:
                os.close(fd)
        if self.wandb is not None and record["event"] in ("chunk", "epoch"):
            _safe(self.wandb.log, _flatten(record), step=self.global_step)

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self._history.values())

    def _merge(self, record: dict[str, Any]) -> None:
        merge_record(self._history, record)

    def chunk_callback(self, ctx: Context, p: int, how: Plan, total: int) -> Any:
        """The :func:`~hebbjax.train.loop.run_epochs` callback of phase ``p``."""
        phase = ctx.phases[p]
        blocks = getattr(phase, "blocks", None) or getattr(phase, "hebbian", ())
        probe = probe_batch(how.source, self.log_cfg.probe_images) if blocks else None
        inputs = ctx.unsup_inputs if phase.timing == "unsupervised" and not hasattr(phase, "dopamine") else ctx.inputs
        sums: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        counts: dict[int, int] = defaultdict(int)
        state_of = {"chunks": 0, "clock": time.perf_counter()}
        if blocks and p not in ctx.diagnose:  # compiled once per phase, as the chunk runner
            ctx.diagnose[p] = jax.jit(functools.partial(diag.diagnostics, ctx, blocks=blocks, total_steps=total, inputs=inputs))
        diagnose = ctx.diagnose.get(p)

        def callback(chunk: Chunk) -> None:
            valid = np.asarray(chunk.valid)
            steps = int(valid.sum())
            first = chunk.done - steps
            metrics = {k: np.asarray(v)[valid] for k, v in chunk.metrics.items() if k != "finite"}
            now = time.perf_counter()
            record = {"event": "chunk", "phase": phase.name, "phase_index": p, "epoch": chunk.done // max(chunk.steps_per_epoch, 1),
                      "step": chunk.done, "images_per_second": round(steps * how.batch_size / max(now - state_of["clock"], 1e-9), 1)}
            record.update({k: float(v.mean(0)) if v.ndim == 1 else v.sum(0).tolist() for k, v in metrics.items()})
            state_of["clock"] = now
            self.global_step += steps
            state_of["chunks"] += 1
            every = self.log_cfg.diagnostics_every
            if probe is not None and every and state_of["chunks"] % every == 0:
                record["diagnostics"] = self.diagnostics(diagnose, chunk.state, probe)
            per_epoch = max(chunk.steps_per_epoch, 1)
            for s, step in enumerate(range(first, chunk.done)):  # per-epoch means
                epoch = step // per_epoch
                for k, v in metrics.items():
                    if v.ndim == 1:
                        sums[epoch][k] += float(v[s])
                counts[epoch] += 1
                if step % per_epoch == per_epoch - 1:  # the epoch's last step
                    record_epoch = {"event": "epoch", "phase": phase.name, "phase_index": p, "epoch": epoch,
                                    **{k: v / counts[epoch] for k, v in sums.pop(epoch, {}).items()}}
                    if counts[epoch] < per_epoch:  # resumed within the epoch: the mean of the steps since
                        record_epoch["steps"] = counts[epoch]
                    self.write(record_epoch)
                    counts.pop(epoch)
            self.write(record)

        callback.probe, callback.diagnose = probe, diagnose
        return callback

    def diagnostics(self, diagnose: Any, state: TrainState, probe: Any) -> dict:
        values = jax.device_get(diagnose(state, probe))
        self.last_diagnostics.update(values)
        return _plain(values)

    def phase_end(self, ctx: Context, p: int, state: TrainState, seconds: dict[str, float], callback: Any = None) -> None:
        """The phase's last diagnostics, a ``phase`` line, and its pictures."""
        record = {"event": "phase", "phase": ctx.phases[p].name, "phase_index": p, "step": int(state.step),
                  "seconds": dict(seconds)}
        if callback is not None and getattr(callback, "probe", None) is not None:
            record["diagnostics"] = self.diagnostics(callback.diagnose, state, callback.probe)
        self.write(record)
        if self.log_cfg.plots and (self.run_dir is not None or jax.process_count() > 1):
            from hebbjax import plot

            try:
                images = plot.probe_images(ctx)  # every process: the rows lie on every process's devices
                slug = re.sub(r"[^a-z0-9]+", "_", ctx.phases[p].name.lower()).strip("_")
                paths = [] if self.run_dir is None else plot.draw(  # process 0 draws, from host copies
                    ctx, state, self.run_dir / "plots", prefix=f"phase{p + 1}_{slug}",
                    diagnostics=self.last_diagnostics, history=self.history, images=images)
            except Exception as err:  # noqa: BLE001 - a picture never fails a run
                log.warning("plots of phase %d failed: %s: %s", p + 1, type(err).__name__, err)
                paths = []
            if self.wandb is not None and paths:
                import wandb

                _safe(self.wandb.log, {f"plots/{path.stem}": wandb.Image(str(path)) for path in paths}, step=self.global_step)

    def results(self, results: dict[str, Any]) -> None:
        self.write({"event": "results", **{k: v for k, v in results.items() if k != "config"}})
        if self.wandb is not None:
            _safe(self.wandb.summary.update, _flatten({k: v for k, v in results.items() if k != "config"}))

    def close(self) -> None:
        if self.wandb is not None:
            _safe(self.wandb.finish)
            self.wandb = None


def probe_batch(source: Any, n: int) -> Any:
    """The diagnostics' probe batch: the first ``n`` images of ``source`` (all when it has fewer)."""
    rows = min(n, source.num_examples)
    return jax.numpy.asarray(source.take(np.arange(rows)))


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in record.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}/"))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
    return out


def _safe(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a wandb function; an error is a warning, never the end of the run."""
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001
        log.warning("wandb: %s: %s (the run goes on without it)", type(err).__name__, err)
        return None


def _wandb_run(cfg: Any, run_dir: Path | None, config: dict[str, Any] | None) -> Any:
    """A wandb run (its files under ``run_dir``), or None when it cannot start (warned)."""
    w = cfg.logging.wandb
    if w.mode == "disabled":
        return None
    try:
        import wandb

        settings = wandb.Settings(silent=True)  # init_timeout: $WANDB_INIT_TIMEOUT (wandb: 90 s)
        return wandb.init(project=w.project, entity=w.entity, tags=list(w.tags), config=config, mode=w.mode,
                          dir=str(run_dir) if run_dir is not None else None, name=cfg.experiment, settings=settings, reinit="finish_previous")
    except Exception as err:  # noqa: BLE001 - unreachable server, no login: the run goes on
        log.warning("wandb: could not start (%s: %s); the run goes on without it", type(err).__name__, err)
        return None
