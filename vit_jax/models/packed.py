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
  tokens, coords, grids = [], [], []
  for image in images:
    image = np.asarray(image)
    grid = (image.shape[0] // patch[0], image.shape[1] // patch[1])
    tokens.append(patchify(image, patch))
    coords.append(grid_coords(grid))
    grids.append(grid)
  return pack_patches(tokens, coords, grids, seq_len, max_images)


def grid_coords(grid: tuple[int, int]) -> np.ndarray:
  """int32 [gh * gw, 2]: (row, col) of each patch of a grid, row-major (patchify's order)."""
  return np.stack(np.divmod(np.arange(grid[0] * grid[1]), grid[1]), axis=-1).astype(np.int32)


def pack_patches(tokens: Sequence[np.ndarray], coords: Sequence[np.ndarray],
                 grids: Sequence[tuple[int, int]], seq_len: int, max_images: int,
                 num_rows: int | None = None) -> tuple[PackedPatches, list[tuple[int, int]]]:
  """The packer behind `pack_images`: images given as their patches, first-fit into rows.

  Args:
    tokens: per image [n_i, ph * pw * C], the patches it keeps (all of `patchify`'s, or a
      subset: NaViT's token dropping keeps each kept patch's own coordinates).
    coords: per image int [n_i, 2], (row, col) of each kept patch in the image's grid.
    grids: per image (gh, gw), the grid its position embedding is resized to.
    seq_len, max_images: the row length and the images per row at most.
    num_rows: a fixed number of rows (trailing rows of padding); an error when the
      images do not fit. None: as many rows as the packing needs.

  Returns:
    (the packed batch, (row, slot) of each image in input order).
  """
  rows: list[list[int]] = []
  used: list[int] = []
  for index, t in enumerate(tokens):
    if len(t) > seq_len:
      gh, gw = grids[index]
      raise ValueError(f"image {index} ({gh}x{gw} patches) has {len(t)} patches, more than "
                       f"the sequence length {seq_len}: resize it to the patch budget "
                       "(max_num_patches) first.")
    for b, row in enumerate(rows):
      if len(row) < max_images and used[b] + len(t) <= seq_len:
        row.append(index)
        used[b] += len(t)
        break
    else:
      rows.append([index])
      used.append(len(t))
  if num_rows is not None and len(rows) > num_rows:
    raise ValueError(f"{len(tokens)} images need {len(rows)} rows of {seq_len} patches, more "
                     f"than the {num_rows} rows of the batch.")
  n = len(rows) if num_rows is None else num_rows
  dim = tokens[0].shape[-1] if len(tokens) else 0
  out = PackedPatches(np.zeros((n, seq_len, dim), np.float32),
                      np.zeros((n, seq_len), np.int32),
                      np.zeros((n, seq_len, 2), np.int32),
                      np.ones((n, seq_len, 2), np.int32), max_images)
  slots = [(0, 0)] * len(tokens)
  for b, row in enumerate(rows):
    start = 0
    for k, index in enumerate(row, start=1):
      slots[index] = (b, k - 1)
      stop = start + len(tokens[index])
      out.patches[b, start:stop] = tokens[index]
      out.image_ids[b, start:stop] = k
      out.coords[b, start:stop] = coords[index]
      out.grids[b, start:stop] = grids[index]
      start = stop
  return out, slots
