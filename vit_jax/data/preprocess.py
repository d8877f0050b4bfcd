"""Per-example preprocessing from the data config: raw pixels or bytes -> model inputs.

Output shapes (image_size = (h, w)):
  image, train and eval: float32 [h, w, 3].
  video, train: float32 [num_frames, h, w, 3].
  video, eval: float32 [num_test_clips * num_test_crops, num_frames, h, w, 3], clip-major.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from vit_jax.data import augment, augment_spec, image_ops, randaugment, video_augment, video_ops
from vit_jax.data import config as config_lib


def _method(c: Mapping[str, Any]) -> str:
  # Runs saved before data.resize_method existed resized bilinearly.
  return c.get("resize_method", "bilinear")


def _normalize(image: tf.Tensor, c: Mapping[str, Any]) -> tf.Tensor:
  return image_ops.normalize(image, c["value_range"], c["mean"], c["std"])


def _random_crop_source_size(c: Mapping[str, Any]) -> int:
  # Without resize_small, train on crops of an image 256/224 larger, as ImageNet recipes do.
  size = config_lib.image_size(c)
  return c["resize_small"] or round(max(size) * 256 / 224)


def train_image(raw: tf.Tensor, seed: tf.Tensor, c: Mapping[str, Any]) -> tf.Tensor:
  """Encoded or uint8 image -> float32 [h, w, 3], randomly cropped and flipped."""
  size = config_lib.image_size(c)
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  image = image_ops.decode(raw)
  if c["train_crop"] == "inception":
    image = image_ops.resize(image_ops.inception_crop(image, crop_seed, c["inception_area"]), size,
                             _method(c))
  elif c["train_crop"] == "random_crop":
    image = image_ops.resize_small(image, _random_crop_source_size(c), _method(c))
    image = image_ops.random_crop(image, size, crop_seed)
  else:
    image = image_ops.resize(image, size, _method(c))
  if c["flip"]:
    image = image_ops.random_flip(image, flip_seed)
  return augment_and_normalize(image, seed, c)


# ----------------------------------------------------------------------------------------
# data.augment: the chain after crop and flip (vit_jax.data.augment_spec parses it).
# Each op gets the seed fold_in(seed, its position), so adding an op at the end leaves
# the draws of the earlier ones unchanged.
# ----------------------------------------------------------------------------------------


def augment_and_normalize(image: tf.Tensor, seed: tf.Tensor, c: Mapping[str, Any]) -> tf.Tensor:
  """Cropped and flipped pixels -> the model input: data.augment's pixel ops, the
  normalisation, then its ops on the normalised image (random_erasing).

  image: [H, W, 3] or a clip [T, H, W, 3] in [0, 255], any H and W (native resolution
  passes each image at its own size); seed: the example's seed, as given to the crop.
  """
  # Folded in rather than split off `seed`, so the crop and flip stay those of a run
  # without data.augment.
  ops = augment_spec.parse(c["augment"])
  augment_seed = tf.random.experimental.stateless_fold_in(seed, 1)
  image = augment_pixels(image, augment_seed, ops)
  return augment_normalized(_normalize(image, c), augment_seed, ops)


_PIXEL_OPS = {
    "randaug": lambda x, seed, kw: randaugment.randaugment(
        x, seed, randaugment.big_vision_policy(kw["num_layers"], kw["magnitude"])),
    "timm_randaug": lambda x, seed, kw: randaugment.randaugment(
        x, seed, randaugment.timm_policy(kw["config"], kw["fill"])),
    "rotate": lambda x, seed, kw: augment.random_rotate(x, kw["max_degrees"], seed, kw["fill"]),
    "translate": lambda x, seed, kw: augment.random_translate(
        x, kw["max_fraction"], seed, kw["fill"]),
    "color_jitter": lambda x, seed, kw: _with_prob(
        x, seed, kw["prob"], lambda x, s: augment.color_jitter(
            x, s, kw["brightness"], kw["contrast"], kw["saturation"], kw["hue"])),
    "three_augment": lambda x, seed, kw: augment.three_augment(x, seed, kw["jitter"]),
}
_PIXEL_OPS.update({  # The video recipes' ops (vit_jax.data.video_augment).
    "video_randaug": lambda x, seed, kw: randaugment.randaugment(
        x, seed, randaugment.scenic_video_policy(kw["num_layers"], kw["magnitude"])),
    "dmvr_color": lambda x, seed, kw: video_augment.dmvr_color(x, seed, **kw),
})
_NORMALIZED_OPS = {
    "random_erasing": lambda x, seed, kw: augment.random_erasing(x, seed, **kw),
}
assert set(_PIXEL_OPS) | set(_NORMALIZED_OPS) == set(augment_spec.OPS)
assert set(_NORMALIZED_OPS) == set(augment_spec.POST_NORMALIZE)


def _with_prob(image, seed, prob, op):
  if prob >= 1.0:
    return op(image, seed)
  apply_seed, op_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  return tf.cond(tf.random.stateless_uniform([], apply_seed) < prob,
                 lambda: op(image, op_seed), lambda: image)


def augment_pixels(image: tf.Tensor, seed: tf.Tensor,
                   ops: tuple[tuple[str, dict[str, Any]], ...]) -> tf.Tensor:
  """The pixel ops of a parsed data.augment chain, in order.

  image: float32 or uint8 [H, W, 3] in [0, 255], or a clip [T, H, W, 3], which gets
  the same draws on every frame; the result has image's shape and dtype.
  """
  for position, (name, kwargs) in enumerate(ops):
    if name in _PIXEL_OPS:
      image = _PIXEL_OPS[name](image, tf.random.experimental.stateless_fold_in(seed, position),
                               kwargs)
  return image


def augment_normalized(image: tf.Tensor, seed: tf.Tensor,
                       ops: tuple[tuple[str, dict[str, Any]], ...]) -> tf.Tensor:
  """The ops of the chain that act on the normalised float32 image (random_erasing)."""
  for position, (name, kwargs) in enumerate(ops):
    if name in _NORMALIZED_OPS:
      image = _NORMALIZED_OPS[name](image, tf.random.experimental.stateless_fold_in(seed, position),
                                    kwargs)
  return image


def eval_image(raw: tf.Tensor, c: Mapping[str, Any]) -> tf.Tensor:
  """Encoded or uint8 image -> float32 [h, w, 3]: resize, or resize_small + central crop."""
  size = config_lib.image_size(c)
  image = image_ops.decode(raw)
  if c["resize_small"]:
    image = image_ops.central_crop(image_ops.resize_small(image, c["resize_small"], _method(c)),
                                   size)
  else:
    image = image_ops.resize(image, size, _method(c))
  return _normalize(image, c)


def train_video(video: tf.Tensor, seed: tf.Tensor, c: Mapping[str, Any],
                length: tf.Tensor | None = None) -> tf.Tensor:
  """Video -> float32 [num_frames, h, w, 3]: `train_clip_indices`, then `train_clip`.

  `video` is anything `video_ops.gather_frames` reads; `length` its frame count
  (needed for a file path, else read from the tensor).
  """
  n = video_ops.num_available(video) if length is None else length
  return train_clip(video_ops.gather_frames(video, train_clip_indices(n, seed, c)), seed, c)


def train_clip_indices(length: tf.Tensor, seed: tf.Tensor, c: Mapping[str, Any]) -> tf.Tensor:
  """int32 [num_frames]: the frames of a random clip (random temporal offset) of a video."""
  time_seed = tf.random.experimental.stateless_split(seed, 4)[0]
  offset = video_ops.random_offset(length, c["num_frames"], c["stride"], time_seed)
  return video_ops.clip_indices(length, c["num_frames"], c["stride"], offset)


def train_clip(frames: tf.Tensor, seed: tf.Tensor, c: Mapping[str, Any]) -> tf.Tensor:
  """uint8 [num_frames, H, W, 3] clip -> float32 [num_frames, h, w, 3].

  Resized so that it covers the crop times a random scale in `scale_jitter`,
  randomly cropped and flipped, then `data.augment`; one crop, one flip and one
  draw of every augmentation for all its frames.
  `seed` is the example's seed, as given to `train_clip_indices`.
  """
  size = config_lib.image_size(c)
  _, scale_seed, crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 4))
  scale = tf.random.stateless_uniform([], scale_seed, *c["scale_jitter"])
  frames = image_ops.random_crop(image_ops.resize_to_cover(frames, size, scale, _method(c)),
                                 size, crop_seed)
  if c["flip"]:
    frames = image_ops.random_flip(frames, flip_seed)
  # data.augment on the whole clip: one draw for all its frames (seeded as for images).
  return augment_and_normalize(frames, seed, c)


def eval_video(video: tf.Tensor, c: Mapping[str, Any],
               length: tf.Tensor | None = None) -> tf.Tensor:
  """Video (as in `train_video`) -> float32 [V, num_frames, h, w, 3]: `eval_clip_indices`,
  then `eval_clips`."""
  n = video_ops.num_available(video) if length is None else length
  return eval_clips(video_ops.gather_frames(video, eval_clip_indices(n, c)), c)


def eval_clip_indices(length: tf.Tensor, c: Mapping[str, Any]) -> tf.Tensor:
  """int32 [num_test_clips * num_frames]: evenly spaced clips, clip-major."""
  offsets = video_ops.even_offsets(length, c["num_frames"], c["stride"], c["num_test_clips"])
  return tf.reshape(tf.map_fn(
      lambda o: video_ops.clip_indices(length, c["num_frames"], c["stride"], o), offsets), [-1])


def eval_clips(frames: tf.Tensor, c: Mapping[str, Any]) -> tf.Tensor:
  """uint8 [num_test_clips * num_frames, H, W, 3] -> float32 [V, num_frames, h, w, 3].

  V = num_test_clips * num_test_crops views, clip-major: each clip resized so its
  shorter side is resize_small (default: so it just covers the crop), then the
  centre crop, or with 3 crops the two ends and the centre of the longer side.
  """
  size = config_lib.image_size(c)
  num_clips, num_crops, num_frames = c["num_test_clips"], c["num_test_crops"], c["num_frames"]
  if c["resize_small"]:
    frames = image_ops.resize_small(frames, c["resize_small"], _method(c))
  else:
    frames = image_ops.resize_to_cover(frames, size, method=_method(c))
  if num_crops == 1:
    views = [image_ops.central_crop(frames, size)]
  else:
    h, w = tf.shape(frames)[1], tf.shape(frames)[2]
    # Along the longer side: start, centre, end (as SlowFast / Scenic's 3-crop test).
    along_h = h > w
    views = []
    for fraction in (0.0, 0.5, 1.0):
      top = tf.where(along_h, tf.cast(tf.cast(h - size[0], tf.float32) * fraction, tf.int32),
                     (h - size[0]) // 2)
      left = tf.where(along_h, (w - size[1]) // 2,
                      tf.cast(tf.cast(w - size[1], tf.float32) * fraction, tf.int32))
      views.append(image_ops.crop(frames, top, left, size[0], size[1]))
  views = tf.stack([tf.reshape(v, [num_clips, num_frames, size[0], size[1], 3]) for v in views],
                   axis=1)  # [clips, crops, T, h, w, 3]
  views = tf.reshape(views, [num_clips * num_crops, num_frames, size[0], size[1], 3])
  return _normalize(views, c)
