"""Where the Trainer gets its images: device arrays (float or uint8) or a host stream.

A streamed split must train the same network as the same split held on the device. Batch
orders differ between the two (a host RNG vs a device permutation), so the equivalence is checked
with full-batch steps and no dropout, where the order inside a batch does not matter: Hebbian
updates and gradients are sums over the batch, BatchNorm uses batch statistics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebbjax.config import BlockConfig, Config, ModelConfig, TrainingConfig
from hebbjax.train import AXIS, ArrayData, StreamData, Trainer
from hebbjax.train.sources import chunk_steps, chunks

N, CLASSES = 48, 3


def _uint8_data(n: int = N, seed: int = 0) -> ArrayData:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 8, 8, 1), dtype=np.uint8)
    return ArrayData(images, rng.integers(0, CLASSES, n).astype(np.int32), CLASSES)


def _float(data: ArrayData) -> ArrayData:
    return ArrayData(data.images.astype(np.float32) / np.float32(255), data.labels, data.num_classes)  # as load() does


def _cfg(batch: int = N, **training) -> Config:
    blocks = [
        BlockConfig(channels=6, kernel=3, padding=1, lr=0.05, activation="triangle(0.7)", pool="max(2,2,0)"),
        BlockConfig(channels=8, kernel=3, padding=1, lr=0.02, t_invert=0.7, activation="triangle(1)"),
    ]
    t = dict(mode="consecutive", unsup_batch_size=batch, unsup_epochs=2, readout_batch_size=batch, readout_epochs=5,
             readout_lr=0.01, eval_batch_size=16, steps_per_chunk=3)
    t.update(training)
    return Config(model=ModelConfig(blocks=blocks, classifier_dropout=0.0), training=TrainingConfig(**t))


class HostStream:
    """``StreamData.from_arrays`` with a record of what was opened, yielded and closed."""

    def __init__(self, data: ArrayData) -> None:
        self.data, self.opened, self.closed, self.seen = data, [], 0, []

    def open(self, batch_size: int, *, epochs: int, seed: int, shuffle: bool, drop_remainder: bool):
        self.opened.append(dict(batch_size=batch_size, epochs=epochs, shuffle=shuffle, drop_remainder=drop_remainder))
        inner = StreamData.from_arrays(self.data).open(batch_size, epochs=epochs, seed=seed, shuffle=shuffle, drop_remainder=drop_remainder)
        outer = self

        class Recording:
            def __iter__(self):
                for images, labels in inner:
                    outer.seen.append(images)
                    yield images, labels

            def close(self):
                outer.closed += 1

        return Recording()

    def source(self) -> StreamData:
        d = self.data
        return StreamData(self.open, d.num_examples, d.image_shape, d.num_classes, d.normalization)


def _leaves(state: dict) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(state["params"])]


def test_uint8_images_train_like_the_same_images_as_floats():
    data = _uint8_data()
    as_uint8 = Trainer(_cfg(batch=8), data, data, progress=False)
    as_float = Trainer(_cfg(batch=8), _float(data), _float(data), progress=False)
    r8, rf = as_uint8.fit(), as_float.fit()
    assert as_uint8.train_data["image"].dtype == np.uint8  # a quarter of the device memory
    # The network inputs are equal bit for bit (test_data_loading: to_float on the device == host);
    # the parameters only to rounding, as XLA fuses the uint8 lookup into different kernels.
    for a, b in zip(_leaves(as_uint8.state), _leaves(as_float.state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert r8 == rf | {"seconds": r8["seconds"], "unsupervised_images_per_second": r8["unsupervised_images_per_second"]}


def test_streamed_split_trains_the_same_network_as_the_split_on_the_device():
    data = _uint8_data()
    on_device = Trainer(_cfg(), data, data, progress=False)
    host = HostStream(data)
    streamed = Trainer(_cfg(), host.source(), host.source(), progress=False)
    r_dev, r_stream = on_device.fit(), streamed.fit()
    # 2 Hebbian epochs and 5 readout epochs of one full batch each, in chunks of 3 steps (padded),
    # then one ordered pass over train and over test.
    assert host.opened[0] == dict(batch_size=N, epochs=2, shuffle=True, drop_remainder=True)
    assert host.opened[1] == dict(batch_size=N, epochs=5, shuffle=True, drop_remainder=True)
    assert host.opened[2:] == [dict(batch_size=16, epochs=1, shuffle=False, drop_remainder=False)] * 2
    assert host.closed == 4
    moved = 0.0
    for a, b, init in zip(_leaves(on_device.state), _leaves(streamed.state), _leaves(Trainer(_cfg(), data, data, progress=False).state), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
        moved = max(moved, float(np.max(np.abs(a - init))))
    assert moved > 1e-2  # the comparison is between trained networks
    assert r_dev["test_accuracy"] == r_stream["test_accuracy"] and r_dev["train_accuracy"] == r_stream["train_accuracy"]
    assert r_stream["unsupervised_images_per_second"] is not None


def test_streamed_chunks_feed_every_batch_to_the_device_once_and_skip_the_padding():
    """50 images at batch 4: 12 steps per epoch; chunks of 5 steps: 5 + 5 + 2 real + 3 padded.
    A step that sums what it receives must see exactly the 2 x 48 images the host yielded."""
    data = _uint8_data(n=50)
    host = HostStream(data)
    trainer = Trainer(_cfg(batch=4, steps_per_chunk=5), host.source(), host.source(), progress=False)

    def step(c, batch):
        x = batch["image"].astype(jnp.float32)
        return {"sum": c["sum"] + jax.lax.psum(x.sum(0), AXIS), "steps": c["steps"] + 1}, {}

    carry = {"sum": jnp.zeros((8, 8, 1)), "steps": jnp.zeros((), jnp.int32)}
    out = trainer._run_stream_epochs(step, carry, host.source(), 4, 2, "sum")
    assert int(out["steps"]) == 24 and len(host.seen) == 24
    np.testing.assert_array_equal(np.asarray(out["sum"]), np.sum([b.astype(np.float32).sum(0) for b in host.seen], 0))
    assert host.closed == 1


def test_unsup_limit_trains_on_a_prefix_of_train_without_a_copy():
    data = _uint8_data()
    prefix = ArrayData(data.images[:20], data.labels[:20], CLASSES)
    limited = Trainer(_cfg(batch=8), data, data, unsup_limit=20, progress=False)
    on_prefix = Trainer(_cfg(batch=8), prefix, data, progress=False)
    for t in (limited, on_prefix):
        t.train_hebbian([0, 1], epochs=2)
    assert limited.unsup_images == 32 and limited.n_train == N and limited.unsup_data is limited.train_data
    for a, b in zip(_leaves(limited.state), _leaves(on_prefix.state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_batch_larger_than_a_split_is_an_error_naming_the_key_before_training():
    data = _uint8_data()
    with pytest.raises(ValueError, match=r"training.unsup_batch_size: 16 is larger than the unsupervised set \(10 images"):
        Trainer(_cfg(batch=16), data, data, unsup_limit=10, progress=False)
    with pytest.raises(ValueError, match=r"training.readout_batch_size: 64 is larger than the training set \(48 images"):
        Trainer(_cfg(batch=8, readout_batch_size=64), data, data, progress=False)


def test_streamed_validation_parts_of_train_are_disjoint():
    """``from_stream`` keeps the validation split's seed for every pass: shuffled training
    passes never meet the held-out images."""
    train = StreamData.from_stream("digits", "train", validation=True, seed=5)
    held_out = StreamData.from_stream("digits", "test", validation=True, seed=5)
    rows = lambda source, seed: {x.tobytes() for images, _ in source.open(16, epochs=1, seed=seed, shuffle=True, drop_remainder=False) for x in images}
    a, b, h = rows(train, 1), rows(train, 2), rows(held_out, 3)
    assert a == b and len(a) == train.num_examples == 1078 and len(h) == held_out.num_examples == 269
    assert not a & h


def test_chunks_stack_batches_and_mark_padding():
    batches = [(np.full((2, 1), i, np.uint8), np.full(2, i, np.int32)) for i in range(5)]
    out = list(chunks(iter(batches), 3))
    assert [v.tolist() for _, v in out] == [[True] * 3, [True, True, False]]
    assert out[1][0]["image"][:, :, 0].tolist() == [[3, 3], [4, 4], [0, 0]]
    assert out[0][0]["label"].tolist() == [[0, 0], [1, 1], [2, 2]]
    # about 64 MiB per chunk: ImageNet uint8 batches of 10 at 160 px -> 87 steps; never 0
    assert chunk_steps(10, (160, 160, 3), 1, 100) == 87
    assert chunk_steps(10**6, (160, 160, 3), 4, 100) == 1


def test_unsupervised_phase_reads_its_own_split():
    """Hebbian blocks trained with ``unsup=B`` equal those of a run whose training set is B."""
    labelled, unlabelled = _uint8_data(seed=0), _uint8_data(n=40, seed=1)
    unlabelled = ArrayData(unlabelled.images, np.full(40, -1, np.int32), CLASSES)
    with_unsup = Trainer(_cfg(batch=8), labelled, labelled, unsup=unlabelled, progress=False)
    on_b = Trainer(_cfg(batch=8), ArrayData(unlabelled.images, labelled.labels[:40], CLASSES), labelled, progress=False)
    for t in (with_unsup, on_b):
        t.train_hebbian([0, 1], epochs=2)
    assert with_unsup.unsup_images == 80 and with_unsup.n_train == N
    for i in (0, 1):
        np.testing.assert_array_equal(with_unsup.state["params"][f"block_{i}"]["layer"]["kernel"],
                                      on_b.state["params"][f"block_{i}"]["layer"]["kernel"])


def test_mismatched_splits_are_rejected_naming_the_argument():
    data = _uint8_data()
    other = ArrayData(np.zeros((4, 6, 6, 1), np.uint8), np.zeros(4, np.int32), CLASSES)
    with pytest.raises(ValueError, match=r"unsup: images of shape \(6, 6, 1\), expected .*\(8, 8, 1\)"):
        Trainer(_cfg(), data, data, unsup=other, progress=False)
    with pytest.raises(ValueError, match="test: images are float32, expected the training images' uint8"):
        Trainer(_cfg(), data, _float(data), progress=False)
