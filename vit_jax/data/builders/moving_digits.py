"""`moving_digits`: a procedural video dataset where the label needs temporal order.

Each clip shows one scikit-learn digit (upscaled by `digit_scale`) sliding
horizontally across a black `canvas_size` x `canvas_size` canvas over
`num_frames` frames. The class is (digit, direction): with 10 digits and the
directions (left, right) there are 20 classes, `label = 2 * digit_index + direction`,
named "3_left", "3_right", ...

The path of a clip is a segment [start, end] of x positions; a right-moving clip
traverses it start -> end and a left-moving one end -> start, so the two visit
exactly the same positions. Their frame average is therefore identical and a
model that averages frames over time cannot beat chance on the direction: it has
to use the order of the frames. For the same reason never train on this data
with horizontal flips (they turn a left-moving clip into a right-moving one);
the input pipeline refuses `flip=True` for it.

Train clips use the digits of the `digits` train split and test clips those of
its test split, so no digit image is shared between the splits. Everything is
seeded by `MovingDigitsConfig.seed`. The default config (16 frames, 32x32,
3,000 + 600 clips) prepares in well under a minute on one CPU core.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from vit_jax.data.builders import digits

DIRECTIONS = ("left", "right")


@dataclasses.dataclass(eq=False)
class MovingDigitsConfig(tfds.core.BuilderConfig):
  """Size of the generated clips and of the splits.

  Attributes:
    num_frames: frames T per clip.
    canvas_size: frames are canvas_size x canvas_size, one channel.
    digit_scale: nearest-neighbour upscaling of the 8x8 digits.
    digits: which digits to use; 2 classes (left, right) per digit.
    train_size: clips in the train split.
    test_size: clips in the test split.
    seed: seeds the choice of digit images, paths and vertical positions.
  """

  num_frames: int = 16
  canvas_size: int = 32
  digit_scale: int = 2
  digits: tuple[int, ...] = tuple(range(10))
  train_size: int = 3000
  test_size: int = 600
  seed: int = 0

  @property
  def num_classes(self) -> int:
    return 2 * len(self.digits)

  @property
  def class_names(self) -> list[str]:
    return [f"{d}_{direction}" for d in self.digits for direction in DIRECTIONS]


def render_clip(digit: np.ndarray, *, start: int, end: int, y: int, num_frames: int,
                canvas_size: int) -> np.ndarray:
  """Renders `digit` moving from x=`start` to x=`end` at height `y`.

  Positions are rounded linear interpolations, so the reversed path (end ->
  start) visits exactly the same positions in reverse order.

  Args:
    digit: uint8 [h, w] sprite.
    start, end: x of the sprite's left edge in the first and the last frame.
    y: y of the sprite's top edge.
    num_frames: T.
    canvas_size: C.

  Returns:
    uint8 [T, C, C].
  """
  # t / (T-1) from both ends: x(t) of the forward path equals x(T-1-t) of the backward one.
  steps = np.arange(num_frames) / max(num_frames - 1, 1)
  xs = np.round(start + (end - start) * steps).astype(int)
  return digits.draw(digit, xs=xs, y=y, canvas_size=canvas_size)


def generate_clips(config: MovingDigitsConfig, split: str):
  """Yields (key, example) for `split`; deterministic given `config`.

  Classes are balanced: clip k has class k % num_classes.
  """
  images, labels = digits.load_digits_split(split)
  size = {"train": config.train_size, "test": config.test_size}[split]
  rng = np.random.default_rng([config.seed, {"train": 0, "test": 1}[split]])
  sprite_size = digits.DIGIT_SIZE * config.digit_scale
  max_x = config.canvas_size - sprite_size
  if max_x < 2:
    raise ValueError(f"canvas_size={config.canvas_size} leaves no room to move a "
                     f"{sprite_size}px digit: use canvas_size >= {sprite_size + 2}.")
  by_digit = {d: np.flatnonzero(labels == d) for d in config.digits}
  for k in range(size):
    label = k % config.num_classes
    digit_index, direction = divmod(label, 2)
    digit = config.digits[digit_index]
    sprite = images[rng.choice(by_digit[digit])]
    sprite = digits.upscale(sprite, config.digit_scale)
    # Travel at least half the free width so the motion is always visible.
    travel = int(rng.integers(max(max_x // 2, 1), max_x + 1))
    left = int(rng.integers(0, max_x - travel + 1))
    y = int(rng.integers(0, config.canvas_size - sprite_size + 1))
    start, end = (left + travel, left) if DIRECTIONS[direction] == "left" else (left, left + travel)
    clip = render_clip(sprite, start=start, end=end, y=y, num_frames=config.num_frames,
                       canvas_size=config.canvas_size)
    yield k, {"video": clip[..., None], "label": label, "digit": digit, "direction": direction}


class MovingDigits(tfds.core.GeneratorBasedBuilder):
  """Digits moving left or right; 2 classes per digit (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      MovingDigitsConfig(name="default", description="16 frames of 32x32, 3000/600 clips."),
      # For tests and quick demos: 30 test clips is not a multiple of common batch sizes.
      MovingDigitsConfig(name="tiny", description="8 frames of 16x16, 80/30 clips.",
                         num_frames=8, canvas_size=16, digit_scale=1, train_size=80,
                         test_size=30),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return self.dataset_info_from_configs(
        description="A digit moving left or right; label = (digit, direction).",
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Video(
                shape=(c.num_frames, c.canvas_size, c.canvas_size, 1), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=c.class_names),
            "digit": tfds.features.ClassLabel(num_classes=10),
            "direction": tfds.features.ClassLabel(names=list(DIRECTIONS)),
        }),
        supervised_keys=("video", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Procedural: nothing to download.
    return {"train": self._generate_examples("train"), "test": self._generate_examples("test")}

  def _generate_examples(self, split):
    yield from generate_clips(self.builder_config, split)
