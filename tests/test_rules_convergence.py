"""What the rules converge to when iterated (the properties the rules are chosen for).

Each test runs its whole training loop inside one ``jax.lax.scan`` under ``jit``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hebbjax.rules import (
    Dense,
    instar,
    neuron_norms,
    observe,
    oja,
    scale_by_max_abs,
    scale_by_norm_dependent_lr,
    softhebb,
    winner_mask,
)


def test_oja_converges_to_unit_norm_first_principal_component():
    """Oja's rule with a linear neuron (y = u) on zero-mean Gaussian data with a known covariance:
    every neuron (they do not interact) ends at +-PC1, the top eigenvector, with norm 1."""
    rng = np.random.default_rng(0)
    d, steps, batch, lr = 5, 1500, 16, 0.002
    q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    eigvals = np.array([4.0, 2.0, 1.0, 0.5, 0.25])
    cov = q @ np.diag(eigvals) @ q.T
    pc1 = q[:, 0]
    xs = rng.multivariate_normal(np.zeros(d), cov, size=(steps, batch)).astype(np.float32)
    w0 = (0.3 * rng.normal(size=(d, 3))).astype(np.float32)
    assert np.all(np.abs(pc1 @ w0) / np.linalg.norm(w0, axis=0) < 0.9), "test setup: start away from PC1"

    def step(w, x):
        return w + lr * oja(w, observe(Dense(), w, x)), None

    w, _ = jax.jit(lambda w0: jax.lax.scan(step, w0, xs))(jnp.asarray(w0))
    w = np.asarray(w, np.float64)
    norms = np.linalg.norm(w, axis=0)
    cosines = np.abs(pc1 @ w) / norms
    assert np.all(cosines > 0.995), cosines
    np.testing.assert_allclose(norms, 1.0, atol=0.02)


def test_instar_winner_moves_to_the_centroid_of_the_inputs_it_wins():
    """Instar with a binary winner signal (nearest prototype wins: argmax_j <x, w_j> - ||w_j||^2 / 2)
    is online k-means: every winner converges to the centroid of the inputs it wins, and a neuron
    that never wins never moves (its update is exactly zero)."""
    rng = np.random.default_rng(1)
    d, per_cluster, lr, steps = 4, 30, 0.002, 400
    centers = np.array([[4.0, 0, 0, 0], [0, 4.0, 0, 0], [0, 0, 4.0, 0]])
    x = np.concatenate([c + rng.normal(size=(per_cluster, d)) for c in centers]).astype(np.float32)
    # One prototype per cluster, started at one of its samples; a 4th far away that never wins.
    w0 = np.stack([x[0], x[per_cluster], x[2 * per_cluster], np.array([-20.0, -20, -20, -20])], axis=1).astype(np.float32)

    def step(w, _):
        y = winner_mask(x @ w - 0.5 * jnp.sum(w * w, axis=0))
        return w + lr * instar(w, observe(Dense(), w, jnp.asarray(x), y)), jnp.argmax(y, axis=1)

    w, winners = jax.jit(lambda w0: jax.lax.scan(step, w0, None, length=steps))(jnp.asarray(w0))
    w, winners = np.asarray(w, np.float64), np.asarray(winners)
    final = winners[-1]
    assert np.all(winners[-100:] == final), "the assignment of inputs to winners should have settled"
    assert set(final.tolist()) == {0, 1, 2}
    centroids = np.stack([x[final == j].astype(np.float64).mean(0) for j in range(3)])
    np.testing.assert_allclose(w[:, :3].T, centroids, atol=1e-4)
    np.testing.assert_array_equal(w[:, 3], w0[:, 3])


def test_softhebb_with_max_abs_and_norm_dependent_lr_drives_every_norm_to_one():
    """SoftHebb's full step (ICLR 2023): ``optax.chain(scale_by_max_abs(), scale_by_norm_dependent_lr)``.
    Starting from norms 0.3 ... 5, every neuron's norm converges to 1.

    The data are noisy samples of K orthogonal directions, one per neuron, so that every neuron wins
    some inputs. (A neuron that never wins is anti-Hebbian on every sample; with its norm below 1
    it then shrinks: <w, dw> = (sum y u)(1 - ||w||^2) with sum y u < 0. That is SoftHebb's maths,
    see test_rules_reference.test_y_u_decay_drives_norm_to_one, so isotropic noise is not used.)
    """
    rng = np.random.default_rng(0)
    d, k, batch, steps = 16, 8, 64, 300
    directions = np.linalg.qr(rng.normal(size=(d, d)))[0][:, :k]
    which = rng.integers(0, k, size=(steps, batch))
    xs = (directions.T[which] + 0.3 * rng.normal(size=(steps, batch, d))).astype(np.float32)
    w0 = directions + 0.3 * rng.normal(size=(d, k)) / np.sqrt(d)
    w0 = (w0 / np.linalg.norm(w0, axis=0) * np.linspace(0.3, 5.0, k)).astype(np.float32)
    tx = optax.chain(scale_by_max_abs(), scale_by_norm_dependent_lr(0.1, power=0.5))

    def step(carry, x):
        w, opt_state = carry
        updates = softhebb(w, observe(Dense(), w, x), t_invert=1.0)
        updates, opt_state = tx.update(updates, opt_state, w)
        return (optax.apply_updates(w, updates), opt_state), None

    (w, _), _ = jax.jit(lambda w0: jax.lax.scan(step, (w0, tx.init(w0)), xs))(jnp.asarray(w0))
    norms = np.asarray(neuron_norms(w))
    assert np.all(np.abs(norms - 1.0) < 0.02), norms
