"""Hebbian diagnostics, computed on the device from the state and a probe batch.

Per Hebbian block (SoftHebb's ``radius()``, ``convergence()``, ``stat_wta()`` list, and the other
systems'):

- ``radius_mean``, ``radius_std``: the neurons' weight norms ``|w_j|``;
- ``convergence``: ``mean_j | |w_j| - 1 |``; ``r1``: neurons with ``| |w_j| - 1 |`` below 1e-2
  (conv) or 5e-3 (dense);
- ``win_rate`` (per neuron): how often it is the winner (largest pre-activation, after the
  threshold of sparse_topk) over the probe batch's samples and positions (sums to 1);
  ``never_win``: neurons that win nothing; ``effective_neurons``: ``exp`` of the win rates' entropy;
- ``hebbian_fraction``: ``sum relu(y) / sum |y|`` of the rule's post-synaptic signal (1 when the
  rule has no anti-Hebbian part; SoftHebb's share of the winner);
- ``lr_mean``: the mean per-neuron learning rate of the block's schedule at this step;
- sparse_topk: ``firing_mean`` / ``firing_min`` / ``firing_max`` (rate of ``y = 1`` per neuron) and
  ``threshold_mean`` / ``threshold_std``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from hebbjax import rules
from hebbjax.config import BlockConfig, rule_hyper

if TYPE_CHECKING:
    from hebbjax.train.fit import Context
    from hebbjax.train.state import TrainState

Array = jax.Array


def signal(block: BlockConfig, activations: rules.Activations, state: Any) -> Array:
    """The post-synaptic signal ``y`` the block's rule learns from (its own competition, or the
    block's activation for the rules that take it)."""
    u, hyper = activations.u, rule_hyper(block)
    name = block.rule
    if name == "softhebb":
        return rules.softhebb_signal(u, hyper["t_invert"])
    if name == "soft_wta":
        return rules.soft_wta_signal(u, hyper["t_invert"])
    if name == "hard_wta":
        return rules.winner_mask(u)
    if name == "krotov":
        return rules.krotov_signal(u, hyper["rank"], hyper["delta"])
    if name == "sparse_topk":
        return rules.topk_binary_signal(u - state["threshold"], hyper["k"])
    return u if activations.y is None else activations.y


def learning_rate(block: BlockConfig, norms: Array, step: Array, total_steps: int) -> Array:
    """Mean per-neuron learning rate of the block's schedule (``build.transform``)."""
    if block.lr_schedule == "norm":
        return block.lr * jnp.mean((jnp.abs(norms - 1.0) + 1e-10) ** block.lr_power)
    if block.lr_schedule == "linear_decay":
        return block.lr * jnp.maximum(0.0, 1.0 - step / max(total_steps, 1))
    return jnp.asarray(block.lr, jnp.float32)


def block_diagnostics(block: BlockConfig, kernel: Array, activations: rules.Activations, state: Any, step: Array,
                      total_steps: int) -> dict[str, Array]:
    """The diagnostics of one block (module docstring)."""
    norms = rules.neuron_norms(kernel)
    dist = jnp.abs(norms - 1.0)
    tol = 5e-3 if block.layer == "dense" else 1e-2
    effective = activations.u - state["threshold"] if block.rule == "sparse_topk" else activations.u
    wins = rules.winner_mask(effective)
    win_rate = rules.per_neuron_sum(wins) / (wins.size // wins.shape[-1])
    entropy = -jnp.sum(jnp.where(win_rate > 0, win_rate * jnp.log(jnp.maximum(win_rate, 1e-30)), 0.0))
    y = signal(block, activations, state)
    out = {
        "radius_mean": norms.mean(), "radius_std": norms.std(), "convergence": dist.mean(), "r1": jnp.sum(dist < tol),
        "win_rate": win_rate, "never_win": jnp.sum(win_rate == 0), "effective_neurons": jnp.exp(entropy),
        "hebbian_fraction": jnp.sum(jax.nn.relu(y)) / jnp.maximum(jnp.sum(jnp.abs(y)), 1e-30),
        "lr_mean": learning_rate(block, norms, step, total_steps),
    }
    if block.rule == "sparse_topk":
        firing = rules.per_neuron_sum(y) / (y.size // y.shape[-1])
        out.update(firing_mean=firing.mean(), firing_min=firing.min(), firing_max=firing.max(),
                   threshold_mean=state["threshold"].mean(), threshold_std=state["threshold"].std())
    return out


def diagnostics(ctx: Context, state: TrainState, images: Array, *, blocks: tuple[int, ...], total_steps: int,
                inputs: Any) -> dict[str, dict[str, Array]]:
    """``{"block_<i>": block diagnostics}`` for ``blocks`` on a probe batch of ``images`` mapped by
    ``inputs`` (the blocks in training mode, as the rule sees them; nothing is updated)."""
    model = ctx.model.clone(axis_name=None)
    _, mut = model.apply(state.variables, inputs(images), train_blocks=blocks, upto=max(blocks) + 1, classify=False,
                         mutable=["batch_stats", "hebbian"], rngs={"dropout": jax.random.key(0, impl="rbg")})
    out = {}
    for i in blocks:
        name = f"block_{i}"
        out[name] = block_diagnostics(ctx.cfg.model.blocks[i], state.params[name]["layer"]["kernel"],
                                      mut["hebbian"][name]["activations"], state.rule_state.get(name, {}), state.step, total_steps)
    return out
