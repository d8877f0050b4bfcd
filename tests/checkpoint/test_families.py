"""Model families (vit_jax/families): one module each, the only statement of their facts.

A family added in one test-local file (_toy_family.py) is registered, read from a timm
Hub folder by `load_pretrained` and preprocessed as it says; timm architectures that no
family names exactly (Perception Encoder, ...) are refused rather than built as a plain
ViT; a config.json whose architecture has other sizes than the weights is refused.
"""

import json

import _timm_families as F
import _toy_family
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from vit_jax import checkpoint, families, models
from vit_jax.checkpoint.errors import CheckpointError


def timm_folder(tmp_path, state, architecture, name="folder", **config):
  folder = tmp_path / name
  folder.mkdir()
  safetensors.numpy.save_file(state, str(folder / "model.safetensors"),
                              metadata={"format": "pt"})
  (folder / "config.json").write_text(json.dumps(dict(architecture=architecture, **config)))
  return folder


def test_a_family_in_one_file_is_registered_and_loaded(tmp_path):
  x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  families.register(_toy_family.FAMILY)
  try:
    model = models.create_model("ToyViT-Mu_4", num_classes=5)
    assert model.options.layernorm_epsilon == 1e-3 and models.image_size("ToyViT-Mu_4") == 16
    params = model.init(jax.random.key(0), jnp.asarray(x))["params"]
    expected = np.asarray(model.apply({"params": params}, x))
    folder = tmp_path / "toy"
    folder.mkdir()
    checkpoint.save_safetensors_timm(params, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(
        {"architecture": _toy_family.ARCHITECTURE + ".toy_tag", "num_classes": 5}))
    pre = checkpoint.load_pretrained(str(folder))
    # The family's options (epsilon, QuickGELU: not in the weights) built the same function.
    assert pre.model.options.mlp_activation == "quick_gelu"
    np.testing.assert_allclose(np.asarray(pre.model.apply({"params": pre.params}, x)), expected,
                               atol=1e-5)
    assert pre.preprocessing.mean == (0.1, 0.2, 0.3) and pre.preprocessing.input_size == (16, 16)
    assert pre.preprocessing.source == "toyvit default"
  finally:
    families.unregister(_toy_family.FAMILY.name)
  # Gone with its family: the name and the architecture.
  assert "ToyViT-Mu_4" not in models.list_models()
  with pytest.raises(CheckpointError, match=r"'toyvit_mu_patch4_16.toy_tag' is not one this"):
    checkpoint.load_pretrained(str(folder))


@pytest.mark.parametrize("architecture", [
    "vit_base_patch16_rope_reg1_gap_256",
    "vit_relpos_base_patch16_224",  # relative position bias
    "vit_base_patch16_224_miil",
])
def test_an_unknown_timm_architecture_is_refused_not_approximated(tmp_path, architecture):
  # Plain-ViT key names: only the architecture says these are other models.
  folder = timm_folder(tmp_path, F.family_state_dict("deit", (4, 4)), architecture,
                       model_args=dict(embed_dim=F.WIDTH, depth=F.DEPTH, num_heads=F.HEADS))
  with pytest.raises(CheckpointError, match=rf"timm architecture '{architecture}' is not one "
                     r"this project builds.*Known families.*dinov2: vit_\(\?P<size>"):
    checkpoint.load_pretrained(str(folder))
  with pytest.raises(CheckpointError, match=rf"'{architecture}' is not one this project"):
    checkpoint.load(str(folder))  # params only: not fitted into a plain ViT either


@pytest.mark.parametrize("architecture", ["vit_pe_core_small_patch16_384",
                                          "vit_pe_core_small_patch16_384.fb"])
def test_plain_vit_weights_under_a_perception_encoder_name_are_refused(tmp_path, architecture):
  # PE is read now (tests/checkpoint/test_timm_families_2025.py); a plain ViT's weights
  # (no norm_pre, a patch bias) under its name are still not fitted into it.
  folder = timm_folder(tmp_path, F.family_state_dict("deit", (4, 4)), architecture,
                       model_args=dict(embed_dim=F.WIDTH, depth=F.DEPTH, num_heads=F.HEADS))
  for load in (checkpoint.load_pretrained, checkpoint.load):
    with pytest.raises(CheckpointError, match=rf"'{architecture}', which has pre_norm=True, "
                       r"but the weights show pre_norm=False"):
      load(str(folder))


def test_architecture_sizes_that_are_not_the_weights_are_refused(tmp_path):
  # The weights: width 32, 2 blocks; the config names ViT-S (384 wide, 12 blocks).
  state = F.family_state_dict("deit", (4, 4))
  folder = timm_folder(tmp_path, state, "vit_small_patch16_224")
  with pytest.raises(CheckpointError, match=r"config\.json says architecture="
                     r"'vit_small_patch16_224', whose embed_dim is 384, but the weights have "
                     r"embed_dim=32.*model_args\.embed_dim"):
    checkpoint.load_pretrained(str(folder))
  with pytest.raises(CheckpointError, match=r"whose embed_dim is 384"):
    checkpoint.load(str(folder))  # params only: refused the same way
  # The width stated, the depth still disagrees.
  folder = timm_folder(tmp_path, state, "vit_small_patch16_224", "stated",
                       model_args={"embed_dim": F.WIDTH})
  with pytest.raises(CheckpointError, match=r"whose depth is 12, but the weights have depth=2"):
    checkpoint.load_pretrained(str(folder))


def test_each_family_fact_is_stated_once():
  # Registered names, transformers model_types and timm patterns belong to one family
  # each, and every registered family model is one of them.
  names = [n for f in families.all_families() for n in f.models]
  types = [t for f in families.all_families() for t in f.hf]
  assert len(names) == len(set(names)) and len(types) == len(set(types))
  assert set(models.FAMILIES) <= set(names)
  for architecture, family in [("vit_small_patch14_reg4_dinov2", "dinov2"),
                               ("vit_base_patch16_224.mae", "mae"),
                               ("vit_base_patch16_224.augreg2_in21k_ft_in1k", "vit"),
                               ("deit3_base_patch16_224", "deit3"),
                               ("eva02_large_patch14_448.mim_m38m_ft_in22k_in1k", "eva02")]:
    assert families.timm_architecture(architecture)[0].name == family
  found = [f.name for f in families.all_families() for t in f.timm
           if t.match("vit_base_patch16_clip_quickgelu_224", "")]
  assert found == ["clip"]
