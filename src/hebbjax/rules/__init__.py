"""Plasticity rules: pure, jit-compatible functions ``(params, activations) -> updates``.

Build what a rule needs with :func:`observe`, call a rule, post-process with the optax transforms
of :mod:`hebbjax.rules.transforms`, and apply with ``optax.apply_updates``. :data:`RULES` names
every rule for configs; :func:`register_rule` adds your own.
"""

from hebbjax.rules.dopamine import (
    DopamineTable,
    dopamine_from_table,
    dopamine_linear,
    reward_prediction_error,
    three_factor,
)
from hebbjax.rules.hebbian import correlation, hebbian_update, per_neuron_sum
from hebbjax.rules.linear import Activations, Conv, Dense, LinearMap, kernel_of, matmul, observe
from hebbjax.rules.plasticity import (
    SparseTopKState,
    hard_wta,
    hebb,
    instar,
    krotov,
    krotov_signal,
    oja,
    soft_wta,
    soft_wta_signal,
    softhebb,
    softhebb_signal,
    sparse_topk,
    sparse_topk_init,
    sparse_topk_signal,
    topk_binary_signal,
    winner_mask,
)
from hebbjax.rules.registry import NOT_HEBBIAN, RULES, RuleSpec, register_rule
from hebbjax.rules.surrogate import LOSSES, hebb_loss, instar_loss, loss_of_activations, oja_loss
from hebbjax.rules.transforms import (
    burn_in,
    clip_positive,
    mask_weights,
    neuron_norms,
    normalize_weights,
    random_pruning_mask,
    scale_by_max_abs,
    scale_by_norm_dependent_lr,
    skip_nonpositive_neurons,
)

__all__ = [name for name in dir() if not name.startswith("_")]
