"""The tiny digits config of tests/driver/test_train.py as a config file, for command-line runs.

    python -m vit_jax.main --config tests/tiny_digits_config.py --workdir DIR

VIT_JAX_DATA_DIR points it at the tests' prepared data directory.
"""

import ml_collections

from vit_jax.driver import config as config_lib


def get_config() -> ml_collections.ConfigDict:
  c = config_lib.base_config()
  c.model_name = "ViT-Mu_2"
  c.data.dataset = "digits"
  c.data.image_size = 8
  c.data.train_crop = "resize"
  c.data.flip = False
  c.data.shuffle_buffer = 500
  c.batch_size = 32
  c.eval_batch_size = 64
  c.total_steps = 24
  c.optimizer.name = "adamw"
  c.lr.base = 1e-2
  c.lr.warmup_steps = 4
  c.log_every_steps = 4
  c.eval_every_steps = 12
  c.checkpoint.every_steps = 12
  c.progress_bar = False
  return c
