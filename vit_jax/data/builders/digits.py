"""`digits`: scikit-learn's 1,797 handwritten 8x8 digits as a TFDS image dataset.

The pixels ship with scikit-learn (`sklearn.datasets.load_digits`), so this
builder prepares offline in about a second. Images are stored as uint8 PNGs of
shape [8, 8, 1]: the original 0..16 intensities scaled to 0..255. The split is
fixed: a permutation seeded with 0, the first 1,437 examples for `train` and the
remaining 360 for `test` (every class appears in both).
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

NUM_TRAIN = 1437  # 80% of 1,797; the remaining 360 are the test split.
_SPLIT_SEED = 0


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


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 8x8 handwritten digits (UCI optdigits test set), 10 classes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: seeded 1437/360 train/test split."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="scikit-learn's 1,797 8x8 handwritten digits, intensities scaled to 0..255.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(names=[str(i) for i in range(10)]),
        }),
        supervised_keys=("image", "label"),
        homepage="https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data ships with scikit-learn.
    return {"train": self._generate_examples("train"), "test": self._generate_examples("test")}

  def _generate_examples(self, split):
    images, labels = load_digits_split(split)
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image[..., None], "label": int(label)}
