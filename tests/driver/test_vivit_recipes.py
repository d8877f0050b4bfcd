"""configs/vivit_paper.py sets each dataset's Scenic recipe, and its augmentation runs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import load_config
from vit_jax.data import augment_spec, preprocess
from vit_jax.data import config as data_config

# Scenic's ViViT configs (scenic/projects/vivit/configs/*/vivit_*_factorised_encoder.py):
# augmentation_params, mixup.alpha, label_smoothing, stochastic_droplayer_rate.
RECIPES = {
    "k400": ("dmvr_color(0.8, 0.1)", 0.0, 0.0, 0.0),
    "k600": ("dmvr_color(0.8, 0.1)", 0.0, 0.0, 0.0),
    "ssv2": ("video_randaug(2, 20)", 0.3, 0.3, 0.3),
    "epic": ("video_randaug(2, 15)", 0.1, 0.2, 0.2),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_paper_recipe_settings_and_augmentation_run(name):
  augment, mixup, smoothing, drop_path = RECIPES[name]
  c = load_config(f"configs/vivit_paper.py:{name}")
  assert c.data.augment == augment
  assert augment_spec.parse(c.data.augment) == augment_spec.parse(augment)
  assert (c.mixup.mixup_alpha, c.label_smoothing, c.model.stochastic_depth) == (
      mixup, smoothing, drop_path)
  assert c.data.flip == (name != "ssv2")  # SSv2 labels name left and right.
  # The chain on a small clip with the recipe's other data keys: shape and range.
  small = data_config.as_config(dict(c.data.to_dict(), image_size=16, resize_small=None))
  clip = tf.constant(np.random.default_rng(0).integers(0, 256, (3, 20, 24, 3)), tf.uint8)
  out = preprocess.train_clip(clip, tf.constant([0, 1], tf.int64), small).numpy()
  assert out.shape == (3, 16, 16, 3) and -1 <= out.min() and out.max() <= 1
