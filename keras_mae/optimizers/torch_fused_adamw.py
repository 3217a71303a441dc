"""Keras's AdamW update on the torch backend and the CPU as one fused `torch._fused_adamw_` kernel.

Keras's torch AdamW (`keras/src/backend/torch/optimizers/torch_adam.py`) is a
chain of `torch._foreach_*` ops, five of them out of place: each allocates and
writes a temporary the size of the model. On ViT-B's 112M parameters one
update took 280-290 ms against 62-65 ms with torch's fused CPU kernel
(BENCHMARKS.md, "Fused AdamW on torch"), which reads each parameter, gradient
and moment once. `LayerDecayAdamW` (a subclass, so Keras's generic path: a
few ops per variable) gets the same kernel, once per learning-rate multiplier.

Same update as Keras's, not as torch's: Keras adds epsilon to `sqrt(v)` before
the bias correction (`p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`),
torch after it (`... / (sqrt(v / (1 - b2^t)) + eps)`), so the kernel gets
`eps / sqrt(1 - b2^t)`. The decoupled weight decay (`p *= 1 - lr * wd`, before the
update, as Keras) runs in the same kernel, called once for the decayed variables and
once, with `weight_decay=0`, for those of `exclude_from_weight_decay` (per
multiplier `m`, with `lr * m`: the official `param_groups_lrd` decay).
`tests/optimizers/test_optimizers.py` checks weights and moments after several
steps against the plain path.
"""

import math
import types

import keras

from keras_mae.layers.fast_form import on_cpu


def can_fuse(optimizer):
    """True where `fuse_adamw_update` would take effect: torch, the CPU, AdamW without amsgrad.

    AdamW here is `keras.optimizers.AdamW` itself or `LayerDecayAdamW` (each variable's rate scaled, the
    fine-tuning optimizer); other subclasses keep their own update.

    >>> import keras
    >>> can_fuse(keras.optimizers.SGD()) is False
    True
    """
    if keras.backend.backend() != "torch" or not on_cpu():
        return False
    import torch
    from keras.src.backend.torch.optimizers.torch_adamw import AdamW

    from keras_mae.optimizers.layer_decay import LayerDecayAdamW

    return type(optimizer) in (AdamW, LayerDecayAdamW) and not optimizer.amsgrad and hasattr(torch, "_fused_adamw_")


def fuse_adamw_update(optimizer):
    """Makes `optimizer` (an AdamW, see `can_fuse`) update with the fused kernel where `can_fuse(optimizer)`.

    Only the instance's update step changes: its class, config, variables and saved files stay its own, so a
    model saved here loads, and resumes, on every backend.

    Returns:
        bool: whether the fused update is now in use.

    >>> import keras
    >>> optimizer = keras.optimizers.AdamW(1e-3)
    >>> fuse_adamw_update(optimizer) == can_fuse(optimizer)
    True
    """
    if not can_fuse(optimizer):
        return False
    optimizer._backend_update_step = types.MethodType(_fused_update_step, optimizer)
    optimizer._apply_weight_decay = types.MethodType(_no_separate_weight_decay, optimizer)
    return True


def _fused_update_step(self, grads, variables, learning_rate):
    """Replaces the optimizer's `_backend_update_step` (after Keras's clipping and accumulation); float32 variables."""
    import torch

    step = float(keras.ops.convert_to_numpy(self.iterations)) + 1.0  # Keras's `local_step`
    step_tensor = torch.tensor(step, dtype=torch.float32)
    lr = float(keras.ops.convert_to_numpy(learning_rate))
    weight_decay = float(self.weight_decay or 0.0)
    multiplier = getattr(self, "_multiplier", lambda variable: 1.0)  # LayerDecayAdamW's per-variable lr scale
    groups = {}  # (lr multiplier, decayed): Keras's `exclude_from_weight_decay` and layer-wise rates
    for grad, variable in zip(grads, variables):
        key = (multiplier(variable), bool(weight_decay) and self._use_weight_decay(variable))
        groups.setdefault(key, []).append((grad, variable))
    with torch.no_grad():
        for (scale, decayed), group in groups.items():
            indices = [self._get_variable_index(variable) for _, variable in group]
            params = [variable.value for _, variable in group]
            torch._fused_adamw_(
                params,
                [grad.to(param.dtype).contiguous() for (grad, _), param in zip(group, params)],
                [self._momentums[i].value for i in indices],
                [self._velocities[i].value for i in indices],
                [],
                [step_tensor] * len(params),  # read, not incremented, by the kernel
                lr=lr * scale,
                beta1=float(self.beta_1),
                beta2=float(self.beta_2),
                weight_decay=weight_decay if decayed else 0.0,  # p *= 1 - lr * wd first, as Keras's own step
                eps=float(self.epsilon) / math.sqrt(1.0 - float(self.beta_2) ** step),
                amsgrad=False,
                maximize=False,
            )


def _no_separate_weight_decay(self, variables):
    """Keras decays before the update, in a pass of its own; the fused kernel does it in the same pass."""
