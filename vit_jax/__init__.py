"""vit_jax: Vision Transformers (ViT, ViViT) in JAX/Flax.

Entry points:
  vit_jax.models.create_model(name, num_classes=..., **overrides)
"""

__version__ = "0.1.0"
