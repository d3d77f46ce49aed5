"""Plasticity rules: pure, jit-compiled ``(params, activations) -> updates``.

Each rule picks a post-synaptic signal ``y`` and a decay rate ``r`` and hands them to the shared
mechanism :func:`hebbjax.rules.hebbian.hebbian_update`::

    dw_j = sum_{b,p} m_b y_{bpj} x_{bp} - (sum_{b,p} m_b r_{bpj}) w_j

``updates`` are shaped like ``params`` and signed so that ``optax.apply_updates(params, updates)``
takes the Hebbian step (``w <- w + dw``); learning rates and normalisations are optax
transformations (:mod:`hebbjax.rules.transforms`). Every rule accepts ``modulation``, one factor
per sample (a third factor such as dopamine, :mod:`hebbjax.rules.dopamine`).

Competition ("winner") always runs over neurons, the last axis of ``u``: for a convolution, over
channels separately at every (sample, position).
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from hebbjax.rules.hebbian import _modulate, check_activations, check_activations_type, hebbian_update, like_params, per_neuron_sum
from hebbjax.rules.linear import Activations, Array, Params, _shape_error

# ----------------------------------------------------------------------------------------------
# Post-synaptic signals (pure functions of the pre-activation u, competition over the last axis)
# ----------------------------------------------------------------------------------------------


def winner_mask(u: Array) -> Array:
    """``1[j = argmax_k u_k]`` (one winner per sample and position; ties go to the lowest index).

    Computed as the first ``j`` with ``u_j = max_k u_k``: two plain reductions, where XLA's CPU
    backend lowers ``argmax`` to a slower paired (value, index) loop (2.3 vs 0.75 ms on the
    10 x 8 x 8 x 1536 conv3 output of ``cifar_softhebb4``); the same mask for any ``u`` free of NaN."""
    top = jnp.max(u, axis=-1, keepdims=True)
    # neuron indices as float32 (exact up to 2^24): XLA's CPU library reduces floats, not integers
    neuron = jax.lax.broadcasted_iota(jnp.float32, u.shape, u.ndim - 1)
    first = jnp.min(jnp.where(u == top, neuron, u.shape[-1]), axis=-1, keepdims=True)
    return (neuron == first).astype(u.dtype)


def softhebb_signal(u: Array, t_invert: float | Array = 1.0) -> Array:
    """SoftHebb's signed soft winner-take-all (ICLR 2023, ``softkrotov`` mode 0).

    ``s = softmax(t_invert * u)``; ``y_j = +s_j`` for the winner ``j = argmax u``, ``-s_j`` otherwise:
    the winner is Hebbian, every other neuron anti-Hebbian in proportion to its softmax value.
    """
    s = jax.nn.softmax(t_invert * u, axis=-1)
    return jnp.where(winner_mask(u) > 0, s, -s)


def soft_wta_signal(u: Array, t_invert: float | Array = 1.0) -> Array:
    """Unsigned soft winner-take-all (Moraitis et al., NCE 2022): ``y = softmax(t_invert * u)``."""
    return jax.nn.softmax(t_invert * u, axis=-1)


def krotov_signal(u: Array, rank: int = 2, delta: float | Array = 0.4) -> Array:
    """Krotov & Hopfield (PNAS 2019): ``y = 1[winner] - delta * 1[neuron ranked `rank`]``.

    ``rank`` counts from 1 (the winner); ``rank=2`` is the runner-up.
    """
    if not isinstance(rank, int) or not 2 <= rank <= u.shape[-1]:
        raise ValueError(f"rank: expected an int in [2, {u.shape[-1]}] (the number of neurons), got {rank!r}")
    _, idx = jax.lax.top_k(u, rank)
    ranked = jax.nn.one_hot(idx[..., rank - 1], u.shape[-1], dtype=u.dtype)
    return winner_mask(u) - delta * ranked


def topk_binary_signal(r: Array, k: int = 1) -> Array:
    """Miconi (2021) sparse activity: ``y_j = 1[r_j >= k-th largest r  and  r_j > 0]``."""
    if not isinstance(k, int) or not 1 <= k <= r.shape[-1]:
        raise ValueError(f"k: expected an int in [1, {r.shape[-1]}] (the number of neurons), got {k!r}")
    kth = jax.lax.top_k(r, k)[0][..., k - 1 : k]
    return ((r >= kth) & (r > 0)).astype(r.dtype)


# ----------------------------------------------------------------------------------------------
# Rules with a given post-synaptic activity y (activations.y, or u for a linear neuron)
# ----------------------------------------------------------------------------------------------


def _competitive(activations: Activations, rule: str) -> Array:
    """``u`` for a rule that computes its own post-synaptic signal from it; a given ``y`` would be
    ignored, so it is an error."""
    u = _pre(activations)
    if activations.y is not None:
        raise ValueError(
            f"activations.y: {rule} computes its post-synaptic signal from u (competition over neurons) and would "
            f"ignore the y given; build the activations without y (observe(linear, params, x)) or use a rule that takes y "
            f"(hebb, instar, oja)"
        )
    return u


def _pre(activations: Activations) -> Array:
    """``u``, after checking the type of ``activations`` (so a wrong argument gets the clear error)."""
    check_activations_type(activations)
    return activations.u


def _post(activations: Activations) -> Array:
    u = _pre(activations)
    return u if activations.y is None else activations.y


def _rule(params, activations, y, decay_rate, modulation):
    kernel = check_activations(params, activations, modulation)
    return like_params(params, hebbian_update(activations.linear, kernel, activations.x, y, decay_rate, modulation))


@jax.jit
def hebb(params: Params, activations: Activations, *, modulation: Array | None = None) -> Params:
    """Plain Hebb: ``dw_j = sum_{b,p} y_j x`` (Hebb 1949; Miconi 2021 ``PLAINHEBB``).

    ``y = activations.y`` (``u`` if not given). Unbounded: pair it with a normalisation.
    """
    return _rule(params, activations, _post(activations), None, modulation)


@jax.jit
def instar(params: Params, activations: Activations, *, modulation: Array | None = None) -> Params:
    """Grossberg instar: ``dw_j = sum_{b,p} y_j (x - w_j)`` (Grossberg 1976; Miconi 2021 ``INSTAR``).

    A neuron moves towards the inputs it responds to; with binary ``y`` a winner moves towards
    the centroid of the inputs it wins. ``y = activations.y`` (``u`` if not given).
    """
    y = _post(activations)
    return _rule(params, activations, y, y, modulation)


@jax.jit
def oja(params: Params, activations: Activations, *, modulation: Array | None = None) -> Params:
    """Oja's rule: ``dw_j = sum_{b,p} y_j (x - y_j w_j)`` (Oja 1982; Miconi 2021 ``OJA``).

    With a linear neuron (``y = u``, the default) ``w`` converges to the unit-norm first principal
    component of ``x``.
    """
    y = _post(activations)
    return _rule(params, activations, y, y * y, modulation)


# ----------------------------------------------------------------------------------------------
# Competitive rules with SoftHebb's template: decay rate y * u (Journe et al., ICLR 2023, eq. for dw)
# ----------------------------------------------------------------------------------------------


@jax.jit
def softhebb(params: Params, activations: Activations, *, t_invert: float | Array = 1.0, modulation: Array | None = None) -> Params:
    """SoftHebb as used in ICLR 2023 (Journe, Garcia Rodriguez, Guo, Moraitis): soft WTA with anti-Hebbian losers.

    ``s = softmax(t_invert u)``, ``y_j = +s_j`` if ``j = argmax u`` else ``-s_j``;
    ``dw_j = sum_{b,p} y_j (x - u_j w_j)``. Pair with :func:`~hebbjax.rules.transforms.scale_by_max_abs`
    and :func:`~hebbjax.rules.transforms.scale_by_norm_dependent_lr` for the paper's step.
    """
    u = _competitive(activations, "softhebb")
    y = softhebb_signal(u, t_invert)
    return _rule(params, activations, y, y * u, modulation)


@jax.jit
def soft_wta(params: Params, activations: Activations, *, t_invert: float | Array = 1.0, modulation: Array | None = None) -> Params:
    """SoftHebb without anti-Hebbian term (Moraitis et al., NCE 2022): ``y = softmax(t_invert u)``,
    ``dw_j = sum_{b,p} y_j (x - u_j w_j)``."""
    u = _competitive(activations, "soft_wta")
    y = soft_wta_signal(u, t_invert)
    return _rule(params, activations, y, y * u, modulation)


@jax.jit
def hard_wta(params: Params, activations: Activations, *, modulation: Array | None = None) -> Params:
    """Hard winner-take-all (SoftHebb's ``hard``): ``y = onehot(argmax u)``, ``dw_win = sum (x - u_win w_win)``.

    Only the rows (neurons) that win at least once change.
    """
    u = _competitive(activations, "hard_wta")
    y = winner_mask(u)
    return _rule(params, activations, y, y * u, modulation)


@functools.partial(jax.jit, static_argnames=("rank",))
def krotov(
    params: Params, activations: Activations, *, rank: int = 2, delta: float | Array = 0.4, modulation: Array | None = None
) -> Params:
    """Krotov-Hopfield (PNAS 2019; SoftHebb's ``hardkrotov``): the winner learns, the neuron ranked
    ``rank`` unlearns: ``y = 1[winner] - delta 1[rank]``, ``dw_j = sum_{b,p} y_j (x - u_j w_j)``."""
    u = _competitive(activations, "krotov")
    y = krotov_signal(u, rank, delta)
    return _rule(params, activations, y, y * u, modulation)


# ----------------------------------------------------------------------------------------------
# Miconi's sparse plasticity: binary top-k with homeostatic thresholds (stateful)
# ----------------------------------------------------------------------------------------------


class SparseTopKState(NamedTuple):
    """Homeostatic adaptive thresholds, one per neuron."""

    threshold: Array


def sparse_topk_init(num_neurons: int, dtype=jnp.float32) -> SparseTopKState:
    """Thresholds start at zero (Miconi 2021)."""
    return SparseTopKState(threshold=jnp.zeros((num_neurons,), dtype))


@functools.partial(jax.jit, static_argnames=("k", "decay", "axis_name"))
def sparse_topk(
    params: Params,
    activations: Activations,
    state: SparseTopKState,
    *,
    k: int = 1,
    homeostasis_rate: float | Array = 3.0,
    decay: Literal["instar", "hebb", "oja"] = "instar",
    axis_name: str | None = None,
    modulation: Array | None = None,
    valid: Array | None = None,
) -> tuple[Params, SparseTopKState]:
    """Sparse plasticity with homeostasis (Miconi 2021, "Multi-layer Hebbian networks with modern deep
    learning frameworks", arXiv 2107.01729).

    ``y_j = 1[u_j - theta_j >= k-th largest of (u - theta) and u_j - theta_j > 0]`` (binary top-k over
    neurons); ``dw_j = sum_{b,p} y_j (x - w_j)`` (instar; ``decay`` selects plain Hebb or Oja instead).
    The thresholds shape only ``y``, never the correlation term. Homeostasis:
    ``theta_j <- theta_j + homeostasis_rate * (mean_{b,p} y_j - k / N)``. ``axis_name`` averages the
    firing rate across devices inside ``shard_map``. ``valid``: which samples are real (one bool per
    sample; padding is left out of the firing rate; pass it as ``modulation`` too, or scaled into it,
    to leave it out of the update).
    """
    y, new_state = sparse_topk_signal(_competitive(activations, "sparse_topk"), state, k=k, homeostasis_rate=homeostasis_rate,
                                      axis_name=axis_name, valid=valid)
    rate = {"instar": y, "hebb": None, "oja": y * y}[decay]
    return _rule(params, activations, y, rate, modulation), new_state


def sparse_topk_signal(
    u: Array, state: SparseTopKState, *, k: int = 1, homeostasis_rate: float | Array = 3.0, axis_name: str | None = None,
    valid: Array | None = None,
) -> tuple[Array, SparseTopKState]:
    """:func:`sparse_topk`'s post-synaptic signal and its homeostatic threshold update:
    ``y = topk_binary_signal(u - theta, k)``, ``theta <- theta + rate * (mean firing - k / N)``,
    the mean over the ``valid`` samples (all when ``None``)."""
    if state.threshold.shape != (u.shape[-1],):
        raise _shape_error("state.threshold", f"one threshold per neuron, ({u.shape[-1]},)", state.threshold)
    if valid is not None and jnp.shape(valid) != u.shape[:1]:
        raise _shape_error("valid", f"one value per sample, ({u.shape[0]},)", valid)
    y = topk_binary_signal(u - state.threshold, k)
    if valid is None:
        firing = per_neuron_sum(y) / (y.size // y.shape[-1])
        if axis_name is not None:
            firing = jax.lax.pmean(firing, axis_name)
    else:  # sums over the real samples, then one division (also across devices)
        counted, positions = per_neuron_sum(_modulate(y, valid)), jnp.sum(valid) * (y[0].size // y.shape[-1])
        if axis_name is not None:
            counted, positions = jax.lax.psum((counted, positions), axis_name)
        firing = counted / positions.astype(y.dtype)
    return y, SparseTopKState(state.threshold + homeostasis_rate * (firing - k / u.shape[-1]))
