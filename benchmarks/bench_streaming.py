"""Does a streamed split keep the step fed? The Hebbian phase of fmnist_softhebb, on the device vs
streamed from the host.

Measures, on real Fashion-MNIST (``$HEBBJAX_DATA_DIR``; prepared on first use), medians over
repeats, after one warm-up pass that compiles:

- the host stream alone: ``hebbjax.data.stream`` reading + decoding uint8 batches, images/s;
- the unsupervised phase (both blocks plastic, batch 10) with the images on the device
  (``DeviceSource``) and streamed in chunks copied ahead of the step (``StreamSource``), images/s,
  and their ratio (1.0 = the step never waits on the host).

    python benchmarks/bench_streaming.py [--images 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time

import jax
import numpy as np

from hebbjax.data import load, stream
from hebbjax.run import compose_config
from hebbjax.train import Data, StreamSource, init_state, run_phase, setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000, help="training images of the Hebbian phase")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.images

    cfg = compose_config("+experiment=fmnist_softhebb")
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, mode="consecutive"))
    batch = cfg.training.unsup_batch_size

    train = load("fashion_mnist", "train", dtype="uint8")
    on_device = dataclasses.replace(train, images=train.images[:n], labels=train.labels[:n])
    streamed = StreamSource.from_stream("fashion_mnist", "train", limit=n)

    def host_only() -> float:
        start = time.perf_counter()
        with stream("fashion_mnist", "train", batch, limit=n, dtype="uint8") as batches:
            count = sum(len(y) for _, y in batches)
        return count / (time.perf_counter() - start)

    def hebbian(source) -> float:
        ctx = setup(cfg, Data(source, on_device), progress=False)
        state = init_state(ctx)
        jax.block_until_ready(run_phase(ctx, 0, state).params)  # compiles
        start = time.perf_counter()
        jax.block_until_ready(run_phase(ctx, 0, state).params)
        return (n // batch) * batch / (time.perf_counter() - start)

    results: dict[str, list[float]] = {"host_stream": [], "device": [], "streamed": []}
    for _ in range(args.repeats):
        results["host_stream"].append(host_only())
        results["device"].append(hebbian(on_device))
        results["streamed"].append(hebbian(streamed))
    median = {k: statistics.median(v) for k, v in results.items()}
    report = {
        "images": n,
        "batch": batch,
        "images_per_second_median": median,
        "streamed_over_device": median["streamed"] / median["device"],
        "all": results,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
