"""``fit(cfg, data) -> (results, state)``: set up, run the protocol's phases, evaluate.

    from hebbjax.train import Data, fit
    results, state = fit(cfg, Data(train, test))      # train/test: hebbjax.data.Dataset or StreamSource

With ``checkpoints`` (:class:`~hebbjax.train.checkpoint.Checkpoints`) the state is saved at chunk
boundaries and at the end of every phase, and a fit over a folder that has checkpoints continues
from the newest complete one, bit for bit as if it had never stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from hebbjax.config import Config, ConfigError, check_config, check_sizes, resolve
from hebbjax.data.loading import Dataset
from hebbjax.nn import Classifier, HebbianNetwork, zca_matrix
from hebbjax.train import build, evaluate, probes, state as state_lib
from hebbjax.train.checkpoint import Checkpoints
from hebbjax.train.monitor import Monitor
from hebbjax.train.loop import Progress, counted, run_epochs, stop_if_not_finite
from hebbjax.train.parallel import AXIS, make_mesh, replicate, to_host
from hebbjax.train import protocol
from hebbjax.train.protocol import Phase, Readout, RidgeReadout, Supervised, phase_keys, plan
from hebbjax.train.sources import DeviceSource, Source, StreamSource, concat, place
from hebbjax.train.state import TrainState
from hebbjax.train.steps import Inputs

log = logging.getLogger("hebbjax")


class Data(NamedTuple):
    """The splits of a run. ``unsup``: the images of the unsupervised phase when they are not
    ``train`` (STL-10's unlabelled split; its labels are not read). ``unsup_limit``: that phase
    reads only the first N of them (on the device no copy is made; limit a stream when opening
    it instead, ``StreamSource.from_stream(limit=...)``)."""

    train: Dataset | StreamSource
    test: Dataset | StreamSource
    unsup: Dataset | StreamSource | None = None
    unsup_limit: int | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Context:
    """What the phases of one run read: the resolved config, the network, the sources, the mesh."""

    cfg: Config
    model: HebbianNetwork  # BatchNorm statistics averaged over the data-parallel axis
    classifier: Classifier
    mesh: Mesh
    train: Source
    test: Source
    unsup: Source
    inputs: Inputs  # readout / backprop phases
    unsup_inputs: Inputs  # the unsupervised phase
    phases: tuple[Phase, ...]
    keys: tuple  # (init key, mask key, [(step key, order key) per phase])
    masks: dict[int, Any]  # fixed pruning masks per block
    shapes: tuple[tuple[int, ...], ...]  # block output shapes
    num_classes: int
    progress: bool = True
    runners: dict[int, Any] = dataclasses.field(default_factory=dict)  # compiled chunk runners per phase, reused
    diagnose: dict[int, Any] = dataclasses.field(default_factory=dict)  # compiled diagnostics per phase, reused


def _augmentation(names: list[str], options: Any) -> Any:
    if not names:
        return None
    from hebbjax.data.augment import make_augmentation, options_of

    chosen = {k: v for k, v in dataclasses.asdict(options).items() if k in options_of(names)}
    return make_augmentation(list(names), **chosen)


def _check_splits(data: Data) -> None:
    shape = data.train.image_shape
    for name, other in (("test", data.test), ("unsup", data.unsup)):
        if other is not None and other.image_shape != shape:
            raise ValueError(f"{name}: images of shape {other.image_shape}, expected the training images' {shape}")
    if isinstance(data.train, Dataset) and isinstance(data.test, Dataset) and data.train.images.dtype != data.test.images.dtype:
        raise ValueError(f"test: images are {data.test.images.dtype}, expected the training images' {data.train.images.dtype}")


def setup(cfg: Config, data: Data, *, mesh: Mesh | None = None, progress: bool = True) -> Context:
    """Check ``cfg`` against ``data``, place the splits, build the network and the protocol."""
    cfg = resolve(cfg)
    _check_splits(data)
    shapes = check_config(cfg, data.train.image_shape)
    mesh = mesh or make_mesh()
    dtype = jnp.asarray(1.0).dtype  # float32, or float64 when jax_enable_x64 is on (numerical checks)
    train, test = place(data.train, mesh, dtype), place(data.test, mesh, dtype)
    unsup = train if data.unsup is None else place(data.unsup, mesh, dtype)
    if data.unsup_limit is not None:
        if not isinstance(unsup, DeviceSource) or data.unsup_limit < 1:
            raise ValueError(f"unsup_limit: expected a positive number of images of a split on the device, got {data.unsup_limit} "
                             f"(limit a stream when opening it: StreamSource.from_stream(limit=...))")
        unsup = dataclasses.replace(unsup, rows=min(unsup.rows, data.unsup_limit))
    check_sizes(cfg, train.num_examples, unsup.num_examples)
    plastic = build.plastic_blocks(cfg.model.blocks)
    cached = not cfg.data.augment and train.resident and test.resident and not any(b.rule == "bp" for b in cfg.model.blocks)
    if cfg.readout.kind == "ridge" and not cached:
        raise ConfigError("readout.kind: ridge fits on features cached on the device; these splits are streamed (data.placement)")
    phases = protocol.phases(cfg, plastic, cached)
    keys = phase_keys(cfg.seed, len(phases))
    num_classes = data.train.num_classes
    model = build.network(cfg.model, num_classes, AXIS, whiten=cfg.data.whiten == "zca")
    shapes_of_params = jax.eval_shape(lambda: _init_variables(model, train.image_shape, keys[0], dtype))["params"]
    return Context(
        cfg=cfg, model=model, classifier=Classifier(num_classes, cfg.model.classifier_dropout, AXIS), mesh=mesh,
        train=train, test=test, unsup=unsup,
        inputs=Inputs(train.normalization, dtype, _augmentation(cfg.data.augment, cfg.data.augment_options)),
        unsup_inputs=Inputs(unsup.normalization, dtype, _augmentation(cfg.data.unsup_augment, cfg.data.augment_options)),
        phases=phases, keys=keys, masks=build.pruning_masks(cfg.model.blocks, shapes_of_params, keys[1]),
        shapes=tuple(shapes), num_classes=num_classes, progress=progress,
    )


def _init_variables(model: HebbianNetwork, image_shape: tuple[int, ...], key: jax.Array, dtype: Any) -> dict:
    variables = model.clone(axis_name=None).init({"params": key, "dropout": key}, jnp.zeros((1, *image_shape), jnp.float32))
    return jax.tree_util.tree_map(lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, dict(variables))


def init_state(ctx: Context) -> TrainState:
    """The state before the first phase: initial variables, pruning masks applied, replicated."""
    dtype = jnp.asarray(1.0).dtype
    variables = jax.jit(lambda key: _init_variables(ctx.model, ctx.train.image_shape, key, dtype))(ctx.keys[0])
    variables["params"] = build.initial_projection(ctx.cfg.model.blocks, build.apply_masks(variables["params"], ctx.masks))
    if ctx.cfg.data.whiten == "zca":
        variables["batch_stats"] = {**variables["batch_stats"], "whiten_matrix": whitening_matrix(ctx)}
    first_key = ctx.keys[2][0][0] if ctx.phases else ctx.keys[0]
    return replicate(state_lib.create(variables, first_key), ctx.mesh)


def whitening_matrix(ctx: Context) -> jax.Array:
    """The ZCA matrix of ``data.whiten_images`` training images drawn by the run's seed (the same on a resume)."""
    d, n = ctx.cfg.data, ctx.train.num_examples
    index = np.sort(np.asarray(jax.random.permutation(jax.random.fold_in(ctx.keys[0], 1), n))[: min(d.whiten_images, n)])
    images = ctx.inputs(jnp.asarray(ctx.train.take(index)))
    return jax.jit(zca_matrix, static_argnums=1)(images, d.whiten_eps)


def begin(ctx: Context, p: int, state: TrainState) -> TrainState:
    """``state`` at the start of phase ``p``: that phase's optimiser states and step key."""
    opt, sup_opt = plan(ctx, ctx.phases[p]).init_optimisers(state)
    return replicate(state.at(p, ctx.keys[2][p][0], opt, sup_opt), ctx.mesh)


@dataclasses.dataclass
class Record:
    """Seconds per kind of phase, and images the unsupervised phases saw; carried across a resume."""

    seconds: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"unsupervised": 0.0, "feature_extraction": 0.0, "readout": 0.0})
    unsup_images: int = 0


def cached_features(ctx: Context, state: TrainState) -> DeviceSource:
    """Features of train then test, in one compiled pass; the readout reads the train rows."""
    t = ctx.cfg.training
    feats, labels = evaluate.features(ctx.model, state.variables, concat(ctx.train, ctx.test),
                                      batch_size=t.eval_batch_size, mesh=ctx.mesh, inputs=ctx.inputs)
    return DeviceSource.of(jax.block_until_ready(feats), labels, ctx.mesh, rows=ctx.train.num_examples)


def checkpoint_meta(ctx: Context, p: int, done: int, total: int, record: Record) -> dict[str, Any]:
    """What a checkpoint records besides the state: where the run is, and what it is."""
    return {
        "phase": p, "phase_name": ctx.phases[p].name, "step": done, "complete": done >= total,
        "seconds": dict(record.seconds), "unsup_images": record.unsup_images, "config": dataclasses.asdict(ctx.cfg),
        "num_classes": ctx.num_classes, "image_shape": list(ctx.train.image_shape), "normalization": ctx.train.normalization,
    }


def run_phase(
    ctx: Context, p: int, state: TrainState, record: Record | None = None, *, cache: dict[str, Any] | None = None,
    checkpoints: Checkpoints | None = None, monitor: Monitor | None = None,
) -> TrainState:
    """Run phase ``p`` (of ``ctx.phases``) from ``state``: from its start, or from the step a
    resumed state is at. Adds to ``record``; saves a checkpoint at chunk boundaries (every
    checkpoint.every_minutes) and at the end; a :class:`Readout` leaves its cached features in
    ``cache["features"]``."""
    phase, t = ctx.phases[p], ctx.cfg.training
    record = Record() if record is None else record
    cache = {} if cache is None else cache
    if int(state.phase) != p or int(state.step) == 0:
        state = begin(ctx, p, state)
    features = None
    start_or_resume = "starting" if int(state.step) == 0 else f"resuming at step {int(state.step)}"
    log.info("phase %d/%d (%s): %s", p + 1, len(ctx.phases), phase.name, start_or_resume)
    if isinstance(phase, (Readout, RidgeReadout)):
        log.info("%s: extracting the features of %d images", phase.name, ctx.train.num_examples + ctx.test.num_examples)
        start = time.perf_counter()
        features = cache["features"] = cached_features(ctx, state)
        record.seconds["feature_extraction"] += time.perf_counter() - start
    if isinstance(phase, RidgeReadout):
        state = _ridge_phase(ctx, p, state, record, features, checkpoints)
        if monitor is not None:
            monitor.phase_end(ctx, p, state, record.seconds)
        return state
    how = plan(ctx, phase, features)
    steps_per_epoch = how.source.num_examples // how.batch_size
    total = how.epochs * steps_per_epoch
    if p not in ctx.runners and steps_per_epoch > 0:
        ctx.runners[p] = how.source.runner(counted(how.step, steps_per_epoch), ctx.mesh)
    first, start, before = int(state.step), time.perf_counter(), Record(dict(record.seconds), record.unsup_images)

    def progressed(done: int) -> Record:  # the record as of ``done`` steps of this phase
        seconds = {**before.seconds, phase.timing: before.seconds[phase.timing] + time.perf_counter() - start}
        return Record(seconds, before.unsup_images + (done - first) * how.batch_size * (phase.timing == "unsupervised"))

    progress = Progress(phase.name, total, first, ctx.progress)
    callbacks = [stop_if_not_finite, progress]
    recorder = monitor.chunk_callback(ctx, p, how, total) if monitor is not None else None
    if recorder is not None:
        callbacks.append(recorder)
    if checkpoints is not None:  # the end of the phase is saved below
        callbacks.append(lambda c: c.done < total and checkpoints.save(c.state, checkpoint_meta(ctx, p, c.done, total, progressed(c.done))))
    try:
        state = run_epochs(how.step, state, how.source, name=phase.name, batch_size=how.batch_size, epochs=how.epochs,
                           key=ctx.keys[2][p][1], mesh=ctx.mesh, steps_per_chunk=t.steps_per_chunk, callbacks=callbacks,
                           runner=ctx.runners.get(p))
        jax.block_until_ready(state.params)
    finally:
        progress.close()
    done = progressed(total)
    log.info("phase %d/%d (%s): %d steps in %.1f s", p + 1, len(ctx.phases), phase.name, total - first, time.perf_counter() - start)
    record.seconds, record.unsup_images = done.seconds, done.unsup_images
    if checkpoints is not None:
        checkpoints.save(state, checkpoint_meta(ctx, p, total, total, record), force=True)
    if monitor is not None:
        monitor.phase_end(ctx, p, state, record.seconds, recorder)
    return state


def _ridge_phase(ctx: Context, p: int, state: TrainState, record: Record, features: DeviceSource,
                 checkpoints: Checkpoints | None) -> TrainState:
    """The ridge readout: the classifier in closed form from the cached features."""
    start = time.perf_counter()
    classifier = probes.fit_ridge(features, ctx.num_classes, ctx.cfg.readout.alpha)
    state = replicate(state.replace(params={**state.params, "classifier": classifier}, step=jnp.ones((), jnp.int32)), ctx.mesh)
    record.seconds["readout"] += time.perf_counter() - start
    log.info("phase %d/%d (%s): solved in %.1f s", p + 1, len(ctx.phases), ctx.phases[p].name, time.perf_counter() - start)
    if checkpoints is not None:
        checkpoints.save(state, checkpoint_meta(ctx, p, 1, 1, record), force=True)
    return state


def accuracies(ctx: Context, state: TrainState, cache: dict[str, Any]) -> tuple[float | None, float | None]:
    """(train, test) accuracy: from the cached features when the readout used them, else of the
    whole network (one compiled pass over train and test when both are on the device); None
    when no phase trained the classifier (training.readout_epochs=0)."""
    kw = dict(batch_size=ctx.cfg.training.eval_batch_size, mesh=ctx.mesh)
    n = ctx.train.num_examples
    if ctx.cfg.training.method == "reward":  # neural_prob: the class means of the final network over train
        decision = ctx.cfg.training.decision
        means = evaluate.class_means(ctx.model, state.variables, ctx.train, inputs=ctx.inputs, num_classes=ctx.num_classes,
                                     **kw) if decision == "neural_prob" else None
        train, test = (evaluate.decisions(ctx.model, state, source, decision=decision, inputs=ctx.inputs, readout=means, **kw)
                       for source in (ctx.train, ctx.test))
        return evaluate.accuracy(*train), evaluate.accuracy(*test)
    if not any(isinstance(phase, (Readout, RidgeReadout, Supervised)) for phase in ctx.phases):
        return None, None
    if isinstance(ctx.phases[-1], (Readout, RidgeReadout)):
        features = cache.get("features") or cached_features(ctx, state)
        pred, labels = evaluate.classify(ctx.classifier, state.params["classifier"], features, **kw)
    elif ctx.train.resident and ctx.test.resident:
        pred, labels = evaluate.predict(ctx.model, state.variables, concat(ctx.train, ctx.test), inputs=ctx.inputs, **kw)
    else:
        train = evaluate.predict(ctx.model, state.variables, ctx.train, inputs=ctx.inputs, **kw)
        test = evaluate.predict(ctx.model, state.variables, ctx.test, inputs=ctx.inputs, **kw)
        return evaluate.accuracy(*train), evaluate.accuracy(*test)
    pred, labels = to_host((pred, labels))
    return evaluate.accuracy(pred[:n], labels[:n]), evaluate.accuracy(pred[n:], labels[n:])


def resume(ctx: Context, checkpoints: Checkpoints) -> tuple[TrainState, Record, int] | None:
    """``(state, record, next phase)`` from the newest complete checkpoint, or None."""
    restored = checkpoints.restore(lambda meta: begin(ctx, meta["phase"], init_state(ctx)))
    if restored is None:
        return None
    state, meta = restored
    record = Record(dict(meta["seconds"]), int(meta["unsup_images"]))
    return replicate(state, ctx.mesh), record, int(meta["phase"]) + bool(meta["complete"])


def fit(
    cfg: Config, data: Data, *, mesh: Mesh | None = None, progress: bool = True, checkpoints: Checkpoints | None = None,
    monitor: Monitor | None = None,
) -> tuple[dict[str, Any], TrainState]:
    """Train and evaluate ``cfg`` on ``data``; ``(results, final state)``. Results: accuracies
    (fractions), seconds per phase, unsupervised images/s, the block output shapes, and
    ``resumed_from`` (``phase``/``step`` of the checkpoint continued from, or None)."""
    start = time.perf_counter()
    ctx = setup(cfg, data, mesh=mesh, progress=progress)
    resumed = resume(ctx, checkpoints) if checkpoints is not None else None
    state, record, first = resumed if resumed is not None else (init_state(ctx), Record(), 0)
    resumed_from = None if resumed is None else {"phase": int(state.phase), "phase_name": ctx.phases[int(state.phase)].name,
                                                 "step": int(state.step)}
    cache: dict[str, Any] = {}
    for p in range(first, len(ctx.phases)):
        state = run_phase(ctx, p, state, record, cache=cache, checkpoints=checkpoints, monitor=monitor)
    train_acc, test_acc = accuracies(ctx, state, cache)
    cache.clear()  # the cached features: memory for the probes
    layers = probes.probe_layers(ctx, state) if ctx.cfg.readout.layers is not None else None
    unsup = record.seconds["unsupervised"]
    results = {
        "test_accuracy": test_acc,
        "train_accuracy": train_acc,
        "seconds": {**record.seconds, "total": time.perf_counter() - start},
        "unsupervised_images_per_second": record.unsup_images / unsup if unsup > 0 else None,
        "block_output_shapes": [list(s) for s in ctx.shapes],
        "train_samples": ctx.train.num_examples,
        "test_samples": ctx.test.num_examples,
        "unsup_samples": ctx.unsup.num_examples,
        "streamed": not ctx.train.resident,
        "resumed_from": resumed_from,
        "layers": layers,
    }
    return results, state
