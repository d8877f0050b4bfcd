"""VideoPrism's factorised encoder (vivit "factorised_encoder_tokens"): the registered sizes.

The token routing is checked against a numpy forward in tests/checkpoint/test_hf_videoprism.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import create_model
from vit_jax.tools import attention_maps


@pytest.mark.parametrize("name,params", [
    # transformers' VideoPrismForVideoClassification at its defaults (16 frames, 288 px,
    # 18 px patches; the L widths of google/videoprism-large), 400 classes; the encoders
    # alone are 114,365,184 and 353,973,248 (the paper's 114M / 354M).
    ("VideoPrism-B_18", 124_122_512), ("VideoPrism-L_18", 371_177_104)])
def test_published_sizes_have_the_reference_parameter_count(name, params):
  model = create_model(name, num_classes=400)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 288, 288, 3)))
  assert sum(a.size for a in jax.tree.leaves(shapes)) == params



def test_attention_maps_follow_the_pool_through_both_encoders():
  """Rollout through the spatial then the temporal layers from the attention pool's probe:
  no cls token, so each map is a distribution over the t x gh x gw tokens."""
  model = create_model("VideoPrism-Mu_4", num_classes=5, num_layers=1)
  x = jax.random.uniform(jax.random.key(0), (2, 3, 8, 8, 3))
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  params = jax.tree.map(lambda a: jnp.asarray(0.3 * rng.standard_normal(a.shape), a.dtype),
                        shapes)
  maps = attention_maps.compute(model, params, x)
  assert maps.grid == (3, 2, 2)
  assert maps.rollout.shape == (2, 3, 2, 2)
  assert maps.layer_heads.shape == (2, 2, 2, 3, 2, 2)  # 1 spatial + 1 temporal layer
  assert maps.pool_heads.shape == (2, 2, 3, 2, 2)
  np.testing.assert_allclose(maps.rollout.sum((1, 2, 3)), 1.0, atol=1e-5)
  np.testing.assert_allclose(maps.pool_heads.sum((2, 3, 4)), 1.0, atol=1e-5)
