"""The seeds' update post-processing as optax transformations (SoftHebb, Journé et al. ICLR 2023;
Miconi 2021; Holca-Lamarre's hebbianCNN). Per-neuron operations act on the last axis of every leaf with ndim >= 2."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hebbjax.rules import (
    clip_positive,
    mask_weights,
    neuron_norms,
    normalize_weights,
    random_pruning_mask,
    scale_by_max_abs,
    scale_by_norm_dependent_lr,
    skip_nonpositive_neurons,
)


_mask = jax.jit(random_pruning_mask, static_argnums=(1, 2))


def _apply(tx, params, updates):
    """One ``tx.update`` then ``optax.apply_updates``, jitted."""

    @jax.jit
    def run(params, updates):
        new_updates, _ = tx.update(updates, tx.init(params), params)
        return new_updates, optax.apply_updates(params, new_updates)

    return run(params, updates)


@pytest.fixture
def layer(rng):
    """A dense kernel, a conv kernel and a bias with random updates of very different scales."""
    params = {
        "dense": jnp.asarray(rng.normal(size=(5, 4)).astype(np.float32)),
        "conv": jnp.asarray(rng.normal(size=(3, 3, 2, 4)).astype(np.float32) * 2),
        "bias": jnp.asarray(rng.normal(size=(4,)).astype(np.float32)),
    }
    updates = {
        "dense": jnp.asarray(rng.normal(size=(5, 4)).astype(np.float32) * 30),
        "conv": jnp.asarray(rng.normal(size=(3, 3, 2, 4)).astype(np.float32) * 1e-3),
        "bias": jnp.asarray(rng.normal(size=(4,)).astype(np.float32)),
    }
    return params, updates


def test_scale_by_max_abs_gives_unit_max_per_leaf(layer):
    params, updates = layer
    out, _ = _apply(scale_by_max_abs(), params, updates)
    for name in updates:
        u = np.asarray(updates[name], np.float64)
        np.testing.assert_allclose(out[name], u / np.abs(u).max(), rtol=1e-6, err_msg=name)
        assert np.abs(np.asarray(out[name])).max() == pytest.approx(1.0, rel=1e-6)
    zero, _ = _apply(scale_by_max_abs(), params, jax.tree_util.tree_map(jnp.zeros_like, updates))
    for leaf in jax.tree_util.tree_leaves(zero):  # an all-zero update stays zero (no 0/0)
        assert np.all(np.asarray(leaf) == 0)


@pytest.mark.parametrize("power, p", [(0.5, 2.0), (0.75, 2.0), (0.5, 1.0)])
def test_norm_dependent_lr_per_neuron_formula(layer, power, p):
    """eta_j = lr * (| ||w_j||_p - 1 | + 1e-10) ** power, from the params *before* the update;
    1-d leaves get the plain lr."""
    params, updates = layer
    lr = 0.08
    out, _ = _apply(scale_by_norm_dependent_lr(lr, power=power, p=p), params, updates)
    for name in ("dense", "conv"):
        w = np.asarray(params[name], np.float64)
        norms = np.sum(np.abs(w) ** p, axis=tuple(range(w.ndim - 1))) ** (1 / p)
        eta = lr * (np.abs(norms - 1) + 1e-10) ** power
        np.testing.assert_allclose(out[name], np.asarray(updates[name]) * eta, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(out["bias"], lr * np.asarray(updates["bias"]), rtol=1e-6)


def test_neuron_norms_and_no_learning_at_norm_one(layer):
    params, updates = layer
    w = np.asarray(params["conv"], np.float64)
    norms = jax.jit(lambda k: (neuron_norms(k), neuron_norms(k, 1.0)))(params["conv"])
    np.testing.assert_allclose(norms[0], np.sqrt((w**2).sum(axis=(0, 1, 2))), rtol=1e-5)
    np.testing.assert_allclose(norms[1], np.abs(w).sum(axis=(0, 1, 2)), rtol=1e-5)
    # A neuron of norm 1 does not learn (its lr is lr * 1e-10 ** power, up to float32 rounding of the norm).
    w1 = np.asarray(params["dense"], np.float64)
    w1 = jnp.asarray((w1 / np.linalg.norm(w1, axis=0)).astype(np.float32))
    out1, _ = _apply(scale_by_norm_dependent_lr(0.08, power=0.5), {"dense": w1}, {"dense": updates["dense"]})
    assert np.abs(np.asarray(out1["dense"])).max() < 1e-3 * np.abs(np.asarray(updates["dense"])).max()


def test_normalize_weights_gives_unit_norms(layer):
    params, updates = layer
    out, new = _apply(normalize_weights(), params, updates)
    for name in ("dense", "conv"):
        new_w = np.asarray(new[name], np.float64)
        np.testing.assert_allclose(np.linalg.norm(new_w.reshape(-1, new_w.shape[-1]), axis=0), 1.0, rtol=1e-5)
        # Same direction as w + dw.
        target = np.asarray(params[name], np.float64) + np.asarray(updates[name], np.float64)
        target = target / np.linalg.norm(target.reshape(-1, target.shape[-1]), axis=0)
        np.testing.assert_allclose(new[name], target, rtol=0, atol=1e-5)
    np.testing.assert_allclose(out["bias"], updates["bias"], rtol=1e-6)  # biases are not normalised


def test_mask_weights_keeps_masked_weights_exactly_zero(rng):
    """Miconi's pruning chain: SGD step, fixed mask, renormalise; masked weights stay exactly 0
    over many steps while the others keep learning, and every neuron keeps unit norm."""
    w0 = rng.normal(size=(5, 4)).astype(np.float32)
    mask = np.asarray(_mask(jax.random.PRNGKey(0), (5, 4), 0.5))
    assert 0 < mask.sum() < 20
    params = {"kernel": jnp.asarray(w0 * mask), "bias": jnp.zeros(4)}
    masks = {"kernel": jnp.asarray(mask), "bias": jnp.ones(4)}
    tx = optax.chain(optax.scale(0.1), mask_weights(masks), normalize_weights())
    ups = jnp.asarray(rng.normal(size=(20, 5, 4)).astype(np.float32))

    def step(carry, u):
        params, state = carry
        updates, state = tx.update({"kernel": u, "bias": jnp.ones(4)}, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), ups))(params)
    kernel, m = np.asarray(params["kernel"]), mask
    assert np.all(kernel[m == 0] == 0.0)
    assert np.all(kernel[m == 1] != 0.0)
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0, rtol=1e-5)
    np.testing.assert_allclose(params["bias"], 20 * 0.1, rtol=1e-5)  # mask 1: bias learns

    # One step by hand: w <- (w + dw) * mask.
    out, new = _apply(mask_weights({"k": jnp.asarray(mask)}), {"k": jnp.asarray(w0)}, {"k": ups[0]})
    np.testing.assert_allclose(new["k"], (w0 + np.asarray(ups[0])) * m, rtol=1e-6, atol=1e-6)


def test_random_pruning_mask():
    mask = np.asarray(_mask(jax.random.PRNGKey(3), (100, 50), 0.99))
    assert set(np.unique(mask).tolist()) <= {0.0, 1.0}
    assert 0.005 < mask.mean() < 0.015  # keeps ~1% (Miconi's layers 2-3)
    np.testing.assert_array_equal(mask, _mask(jax.random.PRNGKey(3), (100, 50), 0.99))
    assert not np.array_equal(mask, _mask(jax.random.PRNGKey(4), (100, 50), 0.99))
    assert np.all(np.asarray(_mask(jax.random.PRNGKey(3), (100, 50), 0.0)) == 1)
    with pytest.raises(ValueError, match="prob_removed"):
        random_pruning_mask(jax.random.PRNGKey(0), (3, 3), prob_removed=1.0)


def test_clip_positive():
    """w <- max(w + dw, min_value) (Holca-Lamarre 2016)."""
    w = jnp.asarray([[1.0, 2.0], [0.5, 3.0]])
    dw = jnp.asarray([[-2.0, 0.5], [-0.4, -3.0]])
    _, new = _apply(clip_positive(1e-3), {"k": w}, {"k": dw})
    # clipped weights: the nearest float at or above the bound that w + dw reaches (one float
    # spacing of w: 2.4e-7 at w = 3)
    np.testing.assert_allclose(new["k"], [[1e-3, 2.5], [0.1, 1e-3]], rtol=1e-4, atol=2.5e-7)
    assert np.all(np.asarray(new["k"]) >= np.float32(1e-3))


def test_clip_positive_keeps_weights_strictly_positive_after_apply_updates():
    """w + (max(w + dw, m) - w) rounds to exactly 0 in float32 when m is tiny next to w (m = 1e-10,
    Holca-Lamarre's weights ~38); the projection corrects the delta, so log(w) stays finite."""
    w = {"k": jnp.asarray([[38.5, 2.0], [1.0, 0.5]])}
    dw = {"k": jnp.asarray([[-40.0, 0.1], [-2.0, -0.6]])}
    _, new = _apply(clip_positive(), w, dw)
    assert np.all(np.asarray(new["k"]) >= 1e-10), new["k"]
    assert np.all(np.isfinite(np.log(np.asarray(new["k"]))))
    # weights that stay above the bound take their step as before
    np.testing.assert_allclose(np.asarray(new["k"])[0, 1], 2.1, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new["k"])[1, 0], 1e-10, rtol=0, atol=1e-7)  # at most one float above the bound


def test_clip_positive_holds_for_every_float32_weight_scale():
    rng = np.random.default_rng(0)
    w = jnp.asarray(np.exp(rng.uniform(-20, 10, (64, 64))).astype(np.float32))
    dw = -2.0 * w * jnp.asarray(rng.uniform(0.4, 1.0, (64, 64)).astype(np.float32))  # many land below zero
    for m in (1e-10, 1e-6, 0.5):
        _, new = _apply(clip_positive(m), {"k": w}, {"k": dw})
        assert float(jnp.min(new["k"])) >= np.float32(m)
        clipped = np.asarray(w + dw) < m
        assert clipped.any() and (~clipped).any()
        np.testing.assert_allclose(np.asarray(new["k"])[~clipped], np.asarray(w + dw)[~clipped], rtol=1e-6)


def test_skip_nonpositive_neurons():
    """A neuron (column) whose step would make any of its weights <= 0 skips the whole step;
    the others take it in full (hebbianCNN HEAD)."""
    w = jnp.asarray([[1.0, 2.0, 1.0], [0.5, 3.0, 1.0]])
    dw = jnp.asarray([[-2.0, 0.5, -1.0], [0.1, -1.0, 0.2]])  # column 0 -> -1 < 0; column 2 -> exactly 0
    out, new = _apply(skip_nonpositive_neurons(), {"k": w, "b": jnp.ones(2)}, {"k": dw, "b": -5 * jnp.ones(2)})
    np.testing.assert_array_equal(np.asarray(out["k"])[:, [0, 2]], 0.0)
    np.testing.assert_allclose(new["k"], [[1.0, 2.5, 1.0], [0.5, 2.0, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(new["b"], [-4.0, -4.0])  # 1-d leaves pass through


def test_transforms_that_need_params_say_so(layer):
    _, updates = layer
    for tx in (scale_by_norm_dependent_lr(0.1), normalize_weights(), mask_weights(updates), clip_positive()):
        with pytest.raises(ValueError, match="params"):
            tx.update(updates, tx.init(updates))
