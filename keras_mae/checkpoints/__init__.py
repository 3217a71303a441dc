"""Weights in and out: official facebookresearch/mae, Hugging Face ViTMAE, timm ViT, any image size."""

from keras_mae.checkpoints.auto import load_model
from keras_mae.checkpoints.files import (
    CONFIG_KEY, CheckpointError, model_config, read_state_dict, read_weights, save_official, write_state_dict,
)
from keras_mae.checkpoints.hf import hf_config_to_kwargs, hf_to_official, read_hf_directory
from keras_mae.checkpoints.hf_export import official_to_hf, save_hf
from keras_mae.checkpoints.loading import (
    STANDARD_NUM_HEADS, checkpoint_kind, fit_position_embeddings, infer_config, load_weights_into, read_checkpoint,
)
from keras_mae.checkpoints.official import export_official_weights, load_official_weights, official_variables
from keras_mae.checkpoints.pos_embed import bicubic_resize, is_sincos, resize_pos_embed, source_grid

__all__ = [
    "CONFIG_KEY", "CheckpointError", "STANDARD_NUM_HEADS", "bicubic_resize", "checkpoint_kind",
    "export_official_weights", "fit_position_embeddings", "hf_config_to_kwargs", "hf_to_official", "infer_config",
    "is_sincos", "load_model", "load_official_weights", "load_weights_into", "model_config", "official_to_hf",
    "official_variables", "read_checkpoint", "read_hf_directory", "read_state_dict", "read_weights",
    "resize_pos_embed", "save_hf", "save_official", "source_grid", "write_state_dict",
]
