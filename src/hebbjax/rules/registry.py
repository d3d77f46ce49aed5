"""Rules by name: the one place that says what ``rule: <name>`` in a config means.

An entry gives the rule function, the block hyper-parameters it reads (passed as keywords), whether
it takes the block's activation as its post-synaptic ``y``, and, for a stateful rule, its initial
state. Register your own rule once and every config can name it::

    from hebbjax import rules

    def scaled_hebb(params, activations, *, gain, modulation=None):
        return jax.tree_util.tree_map(lambda d: gain * d, rules.hebb(params, activations, modulation=modulation))

    rules.register_rule("scaled_hebb", scaled_hebb, hyper=("gain",), given_y=True)
    # model.blocks.0.rule=scaled_hebb '+model.blocks.0.rule_options={gain: 2.0}'

A hyper-parameter is read from the block's ``rule_options`` when it is there, else from the block
field of that name (``t_invert``, ``k``, ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from hebbjax.rules.hebbian import _modulate, _vary_like
from hebbjax.rules.linear import Activations, Array, Params
from hebbjax.rules.plasticity import (
    SparseTopKState,
    hard_wta,
    hebb,
    instar,
    krotov,
    oja,
    soft_wta,
    softhebb,
    sparse_topk,
    sparse_topk_signal,
)
from hebbjax.rules.surrogate import loss_of_activations

State = dict[str, Array]


@dataclasses.dataclass(frozen=True)
class RuleSpec:
    """One registered rule.

    Attributes:
      fn: ``fn(params, activations, **hyper, modulation=None) -> updates``; a stateful rule
        (``init_state`` given) is ``fn(params, activations, state, *, axis_name, **hyper,
        modulation=None) -> (updates, state)``, ``state`` a dict of arrays. On a padded batch
        (:meth:`update`'s ``valid``) a stateful rule is also passed ``valid=``, one bool per
        sample, to leave the padding out of its batch statistics.
      hyper: names of the hyper-parameters ``fn`` takes as keywords.
      given_y: the rule uses the block's activation (its output before pooling) as ``y``;
        otherwise it computes its own post-synaptic signal from ``u`` (competitive rules).
      init_state: ``init_state(num_neurons) -> state`` for a stateful rule.
      output_shift: ``output_shift(state) -> array`` subtracted from ``u`` before the block's
        activation when the block sets ``threshold_in_output`` (Miconi's ``u - theta``).
      check: ``check(hyper, num_neurons) -> message or None``, run on the config before compute.
      surrogate: for a rule that is minus the gradient of a loss (Miconi 2021),
        ``surrogate(params, activations, state, *, axis_name, **hyper) -> (loss_fn, new_state)``
        with ``-jax.grad(loss_fn)(params) == the rule's update`` (:meth:`update_by_loss`; on a
        padded batch also ``valid=``: the loss sums over those samples only).
    """

    fn: Callable[..., Any]
    hyper: tuple[str, ...] = ()
    given_y: bool = False
    init_state: Callable[[int], State] | None = None
    output_shift: Callable[[State], Array] | None = None
    check: Callable[[Mapping[str, Any], int], str | None] | None = None
    surrogate: Callable[..., tuple[Callable[[Params], Array], State | None]] | None = None

    def update_by_loss(
        self, params: Params, activations: Activations, state: State | None, *, hyper: Mapping[str, Any],
        axis_name: str | None = None, modulation: Array | None = None, valid: Array | None = None,
    ) -> tuple[Params, State | None]:
        """The update as Miconi computes it: ``-jax.grad`` of the rule's surrogate loss (a local sum
        inside ``shard_map``: the caller reduces it across devices, as with :meth:`update`).
        ``valid``: the real samples of a padded batch (one bool each; ``None``: all)."""
        if modulation is not None:
            raise ValueError("modulation: the surrogate-loss form takes no per-sample factor; use the explicit rule")
        padded = {} if valid is None else {"valid": valid}
        loss, new_state = self.surrogate(params, activations, state, axis_name=axis_name, **hyper, **padded)
        local = jax.tree_util.tree_map(lambda p: _vary_like(p, activations.x), params)  # this device's gradient
        return jax.tree_util.tree_map(jnp.negative, jax.grad(loss)(local)), new_state

    def update(
        self,
        params: Params,
        activations: Activations,
        state: State | None,
        *,
        hyper: Mapping[str, Any],
        axis_name: str | None = None,
        modulation: Array | None = None,
        valid: Array | None = None,
    ) -> tuple[Params, State | None]:
        """``(updates, new_state)`` for any rule, stateful or not (``state`` passes through).

        ``valid``: which samples of the batch are real (one bool each; ``None``: all). Padding gets
        modulation 0, so it adds nothing to the update; a stateful rule also receives ``valid``."""
        if valid is not None:
            modulation = valid if modulation is None else modulation * valid
        if self.init_state is None:
            return self.fn(params, activations, **hyper, modulation=modulation), state
        padded = {} if valid is None else {"valid": valid}
        return self.fn(params, activations, state, axis_name=axis_name, **hyper, modulation=modulation, **padded)


#: name -> :class:`RuleSpec`. Add entries with :func:`register_rule`.
RULES: dict[str, RuleSpec] = {}

#: Block ``rule`` values that are not Hebbian rules: trained by backprop, or frozen.
NOT_HEBBIAN = ("bp", "none")


def register_rule(
    name: str,
    fn: Callable[..., Any],
    *,
    hyper: tuple[str, ...] = (),
    given_y: bool = False,
    init_state: Callable[[int], State] | None = None,
    output_shift: Callable[[State], Array] | None = None,
    check: Callable[[Mapping[str, Any], int], str | None] | None = None,
    surrogate: Callable[..., Any] | None = None,
    replace: bool = False,
) -> RuleSpec:
    """Register ``fn`` under ``name`` (see :class:`RuleSpec`); returns the entry."""
    if name in NOT_HEBBIAN:
        raise ValueError(f"name: {name!r} is reserved (blocks trained by backprop / frozen)")
    if name in RULES and not replace:
        raise ValueError(f"name: a rule {name!r} is already registered; pass replace=True to replace it")
    spec = RuleSpec(fn, tuple(hyper), given_y, init_state, output_shift, check, surrogate)
    RULES[name] = spec
    return spec


def _sparse_topk(params, activations, state, *, axis_name=None, **kwargs):
    updates, new = sparse_topk(params, activations, SparseTopKState(**state), axis_name=axis_name, **kwargs)
    return updates, new._asdict()


def _in_range(name: str, low: int, high_name: str = "channels"):
    def check(hyper: Mapping[str, Any], num_neurons: int) -> str | None:
        value = hyper[name]
        if isinstance(value, int) and low <= value <= num_neurons:
            return None
        return f"{name}: expected an int with {low} <= {name} <= {high_name} ({num_neurons}), got {value!r}"

    return check


def _only(valid: Array | None, y: Array) -> Array:
    """``y`` with the padded samples' rows zeroed: the surrogate losses are sums of terms in ``y``
    (and ``y^2``), so those samples then add nothing."""
    return _modulate(y, valid)


def _given_y_surrogate(kind: str):
    def surrogate(params, activations, state, *, axis_name=None, valid=None):
        y = activations.u if activations.y is None else activations.y
        return (lambda p: loss_of_activations(kind, p, activations, _only(valid, y))), state

    return surrogate


def _sparse_topk_surrogate(params, activations, state, *, k, homeostasis_rate, axis_name=None, valid=None):
    y, new = sparse_topk_signal(activations.u, SparseTopKState(**state), k=k, homeostasis_rate=homeostasis_rate,
                                axis_name=axis_name, valid=valid)
    return (lambda p: loss_of_activations("instar", p, activations, _only(valid, y))), new._asdict()


register_rule("hebb", hebb, given_y=True, surrogate=_given_y_surrogate("hebb"))
register_rule("instar", instar, given_y=True, surrogate=_given_y_surrogate("instar"))
register_rule("oja", oja, given_y=True, surrogate=_given_y_surrogate("oja"))
register_rule("softhebb", softhebb, hyper=("t_invert",))
register_rule("soft_wta", soft_wta, hyper=("t_invert",))
register_rule("hard_wta", hard_wta)
register_rule("krotov", krotov, hyper=("rank", "delta"), check=_in_range("rank", 2))
register_rule(
    "sparse_topk",
    _sparse_topk,
    hyper=("k", "homeostasis_rate"),
    init_state=lambda n: {"threshold": jnp.zeros((n,), jnp.float32)},
    output_shift=lambda state: state["threshold"],
    check=_in_range("k", 1),
    surrogate=_sparse_topk_surrogate,
)
