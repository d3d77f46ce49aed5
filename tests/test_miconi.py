"""Miconi's Hebbian CNN: rules trained by the gradient of their surrogate loss inside the network
(``rule_form: loss``) equal the explicit rules; ridge readout; per-layer decoding; ZCA."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebbjax.config import BlockConfig, Config, ConfigError, ModelConfig, TrainingConfig, check_config
from hebbjax.data import Dataset
from hebbjax.train import Data, init_state, run_phase, setup

MICONI = dict(input_norm="standardize", rule="sparse_topk", k=2, homeostasis_rate=3.0, lr=0.01, lr_schedule="constant",
              normalize_step=False, unit_norm=True, init="unit", activation="triangle(1)", pool="avg(2,2,0)", padding_mode="zeros")


def _cfg(form: str) -> Config:
    blocks = [BlockConfig(channels=8, kernel=3, rule_form=form, **MICONI),
              BlockConfig(channels=6, kernel=3, prune=0.5, rule_form=form, **{**MICONI, "rule": "instar", "pool": None})]
    t = TrainingConfig(mode="consecutive", unsup_epochs=2, unsup_batch_size=8, readout_batch_size=8, eval_batch_size=8, steps_per_chunk=3)
    return Config(model=ModelConfig(blocks=blocks), training=t)


def test_the_surrogate_loss_form_trains_a_network_to_the_same_parameters_as_the_explicit_rules():
    """Two conv blocks (sparse top-k with homeostasis, then instar on the triangle of the first's
    output with a pruning mask, unit norm after every step), 2 epochs of 6 steps, float64."""
    rng = np.random.default_rng(0)
    data = Dataset(rng.normal(size=(48, 10, 10, 3)).astype(np.float32), rng.integers(0, 3, 48).astype(np.int32), 3)
    with jax.enable_x64(True):
        states = {}
        for form in ("explicit", "loss"):
            ctx = setup(_cfg(form), Data(data, data), progress=False)
            states[form] = (init_state(ctx), run_phase(ctx, 0, init_state(ctx)))
        (start, explicit), (_, loss) = states["explicit"], states["loss"]
        assert explicit.params["block_0"]["layer"]["kernel"].dtype == jnp.float64
        for a, b, s in zip(jax.tree_util.tree_leaves(explicit.variables), jax.tree_util.tree_leaves(loss.variables),
                           jax.tree_util.tree_leaves(start.variables), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
        moved = [float(jnp.max(jnp.abs(explicit.params[f"block_{i}"]["layer"]["kernel"] - start.params[f"block_{i}"]["layer"]["kernel"])))
                 for i in (0, 1)]
        assert min(moved) > 1e-3, moved  # both blocks learnt
        assert float(jnp.max(jnp.abs(explicit.rule_state["block_0"]["threshold"]))) > 1e-3  # homeostasis ran


def test_the_loss_form_needs_a_rule_with_a_surrogate():
    cfg = _cfg("loss")
    blocks = [dataclasses.replace(cfg.model.blocks[0], rule="softhebb")]
    with pytest.raises(ConfigError, match=r"model\.blocks\[0\]\.rule_form: rule 'softhebb' has no surrogate loss .*'instar'"):
        check_config(dataclasses.replace(cfg, model=ModelConfig(blocks=blocks)), (10, 10, 3))


def test_ridge_readout_is_scikit_learns_ridge():
    from sklearn.linear_model import Ridge

    from hebbjax.rules.readout import ridge

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(400, 30)) * 3 + 1).astype(np.float32)
    y = rng.integers(0, 4, 400)
    w, b = ridge(jnp.asarray(x), jnp.asarray(y), 4, alpha=2.5)
    reference = Ridge(alpha=2.5).fit(x.astype(np.float64), np.eye(4)[y])
    np.testing.assert_allclose(w, reference.coef_.T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b, reference.intercept_, rtol=1e-4, atol=1e-5)


def test_quadrant_pooling_averages_each_quarter_of_the_map():
    from hebbjax.train.probes import quadrants

    x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
    q = np.asarray(quadrants(x)).reshape(2, 4, 3)
    xs = np.asarray(x)
    expected = [xs[:, :2, :3].mean((1, 2)), xs[:, :2, 3:].mean((1, 2)), xs[:, 2:, :3].mean((1, 2)), xs[:, 2:, 3:].mean((1, 2))]
    np.testing.assert_allclose(q, np.stack(expected, 1), rtol=1e-6)
    assert quadrants(jnp.ones((2, 1, 1, 5))).shape == (2, 5)  # smaller than 2x2: flattened


def test_zca_whitens_the_images_it_was_fitted_on():
    """After per-image standardisation and M, the images' second moments T^T T / D become the
    identity up to the regularisation: M C M = C (C + eps)^-1 (eigenvalue-wise lambda / (lambda + eps))."""
    from hebbjax.nn import standardize, zca, zca_matrix

    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(12, 12))
    images = jnp.asarray((rng.normal(size=(500, 12)) @ mixing).reshape(500, 2, 2, 3).astype(np.float32))
    m = zca_matrix(images, eps=1e-6)
    white = np.asarray(zca(images, m)).reshape(500, -1)
    t = np.asarray(standardize(images)).reshape(500, -1)
    lam = np.linalg.eigvalsh(t.T @ t / 12)
    kept = np.sum(lam > 1e-3)  # standardisation removes one direction per image (the mean)
    assert kept == 11
    second = white.T @ white / 12
    assert np.allclose(np.sort(np.linalg.eigvalsh(second))[-kept:], 1.0, atol=1e-3)
    np.testing.assert_allclose(m, m.T, atol=1e-6)


def test_burn_in_holds_the_weights_while_the_thresholds_adapt():
    rng = np.random.default_rng(0)
    data = Dataset(rng.normal(size=(48, 10, 10, 3)).astype(np.float32), rng.integers(0, 3, 48).astype(np.int32), 3)
    cfg = _cfg("loss")
    blocks = [dataclasses.replace(b, burn_in=6) for b in cfg.model.blocks]  # 6 steps: the first epoch
    cfg = dataclasses.replace(cfg, model=ModelConfig(blocks=blocks), training=dataclasses.replace(cfg.training, unsup_epochs=1))
    ctx = setup(cfg, Data(data, data), progress=False)
    start = init_state(ctx)
    after = run_phase(ctx, 0, start)
    np.testing.assert_array_equal(after.params["block_0"]["layer"]["kernel"], start.params["block_0"]["layer"]["kernel"])
    assert float(jnp.max(jnp.abs(after.rule_state["block_0"]["threshold"]))) > 1e-3
    # masked, then unit norm at initialisation
    k1 = np.asarray(start.params["block_1"]["layer"]["kernel"])
    np.testing.assert_allclose(np.linalg.norm(k1.reshape(-1, k1.shape[-1]), axis=0), 1.0, rtol=1e-5)
    assert 0.3 < np.mean(k1 == 0) < 0.7


def test_per_layer_probes_report_one_accuracy_per_block(tmp_path):
    from hydra import compose, initialize_config_dir

    from hebbjax.config import to_dataclass
    from hebbjax.run import CONF_DIR, run

    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = to_dataclass(compose(config_name="config", overrides=["logging.progress=false", "readout.kind=ridge", "readout.layers=[0,1]",
                                                                   "data.limit_train=600"]))
    res = run(cfg, tmp_path / "run")
    assert [layer["block"] for layer in res["layers"]] == [0, 1]
    assert [layer["features"] for layer in res["layers"]] == [32 * 4, 128 * 4]  # C x 4 quadrant means
    assert all(0.5 < layer["test_accuracy"] <= 1 for layer in res["layers"]) and 0.5 < res["test_accuracy"]
    with pytest.raises(ConfigError, match=r"readout\.kind: ridge fits the classifier on cached features once, but backprop"):
        check_config(dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, method="bp")), (8, 8, 1))
    with pytest.raises(ConfigError, match=r"readout\.layers: expected null, all, or a list of block indices in \[0, 2\)"):
        check_config(dataclasses.replace(cfg, readout=dataclasses.replace(cfg.readout, layers=[2])), (8, 8, 1))
