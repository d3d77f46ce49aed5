"""What recording a run costs: the Hebbian phase of fmnist_softhebb with and without its monitor.

Times, after compilation and in turns (median of repeats), the unsupervised phase of the two
SoftHebb blocks (consecutive, batch 10) on ``--images`` random 28x28 images: without a monitor;
with ``metrics.jsonl`` only; and with the Hebbian diagnostics on a 256-image probe batch every
``--every`` chunks (the default of ``logging.diagnostics_every``) and at the phase's end (which
the metrics-only variant also computes, for the phase's pictures). The compiled diagnostics are
kept per phase like the chunk runner; their one compile per phase is reported apart.

    python benchmarks/bench_diagnostics.py [--images 60000] [--every 20] [--repeats 3]
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
from hebbjax.train import Data, init_state, run_phase, setup
from hebbjax.train.monitor import Monitor, probe_batch

from bench_softhebb4 import timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=60000)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = compose_config("+experiment=fmnist_softhebb", "training.mode=consecutive")
    rng = np.random.default_rng(0)
    n = args.images
    data = Dataset(rng.uniform(size=(n, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, n).astype(np.int32), 10)
    ctx = setup(cfg, Data(data, data), progress=False)
    state = init_state(ctx)

    def variant(name: str) -> float:
        with tempfile.TemporaryDirectory() as folder:
            logging = dataclasses.replace(cfg.logging, diagnostics_every=args.every if name == "diagnostics" else 0, plots=False)
            monitor = None if name == "none" else Monitor(dataclasses.replace(cfg, logging=logging), folder)
            start = time.perf_counter()
            jax.block_until_ready(run_phase(ctx, 0, state, monitor=monitor).params)
            return time.perf_counter() - start

    first = {name: variant(name) for name in ("none", "metrics", "diagnostics")}  # compiles runner, diagnostics
    times = {name: [] for name in ("none", "metrics", "diagnostics")}
    for _ in range(args.repeats):
        for name in times:
            times[name].append(variant(name))
    med = {k: statistics.median(v) for k, v in times.items()}
    chunks = n // cfg.training.unsup_batch_size // cfg.training.steps_per_chunk
    # One diagnostics call alone (what the phase pays per call: the loop waits for it), on a
    # state placed as the chunks' states are: a difference of two noisy phase times is not.
    trained = run_phase(ctx, 0, state)
    probe = probe_batch(ctx.unsup, cfg.logging.probe_images)
    jax.device_get(ctx.diagnose[0](trained, probe))
    call = timed(lambda: jax.device_get(ctx.diagnose[0](trained, probe)), 7)
    calls = chunks // args.every + 1
    print(f"Hebbian phase, {n} images, {chunks} chunks; diagnostics every {args.every} chunks")
    for name in times:
        print(f"  {name:12s} {med[name]:7.2f} s (min {min(times[name]):.2f}, max {max(times[name]):.2f}); "
              f"{med[name] / med['none'] - 1:+.1%} against none")
    print(f"  one diagnostics call ({cfg.logging.probe_images} probe images): {call:.3f} s; {calls} calls in this phase = "
          f"{calls * call / med['none']:.1%} of its time")
    compile_s = first["metrics"] - med["metrics"]  # the diagnostics' one compile per phase (metrics runs them at its end)
    print(f"  the diagnostics' compile, once per phase: {compile_s:.2f} s")
    print(json.dumps({"images": n, "every": args.every, "seconds": times, "median": med, "first": first,
                      "diagnostics_compile": compile_s, "call_s": call, "calls": calls, "jax": jax.__version__}))


if __name__ == "__main__":
    main()
