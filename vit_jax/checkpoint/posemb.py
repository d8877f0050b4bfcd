"""Resizing learned position embeddings to a new token grid.

The conventions and their sources: docs/conventions.md, 'Position-embedding resizing'.

The cls row (when present) is kept as is; the grid rows are reshaped to
[gh, gw, D] (row-major: tokens run along the width first, as the patch
embedding flattens [B, gh, gw, D]), resized to the target grid size, and
flattened back. Both methods map the corner tokens onto the corner tokens
(`aligned corners`): target token (i, j) samples the source grid at
(i * (gh - 1) / (gh' - 1), j * (gw - 1) / (gw' - 1)).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.ndimage
from scipy.interpolate import make_interp_spline

from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.models.positions import square_grid

METHODS = ("bilinear", "bicubic")


def _cubic_along(values: np.ndarray, new_size: int, axis: int) -> np.ndarray:
  size = values.shape[axis]
  if size == new_size:
    return values
  if size == 1:
    return np.repeat(values, new_size, axis=axis)
  # Not-a-knot cubic spline: fourth-order accurate up to the border, unlike
  # ndimage's cubic zoom whose mirror boundary makes edge tokens worse than bilinear.
  spline = make_interp_spline(np.linspace(0.0, 1.0, size), values, k=min(3, size - 1),
                              axis=axis)
  return spline(np.linspace(0.0, 1.0, new_size))


def resize_grid(grid: np.ndarray, new_hw: tuple[int, int], method: str = "bilinear") -> np.ndarray:
  """[gh, gw, D] -> [gh', gw', D], in float64.

  bilinear: first-order spline zoom to the target size, as vit_jax's
    `load_pretrained` does (`scipy.ndimage.zoom(..., order=1)`).
  bicubic: tensor-product cubic spline on the same aligned-corner positions.
  """
  if method not in METHODS:
    raise ValueError(f"Unknown posemb resize method {method!r}; choose one of {METHODS}.")
  grid = np.asarray(grid, np.float64)
  (gh, gw, width), (nh, nw) = grid.shape, new_hw
  if (gh, gw) == (nh, nw):
    return grid
  if method == "bilinear":
    # The zoom factor is derived from the target size and ndimage maps output
    # index i to i * (in - 1) / (out - 1), so the sampling depends on the sizes only.
    out = scipy.ndimage.zoom(grid, (nh / gh, nw / gw, 1), order=1)
  else:
    out = _cubic_along(_cubic_along(grid, nh, 0), nw, 1)
  if out.shape != (nh, nw, width):
    raise AssertionError(f"resize produced {out.shape}, expected {(nh, nw, width)}")
  return out


def resize_posemb(posemb: np.ndarray, grid: tuple[int, int], *, num_prefix_tokens: int,
                  source_grid: Optional[tuple[int, int]] = None,
                  method: str = "bilinear") -> np.ndarray:
  """[1, prefix + gh*gw, D] -> [1, prefix + gh'*gw', D], prefix rows untouched.

  The grid names are `adapt`'s: `source_grid` the checkpoint's, `grid` the target.

  Args:
    posemb: the position embedding; its first `num_prefix_tokens` rows belong to the
      prefix tokens (cls, distillation, registers), none with `no_embed_class`.
    grid: target (gh', gw').
    num_prefix_tokens: those rows (`positions.posemb_prefix_rows`).
    source_grid: source (gh, gw); inferred when the grid is square.
    method: "bilinear" (reference) or "bicubic".
  """
  posemb = np.asarray(posemb)
  prefix, tokens = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
  source_grid = tuple(source_grid) if source_grid else square_grid(len(tokens))
  if source_grid[0] * source_grid[1] != len(tokens):
    raise CheckpointError(
        f"pos_embedding has {len(tokens)} grid tokens but source_grid={source_grid} needs "
        f"{source_grid[0] * source_grid[1]}.")
  table = tokens.reshape(source_grid[0], source_grid[1], -1)  # [N, D] -> [gh, gw, D]
  table = resize_grid(table, tuple(grid), method).astype(posemb.dtype)
  tokens = table.reshape(1, grid[0] * grid[1], -1)  # [gh', gw', D] -> [1, N', D]
  return np.concatenate([prefix, tokens], axis=1)
