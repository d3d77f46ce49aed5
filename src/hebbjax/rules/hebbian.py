"""The one Hebbian mechanism every rule shares.

Every rule in hebbjax has the form (per neuron j, summed over the batch b and positions p)::

    dw_j = sum_{b,p} m_b * y_{bpj} * x_{bp}  -  ( sum_{b,p} m_b * r_{bpj} ) * w_j
           '--------- correlation --------'     '-------- decay ---------'

where ``x_{bp}`` is the input patch seen by the neuron at position p, ``y`` the post-synaptic
signal, ``r`` the decay rate (0 for plain Hebb, y for instar, y^2 for Oja, y*u for SoftHebb) and
``m_b`` an optional per-sample modulation (a third factor such as dopamine). Rules differ only in
``y`` and ``r``.

The correlation is the VJP of the layer's linear map w.r.t. its kernel with cotangent ``m*y``:
``grad_W <m*y, f(W, x)>`` (Miconi 2021, arXiv 2107.01729, writes every rule as such a gradient;
SoftHebb's ``hebbconv.delta_weight`` computes the same sum by hand). It is therefore computed the
same way, and exactly, for dense layers and for convolutions of any stride, padding, dilation and
grouping.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from hebbjax.rules.linear import Activations, Array, LinearMap, Params, _shape_error, check_float, kernel_of


def correlation(linear: LinearMap, kernel: Array, x: Array, y: Array) -> Array:
    """``C = sum_{b,p} y_{bp} (x) x_{bp}``, shaped like ``kernel``: the VJP of ``linear`` at ``kernel``.

    Equation: ``C = d/dW <sg(y), linear(W, x)>``. For ``Dense`` this is ``x^T y``; for ``Conv`` it is
    the weight-gradient convolution that SoftHebb's ``hebbconv.delta_weight`` writes by hand.
    """
    _, vjp = jax.vjp(lambda w: linear(w, x), _vary_like(kernel, x))
    (c,) = vjp(jax.lax.stop_gradient(y).astype(kernel.dtype))
    return c


def _varying_axes(a: Array) -> frozenset:
    aval = jax.typeof(a)
    mat = getattr(aval, "manual_axis_type", None)  # JAX >= 0.10
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", ()))  # JAX 0.6 - 0.9


def _vary_like(kernel: Array, x: Array) -> Array:
    """Inside ``shard_map``, mark a replicated kernel as varying over the mesh axes ``x`` varies over.

    Otherwise JAX all-reduces the cotangent of a replicated input, and the VJP would return the
    global sum while the decay term stays local. Marked this way, every term of a rule is this
    device's local sum and the caller reduces the whole update once (``lax.psum``).
    """
    missing = tuple(_varying_axes(x) - _varying_axes(kernel))
    return jax.lax.pcast(kernel, missing, to="varying") if missing else kernel


def per_neuron_sum(v: Array) -> Array:
    """``sum_{b,p} v_{bpj}``: reduce every axis but the last (neurons)."""
    return jnp.sum(v, axis=tuple(range(v.ndim - 1)))


def _modulate(v: Array, modulation: Array | None) -> Array:
    if modulation is None:
        return v
    return v * modulation.reshape((-1,) + (1,) * (v.ndim - 1)).astype(v.dtype)


def check_activations_type(activations: Activations) -> None:
    """Raise a clear TypeError unless ``activations`` is what :func:`~hebbjax.rules.observe` builds."""
    if not isinstance(activations, Activations):
        raise TypeError(
            f"activations: expected hebbjax.rules.Activations (build it with hebbjax.rules.observe), "
            f"got {type(activations).__name__}"
        )


def check_activations(params: Params, activations: Activations, modulation: Array | None = None) -> Array:
    """Validate what a rule receives; return the kernel. Shape checks are static, so free under jit."""
    check_activations_type(activations)
    kernel = kernel_of(params)
    check_float("kernel", kernel)
    check_float("activations.x", activations.x)
    x, u = activations.x, activations.u
    if jnp.ndim(kernel) != activations.linear.kernel_rank:
        raise _shape_error("kernel", f"rank {activations.linear.kernel_rank} for {type(activations.linear).__name__}", kernel)
    if jnp.ndim(x) < 2 or x.shape[0] == 0:
        raise _shape_error("activations.x", "a non-empty batch, (batch >= 1, ...)", x)
    try:
        expected = jax.eval_shape(activations.linear, kernel, x).shape
    except TypeError as err:  # lax's own message, prefixed with which arguments disagree
        raise ValueError(f"activations.x of shape {x.shape} does not fit kernel of shape {kernel.shape}: {err}") from None
    if u.shape != expected:
        raise _shape_error("activations.u", f"{expected} (= linear(kernel, x))", u)
    if activations.y is not None and activations.y.shape != u.shape:
        raise _shape_error("activations.y", f"the shape of u, {u.shape}", activations.y)
    if modulation is not None and jnp.shape(modulation) != (x.shape[0],):
        raise _shape_error("modulation", f"one value per sample, ({x.shape[0]},)", modulation)
    return kernel


def hebbian_update(
    linear: LinearMap,
    kernel: Array,
    x: Array,
    y: Array,
    decay_rate: Array | None = None,
    modulation: Array | None = None,
) -> Array:
    """``dW_j = sum_{b,p} m_b y_{bpj} x_{bp} - (sum_{b,p} m_b r_{bpj}) W_j`` (the module docstring).

    Args:
      linear: the layer's linear map; ``x`` must already be padded (``linear.prepare``).
      kernel: the layer's weights, neurons on the last axis.
      x: the input of the linear map.
      y: post-synaptic signal, shaped like ``linear(kernel, x)``.
      decay_rate: ``r``, shaped like ``y``; ``None`` for no decay (plain Hebb).
      modulation: ``m``, one factor per sample, shape ``(batch,)``; ``None`` means 1.
    """
    dw = correlation(linear, kernel, x, _modulate(y, modulation))
    if decay_rate is not None:
        dw = dw - per_neuron_sum(_modulate(decay_rate, modulation)).astype(kernel.dtype) * kernel
    return dw


def like_params(params: Params, dw: Array) -> Params:
    """Updates shaped like ``params``: ``dw`` for the kernel, zeros for anything else (biases are
    not learned by the Hebbian rules)."""
    if isinstance(params, Mapping):
        return {k: (dw if k == "kernel" else jax.tree_util.tree_map(jnp.zeros_like, v)) for k, v in params.items()}
    return dw
