"""`digits`: scikit-learn's 1,797 handwritten 8x8 digits as a TFDS image dataset.

The pixels ship with scikit-learn (`sklearn.datasets.load_digits`), so this
builder prepares offline in about a second. The split is fixed: a permutation
seeded with 0, the first 1,437 examples for `train` and the remaining 360 for
`test` (every class appears in both). Intensities 0..16 are scaled to 0..255.

Two builder configs:
  `digits` (= `digits/default`): the digits as they are, uint8 PNGs [8, 8, 1].
  `digits/canvas`: what a frame of `moving_digits` shows: the digit upscaled 2x
    (nearest neighbour) at a random position on a black 32x32 canvas, uint8 PNGs
    [32, 32, 1], with the sprite's top-left `position` (y, x). Each train digit is
    placed `train_placements` times (4: 5,748 images), each test digit once (360);
    the positions are seeded, so the splits share no digit image.

The drawing (`upscale`, `draw`) is shared with `moving_digits`, whose frames are
this builder's canvas images moved along a path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

NUM_TRAIN = 1437  # 80% of 1,797; the remaining 360 are the test split.
_SPLIT_SEED = 0
DIGIT_SIZE = 8  # scikit-learn's digits are 8x8


def load_digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
  """The digits of one split, in the builder's fixed order.

  Args:
    split: "train" or "test".

  Returns:
    images: uint8 [N, 8, 8] scaled to 0..255; labels: int64 [N] in 0..9.
  """
  from sklearn.datasets import load_digits  # scikit-learn is slow to import; only here.

  digits = load_digits()
  # 0..16 -> 0..255; 16 * 255 / 16 is exact, intermediate values round to nearest.
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
  labels = digits.target.astype(np.int64)
  order = np.random.RandomState(_SPLIT_SEED).permutation(len(labels))
  index = {"train": order[:NUM_TRAIN], "test": order[NUM_TRAIN:]}[split]
  return images[index], labels[index]


def upscale(digit: np.ndarray, scale: int) -> np.ndarray:
  """Nearest-neighbour upscaling: uint8 [h, w] -> [h * scale, w * scale]."""
  return np.kron(digit, np.ones((scale, scale), np.uint8))


def draw(sprite: np.ndarray, *, xs: Sequence[int], y: int, canvas_size: int) -> np.ndarray:
  """Frames of `sprite` on a black canvas, its left edge at xs[t] in frame t.

  Args:
    sprite: uint8 [h, w].
    xs: x of the sprite's left edge in each of the T frames.
    y: y of the sprite's top edge.
    canvas_size: C.

  Returns:
    uint8 [T, C, C].
  """
  h, w = sprite.shape
  if not (0 <= min(xs) and max(xs) + w <= canvas_size and 0 <= y <= canvas_size - h):
    raise ValueError(f"A {h}x{w} digit at x={min(xs)}..{max(xs)}, y={y} leaves the "
                     f"{canvas_size}x{canvas_size} canvas.")
  frames = np.zeros((len(xs), canvas_size, canvas_size), np.uint8)
  for t, x in enumerate(xs):
    frames[t, y:y + h, x:x + w] = sprite
  return frames


@dataclasses.dataclass(eq=False)
class DigitsConfig(tfds.core.BuilderConfig):
  """Where the digits are drawn.

  Attributes:
    canvas_size: images are canvas_size x canvas_size, one channel; 8 with
      digit_scale 1 is the digit as it is.
    digit_scale: nearest-neighbour upscaling of the 8x8 digits.
    train_placements: images per train digit, each at its own random position
      (the test split places each digit once).
    seed: seeds the positions.
  """

  canvas_size: int = DIGIT_SIZE
  digit_scale: int = 1
  train_placements: int = 1
  seed: int = 0

  @property
  def on_canvas(self) -> bool:
    return self.canvas_size > DIGIT_SIZE * self.digit_scale


def generate_images(config: DigitsConfig, split: str):
  """Yields (key, example) for `split`; deterministic given `config`.

  Example k of the train split shows train digit k // train_placements.
  """
  images, labels = load_digits_split(split)
  placements = config.train_placements if split == "train" else 1
  sprite_size = DIGIT_SIZE * config.digit_scale
  if config.canvas_size < sprite_size:
    raise ValueError(f"canvas_size={config.canvas_size} cannot hold a {sprite_size}px digit: "
                     f"use canvas_size >= {sprite_size}.")
  rng = np.random.default_rng([config.seed, {"train": 0, "test": 1}[split]])
  k = 0
  for image, label in zip(images, labels):
    sprite = upscale(image, config.digit_scale)
    for _ in range(placements):
      example = {"label": int(label)}
      if config.on_canvas:
        y, x = (int(v) for v in rng.integers(0, config.canvas_size - sprite_size + 1, size=2))
        example["position"] = np.array([y, x], np.int32)
        image_out = draw(sprite, xs=[x], y=y, canvas_size=config.canvas_size)[0]
      else:
        image_out = sprite
      yield k, {"image": image_out[..., None], **example}
      k += 1


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 8x8 handwritten digits (UCI optdigits test set), 10 classes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: seeded 1437/360 train/test split."}
  BUILDER_CONFIGS = [
      DigitsConfig(name="default", description="The 8x8 digits; 1437/360 images."),
      DigitsConfig(name="canvas", description="The digit 2x upscaled at a random position on "
                   "a black 32x32 canvas, as in a moving_digits frame; 5748/360 images.",
                   canvas_size=32, digit_scale=2, train_placements=4),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    features = {
        "image": tfds.features.Image(shape=(c.canvas_size, c.canvas_size, 1)),
        "label": tfds.features.ClassLabel(names=[str(i) for i in range(10)]),
    }
    if c.on_canvas:
      features["position"] = tfds.features.Tensor(shape=(2,), dtype=np.int32)  # (y, x)
    return self.dataset_info_from_configs(
        description="scikit-learn's 1,797 8x8 handwritten digits, intensities scaled to 0..255.",
        features=tfds.features.FeaturesDict(features),
        supervised_keys=("image", "label"),
        homepage="https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data ships with scikit-learn.
    return {"train": self._generate_examples("train"), "test": self._generate_examples("test")}

  def _generate_examples(self, split):
    yield from generate_images(self.builder_config, split)
