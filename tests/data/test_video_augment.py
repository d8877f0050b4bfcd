"""Video augmentation: the same draw for every frame of a clip, the Kinetics colour recipe,
Scenic's video RandAugment, clip erasing and mixup, through the real pipeline."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from jax.sharding import NamedSharding, PartitionSpec

from vit_jax import data
from vit_jax.data import augment_spec, mixing, preprocess, randaugment, video_augment
from vit_jax.errors import ConfigError


def _clip(seed=0, frames=4, size=(12, 16)):
  """uint8 [T, H, W, 3]: different random frames (so per-frame draws would show)."""
  return np.random.default_rng(seed).integers(0, 256, (frames, *size, 3), dtype=np.uint8)


CHAINS = ["video_randaug(2, 20)", "video_randaug(2, 15)", "randaug(2, 15)",
          "dmvr_color(1.0, 0.5)", "dmvr_color(0.8, 0.1)|video_randaug(2, 20)"]


@pytest.mark.parametrize("chain", CHAINS)
def test_every_frame_transformed_identically(chain):
  """Clip [T, H, W, 3] through the chain == each frame alone with the same seed.

  Per-frame statistics (equalize's histogram, autocontrast's range, contrast's mean)
  are the ops' documented rule; every draw (op, magnitude, sign, angle, box, factors)
  is one per clip.
  """
  ops = augment_spec.parse(chain)
  clip = tf.constant(_clip(), tf.float32)
  changed = 0
  for s in range(6):
    seed = tf.constant([s, 7], tf.int64)
    out = preprocess.augment_pixels(clip, seed, ops).numpy()
    assert out.shape == clip.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255
    for t in range(clip.shape[0]):
      alone = preprocess.augment_pixels(clip[t], seed, ops).numpy()
      np.testing.assert_allclose(out[t], alone, atol=1e-3)
    changed += not np.allclose(out, clip.numpy())
  assert changed >= 4  # The chain does something for most seeds.


def test_identical_frames_stay_identical_and_seed_determines_clip():
  """Five copies of one frame: the crop, colour, RandAugment and erasing box are the same
  for all of them; only the erased box's N(0, 1) noise is fresh per frame."""
  frame = _clip(frames=1)[0]
  clip = tf.constant(np.stack([frame] * 5), tf.float32)
  c = data.config.as_config({
      "image_size": (12, 16), "scale_jitter": (1.0, 1.2), "flip": True,
      "augment": "dmvr_color(0.8, 0.1)|video_randaug(2, 20)|random_erasing(1.0)"})
  outs = [preprocess.train_clip(clip, tf.constant([s, 1], tf.int64), c).numpy() for s in (0, 0, 1)]
  np.testing.assert_array_equal(outs[0], outs[1])  # Deterministic given the seed.
  assert not np.allclose(outs[0], outs[2])
  for out in outs:
    assert out.shape == (5, 12, 16, 3)
    box = np.any(out[1:] != out[:1], axis=-1)  # [4, h, w]: where frames differ from frame 0.
    assert box[0].any() and (box == box[:1]).all()  # One box, the same in every frame.
    np.testing.assert_array_equal(out[:, ~box[0]], np.broadcast_to(out[0, ~box[0]],
                                                                   out[:, ~box[0]].shape))


def test_dmvr_color_known_answers():
  clip = tf.constant(_clip(1), tf.float32)
  seed = tf.constant([3, 4], tf.int64)
  np.testing.assert_array_equal(video_augment.dmvr_color(clip, seed, 0.0, 0.0), clip)
  grey = video_augment.dmvr_color(clip, seed, 0.0, 1.0).numpy()
  expected = tf.image.rgb_to_grayscale(clip / 255.0).numpy() * 255.0
  np.testing.assert_allclose(grey, np.broadcast_to(expected, grey.shape), atol=1e-3)
  # With prob 1 every clip is changed; brightness moves by at most 32 levels on average
  # and the other factors stay within the recipe's ranges: the result is in range.
  outs = [video_augment.dmvr_color(clip, tf.constant([s, 0], tf.int64), 1.0, 0.0).numpy()
          for s in range(8)]
  assert all(not np.allclose(o, clip.numpy()) for o in outs)
  assert all(o.min() >= 0 and o.max() <= 255 for o in outs)
  # uint8 in, uint8 out.
  assert video_augment.dmvr_color(tf.constant(_clip()), seed).dtype == tf.uint8
  # Probability 0.8 / 0.1 over many seeds: about 80% coloured, 10% grey.
  grey_count = 0
  for s in range(200):
    o = video_augment.dmvr_color(clip[:1, :2, :2], tf.constant([s, 9], tf.int64), 0.8, 0.1)
    grey_count += bool(np.allclose(o[..., 0], o[..., 1]) and np.allclose(o[..., 1], o[..., 2]))
  assert 8 <= grey_count <= 35


def test_scenic_video_policy():
  policy = randaugment.scenic_video_policy(2, 20)
  geometric = {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"}
  assert len(policy.ops) == 11 and not set(policy.ops) & geometric and "Cutout" in policy.ops
  assert policy.prob == pytest.approx(11 / 12) and policy.magnitude == 20
  assert augment_spec.parse("video_randaug(2, 15)") == (
      ("video_randaug", {"num_layers": 2, "magnitude": 15.0}),)


@pytest.mark.parametrize("chain, message", [
    ("video_randaug(2, 40)", "magnitude=40 must be in"),
    ("dmvr_color(1.5)", "prob=1.5 must be in"),
    ("dmvr_colour(0.8)", "unknown op 'dmvr_colour'"),
])
def test_bad_video_augment_is_a_config_error(chain, message):
  with pytest.raises(ConfigError, match=message):
    data.config.as_config({"augment": chain})


def test_mixup_mixes_every_frame_with_one_lambda():
  rng = np.random.default_rng(0)
  clips = jnp.asarray(rng.normal(size=(4, 3, 8, 8, 3)), jnp.float32)  # [B, T, H, W, C]
  labels = jax.nn.one_hot(jnp.arange(4), 4)
  out, mixed = mixing.mix(jax.random.key(1), clips, labels, mixup_alpha=0.3)
  lam = float(mixed[0, 0])
  assert 0 < lam < 1
  np.testing.assert_allclose(out, lam * clips + (1 - lam) * clips[::-1], atol=1e-5)


def test_pipeline_trains_on_augmented_clips_and_resumes(data_dir):
  """moving_digits/tiny with the SSv2-style chain: shapes, range and exact resume."""
  config = data.default_config()
  config.update(data_dir=data_dir, dataset="moving_digits/tiny", image_size=16, num_frames=4,
                stride=2, flip=False, prefetch=1, shuffle_buffer=16,
                augment="dmvr_color(0.8, 0.1)|video_randaug(2, 20)|random_erasing(0.25)")
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:2]), ("data",))
  sharding = NamedSharding(mesh, PartitionSpec("data"))
  it = data.train_iterator(config, global_batch_size=8, sharding=sharding, seed=3)
  first, second = next(it), next(it)
  assert first["image"].shape == (8, 4, 16, 16, 3)
  resumed = next(data.train_iterator(config, global_batch_size=8, sharding=sharding, seed=3,
                                     start_step=1))
  np.testing.assert_array_equal(np.asarray(resumed["image"]), np.asarray(second["image"]))
  plain = next(data.train_iterator(dict(config, augment=""), global_batch_size=8,
                                   sharding=sharding, seed=3))
  np.testing.assert_array_equal(plain["label"], first["label"])  # Same clips, other pixels.
  assert not np.allclose(np.asarray(plain["image"]), np.asarray(first["image"]))
