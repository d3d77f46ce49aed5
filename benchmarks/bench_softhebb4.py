"""Throughput of cifar_softhebb4 (96/384/1536 SoftHebb convnet) on random CIFAR-shaped data.

Measures, after compilation (medians over repeats):
- unsupervised training: all three blocks plastic in one step (SoftHebb demo.py / consecutive
  mode), images/s at batch 10 (the paper's) and at larger batches;
- frozen feature extraction (evaluation mode, batch ``--eval-batch``), images/s;
- one readout epoch on cached 24576-d features (Adam, batch 64), seconds per 50k images;
- this machine's float32 matmul (4096x4096) GFLOP/s in the same run, and the fraction of it
  each phase attains.

With ``--profile``: instead, where the unsupervised step's time goes. One Hebbian phase at batch 10
(all blocks plastic) is traced with XLA's per-operation annotations on; the time of every XLA CPU
operation is summed by name over the runtime's threads and split into GEMMs (the convolutions as
patches times a matrix, XLA's ``ynn_fusion``/``dot``) and everything else, next to the step's
FLOPs, the wall time of the traced and an untraced run, and the matmul rate.

    python benchmarks/bench_softhebb4.py [--images 1000] [--batches 10,64,256] [--eval-batch config,20,100] [--repeats 3]
    python benchmarks/bench_softhebb4.py --profile [--images 500]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

if "--profile" in sys.argv:  # before JAX starts: XLA's CPU runtime annotates every operation
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()

import jax
import jax.numpy as jnp
import numpy as np

from hebbjax.config import Config, conv_out, parse_pool
from hebbjax.data import Dataset
from hebbjax.run import compose_config
from hebbjax.train import Data, DeviceSource, Readout, evaluate, init_state, run_epochs, run_phase, setup
from hebbjax.train.loop import counted
from hebbjax.train.protocol import plan


def matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def conv_macs(blocks, shape) -> list[int]:
    """Multiply-accumulates of each block's convolution per image."""
    h, w, c = shape
    macs = []
    for b in blocks:
        ho, wo = conv_out(h, b.kernel, b.stride, b.padding, b.dilation), conv_out(w, b.kernel, b.stride, b.padding, b.dilation)
        macs.append(ho * wo * b.channels * b.kernel**2 * c // b.groups)
        pool = parse_pool(b.pool)
        h, w = (ho, wo) if pool is None else (conv_out(ho, pool[1], pool[2], pool[3]), conv_out(wo, pool[1], pool[2], pool[3]))
        c = b.channels
    return macs


def with_training(cfg: Config, **changes) -> Config:
    """``cfg`` with ``training`` fields replaced."""
    return dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, **changes))


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# XLA CPU operations that only wrap others (their time is their children's), and the GEMMs
_CONTAINER = re.compile(r"^(ThunkExecutor|SlinkyThreadPool|ThreadpoolListener|cond|while|call|end: |\$)")
_GEMM = re.compile(r"^(ynn_fusion|xnn_fusion|dot|convolution|custom-call|onednn)")


def unsupervised_phase(cfg: Config, data, images: int, batch: int) -> tuple[int, Callable[[], None]]:
    """All blocks plastic (consecutive mode: one phase), one update per mini-batch of ``batch``:
    the number of images (a multiple of ``batch``) and the compiled phase, to call."""
    n = max(images // batch, 1) * batch
    ctx = setup(with_training(cfg, mode="consecutive", unsup_batch_size=batch), Data(data(n), data(batch)), progress=False)
    state = init_state(ctx)
    phase = lambda: jax.block_until_ready(run_phase(ctx, 0, state).params)
    phase()  # compiles
    return n, phase


def profile(cfg: Config, data, images: int, fwd_flop: int) -> None:
    """Where one Hebbian phase at batch 10 spends its time, by XLA operation (see the docstring)."""
    n, phase = unsupervised_phase(cfg, data, images, 10)
    untraced = timed(phase, 3)
    by_name: collections.Counter = collections.Counter()
    spans = []
    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder)
        t = time.perf_counter()
        phase()
        traced = time.perf_counter() - t
        jax.profiler.stop_trace()
        [path] = glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)
        for plane in jax.profiler.ProfileData.from_file(path).planes:
            for line in plane.lines:
                for ev in line.events:
                    if "XLA" in line.name and not _CONTAINER.match(ev.name):
                        by_name[re.sub(r"\.\d+$", "", ev.name)] += ev.duration_ns / 1e9
                        spans.append((ev.start_ns, ev.end_ns))
    covered, reach = 0, 0  # seconds in which at least one operation ran (the runtime's threads overlap)
    for start, end in sorted(spans):
        covered += max(0, end - max(start, reach))
        reach = max(reach, end)
    covered /= 1e9
    busy = sum(by_name.values())
    gemm = sum(v for k, v in by_name.items() if _GEMM.match(k))
    flop = 2 * fwd_flop * n
    print(f"unsupervised phase, batch 10, {n} images: untraced {untraced:.2f} s ({n / untraced:.1f} img/s, "
          f"{flop / untraced / 1e9:.0f} GFLOP/s), traced {traced:.2f} s, of which {covered:.2f} s with an operation "
          f"running; the operations' times add up to {busy:.2f} s (their overlap across threads: {busy / covered:.2f}x), "
          f"{len(spans) / (n // 10):.0f} operations a step")
    print(f"  GEMMs {gemm:.2f} s = {gemm / busy:.0%} of the operations' time (the phase's {flop / 1e12:.3f} TFLOP of convolutions in "
          f"{gemm:.2f} s: {flop / gemm / 1e9:.0f} GFLOP/s); everything else {busy - gemm:.2f} s = {(busy - gemm) / busy:.0%}")
    for name, sec in by_name.most_common(16):
        print(f"  {sec:7.3f} s {sec / busy:5.1%}  {'GEMM ' if _GEMM.match(name) else ''}{name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000, help="images per unsupervised timing run")
    ap.add_argument("--batches", default="10,64,256", help="unsupervised batch sizes")
    ap.add_argument("--feature-images", type=int, default=2000)
    ap.add_argument("--eval-batch", default="config", help="feature-extraction batch sizes, comma-separated "
                    "('config': the experiment's training.eval_batch_size; the reference uses 1000)")
    ap.add_argument("--readout-images", type=int, default=5000, help="cached-feature readout epoch size (scaled to 50k)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="profile the unsupervised step at batch 10 instead")
    args = ap.parse_args()

    cfg = compose_config("+experiment=cifar_softhebb4", "logging.progress=false")
    macs = conv_macs(cfg.model.blocks, (32, 32, 3))
    fwd_flop = 2 * sum(macs)
    rng = np.random.default_rng(0)
    peak = matmul_gflops()
    out = {
        "machine": platform.machine(), "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__, "matmul_gflops": round(peak, 1), "forward_gflop_per_image": round(fwd_flop / 1e9, 3),
    }
    print(f"backend={out['backend']} devices={len(jax.devices())} jax={jax.__version__}")
    print(f"float32 matmul 4096^3: {peak:.0f} GFLOP/s; forward {fwd_flop / 1e9:.2f} GFLOP/image, unsupervised step ~2x that")

    def data(n):
        return Dataset(rng.uniform(size=(n, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, n).astype(np.int32), 10)

    if args.profile:
        return profile(cfg, data, args.images, fwd_flop)

    # -- unsupervised: all blocks plastic (consecutive mode: one phase), one update per mini-batch
    unsup = {}
    for bs in (int(b) for b in args.batches.split(",")):
        n, phase = unsupervised_phase(cfg, data, args.images, bs)
        ips = n / timed(phase, args.repeats)
        unsup[bs] = ips
        print(f"unsupervised, 3 blocks plastic, batch {bs:4d}: {ips:7.1f} images/s  ({2 * fwd_flop * ips / 1e9:6.1f} GFLOP/s, {2 * fwd_flop * ips / 1e9 / peak:.0%} of matmul)")
    out["unsupervised_images_per_second"] = {str(k): round(v, 1) for k, v in unsup.items()}

    # -- frozen features, per evaluation batch size
    n = args.feature_images
    ctx = setup(cfg, Data(data(100), data(10)), progress=False)
    state = init_state(ctx)
    images = DeviceSource.place(data(n), ctx.mesh)
    feature_ips = {}
    for eb in (cfg.training.eval_batch_size if b == "config" else int(b) for b in args.eval_batch.split(",")):
        extract = lambda: jax.block_until_ready(evaluate.features(ctx.model, state.variables, images, batch_size=eb,
                                                                  mesh=ctx.mesh, inputs=ctx.inputs)[0])
        extract()
        fips = n / timed(extract, args.repeats)
        feature_ips[eb] = fips
        print(f"feature extraction, batch {eb:4d}: {fips:7.1f} images/s  ({fwd_flop * fips / 1e9:6.1f} GFLOP/s, {fwd_flop * fips / 1e9 / peak:.0%} of matmul)")
    out["feature_images_per_second"] = {str(k): round(v, 1) for k, v in feature_ips.items()}

    # -- readout epoch on cached features (the readout phase's own step and loop)
    n = args.readout_images
    ctx = setup(with_training(cfg, readout_epochs=1), Data(data(n), data(10)), progress=False)
    state = init_state(ctx)
    features = DeviceSource.place(Dataset(rng.normal(size=(n, 24576)).astype(np.float32), rng.integers(0, 10, n).astype(np.int32), 10), ctx.mesh)
    how = plan(ctx, Readout(), features)
    opt, sup_opt = how.init_optimisers(state)
    start = state.at(len(ctx.phases) - 1, jax.random.key(0, impl="rbg"), opt, sup_opt)
    runner = features.runner(counted(how.step, n // how.batch_size), ctx.mesh)
    readout = lambda: jax.block_until_ready(run_epochs(how.step, start, features, name="readout", batch_size=how.batch_size, epochs=1,
                                                       key=jax.random.key(1, impl="rbg"), mesh=ctx.mesh,
                                                       steps_per_chunk=cfg.training.steps_per_chunk, runner=runner).params)
    readout()  # compile
    sec = timed(readout, args.repeats)
    out["readout_epoch_seconds_per_50k"] = round(sec * 50000 / n, 2)
    print(f"readout epoch on cached features (batch 64): {sec * 50000 / n:6.2f} s per 50k images ({n / sec:.0f} images/s)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
