"""Dopamine-gated (three-factor) plasticity, after Holca-Lamarre, Lücke & Obermayer
("A Biology-Inspired Algorithm for Neural Function Approximation in Reinforcement Learning"; hebbianCNN):
``dw = sum_b d_b * (the rule's update for sample b alone)``, d_b looked up from
(reward predicted, reward received) or mapped linearly from the reward-prediction error."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebbjax.rules import (
    Conv,
    Dense,
    DopamineTable,
    dopamine_from_table,
    dopamine_linear,
    instar,
    krotov,
    observe,
    oja,
    reward_prediction_error,
    softhebb,
    sparse_topk,
    sparse_topk_init,
    three_factor,
)

TABLE = DopamineTable(unpredicted_reward=2.5, predicted_reward=0.5, no_reward=0.0, omitted_reward=-1.5)
PREDICTED = np.array([0, 1, 0, 1, 0, 1, 1, 0])
RECEIVED = np.array([1, 1, 0, 0, 1, 0, 1, 0])
# (predicted, received): (0,1) unpredicted, (1,1) predicted, (0,0) none, (1,0) omitted
EXPECTED_D = np.array([2.5, 0.5, 0.0, -1.5, 2.5, -1.5, 0.5, 0.0], np.float32)

RULES = {
    "softhebb": lambda p, a, **kw: softhebb(p, a, t_invert=2.0, **kw),
    "instar": lambda p, a, **kw: instar(p, a, **kw),
    "oja": lambda p, a, **kw: oja(p, a, **kw),
    "krotov": lambda p, a, **kw: krotov(p, a, rank=2, delta=0.4, **kw),
}


def test_table_lookup_maps_each_case_to_its_field():
    d, d_default = jax.jit(
        lambda p, r, pb, rb: (dopamine_from_table(p, r, TABLE), dopamine_from_table(pb, rb))
    )(PREDICTED, RECEIVED, np.array([False, True, False, True]), np.array([True, True, False, False]))
    np.testing.assert_array_equal(d, EXPECTED_D)
    # Booleans work the same; the default table is hebbianRL HEAD's (dHigh, dMid, dNeut, dLow).
    np.testing.assert_allclose(d_default, [4.0, 0.01, -0.25, -1.0])


def test_reward_prediction_error_and_linear_map():
    @jax.jit
    def run(predicted, received):
        rpe = reward_prediction_error(predicted, received)
        return rpe, dopamine_linear(rpe, gain=3.0, baseline=0.2), dopamine_linear(rpe)

    rpe, d, d_default = run(np.array([0, 1, 0, 1]), np.array([1, 1, 0, 0]))
    np.testing.assert_array_equal(rpe, [1.0, 0.0, 0.0, -1.0])
    np.testing.assert_allclose(d, [3.2, 0.2, 0.2, -2.8], rtol=1e-6)
    np.testing.assert_allclose(d_default, [4.01, 0.01, 0.01, -3.99], rtol=1e-6)  # d = dHigh * RPE + dMid


@pytest.mark.parametrize("rule_name", list(RULES))
def test_gated_update_is_the_dopamine_weighted_sum_of_per_sample_updates(rng, rule_name):
    """Positive d scales a sample's update, d = 0 removes it, negative d flips its sign (unlearning)."""
    rule = RULES[rule_name]
    x = rng.normal(size=(8, 5)).astype(np.float32)
    w = jnp.asarray(rng.normal(size=(5, 4)).astype(np.float32))

    @jax.jit
    def run(w, x, predicted, received, d):
        acts = observe(Dense(), w, x)
        gated = three_factor(rule, TABLE)(w, acts, predicted, received)
        # The rule applied to each sample alone (a batch of one), one sample after the other.
        per_sample = jax.lax.map(lambda xb: rule(w, observe(Dense(), w, xb[None])), x)
        direct = rule(w, acts, modulation=d)  # the same through the rule's own ``modulation``
        return gated, per_sample, direct

    gated, per_sample, direct = run(w, x, PREDICTED, RECEIVED, EXPECTED_D)
    expected = np.einsum("b,bij->ij", EXPECTED_D.astype(np.float64), np.asarray(per_sample, np.float64))
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(gated, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(direct, gated, rtol=0, atol=1e-6 * np.abs(expected).max())


def test_zero_dopamine_samples_contribute_nothing_and_negative_flips_the_sign(rng):
    x = rng.normal(size=(8, 5)).astype(np.float32)
    w = jnp.asarray(rng.normal(size=(5, 4)).astype(np.float32))
    d = EXPECTED_D
    base = softhebb(w, observe(Dense(), w, jnp.asarray(x)), t_invert=2.0, modulation=d)
    # Whatever the inputs of the d = 0 samples are, the update does not change.
    x_changed = x.copy()
    x_changed[EXPECTED_D == 0] = 100.0 * rng.normal(size=(2, 5))
    changed = softhebb(w, observe(Dense(), w, jnp.asarray(x_changed)), t_invert=2.0, modulation=d)
    np.testing.assert_allclose(changed, base, rtol=0, atol=1e-6 * np.abs(np.asarray(base)).max())
    # d -> -d flips the update; d = 1 is the ungated rule.
    flipped = softhebb(w, observe(Dense(), w, jnp.asarray(x)), t_invert=2.0, modulation=-d)
    np.testing.assert_allclose(flipped, -np.asarray(base), rtol=0, atol=1e-6 * np.abs(np.asarray(base)).max())
    ones = softhebb(w, observe(Dense(), w, jnp.asarray(x)), t_invert=2.0, modulation=np.ones(8, np.float32))
    ungated = softhebb(w, observe(Dense(), w, jnp.asarray(x)), t_invert=2.0)
    np.testing.assert_allclose(ones, ungated, rtol=1e-6, atol=1e-6)


def test_gating_a_conv_rule_is_per_sample(rng):
    """For a convolution, a sample's dopamine multiplies its update at every position."""
    conv = Conv(strides=2, padding=1, padding_mode="reflect")
    x = rng.normal(size=(3, 6, 6, 2)).astype(np.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 2, 4)).astype(np.float32))
    d = np.array([1.5, 0.0, -0.7], np.float32)

    @jax.jit
    def updates(w, x):
        gated = instar(w, observe(conv, w, x), modulation=jnp.asarray(d))
        single = [instar(w, observe(conv, w, x[b : b + 1])) for b in range(3)]
        return gated, single

    gated, single = updates(w, jnp.asarray(x))
    expected = sum(float(db) * np.asarray(s, np.float64) for db, s in zip(d, single))
    np.testing.assert_allclose(gated, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_three_factor_with_a_stateful_rule_and_refuses_a_second_modulation(rng):
    x = jnp.asarray(rng.normal(size=(8, 5)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(5, 4)).astype(np.float32))
    acts = observe(Dense(), w, x)
    gated = three_factor(sparse_topk, TABLE)
    upd, state = jax.jit(lambda w, a, p, r: gated(w, a, p, r, state=sparse_topk_init(4), k=1))(w, acts, PREDICTED, RECEIVED)
    ref, ref_state = sparse_topk(w, acts, sparse_topk_init(4), k=1, modulation=jnp.asarray(EXPECTED_D))
    np.testing.assert_allclose(upd, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(state.threshold, ref_state.threshold, rtol=1e-6)
    with pytest.raises(ValueError, match="modulation"):
        three_factor(instar, TABLE)(w, acts, jnp.asarray(PREDICTED), jnp.asarray(RECEIVED), modulation=jnp.ones(8))


def test_probabilities_give_the_expected_dopamine_and_out_of_range_values_are_refused():
    """A probability of 0.3 is not "predicted": the dopamine of independent Bernoulli(p), Bernoulli(r)
    draws, the bilinear interpolation of the table (equal to it at 0/1)."""
    table = DopamineTable(unpredicted_reward=4.0, predicted_reward=0.5, no_reward=-0.25, omitted_reward=-1.0)
    p = jnp.asarray([0.3, 0.0, 1.0, 0.5])
    r = jnp.asarray([1.0, 0.2, 0.0, 0.5])
    expected = [0.7 * 4.0 + 0.3 * 0.5, 0.8 * -0.25 + 0.2 * 4.0, -1.0, 0.25 * (4.0 + 0.5 - 0.25 - 1.0)]
    np.testing.assert_allclose(dopamine_from_table(p, r, table), expected, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda p, r: dopamine_from_table(p, r, table))(p, r), expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r"^predicted: expected booleans, 0/1 or probabilities in \[0, 1\], got values in \[0.0, 2.0\]"):
        dopamine_from_table(jnp.asarray([0.0, 2.0]), jnp.asarray([1, 0]))
    with pytest.raises(ValueError, match=r"^received: expected booleans"):
        dopamine_from_table(jnp.asarray([True, False]), jnp.asarray([-1, 0]))
