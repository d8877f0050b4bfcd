"""ViT-Mu/2 on the bundled 8x8 digits (placeholder until the training driver lands).

    python -m vit_jax.main --config configs/vit_digits.py --workdir workdirs/vit_digits
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model_name = "ViT-Mu_2"
  config.num_classes = 10
  config.batch_size = 8
  config.image_shape = (8, 8, 3)
  config.model = ml_collections.ConfigDict()
  return config
