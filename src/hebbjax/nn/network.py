"""Networks declared as a list of blocks (:class:`hebbjax.config.BlockConfig`).

Variables of a :class:`HebbianNetwork`:

- ``params``: ``block_<i>/layer/kernel`` (``bias``) and ``classifier/kernel, bias``;
- ``batch_stats``: the affine-free input BatchNorm of each block;
- ``rule_state``: per-block state of stateful rules (sparse_topk's thresholds);
- ``hebbian`` (written by a forward pass, ``mutable=["hebbian"]``): ``block_<i>/activations``,
  the :class:`~hebbjax.rules.Activations` the block's rule needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hebbjax.config import BlockConfig, parse_activation, parse_pool
from hebbjax.nn.layers import (
    Dropout,
    HebbianConv,
    HebbianDense,
    apply_activation,
    positive_init,
    pool2d,
    radius_init,
    torch_default_init,
    triangle,
    unit_norm_init,
)
from hebbjax.rules.linear import Array

#: Rules that take the block's activation as the post-synaptic activity y.
GIVEN_Y_RULES = ("hebb", "instar", "oja")


def is_hebbian(block: BlockConfig) -> bool:
    return block.rule not in ("bp", "none")


def kernel_init(block: BlockConfig):
    if block.init == "unit":
        return unit_norm_init
    if block.init == "positive":
        return positive_init(block.init_offset)
    if block.rule == "bp":  # a BP baseline starts like PyTorch's nn.Conv2d / nn.Linear
        return torch_default_init
    return radius_init(block.radius, gaussian=block.input_norm == "batchnorm")


def standardize(x: Array, eps: float = 1e-5) -> Array:
    """Per-sample standardisation over all non-batch axes (Miconi 2021)."""
    axes = tuple(range(1, x.ndim))
    return (x - jnp.mean(x, axes, keepdims=True)) / (jnp.std(x, axes, keepdims=True) + eps)


class Block(nn.Module):
    """input norm -> dropout -> Hebbian/BP layer -> activation -> pool -> post-pool activation."""

    cfg: BlockConfig
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        c = self.cfg
        if c.input_norm == "batchnorm":
            # SoftHebb: BatchNorm2d(affine=False), PyTorch momentum 0.1 == Flax momentum 0.9.
            x = nn.BatchNorm(
                use_running_average=not train, use_bias=False, use_scale=False, momentum=0.9,
                epsilon=1e-5, axis_name=self.axis_name, name="input_norm",
            )(x)
        elif c.input_norm == "standardize":
            x = standardize(x)
        if c.dropout > 0:
            x = Dropout(c.dropout)(x, deterministic=not train)
        frozen = c.rule != "bp"  # only BP blocks receive gradients
        common = dict(use_bias=c.bias, log_weight=c.neuron == "log_weight", kernel_init=kernel_init(c), frozen=frozen, name="layer")
        if c.layer == "conv":
            acts = HebbianConv(
                c.channels, c.kernel, c.stride, c.padding, c.padding_mode, c.dilation, c.groups,
                patch_sum_to=c.patch_sum_to if c.input_norm == "patch_sum" else None, implementation=c.implementation, **common,
            )(x)
        else:
            acts = HebbianDense(c.channels, **common)(x)
        u = triangle(acts.u) if c.pre_triangle else acts.u
        out = u
        if c.rule == "sparse_topk":
            theta = self.variable("rule_state", "threshold", jnp.zeros, (c.channels,), jnp.float32)
            if c.threshold_in_output:
                out = u - theta.value
        name, param = parse_activation(c.activation)
        out = apply_activation(name, param, out)
        if is_hebbian(c):
            y = out if c.rule in GIVEN_Y_RULES else None
            self.sow("hebbian", "activations", acts._replace(u=u, y=y), reduce_fn=lambda _, new: new, init_fn=lambda: None)
        pool = parse_pool(c.pool)
        if pool is not None:
            out = pool2d(pool[0], out, *pool[1:])
        if c.post_pool_activation is not None:
            out = apply_activation(*parse_activation(c.post_pool_activation), out)
        if c.flatten:
            out = out.reshape(out.shape[0], -1)
        return out


class Classifier(nn.Module):
    """Flatten -> dropout -> linear (SoftHebb's classifier block; PyTorch default init)."""

    num_classes: int
    dropout: float = 0.5

    @nn.compact
    def __call__(self, features: Array, train: bool = False) -> Array:
        x = features.reshape(features.shape[0], -1)
        if self.dropout > 0:
            x = Dropout(self.dropout)(x, deterministic=not train)
        return nn.Dense(self.num_classes, kernel_init=torch_default_init, bias_init=_torch_bias_init(x.shape[-1]))(x)


def _torch_bias_init(fan_in: int):
    def init(key, shape, dtype=jnp.float32):
        bound = 1.0 / fan_in**0.5
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class HebbianNetwork(nn.Module):
    """Blocks followed by a linear classifier.

    ``__call__(x, train_blocks=(), upto=None, classify=True, train_classifier=False)``:
    blocks whose index is in ``train_blocks`` run in training mode (BatchNorm batch statistics
    and running-stat updates, dropout); the others in evaluation mode. ``upto`` stops after that
    many blocks (features of a prefix of the network); ``classify=False`` returns the features.
    """

    blocks: Sequence[BlockConfig]
    num_classes: int
    classifier_dropout: float = 0.5
    axis_name: str | None = None

    def setup(self) -> None:
        self.block_modules = [Block(b, self.axis_name, name=f"block_{i}") for i, b in enumerate(self.blocks)]
        self.classifier = Classifier(self.num_classes, self.classifier_dropout)

    def __call__(
        self, x: Array, train_blocks: Sequence[int] = (), upto: int | None = None,
        classify: bool = True, train_classifier: bool = False,
    ) -> Array:
        n = len(self.blocks) if upto is None else upto
        for i in range(n):
            x = self.block_modules[i](x, train=i in train_blocks)
        if classify and n == len(self.blocks):
            return self.classifier(x, train=train_classifier)
        return x


def build_network(blocks: Sequence[BlockConfig], num_classes: int, classifier_dropout: float = 0.5, axis_name: str | None = None) -> HebbianNetwork:
    return HebbianNetwork(tuple(blocks), num_classes, classifier_dropout, axis_name)
