"""OpenCLIP vision towers renamed to timm's names (vit_jax/checkpoint/openclip_vision.py).

Key names and shapes: an open_clip 3.3 `CLIP(...)` state dict of a tiny model
(data/openclip_keys.json); values generated here. Checked once against open_clip and timm
(encode_image vs the timm model: max |difference| 1.2e-7 in float32).
"""

import json
import os

import numpy as np
import pytest

from vit_jax.checkpoint import openclip_vision
from vit_jax.checkpoint.errors import CheckpointError

with open(os.path.join(os.path.dirname(__file__), "data", "openclip_keys.json")) as f:
  RELEASED = json.load(f)["models"]["quick_gelu=True"]


def released(seed=0):
  rng = np.random.default_rng(seed)
  return {k: rng.normal(size=shape).astype(np.float32) for k, shape in RELEASED.items()}


def test_visual_tower_becomes_a_timm_clip_vit():
  state = released()
  assert openclip_vision.is_openclip(state)
  out, arch, args, overrides, skipped = openclip_vision.to_timm(state, quick_gelu=True)
  assert arch == "vit_w32_patch16_clip_quickgelu_32" and args == {"img_size": 32}
  assert overrides == {"layernorm_epsilon": 1e-5}
  assert "logit_scale" in skipped and all(not k.startswith("visual.") for k in skipped)
  np.testing.assert_array_equal(out["head.weight"], state["visual.proj"].T)
  assert not out["head.bias"].any() and "patch_embed.proj.bias" not in out
  np.testing.assert_array_equal(out["blocks.1.attn.qkv.weight"],
                                state["visual.transformer.resblocks.1.attn.in_proj_weight"])
  assert out["cls_token"].shape == (1, 1, 32) and out["pos_embed"].shape == (1, 5, 32)
  assert {"norm_pre.weight", "norm.bias", "blocks.0.mlp.fc2.weight"} <= set(out)
  _, arch, *_ = openclip_vision.to_timm(state, quick_gelu=False)
  assert arch == "vit_w32_patch16_clip_32"


def test_the_activation_must_be_said():
  with pytest.raises(CheckpointError, match=r"QuickGELU.*open_clip_config\.json"):
    openclip_vision.to_timm(released(), quick_gelu=None)
  assert openclip_vision.quick_gelu_from_config({"model_cfg": {"quick_gelu": True}}) is True
  assert openclip_vision.quick_gelu_from_config({"model_cfg": {"embed_dim": 512}}) is False
  assert openclip_vision.quick_gelu_from_config(None) is None


def test_towers_with_other_parts_are_refused_by_name():
  state = released()
  state["visual.attn_pool.query"] = np.zeros((1, 32), np.float32)
  with pytest.raises(CheckpointError, match=r"visual\.attn_pool\.query.*not supported"):
    openclip_vision.to_timm(state, quick_gelu=True)
