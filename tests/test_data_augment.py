"""Tests of hebbjax.data.augment: on-device, per-sample, key-reproducible augmentation.

XLA compilation dominates the run time on a small CPU machine, so the tests
share one batch shape and the default static arguments: each augmentation is
compiled once for the whole module.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebbjax.data import augment

N, H, W, C = 64, 12, 10, 3
RESIZED = 8  # output side of random_resized_crop in these tests


@pytest.fixture(scope="module")
def images() -> jax.Array:
    return jnp.asarray(np.random.default_rng(0).random((N, H, W, C), dtype=np.float32))


@pytest.fixture(scope="module")
def copies(images) -> jax.Array:
    return jnp.broadcast_to(images[:1], images.shape)  # N copies of one image


# Options are always passed explicitly: a traced option left at its default
# would give a second compiled program.
ALL = {
    "crop": (augment.random_crop, {}),
    "flip": (augment.random_flip, {"flip_prob": 0.5}),
    "noise": (augment.gaussian_noise, {"noise_std": 1.0}),
    "resized_crop": (augment.random_resized_crop, {"size": RESIZED}),
}


@pytest.mark.parametrize("name", ALL)
def test_same_key_same_output_other_key_other_output(name, images):
    fn, kw = ALL[name]
    a = np.asarray(fn(jax.random.key(1), images, **kw))
    b = np.asarray(fn(jax.random.key(1), images, **kw))
    c = np.asarray(fn(jax.random.key(2), images, **kw))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", ALL)
def test_each_sample_gets_its_own_draw(name, copies):
    fn, kw = ALL[name]
    out = np.asarray(fn(jax.random.key(0), copies, **kw))
    distinct = len({out[i].tobytes() for i in range(N)})
    assert distinct == 2 if name == "flip" else distinct > N // 4  # flip has two outcomes


def test_crop_is_a_window_of_the_reflect_padded_image(images):
    out = np.asarray(augment.random_crop(jax.random.key(3), images))
    assert out.shape == images.shape
    tops, lefts = set(), set()
    for image, crop in zip(np.asarray(images), out, strict=True):
        padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode="reflect")  # == torch "reflect"
        found = [
            (dy, dx) for dy in range(9) for dx in range(9) if np.array_equal(padded[dy : dy + H, dx : dx + W], crop)
        ]
        assert len(found) == 1, "crop is not a window of the reflect-padded image"
        tops.add(found[0][0])
        lefts.add(found[0][1])
    # Offsets 0..2*pad inclusive are reachable, as in torchvision RandomCrop(pad 4).
    assert tops == set(range(9)) and lefts == set(range(9))


def test_flip_is_exact_and_about_half(images):
    src = np.asarray(images)
    flipped = []
    for seed in range(16):  # 16 x 64 samples, one compilation
        out = np.asarray(augment.random_flip(jax.random.key(seed), images, flip_prob=0.5))
        same = np.all(out == src, axis=(1, 2, 3))
        mirrored = np.all(out == src[:, :, ::-1], axis=(1, 2, 3))
        assert np.all(same ^ mirrored)
        flipped.append(mirrored)
    assert 0.44 < np.mean(flipped) < 0.56  # p = 0.5 over 1024 draws: 5 sigma = 0.078
    never = np.asarray(augment.random_flip(jax.random.key(0), images, flip_prob=0.0))
    np.testing.assert_array_equal(never, src)


def test_noise_statistics(images):
    noise = np.asarray(augment.gaussian_noise(jax.random.key(0), images, noise_std=1.0)) - np.asarray(images)
    assert abs(noise.mean()) < 0.03  # std 1 over 23040 values: 5 sigma = 0.033
    assert abs(noise.std() - 1.0) < 0.03
    assert abs(np.corrcoef(noise[0].ravel(), noise[1].ravel())[0, 1]) < 0.2
    half = np.asarray(augment.gaussian_noise(jax.random.key(0), images, noise_std=0.5)) - np.asarray(images)
    np.testing.assert_allclose(half, 0.5 * noise, atol=1e-5)  # same draw, scaled


def test_resized_crop_shape_and_range(images):
    out = np.asarray(augment.random_resized_crop(jax.random.key(0), images, size=RESIZED))
    assert out.shape == (N, RESIZED, RESIZED, C) and out.dtype == np.float32
    # Antialiased bilinear weights are non-negative and sum to 1: convex combinations.
    assert out.min() >= float(images.min()) - 1e-5
    assert out.max() <= float(images.max()) + 1e-5
    const = np.asarray(augment.random_resized_crop(jax.random.key(1), jnp.full_like(images, 0.25), size=RESIZED))
    np.testing.assert_allclose(const, 0.25, atol=1e-5)
    shape = jax.eval_shape(lambda k, x: augment.random_resized_crop(k, x, size=160), jax.random.key(0), images)
    assert shape.shape == (N, 160, 160, C)
    same = jax.eval_shape(augment.random_resized_crop, jax.random.key(0), images)  # default: input size
    assert same.shape == images.shape


def test_resize_box_of_output_size_is_that_window():
    """Checks the box -> scale_and_translate convention (half-pixel centres)."""
    image = jnp.asarray(np.random.default_rng(1).random((30, 26, 2), dtype=np.float32))
    resize = jax.jit(augment.resize_box, static_argnames="size")
    for top, left in ((5, 7), (0, 0), (18, 14)):
        out = resize(image, jnp.float32(top), jnp.float32(left), jnp.float32(12), jnp.float32(12), size=12)
        np.testing.assert_allclose(np.asarray(out), np.asarray(image[top : top + 12, left : left + 12]), atol=1e-5)


def test_crop_boxes_follow_torchvision_sampling():
    def boxes_of(key):  # split inside the jit: no extra program for an eager split
        one = lambda k: jnp.stack(augment._crop_box(k, 100, 120, (0.08, 1.0), (3 / 4, 4 / 3)))  # noqa: E731
        return jax.vmap(one)(jax.random.split(key, 1000))

    boxes = jax.jit(boxes_of)(jax.random.key(0))
    top, left, h, w = np.asarray(boxes).T
    assert np.all(top >= 0) and np.all(left >= 0)
    assert np.all(top + h <= 100) and np.all(left + w <= 120)
    area = h * w / (100 * 120)
    assert area.min() > 0.07 and area.max() <= 1.0 and 0.4 < area.mean() < 0.65  # E = 0.54
    assert np.all((w / h > 0.72) & (w / h < 1.38))  # 3/4 .. 4/3 up to rounding
    assert len(np.unique(top)) > 10 and len(np.unique(h)) > 10


@pytest.fixture(scope="module")
def composed():
    return augment.make_augmentation(["crop", "flip", "noise"], flip_prob=0.5, noise_std=0.1)


def test_make_augmentation_composes_in_order_with_split_keys(composed, images):
    key = jax.random.key(7)
    k1, k2, k3 = (jax.random.fold_in(key, i) for i in range(3))
    flipped = augment.random_flip(k2, augment.random_crop(k1, images), flip_prob=0.5)
    expected = augment.gaussian_noise(k3, flipped, noise_std=0.1)
    np.testing.assert_allclose(np.asarray(composed(key, images)), np.asarray(expected), atol=1e-6)
    identity = augment.make_augmentation([])
    np.testing.assert_array_equal(np.asarray(identity(key, images)), np.asarray(images))


def test_samples_do_not_depend_on_each_other(composed, images):
    out = np.asarray(composed(jax.random.key(0), images))
    other = np.asarray(composed(jax.random.key(0), images.at[1:].set(0.0)))
    np.testing.assert_array_equal(out[0], other[0])


def test_make_augmentation_binds_options_including_config_lists(images):
    fn = augment.make_augmentation(["resized_crop", "flip"], size=RESIZED, scale=[0.5, 1.0], ratio=[0.75, 1.25])
    assert jax.eval_shape(fn, jax.random.key(0), images).shape == (N, RESIZED, RESIZED, C)


def test_make_augmentation_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment.make_augmentation(["crop", "rotate"])
    with pytest.raises(ValueError, match="noise_std"):
        augment.make_augmentation(["crop"], noise_std=1.0)
