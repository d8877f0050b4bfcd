"""TensorFlow image preprocessing ops used inside tf.data (and eagerly for prediction).

Every op accepts one image [H, W, C] or a stack of frames [T, H, W, C] and treats
the last three dimensions as height, width, channels; random ops are stateless
and take a seed of shape [2], so a pipeline's output depends only on its seeds.
"""

from __future__ import annotations

import tensorflow as tf

from vit_jax.errors import DataError

# tf.data runs these on CPU; keep TensorFlow away from any accelerator JAX uses.
tf.config.set_visible_devices([], "GPU")


def decode(raw: tf.Tensor) -> tf.Tensor:
  """Encoded bytes (scalar string) or pixels [..., H, W, C] -> uint8 [..., H, W, 3]."""
  if raw.dtype == tf.string:
    return tf.io.decode_image(raw, channels=3, expand_animations=False)
  return to_rgb(raw)


def to_rgb(image: tf.Tensor) -> tf.Tensor:
  """[..., C] with C in {1, 3, 4} -> [..., 3]: grey is repeated, alpha dropped."""
  channels = image.shape[-1]
  if channels == 1:
    return tf.repeat(image, 3, axis=-1)
  if channels == 4:
    return image[..., :3]
  if channels != 3:
    raise DataError(f"Images need 1, 3 or 4 channels, got shape {image.shape}.")
  return image


def _hw(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  shape = tf.shape(image)
  return shape[-3], shape[-2]


def inception_crop(image: tf.Tensor, seed: tf.Tensor, area_range=(0.05, 1.0),
                   aspect_range=(3 / 4, 4 / 3)) -> tf.Tensor:
  """Random crop covering `area_range` of the image with aspect ratio in `aspect_range`.

  As the released ViT pipeline (no bounding boxes, min_object_covered=0).
  """
  h, w = _hw(image)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.stack([h, w, 3]), tf.zeros([0, 0, 4], tf.float32), seed=seed,
      area_range=area_range, aspect_ratio_range=aspect_range, min_object_covered=0.0,
      use_image_if_no_bounding_boxes=True)
  return crop(image, begin[0], begin[1], size[0], size[1])


def crop(image: tf.Tensor, top, left, height, width) -> tf.Tensor:
  return image[..., top:top + height, left:left + width, :]


def central_crop(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
  h, w = _hw(image)
  return crop(image, (h - size[0]) // 2, (w - size[1]) // 2, size[0], size[1])


def random_crop(image: tf.Tensor, size: tuple[int, int], seed: tf.Tensor) -> tf.Tensor:
  h, w = _hw(image)
  tf.debugging.assert_greater_equal(tf.stack([h, w]), tf.constant(size, tf.int32),
                                    message=f"image smaller than the crop {size}")
  top_seed, left_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  top = tf.random.stateless_uniform([], top_seed, 0, h - size[0] + 1, tf.int32)
  left = tf.random.stateless_uniform([], left_seed, 0, w - size[1] + 1, tf.int32)
  return crop(image, top, left, size[0], size[1])


RESIZE_METHODS = ("bilinear", "bicubic")


def resize(image: tf.Tensor, size, method: str = "bilinear",
           antialias: bool = False) -> tf.Tensor:
  """Resize to `size` (height, width); float32 output in the input's range.

  "bicubic" (the filter timm's and most PyTorch checkpoints were evaluated with) can
  overshoot, so its output is clipped to [0, 255] as PIL's uint8 output is.

  antialias: when shrinking, widen the filter by the scale factor, so that every output
  pixel averages all the input pixels it covers (PIL's and torchvision's
  `antialias=True`: a 2x bilinear shrink is the triangle-weighted mean of 4 pixels per
  side). Without it each output pixel reads only its 2 (bilinear) or 4 (bicubic)
  nearest inputs per side, and detail finer than the output grid aliases. A bilinear
  upscale is the same either way (TensorFlow's antialiased bicubic uses another cubic
  kernel: up to ~0.1 of 255 apart). The square pipeline keeps the default False (its
  numbers are those of the released ViT pipelines); native resolution turns it on
  (native.py).
  """
  out = tf.image.resize(image, size, method=method, antialias=antialias)
  return tf.clip_by_value(out, 0.0, 255.0) if method == "bicubic" else out


def resize_small(image: tf.Tensor, smaller_side, method: str = "bilinear") -> tf.Tensor:
  """Resizes so that the shorter side is `smaller_side`, keeping the aspect ratio."""
  h, w = _hw(image)
  scale = tf.cast(smaller_side, tf.float32) / tf.cast(tf.minimum(h, w), tf.float32)
  return resize_to_scale(image, scale, method)


def resize_to_cover(image: tf.Tensor, size: tuple[int, int], scale: float | tf.Tensor = 1.0,
                    method: str = "bilinear"):
  """Keeps the aspect ratio and makes the image cover `size` * `scale` (for a crop of `size`)."""
  h, w = _hw(image)
  h, w = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
  factor = tf.maximum(size[0] / h, size[1] / w) * scale
  return resize_to_scale(image, factor, method)


def resize_to_scale(image: tf.Tensor, factor: tf.Tensor, method: str = "bilinear") -> tf.Tensor:
  h, w = _hw(image)
  # ceil keeps the result at least as large as the crop that follows.
  new_h = tf.cast(tf.math.ceil(tf.cast(h, tf.float32) * factor - 1e-3), tf.int32)
  new_w = tf.cast(tf.math.ceil(tf.cast(w, tf.float32) * factor - 1e-3), tf.int32)
  return resize(image, tf.stack([new_h, new_w]), method)


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Flips left-right with probability 1/2; all frames of a clip together."""
  flip = tf.random.stateless_uniform([], seed) < 0.5
  return tf.cond(flip, lambda: tf.reverse(image, [-2]), lambda: image)


def normalize(image: tf.Tensor, value_range=(-1.0, 1.0), mean=None, std=None) -> tf.Tensor:
  """Pixels in [0, 255] -> value_range linearly, or (x / 255 - mean) / std per channel."""
  image = tf.cast(image, tf.float32)
  if mean is not None:
    return (image / 255.0 - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
  lo, hi = value_range
  return image * ((hi - lo) / 255.0) + lo
