"""hebbjax: Hebbian deep learning in JAX (rules, Flax networks, data-parallel training).

``hebbjax.fit(cfg, data)`` trains a configured network; ``hebbjax.load_model(run_dir)`` returns
a trained one. Subpackages: ``rules`` (pure math), ``nn`` (Flax modules), ``data`` (datasets),
``train`` (state, steps, loop, protocol, evaluation, checkpoints), ``run`` (the command).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["fit", "load_model"]


def __getattr__(name: str) -> Any:  # imported on first use: `import hebbjax.rules` stays light
    if name == "fit":
        from hebbjax.train.fit import fit

        return fit
    if name == "load_model":
        from hebbjax.train.checkpoint import load_model

        return load_model
    raise AttributeError(f"module 'hebbjax' has no attribute {name!r}")
