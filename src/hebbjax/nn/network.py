"""Networks as a sequence of blocks: input norm -> dropout -> layer -> activation -> pool.

A :class:`Block` receives what it computes as callables (its layer's constructor, activation,
pool); it parses nothing. :func:`hebbjax.train.build.network` makes blocks from a config, and your
own code can write them directly::

    Block(layer=functools.partial(HebbianConv, 32, kernel_size=3, padding=1),
          activation=functools.partial(triangle, power=0.7), pool=functools.partial(pool2d, "max", kernel=2, stride=2, padding=0),
          plastic=True)

Variables of a :class:`HebbianNetwork`:

- ``params``: ``block_<i>/layer/kernel`` (``bias``) and ``classifier/Dense_0/kernel, bias``;
- ``batch_stats``: the affine-free input BatchNorm of each block;
- ``rule_state``: per-block state of stateful rules (sparse_topk's ``threshold``);
- ``hebbian`` (written by a forward pass, ``mutable=["hebbian"]``): ``block_<i>/activations``,
  the :class:`~hebbjax.rules.Activations` the block's rule needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hebbjax.nn.layers import BatchNorm, Dropout, dense_dot, global_draw, standardize, torch_default_init, triangle, zca
from hebbjax.rules.linear import Array


def identity(x: Array) -> Array:
    return x


class Block(nn.Module):
    """input norm -> dropout -> layer -> activation -> pool -> post-pool activation (SoftHebb's
    ``BasicBlock``).

    Attributes:
      layer: ``layer(name=...)`` makes the block's linear layer (:class:`~hebbjax.nn.HebbianConv`,
        :class:`~hebbjax.nn.HebbianDense`), which returns :class:`~hebbjax.rules.Activations`.
      input_norm: ``batchnorm`` (affine-free, SoftHebb), ``standardize`` (per sample, Miconi) or
        ``none`` (Holca-Lamarre's patch normalisation lives in the layer).
      activation, pool, post_pool_activation: functions of the feature map (``None``: skipped).
      plastic: sow the activations a Hebbian rule reads (collection ``hebbian``).
      y_is_output: the rule's ``y`` is the block's activation (Hebb, instar, Oja), else ``None``.
      rule_state: initial values of a stateful rule's variables (collection ``rule_state``).
      output_shift: ``shift(rule_state) -> array`` subtracted from ``u`` before the activation.
      explore: with ``explore=True`` in the call, ``u`` gets exploration noise of standard deviation
        ``explore * std(u)`` over the neurons, per sample and position (Holca-Lamarre's
        ``noise_explore``; RNG stream ``explore``); the noisy ``u`` is propagated and learnt from.
      axis_name: the mapped axis BatchNorm averages its batch statistics over.

    ``rows`` (in the call): the real samples of a padded global batch (the first ``rows``), for
    BatchNorm's statistics and the random draws (:func:`~hebbjax.nn.layers.real_samples`).
    """

    layer: Callable[..., nn.Module]
    input_norm: str = "batchnorm"
    dropout: float = 0.0
    pre_triangle: bool = False
    activation: Callable[[Array], Array] = identity
    pool: Callable[[Array], Array] | None = None
    post_pool_activation: Callable[[Array], Array] | None = None
    flatten: bool = False
    plastic: bool = False
    y_is_output: bool = False
    rule_state: Callable[[], Mapping[str, Array]] | None = None
    output_shift: Callable[[Mapping[str, Array]], Array] | None = None
    explore: float = 0.0
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explore: bool = False, rows: int | None = None) -> Array:
        if self.input_norm == "batchnorm":  # SoftHebb: BatchNorm2d(affine=False), PyTorch's semantics
            x = BatchNorm(use_running_average=not train, axis_name=self.axis_name, name="input_norm")(x, rows)
        elif self.input_norm == "standardize":
            x = standardize(x)
        elif self.input_norm != "none":
            raise ValueError(f"input_norm: expected batchnorm, standardize or none, got {self.input_norm!r}")
        if self.dropout > 0:
            x = Dropout(self.dropout, self.axis_name)(x, deterministic=not train, rows=rows)
        acts = self.layer(name="layer")(x)
        u = triangle(acts.u) if self.pre_triangle else acts.u
        if explore and self.explore > 0:
            noise = global_draw(lambda k, shape: jax.random.normal(k, shape, u.dtype), self.make_rng("explore"), u.shape, self.axis_name, rows)
            u = u + self.explore * jax.lax.stop_gradient(jnp.std(u, axis=-1, keepdims=True)) * noise
        out = u
        if self.rule_state is not None:
            state = {k: self.variable("rule_state", k, lambda v=v: v).value for k, v in self.rule_state().items()}
            if self.output_shift is not None:
                out = u - self.output_shift(state)
        out = self.activation(out)
        if self.plastic:
            y = out if self.y_is_output else None
            self.sow("hebbian", "activations", acts._replace(u=u, y=y), reduce_fn=lambda _, new: new, init_fn=lambda: None)
        if self.pool is not None:
            out = self.pool(out)
        if self.post_pool_activation is not None:
            out = self.post_pool_activation(out)
        if self.flatten:
            out = out.reshape(out.shape[0], -1)
        return out


class Classifier(nn.Module):
    """Flatten -> dropout -> linear (SoftHebb's classifier block; PyTorch default init)."""

    num_classes: int
    dropout: float = 0.5
    axis_name: str | None = None  # the data-parallel axis: dropout masks drawn for the global batch

    @nn.compact
    def __call__(self, features: Array, train: bool = False, rows: int | None = None) -> Array:
        x = features.reshape(features.shape[0], -1)
        if self.dropout > 0:
            x = Dropout(self.dropout, self.axis_name)(x, deterministic=not train, rows=rows)
        return nn.Dense(self.num_classes, kernel_init=torch_default_init, bias_init=_torch_bias_init(x.shape[-1]), dot_general=dense_dot)(x)


def _torch_bias_init(fan_in: int):
    def init(key, shape, dtype=jnp.float32):
        bound = 1.0 / fan_in**0.5
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class HebbianNetwork(nn.Module):
    """Blocks followed by a linear classifier.

    ``__call__(x, train_blocks=(), upto=None, classify=True, train_classifier=False, explore=False)``:
    blocks whose index is in ``train_blocks`` run in training mode (BatchNorm batch statistics
    and running-stat updates, dropout); the others in evaluation mode. ``upto`` stops after that
    many blocks (features of a prefix of the network); ``classify=False`` returns the features;
    ``explore`` adds the blocks' exploration noise (:class:`Block`); ``rows``: the real samples of
    a padded global batch (:class:`Block`).
    ``axis_name`` (data-parallel training) is given to every block's BatchNorm, and its dropout and
    exploration noise are drawn for the global batch (the same draws on any device count). ``whiten``: the
    input is ZCA-whitened first (:func:`hebbjax.nn.layers.zca`) by the matrix in
    ``batch_stats/whiten_matrix`` (identity at initialisation; the training code fits it).
    """

    blocks: Sequence[Block]
    num_classes: int
    classifier_dropout: float = 0.5
    axis_name: str | None = None
    whiten: bool = False

    @nn.compact
    def __call__(
        self, x: Array, train_blocks: Sequence[int] = (), upto: int | None = None,
        classify: bool = True, train_classifier: bool = False, explore: bool = False, rows: int | None = None,
    ) -> Array:
        if self.whiten:
            d = math.prod(x.shape[1:])
            x = zca(x, self.variable("batch_stats", "whiten_matrix", lambda: jnp.eye(d, dtype=x.dtype)).value)
        n = len(self.blocks) if upto is None else upto
        for i in range(n):
            block = self.blocks[i].clone(parent=self, name=f"block_{i}", axis_name=self.axis_name)
            x = block(x, train=i in train_blocks, explore=explore, rows=rows)
        if classify and n == len(self.blocks):
            return Classifier(self.num_classes, self.classifier_dropout, self.axis_name, name="classifier")(x, train=train_classifier, rows=rows)
        return x

