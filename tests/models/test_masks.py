"""Token masks through the shared encoder: padding changes nothing for the real tokens.

A batch of two sequences of different lengths (5 and 3 real tokens) is padded to 8 with
random tokens and run once with `token_mask`; each sequence is also run alone, unpadded.
The real tokens' outputs, the pooled features (gap, token, map) and the parameter
gradients of a loss on both must agree to 1e-5, on the explicit attention path (the CPU
default), jax's fused path, the non-default scores, scanned and rematerialised blocks.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import layers, positions, vit
from vit_jax.models.options import EncoderOptions

WIDTH, LENGTHS, PADDED = 32, (5, 3), 8


class PooledEncoder(nn.Module):
  """The model's encoder and pooling, on given tokens: [B, L, D] -> ([B, L, D], [B, D])."""
  classifier: str
  options: EncoderOptions

  @nn.compact
  def __call__(self, x, token_mask=None):
    prefix = self.options.num_prefix_tokens(self.classifier)
    # Positions are the input's (a padded or packed batch adds each image's own).
    y = vit.Encoder(num_layers=2, mlp_dim=64, num_heads=4, num_prefix_tokens=prefix,
                    add_position_embedding=False, options=self.options,
                    name="Transformer")(x, token_mask=token_mask)
    head = (vit.MAPHead(mlp_dim=64, num_heads=4, options=self.options)
            if self.classifier == "map" else None)
    return y, vit.pool_tokens(y, self.classifier, self.options, head, token_mask)


def _sequences(seed=0):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=(1, n, WIDTH)).astype(np.float32) for n in LENGTHS]


def _padded(seqs, seed=1):
  """[2, PADDED, D] with random padding after each sequence, and its mask [2, PADDED]."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(len(seqs), PADDED, WIDTH)).astype(np.float32) * 3
  mask = np.zeros((len(seqs), PADDED), np.int32)
  for i, s in enumerate(seqs):
    x[i, :s.shape[1]] = s[0]
    mask[i, :s.shape[1]] = 1
  return jnp.asarray(x), jnp.asarray(mask)


def _loss(model, params, x, mask, weights):
  """A loss that reads every real token and the pooled feature: sum over examples."""
  tokens, pooled = _apply(model, params, x, mask)
  w_tok, w_pool = weights
  real = tokens if mask is None else tokens * (mask != 0)[..., None]
  return jnp.sum(real * w_tok[:, :tokens.shape[1]]) + jnp.sum(pooled * w_pool)


# Each case covers a path the others do not: the explicit softmax (gap, and MAPHead's
# masked probe), prefix tokens with LayerScale, scan + remat, a non-dot score on the
# explicit path (additive), a fused path with a transformed score (cosine).
def _apply(model, params, x, mask=None):
  return model.apply({"params": params}, x, mask)


# One compiled program per model and shape (eager op-by-op dispatch is slower here).
_apply = jax.jit(_apply, static_argnums=0)
_grad = jax.jit(jax.grad(_loss, argnums=1), static_argnums=0)


CASES = {
    "gap": ("gap", EncoderOptions()),
    "map": ("map", EncoderOptions()),
    "token_registers_layerscale_qknorm": ("token", EncoderOptions(
        num_registers=1, layer_scale=1e-1, qk_norm=True)),
    "gap_scan_remat": ("gap", EncoderOptions(scan_layers=True, remat=True)),
    "token_additive": ("token", EncoderOptions(attention_score="additive")),
    "map_cosine_fused": ("map", EncoderOptions(attention_score="cosine",
                                               attention_implementation="xla")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_padding_changes_nothing_for_the_real_tokens(case):
  classifier, options = CASES[case]
  model = PooledEncoder(classifier, options)
  seqs = _sequences()
  x, mask = _padded(seqs)
  params = model.init(jax.random.PRNGKey(0), x, mask)["params"]
  rng = np.random.default_rng(2)
  w_tok = jnp.asarray(rng.normal(size=(1, PADDED, WIDTH)), jnp.float32)
  w_pool = jnp.asarray(rng.normal(size=(1, WIDTH)), jnp.float32)

  tokens, pooled = _apply(model, params, x, mask)
  grads = _grad(model, params, x, mask, (w_tok, w_pool))

  alone_grads = None
  for i, s in enumerate(seqs):
    s = jnp.asarray(s)
    t_alone, p_alone = _apply(model, params, s)
    n = s.shape[1]
    np.testing.assert_allclose(tokens[i, :n], t_alone[0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(pooled[i], p_alone[0], atol=1e-5, rtol=1e-5)
    g = _grad(model, params, s, None, (w_tok, w_pool))
    alone_grads = g if alone_grads is None else jax.tree.map(jnp.add, alone_grads, g)
  flat = jax.tree_util.tree_leaves_with_path(grads)
  alone = dict(jax.tree_util.tree_leaves_with_path(alone_grads))
  for path, g in flat:
    np.testing.assert_allclose(g, alone[path], atol=1e-5, rtol=1e-4,
                               err_msg=jax.tree_util.keystr(path))
  assert all(np.isfinite(np.asarray(t)).all() for t in (tokens, pooled))


def test_packed_sequence_attends_within_each_image_only():
  """Ids 1 and 2 pack two sequences into one row: each part equals its own run."""
  model = PooledEncoder("unpooled", EncoderOptions())
  a, b = _sequences(3)
  x = jnp.concatenate([a, b, jnp.zeros((1, 2, WIDTH))], axis=1)  # [1, 10, D]
  ids = jnp.asarray([[1] * 5 + [2] * 3 + [0] * 2])
  params = model.init(jax.random.PRNGKey(1), x, ids)["params"]
  packed, _ = model.apply({"params": params}, x, ids)
  for part, start in ((a, 0), (b, 5)):
    alone, _ = model.apply({"params": params}, jnp.asarray(part))
    np.testing.assert_allclose(packed[0, start:start + part.shape[1]], alone[0],
                               atol=1e-5, rtol=1e-5)


def test_attention_mask_shapes_and_values():
  ids = jnp.asarray([[1, 1, 2, 0]])
  m = np.asarray(layers.attention_mask(ids))[0, 0]
  assert m.shape == (4, 4)
  np.testing.assert_array_equal(m, [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(np.asarray(layers.key_mask(ids))[0, 0, 0], [1, 1, 1, 0])


def test_unmasked_call_is_the_program_without_masks():
  """No token_mask: no select or mask in the jaxpr (the compiled program is unchanged)."""
  model = PooledEncoder("gap", EncoderOptions())
  x = jnp.ones((2, PADDED, WIDTH))
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  plain = str(jax.make_jaxpr(lambda p: model.apply({"params": p}, x))(params))
  masked = str(jax.make_jaxpr(lambda p: model.apply({"params": p}, x, jnp.ones((2, PADDED))))(
      params))
  assert "select_n" not in plain and "select_n" in masked


@pytest.mark.parametrize("variant", ["factorised_self_attention", "factorised_dot_product"])
def test_factorised_video_blocks_refuse_a_mask(variant):
  from vit_jax.models import vivit  # noqa: PLC0415

  enc = vivit.VideoEncoder(num_layers=1, mlp_dim=64, num_heads=4, variant=variant,
                           temporal_grid=2)
  x = jnp.ones((1, 8, WIDTH))
  with pytest.raises(ValueError, match="mask is not supported"):
    enc.init(jax.random.PRNGKey(0), x, token_mask=jnp.ones((1, 8)))


def test_rope_angles_from_coordinates_equal_the_grid_formula():
  """RoPE angles from per-token coordinates of one packed row of two non-square grids
  (jax arrays, as a packed batch gives them) equal each grid's own table."""
  for rope, ref in (("eva02", 16), ("eva02", None), ("dinov3", None)):
    o = EncoderOptions(rope=rope, rope_reference_grid=ref)
    grids = [(3, 5), (4, 2)]
    rows, cols, gh, gw = [], [], [], []
    for g in grids:
      r, c = positions.grid_indices(g)
      rows.append(r), cols.append(c)
      gh.append(np.full(r.shape, g[0])), gw.append(np.full(r.shape, g[1]))
    packed = positions.rope_angles_at(
        o, positions.rope_coordinates(o, *(jnp.asarray(np.concatenate(v))
                                           for v in (rows, cols, gh, gw))), 8)
    np.testing.assert_allclose(
        np.asarray(packed), np.concatenate([positions.rope_angles(o, g, 8) for g in grids]),
        rtol=1e-6, atol=1e-6)


def test_in_graph_resize_matches_half_pixel_bilinear():
  """Upsampling 2 -> 4 per side: half-pixel centres (align_corners=False), closed form."""
  grid = np.arange(4, dtype=np.float32).reshape(1, 4, 1)  # [[0, 1], [2, 3]] as [1, 4, 1]
  out = np.asarray(positions.resize_posemb_grid(jnp.asarray(grid), (2, 2), (4, 4)))
  # 1-D: outputs at (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to [0, 1].
  line = np.array([0.0, 0.25, 0.75, 1.0])
  expected = (2 * line[:, None] + line[None, :]).reshape(1, 16, 1)
  np.testing.assert_allclose(out, expected, atol=1e-6)
