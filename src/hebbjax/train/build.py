"""From a config to what training runs: Flax blocks, bound rules, optax chains, pruning masks.

The one place that reads :class:`~hebbjax.config.BlockConfig` for the network: the modules in
:mod:`hebbjax.nn` receive callables and plain values from here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from hebbjax import rules
from hebbjax.config import BlockConfig, ModelConfig, is_hebbian, parse_activation, parse_pool, rule_hyper
from hebbjax.nn import Block, HebbianConv, HebbianDense, HebbianNetwork, apply_activation, pool2d
from hebbjax.nn.network import identity
from hebbjax.nn.layers import positive_init, radius_init, torch_default_init, unit_norm_init

#: ``rule(layer_params, activations, state, axis_name=..., modulation=...) -> (updates, state)``
BoundRule = Callable[..., tuple[Any, Any]]


def kernel_init(b: BlockConfig) -> Callable:
    if b.init == "unit":
        return unit_norm_init
    if b.init == "positive":
        return positive_init(b.init_offset)
    if b.rule == "bp":  # a BP baseline starts like PyTorch's nn.Conv2d / nn.Linear
        return torch_default_init
    return radius_init(b.radius, gaussian=b.input_norm == "batchnorm")


def activation(spec: str | None, key: str = "activation") -> Callable | None:
    """``"triangle(0.7)"`` -> the activation function (None for no spec)."""
    if spec is None:
        return None
    return functools.partial(apply_activation, *parse_activation(spec, key))


def _power_after_pool(x: jax.Array, pool: Callable, power: float) -> jax.Array:
    return pool(x) ** power


def activation_and_pool(b: BlockConfig, rule_reads_output: bool) -> tuple[Callable, Callable | None]:
    """The block's activation and pool functions.

    A rectified power before a max pool (``triangle(p)``, ``repu(p)``) is raised after the pool:
    ``max_i relu(u_i)**p == (max_i relu(u_i))**p`` because ``x**p`` is non-decreasing on ``x >= 0``
    (so bit for bit, XLA's float32 ``pow`` being non-decreasing too), with a quarter of the powers
    after SoftHebb's max(4,2,1). Not when the rule reads the activation itself, nor when gradients
    flow through the block (a tie that rounding makes could route them to another input)."""
    pool = parse_pool(b.pool)
    pool_fn = None if pool is None else functools.partial(pool2d, pool[0], kernel=pool[1], stride=pool[2], padding=pool[3])
    if b.activation is None:
        return identity, pool_fn
    name, power = parse_activation(b.activation)
    if name in ("triangle", "repu") and power != 1 and pool is not None and pool[0] == "max" and not rule_reads_output \
            and b.rule != "bp":
        return (functools.partial(apply_activation, name, 1.0),
                functools.partial(_power_after_pool, pool=pool_fn, power=power))
    return activation(b.activation), pool_fn


def block(b: BlockConfig, matmul_dtype: str = "float32") -> Block:
    """The Flax block of one block config (``matmul_dtype``: ``model.matmul_dtype``)."""
    patch_sum = b.patch_sum_to if b.input_norm == "patch_sum" else None
    common = dict(use_bias=b.bias, log_weight=b.neuron == "log_weight", patch_sum_to=patch_sum, kernel_init=kernel_init(b),
                  frozen=b.rule != "bp", matmul_dtype=matmul_dtype)
    if b.layer == "conv":
        layer = functools.partial(HebbianConv, b.channels, b.kernel, b.stride, b.padding, b.padding_mode, b.dilation,
                                  b.groups, implementation=b.implementation, **common)
    else:
        layer = functools.partial(HebbianDense, b.channels, **common)
    spec = rules.RULES.get(b.rule)
    stateful = spec is not None and spec.init_state is not None
    act, pool = activation_and_pool(b, spec is not None and spec.given_y)
    return Block(
        layer=layer,
        input_norm="none" if b.input_norm == "patch_sum" else b.input_norm,
        dropout=b.dropout,
        pre_triangle=b.pre_triangle,
        activation=act,
        pool=pool,
        post_pool_activation=activation(b.post_pool_activation),
        flatten=b.flatten,
        plastic=spec is not None,
        y_is_output=spec is not None and spec.given_y,
        rule_state=functools.partial(spec.init_state, b.channels) if stateful else None,
        output_shift=spec.output_shift if stateful and b.threshold_in_output else None,
        explore=b.explore,
    )


def network(model: ModelConfig, num_classes: int, axis_name: str | None = None, whiten: bool = False) -> HebbianNetwork:
    """The network of a (resolved, :func:`hebbjax.config.resolve`) model config; ``whiten``: ZCA
    first (``data.whiten: zca``)."""
    return HebbianNetwork(tuple(block(b, model.matmul_dtype) for b in model.blocks), num_classes, model.classifier_dropout, axis_name, whiten)


def plastic_blocks(blocks: Sequence[BlockConfig]) -> tuple[int, ...]:
    """Indices of the blocks trained by a Hebbian rule."""
    return tuple(i for i, b in enumerate(blocks) if is_hebbian(b))


def bound_rule(b: BlockConfig) -> BoundRule:
    """The block's registered rule with its hyper-parameters bound: its explicit update, or minus
    the gradient of its surrogate loss (``rule_form: loss``)."""
    spec = rules.RULES[b.rule]
    return functools.partial(spec.update_by_loss if b.rule_form == "loss" else spec.update, hyper=rule_hyper(b))


def dopamine_gate(b: BlockConfig) -> Callable | None:
    """``gate(predicted, received) -> dopamine per sample`` of a block's ``dopamine`` config (None: not gated)."""
    d = b.dopamine
    if not d.enabled:
        return None
    if d.map == "linear":
        return lambda p, r: rules.dopamine_linear(rules.reward_prediction_error(p, r), d.unpredicted_reward, d.predicted_reward)
    table = rules.DopamineTable(d.unpredicted_reward, d.predicted_reward, d.no_reward, d.omitted_reward)
    return functools.partial(rules.dopamine_from_table, table=table)


def transform(b: BlockConfig, total_steps: int, mask: Any = None) -> optax.GradientTransformation:
    """The block's update post-processing: max-abs step normalisation, learning rate (norm-dependent,
    constant or linearly decaying to 0 over ``total_steps``), pruning mask, unit norm, positivity,
    burn-in (no update for the phase's first ``burn_in`` steps)."""
    chain = []
    if b.normalize_step:
        chain.append(rules.scale_by_max_abs())
    if b.lr_schedule == "norm":
        chain.append(rules.scale_by_norm_dependent_lr(b.lr, b.lr_power))
    elif b.lr_schedule == "constant":
        chain.append(optax.scale(b.lr))
    else:
        chain.append(optax.scale_by_schedule(optax.linear_schedule(b.lr, 0.0, max(total_steps, 1))))
    if mask is not None:
        chain.append(rules.mask_weights(mask))
    if b.unit_norm:
        chain.append(rules.normalize_weights())
    if b.positive:
        chain.append(rules.clip_positive(1e-10) if b.positivity == "clip" else rules.skip_nonpositive_neurons())
    if b.burn_in:
        chain.append(rules.burn_in(b.burn_in))
    return optax.chain(*chain)


def pruning_masks(blocks: Sequence[BlockConfig], params: dict, key: jax.Array) -> dict[int, Any]:
    """Fixed random masks for Hebbian blocks with ``prune > 0`` (same pytree as the layer params)."""
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


def initial_projection(blocks: Sequence[BlockConfig], params: dict) -> dict:
    """Initial weights on the constraint sets of their blocks: unit-norm neurons (after the pruning
    mask, as Miconi 2021 initialises: masked, then normalised)."""
    params = dict(params)
    for i, b in enumerate(blocks):
        if b.unit_norm and is_hebbian(b):
            name = f"block_{i}"
            kernel = params[name]["layer"]["kernel"]
            params[name] = {**params[name], "layer": {**params[name]["layer"], "kernel": kernel / (rules.neuron_norms(kernel) + 1e-12)}}
    return params
