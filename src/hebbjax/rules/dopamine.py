"""Dopamine-gated (three-factor) plasticity, after Holca-Lamarre, Luecke & Obermayer (hebbianRL,
hebbianCNN): reward-prediction errors set a per-sample dopamine value that multiplies the update.

``dw = sum_b d_b * (rule's per-sample update)_b``, with ``d_b`` looked up from (reward predicted,
reward received). Values may be negative: anti-Hebbian "unlearning" after an omitted reward.
Every rule in :mod:`hebbjax.rules.plasticity` accepts the factor as ``modulation``;
:func:`three_factor` packages the lookup and the rule into one function.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hebbjax.rules.linear import Activations, Array, Params, _shape_error


class DopamineTable(NamedTuple):
    """Dopamine released in each of the four (predicted, received) cases (Holca-Lamarre's dHigh,
    dMid, dNeut, dLow). Defaults: the hebbianRL HEAD values (4.0, 0.01, -0.25, -1.0)."""

    unpredicted_reward: float = 4.0  # predicted 0, received 1: RPE +1 (dHigh)
    predicted_reward: float = 0.01  # predicted 1, received 1: RPE 0 (dMid)
    no_reward: float = -0.25  # predicted 0, received 0: RPE 0 (dNeut)
    omitted_reward: float = -1.0  # predicted 1, received 0: RPE -1 (dLow)


def reward_prediction_error(predicted: Array, received: Array) -> Array:
    """``RPE = received - predicted`` (both in {0, 1} per sample)."""
    return jnp.asarray(received, jnp.float32) - jnp.asarray(predicted, jnp.float32)


def dopamine_from_table(predicted: Array, received: Array, table: DopamineTable = DopamineTable()) -> Array:
    """Per-sample dopamine ``d_b = table[predicted_b, received_b]``.

    ``predicted`` / ``received`` are booleans or 0/1 (the four cases of the table), or
    probabilities in [0, 1]: then ``d_b`` is the dopamine expected when the prediction and the
    reward are independent Bernoulli draws with those probabilities, the bilinear interpolation
    ``(1-p)(1-r) no_reward + (1-p) r unpredicted_reward + p r predicted_reward + p (1-r) omitted_reward``
    (equal to the table at 0/1). Outside ``jit``, values outside [0, 1] are an error.
    """
    predicted, received = jnp.asarray(predicted), jnp.asarray(received)
    if predicted.ndim != 1:
        raise _shape_error("predicted", "a vector, one entry per sample", predicted)
    if predicted.shape != received.shape:
        raise _shape_error("received", f"a vector shaped like predicted {predicted.shape}, one entry per sample", received)
    p, r = predicted.astype(jnp.float32), received.astype(jnp.float32)
    for name, v in (("predicted", p), ("received", r)):
        if not isinstance(v, jax.core.Tracer) and not bool(jnp.all((v >= 0) & (v <= 1))):
            raise ValueError(f"{name}: expected booleans, 0/1 or probabilities in [0, 1], "
                             f"got values in [{float(v.min())}, {float(v.max())}]")
    return ((1 - p) * (1 - r) * table.no_reward + (1 - p) * r * table.unpredicted_reward
            + p * r * table.predicted_reward + p * (1 - r) * table.omitted_reward)


def dopamine_linear(rpe: Array, gain: float = 4.0, baseline: float = 0.01) -> Array:
    """Linear RPE -> dopamine map of hebbianRL: ``d = gain * RPE + baseline`` (dHigh * RPE + dMid)."""
    return gain * jnp.asarray(rpe, jnp.float32) + baseline


def three_factor(rule: Callable[..., Any], table: DopamineTable = DopamineTable()) -> Callable[..., Any]:
    """Turn ``rule(params, activations, **kw)`` into a three-factor rule
    ``gated(params, activations, predicted, received, **kw)`` whose per-sample update is multiplied
    by ``dopamine_from_table(predicted, received, table)``. Stateful rules keep their ``state``
    argument (pass it by keyword)."""

    @functools.wraps(rule)
    def gated(params: Params, activations: Activations, predicted: Array, received: Array, **kwargs: Any):
        if kwargs.get("modulation") is not None:
            raise ValueError("modulation: a three-factor rule computes its own modulation from (predicted, received)")
        kwargs["modulation"] = dopamine_from_table(predicted, received, table)
        return rule(params, activations, **kwargs)

    return gated
