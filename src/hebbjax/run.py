"""Hydra entry point: ``python -m hebbjax.run [+experiment=NAME] [key=value ...]``.

compose (Hydra) -> check (:func:`hebbjax.config.check`, before any data) -> load
(:func:`load_data`) -> fit (:func:`hebbjax.train.fit`) -> write ``results.json`` into the run
directory; the one-line summary is printed last. A run saves checkpoints into
``<run dir>/checkpoints``; ``resume=<run dir>`` (with the same overrides) continues it from the
last complete one. The configs are the repository's ``conf/``, shipped inside the package as
``hebbjax/conf`` (``$HEBBJAX_CONF_DIR`` replaces them); folders of your own join through Hydra's
search path: ``hydra.searchpath=[file:///path/to/my_conf]`` (e.g. ``my_conf/experiment/x.yaml``,
then ``+experiment=x``).
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

from hebbjax.config import Config, ConfigError, check, differences, from_dict, resolve, to_dataclass

CONF_DIR = os.environ.get("HEBBJAX_CONF_DIR", str(Path(__file__).resolve().parent / "conf"))
RESULTS = "results.json"

ConfigStore.instance().store(name="hebbjax_schema", node=Config)
# conf/config.yaml: a resumed run writes into the run directory it continues, and leaves the
# .hydra/ record of its first start as it was.
OmegaConf.register_new_resolver("hebbjax_run_dir", lambda resume, default: resume or default, replace=True)
OmegaConf.register_new_resolver("hebbjax_output_subdir", lambda resume: None if resume else ".hydra", replace=True)
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" chatter on CPU hosts
logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every step of every save at INFO
log = logging.getLogger("hebbjax")


def compose_config(*overrides: str) -> Config:
    """The typed config ``python -m hebbjax.run <overrides>`` would start from (the shipped
    ``conf/``, Hydra's override syntax; not yet checked), for notebooks, scripts and benchmarks."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return to_dataclass(compose(config_name="config", overrides=list(overrides)))


#: The installed packages whose versions a result depends on (results.json's ``packages``): a
#: fresh install resolves the lower bounds of pyproject.toml to whatever the registry holds then.
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "ml_dtypes", "tensorflow-datasets", "array-record", "orbax-checkpoint")


def package_versions() -> dict[str, str | None]:
    """``{package: installed version}`` of :data:`PACKAGES` (None when not installed)."""
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {name: version(name) for name in PACKAGES}


def machine() -> dict[str, Any]:
    """The host: architecture, cores and, on Linux, the CPU's name, family and model (XLA compiles
    for the host's CPU, so another model can round differently)."""
    out: dict[str, Any] = {"arch": platform.machine(), "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        return out
    names = {"model name": "cpu", "cpu family": "cpu_family", "model": "cpu_model", "stepping": "cpu_stepping"}
    out.update({names[k.strip()]: v.strip() for k, v in fields.items() if k.strip() in names})
    return out


def load_data(cfg: Config):
    """The splits of ``cfg`` as :class:`hebbjax.train.Data`: each on the device(s) (a host
    ``Dataset``) or streamed from the host (``StreamSource``, by data.placement), honouring
    data.dir, data.validation, data.limit_train, data.unsup_split and data.limit_unsup. In memory,
    a limit on the unsupervised phase's share of train reads a prefix of it without a copy, and a
    process converts (and, from the memory-mapped cache, reads) only the rows it places."""
    from hebbjax.data import get_spec, load
    from hebbjax.data.loading import FloatView
    from hebbjax.train import Data, StreamSource

    d = cfg.data
    spec = get_spec(d.name)
    streamed = d.placement == "stream" or (d.placement == "auto" and not spec.in_memory)
    kw = dict(data_dir=d.dir, validation=d.validation, seed=cfg.seed)

    def split(name: str, limit: int | None):
        if streamed:
            return StreamSource.from_stream(d.name, name, limit=limit, **kw)
        if spec.name == "digits":  # floats already
            data = load(d.name, name, **kw)
        else:  # pixels as stored (a cached split is memory-mapped); floats only of the rows a process places
            data = load(d.name, name, dtype="uint8", **kw)
            if name not in spec.uint8_splits:  # those stay uint8 on the device (memory)
                data = dataclasses.replace(data, images=FloatView(data.images, data.normalization))
        return dataclasses.replace(data, images=data.images[:limit], labels=data.labels[:limit])  # views

    train, test = split("train", d.limit_train), split("test", None)
    if d.unsup_split is not None and d.unsup_split != "train":
        return Data(train, test, split(d.unsup_split, d.limit_unsup))
    if d.limit_unsup is not None and streamed:
        return Data(train, test, split("train", d.limit_unsup))
    return Data(train, test, None, d.limit_unsup)


def enable_compilation_cache() -> None:
    """Persist XLA compilations (``$HEBBJAX_COMPILATION_CACHE``, default ``~/.cache/hebbjax/jax``;
    empty disables): reruns and the later jobs of a multirun skip most compile time."""
    import jax

    path = os.environ.get("HEBBJAX_COMPILATION_CACHE", str(Path("~/.cache/hebbjax/jax").expanduser()))
    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def initialize_distributed(cfg: Config) -> None:
    """Join the run's processes (``distributed.enabled``): ``jax.distributed.initialize`` with the
    keys given, the rest detected by JAX (SLURM, Open MPI, ...); CPU processes exchange
    collectives over gloo. Call before any JAX computation."""
    import jax

    d = cfg.distributed
    if not d.enabled:
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    given = {k: getattr(d, k) for k in ("coordinator_address", "num_processes", "process_id") if getattr(d, k) is not None}
    jax.distributed.initialize(**given)
    log.info("distributed: process %d of %d, %d of %d devices here", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())


def open_checkpoints(cfg: Config, run_dir: Path):
    """The run directory's checkpoints (None when disabled), after checking that resuming is
    what was asked for and that the checkpoints were written by the same config."""
    from hebbjax.train import Checkpoints

    folder = run_dir / "checkpoints"
    if cfg.resume is None and folder.is_dir() and any(folder.iterdir()):
        raise ConfigError(f"hydra.run.dir: {run_dir} already holds checkpoints; continue it with resume={run_dir}, "
                          f"or choose another run directory")
    if not cfg.checkpoint.enabled:
        if cfg.resume is not None:
            raise ConfigError("checkpoint.enabled: resume needs checkpoints; set checkpoint.enabled=true")
        return None
    c = cfg.checkpoint
    checkpoints = Checkpoints(run_dir, every_minutes=c.every_minutes, keep=c.keep)
    metas = checkpoints.metas()
    if cfg.resume is not None and metas:
        changed = differences(_with_defaults(metas[0][1]["config"]), dataclasses.asdict(resolve(cfg)))
        if changed:
            raise ConfigError(f"resume: the checkpoints in {folder} were written by a different config; keys that differ "
                              f"(checkpoint != now): " + "; ".join(changed))
    elif cfg.resume is not None:
        log.warning("resume: no complete checkpoint in %s; starting from the beginning", folder)
    return checkpoints


def _with_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config with the keys added to the schema since it was written at their
    defaults (a run checkpointed before ``model.matmul_dtype`` existed resumes); as stored when it
    no longer fits the schema (the comparison then names the keys)."""
    try:
        return dataclasses.asdict(from_dict(stored))
    except (ConfigError, ValueError, TypeError, KeyError) as err:
        log.debug("resume: the checkpoint's config does not fit the current schema (%s)", err)
        return stored


def write_json(path: Path, values: dict[str, Any]) -> None:
    """Atomically: a reader sees the old file or the whole new one, never a half-written one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(values, indent=2, default=str))
    tmp.replace(path)


def run(cfg: Config, output_dir: Path, resolved: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and evaluate ``cfg``; write ``<run dir>/results.json``; return the results. The run
    directory is ``output_dir``, or ``cfg.resume`` when continuing a run."""
    import jax

    start = time.perf_counter()
    check(cfg)
    run_dir = Path(cfg.resume) if cfg.resume is not None else Path(output_dir)
    if cfg.resume is not None:
        if not run_dir.is_dir():
            raise ConfigError(f"resume: {run_dir} is not a run directory")
        if (run_dir / RESULTS).is_file():  # finished: say so, change nothing
            results = json.loads((run_dir / RESULTS).read_text())
            log.warning("resume: %s finished already (%s); nothing to do", run_dir, RESULTS)
            return results
    initialize_distributed(cfg)
    enable_compilation_cache()
    if jax.process_count() > 1:  # one run directory: process 0's (Hydra's timestamps can differ by a second)
        from hebbjax.train.parallel import same_text

        first = Path(same_text(str(run_dir)))
        if first != run_dir:
            log.info("distributed: writing to process 0's run directory %s (not %s)", first, run_dir)
        run_dir = first
    from hebbjax.train import fit
    from hebbjax.train.monitor import Monitor

    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = open_checkpoints(cfg, run_dir)
    data = load_data(cfg)
    monitor = Monitor(cfg, run_dir, resolved if resolved is not None else dataclasses.asdict(cfg))
    try:
        results, _ = fit(cfg, data, progress=cfg.logging.progress, checkpoints=checkpoints, monitor=monitor)
        if checkpoints is not None:
            checkpoints.close()
            results["seconds"]["checkpoint_saves"] = checkpoints.save_seconds
        results["seconds"]["wall_total"] = time.perf_counter() - start
        results = {
            "experiment": cfg.experiment,
            "seed": cfg.seed,
            **results,
            "jax_version": jax.__version__,
            "packages": package_versions(),
            "machine": machine(),
            "devices": [str(d) for d in jax.devices()],
            "backend": jax.default_backend(),
            "python": platform.python_version(),
            "config": resolved if resolved is not None else dataclasses.asdict(cfg),
        }
        from hebbjax.train.parallel import is_primary

        if is_primary():
            write_json(run_dir / RESULTS, results)
        monitor.results(results)
    finally:
        if checkpoints is not None:
            checkpoints.close()
        monitor.close()
    return results


def summary(results: dict[str, Any]) -> str:
    ips = results.get("unsupervised_images_per_second")
    if results["test_accuracy"] is None:
        accuracy = "no readout (training.readout_epochs=0)"
    else:
        accuracy = f"test_accuracy={results['test_accuracy']:.4f} train_accuracy={results['train_accuracy']:.4f}"
    return (f"{results['experiment']} seed={results['seed']}: {accuracy} total={results['seconds']['wall_total']:.1f}s"
            + (f" unsup={ips:.0f} img/s" if ips else ""))


def _to_log_file(message: str) -> None:
    """``message`` into the run's log file (Hydra's ``<job>.log``) without a second console line."""
    record = logging.LogRecord("hebbjax", logging.INFO, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
def main(dcfg: DictConfig) -> float:
    cfg = to_dataclass(dcfg)
    resolved = OmegaConf.to_container(dcfg, resolve=True)
    results = run(cfg, Path(HydraConfig.get().runtime.output_dir), resolved)
    line = summary(results)
    _to_log_file(line)
    print(line, flush=True)
    return results["test_accuracy"]


if __name__ == "__main__":
    if not Path(CONF_DIR).is_dir():
        raise SystemExit(f"hebbjax: config folder {CONF_DIR} not found (HEBBJAX_CONF_DIR names a folder that does not exist?)")
    main()
