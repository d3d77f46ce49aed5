"""``model.matmul_dtype: bfloat16``: every block's matrix products take bfloat16-rounded inputs and
accumulate in float32 (forward, Hebbian correlation, backprop's input gradient); nothing else changes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebbjax import rules
from hebbjax.config import ConfigError, check
from hebbjax.rules.linear import Conv, Dense, matmul
from hebbjax.run import compose_config, load_data
from hebbjax.train import fit


def _rounded(a) -> jax.Array:
    return jnp.asarray(a, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32)


def _close(got, want, rel: float) -> None:
    """Equal to ``rel`` of the largest value (float32 sums of hundreds of products)."""
    assert got.dtype == jnp.float32
    want = np.asarray(want, np.float64)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=rel * np.abs(want).max())


def _products(f, kernel, x, g):
    """``u = f(kernel, x)`` and the cotangents of ``g``: the Hebbian correlation and ``dL/dx``."""
    u, vjp = jax.vjp(f, kernel, x)
    return (u, *vjp(g))


def test_a_bfloat16_matmul_and_its_cotangents_are_float32_sums_of_rounded_inputs(rng):
    a, b, g = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((50, 300), (300, 40), (50, 40)))
    u, da, db = _products(lambda a, b: matmul(a, b, "bfloat16"), a, b, g)
    ra, rb, rg = (np.asarray(_rounded(v), np.float64) for v in (a, b, g))
    _close(u, ra @ rb, 1e-6)
    _close(da, rg @ rb.T, 1e-6)
    _close(db, ra.T @ rg, 1e-6)
    exact = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
    assert np.abs(np.asarray(u) - exact).max() > 1e-4 * np.abs(exact).max()  # the inputs were rounded
    np.testing.assert_array_equal(matmul(a, b), a @ b)  # float32: the plain product


@pytest.mark.parametrize("implementation, groups, channels",
                         [("patches", 1, 8), ("xla", 1, 8), ("auto", 1, 8), ("auto", 1, 64), ("patches", 2, 8), ("xla", 2, 8)])
def test_a_bfloat16_convolution_is_the_convolution_of_the_rounded_inputs(rng, implementation, groups, channels):
    """Forward, correlation and dL/dx: float32 sums of the products of the rounded inputs and
    cotangent, for every implementation and grouping ("auto" on CPU: XLA's convolution for 72
    values a patch, the patches' GEMM for 576)."""
    x = jnp.asarray(rng.normal(size=(4, 9, 9, channels)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, channels // groups, 16)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(4, 9, 9, 16)), jnp.float32)
    low = Conv(padding=1, feature_group_count=groups, implementation=implementation, matmul_dtype="bfloat16")
    reference = Conv(padding=1, feature_group_count=groups, implementation="xla")
    u, dk, dx = _products(low, kernel, x, g)
    want_u, want_dk, want_dx = _products(reference, _rounded(kernel), _rounded(x), _rounded(g))
    for got, want in ((u, want_u), (dk, want_dk), (dx, want_dx)):
        _close(got, want, 1e-6)
    np.testing.assert_array_equal(rules.correlation(low, kernel, x, g), dk)  # the rules' correlation is this cotangent
    assert float(jnp.abs(u - reference(kernel, x)).max()) > 1e-4 * float(jnp.abs(u).max())


def test_a_bfloat16_dense_map_keeps_every_position_axis(rng):
    x = jnp.asarray(rng.normal(size=(3, 5, 20)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(20, 6)), jnp.float32)
    u = Dense(matmul_dtype="bfloat16")(kernel, x)
    _close(u, np.einsum("bpi,io->bpo", np.asarray(_rounded(x), np.float64), np.asarray(_rounded(kernel), np.float64)), 1e-6)


def test_an_unknown_matmul_dtype_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"model\.matmul_dtype: expected one of \['float32', 'bfloat16'\], got 'float16'"):
        check(compose_config("model.matmul_dtype=float16"))
    with pytest.raises(ValueError, match="matmul_dtype: expected one of"):
        Conv(matmul_dtype="half")


def test_bfloat16_products_train_the_digits_network_as_well_as_float32():
    """The same run with every block's products in bfloat16: other (float32) weights, an accuracy
    within a few points."""
    quick = ("training.readout_epochs=5", "training.mode=consecutive", "data.limit_train=400")
    results, states = {}, {}
    for dtype in ("float32", "bfloat16"):
        cfg = compose_config(*quick, f"model.matmul_dtype={dtype}")
        results[dtype], states[dtype] = fit(cfg, load_data(cfg), progress=False)
    assert results["float32"]["test_accuracy"] > 0.8
    assert abs(results["bfloat16"]["test_accuracy"] - results["float32"]["test_accuracy"]) < 0.05
    k32, k16 = (states[d].params["block_1"]["layer"]["kernel"] for d in ("float32", "bfloat16"))
    assert k16.dtype == jnp.float32 and not np.array_equal(k16, k32)
