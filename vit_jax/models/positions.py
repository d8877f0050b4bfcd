"""Token positions: prefix rows, patch grids, fixed tables, rotary angles, in-graph resize.

Every question of the form "where is this token?" has its answer here, for the models
and for the checkpoint code that fits position embeddings to them:

  posemb_prefix_rows      rows of a learned position embedding before the patch grid
                          (cls, distillation, registers; 0 with `no_embed_class`)
  prefix_rows_from_params the same, read from a parameter tree alone
  square_grid /           the (gh, gw) patch grid of a row count, and the input size
  grid_from_rows /        in pixels it stands for (patch (h, w), so non-square patches
  input_size_from_rows    give the right size)
  target_grid             the grid of a model given explicitly, from an image size, or
                          from its position embedding's row count
  sincos2d_posemb         the fixed 2-D sin-cos table (MoCo v3 / big_vision)
  rope_coordinates /      rotary angles from per-token (row, col) coordinates, so square
  rope_angles_at /        and non-square grids, video frames and packed sequences of
  rope_angles             several images share one formula; (frame, row, col) for
                          V-JEPA 2's 3-D RoPE (vjepa2_band)
  resize_posemb_grid      a learned grid resized inside the jitted graph (any input size)

Token order everywhere: [cls, dist, registers, patches], patches row-major (the width
runs fastest, as the patch embedding flattens [B, gh, gw, D]).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.errors import CheckpointError
from vit_jax.models.options import EncoderOptions

Array = Union[np.ndarray, jax.Array]


# ---------------------------------------------------------------------------
# Prefix rows and patch grids of a learned position embedding.
# ---------------------------------------------------------------------------

def posemb_prefix_rows(model: Any) -> int:
  """Rows of a model's position embedding before the patch grid (cls, dist, registers).

  `model`: a ViT or ViViT module (its `options` and `classifier`). 0 with
  `no_embed_class` (timm's DeiT III, DINOv2 with registers): only the patches get a row.
  """
  options: EncoderOptions = model.options
  return 0 if options.no_embed_class else options.num_prefix_tokens(model.classifier)


def is_square(n: int) -> bool:
  return n > 0 and math.isqrt(n) ** 2 == n


def prefix_rows_from_params(params: Mapping[str, Any], rows: int) -> int:
  """How many of a position embedding's `rows` belong to prefix tokens, from the params.

  All prefix tokens have a row, unless the model adds the embedding to the patches only
  (`no_embed_class`), which shows as a square row count that the prefix would break
  (e.g. DeiT III's 196 rows with a cls token). A non-square grid of such a model, or a
  square count that stays square without the prefix, is read as having prefix rows:
  pass the grid (adapt's source_grid, inflate_from_image's image_grid) to settle it.
  """
  prefix = int("cls" in params) + int("dist" in params)
  if "registers" in params:
    prefix += int(np.shape(params["registers"])[1])
  if prefix and is_square(rows) and not is_square(rows - prefix):
    return 0
  return prefix


def square_grid(num_tokens: int, what: str = "pos_embedding") -> tuple[int, int]:
  """The (g, g) grid of `num_tokens` grid tokens, or an error asking for the grid."""
  if not is_square(num_tokens):
    raise CheckpointError(
        f"{what} has {num_tokens} grid tokens, which is not a square grid: pass the grid "
        "explicitly (adapt(..., source_grid=(gh, gw)) for the checkpoint, grid=(gh, gw) or "
        "image_size=(H, W) for the model).")
  side = math.isqrt(num_tokens)
  return side, side


def grid_from_rows(rows: int, prefix_rows: int, what: str = "pos_embedding"
                   ) -> tuple[int, int]:
  """The square patch grid of a position embedding of `rows` rows, `prefix_rows` first."""
  if rows < prefix_rows:
    raise CheckpointError(f"{what} has {rows} rows, fewer than its {prefix_rows} prefix rows "
                          "(cls / distillation / register tokens).")
  return square_grid(rows - prefix_rows, what)


def input_size_from_rows(rows: int, prefix_rows: int, patch_size: Union[int, Sequence[int]],
                         what: str = "pos_embedding") -> tuple[int, int]:
  """The input (H, W) in pixels that a position embedding of `rows` rows was made for."""
  ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
  gh, gw = grid_from_rows(rows, prefix_rows, what)
  return gh * ph, gw * pw


def target_grid(grid_tokens: int, patch_hw: tuple[int, int],
                grid: Optional[Sequence[int]] = None,
                image_size: Union[int, Sequence[int], None] = None,
                what: str = "the model's pos_embedding") -> tuple[int, int]:
  """The (gh, gw) of `grid_tokens` patch rows: `grid`, else `image_size` // patch, else
  the square grid; an error when the given grid or size does not have that many."""
  if grid is not None:
    new_grid = (int(grid[0]), int(grid[1]))
  elif image_size is not None:
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    new_grid = (int(h) // patch_hw[0], int(w) // patch_hw[1])
  else:
    return square_grid(grid_tokens, what)
  if new_grid[0] * new_grid[1] != grid_tokens:
    raise CheckpointError(
        f"{what} has {grid_tokens} grid tokens, but the given grid/image_size means a "
        f"{new_grid[0]}x{new_grid[1]} grid.")
  return new_grid


# ---------------------------------------------------------------------------
# Fixed tables.
# ---------------------------------------------------------------------------

def sincos2d_posemb(grid_h: int, grid_w: int, width: int,
                    temperature: float = 10_000.0) -> np.ndarray:
  """Fixed 2-D sin-cos position embedding (MoCo v3 / big_vision), [1, gh*gw, D]."""
  if width % 4:
    raise ValueError(f"sincos2d position embeddings need width % 4 == 0, got {width}.")
  y, x = np.mgrid[:grid_h, :grid_w]
  omega = 1.0 / temperature ** (np.arange(width // 4) / (width // 4 - 1 or 1))
  y = np.einsum("n,d->nd", y.reshape(-1), omega)
  x = np.einsum("n,d->nd", x.reshape(-1), omega)
  pe = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
  return pe[None].astype(np.float32)


def sincos1d_posemb(num_tokens: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
  """Fixed 1-D sin-cos table over token indices (Vaswani et al.; VideoMAE), [1, L, D].

  Row p, channels 2i and 2i+1: sin and cos of p / temperature^(2i / D), interleaved. A
  video model indexes its t*gh*gw time-major tokens 0..L-1 in one sequence (VideoMAE's
  `get_sinusoid_encoding_table`), so the table follows any frame count and frame size.
  """
  if width % 2:
    raise ValueError(f"sincos1d position embeddings need an even width, got {width}.")
  position = np.arange(num_tokens, dtype=np.float64)[:, None]  # [L, 1]
  pair = np.arange(width) // 2  # channel j -> its pair index i
  angle = position / np.power(temperature, 2 * pair / width)  # [L, D]
  table = np.where(np.arange(width) % 2 == 0, np.sin(angle), np.cos(angle))
  return table[None].astype(np.float32)


# ---------------------------------------------------------------------------
# Rotary position embeddings from per-token coordinates.
# ---------------------------------------------------------------------------

def grid_indices(grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """Row and column index [gh*gw] of each patch of a (gh, gw) grid, row-major."""
  rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
  return rows.reshape(-1), cols.reshape(-1)


def rope_coordinates(options: EncoderOptions, row: Array, col: Array, grid_h: Array,
                     grid_w: Array, frame: Optional[Array] = None) -> Array:
  """Per-token RoPE positions [..., 2] (row, col) of patches at (row, col) in their grid.

  Elementwise over any shape (a grid, a packed sequence whose tokens come from grids of
  different sizes), on numpy or jax arrays, in float32 as timm computes them
  (docs/conventions.md, 'Rotary position embeddings'):
    eva02   the index, or index / g * rope_reference_grid        (timm RotaryEmbeddingCat)
            (index + rope_grid_offset first, when set: PE)
    mixed   the index                                             (timm RotaryEmbeddingMixed)
    dinov3  2 (index + 0.5) / g - 1, in (-1, 1)                  (timm RotaryEmbeddingDinoV3)
    vjepa2  the index, unscaled, with the tubelet's temporal index `frame` first:
            [..., 3] (frame, row, col)                 (transformers VJEPA2RopeAttention)
  With rope_grid_indexing "xy" the pair is (col, row) instead.
  """
  f32 = np.float32
  if options.rope == "vjepa2":
    if frame is None:
      raise ValueError("rope='vjepa2' rotates video tokens by (frame, row, col): it needs "
                       "their temporal index (a spatio_temporal VideoTransformer passes it).")
    stack = jnp.stack if isinstance(row, jax.Array) else np.stack
    return stack([frame.astype(f32), row.astype(f32), col.astype(f32)], axis=-1)
  out = []
  for index, size in ((row, grid_h), (col, grid_w)):
    c = index.astype(f32)
    size = size.astype(f32) if hasattr(size, "astype") else f32(size)
    if options.rope in ("eva02", "mixed"):
      if options.rope_grid_offset:
        c = c + f32(options.rope_grid_offset)
      if options.rope_reference_grid is not None:
        c = c / size * f32(options.rope_reference_grid)
    elif options.rope == "dinov3":
      c = f32(2.0) * (c + f32(0.5)) / size - f32(1.0)
    else:
      raise ValueError(f"rope_coordinates of rope={options.rope!r}.")
    out.append(c)
  if options.rope_grid_indexing == "xy":  # (col, row): the first angles follow the column
    out = out[::-1]
  stack = jnp.stack if isinstance(out[0], jax.Array) else np.stack
  return stack(out, axis=-1)


def rope_angles_at(options: EncoderOptions, positions: Array, head_dim: int) -> Array:
  """Rotation angles [..., hd/2] of tokens at `positions` [..., 2] (rope_coordinates).

  The first hd/4 angles follow the row, the last hd/4 the column, each with hd/4
  frequencies:
    eva02   p / base^(j / (hd/4)), j < hd/4
    dinov3  2 pi p / base^(2j / (hd/2))
  vjepa2: positions [..., 3] -> per-channel angles [..., hd] (_vjepa2_angles).
  """
  if options.rope == "vjepa2":
    return _vjepa2_angles(options, positions, head_dim)
  if head_dim % 4:
    raise ValueError(f"2-D rotary embeddings need head_dim % 4 == 0, got {head_dim}.")
  quarter = head_dim // 4
  base = np.float32(options.rope_base)
  j = np.arange(quarter, dtype=np.float32)
  if options.rope == "eva02":
    freqs = np.float32(1.0) / base ** (j / np.float32(quarter))
    angles = positions[..., None] * freqs  # [..., 2, hd/4]
  else:
    periods = base ** (np.float32(2.0) * j / np.float32(head_dim // 2))
    angles = np.float32(2 * np.pi) * positions[..., None] / periods
  return angles.reshape(*positions.shape[:-1], 2 * quarter).astype(np.float32)


def mixed_rope_angles(positions: Array, freqs: jax.Array) -> jax.Array:
  """RoPE-Mixed angles [..., H, hd/2] of tokens at `positions` [..., 2] (rope_coordinates,
  "xy": (x, y)) with learned frequencies `freqs` [2, H, hd/2] (x row, y row): x fx + y fy,
  in float32 (timm get_mixed_freqs)."""
  p = jnp.asarray(positions, jnp.float32)[..., None, None, :]  # [..., 1, 1, 2]
  f = freqs.astype(jnp.float32)
  return p[..., 0] * f[0] + p[..., 1] * f[1]


def rope_angles(options: EncoderOptions, grid: tuple[int, ...], head_dim: int) -> np.ndarray:
  """Rotation angles [gh*gw, hd/2] of the patches of a (gh, gw) grid (row-major).

  rope="vjepa2": `grid` is (t, gh, gw), the tokens time-major, and the angles are per
  channel, [t*gh*gw, hd] (_vjepa2_angles).
  """
  if (len(grid) == 3) != (options.rope == "vjepa2"):
    raise ValueError(f"rope={options.rope!r} got the token grid {tuple(grid)}: the 3-D "
                     "'vjepa2' RoPE takes a (t, gh, gw) grid (a spatio_temporal "
                     "VideoTransformer), the 2-D variants a (gh, gw) grid.")
  if options.rope == "vjepa2":
    frame, row, col = (a.reshape(-1) for a in np.meshgrid(
        *(np.arange(n) for n in grid), indexing="ij"))
    positions = rope_coordinates(options, row, col, np.int64(grid[1]), np.int64(grid[2]),
                                 frame=frame)
    return rope_angles_at(options, positions, head_dim)
  row, col = grid_indices(grid)
  positions = rope_coordinates(options, row, col, np.int64(grid[0]), np.int64(grid[1]))
  return rope_angles_at(options, positions, head_dim)


def rope_token_grid(options: EncoderOptions, t: int, gh: int, gw: int
                    ) -> Optional[tuple[int, ...]]:
  """The grid a video encoder's RoPE rotates by: (t, gh, gw) for the 3-D "vjepa2", (gh, gw)
  for the 2-D variants (the same angles in every frame), None without rope."""
  if options.rope is None:
    return None
  return (t, gh, gw) if options.rope == "vjepa2" else (gh, gw)


def vjepa2_band(head_dim: int) -> int:
  """Channels of each of V-JEPA 2's three RoPE bands (frame, row, column): the even
  2 floor(floor(hd / 3) / 2); the last hd - 3 band channels of a head are not rotated."""
  return 2 * (head_dim // 3 // 2)


def _vjepa2_angles(options: EncoderOptions, positions: Array, head_dim: int) -> Array:
  """Per-channel rotation angles [..., hd] of V-JEPA 2's 3-D RoPE at positions [..., 3].

  Channels [a*d, (a+1)*d) follow axis a (frame, row, col), d = vjepa2_band(hd), with
  d/2 frequencies w_j = 1 / base^(j / (d/2)); the unrotated tail gets angle 0. Channel k
  of a band takes frequency w_(k mod d/2): the reference tiles its d/2 angles over the
  band (`emb_sin.repeat(1, 1, 1, 2)`) while it rotates interleaved pairs (2i, 2i+1)
  (layers.apply_rope), so the two channels of a pair generally turn by different
  angles. Reproduced as released: its checkpoints were trained so.
  """
  band = vjepa2_band(head_dim)
  if band == 0:
    raise ValueError(f"rope='vjepa2' needs head_dim >= 6 (two channels per axis), got "
                     f"{head_dim}.")
  half = band // 2
  base = np.float32(options.rope_base)
  freqs = np.float32(1.0) / base ** (np.arange(half, dtype=np.float32) / np.float32(half))
  freqs = np.tile(freqs, 2)  # channel k -> w_(k mod d/2)
  angles = positions[..., None] * freqs  # [..., 3, d]
  angles = angles.reshape(*positions.shape[:-1], 3 * band)
  pad = [(0, 0)] * (angles.ndim - 1) + [(0, head_dim - 3 * band)]
  xp = jnp if isinstance(angles, jax.Array) else np
  return xp.pad(angles, pad).astype(np.float32)


# ---------------------------------------------------------------------------
# Learned grids at another input size, inside the graph.
# ---------------------------------------------------------------------------

def _cubic(x: Array, a: float, xp: Any = np) -> Array:
  """Keys' cubic convolution kernel with parameter `a` (xp: numpy, or jax.numpy in graph)."""
  x = xp.abs(x)
  near = ((a + 2) * x - (a + 3)) * x * x + 1
  far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return xp.where(x <= 1, near, xp.where(x < 2, far, 0.0))


def interpolation_matrix(in_size: int, out_size: int, method: str = "bilinear",
                         antialias: bool = False) -> np.ndarray:
  """[out, in] weights of torch's `F.interpolate(..., align_corners=False)` along one axis.

  method "bilinear" or "bicubic". Without antialias: half-pixel source positions
  (i + 0.5) * in / out - 0.5, clamped to 0 for bilinear, cubic taps with a = -0.75
  and border indices clamped (torch's upsample_bicubic2d). With antialias (torch's
  `_upsample_*_aa`, PIL's filters): a triangle or a = -0.5 cubic filter, stretched by
  in / out when shrinking, taps outside the input dropped and the rest renormalised.
  Float64.
  """
  scale = in_size / out_size
  out = np.zeros((out_size, in_size))
  i = np.arange(out_size)
  if antialias:
    support = (1.0 if method == "bilinear" else 2.0) * max(scale, 1.0)
    inv = 1.0 / max(scale, 1.0)
    center = scale * (i + 0.5)
    lo = np.maximum(np.trunc(center - support + 0.5), 0).astype(int)
    hi = np.minimum(np.trunc(center + support + 0.5), in_size).astype(int)
    for row in range(out_size):
      taps = np.arange(lo[row], hi[row])
      x = (taps - center[row] + 0.5) * inv
      w = np.maximum(0.0, 1.0 - np.abs(x)) if method == "bilinear" else _cubic(x, -0.5)
      out[row, taps] = w / w.sum()
    return out
  src = (i + 0.5) * scale - 0.5
  if method == "bilinear":
    src = np.maximum(src, 0.0)
    i0 = np.floor(src).astype(int)
    frac = src - i0
    i1 = np.minimum(i0 + 1, in_size - 1)
    np.add.at(out, (i, i0), 1.0 - frac)
    np.add.at(out, (i, i1), frac)
    return out
  i0 = np.floor(src).astype(int)
  frac = src - i0
  for k in range(-1, 3):
    np.add.at(out, (i, np.clip(i0 + k, 0, in_size - 1)), _cubic(k - frac, -0.75))
  return out


def interpolation_weights(index: jax.Array, out_size: jax.Array, in_size: int,
                          method: str = "bilinear", antialias: bool = False) -> jax.Array:
  """Row `index` of interpolation_matrix(in_size, out_size, ...) for traced sizes: [..., in].

  `index` and `out_size` are integer arrays of one shape (e.g. every token of a packed
  sequence with its image's grid size), `in_size` the stored grid's side. Float32, the
  same weights as interpolation_matrix to float32 rounding.
  """
  f32 = jnp.float32
  i = jnp.asarray(index).astype(f32)[..., None]
  scale = f32(in_size) / jnp.asarray(out_size).astype(f32)[..., None]
  taps = jnp.arange(in_size, dtype=f32)
  if antialias:
    stretch = jnp.maximum(scale, 1.0)
    support = (1.0 if method == "bilinear" else 2.0) * stretch
    center = scale * (i + 0.5)
    lo = jnp.maximum(jnp.trunc(center - support + 0.5), 0.0)
    hi = jnp.minimum(jnp.trunc(center + support + 0.5), f32(in_size))
    x = (taps - center + 0.5) / stretch
    w = (jnp.maximum(0.0, 1.0 - jnp.abs(x)) if method == "bilinear"
         else _cubic(x, -0.5, jnp))
    w = jnp.where((taps >= lo) & (taps < hi), w, 0.0)
    return w / jnp.sum(w, axis=-1, keepdims=True)
  src = (i + 0.5) * scale - 0.5
  one_hot = lambda k: (taps == k).astype(f32)
  if method == "bilinear":
    src = jnp.maximum(src, 0.0)
    i0 = jnp.floor(src)
    frac = src - i0
    return one_hot(i0) * (1.0 - frac) + one_hot(jnp.minimum(i0 + 1, in_size - 1)) * frac
  i0 = jnp.floor(src)
  frac = src - i0
  return sum(one_hot(jnp.clip(i0 + k, 0, in_size - 1)) * _cubic(k - frac, -0.75, jnp)
             for k in range(-1, 3))


def posemb_at(grid: jax.Array, coords: jax.Array, grids: jax.Array, method: str) -> jax.Array:
  """Each token's position embedding, interpolated from a learned grid for its image's size.

  grid [GH, GW, D] (the stored one); coords [..., 2] (row, col) and grids [..., 2]
  (gh, gw) per token -> [..., D]: the row of `resize_posemb_grid(grid, (gh, gw))` at
  (row, col), computed per token, so images of different sizes in one packed sequence
  each get their own resize (`method`: options.POSEMB_RESIZE).
  """
  kind, _, aa = method.partition("_")
  rows = interpolation_weights(coords[..., 0], grids[..., 0], grid.shape[0], kind, bool(aa))
  cols = interpolation_weights(coords[..., 1], grids[..., 1], grid.shape[1], kind, bool(aa))
  return jnp.einsum("...h,...w,hwd->...d", rows, cols, grid.astype(jnp.float32),
                    precision=jax.lax.Precision.HIGHEST)


def resize_posemb_grid(posemb: jax.Array, old_grid: tuple[int, int],
                       new_grid: tuple[int, int], method: str = "bilinear_antialias"
                       ) -> jax.Array:
  """[..., gh*gw, D] -> [..., gh'*gw', D], resized inside the graph.

  `method`: one of options.POSEMB_RESIZE (not None): torch's F.interpolate with
  align_corners=False, the resize timm (`resample_abs_pos_embed`, NaFlexViT) and
  transformers' SigLIP 2 apply to their learned grid for each input size, as two
  [out, in] matrices (interpolation_matrix) applied in float32. The offline resize of
  a checkpoint (`vit_jax.checkpoint.posemb`) keeps the aligned-corner spline of the
  original vit_jax instead.
  """
  gh, gw = old_grid
  if posemb.shape[-2] != gh * gw:
    raise ValueError(f"posemb has {posemb.shape[-2]} grid rows, old_grid {old_grid} needs "
                     f"{gh * gw}.")
  if tuple(new_grid) == tuple(old_grid):
    return posemb
  kind, _, aa = method.partition("_")
  rows, cols = (jnp.asarray(interpolation_matrix(n, m, kind, bool(aa)), jnp.float32)
                for n, m in zip(old_grid, new_grid))
  lead, width = posemb.shape[:-2], posemb.shape[-1]
  grid = posemb.reshape(*lead, gh, gw, width).astype(jnp.float32)  # [..., gh, gw, D]
  out = jnp.einsum("ph,qw,...hwd->...pqd", rows, cols, grid,
                   precision=jax.lax.Precision.HIGHEST)  # [..., gh', gw', D]
  return out.reshape(*lead, new_grid[0] * new_grid[1], width).astype(posemb.dtype)
