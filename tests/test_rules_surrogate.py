"""Miconi's formulation (Miconi 2021, arXiv 2107.01729; its HebbGrad_CheckHebb notebook): gradient descent on a surrogate loss is the
Hebbian rule, ``-jax.grad(loss) == rule``, for dense layers and for convolutions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hebbjax.rules import Conv, Dense, hebb, hebb_loss, instar, instar_loss, observe, oja, oja_loss

PAIRS = {"hebb": (hebb_loss, hebb), "instar": (instar_loss, instar), "oja": (oja_loss, oja)}

LINEARS = {
    "dense": (Dense(), (8, 5), (5, 4)),
    "conv_stride2_reflect": (Conv(strides=2, padding=1, padding_mode="reflect"), (2, 7, 7, 3), (3, 3, 3, 4)),
    "conv_groups_dilation": (Conv(dilation=2, padding=2, feature_group_count=2), (2, 6, 6, 4), (3, 3, 2, 4)),
}


def _make(linear):
    """One jitted function per linear map: the three (gradient, rule) pairs and an SGD step."""

    @jax.jit
    def run(params, x, y):
        acts = observe(linear, params, x, y)
        out = {}
        for name, (loss, rule) in PAIRS.items():
            out[name] = (jax.grad(loss)(params, x, y, linear=linear), rule(params, acts))
        # Any optimiser of the differentiable world applies the rule: one SGD step == lr * rule.
        sgd = optax.sgd(0.1)
        g = jax.grad(instar_loss)(params, x, y, linear=linear)
        step, _ = sgd.update(g, sgd.init(params))
        out["sgd_step"] = (step, jax.tree_util.tree_map(lambda r: 0.1 * r, instar(params, acts)))
        return out

    return run


@pytest.mark.parametrize("case", list(LINEARS))
def test_minus_grad_of_surrogate_loss_is_the_rule(rng, case):
    linear, x_shape, k_shape = LINEARS[case]
    x = jnp.asarray(rng.normal(size=x_shape).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=k_shape).astype(np.float32) / np.sqrt(np.prod(k_shape[:-1])))
    params = {"kernel": kernel, "bias": jnp.zeros(k_shape[-1])}
    u_shape = jax.eval_shape(lambda k, x: observe(linear, k, x).u, kernel, x).shape
    y = jnp.asarray(rng.normal(size=u_shape).astype(np.float32))  # any post-synaptic activity

    out = _make(linear)(params, x, y)
    for name in PAIRS:
        grad, rule = out[name]
        assert set(grad) == {"kernel", "bias"}
        scale = np.abs(np.asarray(rule["kernel"])).max()
        assert scale > 0
        np.testing.assert_allclose(-grad["kernel"], rule["kernel"], rtol=0, atol=1e-5 * scale, err_msg=name)
        np.testing.assert_array_equal(grad["bias"], 0.0)
        np.testing.assert_array_equal(rule["bias"], 0.0)
    step, expected = out["sgd_step"]
    np.testing.assert_allclose(step["kernel"], expected["kernel"], rtol=0, atol=1e-5 * np.abs(np.asarray(expected["kernel"])).max())


def test_surrogate_losses_explicit_values(rng):
    """The loss values themselves (dense, bare kernel): L_hebb = -sum y u,
    L_instar = -sum y (u - ||w_j||^2 / 2), L_oja = -sum y u + sum y^2 ||w_j||^2 / 2."""
    x = rng.normal(size=(8, 5)).astype(np.float32)
    w = rng.normal(size=(5, 4)).astype(np.float32)
    y = rng.normal(size=(8, 4)).astype(np.float32)
    x64, w64, y64 = (a.astype(np.float64) for a in (x, w, y))
    u, sq = x64 @ w64, np.sum(w64**2, axis=0)
    expected = {
        hebb_loss: -np.sum(y64 * u),
        instar_loss: -np.sum(y64 * (u - 0.5 * sq)),
        oja_loss: -np.sum(y64 * u) + 0.5 * np.sum(y64**2 * sq),
    }
    values = jax.jit(lambda w, x, y: [loss(w, x, y, linear=Dense()) for loss in expected])(w, x, y)
    for got, value in zip(values, expected.values()):
        assert float(got) == pytest.approx(value, rel=1e-5, abs=1e-4)


def test_y_is_a_constant_of_the_loss(rng):
    """y enters through a stop-gradient: the gradient w.r.t. y is zero even when y = u is computed
    from the same kernel (Miconi's ``yforgrad.data = realy.data``)."""
    x = jnp.asarray(rng.normal(size=(8, 5)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(5, 4)).astype(np.float32))

    def loss_with_y_from_w(w):
        return oja_loss(w, x, x @ w, linear=Dense())

    grad = jax.jit(jax.grad(loss_with_y_from_w))(w)
    expected = -np.asarray(oja(w, observe(Dense(), w, x)))  # y = u, but treated as given
    np.testing.assert_allclose(grad, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
