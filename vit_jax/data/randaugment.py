"""RandAugment (Cubuk et al. 2019) over the ops of `vit_jax.data.augment`.

Two flavours, each as its reference implementation draws (docs/augmentation.md has
every magnitude -> argument mapping and where it was checked):

  big_vision `randaug(n, m)` (the TPU EfficientNet / big_vision port, used by the ViT,
    AugReg and "better plain ViT" recipes): n layers, each one op chosen uniformly
    (with replacement) from 16 and always applied at magnitude m out of 10 (m may
    exceed 10: recipes use 15 and 20); fill 128; translations up to 100 px * m / 10,
    cutout squares of side 2 * 40 px * m / 10.
  timm `rand-m9-mstd0.5-inc1` (DeiT): n layers (default 2), each op chosen uniformly
    from 15 (no Cutout; timm erases separately), applied with probability p (default
    0.5), its magnitude drawn per application from N(m, mstd) clipped to
    [0, mmax (default 10)] (mstd > 100: uniform in [0, m]); "inc1" selects the
    variants whose strength increases with magnitude; translations are relative
    (up to 45% of the side at m = 10).

Shapes: `image` uint8 or float32 [H, W, 3] or frames [T, H, W, 3] in [0, 255]; the
result has the same shape and dtype. One draw of ops, magnitudes and signs per call:
a clip passed whole gets the same augmentation on every frame. All draws are
stateless functions of `seed` [2].
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from vit_jax.data import augment
from vit_jax.data import randaugment_policy as policy_lib

# The presets and their settings need no TensorFlow (config validation parses them).
MAX_LEVEL = policy_lib.MAX_LEVEL
Policy = policy_lib.Policy
big_vision_policy = policy_lib.big_vision_policy
timm_policy = policy_lib.timm_policy
scenic_video_policy = policy_lib.scenic_video_policy


# ----------------------------------------------------------------------------------------
# Magnitude -> op. Each entry: (image, level float32 [], sign +-1 [], seed [2], policy)
# -> image. `level` is the (noisy, clipped) magnitude on the 0..10 scale.
# ----------------------------------------------------------------------------------------

OpFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, Policy], tf.Tensor]


def _frac(level):
  return level / MAX_LEVEL


def _trunc(x):
  """Python's int() of a non-negative float, as the references apply it."""
  return tf.floor(x)


def _enhance(level):
  return _frac(level) * 1.8 + 0.1  # [0.1, 1.9]; 1 (identity) at m = 5


def _enhance_increasing(level, sign):
  return tf.maximum(0.1, 1.0 + sign * _frac(level) * 0.9)  # 1 (identity) at m = 0


def _solarize_threshold(level):
  return tf.minimum(256.0, _trunc(_frac(level) * 256.0))


def _posterize_bits(level):
  return _trunc(_frac(level) * 4.0)


def _solarize_add(level, p: Policy):
  add = _trunc(_frac(level) * 110.0)
  return add if p.solarize_add_max is None else tf.minimum(add, p.solarize_add_max)


def _width(image):
  return tf.cast(tf.shape(image)[-2], tf.float32)


def _height(image):
  return tf.cast(tf.shape(image)[-3], tf.float32)


OPS: dict[str, OpFn] = {
    "AutoContrast": lambda x, lv, s, sd, p: augment.autocontrast(x),
    "Equalize": lambda x, lv, s, sd, p: augment.equalize(x),
    "Invert": lambda x, lv, s, sd, p: augment.invert(x),
    "Rotate": lambda x, lv, s, sd, p: augment.rotate(x, s * _frac(lv) * 30.0, p.fill),
    "Posterize": lambda x, lv, s, sd, p: augment.posterize(x, _posterize_bits(lv)),
    "PosterizeIncreasing": lambda x, lv, s, sd, p: augment.posterize(x, 4 - _posterize_bits(lv)),
    "Solarize": lambda x, lv, s, sd, p: augment.solarize(x, _solarize_threshold(lv)),
    "SolarizeIncreasing": lambda x, lv, s, sd, p: augment.solarize(
        x, 256.0 - _solarize_threshold(lv)),
    "SolarizeAdd": lambda x, lv, s, sd, p: augment.solarize_add(x, _solarize_add(lv, p)),
    "Color": lambda x, lv, s, sd, p: augment.color(x, _enhance(lv)),
    "ColorIncreasing": lambda x, lv, s, sd, p: augment.color(x, _enhance_increasing(lv, s)),
    "Contrast": lambda x, lv, s, sd, p: augment.contrast(x, _enhance(lv)),
    "ContrastIncreasing": lambda x, lv, s, sd, p: augment.contrast(x, _enhance_increasing(lv, s)),
    "Brightness": lambda x, lv, s, sd, p: augment.brightness(x, _enhance(lv)),
    "BrightnessIncreasing": lambda x, lv, s, sd, p: augment.brightness(
        x, _enhance_increasing(lv, s)),
    "Sharpness": lambda x, lv, s, sd, p: augment.sharpness(x, _enhance(lv)),
    "SharpnessIncreasing": lambda x, lv, s, sd, p: augment.sharpness(
        x, _enhance_increasing(lv, s)),
    "ShearX": lambda x, lv, s, sd, p: augment.shear_x(x, s * _frac(lv) * 0.3, p.fill),
    "ShearY": lambda x, lv, s, sd, p: augment.shear_y(x, s * _frac(lv) * 0.3, p.fill),
    "TranslateX": lambda x, lv, s, sd, p: augment.translate_x(
        x, s * _frac(lv) * p.translate_pixels, p.fill),
    "TranslateY": lambda x, lv, s, sd, p: augment.translate_y(
        x, s * _frac(lv) * p.translate_pixels, p.fill),
    "TranslateXRel": lambda x, lv, s, sd, p: augment.translate_x(
        x, s * _frac(lv) * p.translate_fraction * _width(x), p.fill),
    "TranslateYRel": lambda x, lv, s, sd, p: augment.translate_y(
        x, s * _frac(lv) * p.translate_fraction * _height(x), p.fill),
    "Cutout": lambda x, lv, s, sd, p: augment.cutout(
        x, _trunc(_frac(lv) * p.cutout_pixels), sd, p.fill),
}
assert set(OPS) == set(policy_lib.ALL_OPS)


def apply_op(name: str, image: tf.Tensor, magnitude, seed: tf.Tensor, policy: Policy,
             sign=1.0) -> tf.Tensor:
  """One named op at `magnitude` (0..10 scale) with the given sign (+1 or -1)."""
  return OPS[name](image, tf.cast(magnitude, tf.float32), tf.cast(sign, tf.float32), seed, policy)


def randaugment(image: tf.Tensor, seed: tf.Tensor, policy: Policy) -> tf.Tensor:
  """`policy.num_layers` random ops applied in sequence (see the module docstring)."""
  layer_seeds = tf.unstack(tf.random.experimental.stateless_split(seed, policy.num_layers))
  for layer_seed in layer_seeds:
    image = _layer(image, layer_seed, policy)
  return image


def _layer(image: tf.Tensor, seed: tf.Tensor, p: Policy) -> tf.Tensor:
  choice_seed, apply_seed, magnitude_seed, sign_seed, op_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 5))
  choice = tf.random.stateless_uniform([], choice_seed, 0, len(p.ops), tf.int32)
  level = tf.constant(float(p.magnitude), tf.float32)
  if p.magnitude_std == float("inf"):
    level = tf.random.stateless_uniform([], magnitude_seed, 0.0, level)
  elif p.magnitude_std > 0:
    level = level + p.magnitude_std * tf.random.stateless_normal([], magnitude_seed)
  if p.magnitude_max is not None:
    level = tf.clip_by_value(level, 0.0, float(p.magnitude_max))
  # The references negate signed arguments (angle, shear, shift) with probability 1/2.
  sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
  branches = [lambda name=name: OPS[name](image, level, sign, op_seed, p) for name in p.ops]

  def augmented():
    return tf.ensure_shape(tf.switch_case(choice, branches), image.shape)

  if p.prob >= 1.0:
    return augmented()
  applied = tf.random.stateless_uniform([], apply_seed) < p.prob
  return tf.cond(applied, augmented, lambda: image)

