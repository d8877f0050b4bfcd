"""Fine-tuning demo that runs on a CPU: the vit_digits model at twice the resolution, new head.

    python -m vit_jax.main --config configs/vit_digits.py --workdir workdirs/vit_digits
    python -m vit_jax.main --config configs/vit_digits_finetune.py \
        --workdir workdirs/vit_digits_ft --config.init_from.path=workdirs/vit_digits

Starts from the vit_digits run's latest checkpoint (any format vit_jax.checkpoint reads
works too), feeds the digits upsampled to 16x16 (8x8 = 64 patches instead of 16, so the
4x4 position-embedding grid is resized bilinearly to 8x8, cls row untouched) and starts
from a zero-initialised head (`init_from.reset_head`), then fine-tunes everything with
SGD-momentum as the released recipes do.

Expected: >= 97% test top-1 after 300 steps, about 1-2 minutes on a 2-core CPU.
"""

import ml_collections

from vit_jax.driver.config import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()
  config.model_name = "ViT-Nano_2"
  config.init_from.path = "workdirs/vit_digits"
  config.init_from.reset_head = True

  config.data.dataset = "digits"
  config.data.image_size = 16
  config.data.train_crop = "resize"
  config.data.flip = False
  config.data.shuffle_buffer = 2_000
  config.data.cache = True

  config.batch_size = 128
  config.eval_batch_size = 128
  config.total_steps = 300
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.lr.base = 0.03
  config.lr.warmup_steps = 30
  config.lr.schedule = "cosine"
  config.grad_clip_norm = 1.0

  config.log_every_steps = 50
  config.eval_every_steps = 150
  config.checkpoint.every_steps = 150
  return config
