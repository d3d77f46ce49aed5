"""Rules are pure functions: ``jit(rule) == rule`` run op by op, and ``vmap`` over independent layers
or data sets equals a Python loop."""

from __future__ import annotations

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
    observe,
    oja,
    soft_wta,
    softhebb,
    sparse_topk,
    sparse_topk_init,
)

RULES = {
    "hebb": lambda p, a: hebb(p, a),
    "instar": lambda p, a: instar(p, a),
    "oja": lambda p, a: oja(p, a),
    "softhebb": lambda p, a: softhebb(p, a, t_invert=2.0),
    "soft_wta": lambda p, a: soft_wta(p, a, t_invert=0.5),
    "hard_wta": lambda p, a: hard_wta(p, a),
    "krotov": lambda p, a: krotov(p, a, rank=2, delta=0.4),
    "sparse_topk": lambda p, a: sparse_topk(p, a, sparse_topk_init(a.u.shape[-1]), k=2)[0],
}


def _close(a, b, rtol=1e-5):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * max(np.abs(b).max(), 1e-30))


def test_jit_equals_op_by_op_dense(rng):
    """A rule compiled (the rules are ``jax.jit``-decorated) and run op by op under
    ``jax.disable_jit()`` gives the same update. (The conv forms are compared with numpy in
    test_rules_conv.py.)"""
    x = jnp.asarray(rng.normal(size=(8, 5)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(5, 4)).astype(np.float32))
    m = jnp.asarray(rng.normal(size=8).astype(np.float32))
    acts = observe(Dense(), w, x)
    # (Op-by-op execution compiles every primitive separately, which is slow on CPU, so one call
    # covers the shared code paths: krotov with a modulation runs the winner mask, the top-k
    # ranking, the VJP correlation and the modulated y*u decay. Every rule's jitted output is
    # checked against numpy in test_rules_reference.py.)
    jitted = {"krotov_modulated": krotov(w, acts, rank=2, delta=0.4, modulation=m)}
    with jax.disable_jit():
        eager = {"krotov_modulated": krotov(w, acts, rank=2, delta=0.4, modulation=m)}
    for name in jitted:
        assert np.abs(np.asarray(jitted[name])).max() > 0, name
        _close(jitted[name], eager[name])


@pytest.mark.parametrize("rule_name", ["softhebb", "krotov"])
def test_vmap_over_independent_layers_equals_a_loop(rng, rule_name):
    """A stack of L independent layers, each with its own data: vmap == Python loop."""
    rule = RULES[rule_name]
    ws = rng.normal(size=(3, 5, 4)).astype(np.float32)
    xs = rng.normal(size=(3, 8, 5)).astype(np.float32)
    batched = np.asarray(jax.vmap(lambda w, x: rule(w, observe(Dense(), w, x)))(ws, xs))
    for i in range(3):
        w, x = jnp.asarray(ws[i]), jnp.asarray(xs[i])
        _close(batched[i], rule(w, observe(Dense(), w, x)))


def test_vmap_over_datasets_and_stateful_rule(rng):
    """One layer, several data sets (in_axes=(None, 0)); and sparse_topk with a stack of states."""
    w = jnp.asarray(rng.normal(size=(5, 4)).astype(np.float32))
    xs = rng.normal(size=(3, 8, 5)).astype(np.float32)
    thetas = rng.normal(size=(3, 4)).astype(np.float32) * 0.5

    def both(w, x, theta):
        acts = observe(Dense(), w, x)
        upd, state = sparse_topk(w, acts, sparse_topk_init(4)._replace(threshold=theta), k=1, homeostasis_rate=0.3)
        return instar(w, acts), upd, state.threshold

    batched = jax.device_get(jax.vmap(both, in_axes=(None, 0, 0))(w, xs, thetas))
    single_jit = jax.jit(both)
    for i in range(3):
        single = single_jit(w, xs[i], thetas[i])
        for got, expected in zip(batched, single):
            _close(got[i], expected)


def test_rules_accept_traced_hyperparameters(rng):
    """t_invert is a traced argument: new values reuse the compiled rule, and it can be vmapped."""
    x = jnp.asarray(rng.normal(size=(8, 5)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(5, 4)).astype(np.float32))
    acts = observe(Dense(), w, x)
    ts = np.asarray([0.5, 1.0, 4.0], np.float32)
    batched = np.asarray(jax.vmap(lambda t: softhebb(w, acts, t_invert=t))(ts))
    _close(batched[0], softhebb(w, acts, t_invert=0.5))
    cache_size = getattr(softhebb, "_cache_size", None)  # a jax.jit introspection helper
    before = cache_size() if cache_size else None
    for i, t in enumerate([0.5, 1.0, 4.0]):
        _close(batched[i], softhebb(w, acts, t_invert=t))
    if cache_size:
        assert cache_size() == before, "a new t_invert value recompiled the rule"
    assert not np.allclose(batched[0], batched[2])
