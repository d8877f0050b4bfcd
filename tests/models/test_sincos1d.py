"""VideoMAE's fixed position table (positions.sincos1d_posemb) and the video encoder's
posemb="sincos1d": closed form, no parameter, any frame count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import models
from vit_jax.models import positions, vivit


def test_table_has_its_closed_form():
  table = positions.sincos1d_posemb(50, 8)[0]  # [L, D]
  assert table.shape == (50, 8)
  np.testing.assert_array_equal(table[0], [0, 1, 0, 1, 0, 1, 0, 1])  # sin 0, cos 0
  # Channel pair i of row p: sin / cos of p * 10000^(-2i/8) = p * 10^(-i).
  for p in (1, 7, 49):
    for i in range(4):
      np.testing.assert_allclose(table[p, 2 * i], np.sin(p * 10.0 ** -i), atol=1e-6)
      np.testing.assert_allclose(table[p, 2 * i + 1], np.cos(p * 10.0 ** -i), atol=1e-6)
  # Each pair is a unit vector rotating by a fixed angle per token: rows p and p + k
  # differ by the same rotation for every p.
  pair = table[:, 0] + 1j * table[:, 1]
  np.testing.assert_allclose(np.abs(pair), 1.0, atol=1e-6)
  np.testing.assert_allclose(pair[10:] / pair[:-10], np.exp(-10j), atol=1e-5)  # sin + i cos = i e^(-ia)
  with pytest.raises(ValueError, match="even width"):
    positions.sincos1d_posemb(4, 7)


def test_video_encoder_with_the_table_has_no_position_parameter_and_takes_any_clip():
  model = vivit.VideoTransformer(num_classes=None, patch_size=4, tubelet_size=2,
                                 hidden_size=16, num_layers=1, mlp_dim=32, num_heads=2,
                                 posemb="sincos1d", classifier="gap")
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4, 8, 8, 3)))["params"]
  assert "posembed_input" not in params["Transformer"]
  apply = jax.jit(model.apply)
  for frames, size in ((4, 8), (6, 12)):
    out = apply({"params": params}, jnp.ones((1, frames, size, size, 3)))
    assert out.shape == (1, 16) and np.all(np.isfinite(out))
  x = jnp.ones((1, 4, 8, 8, 3))
  with pytest.raises(ValueError, match="sincos1d.*without cls"):
    model.clone(classifier="token").init(jax.random.key(0), x)


# VideoMAE (Table 7 of Tong et al. 2022: S 22M, B 87M, L 305M, H 633M) and VideoMAE V2's
# giant (Wang et al. 2023: 1011M), with a 400-class head: within 1.5M (their rounding and heads).
PUBLISHED_M = {"VideoMAE-S_16x2": 22, "VideoMAE-B_16x2": 87, "VideoMAE-L_16x2": 305,
               "VideoMAE-H_16x2": 633, "VideoMAEv2-g_14x2": 1011}


def videomae_count(width, depth, mlp, patch, classes=400):
  """By hand: tubelet conv, blocks (2 LN, q/k/v/out with q/v/out biases, MLP), fc_norm,
  head; no position parameter, no cls."""
  block = 4 * width + 4 * width * width + 3 * width + 2 * width * mlp + mlp + width
  return 2 * patch * patch * 3 * width + width + depth * block + 2 * width + width * classes + \
      classes


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_videomae_sizes_have_the_published_parameter_counts(name):
  kw = models.model_kwargs(name)
  model = models.create_model(name, num_classes=400, scan_layers=True)  # one block traced
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 2, 224, 224, 3)))
  count = sum(x.size for x in jax.tree.leaves(shapes))
  assert count == videomae_count(kw["hidden_size"], kw["num_layers"], kw["mlp_dim"],
                                 kw["patch_size"])
  assert abs(count / 1e6 - PUBLISHED_M[name]) < 1.5
