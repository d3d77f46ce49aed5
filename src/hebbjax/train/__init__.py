"""Training: data-parallel step loop, Hebbian phase, readout, baselines."""

from hebbjax.train.loop import NonFiniteUpdate, Trainer, halving_schedule
from hebbjax.train.parallel import AXIS, make_mesh
from hebbjax.train.sources import ArrayData, StreamData

__all__ = ["AXIS", "ArrayData", "NonFiniteUpdate", "StreamData", "Trainer", "halving_schedule", "make_mesh"]
