"""Training steps: pure functions ``step(state, batch, **static) -> (state, metrics)``.

Each runs per device inside ``shard_map`` on its shard of the global batch (``batch["x"]``
inputs, ``batch["y"]`` labels) and reduces across devices itself (``psum`` of Hebbian updates,
``pmean`` of gradients), so the new state is replicated and equals single-device training on the
global batch. Bind the static arguments with ``functools.partial`` and hand the step to
:func:`hebbjax.train.loop.run_epochs`. Every step reports ``finite``: the update and loss were
free of NaN/inf (the loop stops on ``False`` and keeps the state before the chunk).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from hebbjax.data.loading import to_float
from hebbjax.train.build import BoundRule
from hebbjax.train.parallel import AXIS, per_device
from hebbjax.train.plasticity import all_finite, hebbian_updates
from hebbjax.train.state import TrainState

Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Inputs:
    """How a batch becomes the network's input: uint8 -> floats by the split's ``normalization``
    (a no-op on floats), cast to ``dtype``, then the optional on-device ``augment(key, x)``."""

    normalization: str = "unit"
    dtype: Any = jnp.float32
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None

    def __call__(self, images: jax.Array) -> jax.Array:
        return to_float(images, self.normalization).astype(self.dtype)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _device_key(key: jax.Array) -> jax.Array:
    """This device's stream of a random draw (dropout, augmentation)."""
    return jax.random.fold_in(key, jax.lax.axis_index(AXIS))


def hebbian_step(
    state: TrainState, batch: Mapping[str, jax.Array], *, model: nn.Module, rules: Mapping[int, BoundRule],
    transforms: Mapping[int, optax.GradientTransformation], inputs: Inputs,
) -> tuple[TrainState, Metrics]:
    """One unsupervised step of the blocks in ``rules``: a forward pass up to the last of them
    (those in training mode: batch statistics, dropout), then their Hebbian updates."""
    plastic = tuple(rules)
    x = inputs(batch["x"])
    if inputs.augment is None:
        key, k_drop = jax.random.split(state.key)
    else:
        key, k_drop, k_aug = jax.random.split(state.key, 3)
        x = inputs.augment(_device_key(k_aug), x)
    _, mut = model.apply(
        state.variables, x, train_blocks=plastic, upto=max(plastic) + 1, classify=False,
        mutable=["batch_stats", "hebbian"], rngs={"dropout": _device_key(k_drop)},
    )
    params, rule_state, opt, finite = hebbian_updates(rules, transforms, state.params, state.rule_state, state.opt, mut["hebbian"])
    new = state.replace(params=params, batch_stats=mut.get("batch_stats", state.batch_stats), rule_state=rule_state, opt=opt, key=key)
    return new, {"finite": finite}


def readout_step(
    state: TrainState, batch: Mapping[str, jax.Array], *, classifier: nn.Module, tx: optax.GradientTransformation,
) -> tuple[TrainState, Metrics]:
    """One step of the linear classifier on cached features ``batch["x"]``: cross-entropy, Adam."""
    key, k_drop = jax.random.split(state.key)
    rng = _device_key(k_drop)

    def loss_fn(p):
        return cross_entropy(classifier.apply({"params": p}, batch["x"], train=True, rngs={"dropout": rng}), batch["y"])

    current = state.params["classifier"]
    loss, grads = jax.value_and_grad(loss_fn)(per_device(current))
    grads = jax.lax.pmean(grads, AXIS)
    updates, sup_opt = tx.update(grads, state.sup_opt, current)
    classifier_params = optax.apply_updates(current, updates)
    loss = jax.lax.pmean(loss, AXIS)
    new = state.replace(params={**state.params, "classifier": classifier_params}, sup_opt=sup_opt, key=key)
    return new, {"loss": loss, "finite": jnp.isfinite(loss) & all_finite(classifier_params)}


def supervised_step(
    state: TrainState, batch: Mapping[str, jax.Array], *, model: nn.Module, tx: optax.GradientTransformation,
    train_blocks: tuple[int, ...], rules: Mapping[int, BoundRule], transforms: Mapping[int, optax.GradientTransformation],
    inputs: Inputs,
) -> tuple[TrainState, Metrics]:
    """One end-to-end supervised step: the classifier and the ``bp`` blocks by ``tx`` on the
    cross-entropy of the whole network; the blocks in ``rules`` (simultaneous mode) by their
    Hebbian rules on the same forward pass. ``train_blocks``: the blocks in training mode."""
    key, k_drop, k_aug = jax.random.split(state.key, 3)
    x = inputs(batch["x"])
    if inputs.augment is not None:
        x = inputs.augment(_device_key(k_aug), x)

    def loss_fn(p):
        logits, mut = model.apply(
            {**state.variables, "params": p}, x, train_blocks=train_blocks, train_classifier=True,
            mutable=["batch_stats", "hebbian"], rngs={"dropout": _device_key(k_drop)},
        )
        return cross_entropy(logits, batch["y"]), mut

    (loss, mut), grads = jax.value_and_grad(loss_fn, has_aux=True)(per_device(state.params))
    grads = jax.lax.pmean(grads, AXIS)
    updates, sup_opt = tx.update(grads, state.sup_opt, state.params)
    params = optax.apply_updates(state.params, updates)
    params, rule_state, opt, finite = hebbian_updates(rules, transforms, params, state.rule_state, state.opt, mut.get("hebbian", {}))
    loss = jax.lax.pmean(loss, AXIS)
    new = state.replace(params=params, batch_stats=mut.get("batch_stats", state.batch_stats), rule_state=rule_state,
                        opt=opt, sup_opt=sup_opt, key=key)
    return new, {"loss": loss, "finite": finite & jnp.isfinite(loss) & all_finite(params)}
