"""Decoding blocks: the ridge readout (closed form) and a probe on every chosen block's output.

A probe reads block ``i``'s output in evaluation mode, standardised per sample when block ``i + 1``
standardises its input (what that block sees: Miconi decodes "the normalised input of the next
layer"), pooled to the mean of each of its 2 x 2 spatial quadrants (``C x 4`` features, Miconi's
``layerquads``) or flattened, and fits a linear classifier of ``readout.kind`` on the train rows:
``ridge`` (closed form, :func:`hebbjax.rules.readout.ridge`) or ``adam`` (SoftHebb's readout recipe,
:func:`hebbjax.train.steps.readout_step`, for ``training.readout_epochs``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from hebbjax.nn.layers import standardize
from hebbjax.rules import readout as readout_rules
from hebbjax.train import evaluate
from hebbjax.train.loop import run_epochs
from hebbjax.train.parallel import replicate, to_host
from hebbjax.train.sources import DeviceSource, concat
from hebbjax.train.state import TrainState, create

if TYPE_CHECKING:
    from hebbjax.train.fit import Context


def quadrants(x: jax.Array) -> jax.Array:
    """Mean over each 2 x 2 spatial quadrant of ``(B, H, W, C)`` -> ``(B, 4 C)`` (an odd side's
    middle row/column goes to the second half); a flat ``(B, D)`` input, or a map smaller than
    2 x 2, is returned flattened."""
    if x.ndim == 2 or min(x.shape[1:3]) < 2:
        return x.reshape(x.shape[0], -1)
    h, w = x.shape[1] // 2, x.shape[2] // 2
    parts = [x[:, rows, cols] for rows in (slice(0, h), slice(h, None)) for cols in (slice(0, w), slice(w, None))]
    return jnp.concatenate([p.mean(axis=(1, 2)) for p in parts], axis=-1)


def _block_features(variables: Any, x: jax.Array, *, model, inputs, block: int, normalise: bool, pool: str) -> jax.Array:
    out = model.apply(variables, inputs(x), upto=block + 1, classify=False)
    if normalise:
        out = standardize(out)
    out = quadrants(out) if pool == "quadrants" else out
    return out.reshape(out.shape[0], -1)


def layer_features(ctx: Context, state: TrainState, block: int) -> DeviceSource:
    """Block ``block``'s pooled output for train then test (the probe reads the train rows)."""
    blocks = ctx.cfg.model.blocks
    normalise = block + 1 < len(blocks) and blocks[block + 1].input_norm == "standardize"
    fn = evaluate._bound(_block_features, model=ctx.model, inputs=ctx.inputs, block=block, normalise=normalise,
                         pool=ctx.cfg.readout.pool)
    feats, labels = concat(ctx.train, ctx.test).map(fn, state.variables, ctx.cfg.training.eval_batch_size, ctx.mesh)
    return DeviceSource.of(feats, labels, ctx.mesh, rows=ctx.train.num_examples)


def fit_ridge(features: DeviceSource, num_classes: int, alpha: float) -> dict[str, jax.Array]:
    """The classifier's params (``Dense_0``) fitted by ridge regression on the train rows."""
    n = features.rows
    # The rows gathered onto every device first: a Gram summed over row-sharded features would
    # round differently on every device count.
    x, y = replicate((features.arrays["x"][:n], features.arrays["y"][:n]), features.arrays["x"].sharding.mesh)
    w, b = jax.jit(functools.partial(readout_rules.ridge, classes=num_classes, alpha=alpha))(x, y)
    return {"Dense_0": {"kernel": w, "bias": b}}


def _fit_adam(ctx: Context, features: DeviceSource, key: jax.Array) -> dict[str, Any]:
    """A fresh linear classifier trained on ``features`` as the readout phase trains the network's."""
    from hebbjax.train.protocol import Readout, plan

    k_init, k_step, k_order = jax.random.split(key, 3)
    params = ctx.classifier.init(k_init, features.arrays["x"][:1])["params"]
    how = plan(ctx, Readout(), features)
    state = create({"params": {"classifier": params}}, k_step)
    state = replicate(state.replace(sup_opt=how.init_optimisers(state)[1]), ctx.mesh)
    t = ctx.cfg.training
    state = run_epochs(how.step, state, features, name="probe", batch_size=t.readout_batch_size, epochs=t.readout_epochs,
                       key=k_order, mesh=ctx.mesh, steps_per_chunk=t.steps_per_chunk)
    return state.params["classifier"]


def probe_layers(ctx: Context, state: TrainState) -> list[dict[str, Any]]:
    """Per chosen block: its probe's train and test accuracy (``results["layers"]``)."""
    chosen = ctx.cfg.readout.layers
    blocks = range(len(ctx.cfg.model.blocks)) if chosen == "all" else [int(i) for i in chosen]
    n, out = ctx.train.num_examples, []
    for i in blocks:
        features = layer_features(ctx, state, i)
        if ctx.cfg.readout.kind == "ridge":
            params = fit_ridge(features, ctx.num_classes, ctx.cfg.readout.alpha)
        else:
            params = _fit_adam(ctx, features, jax.random.fold_in(ctx.keys[0], 1000 + i))
        pred, labels = evaluate.classify(ctx.classifier, params, features, batch_size=ctx.cfg.training.eval_batch_size, mesh=ctx.mesh)
        pred, labels = to_host((pred, labels))
        out.append({"block": i, "features": int(features.arrays["x"].shape[1]),
                    "train_accuracy": evaluate.accuracy(pred[:n], labels[:n]), "test_accuracy": evaluate.accuracy(pred[n:], labels[n:])})
    return out
