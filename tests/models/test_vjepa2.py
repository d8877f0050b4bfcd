"""V-JEPA 2's mechanisms: the 3-D RoPE (rope="vjepa2"), the attentive pooler, the sizes.

The RoPE is tested against its closed form and for the invariances it has. V-JEPA 2
tiles its d/2 frequencies over a band of d channels while rotating interleaved pairs
(positions._vjepa2_angles), so the two channels of a pair turn by different angles
whenever a band has more than one frequency: then the map is not a rotation (norms and
q.k under a common shift change, as in transformers' and vjepa2's own code). With one
frequency per band (head_dim 6 or 7) it is a true 3-D RoPE, norm-preserving and
relative; both regimes are pinned here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import models
from vit_jax.models import attentive_pooler, inspection, layers, positions
from vit_jax.models.options import EncoderOptions

ROPE = EncoderOptions(rope="vjepa2")


def rotate(x, grid, head_dim=None):
  """x [B, t*gh*gw, H, hd] rotated by its (frame, row, col) on `grid`."""
  angles = positions.rope_angles(ROPE, grid, head_dim or x.shape[-1])
  return np.asarray(layers.apply_rope(jnp.asarray(x), angles, ROPE, 0))


def test_angles_have_the_closed_form():
  hd, grid = 16, (2, 3, 4)
  d = positions.vjepa2_band(hd)
  assert d == 4  # 2 * floor(floor(16 / 3) / 2); channels 12..15 are not rotated
  angles = positions.rope_angles(ROPE, grid, hd)  # [t*gh*gw, hd]
  assert angles.shape == (24, hd)
  frame, row, col = np.indices(grid).reshape(3, -1)
  w = np.array([1.0, 1e-2])  # 1 / 10000^(j / (d/2)), j < d/2
  for a, pos in enumerate((frame, row, col)):
    # channel k of each band turns at w[k mod d/2]
    expected = pos[:, None] * np.tile(w, 2)[None]
    np.testing.assert_allclose(angles[:, a * d:(a + 1) * d], expected, rtol=1e-6)
  assert not angles[:, 3 * d:].any()
  # the ViT-L head (hd 64): bands of 20 channels, 10 frequencies each, 4 channels left
  big = positions.rope_angles(ROPE, (1, 1, 2), 64)[1]  # token at column 1
  np.testing.assert_allclose(big[40:60], np.tile(10000.0 ** (-np.arange(10) / 10), 2),
                             rtol=1e-6)
  assert not big[:40].any() and not big[60:].any()


def test_rotation_matches_the_per_pair_formula():
  x = np.random.default_rng(0).standard_normal((1, 12, 2, 16)).astype(np.float32)
  grid = (2, 2, 3)
  angles = positions.rope_angles(ROPE, grid, 16)[None, :, None, :]
  out = rotate(x, grid)
  even, odd = x[..., 0::2], x[..., 1::2]
  a_even, a_odd = angles[..., 0::2], angles[..., 1::2]
  np.testing.assert_allclose(out[..., 0::2], even * np.cos(a_even) - odd * np.sin(a_even),
                             atol=1e-6)
  np.testing.assert_allclose(out[..., 1::2], odd * np.cos(a_odd) + even * np.sin(a_odd),
                             atol=1e-6)
  np.testing.assert_array_equal(out[:, 0], x[:, 0])  # position (0, 0, 0): identity
  np.testing.assert_array_equal(out[..., 12:], x[..., 12:])  # the tail is not rotated
  # The reference's pairs turn by two angles, so norms change (not a rotation): a
  # "proper" RoPE here would not reproduce the checkpoints.
  norms = np.linalg.norm(out, axis=-1) / np.linalg.norm(x, axis=-1)
  assert np.abs(norms[:, 1:] - 1).max() > 1e-2


def test_one_frequency_per_band_is_a_norm_preserving_relative_rope():
  hd, grid = 6, (3, 3, 3)  # bands of 2 channels: one frequency, one angle per pair
  rng = np.random.default_rng(1)
  q = rng.standard_normal((1, 27, 1, hd)).astype(np.float32)
  k = rng.standard_normal((1, 27, 1, hd)).astype(np.float32)
  qr, kr = rotate(q, grid), rotate(k, grid)
  np.testing.assert_allclose(np.linalg.norm(qr, axis=-1), np.linalg.norm(q, axis=-1),
                             rtol=1e-5)
  index = lambda f, r, c: (f * 3 + r) * 3 + c
  # The same q and k vectors placed at (0,0,0) / (1,1,0), then shifted by one step along
  # t, h or w: q.k depends only on the offset.
  for shift in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
    a, b = index(0, 0, 0), index(1, 1, 0)
    a2, b2 = index(*shift), index(1 + shift[0], 1 + shift[1], shift[2])
    q2, k2 = q.copy(), k.copy()
    q2[:, a2], k2[:, b2] = q[:, a], k[:, b]
    qr2, kr2 = rotate(q2, grid), rotate(k2, grid)
    np.testing.assert_allclose(np.sum(qr2[:, a2] * kr2[:, b2]), np.sum(qr[:, a] * kr[:, b]),
                               rtol=1e-5)


def test_a_shift_in_time_turns_only_the_time_band():
  x = np.random.default_rng(2).standard_normal((1, 1, 1, 64)).astype(np.float32)
  tokens = np.tile(x, (1, 8, 1, 1))  # the same vector at every (frame, row, col) of 2x2x2
  out = rotate(tokens, (2, 2, 2))
  d = positions.vjepa2_band(64)
  for row_col in range(4):  # token (1, r, c) vs (0, r, c)
    np.testing.assert_allclose(out[0, 4 + row_col, :, d:], out[0, row_col, :, d:], atol=1e-6)
    assert np.abs(out[0, 4 + row_col, :, :d] - out[0, row_col, :, :d]).max() > 1e-2


def test_rope_vjepa2_needs_a_spatio_temporal_video_encoder():
  with pytest.raises(ValueError, match="variant='spatio_temporal'"):
    jax.eval_shape(models.create_model("VJEPA2-Mu_4x2", variant="factorised_encoder",
                                       classifier="gap").init,
                   jax.random.key(0), jnp.zeros((1, 4, 8, 8, 3)))
  vit = models.create_model("ViT-Mu_4", rope="vjepa2", posemb="none")
  with pytest.raises(ValueError, match="3-D 'vjepa2' RoPE takes a \\(t, gh, gw\\) grid"):
    jax.eval_shape(vit.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


def test_attentive_pooler_is_permutation_invariant_and_sows_its_attention():
  pooler = attentive_pooler.AttentivePooler(num_heads=2, mlp_dim=64, num_layers=1,
                                            options=EncoderOptions(sow_attention_weights=True))
  tokens = jnp.asarray(np.random.default_rng(3).standard_normal((2, 7, 32)), jnp.float32)
  params = jax.jit(pooler.init)(jax.random.key(0), tokens)["params"]
  assert params["query_tokens"].shape == (1, 1, 32)
  assert "out" not in params["cross_attention"]  # V-JEPA 2's has no output projection
  apply = jax.jit(lambda x: pooler.apply({"params": params}, x, mutable=["intermediates"]))
  out, state = apply(tokens)
  order = np.random.default_rng(4).permutation(7)
  out_perm, state_perm = apply(tokens[:, order])
  assert out.shape == (2, 32)
  np.testing.assert_allclose(out_perm, out, atol=1e-5)
  cross = state["intermediates"]["cross_attention"]["attention_weights"][0]
  assert cross.shape == (2, 2, 1, 7)  # [B, H, Q, L]
  np.testing.assert_allclose(cross.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(
      state_perm["intermediates"]["cross_attention"]["attention_weights"][0],
      cross[..., order], atol=1e-6)


def test_inspection_returns_the_encoder_and_probe_attention():
  model = models.create_model("VJEPA2-Mu_4x2", num_classes=3, pooler_layers=1)
  x = jnp.zeros((1, 4, 8, 8, 3))
  params = jax.jit(model.init)(jax.random.key(0), x)["params"]
  assert "posembed_input" not in params["Transformer"]
  # One compiled program (eager dispatch of every small op is what costs here).
  logits, weights = jax.jit(lambda p: inspection.attention_weights(model, p, x))(params)
  assert logits.shape == (1, 3)
  # (jit returns the dict sorted; inspection orders it by layer, blocks before the
  # pooler's named cross-attention, when it runs inside the trace)
  assert set(weights) == {
      "Transformer/encoderblock_0/MultiHeadDotProductAttention_0",
      "Transformer/encoderblock_1/MultiHeadDotProductAttention_0",
      "pooler/encoderblock_0/MultiHeadDotProductAttention_0",
      "pooler/cross_attention"}
  paths = [("pooler", "cross_attention"), ("pooler", "encoderblock_10"),
           ("pooler", "encoderblock_2"), ("Transformer", "encoderblock_1")]
  assert sorted(paths, key=inspection._block_order) == [  # the layer order
      ("Transformer", "encoderblock_1"), ("pooler", "encoderblock_2"),
      ("pooler", "encoderblock_10"), ("pooler", "cross_attention")]
  assert weights["Transformer/encoderblock_0/MultiHeadDotProductAttention_0"].shape == (
      1, 2, 8, 8)  # t * gh * gw = 2 * 2 * 2 tokens
  assert weights["pooler/cross_attention"].shape == (1, 2, 1, 8)


# transformers 5.24 VJEPA2Model(VJEPA2Config(<size>)).encoder: parameters counted on the
# meta device (vit_large, vit_huge, vit_giant_xformers of the vjepa2 repository).
ENCODER_PARAMS = {"VJEPA2-L_16x2": 303_885_312, "VJEPA2-H_16x2": 631_648_000,
                  "VJEPA2-g_16x2": 1_012_173_952}


@pytest.mark.parametrize("name", sorted(ENCODER_PARAMS))
def test_published_sizes_have_the_reference_parameter_count(name):
  model = models.create_model(name, num_classes=None, classifier="gap", scan_layers=True)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 2, 32, 32, 3)))
  assert sum(x.size for x in jax.tree.leaves(shapes["params"])) == ENCODER_PARAMS[name]
