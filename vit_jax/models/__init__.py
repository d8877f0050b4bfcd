"""Flax modules (no I/O). Build models with `create_model(name, num_classes=...)`."""

from vit_jax.models.inspection import attention_weights, stack_encoder_weights
from vit_jax.models.layout import is_stacked, stack_layers, unstack_layers
from vit_jax.models.options import EncoderOptions
from vit_jax.models.registry import (
                                     FAMILIES,
                                     VIT_SIZES,
                                     canonical_name,
                                     create_model,
                                     image_size,
                                     list_models,
                                     model_kwargs,
                                     register,
)
from vit_jax.models.vit import VisionTransformer
from vit_jax.models.vivit import VideoTransformer

__all__ = [
    "FAMILIES", "VIT_SIZES", "EncoderOptions", "VideoTransformer", "VisionTransformer", "attention_weights", "canonical_name",
    "create_model", "image_size", "is_stacked", "list_models", "model_kwargs", "register",
    "stack_encoder_weights", "stack_layers", "unstack_layers",
]
