"""A convolution is a dense layer applied to every input patch (SoftHebb's ``hebbconv.delta_weight`` writes
the weight-gradient convolution by hand; Journé et al., ICLR 2023).

For every stride / dilation / padding mode / feature-group setting and for both conv
implementations, the conv form of each rule must equal the dense form of the same rule (written
in numpy float64) applied to patches extracted by explicit numpy slicing of the explicitly padded
input (HWIO kernel reshaped to (kh*kw*in, out), patch features in the same (kh, kw, in) order).

Competition runs over *all* output channels at a position, also with feature groups (as in
SoftHebb). So a grouped conv is compared with one dense layer whose kernel is block-diagonal
(group g's patch features feed only group g's neurons): its u and its competition are those of the
conv, and its on-block update entries are the conv's update, group by group.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebbjax.rules import Conv, instar, krotov, observe, oja, softhebb

_NP_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}

# name: (conv kwargs, input shape NHWC, kernel shape HWIO)
CASES = {
    "stride2": (dict(strides=2, padding=1), (2, 9, 9, 3), (3, 3, 3, 5)),
    "dilation2": (dict(dilation=2), (2, 9, 8, 3), (3, 3, 3, 5)),
    "reflect": (dict(padding=2, padding_mode="reflect"), (2, 7, 7, 3), (3, 3, 3, 5)),
    "groups3_circular_stride_dilation": (
        dict(strides=(2, 1), dilation=(1, 2), padding=(1, 2), padding_mode="circular", feature_group_count=3),
        (2, 8, 9, 6),
        (3, 2, 2, 6),
    ),
}


def np_patches(x: np.ndarray, kh: int, kw: int, strides, dilation, padding, mode: str) -> np.ndarray:
    """(B, Ho, Wo, kh, kw, C) patches of the explicitly padded input, by fancy-index slicing:
    patch[b, i, j, a, c, :] = x_pad[b, i*sh + a*dh, j*sw + c*dw, :]."""
    (sh, sw), (dh, dw), (ph, pw) = strides, dilation, padding
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), mode=_NP_MODE[mode])
    ho = (xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[2] - dw * (kw - 1) - 1) // sw + 1
    rows = (np.arange(ho) * sh)[:, None] + (np.arange(kh) * dh)[None, :]  # (ho, kh)
    cols = (np.arange(wo) * sw)[:, None] + (np.arange(kw) * dw)[None, :]  # (wo, kw)
    return xp[:, rows[:, None, :, None], cols[None, :, None, :], :]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def dense_equivalent(x: np.ndarray, kernel: np.ndarray, conv_kwargs: dict):
    """Patches ``(B, Ho*Wo, G*P)`` and block-diagonal dense kernel ``(G*P, out)`` with P = kh*kw*in/G."""
    kh, kw, cin_g, cout = kernel.shape
    groups = conv_kwargs.get("feature_group_count", 1)
    og, p = cout // groups, kh * kw * cin_g
    patches = np_patches(
        x, kh, kw, _pair(conv_kwargs.get("strides", 1)), _pair(conv_kwargs.get("dilation", 1)),
        _pair(conv_kwargs.get("padding", 0)), conv_kwargs.get("padding_mode", "zeros"),
    )
    b, ho, wo = patches.shape[:3]
    xd = np.zeros((b, ho * wo, groups * p), x.dtype)
    wd = np.zeros((groups * p, cout), kernel.dtype)
    for g in range(groups):
        xd[..., g * p : (g + 1) * p] = patches[..., g * cin_g : (g + 1) * cin_g].reshape(b, ho * wo, p)
        wd[g * p : (g + 1) * p, g * og : (g + 1) * og] = kernel[..., g * og : (g + 1) * og].reshape(p, og)
    return xd, wd, (ho, wo)


def dense_blocks_to_hwio(dw_dense: np.ndarray, kernel_shape) -> list[np.ndarray]:
    """Group by group: the on-block part of a dense update, reshaped to that group's HWIO slice."""
    kh, kw, cin_g, cout = kernel_shape
    groups = dw_dense.shape[0] // (kh * kw * cin_g)
    og, p = cout // groups, kh * kw * cin_g
    return [dw_dense[g * p : (g + 1) * p, g * og : (g + 1) * og].reshape(kh, kw, cin_g, og) for g in range(groups)]


def np_dense_rule(rule: str, xd: np.ndarray, wd: np.ndarray, y_given: np.ndarray) -> np.ndarray:
    """The dense form in numpy float64: ``dw = sum_{b,p} y x^T - (sum_{b,p} r) w`` with the rule's y, r
    (competition over the last axis: all neurons at one sample and position)."""
    x, w = xd.astype(np.float64), wd.astype(np.float64)
    u = x @ w
    onehot = lambda idx: np.eye(u.shape[-1])[idx]  # noqa: E731
    order = np.argsort(-u, axis=-1)
    if rule == "softhebb":  # t_invert = 2
        e = np.exp(2.0 * u - np.max(2.0 * u, axis=-1, keepdims=True))
        s = e / e.sum(-1, keepdims=True)
        win = onehot(order[..., 0])
        y = np.where(win > 0, s, -s)
        r = y * u
    elif rule == "krotov":  # rank 3, delta 0.4
        y = onehot(order[..., 0]) - 0.4 * onehot(order[..., 2])
        r = y * u
    elif rule == "oja":
        y, r = u, u * u
    elif rule == "instar":
        y, r = y_given.astype(np.float64), y_given.astype(np.float64)
    else:
        raise ValueError(rule)
    return np.einsum("bpi,bpj->ij", x, y) - r.sum(axis=(0, 1)) * w


RULES = ("softhebb", "oja", "instar", "krotov")


def _all_rules(linear, kernel, x, y_given):
    """The rules under test on one conv layer (one jit per case keeps the suite fast)."""
    acts = observe(linear, kernel, x)
    return {
        "u": acts.u,
        "softhebb": softhebb(kernel, acts, t_invert=2.0),
        "oja": oja(kernel, acts),
        "instar": instar(kernel, observe(linear, kernel, x, y_given)),
        "krotov": krotov(kernel, acts, rank=3, delta=0.4),
    }


_all_rules_jit = jax.jit(_all_rules, static_argnums=0)
_softhebb_step = jax.jit(lambda linear, kernel, x: softhebb(kernel, observe(linear, kernel, x)), static_argnums=0)


@pytest.mark.parametrize("implementation", ["xla", "patches", "auto"])
@pytest.mark.parametrize("case", list(CASES))
def test_conv_rule_equals_dense_rule_on_patches(case, implementation):
    conv_kwargs, x_shape, k_shape = CASES[case]
    rng = np.random.default_rng(sum(map(ord, case)))
    x = rng.normal(size=x_shape).astype(np.float32)
    kernel = rng.normal(size=k_shape).astype(np.float32) / np.sqrt(np.prod(k_shape[:3]))
    xd, wd, (ho, wo) = dense_equivalent(x, kernel, conv_kwargs)
    b, cout = x_shape[0], k_shape[-1]
    y = (rng.random(size=(b, ho, wo, cout)) < 0.3).astype(np.float32)  # a binary post-synaptic signal

    got = _all_rules_jit(Conv(**conv_kwargs, implementation=implementation), jnp.asarray(kernel), jnp.asarray(x), jnp.asarray(y))

    # The linear map itself: u of the conv == patches @ kernel.
    u_ref = xd.astype(np.float64) @ wd.astype(np.float64)
    np.testing.assert_allclose(np.asarray(got["u"]).reshape(b, ho * wo, cout), u_ref, rtol=0, atol=1e-5 * np.abs(u_ref).max())

    for rule in RULES:
        conv_dw = np.asarray(got[rule])
        assert conv_dw.shape == k_shape
        groups = dense_blocks_to_hwio(np_dense_rule(rule, xd, wd, y.reshape(b, ho * wo, cout)), k_shape)
        og = cout // len(groups)
        scale = max(np.abs(g).max() for g in groups)
        assert scale > 0
        for g, expected in enumerate(groups):
            err = np.abs(conv_dw[..., g * og : (g + 1) * og] - expected).max()
            assert err <= 1e-4 * scale, f"{rule}, group {g}: max error {err:.3g} vs scale {scale:.3g}"


def test_observe_pads_explicitly_like_numpy():
    """The rule sees exactly the padded input of the forward pass (``activations.x``)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 5, 6, 2)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    modes = ("reflect", "replicate", "circular")
    all_acts = jax.jit(
        lambda k, x: [observe(Conv(padding=(2, 1), padding_mode=mode), k, x) for mode in modes]
    )(jnp.asarray(kernel), jnp.asarray(x))
    for mode, acts in zip(modes, all_acts):
        np.testing.assert_array_equal(acts.x, np.pad(x, ((0, 0), (2, 2), (1, 1), (0, 0)), mode=_NP_MODE[mode]))
        assert acts.u.shape == (1, 7, 6, 4)


def test_conv_same_padding_and_auto_implementation():
    """'SAME' zero padding with the default implementation ("auto") == explicit padding 1 with "xla"."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 3)).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=(3, 3, 3, 4)).astype(np.float32))
    ref = _softhebb_step(Conv(padding=1, implementation="xla"), kernel, x)
    got = _softhebb_step(Conv(padding="SAME"), kernel, x)
    ref = np.asarray(ref)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("padding", ["SAME", "VALID", (2, 0)])
def test_patches_and_xla_convolutions_are_the_same_linear_map(padding):
    """Including XLA's asymmetric "SAME" padding (stride 2, even size) and feature groups."""
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=(2, 8, 7, 4)).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=(3, 2, 2, 6)).astype(np.float32))
    kw = dict(strides=(2, 1), dilation=(1, 2), padding=padding, feature_group_count=2)
    g = jnp.asarray(rng.normal(size=jax.eval_shape(Conv(**kw, implementation="xla"), kernel, x).shape).astype(np.float32))

    def map_and_vjp(conv, kernel, x):
        u, vjp = jax.vjp(conv, kernel, x)
        return (u, *vjp(g))

    # "auto" on CPU: XLA's forward, patches for the kernel cotangent (a custom VJP) here.
    out = {impl: jax.jit(partial(map_and_vjp, Conv(**kw, implementation=impl)))(kernel, x) for impl in ("xla", "patches", "auto")}
    for impl in ("patches", "auto"):
        for name, got, ref in zip(("u", "d kernel", "d x"), out[impl], out["xla"]):
            assert got.shape == ref.shape
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * float(jnp.abs(ref).max()), err_msg=f"{impl}: {name}")
