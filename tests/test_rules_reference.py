"""Each plasticity rule against a hand-written numpy reference on small dense examples.

Notation (Journé et al., ICLR 2023; Miconi 2021, arXiv 2107.01729): x_b input of sample b, w_j column j of the
(in, out) kernel, u_bj = <x_b, w_j>, y_bj the post-synaptic signal. Every rule is
``dw_j = sum_b y_bj x_b - (sum_b r_bj) w_j`` with r = 0 (Hebb), y (instar), y^2 (Oja), y*u
(SoftHebb family).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebbjax.rules import (
    Dense,
    hard_wta,
    hebb,
    instar,
    krotov,
    krotov_signal,
    observe,
    oja,
    soft_wta,
    softhebb,
    softhebb_signal,
    winner_mask,
)

# ------------------------------------------------------------------------------------------
# numpy references, written with explicit loops so that they share nothing with the library
# ------------------------------------------------------------------------------------------


def np_softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - np.max(v))
    return e / e.sum()


def ref_signal(u: np.ndarray, kind: str, t_invert: float = 1.0, rank: int = 2, delta: float = 0.4) -> np.ndarray:
    """The post-synaptic signal of the competitive rules, sample by sample."""
    batch, n = u.shape
    y = np.zeros_like(u)
    for b in range(batch):
        winner = int(np.argmax(u[b]))
        s = np_softmax(t_invert * u[b])
        for j in range(n):
            if kind == "softhebb":  # signed soft WTA: winner +s_j, every other neuron -s_j
                y[b, j] = s[j] if j == winner else -s[j]
            elif kind == "soft_wta":
                y[b, j] = s[j]
            elif kind == "hard_wta":
                y[b, j] = 1.0 if j == winner else 0.0
            elif kind == "krotov":
                order = sorted(range(n), key=lambda i: -u[b, i])
                y[b, j] = 1.0 if j == winner else (-delta if j == order[rank - 1] else 0.0)
    return y


def ref_update(x: np.ndarray, w: np.ndarray, y: np.ndarray, decay: np.ndarray | None) -> np.ndarray:
    """dw_j = sum_b (y_bj x_b - r_bj w_j), explicit loops over samples b and neurons j."""
    dw = np.zeros_like(w)
    for b in range(x.shape[0]):
        for j in range(w.shape[1]):
            dw[:, j] += y[b, j] * x[b]
            if decay is not None:
                dw[:, j] -= decay[b, j] * w[:, j]
    return dw


def dense_problem(rng, batch=8, n_in=5, n_out=4):
    """The suite's standard dense problem (one shape everywhere: compiled rules are reused)."""
    x = rng.normal(size=(batch, n_in)).astype(np.float32)
    w = rng.normal(size=(n_in, n_out)).astype(np.float32)
    return x, w


# The same keyword arguments everywhere in this file, so that each rule compiles once per shape.
CANONICAL = {
    softhebb: lambda w, a: softhebb(w, a, t_invert=1.0),
    soft_wta: lambda w, a: soft_wta(w, a, t_invert=2.0),
    hard_wta: lambda w, a: hard_wta(w, a),
    krotov: lambda w, a: krotov(w, a, rank=2, delta=0.4),
    oja: lambda w, a: oja(w, a),
}


# ------------------------------------------------------------------------------------------
# SoftHebb and the other competitive rules
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t_invert", [1.0, 3.0, 0.25])
def test_softhebb_matches_explicit_loops(rng, assert_close, t_invert):
    """dw_j = sum_b y_bj (x_b - u_bj w_j), y = +softmax for the winner and -softmax for the others."""
    x, w = dense_problem(rng)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    u = x64 @ w64
    y = ref_signal(u, "softhebb", t_invert)
    expected = ref_update(x64, w64, y, y * u)
    got = softhebb(jnp.asarray(w), observe(Dense(), jnp.asarray(w), jnp.asarray(x)), t_invert=t_invert)
    assert_close(got, expected, rtol=1e-5)


def test_softhebb_signal_is_signed_softmax(rng):
    u = rng.normal(size=(8, 4)).astype(np.float32) * 2
    y = np.asarray(jax.jit(softhebb_signal)(jnp.asarray(u), 2.0))
    winners = np.argmax(u, axis=1)
    for b in range(u.shape[0]):
        s = np_softmax(2.0 * u[b].astype(np.float64))
        np.testing.assert_allclose(np.abs(y[b]), s, rtol=1e-5)
        assert y[b, winners[b]] > 0
        assert np.all(np.delete(y[b], winners[b]) < 0)
        assert math.isclose(float(np.abs(y[b]).sum()), 1.0, rel_tol=1e-5)


@pytest.mark.parametrize(
    "rule, kind, kwargs",
    [
        (soft_wta, "soft_wta", {"t_invert": 2.0}),
        (hard_wta, "hard_wta", {}),
        (krotov, "krotov", {"rank": 2, "delta": 0.4}),
        (krotov, "krotov", {"rank": 4, "delta": 1.5}),
    ],
    ids=["soft_wta", "hard_wta", "krotov_rank2", "krotov_rank4"],
)
def test_competitive_rules_match_explicit_loops(rng, assert_close, rule, kind, kwargs):
    x, w = dense_problem(rng)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    u = x64 @ w64
    y = ref_signal(u, kind, **kwargs)
    expected = ref_update(x64, w64, y, y * u)
    got = rule(jnp.asarray(w), observe(Dense(), jnp.asarray(w), jnp.asarray(x)), **kwargs)
    assert_close(got, expected, rtol=1e-5)


def test_hard_wta_changes_only_the_winners_rows(rng):
    """Neurons (kernel columns) that never win get an update that is exactly zero; each winner
    moves by sum over the samples it wins of (x - u w)."""
    _, w = dense_problem(rng)
    # Inputs along neuron 0's and neuron 3's weight vectors (scaled up) make those two win.
    scale = rng.uniform(2, 4, size=(8, 1))
    x = (scale * w[:, [0, 3] * 4].T + 0.1 * rng.normal(size=(8, 5))).astype(np.float32)
    u = x.astype(np.float64) @ w.astype(np.float64)
    winners = np.argmax(u, axis=1)
    assert set(winners.tolist()) == {0, 3}, "test setup: neurons 0 and 3 must be the only winners"

    dw = np.asarray(hard_wta(jnp.asarray(w), observe(Dense(), jnp.asarray(w), jnp.asarray(x))))
    for j in (1, 2):
        assert np.all(dw[:, j] == 0.0), f"neuron {j} never wins but its weights changed"
    for j in (0, 3):
        expected = sum(x[b].astype(np.float64) - u[b, j] * w[:, j] for b in range(len(x)) if winners[b] == j)
        np.testing.assert_allclose(dw[:, j], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_krotov_hand_built_ranking(rng):
    """u is built by hand (x = u_target Q^T with Q^T Q = I, so x @ Q = u_target): the signal is +1 at
    the winner and -delta at the neuron ranked ``rank``; the winner's update is +(x - u w), the
    rank-k neuron's is -delta (x - u w), every other neuron's is exactly zero."""
    n = 4
    q = np.linalg.qr(rng.normal(size=(5, 5)))[0][:, :n].astype(np.float32)  # orthonormal columns
    u_target = np.array([[0.5, 2.0, -1.0, 1.2]], np.float32)  # ranks: 1 -> idx 1, 2 -> idx 3, 3 -> idx 0, 4 -> idx 2
    x = (u_target @ q.T).astype(np.float32)
    acts = observe(Dense(), jnp.asarray(q), jnp.asarray(x))
    np.testing.assert_allclose(acts.u, u_target, atol=1e-5)

    delta = 0.7
    signals = jax.jit(lambda u: [krotov_signal(u, rank=r, delta=delta) for r in (2, 3, 4)])(acts.u)
    for signal, ranked_idx in zip(signals, (3, 0, 2)):
        expected_signal = np.zeros((1, n), np.float32)
        expected_signal[0, 1] = 1.0
        expected_signal[0, ranked_idx] = -delta
        np.testing.assert_allclose(signal, expected_signal, atol=1e-7)

    rank, ranked_idx = 3, 0
    dw = np.asarray(krotov(jnp.asarray(q), acts, rank=rank, delta=delta))
    u = np.asarray(acts.u, np.float64)[0]
    np.testing.assert_allclose(dw[:, 1], x[0] - u[1] * q[:, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dw[:, ranked_idx], -delta * (x[0] - u[ranked_idx] * q[:, ranked_idx]), rtol=1e-5, atol=1e-6)
    assert np.all(dw[:, [2, 3]] == 0.0)


def test_winner_mask_ties_go_to_lowest_index():
    u = jnp.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    np.testing.assert_array_equal(winner_mask(u), [[0, 1, 0, 0], [1, 0, 0, 0]])


def test_winner_mask_is_the_one_hot_argmax(rng):
    """The same mask as ``one_hot(argmax(u))``, compiled, on a conv3-sized output (XLA's library
    reductions) with many ties (values rounded to a coarse grid, rows of zeros, -inf, +inf)."""
    u = np.round(rng.normal(size=(10, 8, 8, 1536)) * 2) / 2  # ~13 distinct values: ties in every row
    u[0, 0] = 0.0
    u[1, 1, 1, 7] = np.inf
    u[2, 2, :, 5:] = -np.inf
    u = jnp.asarray(u, jnp.float32)
    expected = jax.nn.one_hot(jnp.argmax(u, axis=-1), u.shape[-1], dtype=u.dtype)
    np.testing.assert_array_equal(jax.jit(winner_mask)(u), expected)
    np.testing.assert_array_equal(jax.jit(winner_mask)(-u), jax.nn.one_hot(jnp.argmax(-u, axis=-1), u.shape[-1]))


@pytest.mark.parametrize("rule", [softhebb, soft_wta, hard_wta, krotov])
def test_y_u_decay_drives_norm_to_one(rng, assert_close, rule):
    """The decay rate y*u makes the norm-1 sphere the fixed point: for every neuron
    <w_j, dw_j> = (sum_b y_bj u_bj) (1 - ||w_j||^2), whatever the data (SoftHebb, ICLR 2023)."""
    x, w = dense_problem(rng)
    w = w * np.array([0.3, 1.0, 2.0, 5.0], np.float32)
    acts = observe(Dense(), jnp.asarray(w), jnp.asarray(x))
    dw = np.asarray(CANONICAL[rule](jnp.asarray(w), acts), np.float64)
    u = np.asarray(acts.u, np.float64)
    y = {
        softhebb: lambda: ref_signal(u, "softhebb", t_invert=1.0),
        soft_wta: lambda: ref_signal(u, "soft_wta", t_invert=2.0),
        hard_wta: lambda: ref_signal(u, "hard_wta"),
        krotov: lambda: ref_signal(u, "krotov", rank=2, delta=0.4),
    }[rule]()
    w64 = w.astype(np.float64)
    lhs = np.sum(w64 * dw, axis=0)
    rhs = np.sum(y * u, axis=0) * (1 - np.sum(w64**2, axis=0))
    assert_close(lhs, rhs, rtol=1e-4)


# ------------------------------------------------------------------------------------------
# Rules with a given post-synaptic activity
# ------------------------------------------------------------------------------------------


def test_instar_single_step_by_hand(rng, assert_close):
    """dw_j = sum_b y_bj (x_b - w_j) for an arbitrary (real, signed) y."""
    x, w = dense_problem(rng)
    y = rng.normal(size=(x.shape[0], w.shape[1])).astype(np.float32)
    expected = np.zeros_like(w, dtype=np.float64)
    for b in range(x.shape[0]):
        for j in range(w.shape[1]):
            expected[:, j] += y[b, j] * (x[b].astype(np.float64) - w[:, j])
    got = instar(jnp.asarray(w), observe(Dense(), jnp.asarray(w), jnp.asarray(x), jnp.asarray(y)))
    assert_close(got, expected, rtol=1e-5)


def test_instar_binary_winner_single_step(rng):
    """With a one-hot y, the winner moves by sum over its samples of (x - w); the others do not move."""
    x, w = dense_problem(rng)
    y = np.eye(4, dtype=np.float32)[[0, 0, 2, 0, 2, 0, 0, 2]]  # neuron 0 wins 5 samples, 2 wins 3
    dw = np.asarray(instar(jnp.asarray(w), observe(Dense(), jnp.asarray(w), jnp.asarray(x), jnp.asarray(y))))
    np.testing.assert_allclose(dw[:, 0], x[[0, 1, 3, 5, 6]].sum(0) - 5 * w[:, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw[:, 2], x[[2, 4, 7]].sum(0) - 3 * w[:, 2], rtol=1e-5, atol=1e-5)
    assert np.all(dw[:, [1, 3]] == 0.0)


def test_instar_default_y_is_u(rng, assert_close):
    x, w = dense_problem(rng)
    u = x.astype(np.float64) @ w
    got = instar(jnp.asarray(w), observe(Dense(), jnp.asarray(w), jnp.asarray(x)))
    assert_close(got, ref_update(x.astype(np.float64), w.astype(np.float64), u, u), rtol=1e-5)


@pytest.mark.parametrize("given_y", [False, True])
def test_oja_single_step_by_hand(rng, assert_close, given_y):
    """dw_j = sum_b y_bj (x_b - y_bj w_j), with y = u (a linear neuron) unless y is given."""
    x, w = dense_problem(rng)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    y = rng.normal(size=(x.shape[0], w.shape[1])).astype(np.float32) if given_y else None
    y64 = y.astype(np.float64) if given_y else x64 @ w64
    expected = np.zeros_like(w64)
    for b in range(x.shape[0]):
        for j in range(w.shape[1]):
            expected[:, j] += y64[b, j] * (x64[b] - y64[b, j] * w64[:, j])
    got = oja(jnp.asarray(w), observe(Dense(), jnp.asarray(w), jnp.asarray(x), None if y is None else jnp.asarray(y)))
    assert_close(got, expected, rtol=1e-5)


def test_hebb_is_the_plain_correlation(rng, assert_close):
    x, w = dense_problem(rng)
    y = rng.normal(size=(x.shape[0], w.shape[1])).astype(np.float32)
    got = hebb(jnp.asarray(w), observe(Dense(), jnp.asarray(w), jnp.asarray(x), jnp.asarray(y)))
    assert_close(got, x.astype(np.float64).T @ y, rtol=1e-5)
    got_u = hebb(jnp.asarray(w), observe(Dense(), jnp.asarray(w), jnp.asarray(x)))
    assert_close(got_u, x.astype(np.float64).T @ (x.astype(np.float64) @ w), rtol=1e-5)


# ------------------------------------------------------------------------------------------
# Positions axis, dict params, biases
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", [softhebb, oja, krotov])
def test_dense_positions_axis_is_summed_like_extra_samples(rng, assert_close, rule):
    """A dense map on (batch, positions, in) sums the update over positions: identical to treating
    every (sample, position) as a sample of its own."""
    x, w = dense_problem(rng)
    x = x.reshape(2, 4, 5)
    rule = CANONICAL[rule]
    with_positions = rule(jnp.asarray(w), observe(Dense(), jnp.asarray(w), jnp.asarray(x)))
    flat = rule(jnp.asarray(w), observe(Dense(), jnp.asarray(w), jnp.asarray(x.reshape(8, 5))))
    assert_close(with_positions, flat, rtol=1e-5)


def test_dict_params_bias_enters_competition_but_is_not_learned(rng, assert_close):
    x, w = dense_problem(rng)
    bias = np.array([0.0, 50.0, 0.0, 0.0], np.float32)  # neuron 1 wins every sample through its bias
    params = {"kernel": jnp.asarray(w), "bias": jnp.asarray(bias), "scale": jnp.ones((2, 2))}
    acts = observe(Dense(), params, jnp.asarray(x))
    np.testing.assert_allclose(acts.u, x @ w + bias, rtol=1e-5, atol=1e-5)
    updates = hard_wta(params, acts)
    assert set(updates) == {"kernel", "bias", "scale"}
    assert np.all(np.asarray(updates["bias"]) == 0) and np.all(np.asarray(updates["scale"]) == 0)
    u = np.asarray(acts.u, np.float64)
    expected = np.zeros_like(w, dtype=np.float64)
    expected[:, 1] = x.sum(0) - u[:, 1].sum() * w[:, 1]
    assert_close(updates["kernel"], expected, rtol=1e-5)
