"""Bad input gets a clear error that names the offending argument; non-finite input never turns
into a finite (wrong) step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebbjax.rules import (
    Activations,
    Conv,
    Dense,
    SparseTopKState,
    dopamine_from_table,
    hard_wta,
    instar,
    krotov,
    observe,
    oja,
    softhebb,
    sparse_topk,
    sparse_topk_init,
)

# numpy, so that building the parameter lists below compiles nothing
W = np.full((5, 4), 0.1, np.float32)
X = np.ones((8, 5), np.float32)
CW = np.full((3, 3, 2, 6), 0.1, np.float32)  # conv kernel for 2 groups: 4 input channels, 6 outputs
CX = np.ones((2, 6, 6, 4), np.float32)


@pytest.mark.parametrize(
    "linear, kernel, x, exc, match",
    [
        (Dense(), np.ones((2, 5, 4), np.float32), X, ValueError, r"^kernel: .*rank 2"),
        (Dense(), W, np.ones((5,), np.float32), ValueError, r"^x: .*rank >= 2"),
        (Dense(), W, np.ones((8, 6), np.float32), ValueError, r"^x: .*last axis 5"),
        (Dense(), W, np.ones((8, 5), np.int32), TypeError, r"^x: .*floating"),
        (Dense(), W.astype(np.int32), X, TypeError, r"^kernel: .*floating"),
        (Dense(), W, np.ones((0, 5), np.float32), ValueError, r"^x: empty batch"),
        (Conv(feature_group_count=2), CW, np.ones((6, 6, 4), np.float32), ValueError, r"^x: .*rank 4"),
        (Conv(feature_group_count=2), CW, np.ones((2, 6, 6, 3), np.float32), ValueError, r"^x: .*4 channels"),
        (Conv(feature_group_count=4), np.ones((3, 3, 1, 6), np.float32), CX, ValueError, r"^kernel: .*divisible"),
        (Conv(), np.ones((6, 4), np.float32), CX, ValueError, r"^kernel: .*rank 4"),
        (Conv(dilation=3), np.ones((3, 3, 4, 6), np.float32), CX, ValueError, r"^x: .*dilated kernel"),
        (Conv(padding=6, padding_mode="reflect"), np.ones((3, 3, 4, 6), np.float32), CX, ValueError, r"^padding: "),
        (Conv(), np.ones((3, 3, 4, 6), np.float32), np.ones((0, 6, 6, 4), np.float32), ValueError, r"^x: empty batch"),
    ],
    ids=[
        "dense-kernel-rank", "dense-x-rank", "dense-x-features", "dense-x-int", "dense-kernel-int", "dense-empty-batch",
        "conv-x-rank", "conv-x-channels", "conv-groups-out", "conv-kernel-rank", "conv-too-small", "conv-reflect-too-wide",
        "conv-empty-batch",
    ],
)
def test_observe_rejects_bad_input_naming_the_argument(linear, kernel, x, exc, match):
    with pytest.raises(exc, match=match):
        observe(linear, kernel, x)


def test_observe_rejects_a_mismatched_y_and_a_params_dict_without_kernel():
    with pytest.raises(ValueError, match=r"^y: .*\(8, 4\)"):
        observe(Dense(), W, X, np.ones((8, 3), np.float32))
    with pytest.raises(KeyError, match="params: .*'kernel'"):
        observe(Dense(), {"w": W}, X)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(padding_mode="mirror"), "^padding_mode: "),
        (dict(padding="FULL"), "^padding: "),
        (dict(padding="SAME", padding_mode="reflect"), "^padding: "),
        (dict(implementation="cudnn"), "^implementation: "),
        (dict(strides=(1, 2, 3)), "pair"),
    ],
)
def test_conv_rejects_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Conv(**kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_eager_observe_raises_on_non_finite_x(bad):
    x = np.ones((8, 5), np.float32)
    x[3, 2] = bad
    with pytest.raises(FloatingPointError, match="^x: .*NaN or inf"):
        observe(Dense(), W, jnp.asarray(x))


def test_rules_reject_bad_modulation_activations_and_hyperparameters():
    acts = observe(Dense(), W, X)
    for modulation in (np.ones(7, np.float32), np.ones((8, 1), np.float32), np.ones((), np.float32)):
        with pytest.raises(ValueError, match="^modulation: .*one value per sample"):
            softhebb(W, acts, modulation=modulation)
    with pytest.raises(TypeError, match="^activations: .*observe"):
        instar(W, (X, X @ W))
    with pytest.raises(ValueError, match="^activations.u: "):  # activations of another layer
        oja(np.ones((5, 3), np.float32), acts)
    with pytest.raises(ValueError, match="activations.x .*does not fit kernel"):
        oja(np.ones((6, 4), np.float32), acts)
    with pytest.raises(ValueError, match="^kernel: .*rank 2"):
        oja(np.ones((1, 5, 4), np.float32), acts)
    with pytest.raises(TypeError, match="^kernel: .*floating"):
        hard_wta(W.astype(np.int32), acts)
    with pytest.raises(ValueError, match="^activations.y: "):
        instar(W, Activations(Dense(), X, X @ W, np.ones((8, 3), np.float32)))
    for rank in (1, 5):
        with pytest.raises(ValueError, match="^rank: "):
            krotov(W, acts, rank=rank)
    for k in (0, 5):
        with pytest.raises(ValueError, match="^k: "):
            sparse_topk(W, acts, sparse_topk_init(4), k=k)
    with pytest.raises(ValueError, match="^state.threshold: "):
        sparse_topk(W, acts, SparseTopKState(np.zeros(3, np.float32)))
    with pytest.raises(ValueError, match="^received: "):
        dopamine_from_table(np.asarray([0, 1, 1]), np.asarray([1, 0]))
    with pytest.raises(ValueError, match=r"^predicted: expected a vector.*got shape \(2, 2\)"):
        dopamine_from_table(np.zeros((2, 2)), np.zeros((2, 2)))


def test_under_jit_a_nan_input_gives_a_non_finite_update():
    """Inside jit the eager finiteness check cannot run; a NaN in x must then poison the update
    (the training loop detects it) rather than produce a finite, wrong step."""
    conv = Conv(strides=2, padding=1, padding_mode="reflect", feature_group_count=2, implementation="patches")

    @jax.jit
    def all_updates(w, x, cw, cx):
        acts = observe(Dense(), w, x)
        out = {
            "instar": instar(w, acts), "oja": oja(w, acts), "softhebb": softhebb(w, acts),
            "hard_wta": hard_wta(w, acts), "krotov": krotov(w, acts),
            "sparse_topk": sparse_topk(w, acts, sparse_topk_init(4), k=1)[0],
            "modulated": instar(w, acts, modulation=np.ones(8, np.float32)),
        }
        out["conv"] = softhebb(cw, observe(conv, cw, cx))
        return out

    x = np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)
    cx = np.random.default_rng(1).normal(size=(2, 6, 6, 4)).astype(np.float32)
    clean = all_updates(W, jnp.asarray(x), CW, jnp.asarray(cx))
    for name, upd in clean.items():
        assert np.all(np.isfinite(np.asarray(upd))), name
    x[5, 1], cx[1, 2, 3, 0] = np.nan, np.nan
    poisoned = all_updates(W, jnp.asarray(x), CW, jnp.asarray(cx))
    for name, upd in poisoned.items():
        assert not np.all(np.isfinite(np.asarray(upd))), f"{name}: a NaN input gave a finite update"


@pytest.mark.parametrize("rule", ["softhebb", "soft_wta", "hard_wta", "krotov", "sparse_topk"])
def test_competitive_rules_refuse_a_y_they_would_ignore(rule):
    from hebbjax import rules

    acts = observe(Dense(), W, X, np.ones((8, 4), np.float32))
    call = {
        "sparse_topk": lambda: rules.sparse_topk(W, acts, sparse_topk_init(4)),
        "krotov": lambda: rules.krotov(W, acts, rank=2),
    }.get(rule, lambda: getattr(rules, rule)(W, acts))
    with pytest.raises(ValueError, match=rf"^activations\.y: {rule} computes its post-synaptic signal from u"):
        call()
    # the rules that take y use it
    assert not np.allclose(instar(W, acts), instar(W, observe(Dense(), W, X)))


@pytest.mark.parametrize("loss", ["hebb_loss", "instar_loss", "oja_loss"])
def test_surrogate_losses_check_shapes_like_the_rules(loss):
    from hebbjax import rules

    fn = getattr(rules, loss)
    with pytest.raises(ValueError, match=r"^y: expected the shape of the pre-activation u, \(8, 4\), got shape \(6, 4\)"):
        fn(W, X, np.ones((6, 4), np.float32), linear=Dense())
    with pytest.raises(ValueError, match=r"^x: .*last axis 5"):
        fn(W, np.ones((8, 6), np.float32), np.ones((8, 4), np.float32), linear=Dense())
    with pytest.raises(TypeError, match=r"^kernel: .*floating"):
        fn(W.astype(np.int32), X, np.ones((8, 4), np.float32), linear=Dense())
