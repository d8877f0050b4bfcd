"""Augmentation ops, RandAugment and the data.augment chain: shapes, known answers, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from vit_jax.data import augment, augment_spec, preprocess, randaugment
from vit_jax.data import config as config_lib
from vit_jax.errors import ConfigError

SEED = tf.constant([3, 7], tf.int64)


def _image(h=20, w=24, seed=0):
  return tf.constant(np.random.default_rng(seed).integers(0, 256, (h, w, 3)), tf.uint8)


# Every op with arguments that change the image; each is also run on float and on frames.
OPS = {
    "invert": lambda x: augment.invert(x),
    "solarize": lambda x: augment.solarize(x, 100),
    "solarize_add": lambda x: augment.solarize_add(x, 60),
    "posterize": lambda x: augment.posterize(x, 2),
    "brightness": lambda x: augment.brightness(x, 1.7),
    "color": lambda x: augment.color(x, 0.2),
    "contrast": lambda x: augment.contrast(x, 1.8),
    "sharpness": lambda x: augment.sharpness(x, 1.9),
    "autocontrast": lambda x: augment.autocontrast(x // 2 + 40),
    "equalize": lambda x: augment.equalize(x),
    "grayscale": lambda x: augment.grayscale(x),
    "gaussian_blur": lambda x: augment.gaussian_blur(x, 1.5),
    "rotate": lambda x: augment.rotate(x, 25.0),
    "shear_x": lambda x: augment.shear_x(x, 0.3),
    "shear_y": lambda x: augment.shear_y(x, -0.3),
    "translate_x": lambda x: augment.translate_x(x, 3.0),
    "translate_y": lambda x: augment.translate_y(x, -2.0),
    "cutout": lambda x: augment.cutout(x, 2, SEED),
    "random_rotate": lambda x: augment.random_rotate(x, 20.0, SEED),
    "random_translate": lambda x: augment.random_translate(x, 0.3, SEED),
    "color_jitter": lambda x: augment.color_jitter(x, SEED, 0.4, 0.4, 0.4, 0.1),
    "three_augment": lambda x: augment.three_augment(x, SEED),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_shape_dtype_range_and_frames(name):
  op = OPS[name]
  image = _image()
  out = op(image)
  assert out.shape == image.shape and out.dtype == tf.uint8
  assert not np.array_equal(out.numpy(), image.numpy()), "the op left the image unchanged"
  floats = op(tf.cast(image, tf.float32))
  assert floats.dtype == tf.float32 and floats.shape == image.shape
  assert 0.0 <= float(tf.reduce_min(floats)) and float(tf.reduce_max(floats)) <= 255.0
  # The float path agrees with the uint8 one up to rounding of intermediate values.
  assert np.abs(floats.numpy() - out.numpy()).mean() < 2.0
  # A clip: every frame transformed exactly as the single image (one draw for all).
  clip = tf.stack([image, image, image])
  frames = op(clip)
  assert frames.shape == clip.shape
  for t in range(3):
    np.testing.assert_array_equal(frames[t].numpy(), out.numpy())
  np.testing.assert_array_equal(op(image).numpy(), out.numpy())  # deterministic


def test_identity_at_neutral_arguments():
  image = _image()
  identities = [augment.solarize(image, 256), augment.solarize_add(image, 0),
                augment.posterize(image, 8), augment.brightness(image, 1.0),
                augment.color(image, 1.0), augment.contrast(image, 1.0),
                augment.sharpness(image, 1.0), augment.rotate(image, 0.0),
                augment.shear_x(image, 0.0), augment.shear_y(image, 0.0),
                augment.translate_x(image, 0.0), augment.translate_y(image, 0.0),
                augment.cutout(image, 0, SEED), augment.random_rotate(image, 0.0, SEED),
                augment.random_translate(image, 0.0, SEED),
                augment.color_jitter(image, SEED, 0.0, 0.0, 0.0, 0.0)]
  for out in identities:
    np.testing.assert_array_equal(out.numpy(), image.numpy())


def test_known_answers():
  x = np.zeros((5, 5, 3), np.uint8)
  x[0, :] = 255
  x[1:, 0, 1] = 200
  # Rotation by 90 degrees counter-clockwise (PIL's direction) is np.rot90.
  np.testing.assert_array_equal(augment.rotate(tf.constant(x), 90.0, fill=0).numpy(),
                                np.rot90(x, 1, axes=(0, 1)))
  # Translations by whole pixels move content and fill the uncovered side.
  shifted = augment.translate_x(tf.constant(x), 1.0, fill=(1, 2, 3)).numpy()
  np.testing.assert_array_equal(shifted[:, :4], x[:, 1:])
  np.testing.assert_array_equal(shifted[:, 4], np.tile([[1, 2, 3]], (5, 1)))
  down = augment.translate_y(tf.constant(x), -2.0, fill=0).numpy()
  np.testing.assert_array_equal(down[2:], x[:3])
  assert not down[:2].any()

  ramp = tf.constant(np.tile(np.arange(0, 256, 16, dtype=np.uint8)[:, None, None], (1, 2, 3)))
  values = ramp.numpy()[:, 0, 0]
  sol = augment.solarize(ramp, 128).numpy()[:, 0, 0]
  np.testing.assert_array_equal(sol, np.where(values < 128, values, 255 - values))
  add = augment.solarize_add(ramp, 100).numpy()[:, 0, 0]
  np.testing.assert_array_equal(add, np.where(values < 128, np.minimum(values + 100, 255), values))
  np.testing.assert_array_equal(augment.posterize(ramp, 2).numpy()[:, 0, 0], values & 0xC0)
  np.testing.assert_array_equal(augment.invert(ramp).numpy(), 255 - ramp.numpy())

  # Equalize: 4 equally frequent levels spread over [0, 255] (PIL's rule: step =
  # (1024 - 256) // 255 = 3, level k -> (256 k + 1) // 3, clipped at 255).
  levels = np.repeat(np.array([10, 11, 12, 13], np.uint8), 256).reshape(32, 32)
  eq = augment.equalize(tf.constant(np.stack([levels] * 3, -1))).numpy()[..., 0]
  assert sorted(np.unique(eq)) == [0, 85, 171, 255]
  assert np.array_equal(np.unique(eq, return_counts=True)[1], [256] * 4)
  # Fewer than 256 pixels per channel: PIL's step is 0 and the image is left as it is.
  small = tf.constant(np.stack([levels[:8, :8]] * 3, -1))
  np.testing.assert_array_equal(augment.equalize(small).numpy(), small.numpy())
  # Autocontrast stretches each channel to [0, 255].
  stretched = augment.autocontrast(tf.constant(np.stack([levels] * 3, -1))).numpy()
  assert stretched.min() == 0 and stretched.max() == 255
  # Brightness 0 is black; colour 0 is grey (all channels equal).
  assert not augment.brightness(_image(), 0.0).numpy().any()
  grey = augment.color(_image(), 0.0).numpy()
  np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
  # Contrast 0: every pixel the mean luma.
  assert np.unique(augment.contrast(_image(), 0.0).numpy()).size == 1
  # Cutout: a 4x4 square of fill when it lies inside the image.
  cut = augment.cutout(tf.fill([20, 20, 3], tf.constant(9, tf.uint8)), 2, SEED).numpy()
  assert (cut == 128).all(-1).sum() in range(4, 17)  # clipped at a border: smaller


def test_ops_match_pil():
  from PIL import Image, ImageEnhance, ImageOps

  image = _image(12, 10, seed=1)
  pil = Image.fromarray(image.numpy())
  pairs = [(augment.equalize(image), ImageOps.equalize(pil)),
           (augment.autocontrast(image), ImageOps.autocontrast(pil)),
           (augment.posterize(image, 3), ImageOps.posterize(pil, 3)),
           (augment.solarize(image, 90), ImageOps.solarize(pil, 90)),
           (augment.contrast(image, 0.4), ImageEnhance.Contrast(pil).enhance(0.4)),
           (augment.color(image, 1.6), ImageEnhance.Color(pil).enhance(1.6)),
           (augment.brightness(image, 0.7), ImageEnhance.Brightness(pil).enhance(0.7)),
           (augment.sharpness(image, 0.2), ImageEnhance.Sharpness(pil).enhance(0.2))]
  for ours, theirs in pairs:
    assert np.abs(ours.numpy().astype(int) - np.asarray(theirs).astype(int)).max() <= 1


def test_random_erasing():
  image = tf.zeros([32, 32, 3])
  assert not augment.random_erasing(image, SEED, prob=0.0).numpy().any()
  boxes = []
  for i in range(40):
    out = augment.random_erasing(image, tf.constant([i, 1], tf.int64), prob=1.0).numpy()
    erased = (out != 0).any(-1)
    rows, cols = np.nonzero(erased)
    area = erased.sum()
    # One rectangle, area within [0.02, 1/3] of the image (up to rounding of its sides).
    assert area == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
    assert 0.01 * 1024 <= area <= 0.4 * 1024
    boxes.append(out[erased])
  values = np.concatenate(boxes)
  assert abs(values.mean()) < 0.05 and abs(values.std() - 1.0) < 0.05  # per-pixel N(0, 1)
  const = augment.random_erasing(tf.ones([32, 32, 3]), SEED, prob=1.0, mode="const").numpy()
  assert (const == 0).any() and set(np.unique(const)) == {0.0, 1.0}
  clip = augment.random_erasing(tf.ones([2, 32, 32, 3]), SEED, prob=1.0).numpy()
  np.testing.assert_array_equal(clip[0] == 1, clip[1] == 1)  # one box for every frame


def test_three_augment_is_one_of_three():
  image = _image(16, 16)
  choices = {"grey": augment.grayscale(image).numpy(),
             "solarize": augment.solarize(image, 128).numpy(),
             "blur": None}
  seen = set()
  for i in range(30):
    # With no colour jitter the result is exactly one of the three.
    seed = tf.constant([i, 2], tf.int64)
    out = augment.three_augment(image, seed, jitter=0.0).numpy()
    if np.array_equal(out, choices["grey"]):
      seen.add("grey")
    elif np.array_equal(out, choices["solarize"]):
      seen.add("solarize")
    else:
      # The blur with the sigma three_augment draws (uniform in [0.1, 2]).
      sigma_seed = tf.random.experimental.stateless_split(seed, 3)[1]
      sigma = tf.random.stateless_uniform([], sigma_seed, 0.1, 2.0)
      np.testing.assert_array_equal(out, augment.gaussian_blur(image, sigma).numpy())
      seen.add("blur")
  assert seen == {"grey", "solarize", "blur"}


# ----------------------------------------------------------------------------------------
# RandAugment
# ----------------------------------------------------------------------------------------


def test_every_randaugment_op_at_its_magnitude():
  image = _image(16, 16)
  bv = randaugment.big_vision_policy(2, 10)
  timm = randaugment.timm_policy("rand-m9-mstd0.5-inc1")
  for policy in (bv, timm):
    for name in policy.ops:
      out = randaugment.apply_op(name, image, policy.magnitude, SEED, policy, sign=-1.0)
      assert out.shape == image.shape and out.dtype == tf.uint8, name
  # The magnitude mappings (docs/augmentation.md) on known arguments.
  op = randaugment.apply_op
  np.testing.assert_array_equal(op("Rotate", image, 10, SEED, bv, -1.0),
                                augment.rotate(image, -30.0, 128))
  np.testing.assert_array_equal(op("Posterize", image, 10, SEED, bv), augment.posterize(image, 4))
  np.testing.assert_array_equal(op("PosterizeIncreasing", image, 9, SEED, timm),
                                augment.posterize(image, 1))
  np.testing.assert_array_equal(op("Solarize", image, 5, SEED, bv), augment.solarize(image, 128))
  np.testing.assert_array_equal(op("SolarizeIncreasing", image, 9, SEED, timm),
                                augment.solarize(image, 256 - 230))
  np.testing.assert_array_equal(op("SolarizeAdd", image, 10, SEED, bv),
                                augment.solarize_add(image, 110))
  np.testing.assert_array_equal(op("Color", image, 10, SEED, bv), augment.color(image, 1.9))
  np.testing.assert_array_equal(op("ContrastIncreasing", image, 10, SEED, timm, -1.0),
                                augment.contrast(image, 0.1))
  np.testing.assert_array_equal(op("ShearX", image, 5, SEED, bv), augment.shear_x(image, 0.15))
  np.testing.assert_array_equal(op("TranslateX", image, 1, SEED, bv),
                                augment.translate_x(image, 10.0))
  np.testing.assert_array_equal(op("TranslateYRel", image, 10, SEED, timm, -1.0),
                                augment.translate_y(image, -0.45 * 16))
  np.testing.assert_array_equal(op("Cutout", image, 1, SEED, bv), augment.cutout(image, 4, SEED))
  # Identity at magnitude 0 for the signed and the "increasing" ops.
  for name in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
               "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
               "SharpnessIncreasing", "SolarizeIncreasing", "SolarizeAdd"):
    np.testing.assert_array_equal(op(name, image, 0, SEED, timm), image.numpy(), err_msg=name)


def test_randaugment_seeds_layers_and_frames():
  image = _image(16, 16)
  policy = randaugment.big_vision_policy(2, 15)
  fn = tf.function(lambda x, s: randaugment.randaugment(x, s, policy))
  outs = [fn(image, tf.constant([i, 0], tf.int64)).numpy() for i in range(12)]
  np.testing.assert_array_equal(fn(image, tf.constant([0, 0], tf.int64)).numpy(), outs[0])
  assert len({o.tobytes() for o in outs}) >= 10  # different seeds, different draws
  clip = fn(tf.stack([image] * 4), tf.constant([5, 0], tf.int64)).numpy()
  for t in range(4):  # one draw of ops and magnitudes for every frame
    np.testing.assert_array_equal(clip[t], clip[0])
  # timm's p=0.5: some images pass both layers untouched (probability 1/4).
  timm = randaugment.timm_policy("rand-m9-mstd0.5-inc1")
  unchanged = sum(np.array_equal(randaugment.randaugment(image, tf.constant([i, 1], tf.int64),
                                                         timm).numpy(), image.numpy())
                  for i in range(40))
  assert 3 <= unchanged <= 20
  zero = randaugment.Policy(ops=("Rotate", "ShearX", "TranslateX"), magnitude=0)
  np.testing.assert_array_equal(randaugment.randaugment(image, SEED, zero), image.numpy())


def test_timm_policy_strings():
  p = randaugment.timm_policy("rand-m9-mstd0.5-inc1")
  assert (p.magnitude, p.magnitude_std, p.num_layers, p.prob, p.magnitude_max) == (9, 0.5, 2, 0.5,
                                                                                    10)
  assert p.ops == randaugment.policy_lib.TIMM_INCREASING_OPS and "Cutout" not in p.ops
  p = randaugment.timm_policy("rand-m7-n3-mstd101-p0.3")
  assert (p.magnitude, p.num_layers, p.prob, p.magnitude_std) == (7, 3, 0.3, float("inf"))
  assert p.ops == randaugment.policy_lib.TIMM_OPS
  with pytest.raises(ValueError, match="section 'w0'"):
    randaugment.timm_policy("rand-m9-w0")


# ----------------------------------------------------------------------------------------
# The data.augment chain
# ----------------------------------------------------------------------------------------


def test_augment_spec_parses_strings_and_lists():
  chain = "randaug(2, 15)|timm_randaug('rand-m9-mstd0.5-inc1', fill=(124, 116, 104))"
  ops = augment_spec.parse(chain + "|random_erasing(0.25)")
  assert [n for n, _ in ops] == ["randaug", "timm_randaug", "random_erasing"]
  assert ops[0][1] == {"num_layers": 2, "magnitude": 15.0}
  assert ops[1][1]["fill"] == (124.0, 116.0, 104.0)
  assert augment_spec.parse(["rotate(10, fill=0)", "translate(0.125)"]) == (
      ("rotate", {"max_degrees": 10.0, "fill": 0.0}),
      ("translate", {"max_fraction": 0.125, "fill": 128.0}))
  assert augment_spec.parse("three_augment") == (("three_augment", {"jitter": 0.3}),)
  assert augment_spec.parse("") == ()


@pytest.mark.parametrize("bad, message", [
    ("randaugment(2, 10)", r"unknown op 'randaugment'; valid ops: randaug\(num_layers=2, "),
    ("randaug(2, 10, 5)", r"too many positional arguments; the op is randaug\(num_layers=2"),
    ("rotate(degrees=3)", "unexpected keyword argument 'degrees'"),
    ("randaug(0)", "num_layers=0 must be >= 1"),
    ("random_erasing(1.5)", r"prob=1.5 must be in \[0, 1\]"),
    ("random_erasing(mode='x')", "mode='x' must be"),
    ("translate(0.1, fill=(1, 2))", "fill=.* three of them"),
    ("timm_randaug('rand-m9-q1')", "section 'q1'"),
    ("random_erasing()|randaug()", "random_erasing .* must be the last item"),
    ("inception_crop(224)", "set data.train_crop='inception' instead"),
    ("flip_lr", "set data.flip=True instead"),
    ("randaug(n)", "arguments must be literals"),
    ("randaug(2,", "is not an op call"),
])
def test_augment_spec_errors(bad, message):
  with pytest.raises(ConfigError, match=message):
    config_lib.as_config({"augment": bad})


def test_train_image_applies_the_chain_in_order():
  raw = _image(20, 24)
  plain = config_lib.as_config({"image_size": 16, "flip": True})
  seed = tf.constant([11, 4], tf.int64)
  base = preprocess.train_image(raw, seed, plain).numpy()
  # An op that draws nothing changes nothing else: crop and flip stay those of the plain run.
  same = config_lib.as_config({"image_size": 16, "flip": True, "augment": "random_erasing(0)"})
  np.testing.assert_array_equal(preprocess.train_image(raw, seed, same).numpy(), base)
  erased = config_lib.as_config({"image_size": 16, "flip": True,
                                 "augment": "randaug(2, 10)|random_erasing(1.0)"})
  out = preprocess.train_image(raw, seed, erased).numpy()
  assert out.shape == (16, 16, 3) and out.dtype == np.float32
  # Erasing runs after normalisation: N(0, 1) values outside [-1, 1] appear.
  assert np.abs(out).max() > 1.0 and np.abs(base).max() <= 1.0
  np.testing.assert_array_equal(preprocess.train_image(raw, seed, erased).numpy(), out)


def test_gaussian_blur_known_answers():
  flat = tf.fill([7, 9, 3], 100.0)
  np.testing.assert_allclose(augment.gaussian_blur(flat, 1.7).numpy(), 100.0, rtol=1e-5)
  impulse = np.zeros((15, 15, 3), np.float32)
  impulse[7, 7] = 255.0
  blurred = augment.gaussian_blur(tf.constant(impulse), 1.0).numpy()[..., 0]
  assert abs(blurred.sum() - 255.0) < 1e-2  # nothing lost away from the borders
  # Separable N(0, 1): the ratio of neighbours one pixel apart is exp(-1/2).
  np.testing.assert_allclose(blurred[7, 8] / blurred[7, 7], np.exp(-0.5), rtol=1e-4)


def test_augmented_stream_is_deterministic_and_resumes(data_dir):
  from vit_jax import data
  from vit_jax.data import pipeline, sources

  config = data.default_config()
  config.update(dict(data_dir=data_dir, image_size=8, flip=False, train_crop="resize",
                     shuffle_buffer=100, prefetch=1,
                     augment="randaug(2, 10)|rotate(10, fill=0)|random_erasing(0.5)"))
  source = sources.open_source(config)

  def take(start_step, steps, **overrides):
    c = config.copy_and_resolve_references()
    c.update(overrides)
    ds = pipeline.train_dataset(c, source, local_batch_size=16, seed=5, start_step=start_step,
                                process_index=0, process_count=1)
    return [b["image"] for b in ds.take(steps).as_numpy_iterator()]

  run = take(0, 3)
  for a, b in zip(run[1:], take(1, 2)):
    np.testing.assert_array_equal(a, b)
  plain = take(0, 1, augment="")
  assert not np.array_equal(run[0], plain[0])
