"""From block configs to rule calls and optax chains, and the Hebbian part of a training step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from hebbjax import rules
from hebbjax.config import BlockConfig
from hebbjax.nn.network import is_hebbian
from hebbjax.train.parallel import AXIS


def rule_update(block: BlockConfig, layer_params: Any, acts: rules.Activations, rule_state: Any, axis_name: str | None = AXIS):
    """The block's rule: ``(updates, new_rule_state)``; updates are local sums over this device's
    shard (the caller reduces them across devices)."""
    if block.rule == "sparse_topk":
        state = rules.SparseTopKState(rule_state["threshold"])
        dw, state = rules.sparse_topk(
            layer_params, acts, state, k=block.k, homeostasis_rate=block.homeostasis_rate, axis_name=axis_name
        )
        return dw, {"threshold": state.threshold}
    fn = rules.RULES[block.rule]
    kwargs: dict[str, Any] = {}
    if block.rule in ("softhebb", "soft_wta"):
        kwargs["t_invert"] = block.t_invert
    elif block.rule == "krotov":
        kwargs.update(rank=block.rank, delta=block.delta)
    return fn(layer_params, acts, **kwargs), rule_state


def make_transform(block: BlockConfig, total_steps: int, mask: Any = None) -> optax.GradientTransformation:
    """The block's update post-processing: max-abs step normalisation, learning rate (norm-dependent,
    constant or linearly decaying to 0 over ``total_steps``), pruning mask, unit norm, positivity."""
    chain = []
    if block.normalize_step:
        chain.append(rules.scale_by_max_abs())
    if block.lr_schedule == "norm":
        chain.append(rules.scale_by_norm_dependent_lr(block.lr, block.lr_power))
    elif block.lr_schedule == "constant":
        chain.append(optax.scale(block.lr))
    else:
        chain.append(optax.scale_by_schedule(optax.linear_schedule(block.lr, 0.0, max(total_steps, 1))))
    if mask is not None:
        chain.append(rules.mask_weights(mask))
    if block.unit_norm:
        chain.append(rules.normalize_weights())
    if block.positive:
        chain.append(rules.clip_positive(1e-10))
    return optax.chain(*chain)


def pruning_masks(blocks: Sequence[BlockConfig], params: dict, key: jax.Array) -> dict[int, Any]:
    """Fixed random masks for blocks with ``prune > 0`` (same pytree as the layer params)."""
    masks = {}
    for i, b in enumerate(blocks):
        if b.prune > 0 and is_hebbian(b):
            layer = params[f"block_{i}"]["layer"]
            masks[i] = {
                k: (rules.random_pruning_mask(jax.random.fold_in(key, i), v.shape, b.prune) if v.ndim >= 2 else jnp.ones_like(v))
                for k, v in layer.items()
            }
    return masks


def apply_masks(params: dict, masks: dict[int, Any]) -> dict:
    params = dict(params)
    for i, m in masks.items():
        name = f"block_{i}"
        params[name] = {**params[name], "layer": jax.tree_util.tree_map(lambda w, mm: w * mm, params[name]["layer"], m)}
    return params


def hebbian_updates(
    blocks: Sequence[BlockConfig],
    plastic: Sequence[int],
    params: dict,
    rule_state: dict,
    opt_states: dict,
    transforms: dict,
    hebbian: dict,
    axis_name: str | None = AXIS,
) -> tuple[dict, dict, dict, jax.Array]:
    """One Hebbian step for the ``plastic`` blocks from the activations a forward pass sowed.

    Per block: local rule update -> ``psum`` across devices (the global batch sum) -> optax chain
    (max-abs normalisation, learning rate, masks...) -> ``optax.apply_updates``. Returns the new
    params, rule state, optimiser states and a flag that every update was finite.
    """
    params, rule_state, opt_states = dict(params), dict(rule_state), dict(opt_states)
    finite = jnp.array(True)
    for i in plastic:
        name = f"block_{i}"
        layer = params[name]["layer"]
        dw, new_rs = rule_update(blocks[i], layer, hebbian[name]["activations"], rule_state.get(name), axis_name)
        if axis_name is not None:
            dw = jax.lax.psum(dw, axis_name)
        finite = finite & jnp.all(jnp.asarray([jnp.all(jnp.isfinite(l)) for l in jax.tree_util.tree_leaves(dw)]))
        updates, opt_states[i] = transforms[i].update(dw, opt_states[i], layer)
        params[name] = {**params[name], "layer": optax.apply_updates(layer, updates)}
        if new_rs is not None:
            rule_state[name] = new_rs
    return params, rule_state, opt_states, finite
