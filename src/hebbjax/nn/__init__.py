"""Flax modules: Hebbian layers and block-declared networks."""

from hebbjax.nn.layers import HebbianConv, HebbianDense, apply_activation, pool2d, radius_init, repu, triangle
from hebbjax.nn.network import Block, Classifier, HebbianNetwork, build_network, is_hebbian

__all__ = [name for name in dir() if not name.startswith("_")]
