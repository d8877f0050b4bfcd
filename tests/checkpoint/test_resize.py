"""Position-embedding resize and FlexiViT patch-kernel resize, checked against math."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import checkpoint
from vit_jax.checkpoint import patch_resize, posemb

WIDTH = 8
RNG = np.random.default_rng(0)
# Channel c holds f_c(y, x) = sin(a_c y + b_c) cos(c_c x + d_c) on aligned-corner
# positions y = i / (gh - 1), x = j / (gw - 1); a_c != c_c, so a H/W swap shows.
A, B, C, D = (RNG.uniform(0.5, 2.5, WIDTH), RNG.uniform(0, 1, WIDTH),
              RNG.uniform(0.5, 2.5, WIDTH), RNG.uniform(0, 1, WIDTH))


def smooth_grid(gh, gw):
  """[gh, gw, WIDTH] samples of the smooth function."""
  y = np.linspace(0, 1, gh)[:, None, None]
  x = np.linspace(0, 1, gw)[None, :, None]
  return np.sin(A * y + B) * np.cos(C * x + D)


def smooth_posemb(gh, gw, cls_row=True):
  tokens = smooth_grid(gh, gw).reshape(1, gh * gw, WIDTH)  # row-major, as the conv flattens
  if cls_row:
    tokens = np.concatenate([np.full((1, 1, WIDTH), 7.25), tokens], axis=1)
  return tokens.astype(np.float32)


def bilinear_bound(old):
  # Tensor-product linear interpolation: |error| <= hy^2/8 max|f_yy| + hx^2/8 max|f_xx|,
  # with h the source spacing 1/(g-1) and |f_yy| <= a^2, |f_xx| <= c^2. Plus float32 rounding.
  hy, hx = 1 / (old[0] - 1), 1 / (old[1] - 1)
  return hy ** 2 / 8 * A ** 2 + hx ** 2 / 8 * C ** 2 + 1e-6


def bicubic_bound(old):
  # Cubic spline interpolation: |error| <= 5/384 h^4 max|f''''| per axis (|f''''| <= a^4);
  # a factor 2 covers the not-a-knot end conditions. Plus float32 rounding.
  hy, hx = 1 / (old[0] - 1), 1 / (old[1] - 1)
  return 2 * 5 / 384 * (hy ** 4 * A ** 4 + hx ** 4 * C ** 4) + 1e-6


@pytest.mark.parametrize("old,new", [((14, 14), (24, 24)), ((12, 16), (18, 20)),
                                     ((24, 24), (14, 14))])
@pytest.mark.parametrize("method,bound", [("bilinear", bilinear_bound),
                                          ("bicubic", bicubic_bound)])
def test_posemb_resize_matches_the_smooth_function(old, new, method, bound):
  resized = posemb.resize_posemb(smooth_posemb(*old), new, num_prefix_tokens=1, source_grid=old,
                                 method=method)
  assert resized.shape == (1, new[0] * new[1] + 1, WIDTH)
  assert resized.dtype == np.float32
  np.testing.assert_array_equal(resized[:, 0], 7.25)  # cls row untouched
  error = np.abs(resized[0, 1:].reshape(*new, WIDTH) - smooth_grid(*new))
  assert np.all(error.max(axis=(0, 1)) <= bound(old)), (error.max(axis=(0, 1)), bound(old))


def test_bicubic_is_more_accurate_than_bilinear():
  errors = {}
  for method in ("bilinear", "bicubic"):
    out = posemb.resize_posemb(smooth_posemb(14, 14), (24, 24), num_prefix_tokens=1,
                               method=method)
    errors[method] = np.abs(out[0, 1:].reshape(24, 24, WIDTH) - smooth_grid(24, 24)).max()
  assert errors["bicubic"] < errors["bilinear"] / 20


def test_bilinear_is_the_reference_first_order_zoom():
  # vit_jax: scipy.ndimage.zoom(grid, (new/old, new/old, 1), order=1) in float32.
  import scipy.ndimage
  grid = RNG.standard_normal((14, 14, WIDTH)).astype(np.float32)
  posemb_in = np.concatenate([np.zeros((1, 1, WIDTH), np.float32), grid.reshape(1, -1, WIDTH)], 1)
  ours = posemb.resize_posemb(posemb_in, (24, 24), num_prefix_tokens=1)[0, 1:]
  reference = scipy.ndimage.zoom(grid, (24 / 14, 24 / 14, 1), order=1).reshape(-1, WIDTH)
  np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_posemb_without_cls_row_and_square_inference():
  out = posemb.resize_posemb(smooth_posemb(14, 14, cls_row=False), (24, 24),
                             num_prefix_tokens=0)
  error = np.abs(out[0].reshape(24, 24, WIDTH) - smooth_grid(24, 24)).max(axis=(0, 1))
  assert np.all(error <= bilinear_bound((14, 14)))


def test_non_square_posemb_needs_its_grid():
  with pytest.raises(checkpoint.CheckpointError, match="192 grid tokens, which is not a square"):
    posemb.resize_posemb(smooth_posemb(12, 16), (18, 20), num_prefix_tokens=1)


# ------------------------------------------------------------------ FlexiViT


@pytest.mark.parametrize("old,new", [((4, 4), (7, 7)), ((3, 5), (6, 8)), ((8, 8), (5, 6))])
def test_resize_matrix_is_tf_style_bilinear(old, new):
  """B x equals a half-pixel bilinear resize without antialiasing (what FlexiViT uses)."""
  x = RNG.standard_normal(old)
  expected = jax.image.resize(jnp.asarray(x), new, "linear", antialias=False)
  ours = (patch_resize.resize_matrix(old, new) @ x.reshape(-1)).reshape(new)
  np.testing.assert_allclose(ours, np.asarray(expected), atol=1e-5)


@pytest.mark.parametrize("old,new", [((8, 8), (12, 12)), ((4, 4), (6, 8)), ((16, 16), (16, 16))])
def test_flexivit_resized_kernel_gives_the_same_token(old, new):
  """<resize(x), resize_kernel(w)> == <x, w> for any patch x when upsampling (exact)."""
  kernel = RNG.standard_normal((*old, 3, 16)).astype(np.float32)
  patches = RNG.standard_normal((5, *old, 3)).astype(np.float32)
  resized_patches = np.asarray(jax.image.resize(jnp.asarray(patches), (5, *new, 3), "linear",
                                                antialias=False))
  new_kernel = checkpoint.resize_patch_kernel(kernel, new)
  assert new_kernel.shape == (*new, 3, 16) and new_kernel.dtype == np.float32
  tokens = np.einsum("byxc,yxcd->bd", patches.astype(np.float64), kernel)
  new_tokens = np.einsum("byxc,yxcd->bd", resized_patches.astype(np.float64), new_kernel)
  np.testing.assert_allclose(new_tokens, tokens, rtol=1e-4, atol=1e-4 * np.abs(tokens).max())


def test_flexivit_downsampling_is_the_least_squares_fit():
  """Downsampling cannot be exact; the kernel is the least-squares solution of B^T w' = w."""
  kernel = RNG.standard_normal((8, 8, 1, 1))
  new_kernel = checkpoint.resize_patch_kernel(kernel, (5, 5))
  mat = patch_resize.resize_matrix((8, 8), (5, 5))
  residual = mat.T @ new_kernel.reshape(-1) - kernel.reshape(-1)
  # Optimality: the residual is orthogonal to the column space of B^T.
  np.testing.assert_allclose(mat @ residual, 0, atol=1e-9)
