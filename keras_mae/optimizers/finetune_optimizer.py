"""The MAE fine-tuning AdamW: layer-wise lr decay and timm's weight-decay exclusions (`main_finetune.py`)."""

import numbers

from keras_mae.optimizers.layer_decay import LayerDecayAdamW, layer_decay_multipliers
from keras_mae.optimizers.pretrain_optimizer import weight_decay_exclusions
from keras_mae.optimizers.torch_fused_adamw import fuse_adamw_update

# timm VisionTransformer.no_weight_decay(), which the official `param_groups_lrd` also skips.
NO_WEIGHT_DECAY = ("cls_token", "pos_embed")


def make_finetune_optimizer(model, learning_rate, weight_decay=0.05, layer_decay=0.75, beta_1=0.9, beta_2=0.999,
                            gradient_accumulation_steps=None, global_clipnorm=None, fused=True):
    """`LayerDecayAdamW` configured as the official fine-tuning.

    Official: `torch.optim.AdamW(param_groups_lrd(model, wd, no_weight_decay_list, layer_decay), lr)`:
    each variable's lr (and decoupled decay) is scaled by
    `layer_decay ** (num_layers + 1 - model.layer_id(path))` (the head at
    full rate, the patch embedding at `layer_decay ** (num_layers + 1)`);
    biases, norms, `cls_token` and `pos_embed` get no weight decay.

    Args:
        model: a built model with `num_layers` and `layer_id(path)` (`ViTClassifier`).
        learning_rate: float or `LearningRateSchedule`. Peak: blr * batch / 256.
        weight_decay: float. Defaults to 0.05.
        layer_decay: float in (0, 1]. 0.75 (ViT-L/H), 0.65 (ViT-B). Defaults to 0.75.
        beta_1, beta_2: floats. Defaults to torch's (0.9, 0.999).
        gradient_accumulation_steps: int >= 2 or None. Official `accum_iter`.
        global_clipnorm: float or None. Official `--clip_grad` (off by default).
        fused: bool. On the torch backend and the CPU, one fused kernel per lr multiplier
            (`torch_fused_adamw`, the same values); elsewhere it changes nothing. Defaults to True.

    Returns:
        a `LayerDecayAdamW`, not yet built.

    >>> from keras_mae.models import ViTClassifier
    >>> model = ViTClassifier(8, 4, 1, hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32, num_classes=3)
    >>> optimizer = make_finetune_optimizer(model, 1e-3, layer_decay=0.5)
    >>> [optimizer.lr_multipliers[p] for p in ("encoder/patch_embed/projection/kernel", "head/kernel")]
    [0.125, 1.0]
    """
    if isinstance(learning_rate, numbers.Real):
        learning_rate = float(learning_rate)
    variables = model.trainable_variables
    optimizer = LayerDecayAdamW(
        lr_multipliers=layer_decay_multipliers(variables, model.num_layers, layer_decay, model.layer_id),
        learning_rate=learning_rate, weight_decay=weight_decay, beta_1=beta_1, beta_2=beta_2, epsilon=1e-8,
        gradient_accumulation_steps=gradient_accumulation_steps, global_clipnorm=global_clipnorm,
    )
    optimizer.exclude_from_weight_decay(var_list=weight_decay_exclusions(model, skip_names=NO_WEIGHT_DECAY))
    if fused:
        fuse_adamw_update(optimizer)
    return optimizer
