"""Preprocessing ops: value ranges, crops, clip sampling, prediction-time consistency."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.sharding import NamedSharding, PartitionSpec

from vit_jax import data
from vit_jax.data import preprocess, video_ops


def _config(**overrides):
  config = data.default_config()
  config.update(overrides)
  return config


def test_value_range_and_mean_std():
  image = tf.constant(np.array([[[0, 128, 255]]], np.uint8))
  out = preprocess.eval_image(image, _config(image_size=1)).numpy()
  np.testing.assert_allclose(out[0, 0], [-1.0, 128 / 127.5 - 1, 1.0], atol=1e-6)
  out = preprocess.eval_image(image, _config(image_size=1, value_range=None,
                                             mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))).numpy()
  np.testing.assert_allclose(out[0, 0], [-2.0, (128 / 255 - 0.5) / 0.5, 0.5], atol=1e-6)


def test_grey_to_rgb_and_resize_small_central_crop():
  image = np.zeros((40, 20, 1), np.uint8)
  image[18:22, 8:12] = 255  # A bright centre.
  out = data.preprocess_for_eval({"image_size": (10, 6), "resize_small": 10}, [image])
  assert out.shape == (1, 10, 6, 3)
  np.testing.assert_array_equal(out[0, ..., 0], out[0, ..., 1])
  assert out[0, 5, 3, 0] > 0.5 and out[0, 0, 0, 0] == -1.0  # Central crop keeps the centre.


def test_bicubic_resize_is_pils_filter_and_stays_in_range():
  # A checkerboard upsampled: bicubic overshoots at the edges (clipped like PIL's uint8) and
  # differs from bilinear; its interior stays close to PIL's bicubic on this hard pattern.
  from PIL import Image  # noqa: PLC0415

  board = (np.indices((8, 8)).sum(0) % 2 * 255).astype(np.uint8)
  rgb = np.repeat(board[..., None], 3, axis=-1)
  cubic = data.preprocess_for_eval({"image_size": 32, "resize_method": "bicubic"}, [rgb])[0]
  linear = data.preprocess_for_eval({"image_size": 32}, [rgb])[0]
  assert cubic.min() >= -1.0 and cubic.max() <= 1.0
  assert np.abs(cubic - linear).max() > 0.05
  pil = np.asarray(Image.fromarray(board).resize((32, 32), Image.BICUBIC), np.float32)
  ours = (cubic[..., 0] + 1) * 127.5
  assert np.abs(ours[8:24, 8:24] - pil[8:24, 8:24]).mean() < 12
  with pytest.raises(ValueError, match=r"resize_method='lanczos'"):
    data.validate(_config(resize_method="lanczos"))


@pytest.mark.parametrize("train_crop", ["inception", "resize", "random_crop"])
def test_train_crops_shape(train_crop):
  image = tf.constant(np.random.default_rng(0).integers(0, 255, (30, 50, 3), np.uint8))
  seed = tf.constant([1, 2], tf.int64)
  out = preprocess.train_image(image, seed, _config(image_size=(12, 14), train_crop=train_crop))
  assert out.shape == (12, 14, 3)
  again = preprocess.train_image(image, seed, _config(image_size=(12, 14), train_crop=train_crop))
  np.testing.assert_array_equal(out, again)  # Stateless: same seed, same crop.


def test_clip_sampling():
  np.testing.assert_array_equal(video_ops.clip_indices(20, 4, 3, 5), [5, 8, 11, 14])
  np.testing.assert_array_equal(video_ops.clip_indices(5, 4, 2, 0), [0, 2, 4, 1])  # Loops.
  np.testing.assert_array_equal(video_ops.even_offsets(20, 4, 2, 3), [0, 6, 13])
  np.testing.assert_array_equal(video_ops.even_offsets(20, 4, 2, 1), [6])
  offsets = {int(video_ops.random_offset(20, 4, 2, tf.constant([s, 0], tf.int64)))
             for s in range(50)}
  assert offsets <= set(range(14)) and len(offsets) > 5


def test_three_crops_cover_the_longer_side():
  video = np.zeros((4, 16, 48, 3), np.uint8)
  video[:, :, :16] = 50
  video[:, :, 16:32] = 150
  video[:, :, 32:] = 250
  views = data.preprocess_for_eval({"image_size": 16, "num_frames": 2, "stride": 1,
                                    "num_test_clips": 2, "num_test_crops": 3}, [video])
  assert views.shape == (1, 6, 2, 16, 16, 3)
  means = (views[0, :, :, :, :, 0].mean(axis=(1, 2, 3)) + 1) * 127.5
  np.testing.assert_allclose(means, [50, 150, 250] * 2, atol=1e-3)


def test_prediction_matches_eval_pipeline(data_dir):
  """preprocess_for_eval on decoded pixels equals what eval_iterator feeds the model."""
  config = _config(data_dir=data_dir, image_size=12, resize_small=14)
  info = data.get_info(config)
  sharding = NamedSharding(jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("d",)),
                           PartitionSpec("d"))
  batch = next(data.eval_iterator(config, global_batch_size=4, sharding=sharding))
  raw = [ex["image"] for ex in tfds.builder("digits", data_dir=data_dir)
         .as_dataset(split="test").take(4).as_numpy_iterator()]
  np.testing.assert_allclose(data.preprocess_for_eval(info.preprocessing, raw),
                             np.asarray(batch["image"]), atol=1e-6)
