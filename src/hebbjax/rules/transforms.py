"""The seeds' update post-processing as composable optax ``GradientTransformation``s.

A Hebbian rule's output goes through an ``optax.chain`` exactly like a gradient would; the sign is
already "ascent", so ``optax.apply_updates`` takes the Hebbian step. Examples::

    # SoftHebb (ICLR 2023): normalise each layer's step by its max |dw|, then a per-neuron
    # learning rate that shrinks as the neuron's norm approaches 1.
    tx = optax.chain(scale_by_max_abs(), scale_by_norm_dependent_lr(0.08, power=0.5))

    # Miconi (2021): plain SGD step, then prune with a fixed mask and renormalise to unit norm.
    tx = optax.chain(optax.scale(1e-4), mask_weights(masks), normalize_weights())

    # Holca-Lamarre: raw step, weights kept positive.
    tx = optax.chain(optax.scale(0.01), clip_positive(1e-10))

Per-neuron operations treat the **last axis** of every array with ``ndim >= 2`` as the neuron
axis (dense ``(in, out)`` and conv ``HWIO`` kernels); 1-d leaves (biases) are passed through or
scaled by the scalar learning rate.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def _neuron_axes(a: Array) -> tuple[int, ...]:
    return tuple(range(a.ndim - 1))


def neuron_norms(kernel: Array, p: float = 2.0) -> Array:
    """``||w_j||_p`` for every neuron j (the last axis), shape ``(out,)``."""
    return jnp.sum(jnp.abs(kernel) ** p, axis=_neuron_axes(kernel)) ** (1.0 / p)


def _need_params(params: Any, name: str) -> None:
    if params is None:
        raise ValueError(f"{name}: needs the current params; call tx.update(updates, state, params)")


def scale_by_max_abs(eps: float = 1e-30) -> optax.GradientTransformation:
    """``dw <- dw / (max_{all i,j} |dw_ij| + eps)``, one scalar per array (layer) per step.

    SoftHebb (``hebbconv.delta_weight``): every step has the same size whatever the batch. In data
    parallel training apply it after the cross-device sum of ``dw``.
    """

    def update_fn(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda u: u / (jnp.max(jnp.abs(u)) + eps), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def scale_by_norm_dependent_lr(
    learning_rate: float, power: float = 0.5, p: float = 2.0, eps: float = 1e-10
) -> optax.GradientTransformation:
    """SoftHebb's norm-dependent learning rate: ``eta_j = lr * (| ||w_j||_p - 1 | + eps) ** power``.

    Computed from the params before this update (the norms after the previous one), per neuron
    (``ndim >= 2`` leaves); 1-d leaves get ``lr``. Drives every neuron's norm towards 1 and so
    anneals itself (Journe et al., ICLR 2023; ``utils.update_lr``). A neuron of norm exactly 1
    gets ``lr * eps ** power`` (1e-5 lr at power 0.5): a layer initialised or kept at unit norm
    (:func:`normalize_weights`) effectively never learns; use a constant rate there.
    """

    def update_fn(updates, state, params=None):
        _need_params(params, "scale_by_norm_dependent_lr")

        def scale(u, w):
            if w.ndim < 2:
                return learning_rate * u
            eta = learning_rate * (jnp.abs(neuron_norms(w, p) - 1.0) + eps) ** power
            return u * eta.astype(u.dtype)

        return jax.tree_util.tree_map(scale, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def _project(project, floor: Any = None) -> optax.GradientTransformation:
    """An update that lands the weights on ``project(w + dw)``: ``dw <- project(w + dw) - w``.

    ``optax.apply_updates`` then computes ``w + dw`` in floating point, which can miss the target
    by rounding. With ``floor(w)`` (a bound the target respects), the delta is moved up by one unit
    in the last place wherever ``w + dw`` would fall below it; the result is then at or above the
    bound exactly (``dw`` is within half a unit of ``target - w``, so one unit more always lifts
    ``w + dw`` past the target)."""

    def land(u, w):
        target = project(w + u, w)
        delta = target - w
        if floor is None:
            return delta
        low = jnp.minimum(target, floor(w))
        return jnp.where(w + delta < low, jnp.nextafter(delta, jnp.asarray(jnp.inf, delta.dtype)), delta)

    def update_fn(updates, state, params=None):
        _need_params(params, "projection transform")
        return jax.tree_util.tree_map(land, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def normalize_weights(eps: float = 1e-12) -> optax.GradientTransformation:
    """After the step, ``w_j <- w_j / ||w_j||_2`` (Miconi 2021, ``NORMW``); 1-d leaves untouched."""

    def project(new, old):
        if new.ndim < 2:
            return new
        return new / (neuron_norms(new) + eps)

    return _project(project)


def mask_weights(masks: Any) -> optax.GradientTransformation:
    """Fixed pruning: ``w <- (w + dw) * mask`` (Miconi 2021); ``masks`` is a pytree like the params
    (use ``1`` for leaves that are not pruned). See :func:`random_pruning_mask`."""

    def update_fn(updates, state, params=None):
        _need_params(params, "mask_weights")
        return jax.tree_util.tree_map(lambda u, w, m: (w + u) * m - w, updates, params, masks), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def random_pruning_mask(key: Array, shape: tuple[int, ...], prob_removed: float, dtype=jnp.float32) -> Array:
    """A fixed random binary mask: each weight is removed with probability ``prob_removed``."""
    if not 0.0 <= prob_removed < 1.0:
        raise ValueError(f"prob_removed: expected a probability in [0, 1), got {prob_removed}")
    return (jax.random.uniform(key, shape) >= prob_removed).astype(dtype)


def clip_positive(min_value: float = 1e-10) -> optax.GradientTransformation:
    """Positivity constraint: ``w <- max(w + dw, min_value)`` (Holca-Lamarre, hebbianCNN 2016).

    Exact after ``optax.apply_updates``: every new weight is ``>= min_value`` (when ``min_value``
    is below the float spacing of a weight, the new weight is the nearest float above it that
    ``w + dw`` can reach), so ``log(w)`` of log-weight neurons stays finite."""
    if not min_value > 0:
        raise ValueError(f"min_value: expected a positive bound, got {min_value}")
    return _project(lambda new, old: jnp.maximum(new, min_value), floor=lambda w: jnp.asarray(min_value, w.dtype))


def skip_nonpositive_neurons() -> optax.GradientTransformation:
    """Positivity constraint of hebbianCNN HEAD: a neuron whose step would make any of its weights
    ``<= 0`` skips the step entirely (its column of ``dw`` is zeroed)."""

    def project(new, old):
        if new.ndim < 2:
            return new
        ok = jnp.all(new > 0, axis=_neuron_axes(new))
        return jnp.where(ok, new, old)

    return _project(project, floor=lambda w: jnp.asarray(jnp.finfo(w.dtype).tiny, w.dtype))


class BurnInState(NamedTuple):
    count: Array


def burn_in(steps: int) -> optax.GradientTransformation:
    """No update for the first ``steps`` calls, then the updates as they come (Miconi 2021: learning
    starts after 200 burn-in batches, while the homeostatic thresholds already adapt)."""

    def update_fn(updates, state, params=None):
        del params
        on = (state.count >= steps).astype(jnp.float32)
        return jax.tree_util.tree_map(lambda u: u * on.astype(u.dtype), updates), BurnInState(state.count + 1)

    return optax.GradientTransformation(lambda params: BurnInState(jnp.zeros((), jnp.int32)), update_fn)
