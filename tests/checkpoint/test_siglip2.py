"""SigLIP 2's fixed-resolution image towers in the formats they are released in.

SigLIP 2 keeps SigLIP's image architecture (big_vision README_siglip2), so the siglip
family reads it; what is new is checked here with each format's real names and shapes:
  - transformers `siglip` (google/siglip2-*): a SiglipModel whose text tower is narrower
    than the image tower (g-opt), tests/checkpoint/data/hf_fam_b_keys.json;
  - big_vision's `.npz` (gs://big_vision/siglip2/*.npz): the image tower under
    `params/img/` (scanned blocks, MAP head, no image head), a Gemma-vocabulary text
    tower and the logit temperature / bias beside it.
timm's names added for SigLIP 2 (tanh GELU) are in test_timm_families.py (siglip2_tanh).
"""

import json
import os

import _ckpt_helpers as H
import jax
import numpy as np
import safetensors.numpy
from _transformers_forward import hf_family_forward

from vit_jax import checkpoint

DATA = os.path.join(os.path.dirname(__file__), "data", "hf_fam_b_keys.json")
ATOL = 1e-4


def test_transformers_siglip2_folder_reads_the_image_tower(tmp_path):
  with open(DATA) as f:
    entry = json.load(f)["models"]["siglip2_gopt"]
  rng = np.random.default_rng(0)
  state = {k: (rng.normal(scale=0.3, size=s) + (k.endswith("norm.weight") or k.endswith(
      ("layer_norm1.weight", "layer_norm2.weight", "layernorm.weight")))).astype(np.float32)
           for k, s in entry["keys"].items()}
  safetensors.numpy.save_file(state, str(tmp_path / "model.safetensors"))
  (tmp_path / "config.json").write_text(json.dumps(entry["config"]))
  pre = checkpoint.load_pretrained(str(tmp_path))
  vision = entry["config"]["vision_config"]
  # The heads come from vision_config (48 wide, 2 heads: no size table knows it).
  assert (pre.model.hidden_size, pre.model.num_heads) == (48, 2)
  assert pre.model.classifier == "map" and pre.model.num_classes is None
  assert "text_model.head.weight" in pre.left_out and "logit_bias" in pre.left_out
  x = np.random.default_rng(1).uniform(-1, 1, (2, vision["image_size"], vision["image_size"],
                                               3)).astype(np.float32)
  out = jax.jit(pre.model.apply)({"params": pre.params}, x)
  np.testing.assert_allclose(out, hf_family_forward(entry["config"], state, x), atol=ATOL)


def test_big_vision_siglip2_npz(tmp_path):
  arrays = H.big_vision_npz_arrays(**H.MU, patch=4, grid=(4, 4), classes=5, pool="map",
                                   scan=True)
  image = {k: v for k, v in arrays.items() if not k.startswith("head/")}  # no image head
  on_disk = {"params/img/" + k: v for k, v in image.items()}
  text_width = 16  # g-opt: the text tower (So400m) is narrower than the image tower
  on_disk.update({"params/txt/Embed_0/embedding": np.zeros((256, text_width), np.float32),
                  "params/txt/pos_embedding": np.zeros((1, 8, text_width), np.float32),
                  "params/txt/head/kernel": np.zeros((text_width, 32), np.float32),
                  "params/t": np.ones((1,), np.float32), "params/b": np.zeros((1,), np.float32)})
  path = str(tmp_path / "siglip2_b16_224.npz")
  np.savez(path, **on_disk)
  pre = checkpoint.load_pretrained(path)
  assert pre.format == "big_vision" and pre.model.classifier == "map"
  assert pre.model.num_classes is None and pre.model.options.gelu_approximate
  # big_vision's evaluation: resize (bilinear, no crop), value_range(-1, 1).
  assert pre.preprocessing.data_overrides() == dict(
      image_size=(16, 16), value_range=(-1.0, 1.0), mean=None, std=None, resize_small=None,
      resize_method="bilinear")
  x = H.images(height=16, width=16)
  identity = dict(image, **{"head/kernel": np.eye(32), "head/bias": np.zeros(32)})
  expected = H.jax_style_forward(identity, x, depth=2, block_names=H.LINEN_BLOCK,
                                 scanned=True, posemb_before_cls=True, pool="map")
  np.testing.assert_allclose(jax.jit(pre.model.apply)({"params": pre.params}, x), expected,
                             atol=ATOL)


# timm 1.0.31's SigLIP definitions (timm/models/vision_transformer.py): the names whose
# model_args state act_layer="gelu_tanh", and those on timm's default erf GELU.
TIMM_TANH = ["vit_base_patch32_siglip_256", "vit_large_patch16_siglip_512",
             "vit_so400m_patch16_siglip_256", "vit_so400m_patch16_siglip_384",
             "vit_so400m_patch16_siglip_512", "vit_giantopt_patch16_siglip_256",
             "vit_giantopt_patch16_siglip_384", "vit_base_patch32_siglip_gap_256",
             "vit_large_patch16_siglip_gap_512", "vit_so400m_patch16_siglip_gap_256",
             "vit_so400m_patch16_siglip_gap_384", "vit_so400m_patch16_siglip_gap_512",
             "vit_giantopt_patch16_siglip_gap_256", "vit_giantopt_patch16_siglip_gap_384"]
TIMM_ERF = ["vit_base_patch16_siglip_224", "vit_base_patch16_siglip_256",
            "vit_base_patch16_siglip_384", "vit_base_patch16_siglip_512",
            "vit_large_patch16_siglip_256", "vit_large_patch16_siglip_384",
            "vit_so400m_patch14_siglip_224", "vit_so400m_patch14_siglip_378",
            "vit_so400m_patch14_siglip_384", "vit_base_patch16_siglip_gap_224",
            "vit_base_patch16_siglip_gap_256", "vit_base_patch16_siglip_gap_384",
            "vit_base_patch16_siglip_gap_512", "vit_large_patch16_siglip_gap_256",
            "vit_large_patch16_siglip_gap_384", "vit_so400m_patch14_siglip_gap_224",
            "vit_so400m_patch14_siglip_gap_378", "vit_so400m_patch14_siglip_gap_384",
            "vit_so400m_patch14_siglip_gap_448", "vit_so400m_patch14_siglip_gap_896"]


def test_every_timm_siglip_name_has_its_gelu_form_and_pooling():
  from vit_jax import families  # noqa: PLC0415

  for name in TIMM_TANH + TIMM_ERF:
    matches = [(f.name, t) for f in families.all_families() for t in f.timm
               if t.match(name, "v2_webli")]
    assert len(matches) == 1 and matches[0][0] == "siglip", name
    entry = matches[0][1]
    assert entry.options["gelu_approximate"] == (name in TIMM_TANH), name
    assert entry.global_pool == ("avg" if "_gap_" in name else None), name
  # Sizes no timm SigLIP has are not read approximately.
  for name in ("vit_so400m_patch14_siglip_512", "vit_large_patch16_siglip_224"):
    assert not any(t.match(name, "") for f in families.all_families() for t in f.timm)
