"""Attention logit soft-capping (EncoderOptions.attention_logit_cap; VideoPrism): known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import layers
from vit_jax.models.options import EncoderOptions


def _weights_and_out(cap, x):
  module = layers.MultiHeadDotProductAttention(
      num_heads=2, options=EncoderOptions(attention_logit_cap=cap, sow_attention_weights=True))
  params = module.init(jax.random.key(0), x)["params"]
  out, state = jax.jit(lambda p, x: module.apply({"params": p}, x, mutable=["intermediates"]))(
      params, x)
  return params, out, state["intermediates"]["attention_weights"][0]


def test_capped_softmax_is_the_closed_form():
  """weights = softmax(c * tanh(q.k / sqrt(hd) / c)), from the layer's own q and k."""
  x = 3.0 * jax.random.normal(jax.random.key(1), (2, 5, 16))  # large logits: the cap bites
  cap = 0.7
  params, out, weights = _weights_and_out(cap, x)
  q = np.einsum("bld,dhk->bhlk", x, params["query"]["kernel"]) + params["query"]["bias"][:, None]
  k = np.einsum("bld,dhk->bhlk", x, params["key"]["kernel"]) + params["key"]["bias"][:, None]
  logits = cap * np.tanh(q @ k.transpose(0, 1, 3, 2) / np.sqrt(8) / cap)
  expected = np.exp(logits - logits.max(-1, keepdims=True))
  expected /= expected.sum(-1, keepdims=True)
  np.testing.assert_allclose(weights, expected, atol=1e-5)
  # |capped logits| < c, so no weight in a row exceeds another by more than exp(2c).
  spread = lambda w: np.max(w.max(-1) / w.min(-1))  # the largest within-row ratio
  assert spread(weights) <= np.exp(2 * cap) * (1 + 1e-5)  # saturated: tanh = +-1
  _, _, uncapped = _weights_and_out(None, x)
  assert spread(uncapped) > np.exp(2 * cap)  # the input does need the cap
  # A cap far above the logits changes nothing.
  _, _, loose = _weights_and_out(1e4, x)
  np.testing.assert_allclose(loose, uncapped, atol=1e-5)


def test_cap_must_be_positive():
  with pytest.raises(ValueError, match="attention_logit_cap must be > 0"):
    EncoderOptions(attention_logit_cap=0.0)
  assert jnp.isfinite(_weights_and_out(1e-3, jnp.ones((1, 2, 16)))[1]).all()
