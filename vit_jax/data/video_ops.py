"""Temporal sampling of clips from videos (TensorFlow ops for tf.data).

A clip is `num_frames` frames taken every `stride` frames, spanning
span = (num_frames - 1) * stride + 1 frames of the video. Videos shorter than
the span are padded by looping: frame indices wrap around modulo the video
length (a 10-frame video sampled with 8 frames, stride 2 gives frames
0 2 4 6 8 0 2 4).
"""

from __future__ import annotations

import tensorflow as tf

from vit_jax.data import image_ops


def span(num_frames: int, stride: int) -> int:
  return (num_frames - 1) * stride + 1


def clip_indices(num_available: tf.Tensor, num_frames: int, stride: int,
                 offset: tf.Tensor) -> tf.Tensor:
  """int32 [num_frames]: offset, offset + stride, ... wrapped modulo the video length."""
  steps = tf.range(num_frames, dtype=tf.int32) * stride
  return tf.math.floormod(tf.cast(offset, tf.int32) + steps, tf.cast(num_available, tf.int32))


def random_offset(num_available: tf.Tensor, num_frames: int, stride: int,
                  seed: tf.Tensor) -> tf.Tensor:
  """A uniformly random start so that the clip fits; 0 when the video is too short."""
  last = tf.maximum(tf.cast(num_available, tf.int32) - span(num_frames, stride), 0)
  return tf.random.stateless_uniform([], seed, 0, last + 1, tf.int32)


def even_offsets(num_available: tf.Tensor, num_frames: int, stride: int,
                 num_clips: int) -> tf.Tensor:
  """int32 [num_clips]: starts evenly spaced from the first to the last possible one."""
  last = tf.maximum(tf.cast(num_available, tf.float32) - span(num_frames, stride), 0.0)
  if num_clips == 1:
    return tf.cast(tf.round(last / 2), tf.int32)[None]  # The central clip.
  return tf.cast(tf.round(tf.linspace(0.0, last, num_clips)), tf.int32)


def num_available(video: tf.Tensor) -> tf.Tensor:
  """Frames in a video given as encoded frames [N] or pixels [N, H, W, C]."""
  return tf.shape(video)[0]


def gather_frames(video: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
  """Frames `indices` of `video`, decoding only those.

  Args:
    video: a video file path (string []), decoded with PyAV up to the last index;
      encoded frames (string [N], as TFDS stores videos); or uint8 [N, H, W, C].
    indices: int32 [K].

  Returns:
    uint8 [K, H, W, 3].
  """
  if video.dtype == tf.string and video.shape.rank == 0:
    from vit_jax.data import folder  # PyAV is only needed for video files.

    frames = tf.numpy_function(folder.read_video_frames, [video, indices], tf.uint8,
                               stateful=False)
    return tf.ensure_shape(frames, [None, None, None, 3])
  frames = tf.gather(video, indices)
  if video.dtype == tf.string:
    return tf.map_fn(image_ops.decode, frames,
                     fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
  return image_ops.to_rgb(frames)
