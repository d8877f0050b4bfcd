"""A tiny ViViT config file for command-line runs of the error-path tests.

    python -m vit_jax.main --config tests/tiny_video_config.py --workdir DIR \
        --config.data.dataset=folder:/videos

ViViT-Mu/4x2 on 16x16 clips of 4 frames: each run compiles and trains in seconds.
"""

import ml_collections

from vit_jax.driver import config as config_lib


def get_config() -> ml_collections.ConfigDict:
  c = config_lib.base_config()
  c.model_name = "ViViT-Mu_4x2"
  c.model.variant = "spatio_temporal"
  c.data.dataset = "moving_digits/tiny"
  c.data.image_size = 16
  c.data.num_frames = 4
  c.data.stride = 2
  c.data.scale_jitter = (1.0, 1.0)
  c.data.flip = False
  c.data.shuffle_buffer = 16
  c.batch_size = 8
  c.eval_batch_size = 8
  c.total_steps = 8
  c.optimizer.name = "adamw"
  c.lr.base = 3e-3
  c.lr.warmup_steps = 2
  c.log_every_steps = 4
  c.eval_every_steps = 0
  c.checkpoint.every_steps = 4
  c.progress_bar = False
  return c
