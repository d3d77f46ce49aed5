"""Hydra entry point: ``python -m hebbjax.run [+experiment=NAME] [key=value ...]``.

Trains and evaluates one configured network, writes ``results.json`` into the Hydra run directory
and prints a one-line summary last. Config files live in the repository's ``conf/`` (override with
``$HEBBJAX_CONF_DIR``).
"""

from __future__ import annotations

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
    """(train, test) as in-memory arrays, honouring data.dir, data.validation and data.limit_train."""
    from hebbjax.data import load
    from hebbjax.train import ArrayData

    kw = dict(data_dir=cfg.data.dir, validation=cfg.data.validation, seed=cfg.seed)
    train, test = load(cfg.data.name, "train", **kw), load(cfg.data.name, "test", **kw)
    n = cfg.data.limit_train
    images, labels = train.images, train.labels
    if n is not None:
        if n < 1:
            raise ConfigError(f"data.limit_train: expected a positive number of samples, got {n}")
        images, labels = images[:n], labels[:n]
    return ArrayData(images, labels, train.num_classes), ArrayData(test.images, test.labels, test.num_classes)


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
    unknown = [name for name in cfg.data.augment if name not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(f"data.augment: unknown augmentation(s) {unknown}; expected any of {sorted(AUGMENTATIONS)}")


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
    from hebbjax.train import Trainer

    start = time.perf_counter()
    check_before_data(cfg)  # the Trainer checks the shapes again on the images as loaded
    train, test = load_data(cfg)
    augment = None
    if cfg.data.augment:
        from hebbjax.data.augment import make_augmentation

        augment = make_augmentation(list(cfg.data.augment))
    trainer = Trainer(cfg, train, test, augment=augment, progress=cfg.logging.progress)
    results = trainer.fit()
    results["seconds"]["wall_total"] = time.perf_counter() - start
    results = {
        "experiment": cfg.experiment,
        "seed": cfg.seed,
        **results,
        "train_samples": int(train.images.shape[0]),
        "test_samples": int(test.images.shape[0]),
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
    main()
