"""Flax layers whose forward pass exposes what a plasticity rule needs.

A Hebbian layer returns :class:`hebbjax.rules.Activations`: the (padded) input of its linear map,
the pre-activation ``u`` and, once its block has computed it, the post-synaptic activity ``y``.
The training step hands them to a rule from :mod:`hebbjax.rules`; the same rule functions serve
a user's own JAX code.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from hebbjax.rules import Activations, Conv, Dense, winner_mask
from hebbjax.rules.linear import Array, window_views

# ----------------------------------------------------------------------------------------------
# Activations (SoftHebb activation.py, Miconi's triangle): competition over the channel axis (last)
# ----------------------------------------------------------------------------------------------


def triangle(u: Array, power: float = 1.0) -> Array:
    """``relu(u - mean_c u) ** power`` (Coates et al. 2011; SoftHebb's Triangle; the mean is over
    channels at each position and carries no gradient)."""
    return jax.nn.relu(u - jax.lax.stop_gradient(jnp.mean(u, axis=-1, keepdims=True))) ** power


def repu(u: Array, power: float = 1.0) -> Array:
    """Rectified power unit ``relu(u) ** power``."""
    return jax.nn.relu(u) ** power


def apply_activation(name: str, param: float, u: Array) -> Array:
    """The block activations by name; ``param`` is the power, inverse temperature or gain."""
    if name == "none":
        return u
    if name == "relu":
        return jax.nn.relu(u)
    if name == "triangle":
        return triangle(u, param)
    if name == "repu":
        return repu(u, param)
    if name == "softmax":
        return jax.nn.softmax(param * u, axis=-1)
    if name == "exp":
        return jnp.exp(param * u)
    if name == "tanh":
        return jnp.tanh(param * u)
    if name == "sigmoid":
        return jax.nn.sigmoid(param * u)
    if name == "hard":
        return winner_mask(u)
    if name == "kwta":
        return kwta(u, int(param))
    raise ValueError(f"activation: unknown {name!r}")


def kwta(u: Array, k: int = 1) -> Array:
    """k-winners-take-all over channels: ``relu(u)`` at the ``k`` largest values, 0 elsewhere
    (Miconi 2021's sparse propagated output, without the triangle)."""
    kth = jax.lax.top_k(u, k)[0][..., k - 1 : k]
    return jnp.where(u >= kth, jax.nn.relu(u), jnp.zeros((), u.dtype))


def pool2d(kind: str, x: Array, kernel: int, stride: int, padding: int) -> Array:
    """PyTorch-semantics pooling: max pads with -inf; avg counts the zero padding (PyTorch's
    ``count_include_pad=True``); sum is Holca-Lamarre's subsampling.

    Max pooling on CPU is :func:`max_pool_views` (same values and gradient, faster forward
    there); elsewhere XLA's ``reduce_window``."""
    pads = ((padding, padding), (padding, padding))
    if kind == "max":
        if jax.default_backend() == "cpu":
            return max_pool_views(x, kernel, stride, padding)
        return _xla_max_pool(x, kernel, stride, padding)
    if kind == "avg":
        return nn.avg_pool(x, (kernel, kernel), (stride, stride), pads, count_include_pad=True)
    if kind == "sum":
        return nn.avg_pool(x, (kernel, kernel), (stride, stride), pads, count_include_pad=True) * (kernel * kernel)
    raise ValueError(f"pool: unknown {kind!r}")


def _window_views(x: Array, kernel: int, stride: int, padding: int) -> list[Array]:
    """The pooling windows' strided views of the ``-inf``-padded input (see :func:`window_views`)."""
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), constant_values=-jnp.inf)
    return window_views(xp, (kernel, kernel), (stride, stride))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool_views(x: Array, kernel: int, stride: int, padding: int) -> Array:
    """Max pooling as the elementwise maximum of the window views (``-inf`` padding).

    The forward pass is faster than XLA's ``reduce_window`` on CPU (1.6-2.5x for max(4,2,1) at
    batch 64, ``benchmarks/bench_cpu_kernels.py``, 2026-11-23). The gradient is XLA's
    (``select_and_scatter``: each output's cotangent goes to one maximum of its window): autodiff
    of the ``maximum`` chain splits ties, and a hand-written first-maximum scatter over the views,
    tried the same day, made a whole backprop step slower."""
    return functools.reduce(jnp.maximum, _window_views(x, kernel, stride, padding))


def _xla_max_pool(x: Array, kernel: int, stride: int, padding: int) -> Array:
    return nn.max_pool(x, (kernel, kernel), (stride, stride), ((padding, padding), (padding, padding)))


def _max_pool_fwd(x, kernel, stride, padding):
    return max_pool_views(x, kernel, stride, padding), x


def _max_pool_bwd(kernel, stride, padding, x, g):
    return jax.vjp(lambda v: _xla_max_pool(v, kernel, stride, padding), x)[1](g)


max_pool_views.defvjp(_max_pool_fwd, _max_pool_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def dense_dot(x: Array, kernel: Array, dimension_numbers=None, precision=None) -> Array:
    """``x @ kernel`` for ``flax.linen.Dense(dot_general=dense_dot)``, with the same values and
    gradients as ``lax.dot_general``, but a kernel cotangent formed as ``(g^T x)^T``.

    A readout on wide features has a tall, thin kernel (24576 x 10 for cifar_softhebb4). XLA's CPU
    GEMM writes a (features x classes) product ``x^T g`` at half the speed of the (classes x
    features) one ``g^T x`` (2.1 vs 1.1 ms for 64 x 24576 -> 10 on the 2-core dev VM, 2026-12-02):
    transposing that small result instead took a readout step with dropout (Adam, batch 64) from
    4.3 to 3.2 ms there (``benchmarks/bench_cpu_kernels.py`` has the A/B line). The sums are the same, over the same rows: 100 Adam steps gave
    bit-identical parameters on CPU. ``dimension_numbers`` must be Dense's (the last axis
    of ``x`` with the first of ``kernel``)."""
    return _dense(x, kernel, dimension_numbers, precision)


def _dense(x: Array, kernel: Array, dimension_numbers, precision) -> Array:
    if dimension_numbers is not None and tuple(map(tuple, dimension_numbers[0])) != ((x.ndim - 1,), (0,)):
        raise ValueError(f"dense_dot: expected Dense's contraction (((x.ndim - 1,), (0,)), ...), got {dimension_numbers}")
    return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)


def _dense_dot_fwd(x, kernel, dimension_numbers, precision):
    return _dense(x, kernel, dimension_numbers, precision), (x, kernel)


def _dense_dot_bwd(dimension_numbers, precision, residuals, g):
    x, kernel = residuals
    dx = jax.lax.dot_general(g, kernel, (((g.ndim - 1,), (1,)), ((), ())), precision=precision)
    rows = tuple(range(x.ndim - 1))
    # the barrier keeps XLA from folding the transpose back into a (features x classes) GEMM
    dk = jax.lax.optimization_barrier(jax.lax.dot_general(g, x, ((rows, rows), ((), ())), precision=precision)).T
    return dx, dk


dense_dot.defvjp(_dense_dot_fwd, _dense_dot_bwd)


# ----------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------


class BatchNorm(nn.Module):
    """Affine-free batch normalisation with PyTorch's semantics (``BatchNorm2d(affine=False)``,
    which SoftHebb puts before every block), over every axis but the last (channels).

    Training: ``y = (x - m) / sqrt(v + eps)`` with the batch mean ``m`` and the biased batch
    variance ``v`` over all ``n`` values per channel (batch x positions, on every device when
    ``axis_name`` is set); the running statistics move by ``momentum`` towards ``m`` and towards
    the *unbiased* variance ``v n / (n - 1)`` (flax's BatchNorm keeps the biased one). Evaluation
    normalises with the running statistics. Variables ``batch_stats``: ``mean`` (init 0), ``var``
    (init 1). ``rows`` (in the call): the global batch's real samples, the first ``rows``; the
    statistics leave out the padding behind them (:func:`real_samples`).
    """

    use_running_average: bool = False
    momentum: float = 0.1  # PyTorch's convention: the weight of the new batch
    epsilon: float = 1e-5
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: Array, rows: int | None = None) -> Array:
        features = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), x.dtype))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), x.dtype))
        valid = None if self.use_running_average else real_samples(x.shape[0], rows, self.axis_name)
        if self.use_running_average:
            mean, var = ra_mean.value, ra_var.value
        elif valid is not None:  # a padded global batch: sums over the real samples only
            axes, per_sample = tuple(range(x.ndim - 1)), math.prod(x.shape[1:-1])
            n = rows * per_sample
            weight = valid.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)
            mean = jax.lax.psum(jnp.sum(weight * x, axes), self.axis_name) / n
            var = jax.lax.psum(jnp.sum(weight * jnp.square(x - mean), axes), self.axis_name) / n
        else:
            axes = tuple(range(x.ndim - 1))
            n = math.prod(x.shape[:-1])
            mean = jnp.mean(x, axes)
            if self.axis_name is not None:
                mean = jax.lax.pmean(mean, self.axis_name)
            var = jnp.mean(jnp.square(x - mean), axes)  # two passes: no cancellation
            if self.axis_name is not None:
                var = jax.lax.pmean(var, self.axis_name)
                n *= jax.lax.axis_size(self.axis_name)
        if not self.use_running_average and not self.is_initializing():
            ra_mean.value = (1 - self.momentum) * ra_mean.value + self.momentum * mean
            ra_var.value = (1 - self.momentum) * ra_var.value + self.momentum * var * (n / max(n - 1, 1))
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon)


# ----------------------------------------------------------------------------------------------
# Whole-image ZCA whitening (Miconi 2021, HebbGrad notebook ``ZCA='IMAGE'``), on the device
# ----------------------------------------------------------------------------------------------
# Each image is standardised over all its values, then multiplied, as a vector of D = H W C values,
# by M = E diag((lambda + eps)^-1/2) E^T, where E, lambda are the eigenvectors and eigenvalues of
# T^T T / D over N standardised training images T (N, D) (the notebook divides by D; the scale only
# sets how much eps regularises).


def standardize(x: Array, eps: float = 1e-5) -> Array:
    """Per sample: subtract its mean, divide by its standard deviation (over all non-batch axes;
    Miconi 2021 before every layer, and before whitening)."""
    axes = tuple(range(1, x.ndim))
    return (x - jnp.mean(x, axes, keepdims=True)) / (jnp.std(x, axes, keepdims=True) + eps)


def zca_matrix(images: Array, eps: float = 1e-3) -> Array:
    """``M (D, D)`` from training images ``(N, H, W, C)`` (float)."""
    t = standardize(images).reshape(images.shape[0], -1)
    cov = t.T @ t / t.shape[1]
    values, vectors = jnp.linalg.eigh(cov)
    return (vectors * jax.lax.rsqrt(jnp.maximum(values, 0.0) + eps)) @ vectors.T


def zca(images: Array, matrix: Array) -> Array:
    """Whitened images: standardised, then ``x @ M`` (``M`` is symmetric), in their own shape."""
    flat = standardize(images).reshape(images.shape[0], -1)
    return (flat @ matrix).reshape(images.shape)


# ----------------------------------------------------------------------------------------------
# Random draws (dropout, padded batches: the same per sample on any device count)
# ----------------------------------------------------------------------------------------------


def threefry_key(key: jax.Array) -> jax.Array:
    """A threefry key drawn from ``key`` (of any implementation). Threefry is counter-based (a
    vmapped draw equals the draws one key at a time), and on CPU its bits are far cheaper than
    those of the ``rbg`` keys of the training state (XLA's RngBitGenerator): a cifar_softhebb4
    readout step with dropout takes 2.6 ms instead of 7.6 (benchmarks/README.md)."""
    return jax.random.wrap_key_data(jax.random.bits(key, (2,), jnp.uint32), impl="threefry2x32")


_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def random_words(key: jax.Array, n: int) -> Array:
    """``jax.random.bits(key, (n,), jnp.uint32)``, bit for bit, with threefry's hash unrolled.

    Threefry-2x32 (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3", 20 rounds):
    with key words ``k_0, k_1`` and ``k_2 = k_0 ^ k_1 ^ 0x1BD11BDA``, a counter pair ``(x1, x2)``
    starts as ``(x1 + k_0, x2 + k_1)``; then for s = 1..5, four rounds ``x1 += x2;
    x2 = rotl(x2, r) ^ x1`` (rotations ``13 15 26 6`` for odd s, ``17 29 16 24`` for even s)
    followed by the key injection ``x1 += k_{s mod 3}; x2 += k_{(s+1) mod 3} + s``. JAX's word
    ``i`` (with its default ``jax_threefry_partitionable``) is ``x1 ^ x2`` of the pair ``(0, i)``.
    XLA's CPU lowering of JAX's threefry is a rolled loop of five iterations that copies its state
    every iteration; unrolled, the 20 rounds fuse into one pass (the 49152 words of a
    cifar_softhebb4 readout mask: 0.16 instead of 0.44 ms on the 2-core dev VM; benchmarks/README.md).
    Keys of other implementations, and the non-partitionable threefry, draw ``jax.random.bits``."""
    if str(jax.random.key_impl(key)) != "threefry2x32" or not jax.config.jax_threefry_partitionable:
        return jax.random.bits(key, (n,), jnp.uint32)
    if not 0 <= n < 2**32:
        raise ValueError(f"random_words: n must be in [0, 2**32), got {n}")
    k = jax.random.key_data(key)
    ks = (k[0], k[1], k[0] ^ k[1] ^ jnp.uint32(0x1BD11BDA))
    x1, x2 = jnp.zeros((n,), jnp.uint32) + ks[0], jax.lax.iota(jnp.uint32, n) + ks[1]
    for i in range(5):
        for r in _THREEFRY_ROTATIONS[i % 2]:
            x1 = x1 + x2
            x2 = ((x2 << jnp.uint32(r)) | (x2 >> jnp.uint32(32 - r))) ^ x1
        x1, x2 = x1 + ks[(i + 1) % 3], x2 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    # ``// one`` (exact) keeps XLA from fusing the hash into a consumer that reads each word 32
    # times (keep_mask): XLA does not duplicate a division, and on CPU it ignores optimization_barrier
    one = (k[0] | jnp.uint32(1)) // (k[0] | jnp.uint32(1))
    return (x1 ^ x2) // one


def keep_mask(key: jax.Array, keep_prob: float, shape: tuple[int, ...]) -> Array:
    """Independent Bernoulli(``keep_prob``) draws of ``shape``, exactly.

    When ``keep_prob * 2**k`` is an integer for some k in {1, 2, 4, 8} (dropout 0.5, 0.25, 0.75
    ...), each 32-bit random word gives 32 / k draws: field ``f`` of k bits is uniform on
    [0, 2**k), and ``f < keep_prob * 2**k`` has probability ``keep_prob``. That is 32 / k times
    fewer random bits than ``jax.random.bernoulli`` (one float per draw); on CPU the random bits
    dominate a readout step (benchmarks/README.md). Other probabilities use ``bernoulli``.
    """
    for k in (1, 2, 4, 8):
        threshold = keep_prob * 2**k
        if threshold == int(threshold):
            size = math.prod(shape)
            words = random_words(key, -(-size * k // 32))
            fields = (words[:, None] >> jnp.arange(0, 32, k, dtype=jnp.uint32)) & jnp.uint32(2**k - 1)
            return (fields.reshape(-1)[:size] < jnp.uint32(threshold)).reshape(shape)
    return jax.random.bernoulli(key, keep_prob, shape)


def real_samples(local: int, rows: int | None, axis_name: str | None) -> Array | None:
    """Which of this device's ``local`` rows are real samples: the first ``rows`` of the global
    batch are, the rest is the padding that makes it divisible by the devices
    (:func:`hebbjax.train.parallel.padded_size`). ``None`` when nothing is padded (``rows`` is
    ``None`` or the whole global batch), so unpadded steps keep their arithmetic unchanged."""
    devices = 1 if axis_name is None else jax.lax.axis_size(axis_name)
    if rows is None or rows == devices * local:
        return None
    if not 0 < rows <= devices * local:
        raise ValueError(f"rows: expected 1..{devices * local} real samples in a global batch of {devices} x {local}, got {rows}")
    first = 0 if axis_name is None else jax.lax.axis_index(axis_name) * local
    return first + jnp.arange(local) < rows


def global_draw(draw: Callable[[jax.Array, tuple[int, ...]], Array], key: jax.Array, shape: tuple[int, ...],
                axis_name: str | None, rows: int | None = None) -> Array:
    """``draw(key, shape)`` for this device's rows of the global batch.

    Inside a data-parallel map over ``axis_name`` (``shape[0]`` rows per device, the same ``key`` on
    every device) each device draws for the whole global batch and keeps its rows, so a sample gets
    the same random values on any number of devices (the draws are cheap next to the step on a GPU;
    a one-device run draws exactly ``shape``). ``rows``: the real samples of a padded global batch
    (:func:`real_samples`); the draw is made for them alone, the padding gets zeros, so padding
    changes no sample's draw. ``axis_name=None``: ``draw(key, shape)``.
    """
    if axis_name is None:
        return draw(key, shape)
    n, b = jax.lax.axis_size(axis_name), shape[0]
    total = n * b if rows is None else rows
    values = draw(key, (total, *shape[1:]))
    if total < n * b:
        values = jnp.concatenate([values, jnp.zeros((n * b - total, *shape[1:]), values.dtype)])
    return jax.lax.dynamic_slice_in_dim(values, jax.lax.axis_index(axis_name) * b, b)


class Dropout(nn.Module):
    """Inverted dropout (as ``flax.linen.Dropout``: kept values scaled by ``1 / (1 - rate)``)
    with masks from :func:`keep_mask`; draws with a :func:`threefry_key` from the ``dropout`` RNG
    stream, for the global batch when ``axis_name`` is set (:func:`global_draw`; ``rows``: its
    real samples)."""

    rate: float
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: Array, deterministic: bool, rows: int | None = None) -> Array:
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        key = threefry_key(self.make_rng("dropout"))
        mask = global_draw(lambda k, shape: keep_mask(k, keep, shape), key, x.shape, self.axis_name, rows)
        return jnp.where(mask, x / keep, jnp.zeros((), x.dtype))


# ----------------------------------------------------------------------------------------------
# Initialisers
# ----------------------------------------------------------------------------------------------


def radius_init(radius: float, gaussian: bool) -> Callable:
    """SoftHebb's init (``train.check_dimension``, Lebesgue p = 2): every neuron's norm is about
    ``radius``. Gaussian ``N(0, (r / sqrt(n))^2)`` when the block normalises its input (BN), else
    uniform ``U[0, r sqrt(3 / n))``; ``n`` = fan-in."""

    def init(key, shape, dtype=jnp.float32):
        fan_in = math.prod(shape[:-1])
        if gaussian:
            return radius / math.sqrt(fan_in) * jax.random.normal(key, shape, dtype)
        return jax.random.uniform(key, shape, dtype, 0.0, radius * math.sqrt(3.0 / fan_in))

    return init


def unit_norm_init(key, shape, dtype=jnp.float32):
    """Miconi (2021): ``0.01 N(0, 1)``, every neuron then scaled to unit norm."""
    w = 0.01 * jax.random.normal(key, shape, dtype)
    return w / jnp.linalg.norm(w.reshape(-1, shape[-1]), axis=0)


def positive_init(offset: float) -> Callable:
    """Holca-Lamarre: ``U[0, 1) + offset`` (positive weights for log-weight neurons)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype) + offset

    return init


def torch_default_init(key, shape, dtype=jnp.float32):
    """PyTorch's default for ``nn.Linear``/``nn.Conv2d`` weights and biases: ``U(+-1/sqrt(fan_in))``."""
    fan_in = math.prod(shape[:-1]) if len(shape) > 1 else shape[0]
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


def sum_to(x: Array, total: float, offset: float = 1e-5) -> Array:
    """Holca-Lamarre's feed-forward inhibition over the last axis: ``x <- (A - D) x / sum(x) + 1``
    (sums to ``A = total``; ``D`` = the axis length, so every value is at least 1), after adding
    ``offset`` to every value as hebbianCNN adds 1e-5 to its images: a blank patch becomes uniform
    (``A / D`` everywhere) instead of 0 / 0."""
    d = x.shape[-1]
    x = x + offset
    return (total - d) * x / jnp.sum(x, -1, keepdims=True) + 1.0


class HebbianDense(nn.Module):
    """Dense layer ``u = x @ kernel (+ bias)`` on the flattened input, kernel ``(in, features)``;
    returns Activations.

    ``log_weight``: Holca-Lamarre's Poisson-mixture neurons, ``u = x @ log(kernel)``; the rule
    still sees the raw kernel (``dw ~ y (x - w)`` on ``w``), since the correlation only needs
    the map's structure, which is the same. ``patch_sum_to``: each input scaled by
    :func:`sum_to` first (Holca-Lamarre's shallow network).
    """

    features: int
    use_bias: bool = False
    log_weight: bool = False
    patch_sum_to: float | None = None
    kernel_init: Callable = torch_default_init
    frozen: bool = False  # no gradient flows into the kernel (Hebbian-trained or fixed)
    matmul_dtype: str = "float32"  # bfloat16: the products' inputs rounded (hebbjax.rules.matmul)

    @nn.compact
    def __call__(self, x: Array) -> Activations:
        x = x.reshape(x.shape[0], -1)  # SoftHebb's MLP blocks: Flatten before the layer
        if self.patch_sum_to is not None:
            x = sum_to(x, self.patch_sum_to)
        return _dense_activations(self, x)


def _dense_activations(mod: nn.Module, x: Array) -> Activations:
    """The dense map of ``HebbianDense`` and of ``HebbianConv``'s patches form (inside ``mod``'s scope)."""
    kernel = mod.param("kernel", mod.kernel_init, (x.shape[-1], mod.features))
    bias = mod.param("bias", nn.initializers.zeros, (mod.features,)) if mod.use_bias else None
    if mod.frozen:
        kernel, bias = jax.lax.stop_gradient((kernel, bias))
    lin = Dense(matmul_dtype=mod.matmul_dtype)
    u = lin(jnp.log(kernel) if mod.log_weight else kernel, x)
    if bias is not None:
        u = u + bias
    return Activations(lin, x, u)


class HebbianConv(nn.Module):
    """2-D convolution (NHWC, HWIO kernel) with reflect/replicate/circular/zero padding, strides,
    dilation and feature groups; returns Activations whose ``x`` is the explicitly padded input.

    ``patch_sum_to`` (Holca-Lamarre's feed-forward inhibition) or ``log_weight`` switch to the
    patches form: the input becomes its patches (channel-major, ``(B, H', W', C k k)``), each
    optionally rescaled to ``x <- (A - D) x / sum(x) + 1`` (sums to ``A``; D = patch size), and the
    layer is a dense map on them with kernel ``(C k k, features)``.
    """

    features: int
    kernel_size: int = 3
    strides: int = 1
    padding: int = 0
    padding_mode: str = "reflect"
    dilation: int = 1
    feature_group_count: int = 1
    use_bias: bool = False
    log_weight: bool = False
    patch_sum_to: float | None = None
    implementation: str = "auto"
    kernel_init: Callable = torch_default_init
    frozen: bool = False
    matmul_dtype: str = "float32"  # bfloat16: the products' inputs rounded (hebbjax.rules.matmul)

    def linear_map(self) -> Conv:
        return Conv(
            strides=self.strides, padding=self.padding, dilation=self.dilation,
            feature_group_count=self.feature_group_count, padding_mode=self.padding_mode,
            implementation=self.implementation, matmul_dtype=self.matmul_dtype,
        )

    @nn.compact
    def __call__(self, x: Array) -> Activations:
        k, lin = self.kernel_size, self.linear_map()
        if self.log_weight or self.patch_sum_to is not None:
            if self.feature_group_count != 1:
                raise ValueError("feature_group_count: the patches form (log_weight / patch_sum) supports groups=1 only")
            xp = lin.prepare(x)
            patches = lin.patches(xp, (k, k))  # features ordered (kh, kw, c)
            if self.patch_sum_to is not None:
                patches = sum_to(patches, self.patch_sum_to)
            return _dense_activations(self, patches)
        shape = (k, k, x.shape[-1] // self.feature_group_count, self.features)
        kernel = self.param("kernel", self.kernel_init, shape)
        bias = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
        if self.frozen:
            kernel, bias = jax.lax.stop_gradient((kernel, bias))
        xp = lin.prepare(x)
        u = lin(kernel, xp)
        if bias is not None:
            u = u + bias
        return Activations(lin, xp, u)
