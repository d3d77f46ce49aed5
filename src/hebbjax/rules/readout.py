"""Holca-Lamarre's ``neural_prob`` decision: classes from class-conditional mean activity, no backprop.

``P[j, c]`` is the mean activity of hidden neuron ``j`` on recent training samples of class ``c``,
each row then divided by its sum (hebbianCNN ``_learn_out_proba``); a sample's class scores are
``c = h @ P`` and its decision ``argmax c``.

"Recent": the original keeps the last ``N`` samples' activities in a buffer and recomputes ``P``
from it every 100 images. Here the per-class sums decay by ``1 - 2B / N`` at every batch of ``B``
samples: an exponential window whose mean sample age, ``N / 2``, is that of a window of the last
``N``; ``P`` is current at every step and costs ``hidden x classes`` numbers instead of an
``N x hidden`` buffer (which XLA would copy at every step it is read and written).
:func:`class_means` gives the exact means of a set of samples (an evaluation's).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class ClassMeans(NamedTuple):
    """Exponentially weighted per-class sums of activity and sample counts."""

    sums: Array  # (hidden, classes)
    counts: Array  # (classes,)


def class_means_init(hidden: int, classes: int, dtype=jnp.float32) -> ClassMeans:
    return ClassMeans(jnp.zeros((hidden, classes), dtype), jnp.zeros((classes,), dtype))


def class_means(activity: Array, labels: Array, classes: int) -> ClassMeans:
    """The per-class sums and counts of ``activity (N, hidden)`` with ``labels (N,)``."""
    onehot = jax.nn.one_hot(labels, classes, dtype=activity.dtype)
    return ClassMeans(activity.T @ onehot, onehot.sum(0))


def class_means_update(state: ClassMeans, activity: Array, labels: Array, window: int) -> ClassMeans:
    """Add a batch ``activity (B, hidden)`` with ``labels (B,)``, after decaying the sums by
    ``1 - 2B / window``. Labels outside ``[0, classes)`` (padding: -1) are not counted."""
    decay = 1.0 - min(2.0 * activity.shape[0] / window, 1.0)
    onehot = jax.nn.one_hot(labels, state.counts.shape[0], dtype=activity.dtype)
    return ClassMeans(decay * state.sums + activity.T @ onehot, decay * state.counts + onehot.sum(0))


def class_probabilities(state: ClassMeans, eps: float = 1e-12) -> Array:
    """``P (hidden, classes)``: per-class mean activity, each row (neuron) summing to 1."""
    means = state.sums / jnp.maximum(state.counts, eps)
    return means / (jnp.sum(means, axis=1, keepdims=True) + eps)


def neural_prob(activity: Array, probabilities: Array) -> Array:
    """Class scores ``h @ P`` of a batch of activities ``(B, hidden)``."""
    return activity @ probabilities


def ridge(features: Array, labels: Array, classes: int, alpha: float = 1.0) -> tuple[Array, Array]:
    """Ridge regression of one-hot labels on ``features (N, D)``: ``(W (D, classes), b (classes,))``
    minimising ``|Y - X W - b|^2 + alpha |W|^2`` with the intercept unpenalised (scikit-learn's
    ``Ridge(alpha)``, which Miconi 2021 decodes with); the class is ``argmax(x W + b)``.

    Solved from the normal equations ``(Xc^T Xc + alpha I) W = Xc^T Yc`` of the centred data, the
    Gram matrix computed as ``X^T X - N m m^T`` (no centred copy of a large ``X``), in float64
    when JAX has it enabled, else float32."""
    n = features.shape[0]
    y = jax.nn.one_hot(labels, classes, dtype=features.dtype)
    mean_x, mean_y = jnp.mean(features, 0), jnp.mean(y, 0)
    gram = features.T @ features - n * jnp.outer(mean_x, mean_x)
    xty = features.T @ y - n * jnp.outer(mean_x, mean_y)
    w = jax.scipy.linalg.solve(gram + alpha * jnp.eye(gram.shape[0], dtype=gram.dtype), xty, assume_a="pos")
    return w, mean_y - mean_x @ w
