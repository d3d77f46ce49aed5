"""Shared test configuration.

Reference computations in the tests are done in numpy float64; the library runs in float32
(``jax_enable_x64`` stays off). Matmuls and convolutions run at full float32 precision so that a
tolerance of ~1e-5..1e-4 relative to the scale of the result is meaningful on every backend
(on TPU/GPU the default precision would round operands to bf16/tf32).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

jax.config.update("jax_default_matmul_precision", "highest")


def _assert_close(actual, expected, rtol: float = 1e-5, atol: float = 0.0, err_msg: str = "") -> None:
    """``max |actual - expected| <= rtol * max |expected| + atol`` (a tolerance relative to the
    scale of the whole array, not element-wise: entries that are small only by cancellation would
    make an element-wise rtol meaningless in float32)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{err_msg} shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{err_msg} non-finite values in actual"
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    err = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    assert err <= rtol * scale + atol, f"{err_msg} max abs error {err:.3g} > {rtol:g} * scale {scale:.3g} + {atol:g}"


@pytest.fixture
def assert_close():
    """``assert_close(actual, expected, rtol=1e-5, atol=0.0)``: error relative to the array's scale."""
    return _assert_close


@pytest.fixture
def rng():
    """A fresh, seeded numpy generator per test (tests are independent and reproducible)."""
    return np.random.default_rng(1234)
