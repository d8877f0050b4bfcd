"""RMSNorm, RoPE-Mixed's learned frequencies and the RotaryEmbeddingCat grid options
(issue 25's mechanisms), each against its closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import layers, positions
from vit_jax.models.options import EncoderOptions

RNG = np.random.default_rng(0)


def test_rmsnorm_is_the_closed_form_and_keeps_the_tree_names():
  o = EncoderOptions(norm="rmsnorm", layernorm_epsilon=1e-5)
  x = RNG.normal(size=(2, 5, 8)).astype(np.float32) * 3 + 1
  scale = RNG.normal(size=8).astype(np.float32)
  out = layers.layer_norm(o).apply({"params": {"scale": scale}}, x)
  expected = x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-5) * scale
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
  # No mean subtraction: a constant shift changes the output (a LayerNorm's would not).
  assert np.abs(layers.layer_norm(o).apply({"params": {"scale": scale}}, x + 1) - out).max() > 0.1
  # In a block: LayerNorm_0 / LayerNorm_1 as with LayerNorm, a scale and no bias.
  block = layers.Encoder1DBlock(mlp_dim=16, num_heads=2, options=o.replace(proj_bias=False))
  tree = jax.eval_shape(block.init, jax.random.key(0), jnp.zeros((1, 3, 8)))["params"]
  assert set(tree["LayerNorm_0"]) == set(tree["LayerNorm_1"]) == {"scale"}
  assert set(tree["MultiHeadDotProductAttention_0"]["out"]) == {"kernel"}
  assert all(set(d) == {"kernel"} for d in tree["MlpBlock_0"].values())


def _rotate_closed_form(x, angles):
  """x [N, H, hd] rotated pair by pair: (x_2i, x_2i+1) by the 2x2 matrix of angles[n, h, i]."""
  out = np.empty_like(x)
  c, s = np.cos(angles), np.sin(angles)
  out[..., 0::2] = c * x[..., 0::2] - s * x[..., 1::2]
  out[..., 1::2] = s * x[..., 0::2] + c * x[..., 1::2]
  return out


def test_mixed_rope_rotates_by_the_given_learned_frequencies():
  grid, heads, hd, prefix = (3, 4), 2, 8, 1
  freqs = RNG.normal(size=(2, heads, hd // 2)).astype(np.float32)
  o = EncoderOptions(rope="mixed", rope_grid_indexing="xy")
  row, col = positions.grid_indices(grid)
  coords = positions.rope_coordinates(o, row, col, np.int64(grid[0]), np.int64(grid[1]))
  np.testing.assert_array_equal(coords, np.stack([col, row], -1))  # (x, y)
  angles = np.asarray(positions.mixed_rope_angles(coords, jnp.asarray(freqs)))
  np.testing.assert_allclose(angles, col[:, None, None] * freqs[0] + row[:, None, None] * freqs[1],
                             rtol=1e-6)
  x = RNG.normal(size=(2, prefix + 12, heads, hd)).astype(np.float32)
  out = np.asarray(layers.apply_mixed_rope(jnp.asarray(x), jnp.asarray(angles), prefix))
  np.testing.assert_array_equal(out[:, :prefix], x[:, :prefix])  # the cls token is not rotated
  for b in range(2):
    np.testing.assert_allclose(out[b, prefix:], _rotate_closed_form(x[b, prefix:], angles),
                               atol=1e-5)
  # A rotation: every query's and key's norm is kept.
  np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


def test_mixed_rope_with_axial_frequencies_is_axial_rope():
  # timm's init_random_2d_freqs without rotation: fx = [m, 0], fy = [0, m], m the axial
  # bands 1 / T^(j / (hd/4)): RoPE-Mixed then is RoPE-Axial (eva02 bands, "xy").
  heads, hd, width, temperature = 2, 8, 16, 100.0
  mag = 1.0 / temperature ** (np.arange(hd // 4) / (hd // 4))
  zero = np.zeros_like(mag)
  freqs = np.stack([np.tile(np.concatenate([mag, zero]), (heads, 1)),
                    np.tile(np.concatenate([zero, mag]), (heads, 1))]).astype(np.float32)
  x = jnp.asarray(RNG.normal(size=(2, 1 + 12, width)).astype(np.float32))
  attn = lambda **rope: layers.MultiHeadDotProductAttention(
      num_heads=heads, num_prefix_tokens=1, patch_grid=(3, 4),
      options=EncoderOptions(rope_grid_indexing="xy", rope_temperature=temperature, **rope))
  mixed, axial = attn(rope="mixed"), attn(rope="eva02")
  params = mixed.init(jax.random.key(0), x)["params"]
  assert params["rope_freqs"].shape == (2, heads, hd // 2)
  # The init draws timm's structure: each pair's (fx, fy) has the axial magnitude.
  np.testing.assert_allclose(np.hypot(*np.asarray(params["rope_freqs"])),
                             np.tile(np.concatenate([mag, mag]), (heads, 1)), rtol=1e-5)
  params = dict(params, rope_freqs=jnp.asarray(freqs))
  without = {k: v for k, v in params.items() if k != "rope_freqs"}
  np.testing.assert_allclose(mixed.apply({"params": params}, x),
                             axial.apply({"params": without}, x), atol=1e-5)
  # And other frequencies give another output (the parameter is used).
  other = dict(params, rope_freqs=jnp.asarray(freqs[::-1]))
  assert np.abs(mixed.apply({"params": other}, x) - mixed.apply({"params": params}, x)).max() > 1e-3


def test_cat_grid_offset_and_xy_indexing_are_timms_coordinates():
  # Perception Encoder: (index + 1) / g * reference grid, the column first.
  o = EncoderOptions(rope="eva02", rope_grid_offset=1.0, rope_grid_indexing="xy",
                     rope_reference_grid=6)
  row, col = positions.grid_indices((2, 3))
  coords = positions.rope_coordinates(o, row, col, np.int64(2), np.int64(3))
  np.testing.assert_allclose(coords, np.stack([(col + 1) / 3 * 6, (row + 1) / 2 * 6], -1),
                             rtol=1e-6)


@pytest.mark.parametrize("options,message", [
    (dict(rope_grid_indexing="xy"), "need rope='eva02' or 'mixed'"),
    (dict(rope="dinov3", rope_grid_offset=1.0), "need rope='eva02' or 'mixed'"),
    (dict(fc_norm=True, final_norm=False), "contradicts"),
    (dict(norm="batchnorm"), "Unknown norm"),
    (dict(map_num_heads=0), "map_num_heads must be > 0")])
def test_option_errors_name_the_fix(options, message):
  with pytest.raises(ValueError, match=message):
    EncoderOptions(**options)
