"""The README's examples ("use a rule in your own JAX code", "a trained network in your own
code"), kept runnable: the code between each pair of marker comments is in README.md as is.
"""

from __future__ import annotations


def test_readme_example():
    # --- README example start: rules ---
    import jax
    import numpy as np
    import optax

    from hebbjax.rules import Dense, observe, scale_by_max_abs, scale_by_norm_dependent_lr, softhebb

    linear = Dense()  # u = x @ kernel, kernel of shape (in, out): 8 neurons on 16 inputs
    params = {"kernel": 0.75 * jax.random.normal(jax.random.PRNGKey(0), (16, 8))}  # neuron norms ~3
    tx = optax.chain(scale_by_max_abs(), scale_by_norm_dependent_lr(0.1, power=0.5))  # SoftHebb's step
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, x):
        updates = softhebb(params, observe(linear, params, x), t_invert=1.0)  # a local rule: no loss
        updates, opt_state = tx.update(updates, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    data = np.random.default_rng(0)
    for _ in range(200):
        x = data.normal(size=(64, 16)).astype(np.float32)  # a batch from your input pipeline
        params, opt_state = train_step(params, opt_state, x)
    # --- README example end ---

    # SoftHebb drives every neuron's weight norm to 1 (from ~3 at the start) ...
    norms0 = np.linalg.norm(np.asarray(0.75 * jax.random.normal(jax.random.PRNGKey(0), (16, 8))), axis=0)
    assert np.all(norms0 > 2), norms0
    kernel = np.asarray(params["kernel"])
    norms = np.linalg.norm(kernel, axis=0)
    assert np.all(np.abs(norms - 1.0) < 0.05), norms
    # ... and so anneals its own learning rate: the step is max|dw| (= 1 after scale_by_max_abs)
    # times 0.1 * |norm - 1| ** 0.5 per neuron, tiny now (it was ~0.14 at the start).
    new_params, _ = train_step(params, opt_state, data.normal(size=(64, 16)).astype(np.float32))
    step = np.abs(np.asarray(new_params["kernel"]) - kernel).max(axis=0)
    assert np.all(step <= 0.1 * np.abs(norms - 1.0) ** 0.5 * (1 + 1e-4) + 1e-6), (step, norms)
    assert np.any(step > 0)


def test_readme_load_model_example(tmp_path):
    from hydra import compose, initialize_config_dir

    from hebbjax.config import to_dataclass
    from hebbjax.run import CONF_DIR, run

    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = to_dataclass(compose(config_name="config", overrides=["logging.progress=false", "training.readout_epochs=3"]))
    run_dir = tmp_path / "run"
    results = run(cfg, run_dir)  # what `python -m hebbjax.run training.readout_epochs=3` writes

    # --- README example start: load_model ---
    import jax.numpy as jnp

    import hebbjax
    from hebbjax.data import load

    network, variables = hebbjax.load_model(run_dir)  # run_dir: the folder a run wrote, outputs/default/<date>
    test = load("digits", "test")  # images as the run's dataset gives them (float32, NHWC)
    features = network.apply(variables, test.images, classify=False)  # the trained blocks' output
    predicted = jnp.argmax(network.apply(variables, test.images), -1)  # the classifier's decisions
    print(f"test accuracy {jnp.mean(predicted == test.labels):.4f}")
    # --- README example end ---

    assert features.shape == (450, 2, 2, 128)  # the digits network's last block
    assert round(float(jnp.mean(predicted == test.labels)) * 450) == round(results["test_accuracy"] * 450) > 225


def test_readme_shows_these_examples_verbatim():
    import re
    import textwrap
    from pathlib import Path

    here = Path(__file__).read_text()
    examples = re.findall(r"# --- README example start: \w+ ---\n(.*?)    # --- README example end ---", here, re.S)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert len(examples) == 2
    for example in examples:
        assert textwrap.dedent(example).strip() in readme
