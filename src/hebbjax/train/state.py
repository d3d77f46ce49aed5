"""The training state: what a step carries and what a checkpoint saves."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


class TrainState(struct.PyTreeNode):
    """Everything training changes, one pytree.

    Attributes:
      params: the network's parameters (``block_<i>/layer``, ``classifier``).
      batch_stats: running BatchNorm statistics.
      rule_state: state of stateful rules (sparse_topk's thresholds), per block.
      opt: the current phase's Hebbian optimiser states, ``{"block_<i>": optax state}``.
      sup_opt: the current phase's readout / backprop optimiser state (``()`` when none).
      key: the current phase's step key (each step splits it).
      phase: index of the current phase in the run's protocol.
      step: steps done in the current phase (a chunk boundary when saved).
      epoch: the epoch the next step belongs to (``step // steps_per_epoch``).
    """

    params: Any
    batch_stats: Any
    rule_state: Any
    opt: Any
    sup_opt: Any
    key: jax.Array
    phase: jax.Array
    step: jax.Array
    epoch: jax.Array

    @property
    def variables(self) -> dict[str, Any]:
        """The network's variables, as ``module.apply`` takes them."""
        return {"params": self.params, "batch_stats": self.batch_stats, "rule_state": self.rule_state}

    def at(self, phase: int, key: jax.Array, opt: Any = None, sup_opt: Any = ()) -> TrainState:
        """The state at the start of ``phase``: its own optimiser states and step key."""
        zero = jnp.zeros((), jnp.int32)
        return self.replace(opt={} if opt is None else opt, sup_opt=sup_opt, key=key,
                            phase=jnp.asarray(phase, jnp.int32), step=zero, epoch=zero)


def create(variables: dict[str, Any], key: jax.Array) -> TrainState:
    """A state before the first phase, from a network's initial ``variables``."""
    zero = jnp.zeros((), jnp.int32)
    return TrainState(
        params=variables["params"], batch_stats=variables.get("batch_stats", {}), rule_state=variables.get("rule_state", {}),
        opt={}, sup_opt=(), key=key, phase=zero, step=zero, epoch=zero,
    )
