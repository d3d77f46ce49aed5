"""Hydra entry point: ``python -m hebbjax.run [+experiment=NAME] [key=value ...]``.

Trains and evaluates one configured network, writes ``results.json`` into the Hydra run directory
and prints a one-line summary last. Config files live in the repository's ``conf/`` (override with
``$HEBBJAX_CONF_DIR``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from hebbjax.config import Config, ConfigError, check_config, to_dataclass

CONF_DIR = os.environ.get("HEBBJAX_CONF_DIR", str(Path(__file__).resolve().parents[2] / "conf"))

ConfigStore.instance().store(name="hebbjax_schema", node=Config)
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" chatter on CPU hosts


def load_data(cfg: Config):
    """(train, test, unsup, unsup_limit) for :class:`hebbjax.train.Trainer`: each split on the
    device(s) (``ArrayData``) or streamed from the host (``StreamData``, by data.placement),
    honouring data.dir, data.validation, data.limit_train, data.unsup_split and data.limit_unsup.
    ``unsup`` is None when the unsupervised phase reads the training set itself; then, in memory,
    ``unsup_limit`` makes it read a prefix of train without a second copy."""
    from hebbjax.data import get_spec, load
    from hebbjax.train import ArrayData, StreamData

    d = cfg.data
    spec = get_spec(d.name)
    streamed = d.placement == "stream" or (d.placement == "auto" and not spec.in_memory)
    kw = dict(data_dir=d.dir, validation=d.validation, seed=cfg.seed)

    def split(name: str, limit: int | None):
        if streamed:
            return StreamData.from_stream(d.name, name, limit=limit, **kw)
        data = load(d.name, name, **kw)
        return ArrayData(data.images[:limit], data.labels[:limit], data.num_classes, data.normalization)  # views

    train, test = split("train", d.limit_train), split("test", None)
    if d.unsup_split is not None and d.unsup_split != "train":
        return train, test, split(d.unsup_split, d.limit_unsup), None
    if d.limit_unsup is not None and streamed:
        return train, test, split("train", d.limit_unsup), None
    return train, test, None, d.limit_unsup


def check_before_data(cfg: Config) -> None:
    """Config errors that need no data (dataset name, shapes chaining from the dataset's registered
    image shape, augmentation names), raised before anything is loaded, prepared or downloaded."""
    from hebbjax.data import get_spec
    from hebbjax.data.augment import AUGMENTATIONS
    from hebbjax.data.errors import UnknownDatasetError

    try:
        spec = get_spec(cfg.data.name)
    except UnknownDatasetError as err:
        raise ConfigError(f"data.name: {err}") from None
    check_config(cfg, spec.image_shape)
    d = cfg.data
    for key, names in (("data.augment", d.augment), ("data.unsup_augment", d.unsup_augment)):
        unknown = [name for name in names if name not in AUGMENTATIONS]
        if unknown:
            raise ConfigError(f"{key}: unknown augmentation(s) {unknown}; expected any of {sorted(AUGMENTATIONS)}")
    options = d.augment_options
    for key in ("scale", "ratio"):
        low_high = list(getattr(options, key))
        if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1]:
            raise ConfigError(f"data.augment_options.{key}: expected [low, high] with 0 < low <= high, got {low_high}")
    if d.placement not in ("auto", "in_memory", "stream"):
        raise ConfigError(f"data.placement: expected one of ['auto', 'in_memory', 'stream'], got {d.placement!r}")
    if d.placement == "in_memory" and not spec.in_memory:
        raise ConfigError(f"data.placement: {spec.name!r} is too large for memory; use stream (or auto)")
    for key in ("limit_train", "limit_unsup"):
        if getattr(d, key) is not None and getattr(d, key) < 1:
            raise ConfigError(f"data.{key}: expected a positive number of samples, got {getattr(d, key)}")
    if d.unsup_split is not None:
        try:
            spec.tfds_split(d.unsup_split)
        except ValueError as err:
            raise ConfigError(f"data.unsup_split: {err}") from None
        if d.unsup_split not in ("train", "unlabelled"):  # never the images a run is evaluated on
            raise ConfigError(f"data.unsup_split: expected a split without evaluation images (train, unlabelled), got {d.unsup_split!r}")
    t = cfg.training
    if t.method != "hebbian" or t.mode == "simultaneous":
        for key in ("unsup_split", "limit_unsup", "unsup_augment"):
            if getattr(d, key) not in (None, []):
                raise ConfigError(f"data.{key}: only the unsupervised phase reads it, which runs with training.method=hebbian "
                                  f"in mode successive or consecutive (got method={t.method}, mode={t.mode})")
    side = min(spec.image_shape[:2])
    if not 0 <= options.padding < side:
        raise ConfigError(f"data.augment_options.padding: expected 0 <= padding < {side} (the image side), got {options.padding}")
    if not 0.0 <= options.flip_prob <= 1.0:
        raise ConfigError(f"data.augment_options.flip_prob: expected a probability in [0, 1], got {options.flip_prob}")
    if options.noise_std < 0:
        raise ConfigError(f"data.augment_options.noise_std: expected >= 0, got {options.noise_std}")


def augmentation(names: list[str], options) -> Any:
    """``fn(key, images)`` applying ``names`` with their options from data.augment_options; None if none."""
    if not names:
        return None
    from hebbjax.data.augment import make_augmentation, options_of

    chosen = {k: v for k, v in dataclasses.asdict(options).items() if k in options_of(names)}
    return make_augmentation(list(names), **chosen)


def enable_compilation_cache() -> None:
    """Persist XLA compilations (``$HEBBJAX_COMPILATION_CACHE``, default ``~/.cache/hebbjax/jax``;
    empty disables): reruns and the later jobs of a multirun skip most compile time."""
    import jax

    path = os.environ.get("HEBBJAX_COMPILATION_CACHE", str(Path("~/.cache/hebbjax/jax").expanduser()))
    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def run(cfg: Config, output_dir: Path, resolved: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and evaluate ``cfg``; write ``output_dir/results.json``; return the results."""
    import jax

    enable_compilation_cache()
    from hebbjax.train import StreamData, Trainer

    start = time.perf_counter()
    check_before_data(cfg)  # the Trainer checks the shapes again on the images as loaded
    train, test, unsup, unsup_limit = load_data(cfg)
    trainer = Trainer(
        cfg, train, test, unsup=unsup, unsup_limit=unsup_limit,
        augment=augmentation(cfg.data.augment, cfg.data.augment_options),
        unsup_augment=augmentation(cfg.data.unsup_augment, cfg.data.augment_options),
        progress=cfg.logging.progress,
    )
    results = trainer.fit()
    results["seconds"]["wall_total"] = time.perf_counter() - start
    results = {
        "experiment": cfg.experiment,
        "seed": cfg.seed,
        **results,
        "train_samples": train.num_examples,
        "test_samples": test.num_examples,
        "unsup_samples": trainer.n_unsup,
        "streamed": isinstance(train, StreamData),
        "jax_version": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
        "python": platform.python_version(),
        "config": resolved,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, default=str))
    tmp.replace(output_dir / "results.json")  # atomic: never a half-written results file
    return results


def summary(results: dict[str, Any]) -> str:
    ips = results.get("unsupervised_images_per_second")
    return (
        f"{results['experiment']} seed={results['seed']}: test_accuracy={results['test_accuracy']:.4f} "
        f"train_accuracy={results['train_accuracy']:.4f} total={results['seconds']['wall_total']:.1f}s"
        + (f" unsup={ips:.0f} img/s" if ips else "")
    )


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
def main(dcfg: DictConfig) -> float:
    cfg = to_dataclass(dcfg)
    resolved = OmegaConf.to_container(dcfg, resolve=True)
    results = run(cfg, Path(HydraConfig.get().runtime.output_dir), resolved)
    print(summary(results), flush=True)
    return results["test_accuracy"]


if __name__ == "__main__":
    if not Path(CONF_DIR).is_dir():  # a non-editable install has no conf/ beside the package
        raise SystemExit(f"hebbjax: config folder {CONF_DIR} not found; set HEBBJAX_CONF_DIR to the repository's conf/ folder")
    main()
