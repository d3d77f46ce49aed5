"""Structured configs: the schema Hydra validates every run against before any compute.

A network is a list of blocks, each readable at a glance, e.g. SoftHebb's first CIFAR block::

    {layer: conv, channels: 96, kernel: 5, padding: 2, rule: softhebb, t_invert: 1.0,
     lr: 0.08, lr_power: 0.5, activation: triangle(0.7), pool: max(4,2,1)}

Block order (SoftHebb's ``BasicBlock``): input norm -> dropout -> linear layer -> activation -> pool
-> post-pool activation. Activation and pool specs are strings ``name(args)`` parsed by
:func:`parse_activation` / :func:`parse_pool`.

This module owns every check of a config (:func:`check`, before any data is read) and the
rewrite of the blocks a training method implies (:func:`resolve`); the training code trusts
what it receives.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

ACTIVATIONS = {
    # name: (number of parameters, default parameter)
    "none": 0, "relu": 0, "hard": 0,
    "triangle": 1,  # relu(u - mean_c u) ** power           (Coates 2011; SoftHebb)
    "repu": 1,  # relu(u) ** power
    "softmax": 1,  # softmax(t_invert * u) over channels
    "exp": 1, "tanh": 1, "sigmoid": 1,
    "kwta": 1,  # relu of the k largest values over channels, 0 elsewhere (Miconi's sparse output; k = the argument)
}
POOLS = ("max", "avg", "sum")


@dataclass
class DopamineConfig:
    """The dopamine a block's update is multiplied by in the reward phase (``training.method:
    reward``), per (reward predicted, reward received) case of each sample (Holca-Lamarre's dHigh,
    dMid, dNeut, dLow; defaults: hebbianRL's). ``map: linear`` uses the reward-prediction error
    instead: ``d = unpredicted_reward * RPE + predicted_reward``."""

    enabled: bool = False  # gate this block's update (else it learns with factor 1 in the reward phase too)
    map: str = "table"  # table | linear
    unpredicted_reward: float = 4.0  # predicted 0, received 1 (RPE +1)
    predicted_reward: float = 0.01  # predicted 1, received 1 (RPE 0)
    no_reward: float = -0.25  # predicted 0, received 0 (RPE 0)
    omitted_reward: float = -1.0  # predicted 1, received 0 (RPE -1)


@dataclass
class BlockConfig:
    """One block of a network. ``rule``: a registered Hebbian rule (:data:`hebbjax.rules.RULES`),
    ``bp`` (trained by backprop with the readout) or ``none`` (frozen at its initialisation)."""

    layer: str = "conv"  # conv | dense (on the flattened input)
    channels: int = MISSING
    kernel: int = 3
    stride: int = 1
    padding: int = 0
    padding_mode: str = "reflect"  # zeros | reflect | replicate | circular
    # conv arithmetic: xla (lax.conv) | patches (im2col + one matmul) | auto (xla off CPU; on CPU
    # patches for the kernel cotangent, and for the forward pass when a patch has >= 512 values)
    implementation: str = "auto"
    dilation: int = 1
    groups: int = 1
    bias: bool = False
    neuron: str = "linear"  # linear: u = w.x ; log_weight: u = x.log(w) (Holca-Lamarre, positive weights)
    # input normalisation of the block: batchnorm (affine-free, SoftHebb) | standardize (per sample,
    # Miconi) | patch_sum (each patch, or a dense block's whole input, scaled to sum to patch_sum_to:
    # Holca-Lamarre) | none
    input_norm: str = "batchnorm"
    patch_sum_to: float = 900.0
    dropout: float = 0.0  # on the block input
    # plasticity
    rule: str = "softhebb"
    t_invert: float = 1.0  # softhebb / soft_wta inverse temperature (plasticity only)
    rank: int = 2  # krotov
    delta: float = 0.4  # krotov
    k: int = 1  # sparse_topk
    homeostasis_rate: float = 3.0  # sparse_topk
    threshold_in_output: bool = True  # sparse_topk: propagate u - theta (Miconi's triangle of u - theta)
    rule_options: dict[str, Any] = field(default_factory=dict)  # hyper-parameters of a registered rule of your own
    # explicit: the rule's update | loss: -jax.grad of the rule's surrogate loss (Miconi 2021's form;
    # hebb, instar, oja, sparse_topk), then the same optax chain (constant lr: plain SGD)
    rule_form: str = "explicit"
    lr: float = 0.01  # > 0; a negative rate (anti-Hebbian learning) needs anti_hebbian: true
    anti_hebbian: bool = False  # allow a negative lr: the rule's update is reversed
    # norm: lr * (| |w| - 1 | + 1e-10) ** lr_power (SoftHebb): 0 for a neuron of norm exactly 1, so
    # not with init: unit or unit_norm: true (warned) | constant | linear_decay (to 0 at the phase's end)
    lr_schedule: str = "norm"
    lr_power: float = 0.5
    normalize_step: bool = True  # divide each step by max |dw| (SoftHebb)
    unit_norm: bool = False  # renormalise every neuron to norm 1 after each step (Miconi)
    burn_in: int = 0  # no weight update in a phase's first N batches; rule state (thresholds) adapts (Miconi: 200)
    prune: float = 0.0  # probability that a weight is removed by a fixed random mask (Miconi)
    positive: bool = False  # keep weights > 0 (Holca-Lamarre), by `positivity`:
    # clip: w <- max(w + dw, 1e-10) (hebbianCNN 2016) | skip: a neuron whose step would make a weight
    # <= 0 skips that step (hebbianCNN HEAD; never adds weight mass, so negative dopamine stays bounded)
    positivity: str = "clip"
    # reward method (training.method: reward): exploration noise on the pre-activation u in the
    # reward phase, N(0, (explore * std_neurons(u))^2) (Holca-Lamarre's noise_explore; 0: none), and
    # the dopamine gating this block's update there (dopamine.enabled: true; else factor 1)
    explore: float = 0.0
    dopamine: DopamineConfig = field(default_factory=DopamineConfig)
    # initialisation: radius (SoftHebb: normal with norm ~radius after BN, uniform otherwise) |
    # unit (Miconi: normal, unit norm) | positive (Holca-Lamarre: U[0,1) + init_offset)
    init: str = "radius"
    radius: float = 25.0
    init_offset: float = 0.0
    pre_triangle: bool = False  # u <- triangle(u) before competition and output (SoftHebb e1)
    activation: str = "triangle(1)"
    pool: Optional[str] = None  # e.g. max(4,2,1) = kernel 4, stride 2, padding 1
    post_pool_activation: Optional[str] = None
    flatten: bool = False  # flatten the block's output (before a dense block)


@dataclass
class ModelConfig:
    blocks: list[BlockConfig] = field(default_factory=list)
    classifier_dropout: float = 0.5
    name: str = "network"
    # float32 | bfloat16: the inputs of every block's matrix products (forward, Hebbian correlation,
    # backprop's gradients) rounded to bfloat16, accumulated in float32; weights, updates, the
    # readout and everything else stay float32 (hebbjax.rules.matmul; ~1.9x the forward GEMM rate
    # on this project's AVX-512 BF16 CPU, measured in benchmarks/README.md; its effect on
    # accuracy: experiments/README.md)
    matmul_dtype: str = "float32"


@dataclass
class AugmentOptions:
    """Options of the augmentations named in ``data.augment`` / ``data.unsup_augment``
    (:mod:`hebbjax.data.augment`; torchvision's defaults as SoftHebb used them)."""

    padding: int = 4  # crop: reflect padding on each side
    flip_prob: float = 0.5  # flip
    noise_std: float = 1.0  # noise: additive N(0, std^2) (MNIST_100aug)
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # resized_crop: area fraction range
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # resized_crop: aspect ratio range


@dataclass
class DataConfig:
    name: str = "digits"
    dir: Optional[str] = None  # offline archives: one folder per dataset (also $HEBBJAX_DATA_DIR)
    validation: bool = False  # evaluate on a seeded 20% of train instead of the test split
    augment: list[str] = field(default_factory=list)  # readout/BP augmentation: crop, flip, noise, resized_crop
    unsup_augment: list[str] = field(default_factory=list)  # unsupervised-phase augmentation (ImageNet: resized_crop, flip)
    augment_options: AugmentOptions = field(default_factory=AugmentOptions)
    limit_train: Optional[int] = None  # use only the first N training samples (quick runs)
    unsup_split: Optional[str] = None  # the unsupervised phase's split (stl10: unlabelled); default: the training set
    limit_unsup: Optional[int] = None  # the unsupervised phase uses only its first N images (ImageNet_1160: 10%)
    # in_memory: the dataset lives on the device(s); stream: read from the host in chunks copied
    # ahead of the step; auto: stream only the datasets too large for memory (ImageNet)
    placement: str = "auto"
    # whole-image ZCA whitening (Miconi 2021): each image standardised, then multiplied by the ZCA
    # matrix of `whiten_images` training images (M = E diag((lambda + whiten_eps)^-1/2) E^T),
    # fitted once per run, kept with the network's statistics (checkpoints, load_model); on the device
    whiten: Optional[str] = None  # null | zca
    whiten_images: int = 9000
    whiten_eps: float = 1e-3


@dataclass
class TrainingConfig:
    # hebbian | bp (same architecture end to end) | random (untrained blocks) | reward (Holca-Lamarre:
    # unsup_epochs of statistical Hebbian learning, then reward_epochs gated by dopamine from the
    # network's own decisions; no readout phase)
    method: str = "hebbian"
    mode: str = "successive"  # successive | consecutive | simultaneous
    unsup_epochs: int = 1
    unsup_batch_size: int = 10
    readout_epochs: int = 50
    readout_batch_size: int = 64
    readout_lr: float = 1e-3
    readout_schedule: str = "halving"  # halving (SoftHebb's CustomStepLR) | constant
    eval_batch_size: int = 1000
    steps_per_chunk: int = 100  # optimisation steps per jit call (lax.scan)
    reward_epochs: int = 10  # method=reward: epochs with exploration and dopamine (n_epi_dopa), batch unsup_batch_size
    # method=reward: how the network decides. neural_prob: class = argmax h . P, P the per-class mean
    # of the last block's output over recent training images (an exponential window of
    # `decision_window` images), rows summing to 1; neural_dopa: the last block is the class layer
    # (channels = classes), its argmax the class
    decision: str = "neural_prob"
    decision_window: int = 60000


@dataclass
class ReadoutConfig:
    """How the network's output (and, with ``layers``, each block's) is decoded into classes."""

    # adam: SoftHebb's linear classifier trained by Adam on cached features (training.readout_*)
    # | ridge: closed-form ridge regression on one-hot labels (Miconi 2021; scikit-learn's Ridge,
    # intercept not penalised), solved on the device
    kind: str = "adam"
    alpha: float = 1.0  # ridge penalty
    # also decode these blocks' outputs, each by its own probe of `kind`: null | all | [block indices]
    layers: Any = None
    # the probes' features: quadrants (mean over the 2x2 spatial quadrants: C x 4, Miconi's
    # layerquads) | flatten
    pool: str = "quadrants"


@dataclass
class WandbConfig:
    """Weights & Biases (optional): the resolved config, metrics, pictures and results of a run.
    ``offline`` writes a run folder under the run directory that ``wandb sync`` uploads later;
    a run never fails because wandb is unreachable (it warns and goes on without it)."""

    enabled: bool = False
    mode: str = "offline"  # online | offline | disabled
    project: str = "hebbjax"
    entity: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggingConfig:
    progress: bool = True  # progress bars on the console
    metrics: bool = True  # <run dir>/metrics.jsonl: one JSON line per chunk, epoch and phase
    diagnostics_every: int = 20  # Hebbian diagnostics every N chunks (0: none; always at a phase's end); cost: benchmarks/
    probe_images: int = 256  # the diagnostics' probe batch: the first N images of the phase's split
    plots: bool = True  # <run dir>/plots/*.png at the end of each phase
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class CheckpointConfig:
    """Checkpoints of the training state in ``<run dir>/checkpoints`` (orbax), written at chunk
    boundaries every ``every_minutes`` and at the end of every phase."""

    enabled: bool = True
    every_minutes: float = 5.0  # 0: after every chunk of training.steps_per_chunk steps
    keep: int = 2  # the newest checkpoints kept (older ones are deleted)


@dataclass
class DistributedConfig:
    """One run over several processes (hosts), each with its devices (``jax.distributed``).

    ``enabled`` with the three keys unset: JAX finds them in a cluster it knows (SLURM, Open MPI,
    ...); set them to launch the processes by hand. Every process runs the same command with the
    same ``hydra.run.dir`` (a shared folder); process 0 writes results, metrics and checkpoints."""

    enabled: bool = False
    coordinator_address: Optional[str] = None  # host:port that process 0 listens on
    num_processes: Optional[int] = None
    process_id: Optional[int] = None


@dataclass
class Config:
    experiment: str = "default"
    seed: int = 0
    # a run directory to continue from its last complete checkpoint (the same config)
    resume: Optional[str] = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    readout: ReadoutConfig = field(default_factory=ReadoutConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

#: Keys that change how a run is observed or stored, never what it computes (a resumed run may
#: change them).
OPERATIONAL_KEYS = ("resume", "logging", "checkpoint", "distributed")


_BLOCK_FIELDS = {f.name for f in dataclasses.fields(BlockConfig)}


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the offending key."""


_SPEC = re.compile(r"^\s*([a-z_]+)\s*(?:\(\s*([^()]*)\s*\))?\s*$")


def _parse_spec(key: str, spec: str) -> tuple[str, list[float]]:
    m = _SPEC.match(str(spec))
    if not m:
        raise ConfigError(f"{key}: cannot parse {spec!r}; expected name or name(arg, ...)")
    args = [a.strip() for a in m.group(2).split(",")] if m.group(2) else []
    try:
        return m.group(1), [float(a) for a in args]
    except ValueError:
        raise ConfigError(f"{key}: arguments of {spec!r} must be numbers") from None


def parse_activation(spec: str | None, key: str = "activation") -> tuple[str, float]:
    """``"triangle(0.7)" -> ("triangle", 0.7)``; defaults: power/t/beta 1."""
    if spec is None:
        return "none", 1.0
    name, args = _parse_spec(key, spec)
    if name not in ACTIVATIONS:
        raise ConfigError(f"{key}: unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    if len(args) > ACTIVATIONS[name]:
        raise ConfigError(f"{key}: {name} takes {ACTIVATIONS[name]} argument(s), got {spec!r}")
    return name, (args[0] if args else 1.0)


def parse_pool(spec: str | None, key: str = "pool") -> tuple[str, int, int, int] | None:
    """``"max(4,2,1)" -> ("max", kernel 4, stride 2, padding 1)``; stride defaults to kernel, padding to 0."""
    if spec is None or str(spec).lower() in ("none", "null", ""):
        return None
    name, args = _parse_spec(key, spec)
    if name not in POOLS:
        raise ConfigError(f"{key}: unknown pool {name!r}; expected one of {POOLS}")
    if not 1 <= len(args) <= 3 or any(a != int(a) or a < 0 for a in args):
        raise ConfigError(f"{key}: expected {name}(kernel[, stride[, padding]]) with non-negative ints, got {spec!r}")
    k = int(args[0])
    s = int(args[1]) if len(args) > 1 else k
    p = int(args[2]) if len(args) > 2 else 0
    return name, k, s, p


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """PyTorch/SoftHebb's ``floor((W + 2p - d(k-1) - 1) / s) + 1``."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _choice(key: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{key}: expected one of {list(options)}, got {value!r}")


def rule_hyper(block: BlockConfig, key: str = "block") -> dict[str, Any]:
    """The keyword arguments ``block``'s registered rule reads: from ``rule_options``, else the
    block field of that name."""
    from hebbjax.rules import RULES

    spec = RULES[block.rule]
    unknown = sorted(set(block.rule_options) - set(spec.hyper))
    if unknown:
        raise ConfigError(f"{key}.rule_options: {unknown} not read by rule {block.rule!r}; it reads {list(spec.hyper)}")
    hyper = {}
    for name in spec.hyper:
        if name in block.rule_options:
            hyper[name] = block.rule_options[name]
        elif name in _BLOCK_FIELDS:
            hyper[name] = getattr(block, name)
        else:
            raise ConfigError(f"{key}.rule_options.{name}: rule {block.rule!r} needs it (not a block key); "
                              f"set '+{key.replace('[', '.').replace(']', '')}.rule_options.{name}=...'")
    return hyper


def is_hebbian(block: BlockConfig) -> bool:
    """Whether a block learns by a Hebbian rule (not ``bp``, not ``none``)."""
    from hebbjax.rules import NOT_HEBBIAN

    return block.rule not in NOT_HEBBIAN


def _check_rule(key: str, b: BlockConfig) -> None:
    from hebbjax.rules import NOT_HEBBIAN, RULES

    if b.rule in NOT_HEBBIAN:
        if b.rule_options or b.rule_form != "explicit":
            raise ConfigError(f"{key}.rule_options / {key}.rule_form: a {b.rule!r} block has no rule to pass them to")
        return
    if b.rule not in RULES:
        raise ConfigError(f"{key}.rule: expected one of {sorted(RULES) + list(NOT_HEBBIAN)}, got {b.rule!r}")
    spec = RULES[b.rule]
    _choice(f"{key}.rule_form", b.rule_form, ("explicit", "loss"))
    if b.rule_form == "loss" and spec.surrogate is None:
        raise ConfigError(f"{key}.rule_form: rule {b.rule!r} has no surrogate loss (those that do: "
                          f"{sorted(n for n, r in RULES.items() if r.surrogate is not None)})")
    if b.rule_form == "loss" and b.dopamine.enabled:
        raise ConfigError(f"{key}.rule_form: the surrogate-loss form takes no dopamine; use rule_form: explicit")
    hyper = rule_hyper(b, key)
    message = spec.check(hyper, b.channels) if spec.check is not None else None
    if message:
        raise ConfigError(f"{key}.{message}")


def _check_plasticity(key: str, b: BlockConfig) -> None:
    if not is_hebbian(b):
        return
    if b.lr < 0 and not b.anti_hebbian:
        raise ConfigError(f"{key}.lr: {b.lr} is negative, which reverses the rule (anti-Hebbian learning); "
                          f"set {key}.anti_hebbian=true if that is what you want")
    if b.lr_schedule == "norm" and (b.init == "unit" or b.unit_norm):
        why = "init: unit starts every neuron" if b.init == "unit" else "unit_norm: true keeps every neuron"
        warnings.warn(f"{key}.lr_schedule: 'norm' scales the rate by | |w| - 1 | ** lr_power, and {why} at norm 1, "
                      f"so the block would not learn; use lr_schedule: constant or linear_decay", stacklevel=3)


def check_blocks(blocks: list[BlockConfig], input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Chain shapes through the blocks (``input_shape`` = (H, W, C) or (features,)), validating every
    field; return each block's output shape. Raises :class:`ConfigError` naming ``model.blocks[i].key``."""
    shape = tuple(input_shape)
    shapes = []
    if not blocks:
        raise ConfigError("model.blocks: expected at least one block")
    for i, b in enumerate(blocks):
        key = f"model.blocks[{i}]"
        _choice(f"{key}.layer", b.layer, ("conv", "dense"))
        _check_rule(key, b)
        _check_plasticity(key, b)
        _choice(f"{key}.neuron", b.neuron, ("linear", "log_weight"))
        _choice(f"{key}.input_norm", b.input_norm, ("batchnorm", "standardize", "patch_sum", "none"))
        _choice(f"{key}.padding_mode", b.padding_mode, ("zeros", "reflect", "replicate", "circular"))
        _choice(f"{key}.implementation", b.implementation, ("auto", "xla", "patches"))
        _choice(f"{key}.lr_schedule", b.lr_schedule, ("norm", "constant", "linear_decay"))
        _choice(f"{key}.init", b.init, ("radius", "unit", "positive"))
        _choice(f"{key}.positivity", b.positivity, ("clip", "skip"))
        for name in ("channels", "kernel", "stride", "dilation", "groups"):
            if getattr(b, name) < 1:
                raise ConfigError(f"{key}.{name}: expected a positive integer, got {getattr(b, name)}")
        if b.padding < 0 or b.burn_in < 0:
            raise ConfigError(f"{key}.padding / {key}.burn_in: expected >= 0, got {b.padding} / {b.burn_in}")
        if not 0.0 <= b.dropout < 1.0 or not 0.0 <= b.prune < 1.0:
            raise ConfigError(f"{key}.dropout/prune: expected a probability in [0, 1)")
        if b.neuron == "log_weight" and b.init != "positive":
            raise ConfigError(f"{key}.init: log_weight neurons need positive weights, set init: positive")
        parse_activation(b.activation, f"{key}.activation")
        parse_activation(b.post_pool_activation, f"{key}.post_pool_activation")
        if b.layer == "conv":
            if len(shape) != 3:
                raise ConfigError(f"{key}.layer: a conv block needs an (H, W, C) input, got shape {shape}; flatten only after the last conv")
            h, w, c = shape
            if c % b.groups or b.channels % b.groups:
                raise ConfigError(f"{key}.groups: {b.groups} must divide input channels {c} and channels {b.channels}")
            if b.padding_mode == "reflect" and b.padding >= min(h, w):
                raise ConfigError(f"{key}.padding: reflect padding {b.padding} needs inputs larger than it, got {h}x{w}")
            h, w = (conv_out(s, b.kernel, b.stride, b.padding, b.dilation) for s in (h, w))
            if h < 1 or w < 1:
                raise ConfigError(f"{key}.kernel: kernel {b.kernel} (dilation {b.dilation}) does not fit the {shape[0]}x{shape[1]} input with padding {b.padding}")
            shape = (h, w, b.channels)
        else:  # a dense block sees its input flattened
            shape = (b.channels,)
        pool = parse_pool(b.pool, f"{key}.pool")
        if pool is not None:
            if len(shape) != 3:
                raise ConfigError(f"{key}.pool: pooling needs an (H, W, C) output, got {shape}")
            _, k, s, p = pool
            if 2 * p > k:
                raise ConfigError(f"{key}.pool: padding {p} must be at most half the kernel {k}")
            h, w = (conv_out(x, k, s, p) for x in shape[:2])
            if h < 1 or w < 1:
                raise ConfigError(f"{key}.pool: {b.pool} does not fit the {shape[0]}x{shape[1]} feature map")
            shape = (h, w, shape[2])
        if b.flatten:
            shape = (math.prod(shape),)
        shapes.append(shape)
    return shapes


def _check_reward(cfg: Config) -> None:
    """The reward method's keys: only it reads them, and it can gate only Hebbian rules that take
    a per-sample modulation."""
    import inspect

    from hebbjax.rules import RULES

    t = cfg.training
    reward = t.method == "reward"
    if reward and t.mode != "consecutive":
        raise ConfigError(f"training.mode: the reward method trains every Hebbian block together; set consecutive (got {t.mode})")
    if reward and t.decision == "neural_prob" and t.decision_window < t.unsup_batch_size:
        raise ConfigError(f"training.decision_window: {t.decision_window} images cannot hold a batch of {t.unsup_batch_size}")
    for i, b in enumerate(cfg.model.blocks):
        key = f"model.blocks[{i}]"
        if (b.dopamine.enabled or b.explore != 0) and not reward:
            raise ConfigError(f"{key}.dopamine / {key}.explore: only training.method=reward reads them (got method={cfg.training.method})")
        if b.explore < 0:
            raise ConfigError(f"{key}.explore: expected a noise fraction >= 0, got {b.explore}")
        if not b.dopamine.enabled and b.explore == 0:
            continue
        if not is_hebbian(b):
            raise ConfigError(f"{key}.dopamine / {key}.explore: a {b.rule!r} block has no Hebbian update to gate; "
                              f"give them to Hebbian blocks")
        params = inspect.signature(getattr(RULES[b.rule].fn, "__wrapped__", RULES[b.rule].fn)).parameters
        takes = "modulation" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        if b.dopamine.enabled and not takes:
            raise ConfigError(f"{key}.rule: {b.rule!r} takes no per-sample modulation, so dopamine cannot gate it")
        if b.dopamine.enabled:
            _choice(f"{key}.dopamine.map", b.dopamine.map, ("table", "linear"))


def _check_readout(cfg: Config) -> None:
    r, t = cfg.readout, cfg.training
    _choice("readout.kind", r.kind, ("adam", "ridge"))
    _choice("readout.pool", r.pool, ("quadrants", "flatten"))
    if r.alpha <= 0:
        raise ConfigError(f"readout.alpha: expected a positive ridge penalty, got {r.alpha}")
    n = len(cfg.model.blocks)
    layers = r.layers
    if layers is not None and layers != "all" and not (isinstance(layers, (list, tuple)) and layers
                                                       and all(isinstance(i, int) and 0 <= i < n for i in layers)):
        raise ConfigError(f"readout.layers: expected null, all, or a list of block indices in [0, {n}), got {layers!r}")
    if r.kind == "ridge":
        why = ("the reward method decides by itself" if t.method == "reward" else "backprop trains the network end to end"
               if t.method == "bp" else "its Hebbian blocks learn during the readout" if t.mode == "simultaneous"
               else "augmented images give no fixed features" if cfg.data.augment else None)
        if why:
            raise ConfigError(f"readout.kind: ridge fits the classifier on cached features once, but {why}; use adam")


def check_config(cfg: Config, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Validate the training and model sections for inputs of ``input_shape``; returns the block
    output shapes (of the blocks the training method trains, :func:`resolve`)."""
    from hebbjax.train.protocol import MODES

    t = cfg.training
    _choice("training.method", t.method, ("hebbian", "bp", "random", "reward"))
    _choice("training.mode", t.mode, tuple(MODES))
    _choice("training.readout_schedule", t.readout_schedule, ("halving", "constant"))
    _choice("training.decision", t.decision, ("neural_prob", "neural_dopa"))
    for name in ("unsup_batch_size", "readout_batch_size", "eval_batch_size", "steps_per_chunk", "decision_window"):
        if getattr(t, name) < 1:
            raise ConfigError(f"training.{name}: expected a positive integer, got {getattr(t, name)}")
    for name in ("unsup_epochs", "readout_epochs", "reward_epochs"):
        if getattr(t, name) < 0:
            raise ConfigError(f"training.{name}: expected >= 0, got {getattr(t, name)}")
    _check_reward(cfg)
    _choice("model.matmul_dtype", cfg.model.matmul_dtype, ("float32", "bfloat16"))
    if not 0.0 <= cfg.model.classifier_dropout < 1.0:
        raise ConfigError(f"model.classifier_dropout: expected a probability in [0, 1), got {cfg.model.classifier_dropout}")
    _check_readout(cfg)
    lg = cfg.logging
    _choice("logging.wandb.mode", lg.wandb.mode, ("online", "offline", "disabled"))
    if lg.diagnostics_every < 0 or lg.probe_images < 1:
        raise ConfigError(f"logging.diagnostics_every / logging.probe_images: expected >= 0 and >= 1, got {lg.diagnostics_every} / {lg.probe_images}")
    c = cfg.checkpoint
    if c.every_minutes < 0 or c.keep < 1:
        raise ConfigError(f"checkpoint.every_minutes / checkpoint.keep: expected >= 0 and >= 1, got {c.every_minutes} and {c.keep}")
    return check_blocks(list(resolve(cfg).model.blocks), input_shape)


def resolve(cfg: Config) -> Config:
    """The config with the blocks its training method trains: ``bp`` trains every block by
    backprop, ``random`` freezes the Hebbian blocks at their initialisation; ``hebbian`` as given."""
    method = cfg.training.method
    if method == "bp":
        blocks = [dataclasses.replace(b, rule="bp", rule_options={}, rule_form="explicit") for b in cfg.model.blocks]
    elif method == "random":
        blocks = [dataclasses.replace(b, rule="none", rule_options={}, rule_form="explicit") if is_hebbian(b) else b
                  for b in cfg.model.blocks]
    else:
        return cfg
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, blocks=blocks))


def check(cfg: Config, spec: Any = None) -> list[tuple[int, ...]]:
    """Every check that needs no data, given the dataset's registered spec
    (:func:`hebbjax.data.get_spec`, looked up from ``data.name`` when not given): dataset name,
    shapes chaining from its image shape, augmentation names and options, data keys, training
    and model keys. Returns the block output shapes. Raises :class:`ConfigError` naming the key."""
    from hebbjax.data import get_spec
    from hebbjax.data.augment import AUGMENTATIONS
    from hebbjax.data.errors import UnknownDatasetError

    if spec is None:
        try:
            spec = get_spec(cfg.data.name)
        except UnknownDatasetError as err:
            raise ConfigError(f"data.name: {err}") from None
    shapes = check_config(cfg, spec.image_shape)
    d = cfg.data
    for key, names in (("data.augment", d.augment), ("data.unsup_augment", d.unsup_augment)):
        unknown = [name for name in names if name not in AUGMENTATIONS]
        if unknown:
            raise ConfigError(f"{key}: unknown augmentation(s) {unknown}; expected any of {sorted(AUGMENTATIONS)}")
    _check_augment_options(d.augment_options, min(spec.image_shape[:2]))
    _choice("data.placement", d.placement, ("auto", "in_memory", "stream"))
    _choice("data.whiten", d.whiten, (None, "zca"))
    if d.whiten_images < 2 or d.whiten_eps <= 0:
        raise ConfigError(f"data.whiten_images / data.whiten_eps: expected >= 2 images and eps > 0, got {d.whiten_images} / {d.whiten_eps}")
    if d.placement == "in_memory" and not spec.in_memory:
        raise ConfigError(f"data.placement: {spec.name!r} is too large for memory; use stream (or auto)")
    for key in ("limit_train", "limit_unsup"):
        if getattr(d, key) is not None and getattr(d, key) < 1:
            raise ConfigError(f"data.{key}: expected a positive number of samples, got {getattr(d, key)}")
    if d.unsup_split is not None:
        try:
            spec.tfds_split(d.unsup_split)
        except ValueError as err:
            raise ConfigError(f"data.unsup_split: {err}") from None
        if d.unsup_split not in ("train", "unlabelled"):  # never the images a run is evaluated on
            raise ConfigError(f"data.unsup_split: expected a split without evaluation images (train, unlabelled), got {d.unsup_split!r}")
    t = cfg.training
    if t.method != "hebbian" or t.mode == "simultaneous":
        for key in ("unsup_split", "limit_unsup", "unsup_augment"):
            if getattr(d, key) not in (None, []):
                why = "the reward method learns from labelled training images (its rewards compare decisions with labels)" \
                    if t.method == "reward" else "only the unsupervised phase reads it, which runs with training.method=hebbian " \
                    f"in mode successive or consecutive (got method={t.method}, mode={t.mode})"
                raise ConfigError(f"data.{key}: {why}")
    if t.method == "reward" and t.decision == "neural_dopa" and shapes[-1] != (spec.num_classes,):
        raise ConfigError(f"training.decision: neural_dopa decides by the last block, which needs {spec.num_classes} channels "
                          f"(one per class) and a flat output; it gives {shapes[-1]}")
    _check_distributed(cfg.distributed)
    return shapes


def _check_distributed(dist: DistributedConfig) -> None:
    given = {k: getattr(dist, k) for k in ("coordinator_address", "num_processes", "process_id")}
    if any(v is not None for v in given.values()) and not dist.enabled:
        raise ConfigError("distributed.enabled: coordinator_address / num_processes / process_id are set; set enabled=true")
    if dist.num_processes is not None and dist.num_processes < 1:
        raise ConfigError(f"distributed.num_processes: expected >= 1, got {dist.num_processes}")
    if dist.process_id is not None and not 0 <= dist.process_id < (dist.num_processes or dist.process_id + 1):
        raise ConfigError(f"distributed.process_id: expected 0 <= process_id < num_processes ({dist.num_processes}), "
                          f"got {dist.process_id}")
    address = dist.coordinator_address
    if address is not None and (address.count(":") < 1 or not address.rsplit(":", 1)[1].isdigit()):
        raise ConfigError(f"distributed.coordinator_address: expected host:port, got {address!r}")


def _check_augment_options(options: AugmentOptions, side: int) -> None:
    for key in ("scale", "ratio"):
        low_high = list(getattr(options, key))
        if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1]:
            raise ConfigError(f"data.augment_options.{key}: expected [low, high] with 0 < low <= high, got {low_high}")
    if not 0 <= options.padding < side:
        raise ConfigError(f"data.augment_options.padding: expected 0 <= padding < {side} (the image side), got {options.padding}")
    if not 0.0 <= options.flip_prob <= 1.0:
        raise ConfigError(f"data.augment_options.flip_prob: expected a probability in [0, 1], got {options.flip_prob}")
    if options.noise_std < 0:
        raise ConfigError(f"data.augment_options.noise_std: expected >= 0, got {options.noise_std}")


def check_sizes(cfg: Config, num_train: int, num_unsup: int) -> None:
    """Batch sizes against the sizes of the loaded splits (known only once they are loaded)."""
    t = cfg.training
    checks = []
    if t.method == "reward":  # both phases read the labelled training images
        checks.append(("unsup_batch_size", num_train, "training", "data.limit_train"))
    else:
        if t.method == "hebbian" and t.mode != "simultaneous" and t.unsup_epochs > 0:
            checks.append(("unsup_batch_size", num_unsup, "unsupervised", "data.limit_train / data.limit_unsup"))
        if t.readout_epochs > 0:
            checks.append(("readout_batch_size", num_train, "training", "data.limit_train"))
    for key, n, split, limits in checks:
        if getattr(t, key) > n:
            raise ConfigError(f"training.{key}: {getattr(t, key)} is larger than the {split} set ({n} images; see {limits})")


def to_dataclass(cfg: Any) -> Config:
    """An OmegaConf config (validated against :class:`Config`) -> plain frozen-free dataclasses."""
    from omegaconf import OmegaConf

    _reject_unknown_keys(OmegaConf.to_container(cfg, resolve=False), Config, "")
    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, Config):
        raise ConfigError(f"expected a config of type Config, got {type(obj).__name__}")
    return obj


def _reject_unknown_keys(node: Any, schema: type, prefix: str) -> None:
    """Hydra lets ``+key=value`` add keys even to a structured config; refuse them, naming the key.
    Walks the schema's own field types: nested dataclasses and lists of dataclasses (blocks)."""
    if not isinstance(node, dict):
        return
    hints = typing.get_type_hints(schema)
    for key, value in node.items():
        if key == "hydra":
            continue
        full = f"{prefix}{key}"
        if key not in hints:
            raise ConfigError(f"{full}: unknown key; expected one of {sorted(hints)}")
        ftype = hints[key]
        if dataclasses.is_dataclass(ftype):
            _reject_unknown_keys(value, ftype, f"{full}.")
        elif typing.get_origin(ftype) is list and isinstance(value, list):
            (item,) = typing.get_args(ftype)
            if dataclasses.is_dataclass(item):
                for i, element in enumerate(value):
                    _reject_unknown_keys(element, item, f"{full}[{i}].")


def from_dict(values: dict[str, Any]) -> Config:
    """A :class:`Config` from nested dicts (``dataclasses.asdict`` of one, a checkpoint's)."""
    from omegaconf import OmegaConf

    return to_dataclass(OmegaConf.merge(OmegaConf.structured(Config), values))


def differences(a: dict[str, Any], b: dict[str, Any], ignore: tuple[str, ...] = OPERATIONAL_KEYS) -> list[str]:
    """Dotted keys whose values differ between two nested config dicts (``ignore``: top-level
    sections left out), e.g. ``["model.blocks[0].lr: 0.08 != 0.1"]``."""
    out: list[str] = []

    def walk(x: Any, y: Any, key: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y)):
                if not key and k in ignore:
                    continue
                walk(x.get(k, "<missing>"), y.get(k, "<missing>"), f"{key}.{k}" if key else str(k))
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{key}[{i}]")
        elif x != y:
            out.append(f"{key}: {x!r} != {y!r}")

    walk(a, b, "")
    return out
