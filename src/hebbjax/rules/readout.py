"""Holca-Lamarre's ``neural_prob`` decision: classes from class-conditional mean activity, no backprop.

Over a rolling window of the last ``N`` training samples, ``P[j, c]`` is the mean activity of
hidden neuron ``j`` on the samples of class ``c``, each row then divided by its sum (hebbianCNN
``_learn_out_proba``); a sample's class scores are ``c = h @ P`` and its decision ``argmax c``.

The window is a ring buffer of the samples' activations and labels; the per-class sums are kept
up to date as samples enter and leave it, so ``P`` is exact at every step (the original
recomputes it from the buffer every 100 images).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class ClassMeans(NamedTuple):
    """The rolling window and its per-class sums."""

    activity: Array  # (window, hidden): the window's samples, oldest overwritten first
    labels: Array  # (window,) int32; -1 for empty slots
    position: Array  # () int32: the next slot to write
    sums: Array  # (hidden, classes): sum of activity per class over the window
    counts: Array  # (classes,): samples per class in the window


def class_means_init(hidden: int, classes: int, window: int, dtype=jnp.float32) -> ClassMeans:
    return ClassMeans(jnp.zeros((window, hidden), dtype), jnp.full((window,), -1, jnp.int32), jnp.zeros((), jnp.int32),
                      jnp.zeros((hidden, classes), dtype), jnp.zeros((classes,), dtype))


def class_means_update(state: ClassMeans, activity: Array, labels: Array) -> ClassMeans:
    """Add a batch ``activity (B, hidden)`` with ``labels (B,)`` to the window, evicting the oldest
    ``B`` samples (``B`` at most the window). Labels -1 (padding) are not counted."""
    window, classes = state.labels.shape[0], state.counts.shape[0]
    slots = (state.position + jnp.arange(activity.shape[0])) % window
    old_onehot = jax.nn.one_hot(state.labels[slots], classes, dtype=activity.dtype)  # -1 -> zeros
    new_onehot = jax.nn.one_hot(labels, classes, dtype=activity.dtype)
    sums = state.sums - state.activity[slots].T @ old_onehot + activity.T @ new_onehot
    counts = state.counts - old_onehot.sum(0) + new_onehot.sum(0)
    return ClassMeans(state.activity.at[slots].set(activity), state.labels.at[slots].set(labels),
                      (state.position + activity.shape[0]) % window, sums, counts)


def class_probabilities(state: ClassMeans, eps: float = 1e-12) -> Array:
    """``P (hidden, classes)``: per-class mean activity, each row (neuron) summing to 1."""
    means = state.sums / jnp.maximum(state.counts, 1.0)
    return means / (jnp.sum(means, axis=1, keepdims=True) + eps)


def neural_prob(activity: Array, probabilities: Array) -> Array:
    """Class scores ``h @ P`` of a batch of activities ``(B, hidden)``."""
    return activity @ probabilities
