"""FlexiViT patch-embedding resize (Beyer et al., 2023): PI-resize of the kernel.

Resizing a patch x (p x p) bilinearly to p' x p' is linear, x' = B x with B
[p'^2, p^2]. The new kernel w' should give the same token for the resized
patch: <B x, w'> = <x, w> for every x, i.e. B^T w' = w. Its minimum-norm
least-squares solution w' = pinv(B^T) w is exact when upsampling (p' >= p,
B^T has full row rank) and the best approximation when downsampling.

B is TF's `tf.image.resize(..., "bilinear")` (half-pixel centres, no
antialiasing), which the FlexiViT release uses; it is built here in numpy.
"""

from __future__ import annotations

import numpy as np


def bilinear_matrix_1d(old: int, new: int) -> np.ndarray:
  """[new, old]: half-pixel-centre linear interpolation, edges clamped."""
  mat = np.zeros((new, old))
  src = (np.arange(new) + 0.5) * old / new - 0.5
  src = np.clip(src, 0.0, old - 1)
  low = np.floor(src).astype(int)
  high = np.minimum(low + 1, old - 1)
  frac = src - low
  rows = np.arange(new)
  np.add.at(mat, (rows, low), 1.0 - frac)
  np.add.at(mat, (rows, high), frac)
  return mat


def resize_matrix(old_hw: tuple[int, int], new_hw: tuple[int, int]) -> np.ndarray:
  """[p'h*p'w, ph*pw]: bilinear resize of a row-major flattened (ph, pw) patch."""
  return np.kron(bilinear_matrix_1d(old_hw[0], new_hw[0]),
                 bilinear_matrix_1d(old_hw[1], new_hw[1]))


def resize_patch_kernel(kernel: np.ndarray, new_hw: tuple[int, int]) -> np.ndarray:
  """Patch-embedding kernel [ph, pw, C, D] -> [p'h, p'w, C, D] (PI-resize), in its dtype."""
  kernel = np.asarray(kernel)
  ph, pw, channels, width = kernel.shape
  if (ph, pw) == tuple(new_hw):
    return kernel
  pinv = np.linalg.pinv(resize_matrix((ph, pw), new_hw).T)  # [p'^2, p^2]
  flat = kernel.astype(np.float64).reshape(ph * pw, channels * width)  # [p^2, C*D]
  resized = pinv @ flat  # [p'^2, C*D]
  return resized.reshape(new_hw[0], new_hw[1], channels, width).astype(kernel.dtype)
