"""Miconi's formulation: losses whose gradient is the Hebbian rule.

Miconi (2021, arXiv 2107.01729) writes each rule as a loss ``L`` over the layer's pre-activation
such that gradient *descent* on ``L`` is the Hebbian step: ``-dL/dW == rule``. The post-synaptic
activity ``y`` enters through a stop-gradient, so any differentiable-framework optimiser applies
the rule. With ``u = linear(W, x)`` and ``sg`` the stop-gradient:

- plain Hebb: ``L = -sum sg(y) u``                                     -> ``-dL/dw_j = sum y_j x``
- instar:     ``L = -sum sg(y) (u - 1/2 ||w_j||^2)``                    -> ``-dL/dw_j = sum y_j (x - w_j)``
- Oja:        ``L = -sum sg(y) u + 1/2 sum sg(y)^2 ||w_j||^2``           -> ``-dL/dw_j = sum y_j (x - y_j w_j)``

``jax.grad(loss)(params, x, y)`` therefore equals ``-rule(params, observe(linear, params, x, y))``
(tested). ``params`` is the kernel or a mapping with ``"kernel"``; ``x`` is the unpadded input.
Arguments are validated as :func:`~hebbjax.rules.observe` validates them (errors name ``kernel``,
``x`` or ``y``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hebbjax.rules.linear import Activations, Array, LinearMap, Params, kernel_of, observe

sg = jax.lax.stop_gradient


def _u_and_sq_norms(linear: LinearMap, params: Params, x: Array, y: Array) -> tuple[Array, Array]:
    kernel = kernel_of(params)
    u = observe(linear, kernel, x, y).u  # the rules' checks: kernel, x, and y shaped like u
    sq_norm = jnp.sum(kernel * kernel, axis=tuple(range(kernel.ndim - 1)))  # ||w_j||^2, per neuron
    return u, sq_norm


def hebb_loss(params: Params, x: Array, y: Array, *, linear: LinearMap) -> Array:
    """``L = -sum_{b,p,j} sg(y) u``; ``-grad L`` is plain Hebb."""
    u, _ = _u_and_sq_norms(linear, params, x, y)
    return -jnp.sum(sg(y) * u)


def instar_loss(params: Params, x: Array, y: Array, *, linear: LinearMap) -> Array:
    """``L = -sum_{b,p,j} sg(y) (u - 1/2 ||w_j||^2)``; ``-grad L`` is Grossberg's instar."""
    u, sq_norm = _u_and_sq_norms(linear, params, x, y)
    return -jnp.sum(sg(y) * (u - 0.5 * sq_norm))


def oja_loss(params: Params, x: Array, y: Array, *, linear: LinearMap) -> Array:
    """``L = -sum sg(y) u + 1/2 sum sg(y)^2 ||w_j||^2``; ``-grad L`` is Oja's rule."""
    u, sq_norm = _u_and_sq_norms(linear, params, x, y)
    y = sg(y)
    return -jnp.sum(y * u) + 0.5 * jnp.sum(y * y * sq_norm)


#: The surrogate of each rule whose update is minus its gradient (Miconi 2021).
LOSSES = {"hebb": hebb_loss, "instar": instar_loss, "oja": oja_loss}


def loss_of_activations(kind: str, params: Params, activations: Activations, y: Array) -> Array:
    """The ``kind`` surrogate loss on what a layer exposed (``activations.x`` already padded), with
    post-synaptic signal ``y``: ``-jax.grad`` of it w.r.t. ``params`` is that rule's update."""
    kernel = kernel_of(params)
    u = activations.linear(kernel, activations.x)
    sq_norm = jnp.sum(kernel * kernel, axis=tuple(range(kernel.ndim - 1)))
    y = sg(y)
    if kind == "hebb":
        return -jnp.sum(y * u)
    if kind == "instar":
        return -jnp.sum(y * (u - 0.5 * sq_norm))
    if kind == "oja":
        return -jnp.sum(y * u) + 0.5 * jnp.sum(y * y * sq_norm)
    raise ValueError(f"kind: expected one of {sorted(LOSSES)}, got {kind!r}")
