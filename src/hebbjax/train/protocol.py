"""The protocol as data: a training mode is a list of phases; :func:`fit` runs them in order.

* ``successive`` (SoftHebb's default): one :class:`Hebbian` phase per Hebbian block, in order,
  then the readout;
* ``consecutive``: one :class:`Hebbian` phase training every Hebbian block together, then the
  readout;
* ``simultaneous``: one :class:`Supervised` phase in which the Hebbian blocks learn by their rules
  on the batches the classifier is trained on.

The readout is :class:`Readout` (the classifier on features computed once) when the features are
fixed (no augmentation, no backprop block, both splits on the device), else :class:`Supervised`.
``training.method`` ``bp`` / ``random`` only change the blocks (:func:`hebbjax.config.resolve`):
``bp`` has no Hebbian block, so its protocol is one :class:`Supervised` phase; ``random`` only the
readout. ``reward`` (Holca-Lamarre) is two :class:`Reward` phases, statistical then with dopamine,
and no readout: the network decides by itself. A phase of zero epochs is left out.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import jax
import optax

from hebbjax.config import Config
from hebbjax.rules import readout as readout_rules
from hebbjax.train import build
from hebbjax.train.sources import Source
from hebbjax.train.state import TrainState
from hebbjax.train.steps import hebbian_step, readout_step, reward_step, supervised_step

if TYPE_CHECKING:
    from hebbjax.train.fit import Context


@dataclasses.dataclass(frozen=True)
class Hebbian:
    """Unsupervised epochs updating the Hebbian ``blocks`` together, one update per mini-batch."""

    blocks: tuple[int, ...]
    timing: ClassVar[str] = "unsupervised"

    @property
    def name(self) -> str:
        return f"hebbian blocks {list(self.blocks)}"


@dataclasses.dataclass(frozen=True)
class Readout:
    """The linear classifier on the frozen network's features, computed once at the phase's start."""

    name: ClassVar[str] = "readout"
    timing: ClassVar[str] = "readout"


@dataclasses.dataclass(frozen=True)
class Supervised:
    """End-to-end supervised epochs: the classifier and the ``bp`` blocks by Adam on the
    cross-entropy; the ``hebbian`` blocks (simultaneous mode) by their rules on the same batches."""

    hebbian: tuple[int, ...] = ()
    name: ClassVar[str] = "supervised"
    timing: ClassVar[str] = "readout"


@dataclasses.dataclass(frozen=True)
class Reward:
    """Holca-Lamarre's reward-modulated phases (``training.method: reward``): every Hebbian block
    learns, on labelled images, from the network's own decisions; ``dopamine=False`` is the
    statistical phase (no exploration, dopamine 1), ``True`` the reward phase (exploration noise,
    dopamine gating the blocks that have a ``dopamine`` table)."""

    blocks: tuple[int, ...]
    dopamine: bool
    timing: ClassVar[str] = "unsupervised"

    @property
    def name(self) -> str:
        return "reward" if self.dopamine else "statistical"


@dataclasses.dataclass(frozen=True)
class RidgeReadout:
    """The linear classifier on the frozen network's cached features, by ridge regression on
    one-hot labels (``readout.kind: ridge``, Miconi 2021): a closed form, no steps."""

    name: ClassVar[str] = "ridge readout"
    timing: ClassVar[str] = "readout"


Phase = Hebbian | Readout | RidgeReadout | Supervised | Reward


#: training.mode -> phases(Hebbian blocks, the readout phase)
MODES: dict[str, Callable[[tuple[int, ...], Phase], list[Phase]]] = {
    "successive": lambda plastic, readout: [Hebbian((i,)) for i in plastic] + [readout],
    "consecutive": lambda plastic, readout: ([Hebbian(plastic)] if plastic else []) + [readout],
    "simultaneous": lambda plastic, readout: [Supervised(hebbian=plastic)],
}


def phases(cfg: Config, plastic: tuple[int, ...], cached: bool) -> tuple[Phase, ...]:
    """The protocol of a (resolved) config: the reward method's two phases, else its mode's with
    the readout on cached features when they can be cached (``cached``); a phase of zero epochs is
    left out (training.readout_epochs=0: no readout, no accuracy)."""
    t = cfg.training
    if t.method == "reward":
        listed = [Reward(plastic, False), Reward(plastic, True)]
    else:
        readout = (RidgeReadout() if cfg.readout.kind == "ridge" else Readout()) if cached else Supervised()
        listed = MODES[t.mode](plastic, readout)
    return tuple(phase for phase in listed if epochs(cfg, phase) > 0)


def epochs(cfg: Config, phase: Phase) -> int:
    """Epochs of ``phase`` (1 for the closed-form ridge readout)."""
    t = cfg.training
    if isinstance(phase, Reward):
        return t.reward_epochs if phase.dopamine else t.unsup_epochs
    if isinstance(phase, RidgeReadout):
        return 1
    return t.unsup_epochs if isinstance(phase, Hebbian) else t.readout_epochs


class Plan(NamedTuple):
    """How a phase runs: its step, the source it reads, and its optimisers' initial states."""

    step: Callable
    source: Source | None
    batch_size: int
    epochs: int
    init_optimisers: Callable[[TrainState], tuple[Any, Any]]  # the state before -> (opt, sup_opt)


def halving_schedule(lr: float, epochs: int, steps_per_epoch: int) -> optax.Schedule:
    """SoftHebb's ``CustomStepLR``: halve at epochs ``int(n * f)``, f in {.2,.35,.5,.6,.7,.8,.9} for
    n >= 50, f in {.5,.75} for 20 <= n < 50, no decay below 20 epochs."""
    if epochs >= 50:
        fractions = (0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9)
    elif epochs >= 20:
        fractions = (0.5, 0.75)
    else:
        fractions = ()
    boundaries: dict[int, float] = {}
    for f in fractions:
        step = int(epochs * f) * steps_per_epoch
        boundaries[step] = boundaries.get(step, 1.0) * 0.5
    return optax.piecewise_constant_schedule(lr, boundaries)


def readout_optimiser(ctx: Context) -> optax.GradientTransformation:
    """Adam at training.readout_lr, halved on SoftHebb's schedule (``readout_schedule: halving``)."""
    t = ctx.cfg.training
    steps_per_epoch = ctx.train.num_examples // t.readout_batch_size
    lr = halving_schedule(t.readout_lr, t.readout_epochs, steps_per_epoch) if t.readout_schedule == "halving" else t.readout_lr
    return optax.adam(lr)


def _hebbian_parts(ctx: Context, blocks: tuple[int, ...], total_steps: int) -> tuple[dict, dict]:
    """Bound rules and optax chains of ``blocks`` for a phase of ``total_steps`` steps."""
    configs = ctx.cfg.model.blocks
    rules = {i: build.bound_rule(configs[i]) for i in blocks}
    transforms = {i: build.transform(configs[i], total_steps, ctx.masks.get(i)) for i in blocks}
    return rules, transforms


def _layer_states(transforms: dict, params: Any) -> dict:
    return {f"block_{i}": tx.init(params[f"block_{i}"]["layer"]) for i, tx in transforms.items()}


def plan(ctx: Context, phase: Phase, features: Source | None = None) -> Plan:
    """The :class:`Plan` of ``phase``; a :class:`Readout` reads ``features`` (cached)."""
    t, n = ctx.cfg.training, epochs(ctx.cfg, phase)
    if isinstance(phase, Hebbian):
        rules, transforms = _hebbian_parts(ctx, phase.blocks, n * (ctx.unsup.num_examples // t.unsup_batch_size))
        step = functools.partial(hebbian_step, model=ctx.model, rules=rules, transforms=transforms, inputs=ctx.unsup_inputs,
                                 rows=t.unsup_batch_size)
        return Plan(step, ctx.unsup, t.unsup_batch_size, n, lambda state: (_layer_states(transforms, state.params), ()))
    if isinstance(phase, Reward):
        return _reward_plan(ctx, phase, n)
    if isinstance(phase, RidgeReadout):  # closed form (hebbjax.train.probes.fit_ridge): no step
        return Plan(None, features, t.readout_batch_size, n, lambda state: ({}, ()))
    tx = readout_optimiser(ctx)
    if isinstance(phase, Readout):
        step = functools.partial(readout_step, classifier=ctx.classifier, tx=tx, rows=t.readout_batch_size)
        return Plan(step, features, t.readout_batch_size, n, lambda state: ({}, tx.init(state.params["classifier"])))
    bp = tuple(i for i, b in enumerate(ctx.cfg.model.blocks) if b.rule == "bp")
    rules, transforms = _hebbian_parts(ctx, phase.hebbian, n * (ctx.train.num_examples // t.readout_batch_size))
    step = functools.partial(supervised_step, model=ctx.model, tx=tx, train_blocks=tuple(sorted(set(bp) | set(phase.hebbian))),
                             rules=rules, transforms=transforms, inputs=ctx.inputs, rows=t.readout_batch_size)
    return Plan(step, ctx.train, t.readout_batch_size, n, lambda state: (_layer_states(transforms, state.params), tx.init(state.params)))


def _reward_plan(ctx: Context, phase: Reward, n: int) -> Plan:
    t, blocks = ctx.cfg.training, ctx.cfg.model.blocks
    rules, transforms = _hebbian_parts(ctx, phase.blocks, n * (ctx.train.num_examples // t.unsup_batch_size))
    gates = {i: build.dopamine_gate(blocks[i]) if phase.dopamine else None for i in phase.blocks}
    step = functools.partial(reward_step, model=ctx.model, rules=rules, transforms=transforms, gates=gates,
                             explore=phase.dopamine, decision=t.decision, window=t.decision_window, inputs=ctx.inputs,
                           rows=t.unsup_batch_size)

    def init_optimisers(state: TrainState) -> tuple[Any, Any]:  # the class means carry over between the two phases
        carried = isinstance(state.sup_opt, readout_rules.ClassMeans)
        hidden = math.prod(ctx.shapes[-1])
        means = state.sup_opt if carried else readout_rules.class_means_init(hidden, ctx.num_classes)
        return _layer_states(transforms, state.params), means if t.decision == "neural_prob" else ()

    return Plan(step, ctx.train, t.unsup_batch_size, n, init_optimisers)


def phase_keys(seed: int, phases: int) -> tuple[jax.Array, jax.Array, list[tuple[jax.Array, jax.Array]]]:
    """``(init key, pruning-mask key, [(step key, order key) per phase])`` of a run.

    RBG keys: the same statistical quality for init, shuffling and dropout, and XLA compiles them
    in a fraction of threefry's time on CPU (threefry dominated the compile time of small runs).
    """
    root = jax.random.key(seed, impl="rbg")
    k_init, k_mask, root = jax.random.split(root, 3)
    keys = []
    for _ in range(phases):
        root, k_step = jax.random.split(root)
        root, k_order = jax.random.split(root)
        keys.append((k_step, k_order))
    return k_init, k_mask, keys

