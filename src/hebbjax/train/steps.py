"""Training steps: pure functions ``step(state, batch, **static) -> (state, metrics)``.

Each runs per device inside ``shard_map`` on its shard of the global batch (``batch["x"]``
inputs, ``batch["y"]`` labels) and reduces across devices itself (``psum`` of Hebbian updates,
``pmean`` of gradients), so the new state is replicated and equals single-device training on the
global batch. Bind the static arguments with ``functools.partial`` and hand the step to
:func:`hebbjax.train.loop.run_epochs`. Every step reports ``finite``: the update and loss were
free of NaN/inf (the loop stops on ``False`` and keeps the state before the chunk).

``rows`` (static): the real samples of the global batch, its first ``rows``; the rest is the
padding that makes it divisible by the devices (:func:`hebbjax.train.parallel.padded_size`).
Padding has weight 0 everywhere: in the Hebbian sums (modulation 0), rule statistics, BatchNorm
statistics, the loss, the metrics and the class means, and the random draws are made for the real
samples alone, so a batch of 10 gives one device's result on 3, 4 or 8. ``None``: no padding.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from hebbjax.data.loading import to_float
from hebbjax.nn.layers import real_samples, threefry_key
from hebbjax.rules import readout as readout_rules
from hebbjax.train.build import BoundRule
from hebbjax.train.parallel import AXIS, per_device, pmean, psum
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


def cross_entropy(logits: jax.Array, labels: jax.Array, valid: jax.Array | None = None, rows: int | None = None) -> jax.Array:
    """This device's share of the batch's mean cross-entropy (:func:`local_mean`)."""
    return local_mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels), valid, rows)


def local_mean(v: jax.Array, valid: jax.Array | None, rows: int | None) -> jax.Array:
    """This device's share of the global batch mean of the per-sample ``v``: its own mean when
    nothing is padded (the devices' shares are then averaged, :func:`across`), else the sum over
    its real samples divided by the global ``rows`` (the shares are then summed)."""
    v = v.astype(jnp.float32) if not jnp.issubdtype(v.dtype, jnp.floating) else v
    return jnp.mean(v) if valid is None else jnp.sum(jnp.where(valid, v, 0)) / rows


def across(tree: Any, valid: jax.Array | None) -> Any:
    """The global value of the devices' shares (:func:`local_mean`, gradients of it): their mean
    when nothing is padded, else their sum."""
    return pmean(tree, AXIS) if valid is None else psum(tree, AXIS)


def _gather(a: jax.Array) -> jax.Array:
    """The global batch of ``a`` on every device, as a replicated value (each shard in its place, summed)."""
    full = jnp.zeros((jax.lax.axis_size(AXIS) * a.shape[0], *a.shape[1:]), a.dtype)
    return jax.lax.psum(jax.lax.dynamic_update_slice_in_dim(full, a, jax.lax.axis_index(AXIS) * a.shape[0], 0), AXIS)


def _accuracy(logits: jax.Array, labels: jax.Array, valid: jax.Array | None, rows: int | None) -> jax.Array:
    return local_mean(jnp.argmax(logits, -1) == labels, valid, rows)


def _draw_key(key: jax.Array) -> jax.Array:
    """The key of a draw the modules make for the global batch (dropout, exploration noise: the
    same on every device, ``nn.layers.global_draw``); ``fold_in(key, 0)`` is the key one device
    drew with when the draws were per device, so one-device runs keep their numbers."""
    return jax.random.fold_in(key, 0)


def augment(inputs: Inputs, key: jax.Array, x: jax.Array) -> jax.Array:
    """``inputs.augment`` of each sample with its own key, ``fold_in(base, i)`` for its index ``i``
    in the global batch: the same images on any number of devices.

    ``base`` is a threefry key drawn from ``key`` (:func:`~hebbjax.nn.layers.threefry_key`):
    threefry is counter-based, so a vmapped draw equals the draws one key at a time, while the
    ``rbg`` keys of the state would give a sample values that depend on how many samples the
    device holds."""
    base = threefry_key(key)
    first = jax.lax.axis_index(AXIS) * x.shape[0]
    keys = jax.vmap(functools.partial(jax.random.fold_in, base))(first + jnp.arange(x.shape[0]))
    return jax.vmap(lambda k, image: inputs.augment(k, image[None])[0])(keys, x)


def hebbian_step(
    state: TrainState, batch: Mapping[str, jax.Array], *, model: nn.Module, rules: Mapping[int, BoundRule],
    transforms: Mapping[int, optax.GradientTransformation], inputs: Inputs, rows: int | None = None,
) -> tuple[TrainState, Metrics]:
    """One unsupervised step of the blocks in ``rules``: a forward pass up to the last of them
    (those in training mode: batch statistics, dropout), then their Hebbian updates."""
    plastic = tuple(rules)
    x = inputs(batch["x"])
    valid = real_samples(x.shape[0], rows, AXIS)
    if inputs.augment is None:
        key, k_drop = jax.random.split(state.key)
    else:
        key, k_drop, k_aug = jax.random.split(state.key, 3)
        x = augment(inputs, k_aug, x)
    _, mut = model.apply(
        state.variables, x, train_blocks=plastic, upto=max(plastic) + 1, classify=False, rows=rows,
        mutable=["batch_stats", "hebbian"], rngs={"dropout": _draw_key(k_drop)},
    )
    params, rule_state, opt, finite = hebbian_updates(rules, transforms, state.params, state.rule_state, state.opt, mut["hebbian"],
                                                      valid=valid)
    new = state.replace(params=params, batch_stats=mut.get("batch_stats", state.batch_stats), rule_state=rule_state, opt=opt, key=key)
    return new, {"finite": finite}


def readout_step(
    state: TrainState, batch: Mapping[str, jax.Array], *, classifier: nn.Module, tx: optax.GradientTransformation,
    rows: int | None = None,
) -> tuple[TrainState, Metrics]:
    """One step of the linear classifier on cached features ``batch["x"]``: cross-entropy, Adam."""
    key, k_drop = jax.random.split(state.key)
    valid = real_samples(batch["y"].shape[0], rows, AXIS)

    def loss_fn(p):
        logits = classifier.apply({"params": p}, batch["x"], train=True, rows=rows, rngs={"dropout": _draw_key(k_drop)})
        return cross_entropy(logits, batch["y"], valid, rows), logits

    current = state.params["classifier"]
    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(per_device(current))
    grads = across(grads, valid)
    updates, sup_opt = tx.update(grads, state.sup_opt, current)
    classifier_params = optax.apply_updates(current, updates)
    new = state.replace(params={**state.params, "classifier": classifier_params}, sup_opt=sup_opt, key=key)
    loss, accuracy = across((loss, _accuracy(logits, batch["y"], valid, rows)), valid)
    return new, {"loss": loss, "accuracy": accuracy, "finite": jnp.isfinite(loss) & all_finite(classifier_params)}


def supervised_step(
    state: TrainState, batch: Mapping[str, jax.Array], *, model: nn.Module, tx: optax.GradientTransformation,
    train_blocks: tuple[int, ...], rules: Mapping[int, BoundRule], transforms: Mapping[int, optax.GradientTransformation],
    inputs: Inputs, rows: int | None = None,
) -> tuple[TrainState, Metrics]:
    """One end-to-end supervised step: the classifier and the ``bp`` blocks by ``tx`` on the
    cross-entropy of the whole network; the blocks in ``rules`` (simultaneous mode) by their
    Hebbian rules on the same forward pass. ``train_blocks``: the blocks in training mode."""
    key, k_drop, k_aug = jax.random.split(state.key, 3)
    x = inputs(batch["x"])
    valid = real_samples(x.shape[0], rows, AXIS)
    if inputs.augment is not None:
        x = augment(inputs, k_aug, x)

    def loss_fn(p):
        logits, mut = model.apply(
            {**state.variables, "params": p}, x, train_blocks=train_blocks, train_classifier=True, rows=rows,
            mutable=["batch_stats", "hebbian"], rngs={"dropout": _draw_key(k_drop)},
        )
        return cross_entropy(logits, batch["y"], valid, rows), (mut, logits)

    (loss, (mut, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(per_device(state.params))
    grads = across(grads, valid)
    updates, sup_opt = tx.update(grads, state.sup_opt, state.params)
    params = optax.apply_updates(state.params, updates)
    params, rule_state, opt, finite = hebbian_updates(rules, transforms, params, state.rule_state, state.opt, mut.get("hebbian", {}),
                                                      valid=valid)
    loss, accuracy = across((loss, _accuracy(logits, batch["y"], valid, rows)), valid)
    new = state.replace(params=params, batch_stats=mut.get("batch_stats", state.batch_stats), rule_state=rule_state,
                        opt=opt, sup_opt=sup_opt, key=key)
    return new, {"loss": loss, "accuracy": accuracy, "finite": finite & jnp.isfinite(loss) & all_finite(params)}


def decide(outputs: jax.Array, readout: Any, decision: str) -> jax.Array:
    """The reward method's class decision from the last block's output: ``neural_prob`` (the class
    means in ``readout``, :mod:`hebbjax.rules.readout`) or ``neural_dopa`` (the last block is the
    class layer)."""
    h = outputs.reshape(outputs.shape[0], -1)
    if decision == "neural_prob":
        return jnp.argmax(readout_rules.neural_prob(h, readout_rules.class_probabilities(readout)), -1)
    return jnp.argmax(h, -1)


def reward_step(
    state: TrainState, batch: Mapping[str, jax.Array], *, model: nn.Module, rules: Mapping[int, BoundRule],
    transforms: Mapping[int, optax.GradientTransformation], gates: Mapping[int, Any], explore: bool, decision: str,
    window: int, inputs: Inputs, rows: int | None = None,
) -> tuple[TrainState, Metrics]:
    """One step of Holca-Lamarre's reward-modulated Hebbian learning.

    Per sample the network decides greedily (no noise) and, when ``explore``, once more with the
    blocks' exploration noise; reward prediction ``p = 1[greedy == explored]``, reward
    ``r = 1[explored == label]``. Block ``i``'s update is the Hebbian update of the explored pass
    with each sample weighted by its dopamine ``gates[i](p, r)`` (``None``: factor 1). With no
    exploration and no gates this is :func:`hebbian_step` (the statistical phase). The class means
    of the ``neural_prob`` decision (``state.sup_opt``, an exponential window of ``window``
    samples) take in the greedy pass's output.
    """
    plastic = tuple(rules)
    x, labels = inputs(batch["x"]), batch["y"]
    valid = real_samples(x.shape[0], rows, AXIS)
    key, k_drop, k_explore = jax.random.split(state.key, 3)
    rngs = {"dropout": _draw_key(k_drop), "explore": _draw_key(k_explore)}
    run = functools.partial(model.apply, state.variables, x, train_blocks=plastic, classify=False, rows=rows, rngs=rngs)
    outputs, mut = run(explore=explore, mutable=["batch_stats", "hebbian"])
    greedy = run(mutable=["batch_stats"])[0] if explore else outputs
    chosen, greedy_choice = decide(outputs, state.sup_opt, decision), decide(greedy, state.sup_opt, decision)
    predicted, received = greedy_choice == chosen, chosen == labels
    modulations = {i: gate(predicted, received) for i, gate in gates.items() if gate is not None}
    params, rule_state, opt, finite = hebbian_updates(rules, transforms, state.params, state.rule_state, state.opt,
                                                      mut["hebbian"], modulations=modulations, valid=valid)
    sup_opt = state.sup_opt
    if decision == "neural_prob":  # every device adds the whole global batch (its real samples), in the same order
        real = slice(None) if valid is None else slice(rows)
        sup_opt = readout_rules.class_means_update(sup_opt, _gather(greedy.reshape(greedy.shape[0], -1))[real], _gather(labels)[real],
                                                   window)
    new = state.replace(params=params, batch_stats=mut.get("batch_stats", state.batch_stats), rule_state=rule_state,
                        opt=opt, sup_opt=sup_opt, key=key)
    mean = lambda a: across(local_mean(a, valid, rows), valid)
    cases = jax.nn.one_hot(2 * predicted.astype(jnp.int32) + received.astype(jnp.int32), 4)  # (p, r): 00 01 10 11
    cases = (cases if valid is None else cases * valid[:, None]).sum(0)
    metrics = {"finite": finite, "reward": mean(received), "predicted": mean(predicted), "accuracy": mean(greedy_choice == labels),
               "rpe": mean(received.astype(jnp.float32) - predicted.astype(jnp.float32)), "cases": jax.lax.psum(cases, AXIS)}
    return new, metrics
