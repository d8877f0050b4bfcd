"""The tiny digits config of tests/driver/test_train.py as a config file, for command-line runs.

    python -m vit_jax.main --config tests/tiny_digits_config.py --workdir DIR
    python -m vit_jax.main --config tests/tiny_digits_config.py:native --workdir DIR

VIT_JAX_DATA_DIR points it at the tests' prepared data directory. ":native" trains at
native resolution (NATIVE) with a kNN probe on the packed images' pooled features.
"""

import ml_collections

from vit_jax.driver import config as config_lib

# Native resolution for ViT-Mu/2: a budget of 16 2x2 patches per image (8x8 digits keep
# their size), 2 such images per 40-patch row; a model that packs (resized posemb, gap).
NATIVE = {"model.classifier": "gap", "model.posemb_resize": "bilinear_antialias",
          "data.resolution_mode": "native", "data.max_num_patches": 16, "data.seq_len": 40,
          "data.max_images_per_row": 4}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
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
  if arg == "native":
    c.update_from_flattened_dict(NATIVE)
    c.evals.knn = dict(type="knn", ks=(10,))
  elif arg:
    raise ValueError(f"tests/tiny_digits_config.py:{arg}: use no argument or ':native'.")
  return c
