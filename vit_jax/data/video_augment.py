"""The video recipes' own augmentations (ViViT / Scenic / DMVR), in plain TensorFlow.

    dmvr_color(clip, seed, prob=0.8, drop_prob=0.1)   # the Kinetics colour recipe

Shapes and values as `vit_jax.data.augment`: a clip float32 or uint8 [T, H, W, 3]
(or one image [H, W, 3]) with pixels in [0, 255], returned with the same shape and
dtype. One draw per call: every frame of a clip gets the same factors. Draws are
stateless functions of `seed` [2].

The temporally consistent RandAugment of Scenic's SSv2 / Epic-Kitchens configs is
`randaugment.scenic_video_policy` applied by `vit_jax.data.randaugment` to the
whole clip (data.augment item `video_randaug(2, 20)`).
"""

from __future__ import annotations

import tensorflow as tf

# DMVR processors.color_default_augm, the colour augmentation of the ViViT paper's
# Kinetics recipe (Scenic's augmentation_params.do_color_augment): in this order,
# on pixels in [0, 1].
BRIGHTNESS_DELTA = 32.0 / 255.0
SATURATION_RANGE = (0.6, 1.4)
CONTRAST_RANGE = (0.6, 1.4)
HUE_DELTA = 0.2


def dmvr_color(clip: tf.Tensor, seed: tf.Tensor, prob: float = 0.8,
               drop_prob: float = 0.1) -> tf.Tensor:
  """DMVR's colour augmentation, then colour drop, each the same for all frames.

  With probability `prob`: brightness + U(-32/255, 32/255), saturation x U(0.6, 1.4),
  contrast x U(0.6, 1.4) around each frame's per-channel mean (tf.image's rule, as
  DMVR), hue + U(-0.2, 0.2) turns, then clipped to [0, 1]. Then with probability
  `drop_prob` (independently): grayscale (tf.image.rgb_to_grayscale weights),
  repeated to 3 channels.
  """
  apply_seed, drop_seed, b_seed, s_seed, c_seed, h_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 6))
  x = tf.cast(clip, tf.float32) / 255.0

  def colour(x):
    x = tf.image.stateless_random_brightness(x, BRIGHTNESS_DELTA, b_seed)
    x = tf.image.stateless_random_saturation(x, *SATURATION_RANGE, s_seed)
    x = tf.image.stateless_random_contrast(x, *CONTRAST_RANGE, c_seed)
    x = tf.image.stateless_random_hue(x, HUE_DELTA, h_seed)
    return tf.clip_by_value(x, 0.0, 1.0)

  def drop(x):
    return tf.broadcast_to(tf.image.rgb_to_grayscale(x), tf.shape(x))

  x = tf.cond(tf.random.stateless_uniform([], apply_seed) < prob, lambda: colour(x), lambda: x)
  x = tf.cond(tf.random.stateless_uniform([], drop_seed) < drop_prob, lambda: drop(x), lambda: x)
  x = x * 255.0
  return tf.cast(tf.round(x), tf.uint8) if clip.dtype == tf.uint8 else tf.cast(x, clip.dtype)
