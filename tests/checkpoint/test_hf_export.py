"""save_hf: ViT and DINOv2 written as transformers model folders, read back unchanged.

What transformers itself computes from these folders was checked once (transformers 5.24:
AutoModel.from_pretrained on the exported folders, outputs equal to ours within 2e-6;
docs/checkpoint_formats.md); here the round trip and the key names are pinned.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from vit_jax import checkpoint, models
from vit_jax.checkpoint.errors import CheckpointError

X = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
with open(os.path.join(os.path.dirname(__file__), "data", "hf_vision_keys.json")) as f:
  RELEASED = json.load(f)["models"]

CASES = {  # name -> (create_model overrides, num_classes, transformers' file it matches)
    "vit_head": (dict(gelu_approximate=False), 5, None),
    "vit_features": (dict(gelu_approximate=False), None, None),
    "dinov2": (dict(gelu_approximate=False, layer_scale=1e-5), None, "dinov2"),
    "dinov2_reg": (dict(gelu_approximate=False, layer_scale=1e-5, num_registers=4,
                        no_embed_class=True), None, "dinov2_with_registers"),
    "dinov2_swiglu": (dict(layer_scale=1e-5, mlp_activation="swiglu"), None, "dinov2_swiglu"),
}


def _random_params(model):
  params = model.init(jax.random.key(0), X)["params"]
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(3), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape)
                                   for x, k in zip(leaves, keys, strict=True)])


@pytest.mark.parametrize("name", CASES)
def test_round_trip_through_a_transformers_folder(tmp_path, name):
  overrides, classes, released = CASES[name]
  model = models.create_model("ViT-Mu_4", num_classes=classes, **overrides)
  params = _random_params(model)
  checkpoint.save_hf(params, model, str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
  pre = checkpoint.load_pretrained(str(tmp_path))
  ours = model.apply({"params": params}, X)
  np.testing.assert_allclose(pre.model.apply({"params": pre.params}, X), ours, atol=2e-5)
  if released:  # the same key set transformers saves for that family
    keys = safetensors.numpy.load_file(str(tmp_path / "model.safetensors"))
    assert set(keys) == set(RELEASED[released]["keys"])


def test_models_transformers_cannot_express_are_refused(tmp_path):
  model = models.create_model("ViT-Mu_4", num_classes=None, classifier="map")
  with pytest.raises(CheckpointError, match=r"classifier='map'.*timm safetensors instead"):
    checkpoint.save_hf(_random_params(model), model, str(tmp_path))
  assert not os.listdir(tmp_path)
  assert jnp.isfinite(model.apply({"params": _random_params(model)}, X)).all()
