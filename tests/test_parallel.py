"""Data parallelism: 3 and 4 devices give the same parameters as 1 device for the same global batch.

Float64 (``jax_enable_x64``) isolates the semantics from rounding: a different summation order
(one device sums 8 samples, four devices sum 2 and then psum) changes the result by ~3e-15 in
float64 and ~1.3e-6 in float32 (SoftHebb, measured 2026-12-01), while a missing or misplaced
reduction (BatchNorm statistics, the sum before the max-|dw| normalisation, the firing rates of
the homeostasis) shows as a large difference in either. Every rule runs in float64; SoftHebb
also in float32, the precision of real runs. Streamed training (chunks of host batches sharded
over the devices) is compared the same way. On 3 devices the batch of 8 is padded to 9 with a
sample of weight 0 (``parallel.padded_size``): a padded sample that leaked into a sum, a
statistic or a draw would show the same way.

The check runs in a subprocess because the number of (virtual CPU) devices is fixed when JAX
starts: ``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", sys.argv[3] == "float64")  # float64: see the module docstring
    from hebbjax.config import BlockConfig, Config, ModelConfig, TrainingConfig
    from hebbjax.data import Dataset
    from hebbjax.train import Data, DeviceSource, StreamSource, evaluate, init_state, make_mesh, run_phase, setup

    assert len(jax.devices()) == 4, jax.devices()
    rule = sys.argv[1]
    extra = json.loads(sys.argv[2])
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(64, 10, 10, 3)).astype(np.float32)
    labels = rng.integers(0, 4, 64).astype(np.int32)
    data = Dataset(images, labels, 4)
    blocks = [
        BlockConfig(channels=8, kernel=3, padding=1, rule=rule, lr=0.05, activation="triangle(0.7)", pool="max(2,2,0)", **extra),
        BlockConfig(channels=16, kernel=3, padding=1, rule=rule, lr=0.02, t_invert=0.7, activation="triangle(1.4)", **extra),
    ]
    cfg = Config(model=ModelConfig(blocks=blocks), training=TrainingConfig(
        mode="consecutive", unsup_epochs=2, unsup_batch_size=8, readout_batch_size=8, eval_batch_size=8, readout_epochs=1,
        steps_per_chunk=3))
    odd = Dataset(images[:22], labels[:22], 4)  # 22 rows: not a multiple of the devices nor of the batch
    out, feats, out_stream = {}, {}, {}
    for n in (1, 3, 4):
        mesh = make_mesh(jax.devices()[:n])
        ctx = setup(cfg, Data(data, data), mesh=mesh, progress=False)
        out[n] = run_phase(ctx, 0, init_state(ctx))  # both blocks, 2 epochs
        source = DeviceSource.place(odd, mesh, jnp.asarray(1.0).dtype)
        feats[n] = np.asarray(evaluate.features(ctx.model, out[n].variables, source, batch_size=8, mesh=mesh, inputs=ctx.inputs)[0])
        streamed = setup(cfg, Data(StreamSource.from_dataset(data), data), mesh=mesh, progress=False)
        out_stream[n] = run_phase(streamed, 0, init_state(streamed))  # chunks of 3 host batches sharded over the devices
    direct = np.asarray(ctx.model.clone(axis_name=None).apply(out[1].variables, jnp.asarray(odd.images, jnp.asarray(1.0).dtype), classify=False)).reshape(22, -1)
    feat_rel = max(float(np.max(np.abs(feats[n] - direct)) / np.max(np.abs(direct))) for n in (1, 3, 4))
    def rel_diff(x, y):
        return [float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / (np.max(np.abs(np.asarray(a))) + 1e-12))
                for a, b in zip(jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(y))]

    rel = rel_diff(out[1].variables, out[4].variables) + rel_diff(out[1].variables, out[3].variables)
    stream_rel = max(max(rel_diff(out_stream[1].variables, out_stream[n].variables)) for n in (3, 4))
    # The stream reads the records in the order the device-resident split gathers them.
    stream_vs_device = max(rel_diff(out[1].variables, out_stream[1].variables))
    moved = float(np.max(np.abs(np.asarray(out[1].params["block_1"]["layer"]["kernel"]) - np.asarray(init_state(ctx).params["block_1"]["layer"]["kernel"]))))
    print(json.dumps({"max_rel": max(rel), "moved": moved, "leaves": len(rel), "feat_rel": feat_rel, "stream_rel": stream_rel,
                      "stream_vs_device": stream_vs_device}))
    """
)


@pytest.mark.parametrize(
    "rule, extra, dtype",
    [("softhebb", {}, "float64"), ("krotov", {"rank": 2, "delta": 0.4}, "float64"),
     ("sparse_topk", {"k": 2, "lr_schedule": "constant", "normalize_step": False, "unit_norm": True, "init": "unit"}, "float64"),
     ("softhebb", {}, "float32")],
)
def test_three_and_four_devices_equal_one_device(rule, extra, dtype):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, rule, json.dumps(extra), dtype], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["moved"] > 1e-3, "training must actually change the weights for the comparison to mean anything"
    # float32: the summation order alone moves SoftHebb's update at ~1e-6 (module docstring)
    tol = 1e-5 if dtype == "float64" else 2e-5
    assert result["max_rel"] < tol, result
    # Streamed chunks sharded over 4 devices == the same stream on 1 device, == the split on the device.
    assert result["stream_rel"] < tol, result
    assert result["stream_vs_device"] == 0.0, result  # same records, same order, same arithmetic
    # Batched feature extraction (in-place batches, the last one shifted back) == one big forward.
    assert result["feat_rel"] < (1e-12 if dtype == "float64" else 1e-5), result


RANDOM_DRAWS = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from hebbjax.config import BlockConfig, Config, DataConfig, DopamineConfig, ModelConfig, TrainingConfig
    from hebbjax.data import Dataset
    from hebbjax.train import Data, fit, make_mesh

    DEVICES = (1, 2, 3, 4, 8)  # the batch of 10 is padded to 12 on 3 and 4 devices, to 16 on 8

    assert len(jax.devices()) == 8, jax.devices()
    rng = np.random.default_rng(0)
    data = Dataset(rng.uniform(size=(48, 8, 8, 1)).astype(np.float32), rng.integers(0, 4, 48).astype(np.int32), 4)
    augment = dict(augment=["flip", "noise"], unsup_augment=["flip", "noise"])
    conv = dict(channels=8, kernel=3, padding=1, lr=0.05, activation="triangle(0.7)", pool="max(2,2,0)")
    table = DopamineConfig(enabled=True, unpredicted_reward=2.0, predicted_reward=0.0, no_reward=-0.5, omitted_reward=-1.0)
    cases = {
        # Hebbian blocks with dropout, augmented unsupervised images; the readout reads augmented
        # images through the network (no cached features), with the classifier's dropout.
        "hebbian": Config(data=DataConfig(**augment), model=ModelConfig(blocks=[
            BlockConfig(rule="softhebb", dropout=0.2, **conv), BlockConfig(rule="softhebb", dropout=0.3, **{**conv, "channels": 16})]),
            training=TrainingConfig(mode="consecutive", unsup_epochs=1, unsup_batch_size=10, readout_epochs=2,
                                    readout_batch_size=10, eval_batch_size=10, steps_per_chunk=4)),
        "bp": Config(data=DataConfig(**augment), model=ModelConfig(blocks=[BlockConfig(rule="bp", dropout=0.2, **conv)]),
                     training=TrainingConfig(method="bp", readout_epochs=2, unsup_batch_size=10, readout_batch_size=10,
                                             eval_batch_size=10, steps_per_chunk=4)),
        # Miconi's stateful sparse_topk in its surrogate-loss form (homeostatic firing rates),
        # then the readout on cached features.
        "miconi": Config(model=ModelConfig(blocks=[BlockConfig(
            channels=8, kernel=3, padding=0, padding_mode="zeros", input_norm="standardize", rule="sparse_topk", rule_form="loss",
            k=2, homeostasis_rate=3.0, threshold_in_output=True, lr=0.01, lr_schedule="constant", normalize_step=False,
            unit_norm=True, init="unit", activation="triangle(1.0)")]),
            training=TrainingConfig(mode="consecutive", unsup_epochs=2, unsup_batch_size=10, readout_epochs=2,
                                    readout_batch_size=10, eval_batch_size=10, steps_per_chunk=4)),
        # Exploration noise on the class layer: every device's explored decisions, hence dopamine.
        "reward": Config(model=ModelConfig(blocks=[BlockConfig(
            layer="dense", channels=4, input_norm="patch_sum", patch_sum_to=100.0, neuron="log_weight", init="positive",
            init_offset=1.0, rule="instar", lr=0.01, lr_schedule="constant", normalize_step=False, positive=True,
            activation="softmax(0.3)", explore=3.0, dopamine=table)]),
            training=TrainingConfig(method="reward", mode="consecutive", unsup_epochs=1, reward_epochs=2, unsup_batch_size=10,
                                    eval_batch_size=10, decision="neural_dopa", steps_per_chunk=4)),
    }
    out = {}
    for name, cfg in cases.items():
        runs = {n: fit(cfg, Data(data, data), mesh=make_mesh(jax.devices()[:n]), progress=False) for n in DEVICES}
        leaves = {n: [np.asarray(a) for a in jax.tree_util.tree_leaves(state.params)] for n, (_, state) in runs.items()}
        rel = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12)) for n in DEVICES[1:] for a, b in zip(leaves[1], leaves[n]))
        out[name] = {"rel": rel, "accuracy": {n: [r["train_accuracy"], r["test_accuracy"]] for n, (r, _) in runs.items()}}
    print(json.dumps(out))
    """
)


def test_any_batch_size_gives_the_same_result_on_any_device_count():
    """A batch of 10 on 1, 2, 3, 4 and 8 devices (padded with weight-0 samples where 10 does not
    divide) gives the same parameters (float32) and accuracies for every method and phase: each
    sample's random draws (dropout masks, augmentation, the reward method's exploration noise)
    do not depend on the device count, and padding enters no sum, statistic, loss or metric."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", RANDOM_DRAWS], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, r in result.items():
        assert r["rel"] < 2e-5, (name, r)  # the summation order alone: ~1e-6 (module docstring)
        assert len({tuple(a) for a in r["accuracy"].values()}) == 1, (name, r)


ROWS = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    from hebbjax.train import AXIS, DeviceSource, make_mesh

    mesh = make_mesh(jax.devices()[:3])
    x = np.arange(10 * 2, dtype=np.float32).reshape(10, 2) + 1
    source = DeviceSource.of(x, np.arange(10), mesh)
    shards = [s.data.shape[0] for s in source.arrays["x"].addressable_shards]

    def step(carry, batch):  # every device's shard of the batch, put back in its place
        local = batch["x"]
        at = jax.lax.axis_index(AXIS) * local.shape[0]
        whole = jax.lax.dynamic_update_slice_in_dim(jnp.zeros((3 * local.shape[0], 2), local.dtype), local, at, 0)
        return carry, {"x": jax.lax.psum(whole, AXIS)}

    run, seen, want = source.runner(step, mesh), [], []
    for args, ok in source.chunks(jax.random.key(0), 5, 3, 4, 0, mesh):
        _, metrics = run(jnp.zeros(()), *args)
        seen.append(np.asarray(metrics["x"])[ok]); want.append(x[np.asarray(args[1])[ok]])

    def double(scale, rows):
        return rows * scale

    mapped, labels = source.map(double, 2.0, 4, mesh)

    # uint8 images and float bytes travel exactly: -0.0 keeps its sign
    signed = np.where(np.arange(10)[:, None] % 2 == 0, np.float32(-0.0), x)
    pixels = (np.arange(10 * 3) * 37 % 256).astype(np.uint8).reshape(10, 3)
    both = DeviceSource.of({"f": signed, "u": pixels}, np.arange(10), mesh)

    def as_bytes(v):  # a step's shard as integers, put back in place by an integer psum (+0.0 would lose -0.0)
        raw = (v if v.dtype == jnp.uint8 else jax.lax.bitcast_convert_type(v, jnp.uint8)).astype(jnp.int32)
        whole = jnp.zeros((6, *raw.shape[1:]), jnp.int32)
        return jax.lax.psum(jax.lax.dynamic_update_slice_in_dim(whole, raw, jax.lax.axis_index(AXIS) * raw.shape[0], 0), AXIS)

    got = []
    for args, ok in both.chunks(jax.random.key(1), 4, 1, 2, 0, mesh):
        _, metrics = both.runner(lambda c, b: (c, {k: as_bytes(v) for k, v in b["x"].items()}), mesh)(jnp.zeros(()), *args)
        index = np.asarray(args[1])[ok][:, :4]
        got.append(all(np.array_equal(np.asarray(metrics[k])[ok][:, :4].reshape(-1), v[index].view(np.uint8).reshape(-1))
                       for k, v in (("f", signed), ("u", pixels))))
    print(json.dumps({
        "exact_bytes": bool(all(got)) and len(got) > 0,
        "shards": shards, "padding": np.asarray(source.arrays["x"])[10:].tolist(),
        "batches": bool(np.array_equal(np.concatenate(seen), np.concatenate(want))), "steps": int(sum(len(s) for s in seen)),
        "take": bool(np.array_equal(np.asarray(source.take(np.array([9, 0, 4]))), x[[9, 0, 4]])),
        "map": bool(np.array_equal(np.asarray(mapped), 2 * x)), "labels": np.asarray(labels).tolist(),
    }))
    """
)


def test_a_split_on_the_device_is_spread_over_the_devices_by_rows():
    """Each of 3 devices holds a third of a 10-row split (4 rows; the last 2 are zero padding),
    and every batch a step sees, every row ``take`` reads and every output of ``map`` is the
    one a single device holding the whole split would give."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=3", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", ROWS], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["shards"] == [4, 4, 4] and r["padding"] == [[0, 0], [0, 0]]
    assert r["batches"] and r["steps"] == 3 * (10 // 5)  # batch 5 (padded to 6) read from all three devices
    assert r["take"] and r["map"] and r["labels"] == list(range(10))
    assert r["exact_bytes"]  # float bytes (-0.0 included) and uint8 pixels as stored


def test_a_sum_over_one_device_is_no_collective():
    """On a one-device mesh the step wrappers run without JAX's varying-value checks and
    ``parallel.psum`` / ``pmean`` return their input: XLA's CPU backend would keep an all-reduce
    over the one device, a copy of the whole (e.g. 21 MB Hebbian) update every step. Where the
    checks are on, the value is typed device-varying and the collective stays (JAX needs it to
    type the result replicated); either way the result is the sum."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import PartitionSpec as P

    from hebbjax.train.parallel import AXIS, make_mesh, pmean, psum

    mesh = make_mesh(jax.devices()[:1])
    x = jnp.arange(12.0).reshape(4, 3)
    for check in (False, True):
        def body(v):
            return psum(v.T @ v), pmean(v.sum(0))

        fn = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P(AXIS), out_specs=(P(), P()), check_vma=check))
        total, mean = fn(x)
        np.testing.assert_array_equal(np.asarray(total), np.asarray(x.T @ x))
        np.testing.assert_array_equal(np.asarray(mean), np.asarray(x.sum(0)))
        assert ("all-reduce" in fn.lower(x).compile().as_text()) == check, check


@pytest.mark.parametrize("shape", [(7,), (24576, 10), (3, 3, 384, 1536)])
def test_all_finite_sees_a_nan_or_inf_anywhere(shape):
    """``all_finite`` is ``all(isfinite(a))`` exactly, also for arrays large enough that XLA's CPU
    backend reduces them in its library kernels: one NaN or +-inf at the first, a middle or the
    last element makes it False, and finite values near the float32 maximum (whose sum would
    overflow) keep it True."""
    import jax
    import numpy as np

    from hebbjax.train.plasticity import all_finite

    check = jax.jit(all_finite)
    n = int(np.prod(shape))
    a = np.random.default_rng(0).normal(size=n).astype(np.float32)
    assert bool(check({"w": a.reshape(shape)}))
    assert bool(check({"w": np.full(shape, -3e38, np.float32), "b": np.float32(3e38)}))
    for at in (0, n // 2, n - 1):
        for bad in (np.nan, np.inf, -np.inf):
            b = a.copy()
            b[at] = bad
            assert not bool(check({"w": b.reshape(shape), "ok": np.ones(3, np.float32)})), (at, bad)
