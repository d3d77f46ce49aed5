"""Training: data-parallel step loop, Hebbian phase, readout, baselines."""

from hebbjax.train.loop import ArrayData, NonFiniteUpdate, Trainer, halving_schedule
from hebbjax.train.parallel import AXIS, make_mesh

__all__ = ["AXIS", "ArrayData", "NonFiniteUpdate", "Trainer", "halving_schedule", "make_mesh"]
