"""Flax Hebbian layers and networks: what the rules see, shapes declared in YAML, the training
phases' semantics (which blocks learn, cached features, schedules)."""

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hebbjax import rules
from hebbjax.config import BlockConfig, Config, ModelConfig, TrainingConfig, check_blocks, parse_pool
from hebbjax.data import Dataset
from hebbjax.nn import pool2d, triangle
from hebbjax.nn.layers import HebbianConv, max_pool_views
from hebbjax.train import Data, Hebbian, NonFiniteUpdate, build, evaluate, fit, halving_schedule, init_state, run_phase, setup


def build_network(blocks, num_classes):
    return build.network(ModelConfig(blocks=list(blocks)), num_classes)


def test_triangle_is_centered_relu_power():
    u = jnp.array([[1.0, 2.0, 6.0]])  # mean 3
    np.testing.assert_allclose(triangle(u, 0.5), [[0.0, 0.0, np.sqrt(3.0)]], rtol=1e-6)


def test_kwta_keeps_the_k_largest_positive_values_over_channels():
    from hebbjax.nn import apply_activation

    u = jnp.array([[1.0, -2.0, 3.0, 0.5], [-1.0, -2.0, -3.0, -0.5]])
    np.testing.assert_array_equal(apply_activation("kwta", 2, u), [[1.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_pools_follow_pytorch_semantics():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    # avg(4,2,1): zero padding counted in the divisor (count_include_pad=True): top-left window
    # covers rows/cols 0..2 of the image plus padding, 9 values over 16 slots.
    top_left = x[0, :3, :3, 0].sum() / 16.0
    np.testing.assert_allclose(pool2d("avg", x, 4, 2, 1)[0, 0, 0, 0], top_left, rtol=1e-6)
    np.testing.assert_allclose(pool2d("max", x, 4, 2, 1)[0, 0, 0, 0], x[0, :3, :3, 0].max())
    np.testing.assert_allclose(pool2d("sum", x, 2, 2, 0)[0, 1, 1, 0], x[0, 2:, 2:, 0].sum())


@pytest.mark.parametrize("kernel,stride,padding", [(4, 2, 1), (2, 2, 0), (3, 1, 1)])
def test_max_pool_views_equals_xla_max_pool_in_value_and_gradient(kernel, stride, padding):
    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
    g = jax.random.normal(jax.random.key(1), (2, *jax.eval_shape(lambda x: max_pool_views(x, kernel, stride, padding), x).shape[1:]))
    pads = ((padding, padding), (padding, padding))

    def value_and_vjp(pool, x):
        y, vjp = jax.vjp(pool, x)
        return y, vjp(g)[0]

    got = jax.jit(lambda x: value_and_vjp(lambda v: max_pool_views(v, kernel, stride, padding), x))(x)
    ref = jax.jit(lambda x: value_and_vjp(lambda v: nn.max_pool(v, (kernel, kernel), (stride, stride), pads), x))(x)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-6, atol=1e-6)


def test_max_pool_gradient_goes_to_one_element_per_window_on_ties():
    """A constant input ties every window; each output's cotangent is counted exactly once, at
    the first (row-major) element of its window, as PyTorch does."""
    x = jnp.zeros((1, 4, 4, 1))
    dx = jax.grad(lambda v: max_pool_views(v, 2, 2, 0).sum())(x)
    np.testing.assert_array_equal(dx[0, :, :, 0], [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])


def test_batchnorm_has_pytorch_semantics_unbiased_running_variance():
    """PyTorch's BatchNorm2d(affine=False, momentum=0.1): normalise by the biased batch variance,
    update the running variance with the unbiased one (n = batch x H x W values per channel)."""
    from hebbjax.nn import BatchNorm

    x = 3.0 * jax.random.normal(jax.random.key(0), (4, 5, 5, 3)) + jnp.array([1.0, -2.0, 0.5])
    n = 4 * 5 * 5
    variables = BatchNorm().init(jax.random.key(1), x)
    np.testing.assert_array_equal(variables["batch_stats"]["var"], 1.0)  # PyTorch's initial running stats
    y, updated = BatchNorm().apply(variables, x, mutable=["batch_stats"])
    xs = np.asarray(x, np.float64)
    mean, biased = xs.mean((0, 1, 2)), xs.var((0, 1, 2))
    np.testing.assert_allclose(y, (xs - mean) / np.sqrt(biased + 1e-5), rtol=1e-5, atol=1e-5)
    stats = updated["batch_stats"]
    np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * biased * n / (n - 1), rtol=1e-5)
    # evaluation mode: the running statistics, nothing updated
    y_eval = BatchNorm(use_running_average=True).apply(updated, x)
    np.testing.assert_allclose(y_eval, (xs - 0.1 * mean) / np.sqrt(0.9 + 0.1 * biased * n / (n - 1) + 1e-5), rtol=1e-5, atol=1e-5)


def test_conv_layer_exposes_padded_input_and_preactivation():
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
    layer = HebbianConv(4, kernel_size=3, padding=1, padding_mode="reflect")
    variables = layer.init(jax.random.key(1), x)
    acts = layer.apply(variables, x)
    np.testing.assert_array_equal(acts.x, jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect"))
    expected = jax.lax.conv_general_dilated(acts.x, variables["params"]["kernel"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(acts.u, expected, rtol=1e-4, atol=1e-4)


def test_a_dense_block_flattens_its_input_and_patch_sum_scales_the_whole_input():
    """SoftHebb's MLP flattens the image before its dense layer; Holca-Lamarre's shallow network
    scales each input to sum to A before its log-weight neurons."""
    from hebbjax.nn import HebbianDense

    x = jax.random.uniform(jax.random.key(0), (3, 4, 4, 2)) + 0.1
    layer = HebbianDense(5, patch_sum_to=900.0, log_weight=True,
                         kernel_init=lambda k, s, d=jnp.float32: jax.random.uniform(k, s, d) + 1.0)
    variables = layer.init(jax.random.key(1), x)
    acts = layer.apply(variables, x)
    assert variables["params"]["kernel"].shape == (32, 5) and acts.x.shape == (3, 32)
    flat = np.asarray(x, np.float64).reshape(3, -1) + 1e-5  # hebbianCNN's offset
    np.testing.assert_allclose(acts.x, (900.0 - 32) * flat / flat.sum(-1, keepdims=True) + 1.0, rtol=1e-5)
    blank = layer.apply(variables, jnp.zeros_like(x))  # a blank input becomes uniform, A / D everywhere
    np.testing.assert_allclose(blank.x, 900.0 / 32, rtol=1e-5)
    np.testing.assert_allclose(acts.u, acts.x @ jnp.log(variables["params"]["kernel"]), rtol=1e-5)
    assert check_blocks([BlockConfig(layer="dense", channels=5, input_norm="patch_sum")], (4, 4, 2)) == [(5,)]


def test_patch_sum_normalisation_and_log_weights():
    """Holca-Lamarre: every patch sums to A (after the +1 floor: (A - D) + D = A), u = x . log w."""
    x = jax.random.uniform(jax.random.key(0), (1, 6, 6, 1)) + 0.1
    layer = HebbianConv(3, kernel_size=3, padding=0, padding_mode="zeros", patch_sum_to=900.0, log_weight=True,
                        kernel_init=lambda k, s, d=jnp.float32: jax.random.uniform(k, s, d) + 1.0)
    variables = layer.init(jax.random.key(1), x)
    acts = layer.apply(variables, x)
    np.testing.assert_allclose(acts.x.sum(-1), 900.0, rtol=1e-5)
    np.testing.assert_allclose(acts.u, acts.x @ jnp.log(variables["params"]["kernel"]), rtol=1e-5)


SOFTHEBB4 = [
    BlockConfig(channels=96, kernel=5, padding=2, activation="triangle(0.7)", pool="max(4,2,1)"),
    BlockConfig(channels=384, kernel=3, padding=1, t_invert=0.65, activation="triangle(1.4)", pool="max(4,2,1)"),
    BlockConfig(channels=1536, kernel=3, padding=1, t_invert=0.25, activation="triangle(1)", pool="avg(2,2,0)"),
]


def test_softhebb4_shapes_chain_to_24576_features():
    shapes = check_blocks(SOFTHEBB4, (32, 32, 3))
    assert shapes == [(16, 16, 96), (8, 8, 384), (4, 4, 1536)]
    net = build_network(SOFTHEBB4, 10)
    out = jax.eval_shape(lambda x: net.init_with_output(jax.random.key(0), x)[0], jnp.zeros((2, 32, 32, 3)))
    assert out.shape == (2, 10)
    feats = jax.eval_shape(lambda x: net.init_with_output(jax.random.key(0), x, classify=False)[0], jnp.zeros((2, 32, 32, 3)))
    assert np.prod(feats.shape[1:]) == 24576


@pytest.mark.parametrize("activation, pool", [("triangle(0.7)", "max(4,2,1)"), ("triangle(1.4)", "max(4,2,1)"),
                                              ("repu(2.5)", "max(2,2,0)"), ("triangle(0.7)", "avg(2,2,0)")])
def test_a_power_before_a_max_pool_taken_after_it_gives_the_same_output_bit_for_bit(activation, pool):
    """``max(relu(u)**p) == max(relu(u))**p``: the block raises the pooled values (4x fewer powers
    after max(4,2,1)) and its output is exactly that of the activation followed by the pool."""
    b = BlockConfig(layer="conv", channels=24, kernel=3, padding=1, rule="softhebb", activation=activation, pool=pool)
    fast = build.block(b)
    kind, kernel, stride, padding = parse_pool(pool)
    reference = fast.clone(activation=build.activation(activation),
                           pool=functools.partial(pool2d, kind, kernel=kernel, stride=stride, padding=padding))
    x = jax.random.normal(jax.random.key(0), (6, 16, 16, 3))
    variables = fast.init(jax.random.key(1), x)
    out, want = fast.apply(variables, x), reference.apply(variables, x)
    assert out.shape == want.shape and float(jnp.max(want)) > 0
    np.testing.assert_array_equal(np.asarray(out), np.asarray(want))
    assert (fast.pool.func is build._power_after_pool) == pool.startswith("max")  # the split is taken where it is exact


def test_radius_init_gives_neuron_norms_near_radius():
    net = build_network(SOFTHEBB4[:1], 10)
    params = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    norms = rules.neuron_norms(params["block_0"]["layer"]["kernel"])
    assert abs(float(jnp.mean(norms)) - 25.0) < 1.5


def _data(n=40, size=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return Dataset(rng.uniform(size=(n, size, size, 1)).astype(np.float32), rng.integers(0, classes, n).astype(np.int32), classes)


def _cfg(**training):
    blocks = [
        BlockConfig(channels=6, kernel=3, padding=1, lr=0.05, activation="triangle(0.7)", pool="max(2,2,0)"),
        BlockConfig(channels=8, kernel=3, padding=1, lr=0.02, t_invert=0.7, activation="triangle(1)"),
    ]
    t = dict(unsup_batch_size=4, readout_batch_size=8, eval_batch_size=8, readout_epochs=2, steps_per_chunk=4)
    t.update(training)
    return Config(model=ModelConfig(blocks=blocks, classifier_dropout=0.0), training=TrainingConfig(**t))


def test_one_network_step_equals_the_rule_pipeline_by_hand():
    """A Hebbian step == BN(batch stats) -> observe -> softhebb -> max-abs -> norm lr -> apply."""
    data = _data(n=4)
    ctx = setup(_cfg(readout_batch_size=4), Data(data, data), progress=False)
    state = init_state(ctx)
    w0 = state.params["block_0"]["layer"]["kernel"]
    x = jnp.asarray(data.images)
    xn = (x - x.mean((0, 1, 2))) / jnp.sqrt(x.var((0, 1, 2)) + 1e-5)
    lin = rules.Conv(padding=1, padding_mode="reflect")
    dw = rules.softhebb({"kernel": w0}, rules.observe(lin, {"kernel": w0}, xn), t_invert=1.0)
    tx = optax.chain(rules.scale_by_max_abs(), rules.scale_by_norm_dependent_lr(0.05, 0.5))
    upd, _ = tx.update(dw, tx.init({"kernel": w0}), {"kernel": w0})
    expected = w0 + upd["kernel"]
    assert ctx.phases[0] == Hebbian((0,))  # successive: block 0 alone first
    state = run_phase(ctx, 0, state)  # 4 samples, batch 4, 1 epoch: exactly one step
    assert (int(state.phase), int(state.step), int(state.epoch)) == (0, 1, 1)
    np.testing.assert_allclose(state.params["block_0"]["layer"]["kernel"], expected, rtol=2e-4, atol=2e-5)


def test_successive_training_only_changes_the_block_being_trained():
    data = _data()
    ctx = setup(_cfg(), Data(data, data), progress=False)
    before = init_state(ctx)
    after = run_phase(ctx, 0, before).params
    assert np.max(np.abs(after["block_0"]["layer"]["kernel"] - before.params["block_0"]["layer"]["kernel"])) > 1e-3
    np.testing.assert_array_equal(after["block_1"]["layer"]["kernel"], before.params["block_1"]["layer"]["kernel"])
    np.testing.assert_array_equal(run_phase(ctx, 0, before).batch_stats["block_1"]["input_norm"]["mean"], 0.0)


def test_readout_never_recomputes_the_block_stack(monkeypatch):
    """Without augmentation the conv stack runs exactly once over train+test (cached features)."""
    data = _data()
    calls = []
    original = evaluate.features
    monkeypatch.setattr(evaluate, "features", lambda model, variables, source, **kw: calls.append(source.num_examples) or original(model, variables, source, **kw))
    result, _ = fit(_cfg(readout_epochs=3), Data(data, data), progress=False)
    assert calls == [2 * data.images.shape[0]]
    assert 0.0 <= result["test_accuracy"] <= 1.0


def test_random_baseline_leaves_blocks_untrained_and_bp_trains_them():
    data = _data()
    k0 = np.asarray(init_state(setup(_cfg(method="random"), Data(data, data))).params["block_0"]["layer"]["kernel"])
    _, rand = fit(_cfg(method="random"), Data(data, data), progress=False)
    np.testing.assert_array_equal(rand.params["block_0"]["layer"]["kernel"], k0)
    k0 = np.asarray(init_state(setup(_cfg(method="bp"), Data(data, data))).params["block_0"]["layer"]["kernel"])
    _, bp = fit(_cfg(method="bp"), Data(data, data), progress=False)
    assert np.max(np.abs(bp.params["block_0"]["layer"]["kernel"] - k0)) > 1e-4


def test_nan_input_stops_with_error_and_keeps_last_finite_parameters():
    data = _data()
    bad = dataclasses.replace(data, images=data.images.copy())
    bad.images[-4:] = np.nan  # one epoch visits every sample, so some step sees them
    ctx = setup(_cfg(steps_per_chunk=1), Data(bad, bad), progress=False)
    with pytest.raises(NonFiniteUpdate, match="NaN") as err:
        run_phase(ctx, 0, init_state(ctx))
    assert int(err.value.state.step) < 10  # the state before the chunk of the bad batch
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(err.value.state.params))


def test_halving_schedule_matches_softhebb_steps():
    s = halving_schedule(1e-3, 50, steps_per_epoch=10)
    # 50 epochs: halve at 10, 17, 25, 30, 35, 40, 45
    assert float(s(99)) == pytest.approx(1e-3)
    assert float(s(100)) == pytest.approx(5e-4)
    assert float(s(170)) == pytest.approx(2.5e-4)
    assert float(s(450)) == pytest.approx(1e-3 / 2**7)
    assert float(halving_schedule(1e-3, 10, 10)(99)) == pytest.approx(1e-3)


B = BlockConfig
#: Seed architectures (SoftHebb's presets, Journé et al. ICLR 2023 appendix; Miconi 2021; Holca-Lamarre) as block lists: input shape, blocks, the
#: classifier's input size the papers give.
SEED_ARCHITECTURES = {
    "5SoftHebbCnnSTL": ((96, 96, 3), [
        B(channels=96, kernel=5, padding=2, activation="triangle(0.7)", pool="avg(4,2,1)"),
        B(channels=384, kernel=3, padding=1, t_invert=0.65, activation="triangle(0.7)", pool="max(4,2,1)"),
        B(channels=1536, kernel=3, padding=1, t_invert=0.45, activation="triangle(1.4)", pool="avg(4,2,1)"),
        B(channels=6144, kernel=3, padding=1, t_invert=0.25, activation="triangle(1)", pool="avg(2,2,0)"),
    ], 221184),
    "6SoftHebbCnnImNet": ((160, 160, 3), [
        B(channels=48, kernel=5, padding=2, pool="max(4,2,1)"), B(channels=192, kernel=3, padding=1, pool="max(4,2,1)"),
        B(channels=768, kernel=3, padding=1, pool="max(4,2,1)"), B(channels=3072, kernel=3, padding=1, pool="max(4,2,1)"),
        B(channels=12288, kernel=3, padding=1, pool="avg(2,2,0)"),
    ], 307200),
    "4CnnCIFAR": ((32, 32, 3), [
        B(channels=96, kernel=5, padding=2, rule="bp", activation="relu", pool="max(4,2,1)"),
        B(channels=384, kernel=3, padding=1, rule="bp", activation="relu", pool="max(4,2,1)"),
        B(channels=1536, kernel=1, padding=0, groups=192, rule="bp", activation="relu", pool="max(2,2,0)"),
    ], 24576),
    "4HardCnnCIFAR": ((32, 32, 3), [
        B(channels=96, kernel=5, padding=1, rule="hard_wta", pool="max(4,2,1)"),
        B(channels=384, kernel=3, padding=1, rule="hard_wta", pool="max(4,2,1)"),
        B(channels=1536, kernel=3, padding=0, rule="hard_wta", pool="max(2,2,0)"),
    ], 6144),
    # 2SoftMlpMNIST: a dense layer on the flattened image
    "2SoftMlpMNIST": ((28, 28, 1), [
        B(layer="dense", channels=2000, input_norm="none", rule="soft_wta", t_invert=12, lr=0.045, radius=35,
          lr_power=0.2, activation="softmax(5)"),
    ], 2000),
}


@pytest.mark.parametrize("name", list(SEED_ARCHITECTURES))
def test_seed_architectures_are_block_lists_with_the_papers_classifier_sizes(name):
    shape, blocks, features = SEED_ARCHITECTURES[name]
    assert math.prod(check_blocks(blocks, shape)[-1]) == features
    net = build_network(blocks, 10)
    out = jax.eval_shape(lambda x: net.init_with_output({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, classify=False)[0], jnp.zeros((2, *shape)))
    assert math.prod(out.shape[1:]) == features


@pytest.mark.parametrize("keep", [0.5, 0.75, 0.9375, 0.6])  # packed 1, 2, 4 bits; bernoulli
def test_dropout_masks_are_independent_bernoulli_draws(keep):
    from hebbjax.nn.layers import keep_mask

    shape = (256, 1000)
    mask = np.asarray(keep_mask(jax.random.key(0), keep, shape))
    n = mask.size
    assert abs(mask.mean() - keep) < 4 * np.sqrt(keep * (1 - keep) / n)
    # neighbours (bits of one random word) and rows are uncorrelated
    m = mask.astype(float) - keep
    for a, b in ((m[:, :-1], m[:, 1:]), (m[:-1], m[1:]), (m[:, :-32], m[:, 32:])):
        assert abs(float(np.mean(a * b))) / (keep * (1 - keep)) < 4 / np.sqrt(a.size)
    other = np.asarray(keep_mask(jax.random.key(1), keep, shape))
    assert 0 < np.mean(mask != other) < 1


def _threefry(words: tuple[int, int]) -> jax.Array:
    return jax.random.wrap_key_data(jnp.array(words, jnp.uint32), impl="threefry2x32")


@pytest.mark.parametrize("n", [0, 1, 7, 49152, 100003])
@pytest.mark.parametrize("words", [(0x9E3779B9, 12345), (0xFFFFFFFF, 0x7F4A7C15), (0, 7)])  # both key words matter
def test_random_words_are_jax_threefry_bits_bit_for_bit(n, words):
    from hebbjax.nn.layers import random_words

    key = _threefry(words)
    got = jax.jit(random_words, static_argnums=1)(key, n)
    assert got.dtype == jnp.uint32 and np.array_equal(got, jax.random.bits(key, (n,), jnp.uint32))
    with jax.threefry_partitionable(False):  # JAX's other counter layout: its own bits
        assert np.array_equal(random_words(key, n), jax.random.bits(key, (n,), jnp.uint32))
    rbg = jax.random.key(12345, impl="rbg")  # other implementations: jax.random.bits itself
    assert np.array_equal(random_words(rbg, n), jax.random.bits(rbg, (n,), jnp.uint32))


def test_a_compiled_dropout_mask_unpacks_jax_threefry_bits():
    """Compiled with its consumer (XLA fuses what it may), the mask keeps draw ``32 w + j`` where bit j
    of JAX's word w is 0."""
    from hebbjax.nn.layers import keep_mask

    key, shape = _threefry((0x2545F491, 0x9E3779B9)), (64, 1000)
    x = jnp.ones(shape)
    dropped = jax.jit(lambda k, x: jnp.where(keep_mask(k, 0.5, x.shape), x / 0.5, 0.0))(key, x)
    words = np.asarray(jax.random.bits(key, (64 * 1000 // 32,), jnp.uint32))
    bits = (words[:, None] >> np.arange(32, dtype=np.uint32)) & 1
    assert np.array_equal(np.asarray(dropped), np.where(bits.reshape(shape) == 0, 2.0, 0.0))


def test_dropout_scales_kept_values_and_is_identity_in_evaluation():
    from hebbjax.nn.layers import Dropout

    x = jnp.ones((64, 100))
    layer = Dropout(0.5)
    y = np.asarray(layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)}))
    assert set(np.unique(y)) == {0.0, 2.0} and abs(y.mean() - 1.0) < 0.05
    assert np.asarray(layer.apply({}, x, deterministic=True)).tolist() == np.asarray(x).tolist()


def test_the_classifier_dot_has_the_values_and_gradients_of_a_plain_dense_layer():
    from hebbjax.nn.layers import dense_dot

    x = jax.random.normal(jax.random.key(0), (64, 3000))
    kernel = jax.random.normal(jax.random.key(1), (3000, 10))
    g = jax.random.normal(jax.random.key(2), (64, 10))
    dims = (((1,), (0,)), ((), ()))
    plain = jax.vjp(lambda a, b: jax.lax.dot_general(a, b, dims), x, kernel)
    ours = jax.vjp(lambda a, b: dense_dot(a, b, dims), x, kernel)
    np.testing.assert_allclose(ours[0], plain[0], rtol=1e-6, atol=1e-5)
    for got, want in zip(ours[1](g), plain[1](g)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="dense_dot"):
        dense_dot(x.T, kernel.T, (((0,), (1,)), ((), ())))
