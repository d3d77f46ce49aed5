"""Evaluation, separate from training: frozen features, predictions, accuracy.

Every function maps a row-wise network function over a :class:`~hebbjax.train.sources.Source`
in batches of ``batch_size`` (data-parallel over the mesh); the source decides whether its rows
are on the device or streamed.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from hebbjax.rules import readout as readout_rules
from hebbjax.train.parallel import to_host
from hebbjax.train.sources import Source
from hebbjax.train.steps import Inputs, decide


def _features(variables: Any, x: jax.Array, *, model: nn.Module, inputs: Inputs) -> jax.Array:
    f = model.apply(variables, inputs(x), classify=False)
    return f.reshape(f.shape[0], -1)


def _predict(variables: Any, x: jax.Array, *, model: nn.Module, inputs: Inputs) -> jax.Array:
    return jnp.argmax(model.apply(variables, inputs(x)), -1)


def _classify(params: Any, x: jax.Array, *, classifier: nn.Module) -> jax.Array:
    return jnp.argmax(classifier.apply({"params": params}, x), -1)


def _decide(args: Any, x: jax.Array, *, model: nn.Module, inputs: Inputs, decision: str) -> jax.Array:
    variables, readout = args
    return decide(model.apply(variables, inputs(x), classify=False), readout, decision)


@functools.lru_cache(maxsize=64)
def _bound(fn: Any, **static: Any) -> Any:
    """One function object per (fn, static arguments): its compiled batched form is then reused."""
    return functools.partial(fn, **static)


def features(model: nn.Module, variables: Any, source: Source, *, batch_size: int, mesh: Mesh, inputs: Inputs) -> tuple[Any, Any]:
    """``(features, labels)``: the block stack's output for every row (evaluation mode), flattened."""
    return source.map(_bound(_features, model=model, inputs=inputs), variables, batch_size, mesh)


def predict(model: nn.Module, variables: Any, source: Source, *, batch_size: int, mesh: Mesh, inputs: Inputs) -> tuple[Any, Any]:
    """``(predicted classes, labels)`` of the whole network (evaluation mode)."""
    return source.map(_bound(_predict, model=model, inputs=inputs), variables, batch_size, mesh)


def classify(classifier: nn.Module, params: Any, source: Source, *, batch_size: int, mesh: Mesh) -> tuple[Any, Any]:
    """``(predicted classes, labels)`` of the classifier alone, on a source of cached features."""
    return source.map(_bound(_classify, classifier=classifier), params, batch_size, mesh)


def decisions(model: nn.Module, state: Any, source: Source, *, batch_size: int, mesh: Mesh, inputs: Inputs,
              decision: str, readout: Any = None) -> tuple[Any, Any]:
    """``(classes, labels)`` the reward method's network decides greedily (no exploration): by
    the class means ``readout`` (``neural_prob``; :func:`class_means`) or its last block
    (``neural_dopa``)."""
    fn = _bound(_decide, model=model, inputs=inputs, decision=decision)
    return source.map(fn, (state.variables, readout), batch_size, mesh)


def class_means(model: nn.Module, variables: Any, source: Source, *, batch_size: int, mesh: Mesh, inputs: Inputs,
                num_classes: int) -> Any:
    """``neural_prob``'s class means of the network's output over every row of ``source``."""
    h, labels = features(model, variables, source, batch_size=batch_size, mesh=mesh, inputs=inputs)
    return readout_rules.class_means(jnp.asarray(h), jnp.asarray(labels), num_classes)


def accuracy(predicted: Any, labels: Any) -> float:
    """Fraction of rows classified correctly."""
    predicted, labels = to_host((predicted, labels))
    return float(np.mean(predicted == labels))
