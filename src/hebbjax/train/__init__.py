"""Training: state, steps, the loop, the protocol's phases, evaluation, checkpoints.

- :mod:`~hebbjax.train.state`: :class:`TrainState`, what a step carries and a checkpoint saves;
- :mod:`~hebbjax.train.steps`: the step functions (Hebbian, readout, supervised/backprop);
- :mod:`~hebbjax.train.loop`: :func:`run_epochs`, the one loop, with callbacks;
- :mod:`~hebbjax.train.sources`: data on the device or streamed from the host;
- :mod:`~hebbjax.train.protocol`: the training modes as lists of phases;
- :mod:`~hebbjax.train.fit`: :func:`fit` runs a config's protocol and evaluates;
- :mod:`~hebbjax.train.evaluate`, :mod:`~hebbjax.train.checkpoint`, :mod:`~hebbjax.train.build`
  (config -> modules, rules, optax chains), :mod:`~hebbjax.train.parallel` (shard_map + scan).
"""

from hebbjax.train.checkpoint import Checkpoints
from hebbjax.train.fit import Context, Data, fit, init_state, run_phase, setup
from hebbjax.train.loop import NonFiniteUpdate, run_epochs
from hebbjax.train.parallel import AXIS, make_mesh
from hebbjax.train.protocol import MODES, Hebbian, Readout, Supervised, halving_schedule
from hebbjax.train.sources import DeviceSource, StreamSource
from hebbjax.train.state import TrainState

__all__ = [
    "AXIS", "Checkpoints", "Context", "Data", "DeviceSource", "Hebbian", "MODES", "NonFiniteUpdate", "Readout",
    "StreamSource", "Supervised", "TrainState", "fit", "halving_schedule", "init_state", "make_mesh", "run_epochs",
    "run_phase", "setup",
]
