"""Miconi's sparse plasticity (Miconi 2021, arXiv 2107.01729; its HebbGrad_Github notebook): binary top-k over neurons of
``u - theta``, instar update, homeostatic thresholds ``theta += rate * (firing rate - k / N)``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebbjax.rules import (
    Dense,
    SparseTopKState,
    hebb,
    instar,
    observe,
    oja,
    sparse_topk,
    sparse_topk_init,
    topk_binary_signal,
)


def _problem(rng, batch=8, n_in=5, n_out=4):
    x = rng.normal(size=(batch, n_in)).astype(np.float32)
    w = rng.normal(size=(n_in, n_out)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(w)


def np_topk_binary(r: np.ndarray, k: int) -> np.ndarray:
    """Reference: y_j = 1 iff r_j is among the k largest of its row and r_j > 0."""
    y = np.zeros_like(r)
    for idx in np.ndindex(r.shape[:-1]):
        top = np.argsort(-r[idx])[:k]
        y[idx][top] = r[idx][top] > 0
    return y


def test_topk_binary_signal_by_hand():
    r = jnp.array([[0.5, 2.0, -1.0, 1.2], [-0.5, -2.0, -1.0, -0.1], [3.0, -1.0, 0.2, 0.1]])
    signal = jax.jit(topk_binary_signal, static_argnums=1)
    np.testing.assert_array_equal(signal(r, 1), [[0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
    # k = 2: the 2 largest fire, but only where r > 0 (a top-k entry that is <= 0 does not fire).
    np.testing.assert_array_equal(signal(r, 2), [[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 1, 0]])
    np.testing.assert_array_equal(np_topk_binary(np.asarray(r), 2), [[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 1, 0]])


def test_thresholds_change_y_but_never_enter_the_correlation_term(rng, assert_close):
    """Given the same y, the sparse_topk update is exactly instar with that y; the thresholds only
    decide who fires."""
    x, w = _problem(rng)
    acts = observe(Dense(), w, x)
    theta = jnp.asarray(rng.normal(size=4).astype(np.float32))
    updates, _ = sparse_topk(w, acts, SparseTopKState(theta), k=1)
    u = np.asarray(acts.u)
    y = np_topk_binary(u - np.asarray(theta), 1)
    assert_close(updates, instar(w, observe(Dense(), w, x, jnp.asarray(y))), rtol=1e-6)

    # The thresholds do change y (and so the update): zero thresholds give another winner pattern.
    y0 = np_topk_binary(u, 1)
    assert not np.array_equal(y, y0)
    updates0, _ = sparse_topk(w, acts, sparse_topk_init(4), k=1)
    assert_close(updates0, instar(w, observe(Dense(), w, x, jnp.asarray(y0))), rtol=1e-6)

    # Explicitly: dw_j = sum_b y_bj (x_b - w_j), no theta anywhere.
    xn, wn, yn = np.asarray(x, np.float64), np.asarray(w, np.float64), np.asarray(y, np.float64)
    expected = xn.T @ yn - yn.sum(0) * wn
    assert_close(updates, expected, rtol=1e-5)


@pytest.mark.parametrize("decay, rule", [("hebb", hebb), ("oja", oja), ("instar", instar)])
def test_decay_option_selects_the_base_rule(rng, assert_close, decay, rule):
    x, w = _problem(rng)
    acts = observe(Dense(), w, x)
    updates, _ = sparse_topk(w, acts, sparse_topk_init(4), k=2, decay=decay)
    y = np_topk_binary(np.asarray(acts.u), 2)
    assert_close(updates, rule(w, observe(Dense(), w, x, jnp.asarray(y))), rtol=1e-6)


def test_one_homeostasis_step_by_hand(rng, assert_close):
    """theta_j <- theta_j + rate * (mean_{b,p} y_j - k / N), positions counted like samples."""
    x, w = _problem(rng)
    x = x.reshape(2, 4, 5)  # (batch, positions, in)
    theta = np.array([0.1, -0.2, 0.3, 0.0], np.float32)
    acts = observe(Dense(), w, x)
    _, state = sparse_topk(w, acts, SparseTopKState(jnp.asarray(theta)), k=2, homeostasis_rate=0.7)
    y = np_topk_binary(np.asarray(acts.u) - theta, 2).reshape(8, 4)
    assert 0 < y.sum() < 8 * 2
    expected = theta + 0.7 * (y.mean(0) - 2 / 4)
    assert_close(state.threshold, expected, rtol=1e-6)


def test_homeostasis_brings_firing_rates_to_k_over_n():
    """A neuron aligned with the data mean wins every sample at first; its threshold rises until the
    others win too, and every firing rate settles at k / N (weights held fixed to isolate homeostasis)."""
    rng = np.random.default_rng(0)
    d, n, batch, steps = 8, 4, 32, 400
    mean = np.ones(d, np.float32) / np.sqrt(d)
    xs = jnp.asarray((mean + 0.5 * rng.normal(size=(steps, batch, d))).astype(np.float32))
    w = 0.3 * rng.normal(size=(d, n)).astype(np.float32)
    w[:, 0] = 2.0 * mean
    w = jnp.asarray(w)

    def step(state, x):
        _, new_state = sparse_topk(w, observe(Dense(), w, x), state, k=1, homeostasis_rate=0.5)
        return new_state, jnp.mean(topk_binary_signal(x @ w - state.threshold, 1), axis=0)

    final, rates = jax.jit(lambda s: jax.lax.scan(step, s, xs))(sparse_topk_init(n))
    rates = np.asarray(rates)
    assert rates[0, 0] > 0.8, "test setup: neuron 0 should dominate before homeostasis"
    np.testing.assert_allclose(rates[-100:].mean(0), 1 / n, atol=0.03)
    theta = np.asarray(final.threshold)
    assert theta[0] > 0 and theta[0] == theta.max(), theta
