"""Time per epoch of cifar_miconi's Hebbian phase on random CIFAR-shaped data.

The paper's network (3 conv layers 100/196/400, sparse top-1 plasticity trained by the gradient of
the instar surrogate loss, pruning, unit norm, batch 100), all three layers learning in one phase
as in the notebook; burn-in off so that every step updates. Measures, after compilation (median
of repeats), the Hebbian phase's images/s and the seconds per 50k-image epoch, the ridge readout
on 1600 cached features of ``--readout-images`` images, and the float32 matmul rate of the same run.

    python benchmarks/bench_miconi.py [--images 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import jax
import numpy as np

from hebbjax.data import Dataset
from hebbjax.run import compose_config
from hebbjax.train import Data, DeviceSource, init_state, run_phase, setup
from hebbjax.train.probes import fit_ridge

from bench_softhebb4 import matmul_gflops, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--readout-images", type=int, default=50000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = compose_config("+experiment=cifar_miconi", "logging.progress=false", "data.whiten=null", "data.unsup_augment=[]")
    blocks = [dataclasses.replace(b, burn_in=0) for b in cfg.model.blocks]
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, blocks=blocks),
                              training=dataclasses.replace(cfg.training, unsup_epochs=1))
    rng = np.random.default_rng(0)
    n = args.images
    data = Dataset(rng.normal(size=(n, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, n).astype(np.int32), 10)
    peak = matmul_gflops()
    ctx = setup(cfg, Data(data, data), progress=False)
    state = init_state(ctx)
    jax.block_until_ready(run_phase(ctx, 0, state).params)  # compiles
    sec = timed(lambda: jax.block_until_ready(run_phase(ctx, 0, state).params), args.repeats)
    ips = n / sec
    m = args.readout_images
    feats = DeviceSource.place(Dataset(rng.normal(size=(m, 1600)).astype(np.float32), rng.integers(0, 10, m).astype(np.int32), 10), ctx.mesh)
    jax.block_until_ready(fit_ridge(feats, 10, 1.0))
    ridge_sec = timed(lambda: jax.block_until_ready(fit_ridge(feats, 10, 1.0)), args.repeats)
    out = {"jax": jax.__version__, "backend": jax.default_backend(), "matmul_gflops": round(peak, 1), "images": n,
           "hebbian_images_per_second": round(ips, 1), "epoch_seconds_per_50k": round(50000 / ips, 1),
           "ridge_seconds": round(ridge_sec, 2), "ridge_images": m}
    print(f"float32 matmul: {peak:.0f} GFLOP/s")
    print(f"Hebbian phase, 3 layers, batch 100: {ips:.1f} images/s, {50000 / ips:.0f} s per 50k-image epoch "
          f"(20 epochs: {20 * 50000 / ips / 60:.0f} min)")
    print(f"ridge readout on {m} x 1600 cached features: {ridge_sec:.2f} s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
