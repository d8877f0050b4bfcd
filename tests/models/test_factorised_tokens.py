"""VideoPrism's factorised encoder (vivit "factorised_encoder_tokens"): the registered sizes.

The token routing is checked against a numpy forward in tests/checkpoint/test_hf_videoprism.py.
"""

import jax
import jax.numpy as jnp
import pytest

from vit_jax.models import create_model


@pytest.mark.parametrize("name,params", [
    # transformers' VideoPrismForVideoClassification at its defaults (16 frames, 288 px,
    # 18 px patches; the L widths of google/videoprism-large), 400 classes; the encoders
    # alone are 114,365,184 and 353,973,248 (the paper's 114M / 354M).
    ("VideoPrism-B_18", 124_122_512), ("VideoPrism-L_18", 371_177_104)])
def test_published_sizes_have_the_reference_parameter_count(name, params):
  model = create_model(name, num_classes=400)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 288, 288, 3)))
  assert sum(a.size for a in jax.tree.leaves(shapes)) == params

