"""The whole cifar_softhebb4 command on a generated CIFAR-10 archive, against its floor.

Writes a CIFAR-10 archive in the original python format (random images, ``--train`` / ``--test``
images; the default is the real archive's 50k / 10k), prepares it offline with the archive's own
checksums (the command itself would check the real archive's SHA-256), then times
``python -m hebbjax.run +experiment=<experiment> data.dir=<archive>`` as a subprocess: wall time,
the per-phase seconds of its ``results.json`` and its peak RSS. In the same run it measures the
machine's float32 matmul rate and memory bandwidth, and reports the floor of the pipeline:

    floor = (Hebbian FLOPs + feature FLOPs) / matmul rate + readout epochs x feature bytes / bandwidth

- Hebbian FLOPs: each phase's forward pass up to its plastic block on every unsupervised image,
  plus one more pass of the plastic block's size for its update (``dW = y^T x`` is a GEMM of the
  same size); the frozen blocks below it run their forward only;
- feature FLOPs: one forward pass of every block over the train and test images;
- the readout reads every cached feature once per epoch (its FLOPs, ``features x classes``, are
  negligible).

    python benchmarks/bench_pipeline.py [--train 50000] [--test 10000] [--experiment cifar_softhebb4] [overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hebbjax.config import check
from hebbjax.run import compose_config, machine, package_versions

from bench_softhebb4 import conv_macs, matmul_gflops, timed


def bandwidth_gbs(gigabytes: float = 1.0, repeats: int = 5) -> float:
    """Read bandwidth of this machine: a sum over a ``gigabytes`` float32 array (GB/s)."""
    a = jnp.ones((int(gigabytes * 1e9 / 4),), jnp.float32)
    f = jax.jit(jnp.sum)
    f(a).block_until_ready()
    return gigabytes / timed(lambda: f(a).block_until_ready(), repeats)


def floor(cfg, n_train: int, n_test: int, gflops: float, gbs: float) -> dict[str, float]:
    """The pipeline's FLOP floor and readout memory floor (module docstring), in seconds."""
    blocks = list(cfg.model.blocks)
    macs = conv_macs(blocks, (32, 32, 3))
    plastic = [i for i, b in enumerate(blocks) if b.rule not in ("none", "bp")]
    epochs = cfg.training.unsup_epochs
    if cfg.training.mode == "successive":
        hebbian = sum(2 * (sum(macs[: i + 1]) + macs[i]) for i in plastic) * n_train * epochs
    else:  # one phase, every plastic block learning
        hebbian = 2 * (sum(macs[: max(plastic) + 1]) + sum(macs[i] for i in plastic)) * n_train * epochs
    features = 2 * sum(macs) * (n_train + n_test)
    width = int(np.prod(check(cfg)[-1]))  # the readout reads the last block's output
    readout_bytes = cfg.training.readout_epochs * n_train * width * 4
    return {"hebbian_tflop": hebbian / 1e12, "feature_tflop": features / 1e12, "feature_width": width,
            "flop_floor_s": (hebbian + features) / (gflops * 1e9), "readout_floor_s": readout_bytes / (gbs * 1e9)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=50000)
    ap.add_argument("--test", type=int, default=10000)
    ap.add_argument("--experiment", default="cifar_softhebb4")
    ap.add_argument("--workdir", default=None, help="where the archive, the prepared data and the run go (default: a temporary folder)")
    ap.add_argument("overrides", nargs="*", help="more overrides for the command")
    args = ap.parse_args()
    overrides = [f"+experiment={args.experiment}", "logging.progress=false", "logging.plots=false", *args.overrides]
    cfg = compose_config(*overrides)
    check(cfg)
    if cfg.data.name != "cifar10":
        sys.exit(f"--experiment: expected a CIFAR-10 experiment, got data.name={cfg.data.name!r}")
    from hebbjax import testing
    from hebbjax.data.preparation import prepare

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        root, tfds_dir, out = work / "archives", work / "tfds", work / "run"
        start = time.perf_counter()
        testing.write_cifar_python(root / "cifar10", 10, n_train=args.train, n_test=args.test)
        prepare("cifar10", data_dir=root, tfds_dir=tfds_dir, file_checksums=testing.checksums(sorted((root / "cifar10").iterdir())))
        print(f"archive of {args.train} + {args.test} images written and prepared in {time.perf_counter() - start:.0f} s")
        gflops_before, gbs = matmul_gflops(), bandwidth_gbs()
        env = {**os.environ, "HEBBJAX_TFDS_DIR": str(tfds_dir)}
        command = [sys.executable, "-m", "hebbjax.run", *overrides, f"data.dir={root}", f"hydra.run.dir={out}"]
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True)
        wall = time.perf_counter() - start
        peak_rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6  # kB on Linux
        gflops_after = matmul_gflops()
        results = json.loads((out / "results.json").read_text())
    gflops = float(np.median([gflops_before, gflops_after]))
    f = floor(cfg, args.train, args.test, gflops, gbs)
    total_floor = f["flop_floor_s"] + f["readout_floor_s"]
    print(f"{' '.join(command[3:-2])}: {wall:.0f} s wall, peak RSS {peak_rss_gb:.1f} GB, test accuracy {results['test_accuracy']:.4f}")
    print(f"  phases (s): {json.dumps(results['seconds'])}")
    print(f"  matmul {gflops_before:.0f} / {gflops_after:.0f} GFLOP/s (before / after), read bandwidth {gbs:.1f} GB/s")
    print(f"  floor: {f['hebbian_tflop']:.2f} + {f['feature_tflop']:.2f} TFLOP / {gflops:.0f} GFLOP/s = {f['flop_floor_s']:.0f} s, "
          f"readout {f['readout_floor_s']:.0f} s: {total_floor:.0f} s; the command took {wall / total_floor:.2f}x the floor")
    print(json.dumps({"experiment": args.experiment, "train": args.train, "test": args.test, "overrides": args.overrides,
                      "wall_s": wall, "seconds": results["seconds"], "peak_rss_gb": peak_rss_gb, "test_accuracy": results["test_accuracy"],
                      "matmul_gflops": [gflops_before, gflops_after], "bandwidth_gbs": gbs, **f, "floor_s": total_floor,
                      "ratio": wall / total_floor, "jax": jax.__version__, "packages": package_versions(), "host": machine()}))


if __name__ == "__main__":
    main()
