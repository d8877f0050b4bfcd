"""Native resolution inputs (NaViT / SigLIP 2 NaFlex): each image at its own aspect ratio.

`config.data.resolution_mode = "native"`. Per example (tf.data, `train_image` /
`eval_image`): decode -> (training: random resized crop with train_crop="inception")
-> resize with antialias, keeping the aspect ratio, to the largest size of whole patches
with at most `max_num_patches` patches (`target_size`, SigLIP 2's rule) -> (training:
flip, data.augment's pixel ops) -> normalise (-> training: random_erasing): float32
[h, w, 3] with h, w multiples of the patch, h * w / patch area <= max_num_patches.

Per batch (numpy, `Packer`): the B images of a batch (padded to the largest in
tf.data's padded_batch, with their sizes) are patchified, optionally thinned by token
dropping, and packed first-fit (models.packed.pack_patches) into a fixed number of rows:

    {"patches": float32 [R, seq_len, ph * pw * 3], "image_ids": int32 [R, seq_len],
     "coords": int32 [R, seq_len, 2], "grids": int32 [R, seq_len, 2],
     "label": int32 [R, k], "mask": bool [R, k]}
    and in evaluation "position": int32 [R, k]

R = ceil(B / k) rounded up to a multiple of the batch shards, k the images per row
(`images_per_row`); `label[r, j]` is the label of row r's image j + 1 and `mask` marks
the slots that hold an image (padding examples of evaluation, trailing slots and rows:
False); `position[r, j]` is that image's place in this process's batch, from which
feature extraction (vit_jax/evals/features.py) restores the split's order whatever order
the packer chose. The model's output for a PackedPatches is [R, k, ...] in the same
slots, so the loss and metrics are per image, padding weighted 0 (driver/steps.py).

Because k images at the most patches one can keep always fit in a row, every batch of
B images packs into R rows whatever their shapes: the batches keep a fixed number of
images (the meaning of batch_size, exact resume and images/s are those of square
inputs), and evaluation sees every example once, none split across batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from vit_jax.data import config as config_lib
from vit_jax.models import packed as packed_lib

BATCH_KEYS = ("patches", "image_ids", "coords", "grids")


def target_size(height: int, width: int, patch: tuple[int, int],
                max_num_patches: int, eps: float = 1e-5) -> tuple[int, int]:
  """(h, w): the image resized keeping its aspect ratio to at most max_num_patches patches.

  SigLIP 2's processor (transformers `get_image_size_for_max_num_patches`): a binary
  search for the largest scale whose size, each side rounded up to whole patches (at
  least one), has at most `max_num_patches` patches; the same float steps, so the same
  sizes. Small images are scaled up to the budget too.
  """
  ph, pw = patch

  def scaled(scale: float, size: int, p: int) -> int:
    return max(p, math.ceil(size * scale / p) * p)

  lo, hi = eps / 10, 100.0
  while hi - lo >= eps:
    scale = (lo + hi) / 2
    if (scaled(scale, height, ph) / ph) * (scaled(scale, width, pw) / pw) <= max_num_patches:
      lo = scale
    else:
      hi = scale
  return scaled(lo, height, ph), scaled(lo, width, pw)


def max_tokens(c: Mapping[str, Any], train: bool) -> int:
  """The most patches one image keeps: the budget, less what token dropping removes."""
  n = c["max_num_patches"]
  return n - int(c["token_drop_rate"] * n) if train else n


def images_per_row(c: Mapping[str, Any], train: bool) -> int:
  """k: images per row, so that k images of `max_tokens` patches always fit in a row."""
  return min(c["max_images_per_row"], c["seq_len"] // max_tokens(c, train))


def num_rows(c: Mapping[str, Any], num_images: int, train: bool, row_multiple: int = 1,
             num_pieces: int = 1) -> int:
  """Rows for `num_pieces` pieces (shards) of `num_images` images each, packed apart and
  padded to a multiple of `row_multiple`."""
  rows = num_pieces * -(-num_images // images_per_row(c, train))
  return -(-rows // row_multiple) * row_multiple


# ----------------------------------------------------------------------------------------
# Per example (tf.data).
# ----------------------------------------------------------------------------------------
def _resize_to_budget(image, c: Mapping[str, Any]):
  import tensorflow as tf  # noqa: PLC0415 (the packer and target_size need no TensorFlow)

  from vit_jax.data import image_ops  # noqa: PLC0415

  patch, budget = config_lib.patch_size(c), c["max_num_patches"]

  def size_of(hw):
    return np.asarray(target_size(int(hw[0]), int(hw[1]), patch, budget), np.int32)

  size = tf.numpy_function(size_of, [tf.shape(image)[:2]], tf.int32, stateful=False)
  size = tf.ensure_shape(size, [2])
  # Antialiased, as SigLIP 2's processor (torchvision, antialias=True) and timm's
  # NaFlex transforms resize: the budget often shrinks an image several times over,
  # where a plain bilinear resize would alias fine detail (image_ops.resize).
  image = image_ops.resize(image, size, c["resize_method"], antialias=True)
  return tf.ensure_shape(image, [None, None, 3])


def train_image(raw, seed, c: Mapping[str, Any]):
  """Encoded or uint8 image -> float32 [h, w, 3] at the patch budget, cropped, flipped and
  augmented (data.augment).

  The seeds are split as preprocess.train_image splits them.
  """
  import tensorflow as tf  # noqa: PLC0415

  from vit_jax.data import image_ops, preprocess  # noqa: PLC0415

  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  image = image_ops.decode(raw)
  if c["train_crop"] == "inception":
    image = image_ops.inception_crop(image, crop_seed, c["inception_area"])
  image = _resize_to_budget(image, c)
  if c["flip"]:
    image = image_ops.random_flip(image, flip_seed)
  # data.augment after the budget resize, as the square pipeline applies it after its
  # resize: its pixel magnitudes (big_vision's 100 px translations, 40 px cutouts) were
  # tuned for images at the model's input scale, which the budget gives; a resize after
  # the ops would blur them; and they cost at most max_num_patches patches of pixels
  # instead of a full-resolution decode. Every op reads the image's own height and width.
  return preprocess.augment_and_normalize(image, seed, c)


def eval_image(raw, c: Mapping[str, Any]):
  """Encoded or uint8 image -> float32 [h, w, 3]: the whole image at the patch budget."""
  from vit_jax.data import image_ops  # noqa: PLC0415

  image = _resize_to_budget(image_ops.decode(raw), c)
  return image_ops.normalize(image, c["value_range"], c["mean"], c["std"])


# ----------------------------------------------------------------------------------------
# Per batch (numpy).
# ----------------------------------------------------------------------------------------
def keep_patches(num_patches: int, rate: float, seed: np.ndarray) -> np.ndarray:
  """NaViT token dropping: sorted indices of the n - floor(rate * n) patches kept."""
  keep = num_patches - int(rate * num_patches)
  if keep == num_patches:
    return np.arange(num_patches)
  rng = np.random.default_rng([int(s) & 0x7FFFFFFF for s in np.ravel(seed)] + [0x7D])
  return np.sort(rng.choice(num_patches, keep, replace=False))


class Packer:
  """A tf.data batch of images -> a packed batch (the module docstring's layout)."""

  def __init__(self, c: Mapping[str, Any], train: bool):
    self.patch = config_lib.patch_size(c)
    self.seq_len = c["seq_len"]
    self.k = images_per_row(c, train)
    self.drop_rate = c["token_drop_rate"] if train else 0.0
    self.train = train
    self.c = c

  def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """batch: {"image": [B, Hmax, Wmax, 3], "size": [B, 2], "label": [B], and "mask" [B]
    (evaluation) or "seed" [B, 2] (training, for token dropping)}."""
    images, sizes, labels = batch["image"], batch["size"], batch["label"]
    valid = batch["mask"] if "mask" in batch else np.ones(len(labels), bool)
    ph, pw = self.patch
    tokens, coords, grids, kept = [], [], [], []
    for i in np.flatnonzero(valid):
      h, w = sizes[i]
      grid = (int(h) // ph, int(w) // pw)
      t = packed_lib.patchify(images[i, :h, :w], self.patch)
      xy = packed_lib.grid_coords(grid)
      if self.drop_rate:
        keep = keep_patches(len(t), self.drop_rate, batch["seed"][i])
        t, xy = t[keep], xy[keep]
      tokens.append(t)
      coords.append(xy)
      grids.append(grid)
      kept.append(i)
    rows = num_rows(self.c, len(labels), self.train)
    if not tokens:  # an all-padding evaluation batch
      dim = ph * pw * images.shape[-1]
      tokens, coords, grids = [np.zeros((0, dim), np.float32)], [np.zeros((0, 2), np.int32)], [(1, 1)]
    packed, slots = packed_lib.pack_patches(tokens, coords, grids, self.seq_len, self.k,
                                            num_rows=rows)
    label = np.zeros((rows, self.k), np.int32)
    mask = np.zeros((rows, self.k), bool)
    position = np.zeros((rows, self.k), np.int32)
    for i, (r, j) in zip(kept, slots):
      label[r, j] = labels[i]
      mask[r, j] = True
      position[r, j] = i
    out = {"patches": packed.patches, "image_ids": packed.image_ids, "coords": packed.coords,
           "grids": packed.grids, "label": label, "mask": mask}
    return out if self.train else {**out, "position": position}


def pack_shards(shard_batches: list[Iterator[Mapping[str, np.ndarray]]], packer: Packer,
                row_multiple: int) -> Iterator[dict[str, np.ndarray]]:
  """Each shard's batch packed on its own (so they do not depend on the process count),
  the rows concatenated and padded to a multiple of `row_multiple` (this process's
  batch shards)."""
  for pieces in zip(*shard_batches):
    packed = [packer(p) for p in pieces]
    out = {k: np.concatenate([p[k] for p in packed]) for k in packed[0]}
    extra = -len(out["label"]) % row_multiple
    if extra:
      out = {k: np.concatenate([v, _padding_rows(k, v, extra)]) for k, v in out.items()}
    yield out


def _padding_rows(key: str, value: np.ndarray, n: int) -> np.ndarray:
  fill = np.ones if key == "grids" else np.zeros  # grids of padding are (1, 1)
  return fill((n,) + value.shape[1:], value.dtype)


def is_packed(batch: Mapping[str, Any]) -> bool:
  return "patches" in batch


def packed_patches(batch: Mapping[str, Any]) -> packed_lib.PackedPatches:
  """A packed batch's model input; max_images is the label's slots (static under jit)."""
  return packed_lib.PackedPatches(batch["patches"], batch["image_ids"], batch["coords"],
                                  batch["grids"], max_images=batch["label"].shape[1])
