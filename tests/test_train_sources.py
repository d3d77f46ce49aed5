"""Where a phase reads its batches: device arrays (float or uint8) or a host stream.

A streamed split must train the same network as the same split held on the device: both read
the samples in the order drawn from the phase's key, so the parameters agree bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebbjax.config import BlockConfig, Config, ConfigError, ModelConfig, TrainingConfig
from hebbjax.data import Dataset
from hebbjax.train import AXIS, Data, StreamSource, fit, init_state, run_epochs, run_phase, setup
from hebbjax.train.sources import chunk_steps, stack

N, CLASSES = 48, 3


def _uint8_data(n: int = N, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 8, 8, 1), dtype=np.uint8)
    return Dataset(images, rng.integers(0, CLASSES, n).astype(np.int32), CLASSES)


def _float(data: Dataset) -> Dataset:
    return Dataset(data.images.astype(np.float32) / np.float32(255), data.labels, data.num_classes)  # as load() does


def _cfg(batch: int = 8, **training) -> Config:
    blocks = [
        BlockConfig(channels=6, kernel=3, padding=1, lr=0.05, activation="triangle(0.7)", pool="max(2,2,0)"),
        BlockConfig(channels=8, kernel=3, padding=1, lr=0.02, t_invert=0.7, activation="triangle(1)"),
    ]
    t = dict(mode="consecutive", unsup_batch_size=batch, unsup_epochs=2, readout_batch_size=batch, readout_epochs=5,
             readout_lr=0.01, eval_batch_size=16, steps_per_chunk=3)
    t.update(training)
    return Config(model=ModelConfig(blocks=blocks, classifier_dropout=0.0), training=TrainingConfig(**t))


class HostStream:
    """``StreamSource.from_dataset`` with a record of what was read and closed."""

    def __init__(self, data: Dataset) -> None:
        self.data, self.reads, self.closed, self.seen = data, 0, 0, []

    def read(self, batches):
        self.reads += 1
        inner = StreamSource.from_dataset(self.data).read(batches)
        outer = self

        class Recording:
            def __iter__(self):
                for images, labels in inner:
                    outer.seen.append(images)
                    yield images, labels

            def close(self):
                outer.closed += 1

        return Recording()

    def source(self) -> StreamSource:
        d = self.data
        return StreamSource(self.read, len(d.labels), d.image_shape, d.num_classes, d.normalization, d.images.dtype)


def _leaves(state) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]


def test_uint8_images_train_like_the_same_images_as_floats():
    data = _uint8_data()
    r8, s8 = fit(_cfg(), Data(data, data), progress=False)
    rf, sf = fit(_cfg(), Data(_float(data), _float(data)), progress=False)
    assert setup(_cfg(), Data(data, data)).train.arrays["x"].dtype == np.uint8  # a quarter of the device memory
    # The network inputs are equal bit for bit (test_data_loading: to_float on the device == host);
    # the parameters only to rounding, as XLA fuses the uint8 lookup into different kernels.
    for a, b in zip(_leaves(s8), _leaves(sf), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert r8 == rf | {"seconds": r8["seconds"], "unsupervised_images_per_second": r8["unsupervised_images_per_second"]}


def test_streamed_split_trains_the_same_network_as_the_split_on_the_device():
    data = _uint8_data()
    r_dev, on_device = fit(_cfg(), Data(data, data), progress=False)
    host = HostStream(data)
    r_stream, streamed = fit(_cfg(), Data(host.source(), host.source()), progress=False)
    # 2 Hebbian epochs of 6 batches, then (features cannot be cached from a stream) 5 supervised
    # epochs of the readout, then one ordered pass over train and one over test.
    assert host.reads == 4 and host.closed == 4
    assert len(host.seen) == 2 * 6 + 5 * 6 + 2 * 3
    init = _leaves(init_state(setup(_cfg(), Data(data, data))))
    moved = 0.0
    for a, b, start in zip(_leaves(on_device), _leaves(streamed), init, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
        moved = max(moved, float(np.max(np.abs(b - start))))
    assert moved > 1e-2  # the comparison is between trained networks
    assert r_stream["streamed"] and not r_dev["streamed"] and r_stream["unsupervised_images_per_second"] is not None


def test_streamed_hebbian_phase_equals_the_device_resident_one_bit_for_bit():
    data = _uint8_data(n=50)
    host = HostStream(data)
    states = []
    for train in (data, host.source()):
        ctx = setup(_cfg(batch=4, steps_per_chunk=5), Data(train, data), progress=False)
        states.append(run_phase(ctx, 0, init_state(ctx)))
    for a, b in zip(_leaves(states[0]), _leaves(states[1]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(host.seen) == 2 * 12 and host.closed == 1


def test_streamed_chunks_feed_every_batch_to_the_device_once_and_skip_the_padding():
    """50 images at batch 4: 12 steps per epoch; chunks of 5 steps: 5 + 5 + 5 + 5 + 4 real + 1 padded.
    A step that sums what it receives must see exactly the 2 x 48 images the host yielded."""
    data = _uint8_data(n=50)
    host = HostStream(data)
    ctx = setup(_cfg(batch=4, steps_per_chunk=5), Data(host.source(), data), progress=False)

    def step(state, batch):
        x = batch["x"].astype(jnp.float32)
        return state.replace(params={"sum": state.params["sum"] + jax.lax.psum(x.sum(0), AXIS)}), {}

    state = init_state(ctx).replace(params={"sum": jnp.zeros((8, 8, 1))})
    out = run_epochs(step, state, ctx.train, name="sum", batch_size=4, epochs=2, key=jax.random.key(0), mesh=ctx.mesh, steps_per_chunk=5)
    assert int(out.step) == 24 and len(host.seen) == 24
    np.testing.assert_array_equal(np.asarray(out.params["sum"]), np.sum([b.astype(np.float32).sum(0) for b in host.seen], 0))
    assert host.closed == 1


def test_unsup_limit_trains_on_a_prefix_of_train_without_a_copy():
    data = _uint8_data()
    prefix = Dataset(data.images[:20], data.labels[:20], CLASSES)
    limited = setup(_cfg(), Data(data, data, unsup_limit=20), progress=False)
    on_prefix = setup(_cfg(), Data(prefix, data), progress=False)
    assert limited.unsup.num_examples == 20 and limited.train.num_examples == N
    assert limited.unsup.arrays is limited.train.arrays
    a, b = (run_phase(ctx, 0, init_state(ctx)) for ctx in (limited, on_prefix))
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_batch_larger_than_a_split_is_an_error_naming_the_key_before_training():
    data = _uint8_data()
    with pytest.raises(ConfigError, match=r"training.unsup_batch_size: 16 is larger than the unsupervised set \(10 images"):
        setup(_cfg(batch=16), Data(data, data, unsup_limit=10))
    with pytest.raises(ConfigError, match=r"training.readout_batch_size: 64 is larger than the training set \(48 images"):
        setup(_cfg(readout_batch_size=64), Data(data, data))


def test_streamed_validation_parts_of_train_are_disjoint():
    """``from_stream`` keeps the validation split's seed for every pass: shuffled training
    passes never meet the held-out images."""
    train = StreamSource.from_stream("digits", "train", validation=True, seed=5)
    held_out = StreamSource.from_stream("digits", "test", validation=True, seed=5)

    def rows(source, seed):
        order = np.random.default_rng(seed).permutation(source.num_examples)
        return {x.tobytes() for images, _ in source.read(np.array_split(order, 7)) for x in images}

    a, b, h = rows(train, 1), rows(train, 2), rows(held_out, 3)
    assert a == b and len(a) == train.num_examples == 1078 and len(h) == held_out.num_examples == 269
    assert not a & h


def test_stack_stacks_batches_and_marks_padding():
    batches = [(np.full((2, 1), i, np.uint8), np.full(2, i, np.int32)) for i in range(5)]
    out = list(stack(iter(batches), 3))
    assert [v.tolist() for _, v in out] == [[True] * 3, [True, True, False]]
    assert out[1][0]["x"][:, :, 0].tolist() == [[3, 3], [4, 4], [0, 0]]
    assert out[0][0]["y"].tolist() == [[0, 0], [1, 1], [2, 2]]
    # about 64 MiB per chunk: ImageNet uint8 batches of 10 at 160 px -> 87 steps; never 0
    assert chunk_steps(10, (160, 160, 3), 1, 100) == 87
    assert chunk_steps(10**6, (160, 160, 3), 4, 100) == 1


def test_unsupervised_phase_reads_its_own_split():
    """Hebbian blocks trained with ``unsup=B`` equal those of a run whose training set is B."""
    labelled, unlabelled = _uint8_data(seed=0), _uint8_data(n=40, seed=1)
    unlabelled = Dataset(unlabelled.images, np.full(40, -1, np.int32), CLASSES)
    with_unsup = setup(_cfg(), Data(labelled, labelled, unsup=unlabelled), progress=False)
    on_b = setup(_cfg(), Data(Dataset(unlabelled.images, labelled.labels[:40], CLASSES), labelled), progress=False)
    a, b = (run_phase(ctx, 0, init_state(ctx)) for ctx in (with_unsup, on_b))
    assert with_unsup.unsup.num_examples == 40 and with_unsup.train.num_examples == N
    for i in (0, 1):
        np.testing.assert_array_equal(a.params[f"block_{i}"]["layer"]["kernel"], b.params[f"block_{i}"]["layer"]["kernel"])


def test_mismatched_splits_are_rejected_naming_the_argument():
    data = _uint8_data()
    other = Dataset(np.zeros((4, 6, 6, 1), np.uint8), np.zeros(4, np.int32), CLASSES)
    with pytest.raises(ValueError, match=r"unsup: images of shape \(6, 6, 1\), expected .*\(8, 8, 1\)"):
        setup(_cfg(), Data(data, data, unsup=other))
    with pytest.raises(ValueError, match="test: images are float32, expected the training images' uint8"):
        setup(_cfg(), Data(data, _float(data)))

