"""Packed patch sequences (NaViT / NaFlex): images of any size and aspect ratio in one row.

Each image becomes its gh x gw patches (flattened pixels, row-major), and several
images share one sequence of fixed length L; `image_ids` tells them apart (1, 2, ... in
a row, 0 for padding), so attention never crosses images (layers.attention_mask), each
image gets the position embedding of its own grid (positions.posemb_at) and its own pooled
output. A VisionTransformer applied to a `PackedPatches` returns [B, max_images, ...]:
row b's image k is at [b, k - 1] (zeros where a row holds fewer images).

    packed, slots = pack_images([img_a, img_b, img_c], (16, 16), seq_len=256, max_images=4)
    logits = model.apply({"params": params}, packed)   # [num_rows, 4, num_classes]
    logits_b = logits[slots[1]]                        # img_b's
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.struct
import jax
import numpy as np


@flax.struct.dataclass
class PackedPatches:
  """A batch of packed sequences.

  Attributes:
    patches: [B, L, ph * pw * C], each patch's pixels flattened (ph, pw, C) row-major,
      the layout of the patch embedding kernel [ph, pw, C, D].
    image_ids: [B, L] int32: k for the k-th image of the row (from 1), 0 for padding.
    coords: [B, L, 2] int32: (row, col) of the patch in its image's grid.
    grids: [B, L, 2] int32: (gh, gw) of the patch's image (1, 1 for padding).
    max_images: images per row at most (static): the pooled output's second axis.
  """
  patches: jax.Array
  image_ids: jax.Array
  coords: jax.Array
  grids: jax.Array
  max_images: int = flax.struct.field(pytree_node=False, default=1)


def patchify(image: np.ndarray, patch: tuple[int, int]) -> np.ndarray:
  """[H, W, C] -> [gh * gw, ph * pw * C], row-major patches (H, W multiples of the patch)."""
  (h, w, c), (ph, pw) = image.shape, patch
  if h % ph or w % pw or h < ph or w < pw:
    raise ValueError(f"An image of {h}x{w} is not a whole number of {ph}x{pw} patches: "
                     "resize it to a multiple of the patch size first.")
  x = image.reshape(h // ph, ph, w // pw, pw, c).transpose(0, 2, 1, 3, 4)  # [gh, gw, ph, pw, C]
  return x.reshape((h // ph) * (w // pw), ph * pw * c)


def pack_images(images: Sequence[np.ndarray], patch: tuple[int, int], seq_len: int,
                max_images: int) -> tuple[PackedPatches, list[tuple[int, int]]]:
  """Greedy first-fit packing of images (in order) into rows of `seq_len` patches.

  A row takes the next image while it has room for its patches and fewer than
  `max_images` images; every image lands in exactly one row, none is split. An image
  with more patches than `seq_len` is an error naming it.

  Returns:
    (the packed batch, (row, slot) of each image in input order: its pooled output is
    `out[row, slot]`).
  """
  rows: list[list[tuple[int, np.ndarray]]] = []
  for index, image in enumerate(images):
    tokens = patchify(np.asarray(image), patch)
    if len(tokens) > seq_len:
      raise ValueError(f"image {index} ({image.shape[0]}x{image.shape[1]}) has "
                       f"{len(tokens)} patches, more than the sequence length {seq_len}: "
                       "resize it to the patch budget (max_num_patches) first.")
    for row in rows:
      if len(row) < max_images and sum(len(t) for _, t in row) + len(tokens) <= seq_len:
        row.append((index, tokens))
        break
    else:
      rows.append([(index, tokens)])
  dim = patch[0] * patch[1] * np.asarray(images[0]).shape[-1]
  out = PackedPatches(np.zeros((len(rows), seq_len, dim), np.float32),
                      np.zeros((len(rows), seq_len), np.int32),
                      np.zeros((len(rows), seq_len, 2), np.int32),
                      np.ones((len(rows), seq_len, 2), np.int32), max_images)
  slots = [(0, 0)] * len(images)
  for b, row in enumerate(rows):
    start = 0
    for k, (index, tokens) in enumerate(row, start=1):
      slots[index] = (b, k - 1)
      gh, gw = images[index].shape[0] // patch[0], images[index].shape[1] // patch[1]
      stop = start + len(tokens)
      out.patches[b, start:stop] = tokens
      out.image_ids[b, start:stop] = k
      out.coords[b, start:stop] = np.stack(np.divmod(np.arange(len(tokens)), gw), axis=-1)
      out.grids[b, start:stop] = (gh, gw)
      start = stop
  return out, slots
