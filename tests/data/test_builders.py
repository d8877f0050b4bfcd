"""The bundled TFDS builders: real prepared datasets read back through TFDS."""

from __future__ import annotations

import collections

import numpy as np
import tensorflow_datasets as tfds

from vit_jax.data.builders import digits, moving_digits


def _numpy(name, data_dir, split):
  return list(tfds.builder(name, data_dir=data_dir).as_dataset(split=split).as_numpy_iterator())


def test_digits_splits_and_pixels(data_dir):
  builder = tfds.builder("digits", data_dir=data_dir)
  assert builder.info.splits["train"].num_examples == 1437
  assert builder.info.splits["test"].num_examples == 360
  assert builder.info.features["label"].names == [str(i) for i in range(10)]
  test = _numpy("digits", data_dir, "test")
  images = np.stack([ex["image"] for ex in test])
  assert images.shape == (360, 8, 8, 1) and images.dtype == np.uint8
  assert images.max() == 255 and images.min() == 0  # 0..16 scaled to 0..255.
  assert set(ex["label"] for ex in test) == set(range(10))


def test_digits_canvas_places_each_split_s_own_digits_on_the_canvas(canvas_data_dir):
  builder = tfds.builder("digits/canvas", data_dir=canvas_data_dir)
  assert builder.info.features["label"].names == [str(i) for i in range(10)]
  sources = {}  # split -> Counter of the 8x8 source digits' bytes, with their labels
  for split, placements in (("train", 4), ("test", 1)):
    examples = _numpy("digits/canvas", canvas_data_dir, split)
    images = np.stack([ex["image"][..., 0] for ex in examples])
    positions = np.stack([ex["position"] for ex in examples])  # [N, 2] (y, x)
    assert images.shape == (placements * len(digits.load_digits_split(split)[1]), 32, 32)
    assert images.dtype == np.uint8
    # Uniform positions: 0..16 in y and in x (the 16x16 sprite touches each edge), all 17^2
    # of them among the 5,748 train images, most among the 360 test ones (~206 expected).
    assert positions.min() == 0 and positions.max() == 16
    assert len(np.unique(positions, axis=0)) >= (289 if split == "train" else 150)
    found = collections.Counter()
    for image, (y, x), ex in zip(images, positions, examples):
      sprite = image[y:y + 16, x:x + 16]
      outside = image.copy()
      outside[y:y + 16, x:x + 16] = 0
      assert not outside.any(), "pixels outside the sprite's square"
      np.testing.assert_array_equal(sprite, digits.upscale(sprite[::2, ::2], 2))
      found[(sprite[::2, ::2].tobytes(), int(ex["label"]))] += 1
    # Each of the split's digits, with its label, `placements` times: no other image.
    split_images, labels = digits.load_digits_split(split)
    expected = collections.Counter(
        {k: placements * n for k, n in collections.Counter(
            (im.tobytes(), int(label)) for im, label in zip(split_images, labels)).items()})
    assert found == expected
    sources[split] = found
  # The splits share no digit image (scikit-learn's 1,797 digits hold no exact duplicate
  # across the seeded split).
  assert not {k[0] for k in sources["train"]} & {k[0] for k in sources["test"]}


def test_moving_digits_tiny_shapes_and_labels(data_dir):
  builder = tfds.builder("moving_digits/tiny", data_dir=data_dir)
  assert builder.info.features["label"].num_classes == 20
  assert builder.info.features["label"].names[:2] == ["0_left", "0_right"]
  clips = _numpy("moving_digits/tiny", data_dir, "test")
  assert len(clips) == 30
  for ex in clips:
    assert ex["video"].shape == (8, 16, 16, 1)
    assert ex["label"] == 2 * ex["digit"] + ex["direction"]
    # The digit's centre of mass moves in the labelled direction.
    columns = ex["video"][..., 0].astype(float).sum(axis=1)  # [T, W]
    centre = (columns * np.arange(16)).sum(1) / columns.sum(1)
    moved = centre[-1] - centre[0]
    assert (moved > 0) if moving_digits.DIRECTIONS[ex["direction"]] == "right" else (moved < 0)


def test_moving_digits_direction_is_invisible_to_frame_averaging():
  digit = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
  kwargs = dict(y=3, num_frames=16, canvas_size=32)
  right = moving_digits.render_clip(digit, start=2, end=21, **kwargs)
  left = moving_digits.render_clip(digit, start=21, end=2, **kwargs)
  assert not np.array_equal(right, left)
  np.testing.assert_array_equal(right, left[::-1])  # Same frames, reversed order ...
  np.testing.assert_array_equal(right.mean(0), left.mean(0))  # ... so equal frame means.


def test_moving_digits_paths_do_not_depend_on_direction():
  """Over the dataset, position statistics of left and right clips agree (no shortcut)."""
  config = moving_digits.MovingDigitsConfig(name="t", num_frames=8, canvas_size=24,
                                            digit_scale=1, digits=(3,), train_size=400,
                                            test_size=2)
  means = {0: [], 1: []}
  for _, ex in moving_digits.generate_clips(config, "train"):
    means[ex["direction"]].append(ex["video"].mean(0)[..., 0])
  left, right = (np.mean(means[d], axis=0) for d in (0, 1))
  # Per-pixel average frames differ only by sampling noise: far below a digit stroke (~100).
  assert np.abs(left - right).max() < 20
