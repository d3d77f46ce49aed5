"""The rule registry: one entry per rule is all a config needs to train with it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from hebbjax import rules
from hebbjax.config import ConfigError, check, to_dataclass
from hebbjax.data import Dataset
from hebbjax.run import CONF_DIR
from hebbjax.train import Data, init_state, run_phase, setup


def scaled_instar(params, activations, *, gain, modulation=None):
    """A toy rule of a user's own: Grossberg's instar times ``gain``."""
    return jax.tree_util.tree_map(lambda d: gain * d, rules.instar(params, activations, modulation=modulation))


@pytest.fixture
def toy_rule():
    spec = rules.register_rule("scaled_instar", scaled_instar, hyper=("gain",), given_y=True)
    yield spec
    del rules.RULES["scaled_instar"]


def _compose(*overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return to_dataclass(compose(config_name="config", overrides=list(overrides)))


TOY = ["model.blocks.0.rule=scaled_instar", "+model.blocks.0.rule_options.gain=2.5", "model.blocks.0.input_norm=none",
       "model.blocks.0.activation=relu", "model.blocks.0.lr_schedule=constant", "model.blocks.0.lr=0.0001",
       "model.blocks.0.normalize_step=false", "training.mode=successive", "training.unsup_batch_size=4",
       "training.readout_batch_size=4", "training.eval_batch_size=4"]


def test_a_registered_rule_trains_from_a_config(toy_rule, assert_close):
    cfg = _compose(*TOY)
    check(cfg)
    images = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype(np.float32)
    data = Dataset(images, np.arange(4, dtype=np.int32) % 3, 10)
    ctx = setup(cfg, Data(data, data), progress=False)
    state = init_state(ctx)
    w0 = state.params["block_0"]["layer"]["kernel"]
    # By hand: relu(u) is the block's activation and so the rule's y; one step over the 4 images.
    lin = rules.Conv(padding=1, padding_mode="reflect")
    acts = rules.observe(lin, {"kernel": w0}, jnp.asarray(images))
    acts = acts._replace(y=jax.nn.relu(acts.u))
    expected = w0 + 1e-4 * 2.5 * rules.instar({"kernel": w0}, acts)["kernel"]
    trained = run_phase(ctx, 0, state).params["block_0"]["layer"]["kernel"]
    assert_close(trained, expected, rtol=1e-6)  # relative to the largest entry (conftest)
    assert float(jnp.max(jnp.abs(trained - w0))) > 1e-3


def test_a_rules_hyper_parameters_are_checked_before_compute(toy_rule):
    with pytest.raises(ConfigError, match=r"model\.blocks\[0\]\.rule_options\.gain: rule 'scaled_instar' needs it"):
        check(_compose(*[o for o in TOY if "gain" not in o]))
    with pytest.raises(ConfigError, match=r"model\.blocks\[0\]\.rule_options: \['gian'\] not read by rule 'scaled_instar'"):
        check(_compose(*TOY, "+model.blocks.0.rule_options.gian=1"))
    with pytest.raises(ConfigError, match=r"model\.blocks\[1\]\.rule_options / model\.blocks\[1\]\.rule_form: a 'none' block has no rule"):
        check(_compose(*TOY, "model.blocks.1.rule=none", "+model.blocks.1.rule_options.gain=1"))


def test_unknown_rules_and_reserved_names_are_errors():
    with pytest.raises(ConfigError, match=r"model\.blocks\[0\]\.rule: expected one of \[.*'softhebb'.*'bp', 'none'\], got 'softheb'"):
        check(_compose("model.blocks.0.rule=softheb"))
    with pytest.raises(ValueError, match="'softhebb' is already registered"):
        rules.register_rule("softhebb", scaled_instar)
    with pytest.raises(ValueError, match="'bp' is reserved"):
        rules.register_rule("bp", scaled_instar)
    with pytest.raises(ConfigError, match=r"model\.blocks\[0\]\.k: expected an int with 1 <= k <= channels \(32\), got 33"):
        check(_compose("model.blocks.0.rule=sparse_topk", "model.blocks.0.k=33"))


def test_every_registered_rule_states_what_it_reads():
    """The registry is the one list: each entry's hyper-parameters are keywords of its function."""
    import inspect

    assert set(rules.RULES) >= {"hebb", "instar", "oja", "softhebb", "soft_wta", "hard_wta", "krotov", "sparse_topk"}
    for name, spec in rules.RULES.items():
        params = inspect.signature(getattr(spec.fn, "__wrapped__", spec.fn)).parameters
        assert all(h in params or "kwargs" in params for h in spec.hyper), name
        assert spec.given_y == (name in ("hebb", "instar", "oja")), name


@pytest.mark.parametrize("name, form", [(n, "update") for n in sorted(rules.RULES)] +
                         [(n, "update_by_loss") for n in sorted(rules.RULES) if rules.RULES[n].surrogate is not None])
def test_padding_samples_marked_invalid_change_neither_the_update_nor_the_rule_state(name, form):
    """A batch padded with junk rows that ``valid`` marks False gives the update and state of the
    real rows alone (the data-parallel step pads a global batch to a multiple of the devices)."""
    spec = rules.RULES[name]
    rng = np.random.default_rng(0)
    linear = rules.Conv(padding=1)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 2, 5)) / 4, jnp.float32)
    x = jnp.asarray(rng.normal(size=(6, 5, 5, 2)), jnp.float32)
    junk = jnp.asarray(rng.normal(size=(3, 5, 5, 2)) * 10, jnp.float32)
    hyper = {"t_invert": 1.0, "rank": 2, "delta": 0.4, "k": 2, "homeostasis_rate": 3.0}
    hyper = {k: hyper[k] for k in spec.hyper}
    state = None if spec.init_state is None else {k: jnp.asarray(rng.normal(size=v.shape) / 10, v.dtype)
                                                   for k, v in spec.init_state(5).items()}

    def run(images, valid):
        acts = rules.observe(linear, kernel, images)
        if spec.given_y:
            acts = acts._replace(y=jax.nn.relu(acts.u))
        return getattr(spec, form)(kernel, acts, state, hyper=hyper, valid=valid)

    real = run(x, None)
    padded = run(jnp.concatenate([x, junk]), jnp.arange(9) < 6)
    for a, b in zip(jax.tree_util.tree_leaves(real), jax.tree_util.tree_leaves(padded)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)
