"""VideoTransformer(features=True): the pooled representation the head reads and every
tubelet's output tokens, from one pass, for each video encoder variant and pooling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import models

CASES = [  # (registered name, extra options): one per encoder / pooling form
    ("ViViT-Mu_4x2", {}),  # spatio_temporal, cls token
    ("ViViT-Mu_4x2", dict(variant="factorised_encoder")),  # spatial cls per frame
    ("ViViT-Mu_4x2", dict(variant="factorised_self_attention")),  # gap
    ("VideoMAE-Mu_4x2", {}),  # sincos1d, mean + fc_norm
    ("TimeSformer-Mu_4", {}),  # divided space-time, cls
    ("VideoPrism-Mu_4", {}),  # factorised tokens, attention pool
    ("VJEPA2-Mu_4x2", dict(classifier="attentive")),  # 3-D RoPE, attentive pooler
]


@pytest.mark.parametrize("name, extra", CASES)
def test_features_are_the_heads_input_and_every_tubelets_tokens(name, extra):
  model = models.create_model(name, num_classes=3, **extra)
  frames, size = 4, 16
  clip = jax.random.uniform(jax.random.key(1), (2, frames, size, size, 3), minval=-1, maxval=1)
  params = model.init(jax.random.key(0), clip)["params"]
  head = params["output_projection"]
  params = dict(params, output_projection={  # a non-zero head, so the check can fail
      "kernel": jax.random.normal(jax.random.key(2), head["kernel"].shape),
      "bias": jnp.arange(3, dtype=jnp.float32)})

  @jax.jit
  def both(p, x):
    return model.apply({"params": p}, x), model.apply({"params": p}, x, features=True)

  logits, found = both(params, clip)
  pooled, tokens = found["pooled"], found["patch_tokens"]
  k = params["output_projection"]
  np.testing.assert_allclose(pooled @ k["kernel"] + k["bias"], logits, atol=1e-5)
  ph = model.patch_hw[0]
  assert tokens.shape == (2, frames // model.tubelet_size * (size // ph) ** 2, model.hidden_size)
  assert np.all(np.isfinite(np.asarray(tokens))) and float(jnp.std(tokens)) > 0
  if model.classifier_in_use == "gap" and not model.options.fc_norm:
    # Average pooling reads exactly these tokens (after the encoder's final norm).
    np.testing.assert_allclose(pooled, tokens.mean(axis=1), atol=1e-5)
