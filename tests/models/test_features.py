"""`model.apply(..., features=True)`: the pooled representation and the patch tokens in one call."""

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import models

X = jax.random.normal(jax.random.key(1), (2, 16, 12, 3))  # 4 x 3 patches of 4 px


def _init(model):
  return model.init(jax.random.key(0), X)["params"]


def test_pooled_is_what_the_head_reads_and_tokens_leave_out_cls_and_registers():
  model = models.create_model("ViT-Mu_4", num_classes=5, num_registers=2, layer_scale=1e-5)
  params = _init(model)
  params["head"]["kernel"] = jax.random.normal(jax.random.key(2), params["head"]["kernel"].shape)
  out = model.apply({"params": params}, X, features=True)
  assert out["pooled"].shape == (2, 32) and out["patch_tokens"].shape == (2, 12, 32)
  logits = model.apply({"params": params}, X)
  np.testing.assert_allclose(out["pooled"] @ params["head"]["kernel"] + params["head"]["bias"],
                             logits, atol=1e-5)
  # The same encoder output, unpooled: its last 12 tokens are the patch tokens.
  tokens = model.clone(classifier="unpooled", class_token=True, num_classes=None).apply(
      {"params": params}, X)
  assert tokens.shape == (2, 1 + 2 + 12, 32)
  np.testing.assert_allclose(tokens[:, 3:], out["patch_tokens"], atol=1e-6)


def test_pooled_follows_pre_logits_map_and_distillation():
  rep = models.create_model("ViT-Mu_4", num_classes=5, representation_size=16)
  out = rep.apply({"params": _init(rep)}, X, features=True)
  assert out["pooled"].shape == (2, 16) and out["patch_tokens"].shape == (2, 12, 32)
  map_model = models.create_model("ViT-Mu_4", num_classes=None, classifier="map")
  params = _init(map_model)
  out = map_model.apply({"params": params}, X, features=True)
  np.testing.assert_allclose(out["pooled"], map_model.apply({"params": params}, X), atol=1e-6)
  assert out["patch_tokens"].shape == (2, 12, 32)  # no cls token: all tokens are patches
  deit = models.create_model("ViT-Mu_4", num_classes=5, distilled=True)
  out = deit.apply({"params": _init(deit)}, X, features=True)
  assert out["pooled"].shape == (2, 32) and out["patch_tokens"].shape == (2, 12, 32)
  assert jnp.isfinite(out["pooled"]).all()
