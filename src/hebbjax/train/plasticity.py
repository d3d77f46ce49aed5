"""The Hebbian part of a training step: rule -> cross-device sum -> optax chain -> apply."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from hebbjax.train.build import BoundRule
from hebbjax.train.parallel import AXIS, psum


def all_finite(tree: Any) -> jax.Array:
    """True when every leaf of ``tree`` is free of NaN and inf: ``isfinite(sum(a * 0))``.

    ``a * 0`` is 0 where ``a`` is finite and NaN where it is NaN or inf, and a sum of zeros cannot
    overflow, so this is exactly ``all(isfinite(a))``; on CPU it is one reduction pass where
    ``all(isfinite(a))`` writes a boolean array and reduces it in several (2x faster on conv3's
    21 MB update). Not ``max(abs(a))``: XLA's CPU max reduction skips NaN."""
    return jnp.all(jnp.asarray([jnp.isfinite(jnp.sum(leaf * 0)) for leaf in jax.tree_util.tree_leaves(tree)]))


def hebbian_updates(
    rules: Mapping[int, BoundRule],
    transforms: Mapping[int, optax.GradientTransformation],
    params: dict,
    rule_state: dict,
    opt_states: dict,
    hebbian: dict,
    axis_name: str | None = AXIS,
    modulations: Mapping[int, jax.Array] | None = None,
    valid: jax.Array | None = None,
) -> tuple[dict, dict, dict, jax.Array]:
    """One Hebbian step for the blocks in ``rules`` from the activations a forward pass sowed.

    Per block i: local rule update (each sample weighted by ``modulations[i]`` when given, e.g.
    dopamine, and padding, ``valid`` False, by 0) -> ``psum`` across devices (the global batch
    sum) -> optax chain ``transforms[i]``
    (max-abs normalisation, learning rate, masks...) -> ``optax.apply_updates``. ``opt_states`` is
    keyed ``block_<i>``. Returns the new params, rule state, optimiser states and a flag that
    every update was finite.
    """
    modulations = modulations or {}
    params, rule_state, opt_states = dict(params), dict(rule_state), dict(opt_states)
    finite = jnp.array(True)
    for i, rule in rules.items():
        name = f"block_{i}"
        layer = params[name]["layer"]
        dw, new_rs = rule(layer, hebbian[name]["activations"], rule_state.get(name), axis_name=axis_name,
                          modulation=modulations.get(i), valid=valid)
        if axis_name is not None:
            dw = psum(dw, axis_name)
        finite = finite & all_finite(dw)
        updates, opt_states[name] = transforms[i].update(dw, opt_states[name], layer)
        params[name] = {**params[name], "layer": optax.apply_updates(layer, updates)}
        if new_rs is not None:
            rule_state[name] = new_rs
    return params, rule_state, opt_states, finite
