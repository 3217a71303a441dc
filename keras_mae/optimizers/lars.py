"""LARS, as facebookresearch/mae `util/lars.py` (used for linear probing)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mae")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling with heavy-ball momentum.

    [You et al., 2017](https://arxiv.org/abs/1708.03888), in the form of the
    official MAE linear-probe optimizer. For each variable `p` with gradient
    `dp`, if `p.ndim > 1` (not a bias nor a normalisation scale/offset):

        dp = dp + weight_decay * p
        q = trust_coefficient * ||p|| / ||dp||   (1 if either norm is 0)
        dp = dp * q

    then, for every variable, `mu = momentum * mu + dp; p = p - lr * mu`.
    Variables with `ndim <= 1` get neither weight decay nor trust scaling.

    Args:
        learning_rate: float or `LearningRateSchedule`. Defaults to 0.1.
        weight_decay: float. Coupled (L2) weight decay, added to the gradient
            of variables with `ndim > 1` before the trust ratio. Defaults to 0.0.
        momentum: float. Momentum of the heavy-ball buffer. Defaults to 0.9.
        trust_coefficient: float. Scale of the trust ratio. Defaults to 0.001.
        **kwargs: other `keras.optimizers.Optimizer` arguments (`name`,
            `clipnorm`, `gradient_accumulation_steps`, `use_ema`, ...).

    >>> optimizer = LARS(learning_rate=0.1)
    >>> w = keras.Variable([[3.0, 4.0]])
    >>> optimizer.apply([keras.ops.ones((1, 2))], [w])
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(w)[0]]
    [2.9996, 3.9996]
    """

    def __init__(
        self,
        learning_rate=0.1,
        weight_decay=0.0,
        momentum=0.9,
        trust_coefficient=0.001,
        **kwargs,
    ):
        if weight_decay < 0:
            raise ValueError(
                f"`weight_decay` must be >= 0. Received: weight_decay={weight_decay}"
            )
        if not 0.0 <= momentum < 1.0:
            raise ValueError(
                f"`momentum` must be in [0, 1). Received: momentum={momentum}"
            )
        if trust_coefficient <= 0:
            raise ValueError(
                "`trust_coefficient` must be > 0. "
                f"Received: trust_coefficient={trust_coefficient}"
            )
        # `weight_decay` is stored by the base class (so its `get_config`
        # serialises it), but the base class's decoupled decay is switched off
        # in `_apply_weight_decay` below: LARS's decay is coupled (added to the
        # gradient, before the trust ratio) and only for ndim > 1 variables.
        super().__init__(
            learning_rate=learning_rate, weight_decay=weight_decay, **kwargs
        )
        self.momentum = momentum
        self.trust_coefficient = trust_coefficient

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums = self.add_optimizer_variables(var_list, "momentum")

    def _apply_weight_decay(self, variables):
        # Overrides the decoupled `p -= lr * wd * p` of every backend's base
        # optimizer; the coupled decay happens in `update_step`.
        return

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if len(variable.shape) > 1:  # not a bias / norm gamma or beta
            gradient = gradient + self.weight_decay * variable
            param_norm = ops.sqrt(ops.sum(ops.square(variable)))
            update_norm = ops.sqrt(ops.sum(ops.square(gradient)))
            # The inner `where` uses a safe denominator so that the unused
            # branch never computes 0 / 0.
            safe_update_norm = ops.where(update_norm > 0, update_norm, 1.0)
            q = ops.where(
                param_norm > 0,
                ops.where(
                    update_norm > 0,
                    self.trust_coefficient * param_norm / safe_update_norm,
                    1.0,
                ),
                1.0,
            )
            gradient = gradient * ops.cast(q, variable.dtype)
        mu = self._momentums[self._get_variable_index(variable)]
        self.assign(mu, self.momentum * mu + gradient)
        self.assign_sub(variable, lr * mu)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"momentum": self.momentum, "trust_coefficient": self.trust_coefficient}
        )
        return config
