"""The kernel-level measurements behind hebbjax's CPU choices (medians of 7 calls after compilation):

- convolution forward and kernel cotangent (the Hebbian correlation term), XLA's convolution vs
  patches times one matrix, on SoftHebb's and the Fashion-MNIST net's layer shapes;
- max pooling max(4,2,1) at batch 64, forward and gradient: XLA's ``reduce_window`` /
  ``select_and_scatter`` vs :func:`hebbjax.nn.layers.max_pool_views`;
- one readout step (Adam, batch 64, 24576 features): no dropout, hebbjax's Dropout (masks from a
  threefry key), the same masks drawn with the ``rbg`` key itself (before commit 5717261), flax's
  nn.Dropout, and hebbjax's Classifier with flax's plain dot (before :func:`hebbjax.nn.layers.dense_dot`).

    python benchmarks/bench_cpu_kernels.py
"""

from __future__ import annotations

import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from hebbjax.nn.layers import Dropout, keep_mask, max_pool_views
from hebbjax.nn.network import Classifier
from hebbjax.rules import Conv

# (batch, height, in channels, kernel, out channels, padding)
CONV_LAYERS = [(100, 28, 1, 5, 32, 2), (100, 14, 32, 3, 128, 1), (10, 32, 3, 5, 96, 2), (10, 16, 96, 3, 384, 1),
               (100, 16, 96, 3, 384, 1), (10, 8, 384, 3, 1536, 1), (100, 8, 384, 3, 1536, 1)]
POOL_INPUTS = [(64, 28, 28, 32), (64, 14, 14, 128), (64, 28, 28, 64), (64, 14, 14, 256)]


class RbgMaskClassifier(nn.Module):
    """hebbjax's dropout before commit 5717261: the same 32-masks-per-word draw, from the rbg key."""

    @nn.compact
    def __call__(self, x, train=True):
        mask = keep_mask(self.make_rng("dropout"), 0.5, x.shape)
        return nn.Dense(10)(jnp.where(mask, x / 0.5, 0.0))


class PlainDotClassifier(nn.Module):
    """hebbjax's Classifier before dense_dot: the same dropout, nn.Dense with lax.dot_general."""

    @nn.compact
    def __call__(self, x, train=True):
        return nn.Dense(10)(Dropout(0.5)(x, deterministic=not train))


def ms(fn, *args) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(7):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    print(f"backend={jax.default_backend()} jax={jax.__version__}")
    for b, h, cin, k, cout, pad in CONV_LAYERS:
        x = jax.random.normal(jax.random.key(0), (b, h + 2 * pad, h + 2 * pad, cin))
        w = jax.random.normal(jax.random.key(1), (k, k, cin, cout))
        g = jnp.ones((b, h, h, cout))
        r = {}
        for impl in ("xla", "patches"):
            conv = Conv(implementation=impl)
            r["fwd", impl] = ms(jax.jit(lambda w, x: conv(w, x)), w, x)
            r["dk", impl] = ms(jax.jit(lambda w, x: jax.vjp(lambda v: conv(v, x), w)[1](g)[0]), w, x)
        print(f"conv b{b} {h}x{h}x{cin} k{k} -> {cout} (patch {k * k * cin:4d}): forward xla {r['fwd', 'xla']:7.1f} "
              f"patches {r['fwd', 'patches']:7.1f} ms | kernel cotangent xla {r['dk', 'xla']:7.1f} patches {r['dk', 'patches']:7.1f} ms")

    for shape in POOL_INPUTS:
        x = jax.random.normal(jax.random.key(0), shape)
        xla = lambda v: nn.max_pool(v, (4, 4), (2, 2), ((1, 1), (1, 1)))
        views = lambda v: max_pool_views(v, 4, 2, 1)
        fwd = [ms(jax.jit(f), x) for f in (xla, views)]
        grad = [ms(jax.jit(jax.grad(lambda v, f=f: jnp.sum(f(v) ** 2))), x) for f in (xla, views)]
        print(f"max(4,2,1) {shape}: forward xla {fwd[0]:5.1f} views {fwd[1]:5.1f} ms | gradient xla {grad[0]:5.1f} views {grad[1]:5.1f} ms")

    feats = jax.random.normal(jax.random.key(0), (5000, 24576))
    labels = jax.random.randint(jax.random.key(1), (5000,), 0, 10)
    idx = jax.random.randint(jax.random.key(2), (100, 64), 0, 5000)
    tx = optax.adam(1e-3)
    readouts = {
        "no dropout": (Classifier(10, 0.0), True),
        "dropout 0.5, hebbjax Dropout (32 draws per random word, threefry)": (Classifier(10, 0.5), True),
        "dropout 0.5, the same masks from the rbg key": (RbgMaskClassifier(), True),
        "dropout 0.5, hebbjax Dropout, plain nn.Dense dot (no dense_dot)": (PlainDotClassifier(), True),
        "dropout 0.5, flax nn.Dropout (bernoulli)": (nn.Sequential([nn.Dropout(0.5, deterministic=False), nn.Dense(10)]), False),
    }
    for name, (clf, is_classifier) in readouts.items():
        params = clf.init(jax.random.key(3), feats[:1])
        key = jax.random.key(4, impl="rbg")
        kwargs = {"train": True} if is_classifier else {}

        @jax.jit
        def steps(params, key, clf=clf, kwargs=kwargs):
            def body(c, i):
                p, opt, k = c
                k, k_drop = jax.random.split(k)
                loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(clf.apply(p, feats[i], rngs={"dropout": k_drop}, **kwargs), labels[i]).mean()
                updates, opt = tx.update(jax.grad(loss)(p), opt, p)
                return (optax.apply_updates(p, updates), opt, k), None

            return jax.lax.scan(body, (params, tx.init(params), key), idx)[0][0]

        print(f"readout step, batch 64 x 24576 features, {name}: {ms(steps, params, key) / 100:5.2f} ms")

    # the readout's GEMM alone: a gathered batch of 64 rows times 10 columns, and its weight gradient
    w = jnp.zeros((24576, 10))

    @jax.jit
    def forward(w):
        return jax.lax.scan(lambda w, i: (w + 0 * jnp.sum(feats[i] @ w), None), w, idx)[0]

    @jax.jit
    def forward_and_gradient(w):
        def body(w, i):
            xb = feats[i]
            return w - 1e-3 * xb.T @ jnp.tanh(xb @ w), None

        return jax.lax.scan(body, w, idx)[0]

    for name, f in (("gather + logits", forward), ("gather + logits + weight gradient", forward_and_gradient)):
        step = ms(f, w) / 100
        print(f"readout GEMM, batch 64 x 24576 -> 10, {name}: {step:5.2f} ms ({64 * 24576 * 4 / (step * 1e-3) / 1e9:4.1f} GB/s of the batch)")


if __name__ == "__main__":
    main()
