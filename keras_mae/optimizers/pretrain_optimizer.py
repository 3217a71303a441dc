"""The MAE pretraining AdamW and its weight-decay exclusions (timm `add_weight_decay`)."""

import numbers

import keras

from keras_mae.optimizers.torch_fused_adamw import fuse_adamw_update


def weight_decay_exclusions(model, skip_names=()):
    """Trainable variables that the official MAE code does not weight-decay.

    timm's `optim_factory.add_weight_decay` (called by the official
    `main_pretrain.py`) puts a parameter in the no-decay group when
    `len(param.shape) == 1 or name.endswith(".bias") or name in skip_list`:
    biases and normalisation scales/offsets (LayerNorm, BatchNorm) are not
    decayed, while every weight matrix, conv kernel and >= 2-D token is.

    Pretraining passes no skip list, so `cls_token` and `mask_token`, shaped
    (1, 1, D), ARE decayed there; the sin-cos position embeddings are frozen
    (not trainable), so they are in no optimizer group at all. Fine-tuning
    skips the timm ViT's `no_weight_decay()` = `{"pos_embed", "cls_token"}`:
    pass those as `skip_names`.

    Args:
        model: a built `keras.Model` (or layer).
        skip_names: iterable of str. Variables whose `name` or `path` is in it
            are also excluded. Defaults to `()` (pretraining).

    Returns:
        list of `keras.Variable`, a subset of `model.trainable_variables`.

    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> [v.name for v in weight_decay_exclusions(model)]
    ['bias']
    """
    skip_names = set(skip_names)
    return [
        v
        for v in model.trainable_variables
        if len(v.shape) <= 1
        or v.name == "bias"
        or v.name in skip_names
        or v.path in skip_names
    ]


def make_pretrain_optimizer(
    model,
    learning_rate,
    weight_decay=0.05,
    beta_1=0.9,
    beta_2=0.95,
    gradient_accumulation_steps=None,
    clipnorm=None,
    global_clipnorm=None,
    fused=True,
):
    """`keras.optimizers.AdamW` configured as the official MAE pretraining.

    Official: `torch.optim.AdamW(param_groups, lr, betas=(0.9, 0.95))` with
    weight decay 0.05 on every trainable variable except those of
    `weight_decay_exclusions(model)`. Epsilon is torch's default 1e-8; note
    that Keras adds it to `sqrt(v_hat) * sqrt(1 - beta_2**t)` rather than to
    `sqrt(v_hat)` ("epsilon hat"), a difference only where `sqrt(v)` ~ 1e-8.

    The exclusions are held by the optimizer object, not by its config: an
    optimizer rebuilt from a saved config decays every variable, so rebuild
    it with this function when resuming.

    Args:
        model: a built `keras.Model`; its trainable variables must exist.
        learning_rate: float or `LearningRateSchedule` (e.g.
            `WarmupCosineDecay`).
        weight_decay: float. Decoupled weight decay. Defaults to 0.05.
        beta_1: float. Defaults to 0.9.
        beta_2: float. Defaults to 0.95 (the MAE recipe; torch's default is 0.999).
        gradient_accumulation_steps: int >= 2 or None. Official `accum_iter`.
            Defaults to None.
        clipnorm: float or None. Per-variable gradient-norm clipping (the
            official pretraining does not clip). Defaults to None.
        global_clipnorm: float or None. Clipping of the norm of all gradients
            together, as torch's `clip_grad_norm_` (the official fine-tuning
            `--clip_grad`); exclusive with `clipnorm`. Defaults to None.
        fused: bool. On the torch backend and the CPU, run the update as one
            fused kernel (`torch_fused_adamw`: the same values as Keras's
            update, 4.5x faster on ViT-B); elsewhere it changes nothing.
            Defaults to True.

    Returns:
        a `keras.optimizers.AdamW`, not yet built.

    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> optimizer = make_pretrain_optimizer(model, learning_rate=1.5e-4)
    >>> float(optimizer.beta_2), optimizer.weight_decay
    (0.95, 0.05)
    """
    if not model.trainable_variables:
        raise ValueError(
            f"Model {model.name!r} has no trainable variables yet: build it "
            "(e.g. call it on a batch) before `make_pretrain_optimizer`."
        )
    if isinstance(learning_rate, numbers.Real):
        learning_rate = float(learning_rate)  # Keras rejects Python ints.
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=1e-8,
        gradient_accumulation_steps=gradient_accumulation_steps,
        clipnorm=clipnorm,
        global_clipnorm=global_clipnorm,
    )
    optimizer.exclude_from_weight_decay(var_list=weight_decay_exclusions(model))
    if fused:
        fuse_adamw_update(optimizer)
    return optimizer
