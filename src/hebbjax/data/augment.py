"""Data augmentation on the device: jit-compiled, per sample, reproducible from a key.

Every augmentation is ``fn(key, images, **options) -> images`` on an (N, H, W, C)
batch and the same key always gives the same batch. The crops split ``key`` into
one key per sample (vmapped); flip and noise, being element-wise, draw one array
for the whole batch, which gives each sample its own independent draw with a
single PRNG call. They follow the
torchvision transforms used by SoftHebb (Journé et al., ICLR 2023, its dataset configs):

* :func:`random_crop`: ``RandomCrop(size, padding=4, padding_mode="reflect")``;
* :func:`random_flip`: ``RandomHorizontalFlip(p=0.5)``;
* :func:`gaussian_noise`: additive N(0, std²) noise (MNIST_100aug, std 1);
* :func:`random_resized_crop`: ``RandomResizedCrop(160, scale=(0.08, 1),
  ratio=(3/4, 4/3))`` with bilinear, antialiased resampling.

:func:`make_augmentation` composes them by name.
Pixel-wise normalisation commutes with all of them except noise, so they can run
on normalised images.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

Augmentation = Callable[[jax.Array, jax.Array], jax.Array]


@functools.partial(jax.jit, static_argnames=("padding",))
def random_crop(key: jax.Array, images: jax.Array, padding: int = 4) -> jax.Array:
    """Pads each image by ``padding`` with reflection (edge not repeated, like
    torch's "reflect") and crops a random window of the original size."""
    _, h, w, c = images.shape
    pad = ((padding, padding), (padding, padding), (0, 0))

    def one(k: jax.Array, image: jax.Array) -> jax.Array:
        padded = jnp.pad(image, pad, mode="reflect")
        # Offsets 0..2*padding, both ends included. One uniform draw (rather than
        # randint's several) keeps the XLA program, and its compile time, small.
        offsets = jnp.floor(jax.random.uniform(k, (2,)) * (2 * padding + 1)).astype(jnp.int32)
        top, left = jnp.minimum(offsets, 2 * padding)
        return jax.lax.dynamic_slice(padded, (top, left, 0), (h, w, c))

    return jax.vmap(one)(jax.random.split(key, images.shape[0]), images)


@jax.jit  # flip_prob is traced: changing it does not recompile
def random_flip(key: jax.Array, images: jax.Array, flip_prob: float = 0.5) -> jax.Array:
    """Mirrors each image left-right with probability ``flip_prob``."""
    flip = jax.random.bernoulli(key, flip_prob, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


@jax.jit  # noise_std is traced: changing it does not recompile
def gaussian_noise(key: jax.Array, images: jax.Array, noise_std: float = 1.0) -> jax.Array:
    """Adds independent N(0, noise_std²) noise to every pixel."""
    # Drawn flat and reshaped: the same values, but a much smaller XLA program
    # (compiles several times faster on CPU than drawing the 4-D shape).
    noise = jax.random.normal(key, (images.size,), jnp.result_type(images.dtype, jnp.float32))
    return images + noise_std * noise.reshape(images.shape)


def _crop_box(
    key: jax.Array, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], attempts: int = 10
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """torchvision ``RandomResizedCrop.get_params``, vectorised over its 10 attempts.

    Returns (top, left, crop height, crop width) as float32 scalars: the first
    attempt whose box fits, else the centre crop with the ratio clamped.
    """
    # All uniforms in one draw: a single PRNG call compiles much faster than five.
    u = jax.random.uniform(key, (2 * attempts + 2,))
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * u[:attempts])
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = jnp.exp(lo + (hi - lo) * u[attempts : 2 * attempts])
    w = jnp.round(jnp.sqrt(target * aspect))
    h = jnp.round(jnp.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = jnp.argmax(fits)  # first fitting attempt (0 if none; then unused)
    h_ok, w_ok = h[first], w[first]
    top_ok = jnp.minimum(jnp.floor(u[-2] * (height - h_ok + 1)), height - h_ok)
    left_ok = jnp.minimum(jnp.floor(u[-1] * (width - w_ok + 1)), width - w_ok)
    # Fallback: whole image, cropped to the nearest allowed aspect ratio.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w_fb, h_fb = float(width), float(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h_fb, w_fb = float(height), float(round(height * ratio[1]))
    else:
        w_fb, h_fb = float(width), float(height)
    top_fb, left_fb = (height - h_fb) // 2, (width - w_fb) // 2
    any_fit = jnp.any(fits)
    pick = lambda ok, fb: jnp.where(any_fit, ok, fb).astype(jnp.float32)  # noqa: E731
    return pick(top_ok, top_fb), pick(left_ok, left_fb), pick(h_ok, h_fb), pick(w_ok, w_fb)


def resize_box(
    image: jax.Array, top: jax.Array, left: jax.Array, h: jax.Array, w: jax.Array, size: int | tuple[int, int]
) -> jax.Array:
    """Resamples the box (top, left, h, w) of one (H, W, C) image to ``size``
    (side, or (height, width)), bilinear with antialiasing when shrinking
    (torchvision ``antialias=True``)."""
    out_h, out_w = (size, size) if isinstance(size, int) else size
    sy, sx = out_h / h, out_w / w
    return jax.image.scale_and_translate(
        image,
        (out_h, out_w, image.shape[-1]),
        spatial_dims=(0, 1),
        scale=jnp.stack([sy, sx]),
        translation=jnp.stack([-top * sy, -left * sx]),
        method="linear",
        antialias=True,
    )


@functools.partial(jax.jit, static_argnames=("size", "scale", "ratio"))
def random_resized_crop(
    key: jax.Array,
    images: jax.Array,
    size: int | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> jax.Array:
    """Crops a random box of random area (fraction ``scale``) and aspect ratio
    (``ratio``, sampled log-uniformly) from each image and resizes it to
    ``size`` x ``size`` (default: the input's own H x W, e.g. 160 for ImageNet
    as hebbjax loads it). Integer images are converted to float32."""
    _, height, width, _ = images.shape
    images = images.astype(jnp.result_type(images.dtype, jnp.float32))
    out = (size, size) if size is not None else (height, width)

    def one(k: jax.Array, image: jax.Array) -> jax.Array:
        top, left, h, w = _crop_box(k, height, width, tuple(scale), tuple(ratio))
        return resize_box(image, top, left, h, w, out)

    return jax.vmap(one)(jax.random.split(key, images.shape[0]), images)


AUGMENTATIONS: dict[str, Callable[..., jax.Array]] = {
    "crop": random_crop,
    "flip": random_flip,
    "noise": gaussian_noise,
    "resized_crop": random_resized_crop,
}


def _options(fn: Callable[..., jax.Array]) -> set[str]:
    params = inspect.signature(getattr(fn, "__wrapped__", fn)).parameters
    return set(params) - {"key", "images"}


def options_of(names: Sequence[str]) -> set[str]:
    """The options that the named augmentations take together (e.g. to pick a config's)."""
    return set().union(*(_options(AUGMENTATIONS[n]) for n in names if n in AUGMENTATIONS))


def _hashable(value: object) -> object:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(value)
    return value


def make_augmentation(names: Sequence[str], **options: object) -> Augmentation:
    """Composes augmentations by name, applied in the given order.

    Args:
      names: any of "crop", "flip", "noise", "resized_crop"; empty -> identity.
      **options: passed to every augmentation that takes them: ``padding``
        (crop), ``flip_prob`` (flip), ``noise_std`` (noise), ``size``, ``scale``,
        ``ratio`` (resized_crop).

    Returns:
      ``fn(key, images) -> images`` calling the jit-compiled augmentations in
      turn, step ``i`` with key ``jax.random.fold_in(key, i)``. It is not wrapped in another
      ``jit``: inside a jitted training step it is traced into the step, and
      called alone it reuses each augmentation's compiled program.

    Raises:
      ValueError: unknown name, or an option no chosen augmentation takes.
    """
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; available: {sorted(AUGMENTATIONS)}")
    steps = []
    used: set[str] = set()
    for name in names:
        fn = AUGMENTATIONS[name]
        # Static jit arguments must be hashable: lists (e.g. from a config) -> tuples.
        mine = {k: _hashable(v) for k, v in options.items() if k in _options(fn)}
        used |= mine.keys()
        steps.append(functools.partial(fn, **mine))
    unused = set(options) - used
    if unused:
        raise ValueError(f"option(s) {sorted(unused)} are not taken by augmentations {list(names)}")

    def augment(key: jax.Array, images: jax.Array) -> jax.Array:
        for i, step in enumerate(steps):
            images = step(jax.random.fold_in(key, i), images)  # independent key per step
        return images

    return augment
