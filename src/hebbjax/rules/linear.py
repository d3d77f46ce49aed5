"""Linear maps of Hebbian layers, and what a layer exposes to a plasticity rule.

A layer's linear map ``u = f(kernel, x)`` is all a rule needs to know about the layer: the Hebbian
correlation term ``sum_{b,pos} y (x) x_patch`` is the vector-Jacobian product of ``f`` with respect
to ``kernel`` with cotangent ``y`` (see :func:`hebbjax.rules.hebbian.correlation`). Dense layers,
convolutions with any stride, padding, dilation and feature groups, and the patches-times-matrix
form of a convolution are all just different ``f``.

Conventions (Flax's): a dense kernel is ``(in, out)`` and acts on ``(..., in)``; a conv kernel is
``HWIO`` = ``(kh, kw, in // groups, out)`` and acts on ``NHWC`` images. In both, **neurons are the
last axis** of the kernel and of ``u``, and competition between neurons runs over that axis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple, Protocol, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array
Params = Union[Array, Mapping[str, Any]]

PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]
_NP_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


class LinearMap(Protocol):
    """``u = linear(kernel, x)``; also knows how to pad ``x`` and validate shapes."""

    kernel_rank: int

    def prepare(self, x: Array) -> Array:
        """Explicit padding applied to ``x`` before the map (identity for most maps)."""

    def __call__(self, kernel: Array, x: Array) -> Array: ...

    def check(self, kernel: Array, x: Array) -> None:
        """Raise a clear error when ``kernel`` and the (unpadded) input ``x`` do not fit together."""


def _shape_error(arg: str, expected: str, got: Any) -> ValueError:
    return ValueError(f"{arg}: expected {expected}, got shape {tuple(np.shape(got))}")


def check_float(arg: str, value: Any) -> None:
    """Hebbian maths on integer images silently truncates; refuse it with a clear message."""
    dtype = jnp.result_type(value)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{arg}: expected a floating-point array (e.g. float32), got dtype {dtype}; "
            f"convert with {arg}.astype(jnp.float32) (and scale images to [0, 1])"
        )


def check_finite(arg: str, value: Array) -> None:
    """Raise on NaN/inf when ``value`` is concrete (eager mode); under ``jit`` this is a no-op.

    Inside ``jit`` a non-finite input propagates into a non-finite update (never a finite wrong
    step); the training loop checks ``jnp.isfinite`` on the update and stops with an error.
    """
    if isinstance(value, jax.core.Tracer):
        return
    # numpy, not jnp: a concrete array closed over by a traced function stays concrete here
    if not np.all(np.isfinite(np.asarray(value))):
        raise FloatingPointError(f"{arg}: contains NaN or inf values")


MatmulDtype = Literal["float32", "bfloat16"]
_MATMUL_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def _check_matmul_dtype(value: str) -> None:
    if value not in _MATMUL_DTYPES:
        raise ValueError(f"matmul_dtype: expected one of {sorted(_MATMUL_DTYPES)}, got {value!r}")


def rounded_inputs(f: Callable[[Array, Array, Any], Array], matmul_dtype: MatmulDtype) -> Callable[[Array, Array], Array]:
    """A bilinear map ``u = f(a, b, out_dtype)`` whose products take inputs rounded to ``matmul_dtype``.

    ``u = f(round(a), round(b))``, accumulated and returned in the inputs' float type; the
    cotangents ``dL/da`` and ``dL/db`` (the Hebbian correlation, backprop's weight and input
    gradients) are ``f``'s transposes at the rounded inputs applied to the rounded cotangent,
    computed in the inputs' type: products of bfloat16 values are exact there, and a transposed
    convolution in bfloat16 would also sum its overlapping windows in bfloat16. (JAX's own
    derivative of the rounded map would round the correlation itself.) ``"float32"``: ``f``.
    """
    _check_matmul_dtype(matmul_dtype)
    low = _MATMUL_DTYPES[matmul_dtype]
    if low is None:
        return lambda a, b: f(a, b, None)

    def apply(a: Array, b: Array) -> Array:
        out = jnp.result_type(a, b)

        @jax.custom_vjp
        def g(a, b):
            return f(a.astype(low), b.astype(low), out)

        def g_fwd(a, b):
            return g(a, b), (a.astype(low), b.astype(low))

        def g_bwd(res, ct):
            a16, b16 = (r.astype(out) for r in res)  # exact: bfloat16 values in float32
            da, db = jax.vjp(lambda a, b: f(a, b, None), a16, b16)[1](ct.astype(low).astype(ct.dtype))
            return da.astype(a.dtype), db.astype(b.dtype)

        g.defvjp(g_fwd, g_bwd)
        return g(a, b)

    return apply


def matmul(a: Array, b: Array, matmul_dtype: MatmulDtype = "float32") -> Array:
    """``a @ b``, its inputs rounded to ``matmul_dtype`` (:func:`rounded_inputs`).

    ``"bfloat16"``: ``round(a) @ round(b)`` accumulated in float32, and so are its cotangents
    ``round(a)^T round(g)`` (a layer's Hebbian correlation) and ``round(g) round(b)^T``; weights,
    updates and everything else stay float32. On an AVX-512 BF16 CPU, XLA runs the forward
    product at ~1.9x the float32 rate; the transposed products of the cotangents run at
    float32's (benchmarks/README.md).
    """
    return rounded_inputs(lambda a, b, out: jnp.matmul(a, b, preferred_element_type=out), matmul_dtype)(a, b)


@struct.dataclass
class Dense:
    """``u = x @ kernel`` with ``kernel`` of shape ``(in, out)`` and ``x`` of shape ``(batch, ..., in)``.

    Every leading axis after the batch is a "position" (summed over by the correlation term).
    """

    kernel_rank: int = struct.field(pytree_node=False, default=2)
    matmul_dtype: MatmulDtype = struct.field(pytree_node=False, default="float32")  # see :func:`matmul`

    def __post_init__(self) -> None:
        _check_matmul_dtype(self.matmul_dtype)

    def prepare(self, x: Array) -> Array:
        return x

    def __call__(self, kernel: Array, x: Array) -> Array:
        return matmul(x, kernel, self.matmul_dtype)

    def check(self, kernel: Array, x: Array) -> None:
        if jnp.ndim(kernel) != 2:
            raise _shape_error("kernel", "a dense kernel of rank 2, (in_features, out_features)", kernel)
        if jnp.ndim(x) < 2:
            raise _shape_error("x", f"rank >= 2, (batch, ..., {kernel.shape[0]})", x)
        if x.shape[-1] != kernel.shape[0]:
            raise _shape_error("x", f"last axis {kernel.shape[0]} (= kernel.shape[0]), i.e. (batch, ..., {kernel.shape[0]})", x)


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    if len(v) != 2:
        raise ValueError(f"expected an int or a pair of ints, got {v!r}")
    return (int(v[0]), int(v[1]))


def window_views(x: Array, window: tuple[int, int], strides: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> list[Array]:
    """The ``kh * kw`` strided views of an (already padded) NHWC input, one per window offset,
    row-major: view ``(i, j)`` holds, at every output position, the window's element ``(i, j)``.
    Concatenated on channels they are im2col patches (:meth:`Conv.patches`); their elementwise
    maximum is max pooling (:func:`hebbjax.nn.layers.max_pool_views`)."""
    (kh, kw), (sh, sw), (dh, dw) = window, strides, dilation
    ho = (x.shape[1] - (kh - 1) * dh - 1) // sh + 1
    wo = (x.shape[2] - (kw - 1) * dw - 1) // sw + 1
    return [
        jax.lax.slice(x, (0, i * dh, j * dw, 0), (x.shape[0], i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1, x.shape[3]), (1, sh, sw, 1))
        for i in range(kh)
        for j in range(kw)
    ]


@struct.dataclass
class Conv:
    """2-D convolution ``u = conv(pad(x), kernel)``, NHWC images and HWIO kernels.

    Attributes:
      strides, dilation: ints or pairs.
      padding: int, pair of ints, ``"VALID"`` or ``"SAME"`` (``"SAME"`` only with ``padding_mode="zeros"``).
      padding_mode: ``"zeros"`` pads inside the convolution; ``"reflect"``, ``"replicate"`` and
        ``"circular"`` pad ``x`` explicitly in :meth:`prepare` (as PyTorch's ``F.pad`` does in SoftHebb),
        so the rule sees exactly the padded input the forward pass used.
      feature_group_count: grouped convolution; ``in`` and ``out`` must both be divisible by it.
      matmul_dtype: ``"bfloat16"``: the products (forward and cotangents) take bfloat16-rounded
        inputs and accumulate in float32 (:func:`rounded_inputs`); ``"float32"`` (default).
      implementation: ``"xla"`` (``lax.conv_general_dilated``) or ``"patches"`` (extract patches,
        then one matrix product; 1.2-3.6x faster on CPU, ``benchmarks/bench_cpu_kernels.py``). The two are the
        same linear map. ``"auto"``: XLA's convolution off CPU; on CPU, the forward map by patches
        when a patch has >= 512 values (else XLA's convolution, faster for thinner layers) and
        the kernel cotangent (the Hebbian correlation term, the weight gradient of BP) always by
        patches: XLA's CPU weight-gradient convolution was 1.2-3.6x slower on every layer shape of
        ``benchmarks/bench_cpu_kernels.py`` (2026-11-23).
    """

    strides: Any = struct.field(pytree_node=False, default=1)
    padding: Any = struct.field(pytree_node=False, default=0)
    dilation: Any = struct.field(pytree_node=False, default=1)
    feature_group_count: int = struct.field(pytree_node=False, default=1)
    padding_mode: PaddingMode = struct.field(pytree_node=False, default="zeros")
    implementation: Literal["auto", "xla", "patches"] = struct.field(pytree_node=False, default="auto")
    kernel_rank: int = struct.field(pytree_node=False, default=4)
    matmul_dtype: MatmulDtype = struct.field(pytree_node=False, default="float32")

    def __post_init__(self) -> None:
        # Hashable, canonical fields: the map is static (jit cache key) and YAML gives lists.
        for name in ("strides", "dilation"):
            object.__setattr__(self, name, _pair(getattr(self, name)))
        if not isinstance(self.padding, str):
            object.__setattr__(self, "padding", _pair(self.padding))
        object.__setattr__(self, "feature_group_count", int(self.feature_group_count))
        if self.padding_mode not in ("zeros", *_NP_PAD_MODE):
            raise ValueError(f"padding_mode: expected one of zeros/reflect/replicate/circular, got {self.padding_mode!r}")
        if isinstance(self.padding, str) and self.padding not in ("VALID", "SAME"):
            raise ValueError(f"padding: expected an int, a pair, 'VALID' or 'SAME', got {self.padding!r}")
        if self.padding == "SAME" and self.padding_mode != "zeros":
            raise ValueError("padding: 'SAME' is only supported with padding_mode='zeros'; give explicit ints")
        if self.implementation not in ("auto", "xla", "patches"):
            raise ValueError(f"implementation: expected 'auto', 'xla' or 'patches', got {self.implementation!r}")
        _check_matmul_dtype(self.matmul_dtype)

    def _explicit_padding(self) -> tuple[tuple[int, int], tuple[int, int]] | str:
        if isinstance(self.padding, str):
            return self.padding
        ph, pw = _pair(self.padding)
        return ((ph, ph), (pw, pw))

    def prepare(self, x: Array) -> Array:
        if self.padding_mode == "zeros" or isinstance(self.padding, str):
            return x
        (ph, _), (pw, _) = self._explicit_padding()
        if ph == 0 and pw == 0:
            return x
        if self.padding_mode == "reflect" and (ph >= x.shape[1] or pw >= x.shape[2]):
            raise ValueError(f"padding: reflect padding {self.padding} needs images larger than the pad, got x of shape {x.shape}")
        return jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), mode=_NP_PAD_MODE[self.padding_mode])

    def _conv_padding(self):
        return self._explicit_padding() if self.padding_mode == "zeros" else "VALID"

    def _patches_forward(self, kernel: Array) -> bool:
        if self.implementation == "auto":
            # On CPU the patch matrix feeds one GEMM; with a short patch the GEMM is too thin to
            # pay for the copy and XLA's convolution wins (bench_cpu_kernels.py at batch 100:
            # 288 values xla 1.6x faster, 864 values patches 1.5x faster).
            kh, kw, cin_g, _ = kernel.shape
            return jax.default_backend() == "cpu" and kh * kw * cin_g >= 512
        return self.implementation == "patches"

    def __call__(self, kernel: Array, x: Array) -> Array:
        return rounded_inputs(self._map, self.matmul_dtype)(kernel, x)

    def _map(self, kernel: Array, x: Array, out: Any = None) -> Array:
        """The convolution, its products returned as ``out`` (default: the inputs' type)."""
        use_patches = self._patches_forward(kernel)
        if self.implementation != "auto" or use_patches or jax.default_backend() != "cpu":
            return self._apply(kernel, x, use_patches, out)

        # CPU, thin layer: XLA's convolution forward, patches for the kernel cotangent.
        @jax.custom_vjp
        def conv(kernel, x):
            return self._apply(kernel, x, False, out)

        def conv_fwd(kernel, x):
            return conv(kernel, x), (kernel, x)

        def conv_bwd(res, g):
            kernel, x = res
            dk = jax.vjp(lambda w: self._apply(w, x, True, out), kernel)[1](g)[0]
            dx = jax.vjp(lambda v: self._apply(kernel, v, False, out), x)[1](g)[0]
            return dk, dx

        conv.defvjp(conv_fwd, conv_bwd)
        return conv(kernel, x)

    def _apply(self, kernel: Array, x: Array, use_patches: bool, out: Any = None) -> Array:
        strides, dilation, groups = _pair(self.strides), _pair(self.dilation), self.feature_group_count
        if not use_patches:
            return jax.lax.conv_general_dilated(
                x, kernel, window_strides=strides, padding=self._conv_padding(), rhs_dilation=dilation,
                dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups, preferred_element_type=out,
            )
        kh, kw, cin_g, cout = kernel.shape
        patches = self.patches(x, (kh, kw))  # (b, ho, wo, kh * kw * cin), features ordered (kh, kw, c)
        b, ho, wo, _ = patches.shape
        if groups == 1:  # one plain GEMM: the fast path
            p, w = patches.reshape(-1, kh * kw * cin_g), kernel.reshape(kh * kw * cin_g, cout)
            return jnp.matmul(p, w, preferred_element_type=out).reshape(b, ho, wo, cout)
        patches = patches.reshape(b, ho, wo, kh * kw, groups, cin_g)
        patches = jnp.moveaxis(patches, 4, 3).reshape(b, ho, wo, groups, kh * kw * cin_g)
        w = kernel.reshape(kh, kw, cin_g, groups, cout // groups)
        w = jnp.moveaxis(w, 3, 0).reshape(groups, kh * kw * cin_g, cout // groups)
        # in float32 from rounded inputs too: XLA's CPU batched product has no bfloat16 x bfloat16 -> float32
        acc = jnp.promote_types(patches.dtype, jnp.float32)
        u = jnp.einsum("bhwgp,gpo->bhwgo", patches.astype(acc), w.astype(acc)).astype(patches.dtype if out is None else out)
        return u.reshape(b, ho, wo, cout)

    def patches(self, x: Array, window: tuple[int, int]) -> Array:
        """im2col by strided slicing: ``kh * kw`` shifted views of the padded input, concatenated.

        Copies only. With the matrix product that follows, measured 1.7-7x faster on CPU (batch 10,
        SoftHebb's 3x3 layers, 2026-11-23) than patches from ``lax.conv_general_dilated_patches``,
        an identity-filter convolution."""
        (kh, kw), (sh, sw), (dh, dw) = window, _pair(self.strides), _pair(self.dilation)
        pad = self._conv_padding()
        if isinstance(pad, str):
            eff = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
            pad = jax.lax.padtype_to_pads(x.shape[1:3], eff, (sh, sw), pad)
        if any(p for pair in pad for p in pair):
            x = jnp.pad(x, ((0, 0), tuple(pad[0]), tuple(pad[1]), (0, 0)))
        return jnp.concatenate(window_views(x, window, (sh, sw), (dh, dw)), axis=-1)

    def check(self, kernel: Array, x: Array) -> None:
        if jnp.ndim(kernel) != 4:
            raise _shape_error("kernel", "a conv kernel of rank 4 in HWIO layout, (kh, kw, in // groups, out)", kernel)
        kh, kw, cin_g, cout = kernel.shape
        g = self.feature_group_count
        if jnp.ndim(x) != 4:
            raise _shape_error("x", f"an NHWC image batch of rank 4, (batch, height, width, {cin_g * g})", x)
        if cout % g:
            raise _shape_error("kernel", f"out channels (last axis) divisible by feature_group_count={g}", kernel)
        if x.shape[-1] != cin_g * g:
            raise _shape_error("x", f"{cin_g * g} channels on the last axis (kernel in-channels {cin_g} x groups {g})", x)
        (dh, dw), pad = _pair(self.dilation), self._explicit_padding()
        if pad != "SAME":
            extra = (0, 0) if pad == "VALID" else (sum(pad[0]), sum(pad[1]))
            if x.shape[1] + extra[0] < dh * (kh - 1) + 1 or x.shape[2] + extra[1] < dw * (kw - 1) + 1:
                raise _shape_error("x", f"height/width at least the dilated kernel ({dh * (kh - 1) + 1}x{dw * (kw - 1) + 1}) after padding", x)


class Activations(NamedTuple):
    """What a layer's forward pass exposes to a plasticity rule (a pytree; ``linear`` is static).

    Attributes:
      linear: the layer's linear map.
      x: the input of the linear map, **after** explicit padding (``linear.prepare``).
      u: the pre-activation ``linear(kernel, x)`` (+ bias), neurons on the last axis.
      y: optional post-synaptic activity for rules that take it as given (plain Hebb, instar, Oja);
        competitive rules compute their own signal from ``u``. ``None`` means ``y = u``.
    """

    linear: LinearMap
    x: Array
    u: Array
    y: Array | None = None


def kernel_of(params: Params) -> Array:
    """The weight array of a layer's params: the array itself, or ``params["kernel"]``."""
    if isinstance(params, Mapping):
        if "kernel" not in params:
            raise KeyError(f"params: expected a mapping with a 'kernel' entry, got keys {sorted(params)}")
        return params["kernel"]
    return params


def observe(linear: LinearMap, params: Params, x: Array, y: Array | None = None) -> Activations:
    """Run a layer's linear map and collect what a rule needs: ``Activations(linear, pad(x), u, y)``.

    Validates shapes and dtypes (clear errors that name the argument) and, outside ``jit``, that
    ``x`` is finite.
    """
    kernel = kernel_of(params)
    check_float("kernel", kernel)
    check_float("x", x)
    linear.check(kernel, x)
    if x.shape[0] == 0:
        raise ValueError(f"x: empty batch (shape {x.shape}); a Hebbian step needs at least one sample")
    check_finite("x", x)
    x = linear.prepare(x)
    u = linear(kernel, x)
    if isinstance(params, Mapping) and params.get("bias") is not None:
        u = u + params["bias"]
    if y is not None and jnp.shape(y) != u.shape:
        raise _shape_error("y", f"the shape of the pre-activation u, {u.shape}", y)
    return Activations(linear, x, u, y)
