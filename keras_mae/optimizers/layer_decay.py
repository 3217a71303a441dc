"""Layer-wise learning-rate decay for fine-tuning, as facebookresearch/mae `util/lr_decay.py`."""

import warnings

import keras
from keras import ops


def layer_decay_multipliers(variables, num_layers, layer_decay, layer_id_fn):
    """Learning-rate multiplier of each variable, `layer_decay ** (num_layers + 1 - layer_id)`.

    The official `param_groups_lrd` (BEiT, [Bao et al., 2021](https://arxiv.org/abs/2106.08254))
    gives layer id 0 to `cls_token`, `pos_embed` and `patch_embed.*`, `i + 1`
    to `blocks.{i}.*` and `num_layers + 1` to everything else (`fc_norm`,
    `head`), so the head trains at the full rate and the patch embedding at
    `layer_decay ** (num_layers + 1)`. (The official code's own `num_layers`
    is `len(blocks) + 1`; here `num_layers` is the number of blocks.)

    Args:
        variables: iterable of `keras.Variable`s (their `.path` is used) or of
            path strings.
        num_layers: int. Number of transformer blocks.
        layer_decay: float. Per-layer decay, e.g. 0.75 (0.65 for ViT-B).
        layer_id_fn: callable. `layer_id_fn(path) -> int` in
            `[0, num_layers + 1]`, the ViT naming being owned by the model.

    Returns:
        dict from variable path to float multiplier, for `LayerDecayAdamW`.

    >>> ids = {"patch/kernel": 0, "block_0/kernel": 1, "head/kernel": 2}
    >>> layer_decay_multipliers(ids, 1, 0.5, ids.get)
    {'patch/kernel': 0.25, 'block_0/kernel': 0.5, 'head/kernel': 1.0}
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(
            f"`layer_decay` must be in (0, 1]. Received: layer_decay={layer_decay}"
        )
    multipliers = {}
    for variable in variables:
        path = variable if isinstance(variable, str) else variable.path
        layer_id = int(layer_id_fn(path))
        if not 0 <= layer_id <= num_layers + 1:
            raise ValueError(
                f"`layer_id_fn({path!r})` returned {layer_id}, outside "
                f"[0, num_layers + 1] = [0, {num_layers + 1}]."
            )
        multipliers[path] = float(layer_decay ** (num_layers + 1 - layer_id))
    return multipliers


@keras.saving.register_keras_serializable(package="keras_mae")
class LayerDecayAdamW(keras.optimizers.AdamW):
    """AdamW whose learning rate is scaled per variable (layer-wise lr decay).

    Each variable's Adam step and its decoupled weight decay both use
    `learning_rate * lr_multipliers[variable.path]`, as the official code's
    per-group `lr = lr * lr_scale` with torch's AdamW
    (`p *= 1 - lr_group * wd`). Variables missing from `lr_multipliers` use
    a multiplier of 1. Use `exclude_from_weight_decay` as with `AdamW` (the
    official fine-tuning excludes 1-D variables, `cls_token` and `pos_embed`;
    see `weight_decay_exclusions`).

    Args:
        lr_multipliers: dict from `variable.path` to float, e.g. from
            `layer_decay_multipliers`. Defaults to None (all 1).
        **kwargs: `keras.optimizers.AdamW` arguments (`learning_rate`,
            `weight_decay`, `beta_1`, `beta_2`, `epsilon`, ...).

    >>> w = keras.Variable([1.0], name="w")
    >>> optimizer = LayerDecayAdamW(
    ...     lr_multipliers={"w": 0.5}, learning_rate=0.1, weight_decay=0.0
    ... )
    >>> optimizer.apply([keras.ops.ones((1,))], [w])
    >>> round(float(keras.ops.convert_to_numpy(w)[0]), 4)  # Adam's first step is ~lr * 0.5
    0.95
    """

    def __init__(self, lr_multipliers=None, **kwargs):
        super().__init__(**kwargs)
        self.lr_multipliers = {
            str(path): float(m) for path, m in (lr_multipliers or {}).items()
        }
        for path, m in self.lr_multipliers.items():
            if m < 0:
                raise ValueError(
                    f"Learning-rate multipliers must be >= 0. Received: {path!r}: {m}"
                )

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        # Indexed like the optimizer's own slots: on TensorFlow `update_step`
        # receives the raw `tf.Variable`, which has no keras `.path`.
        paths = [variable.path for variable in var_list]
        self._variable_multipliers = [self.lr_multipliers.get(p, 1.0) for p in paths]
        unknown = sorted(set(self.lr_multipliers) - set(paths))
        if unknown:
            warnings.warn(
                f"{len(unknown)} `lr_multipliers` paths match no optimized "
                f"variable (first: {unknown[0]!r}); check `layer_id_fn`'s paths.",
                stacklevel=2,
            )

    def _multiplier(self, variable):
        return self._variable_multipliers[self._get_variable_index(variable)]

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype) * self._multiplier(variable)
        super().update_step(gradient, variable, lr)

    def _apply_weight_decay(self, variables):
        # Replaces every backend's `p -= lr * wd * p` by `p -= lr * m * wd * p`.
        if self.weight_decay is None:
            return
        for variable in variables:
            if self._use_weight_decay(variable):
                lr = ops.cast(self.learning_rate, variable.dtype)
                wd = ops.cast(self.weight_decay, variable.dtype)
                scale = lr * wd * self._multiplier(variable)
                variable.assign(variable - variable * scale)

    def get_config(self):
        config = super().get_config()
        config["lr_multipliers"] = dict(self.lr_multipliers)
        return config
