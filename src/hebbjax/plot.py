"""Pictures of what a network learnt: ``python -m hebbjax.plot <run dir> [--out DIR]``.

From a run's newest checkpoint and its ``metrics.jsonl`` (no retraining), into ``<run dir>/plots``:

- ``filters.png``: the first block's filters as an image grid (RGB for colour inputs, grey
  otherwise), each filter scaled to the full range on its own;
- ``receptive_fields_block<i>.png``: for the deeper blocks, each neuron's average input patch over
  the positions where it responds most on a probe batch of training images;
- ``weight_norms.png``: a histogram of the neurons' weight norms per block;
- ``win_rates.png``: how often each neuron wins, sorted, per Hebbian block (probe batch);
- ``accuracy.png``: training accuracy (and loss) per epoch of every phase that reports them.

Training calls :func:`draw` at the end of each phase (``logging.plots``); the pictures then go to
wandb too.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

BORDER = 128  # grey between tiles


def tile(images: np.ndarray, columns: int | None = None, scale: int = 1) -> np.ndarray:
    """Images ``(N, H, W[, 3])`` as one grid, each min-max scaled to 0..255 on its own (a constant
    image becomes 0), with a 1-pixel grey border; every pixel repeated ``scale`` times."""
    n, h, w = images.shape[:3]
    colour = images.ndim == 4
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    flat = images.reshape(n, -1).astype(np.float64)
    low, high = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
    scaled = np.where(high > low, (flat - low) / np.where(high > low, high - low, 1.0), 0.0)
    scaled = np.round(scaled * 255).astype(np.uint8).reshape(images.shape)
    if scale > 1:
        scaled = scaled.repeat(scale, 1).repeat(scale, 2)
        h, w = h * scale, w * scale
    shape = (rows * (h + 1) + 1, columns * (w + 1) + 1) + ((3,) if colour else ())
    grid = np.full(shape, BORDER, np.uint8)
    for k in range(n):
        r, c = divmod(k, columns)
        grid[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + c * (w + 1): 1 + c * (w + 1) + w] = scaled[k]
    return grid


def save_png(grid: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(grid).save(tmp)
    tmp.replace(path)  # never a half-written picture
    return path


def filters(kernel: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """The first layer's filters as images ``(neurons, kh, kw[, 3])``: a conv kernel ``HWIO``, a
    dense kernel ``(H W C, n)`` on the flattened image, or the patches form ``(C k k, n)``."""
    kernel = np.asarray(kernel)
    if kernel.ndim == 4:
        images = np.moveaxis(kernel, -1, 0)  # (n, kh, kw, c)
    else:
        d, n = kernel.shape
        c = image_shape[-1] if len(image_shape) == 3 else 1
        side = int(round(math.sqrt(d // c)))
        images = np.moveaxis(kernel.reshape(side, side, c, n), -1, 0)
    return images[..., 0] if images.shape[-1] != 3 else images


def _geometry(blocks: list, upto: int) -> tuple[int, int, int]:
    """``(size, jump, start)``: a position ``p`` of block ``upto``'s activation (before its own
    pool) sees input rows ``[p * jump + start, p * jump + start + size)``; size -1 for a dense block."""
    from hebbjax.config import parse_pool

    size, jump, start = 1, 1, 0
    for i, b in enumerate(blocks[: upto + 1]):
        if b.layer == "dense":
            return -1, 0, 0
        k = b.dilation * (b.kernel - 1) + 1
        size, start, jump = size + (k - 1) * jump, start - b.padding * jump, jump * b.stride
        pool = parse_pool(b.pool)
        if pool is not None and i < upto:
            _, pk, ps, pp = pool
            size, start, jump = size + (pk - 1) * jump, start - pp * jump, jump * ps
    return size, jump, start


def receptive_fields(model: Any, variables: Any, images: np.ndarray, blocks: list, block: int, top: int = 9,
                     neurons: int = 64) -> np.ndarray | None:
    """Per neuron of ``block`` (the first ``neurons``): the mean of the input patches at its
    ``top`` largest outputs before pooling over ``images (N, H, W, C)``; None for a dense block."""
    size, jump, start = _geometry(blocks, block)
    if size < 0:
        return None
    out = np.asarray(_pre_pool(model, variables, jnp.asarray(images), block, upto=block + 1, classify=False))  # (N, H', W', C')
    n, h, w, c = out.shape
    pad = max(size, -start) + 1
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    fields = []
    for j in range(min(neurons, c)):
        flat = np.argsort(out[..., j].ravel())[-top:]
        patches = []
        for idx in flat:
            b, y, x = np.unravel_index(idx, (n, h, w))
            r0, c0 = y * jump + start + pad, x * jump + start + pad
            patches.append(padded[b, r0:r0 + size, c0:c0 + size])
        fields.append(np.mean(patches, 0))
    fields = np.stack(fields)
    return fields[..., 0] if fields.shape[-1] != 3 else fields


def _pre_pool(model: Any, variables: Any, images: jax.Array, block: int, **kw: Any) -> jax.Array:
    """Block ``block``'s activation before its pool: what its neurons respond with."""
    pooled = model.blocks[block]
    unpooled = pooled.clone(pool=None, post_pool_activation=None, flatten=False)
    net = model.clone(blocks=tuple(model.blocks[:block]) + (unpooled,) + tuple(model.blocks[block + 1:]))
    return net.apply(variables, images, **kw)


def _figure(path: Path, draw: Any) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(6, 4), dpi=100)
    draw(fig)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path


def norm_histograms(kernels: dict[str, np.ndarray], path: Path) -> Path:
    from hebbjax.rules import neuron_norms

    def draw(fig):
        ax = fig.add_subplot(1, 1, 1)
        for name, k in kernels.items():
            ax.hist(np.asarray(neuron_norms(jnp.asarray(k))), bins=40, alpha=0.6, label=name)
        ax.set_xlabel("neuron weight norm |w_j|")
        ax.set_ylabel("neurons")
        ax.legend()

    return _figure(path, draw)


def win_rate_bars(win_rates: dict[str, np.ndarray], path: Path) -> Path:
    def draw(fig):
        for k, (name, rates) in enumerate(win_rates.items()):
            ax = fig.add_subplot(len(win_rates), 1, k + 1)
            rates = np.sort(np.asarray(rates))[::-1]
            ax.bar(np.arange(len(rates)), rates, width=1.0)
            ax.set_title(f"{name}: win rate per neuron (sorted); {int(np.sum(rates == 0))} never win", fontsize=8)
            ax.set_yscale("log" if rates.max() > 0 and rates[rates > 0].min() < rates.max() / 100 else "linear")

    return _figure(path, draw)


def accuracy_curves(history: list[dict[str, Any]], path: Path) -> Path | None:
    epochs = [r for r in history if r.get("event") == "epoch" and "accuracy" in r]
    if not epochs:
        return None

    def draw(fig):
        ax = fig.add_subplot(1, 1, 1)
        for phase in dict.fromkeys(r["phase"] for r in epochs):
            rows = [r for r in epochs if r["phase"] == phase]
            ax.plot([r["epoch"] + 1 for r in rows], [r["accuracy"] for r in rows], marker="o", label=f"{phase} (train)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.legend()

    return _figure(path, draw)


def probe_images(ctx: Any, n: int = 256) -> np.ndarray:
    """The first ``n`` training images as the network sees them, on the host. In a run over several
    processes every process must call it (the rows lie on every process's devices)."""
    return np.asarray(ctx.inputs(jnp.asarray(ctx.train.take(np.arange(min(n, ctx.train.num_examples))))))


def draw(ctx: Any, state: Any, folder: Path, prefix: str = "", diagnostics: dict | None = None,
         history: list | None = None, images: np.ndarray | None = None) -> list[Path]:
    """Every picture of the module docstring for a training context and state, into ``folder``.

    Only host copies are drawn from (``images``: :func:`probe_images`, read here when not given;
    the variables copied off the devices), so in a run over several processes process 0 draws alone."""
    prefix = f"{prefix}_" if prefix else ""
    blocks = ctx.cfg.model.blocks
    model = ctx.model.clone(axis_name=None)
    images = probe_images(ctx) if images is None else images
    variables = jax.tree_util.tree_map(np.asarray, dict(state.variables))
    kernels = {f"block_{i}": variables["params"][f"block_{i}"]["layer"]["kernel"] for i in range(len(blocks))}
    state = _state_from_raw(variables)
    paths = [save_png(tile(filters(kernels["block_0"], ctx.train.image_shape), scale=4), folder / f"{prefix}filters.png"),
             norm_histograms(kernels, folder / f"{prefix}weight_norms.png")]
    for i in range(1, len(blocks)):
        fields = receptive_fields(model, state.variables, images, blocks, i)
        if fields is not None:
            paths.append(save_png(tile(fields, scale=2), folder / f"{prefix}receptive_fields_block{i}.png"))
    rates = {k: v["win_rate"] for k, v in (diagnostics or {}).items() if "win_rate" in v}
    if rates:
        paths.append(win_rate_bars(rates, folder / f"{prefix}win_rates.png"))
    curve = accuracy_curves(history or [], folder / f"{prefix}accuracy.png")
    return paths + ([curve] if curve is not None else [])


def draw_run(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """The pictures of a finished (or checkpointed) run, from its checkpoint and metrics."""
    from hebbjax.config import from_dict, resolve
    from hebbjax.run import load_data
    from hebbjax.train import diagnostics as diag
    from hebbjax.train.checkpoint import Checkpoints
    from hebbjax.train.fit import setup
    from hebbjax.train.monitor import read_metrics

    run_dir = Path(run_dir)
    raw, meta = Checkpoints(run_dir, read_only=True).restore_raw()
    cfg = resolve(from_dict(meta["config"]))
    ctx = setup(cfg, load_data(cfg), progress=False)
    state = _state_from_raw(raw)
    diagnostics: dict = {}
    plastic = tuple(sorted({i for p in ctx.phases for i in (getattr(p, "blocks", None) or getattr(p, "hebbian", ()))}))
    if plastic:
        probe = jnp.asarray(ctx.train.take(np.arange(min(cfg.logging.probe_images, ctx.train.num_examples))))
        diagnostics = jax.device_get(diag.diagnostics(ctx, state, probe, blocks=plastic, total_steps=1, inputs=ctx.inputs))
    return draw(ctx, state, Path(out) if out else run_dir / "plots", diagnostics=diagnostics,
                history=read_metrics(run_dir / "metrics.jsonl"))


def _state_from_raw(raw: dict) -> Any:
    """A TrainState-like object with ``params`` and ``variables`` from a checkpoint as saved."""
    from types import SimpleNamespace

    variables = {k: jax.tree_util.tree_map(jnp.asarray, raw.get(k) or {}) for k in ("params", "batch_stats", "rule_state")}
    return SimpleNamespace(params=variables["params"], rule_state=variables["rule_state"], variables=variables,
                           step=jnp.asarray(raw.get("step", 0)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory (python -m hebbjax.run wrote it)")
    parser.add_argument("--out", default=None, help="folder for the PNG files (default: <run dir>/plots)")
    args = parser.parse_args()
    for path in draw_run(args.run_dir, args.out):
        print(path)


if __name__ == "__main__":
    main()
