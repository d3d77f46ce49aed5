"""How long saving a checkpoint holds up training, for cifar_softhebb4's state (5.9M parameters).

Measures, medians over repeats: the time ``Checkpoints.save`` blocks the training loop (the state
is copied off the device; orbax writes it to disk in a background thread), the time until that
write is on disk, and, for scale, one chunk of ``training.steps_per_chunk`` unsupervised steps at
batch 10 (the interval at which a checkpoint may be taken). Two states: the Hebbian phase's (no
optimiser moments) and backprop's (Adam moments of every parameter: 3x the bytes).

    python benchmarks/bench_checkpoint.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time

import jax
import numpy as np

from hebbjax.data import Dataset
from hebbjax.run import compose_config
from hebbjax.train import Checkpoints, Data, init_state, run_phase, setup
from hebbjax.train.fit import begin, checkpoint_meta, Record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cfg = compose_config("+experiment=cifar_softhebb4", "logging.progress=false")
    rng = np.random.default_rng(0)
    steps = cfg.training.steps_per_chunk
    n = steps * cfg.training.unsup_batch_size
    data = Dataset(rng.uniform(size=(n, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, n).astype(np.int32), 10)
    report: dict = {"jax": jax.__version__, "backend": jax.default_backend()}

    ctx = setup(dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, mode="consecutive")), Data(data, data), progress=False)
    state = init_state(ctx)
    jax.block_until_ready(run_phase(ctx, 0, state).params)  # compile
    chunk = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        jax.block_until_ready(run_phase(ctx, 0, state).params)
        chunk.append(time.perf_counter() - start)
    report["chunk_seconds"] = statistics.median(chunk)
    print(f"one chunk of {steps} unsupervised steps at batch 10 (3 blocks plastic): {report['chunk_seconds']:.2f} s")

    bp = setup(dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, method="bp")), Data(data, data), progress=False)
    for name, c, s in (("hebbian", ctx, begin(ctx, 0, state)), ("backprop", bp, begin(bp, 0, init_state(bp)))):
        size = sum(x.nbytes for x in jax.tree_util.tree_leaves(s) if hasattr(x, "nbytes"))
        blocking, on_disk = [], []
        with tempfile.TemporaryDirectory() as folder:
            checkpoints = Checkpoints(folder, keep=2)
            meta = checkpoint_meta(c, 0, 1, 2, Record())
            for _ in range(args.repeats):
                start = time.perf_counter()
                checkpoints.save(s, meta, force=True)
                blocking.append(time.perf_counter() - start)
                checkpoints.manager.wait_until_finished()
                on_disk.append(time.perf_counter() - start)
            checkpoints.close()
        report[name] = {"megabytes": round(size / 2**20, 1), "blocking_seconds": statistics.median(blocking),
                        "blocking_min_max": [min(blocking), max(blocking)], "on_disk_seconds": statistics.median(on_disk)}
        print(f"{name} state, {size / 2**20:.1f} MiB: save blocks {statistics.median(blocking) * 1e3:.0f} ms "
              f"(min {min(blocking) * 1e3:.0f}, max {max(blocking) * 1e3:.0f}); on disk after {statistics.median(on_disk) * 1e3:.0f} ms; "
              f"{statistics.median(blocking) / report['chunk_seconds']:.1%} of a chunk")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
