"""Throughput of cifar_softhebb4 (96/384/1536 SoftHebb convnet) on random CIFAR-shaped data.

Measures, after compilation (medians over repeats):
- unsupervised training: all three blocks plastic in one step (SoftHebb demo.py / consecutive
  mode), images/s at batch 10 (the paper's) and at larger batches;
- frozen feature extraction (evaluation mode, batch ``--eval-batch``), images/s;
- one readout epoch on cached 24576-d features (Adam, batch 64), seconds per 50k images;
- this machine's float32 matmul rate (the best of 1024^2 to 4096^2, ``matmul_gflops``) in the same run, and the fraction of it
  each phase attains.

With ``--profile``: instead, where the unsupervised step's time goes. One Hebbian phase at batch 10
(all blocks plastic) is traced with XLA's per-operation annotations on; the time of every XLA CPU
operation is summed by name over the runtime's threads and split into GEMMs (the convolutions as
patches times a matrix: the operations of XLA's optimised program, dumped to a temporary folder,
that hold a ``dot`` or ``convolution``; an Eigen ``dot``'s asynchronous tail included, see
``profile``) and everything else, next to the step's FLOPs, the time with no operation running,
the wall time of the traced and an untraced run, and the matmul rate.

With ``--ab NAME``: instead, the unsupervised epoch (batch 10) and the readout epoch now and with the
code as it was before a change (``BEFORE``: ``gather``, up to commit 27ed1af; ``sums``, up to
6265f60; ``winner``, up to 9c50a9b), compiled side by side and timed in turns in one process (``ab``).

    python benchmarks/bench_softhebb4.py [--images 1000] [--batches 10,64,256] [--eval-batch config,20,100] [--repeats 3] [overrides ...]
                                         [--phases unsupervised,features,readout]
    python benchmarks/bench_softhebb4.py --profile [--images 500]
    python benchmarks/bench_softhebb4.py --ab sums [--phases unsupervised,readout] [--images 300] [--readout-images 5000] [--repeats 9]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import glob
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

_HLO_DUMP = tempfile.mkdtemp(prefix="hebbjax-hlo-") if "--profile" in sys.argv else None
if _HLO_DUMP:  # before JAX starts: XLA's CPU runtime annotates every operation; the HLO names them
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true"
                               f" --xla_dump_to={_HLO_DUMP} --xla_dump_hlo_as_text").strip()

import jax
import jax.numpy as jnp
import numpy as np

from hebbjax.config import Config, conv_out, parse_pool
from hebbjax.data import Dataset
from hebbjax.run import compose_config, machine, package_versions
from hebbjax.train import Data, DeviceSource, evaluate, init_state, run_epochs, run_phase, setup
from hebbjax.train.loop import counted
from hebbjax.train.protocol import plan


def matmul_gflops(sizes: tuple[int, ...] = (1024, 2048, 4096), repeats: int = 5) -> float:
    """The machine's float32 matmul rate: the best over square sizes of the median of ``repeats``.

    Up to commit 9c50a9b this was the 4096^3 matmul alone; on a noisy day (2026-12-04) that ran at
    186-189 GFLOP/s while 1024^3-2048^3 ran at 210-216 and the conv3 GEMM of ``cifar_softhebb4``
    (640 x 3456 x 1536) at 212, so fractions of it overstated how close a phase came to the limit."""
    best = 0.0
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        f = jax.jit(lambda x: x @ x)
        f(a).block_until_ready()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            f(a).block_until_ready()
            times.append(time.perf_counter() - t)
        best = max(best, 2 * n**3 / statistics.median(times) / 1e9)
    return best


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


def times(fn, repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn``."""
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def timed(fn, repeats: int) -> float:
    return statistics.median(times(fn, repeats))


# XLA CPU operations that only wrap others (their time is their children's)
_CONTAINER = re.compile(r"^(ThunkExecutor|SlinkyThreadPool|ThreadpoolListener|cond|while|call|end: |\$)")


def unsupervised_phase(cfg: Config, data, images: int, batch: int) -> tuple[int, Callable[[], None]]:
    """All blocks plastic (consecutive mode: one phase), one update per mini-batch of ``batch``:
    the number of images (a multiple of ``batch``) and the compiled phase, to call."""
    n = max(images // batch, 1) * batch
    ctx = setup(with_training(cfg, mode="consecutive", unsup_batch_size=batch), Data(data(n), data(batch)), progress=False)
    state = init_state(ctx)
    phase = lambda: jax.block_until_ready(run_phase(ctx, 0, state).params)
    phase()  # compiles
    return n, phase


def gemm_operations(folder: str) -> set[str]:
    """Names of the operations that multiply matrices in the Hebbian phase's optimised XLA CPU
    program under ``folder``: plain ``dot`` instructions (Eigen) and the fusions (YNNPACK's
    ``ynn_fusion`` ...) whose computation holds a ``dot`` or a ``convolution``. (YNNPACK also takes
    over reductions, so a fusion's name does not say whether it is a GEMM.) Names are unique only
    within a program: only the programs with the phase's loop (a ``while`` over a ``conditional``)
    are read, not e.g. the matmul's that this script times first."""
    names: set[str] = set()
    for path in glob.glob(f"{folder}/*after_optimizations.txt"):
        text = open(path).read()
        if " while(" not in text or " conditional(" not in text:
            continue
        gemm_bodies = {m.group(1) for m in re.finditer(r"^(%?[\w.-]+) [^\n]*\{\n((?:(?!^\}).*\n)*?)^\}", text, re.M)
                       if re.search(r" (dot|convolution)\(", m.group(0))}
        for m in re.finditer(r"^\s*(?:ROOT )?%([\w.-]+) = [^\n]*? (dot|convolution|fusion)\(([^\n]*)", text, re.M):
            name, op, rest = m.groups()
            called = re.search(r"calls=(%[\w.-]+)", rest)
            if op != "fusion" or (called and called.group(1) in gemm_bodies):
                names.add(name)
    return names


def profile(cfg: Config, data, images: int, fwd_flop: int) -> None:
    """Where one Hebbian phase at batch 10 spends its time, by XLA operation (see the docstring).

    XLA's CPU runtime runs an Eigen ``dot`` asynchronously: its trace event ends when the work is
    handed to Eigen's threads, which are not traced. A stretch with no traced operation that
    follows a ``dot`` (the last operation to end) is counted as that dot's: an upper bound on the
    GEMM time (runtime time after a dot is included), so the GEMM rate printed is a lower bound."""
    n, phase = unsupervised_phase(cfg, data, images, 10)
    untraced = timed(phase, 3)
    gemms = gemm_operations(_HLO_DUMP)
    events = []
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
                        events.append((ev.start_ns, ev.end_ns, ev.name))
    by_name: collections.Counter = collections.Counter()
    gemm_time, idle, reach, last = 0.0, 0.0, None, None
    for start, end, name in sorted(events):
        if reach is not None and start > reach:  # nothing traced runs: an async dot's, or idle
            if re.match(r"dot(\.\d+)?$", last):
                by_name["dot (GEMM)"] += (start - reach) / 1e9
                gemm_time += (start - reach) / 1e9
            else:
                idle += (start - reach) / 1e9
        by_name[re.sub(r"\.\d+$", "", name) + (" (GEMM)" if name in gemms else "")] += (end - start) / 1e9
        if name in gemms:
            gemm_time += (end - start) / 1e9
        if reach is None or end > reach:
            reach, last = end, name
    busy = sum(by_name.values())
    flop = 2 * fwd_flop * n
    print(f"unsupervised phase, batch 10, {n} images: untraced {untraced:.2f} s ({n / untraced:.1f} img/s, "
          f"{flop / untraced / 1e9:.0f} GFLOP/s), traced {traced:.2f} s: operations {busy:.2f} s (threads overlapping), "
          f"nothing running {idle:.2f} s, {len(events) / (n // 10):.0f} operations a step")
    print(f"  GEMMs {gemm_time:.2f} s = {gemm_time / busy:.0%} of the operations' time (the phase's {flop / 1e12:.3f} TFLOP of "
          f"convolutions: {flop / gemm_time / 1e9:.0f} GFLOP/s); everything else {busy - gemm_time:.2f} s = {(busy - gemm_time) / busy:.0%}")
    for name, sec in by_name.most_common(16):
        print(f"  {sec:7.3f} s {sec / busy:5.1%}  {name}")


def _skipping_padded_before(step: Callable, get_batch: Callable) -> Callable:
    """``hebbjax.train.parallel._skipping_padded`` up to commit 27ed1af: the batch gathered outside
    the ``lax.cond`` (so XLA could not fuse the gather into the step)."""

    def body(c, inp):
        x, ok = inp
        batch = get_batch(x)
        zeros = jax.tree_util.tree_map(lambda m: jnp.zeros(m.shape, m.dtype), jax.eval_shape(step, c, batch)[1])
        return jax.lax.cond(ok, step, lambda c, _: (c, zeros), c, batch)

    return body


@contextlib.contextmanager
def _patched(*patches: tuple[Any, str, Any]):
    """Module attributes replaced for the duration (steps are traced at their first call)."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def _before_gather():
    """Up to commit 27ed1af: the batch gathered outside the step's branch, the dropout words from
    ``jax.random.bits`` (JAX's rolled threefry loop on CPU)."""
    import hebbjax.nn.layers as layers
    import hebbjax.train.parallel as parallel

    return _patched((parallel, "_skipping_padded", _skipping_padded_before),
                    (layers, "random_words", lambda key, n: jax.random.bits(key, (n,), jnp.uint32)))


def _before_sums():
    """Up to commit 6265f60: a one-device mesh ran with JAX's varying-value checks, so every sum
    across devices was an all-reduce (over the one device: a copy), and ``all_finite`` was
    ``all(isfinite(a))``."""
    import hebbjax.train.plasticity as plasticity
    import hebbjax.train.steps as steps

    shard_map = jax.shard_map

    def checked(*args, **kwargs):
        kwargs.pop("check_vma", None)
        return shard_map(*args, **kwargs)

    def all_finite(tree):
        return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]))

    return _patched((jax, "shard_map", checked), (plasticity, "psum", jax.lax.psum), (steps, "psum", jax.lax.psum),
                    (steps, "pmean", jax.lax.pmean), (plasticity, "all_finite", all_finite), (steps, "all_finite", all_finite))


def _before_winner():
    """Up to commit 9c50a9b: the soft-WTA's winner as ``one_hot(argmax(u))``."""
    import hebbjax.rules.plasticity as plasticity

    return _patched((plasticity, "winner_mask", lambda u: jax.nn.one_hot(jnp.argmax(u, axis=-1), u.shape[-1], dtype=u.dtype)))


# --ab NAME: the code as it was before a change, rebuilt by patching it at trace time
BEFORE = {"gather": _before_gather, "sums": _before_sums, "winner": _before_winner}


def epoch_of(ctx, p: int, state, source=None) -> tuple[int, Callable, Callable]:
    """One epoch of phase ``p`` from ``state``, through a compiled runner that the caller makes:
    ``(steps, make_runner, run)``, ``run(runner)`` returns the parameters after the epoch."""
    how = plan(ctx, ctx.phases[p], source)
    opt, sup_opt = how.init_optimisers(state)
    start = state.at(p, jax.random.key(0, impl="rbg"), opt, sup_opt)
    steps = how.source.num_examples // how.batch_size
    make_runner = lambda: how.source.runner(counted(how.step, steps), ctx.mesh)
    run = lambda runner: jax.block_until_ready(run_epochs(
        how.step, start, how.source, name=type(ctx.phases[p]).__name__, batch_size=how.batch_size, epochs=1,
        key=jax.random.key(1, impl="rbg"), mesh=ctx.mesh, steps_per_chunk=ctx.cfg.training.steps_per_chunk, runner=runner).params)
    return steps, make_runner, run


def ab(label: str, before: Callable, epoch: tuple[int, Callable, Callable], repeats: int) -> dict[str, float]:
    """An epoch now and with the code as before (``before()``: the patches), compiled side by
    side and timed in turns in this one process, so that the noise of a shared machine hits both
    alike; checks that both give the same parameter bits."""
    steps, make_runner, run = epoch
    now_runner, before_runner = make_runner(), make_runner()
    run(now_runner)  # compiles
    with before():
        run(before_runner)  # traced and compiled with the earlier forms
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(run(now_runner)), jax.tree_util.tree_leaves(run(before_runner))))
    print(f"{label}: parameters after one epoch, now and before: {'bit-identical' if same else 'DIFFERENT'}")
    now, earlier = [], []
    for _ in range(repeats):
        now += times(lambda: run(now_runner), 1)
        earlier += times(lambda: run(before_runner), 1)
    for name, t in (("now", now), ("before", earlier)):
        print(f"{label} step, {name:6s}: {statistics.median(t) / steps * 1e3:.2f} ms (min-max {min(t) / steps * 1e3:.2f}-"
              f"{max(t) / steps * 1e3:.2f}, {len(t)} epochs of {steps} steps)")
    ratio = statistics.median(now) / statistics.median(earlier)
    print(f"{label}, now / before: {ratio:.2f}")
    return {"now_ms": round(statistics.median(now) / steps * 1e3, 3), "before_ms": round(statistics.median(earlier) / steps * 1e3, 3),
            "ratio": round(ratio, 3), "bit_identical": same}


def readout_setup(cfg: Config, data: Callable, n: int, rng: np.random.Generator):
    """A context whose last phase is the readout, and ``n`` random cached 24576-d features."""
    ctx = setup(with_training(cfg, readout_epochs=1), Data(data(n), data(10)), progress=False)
    features = Dataset(rng.normal(size=(n, 24576)).astype(np.float32), rng.integers(0, 10, n).astype(np.int32), 10)
    return ctx, DeviceSource.place(features, ctx.mesh)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000, help="images per unsupervised timing run")
    ap.add_argument("--batches", default="10,64,256", help="unsupervised batch sizes")
    ap.add_argument("--feature-images", type=int, default=2000)
    ap.add_argument("--eval-batch", default="config", help="feature-extraction batch sizes, comma-separated "
                    "('config': the experiment's training.eval_batch_size; the reference uses 1000)")
    ap.add_argument("--readout-images", type=int, default=5000, help="cached-feature readout epoch size (scaled to 50k)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--phases", default="unsupervised,features,readout", help="which to time, comma-separated")
    ap.add_argument("--profile", action="store_true", help="profile the unsupervised step at batch 10 instead")
    ap.add_argument("--ab", choices=sorted(BEFORE), help="instead of the timings: the unsupervised (batch 10) and readout "
                    "epochs of --phases now and as before a change, in turns: 'gather' (27ed1af: the readout's batch gathered "
                    "outside the step, rolled dropout words), 'sums' (6265f60: one-device all-reduces, the finite check), "
                    "'winner' (9c50a9b: the soft-WTA's winner by argmax)")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. model.matmul_dtype=bfloat16")
    args = ap.parse_args()
    phases = set(args.phases.split(","))
    if not phases <= {"unsupervised", "features", "readout"}:
        ap.error(f"--phases: expected names from unsupervised,features,readout, got {args.phases!r}")
    if args.ab and not phases & {"unsupervised", "readout"}:
        ap.error("--ab times the unsupervised and readout epochs: --phases must include one of them")

    cfg = compose_config("+experiment=cifar_softhebb4", "logging.progress=false", *args.overrides)
    macs = conv_macs(cfg.model.blocks, (32, 32, 3))
    fwd_flop = 2 * sum(macs)
    rng = np.random.default_rng(0)
    peak = matmul_gflops()
    out = {
        "machine": platform.machine(), "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__, "matmul_gflops": round(peak, 1), "forward_gflop_per_image": round(fwd_flop / 1e9, 3),
        "overrides": args.overrides, "packages": package_versions(), "host": machine(),
    }
    print(f"backend={out['backend']} devices={len(jax.devices())} jax={jax.__version__}")
    print(f"float32 matmul (best of 1024^3, 2048^3, 4096^3): {peak:.0f} GFLOP/s; forward {fwd_flop / 1e9:.2f} GFLOP/image, unsupervised step ~2x that")

    def data(n):
        return Dataset(rng.uniform(size=(n, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, n).astype(np.int32), 10)

    if args.profile:
        try:
            return profile(cfg, data, args.images, fwd_flop)
        finally:
            shutil.rmtree(_HLO_DUMP, ignore_errors=True)

    def images_per_second(label: str, n: int, run: Callable[[], None], flop_per_image: int) -> float:
        ips = n / timed(run, args.repeats)
        print(f"{label}: {ips:7.1f} images/s  ({flop_per_image * ips / 1e9:6.1f} GFLOP/s, {flop_per_image * ips / 1e9 / peak:.0%} of matmul)")
        return ips

    # -- --ab: epochs now and before a change, in turns (instead of the timings below)
    if args.ab:
        out["ab"] = {"before": args.ab}
        if "unsupervised" in phases:
            n = max(args.images // 10, 1) * 10
            ctx = setup(with_training(cfg, mode="consecutive", unsup_batch_size=10), Data(data(n), data(10)), progress=False)
            out["ab"]["unsupervised_batch_10"] = ab("unsupervised, 3 blocks plastic, batch 10", BEFORE[args.ab],
                                                    epoch_of(ctx, 0, init_state(ctx)), args.repeats)
            # as configured (successive): each pass on its own (pass 3, conv3 plastic, is the pipeline's longest phase)
            ctx = setup(cfg, Data(data(n), data(10)), progress=False)
            for p in range(3):
                out["ab"][f"unsupervised_pass_{p + 1}_batch_10"] = ab(
                    f"unsupervised, successive pass {p + 1} (conv{p + 1} plastic), batch 10", BEFORE[args.ab],
                    epoch_of(ctx, p, init_state(ctx)), args.repeats)
        if "readout" in phases:
            ctx, features = readout_setup(cfg, data, args.readout_images, rng)
            out["ab"]["readout"] = ab("readout", BEFORE[args.ab], epoch_of(ctx, len(ctx.phases) - 1, init_state(ctx), features),
                                      args.repeats)
        print(json.dumps(out))
        return

    # -- unsupervised: all blocks plastic (consecutive mode: one phase), one update per mini-batch
    if "unsupervised" in phases:
        unsup = {}
        for bs in (int(b) for b in args.batches.split(",")):
            n, phase = unsupervised_phase(cfg, data, args.images, bs)
            unsup[bs] = images_per_second(f"unsupervised, 3 blocks plastic, batch {bs:4d}", n, phase, 2 * fwd_flop)
        out["unsupervised_images_per_second"] = {str(k): round(v, 1) for k, v in unsup.items()}

    # -- frozen features, per evaluation batch size
    if "features" in phases:
        n = args.feature_images
        ctx = setup(cfg, Data(data(100), data(10)), progress=False)
        state = init_state(ctx)
        images = DeviceSource.place(data(n), ctx.mesh)
        feature_ips = {}
        for eb in (cfg.training.eval_batch_size if b == "config" else int(b) for b in args.eval_batch.split(",")):
            extract = lambda: jax.block_until_ready(evaluate.features(ctx.model, state.variables, images, batch_size=eb,
                                                                      mesh=ctx.mesh, inputs=ctx.inputs)[0])
            extract()
            feature_ips[eb] = images_per_second(f"feature extraction, batch {eb:4d}", n, extract, fwd_flop)
        out["feature_images_per_second"] = {str(k): round(v, 1) for k, v in feature_ips.items()}

    # -- readout epoch on cached features (the readout phase's own step and loop)
    if "readout" in phases:
        n = args.readout_images
        ctx, features = readout_setup(cfg, data, n, rng)
        steps, make_runner, run = epoch_of(ctx, len(ctx.phases) - 1, init_state(ctx), features)
        runner = make_runner()
        run(runner)  # compiles
        secs = times(lambda: run(runner), args.repeats)
        sec = statistics.median(secs)
        out["readout_epoch_seconds_per_50k"] = round(sec * 50000 / n, 2)
        print(f"readout epoch on cached features (batch 64): {sec * 50000 / n:6.2f} s per 50k images ({n / sec:.0f} images/s; "
              f"{sec / steps * 1e3:.2f} ms a step, {min(secs) / steps * 1e3:.2f}-{max(secs) / steps * 1e3:.2f} over {len(secs)} epochs)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
