"""ViT-Nano/2 trained from scratch on the bundled 8x8 digits: the README's main job.

    python -m vit_jax.main --config configs/vit_digits.py --workdir workdirs/vit_digits

The `digits` dataset (scikit-learn's 1,797 handwritten digits; 1,437 train / 360
test) is prepared on first use into $VIT_JAX_DATA_DIR (default ~/tensorflow_datasets).
Each 8x8 image becomes 16 patches of 2x2 plus a cls token.

Hardware and result: on a 2-core CPU this takes about 2 minutes and reaches
>= 97% test top-1 (see benchmarks/README.md for the measured wall time and accuracy).
"""

import ml_collections

from vit_jax.driver.config import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()
  config.model_name = "ViT-Nano_2"
  config.model.dropout_rate = 0.1
  # The encoder's attention score (vit_jax.models.layers.ATTENTION_SCORES); the
  # attention-family ablation in benchmarks/README.md overrides it on the command line.
  config.model.attention_score = "scaled_dot"

  config.data.dataset = "digits"
  config.data.image_size = 8
  config.data.train_crop = "resize"  # the digits fill the frame; crops cut strokes off
  config.data.flip = False  # a mirrored digit is another symbol
  config.data.shuffle_buffer = 2_000
  config.data.cache = True

  config.batch_size = 128
  config.eval_batch_size = 128
  config.total_steps = 1_500
  config.optimizer.name = "adamw"
  config.optimizer.weight_decay = 0.05
  config.lr.base = 2e-3
  config.lr.warmup_steps = 100
  config.lr.schedule = "cosine"
  config.grad_clip_norm = 1.0
  config.label_smoothing = 0.1

  config.log_every_steps = 100
  config.eval_every_steps = 500
  config.checkpoint.every_steps = 500
  return config
