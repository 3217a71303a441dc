"""Optimizers and learning-rate schedules of the MAE recipes."""

from keras_mae.optimizers.lars import LARS
from keras_mae.optimizers.layer_decay import LayerDecayAdamW
from keras_mae.optimizers.layer_decay import layer_decay_multipliers
from keras_mae.optimizers.pretrain_optimizer import make_pretrain_optimizer
from keras_mae.optimizers.pretrain_optimizer import weight_decay_exclusions
from keras_mae.optimizers.schedules import WarmupCosineDecay
from keras_mae.optimizers.torch_fused_adamw import fuse_adamw_update
