"""Flax modules: Hebbian layers and block-built networks (no config parsing here)."""

from hebbjax.nn.layers import (
    BatchNorm,
    Dropout,
    HebbianConv,
    HebbianDense,
    apply_activation,
    pool2d,
    positive_init,
    radius_init,
    repu,
    standardize,
    zca,
    zca_matrix,
    torch_default_init,
    triangle,
    unit_norm_init,
)
from hebbjax.nn.network import Block, Classifier, HebbianNetwork

__all__ = [name for name in dir() if not name.startswith("_")]
