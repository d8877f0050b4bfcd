"""transformers vision towers renamed to timm's names (vit_jax/checkpoint/hf_vision.py).

The key names and shapes are what transformers 5.24's `save_pretrained` wrote for tiny
models of each family (data/hf_vision_keys.json); the values are generated here. That
these renamings compute the same function as the transformers models was checked once
against transformers and timm themselves (max |difference| 0 in float32 for every family;
see docs/checkpoint_formats.md); here each rule is pinned.
"""

import json
import os

import numpy as np
import pytest

from vit_jax.checkpoint import hf_vision
from vit_jax.checkpoint.errors import CheckpointError

with open(os.path.join(os.path.dirname(__file__), "data", "hf_vision_keys.json")) as f:
  RELEASED = json.load(f)["models"]


def released(name, seed=0):
  rng = np.random.default_rng(seed)
  entry = RELEASED[name]
  state = {k: rng.normal(size=shape).astype(np.float32) for k, shape in entry["keys"].items()}
  return entry["config"], state


def block_keys(i, *, layer_scale=False):
  names = [f"blocks.{i}.{n}.{p}" for n in ("norm1", "norm2", "attn.qkv", "attn.proj",
                                            "mlp.fc1", "mlp.fc2") for p in ("weight", "bias")]
  if layer_scale:
    names += [f"blocks.{i}.ls1.gamma", f"blocks.{i}.ls2.gamma"]
  return names


def test_dinov2_with_registers_becomes_timms_no_embed_class_model():
  config, state = released("dinov2_with_registers")
  out, arch, args, overrides, skipped = hf_vision.to_timm(config, state)
  assert arch == "vit_w32_patch14_reg4_dinov2" and args == {"img_size": 28}
  assert overrides == {"layernorm_epsilon": 1e-6}
  assert skipped == ["embeddings.mask_token"]
  assert set(out) == {"cls_token", "reg_token", "pos_embed", "patch_embed.proj.weight",
                      "patch_embed.proj.bias", "norm.weight", "norm.bias",
                      *block_keys(0, layer_scale=True), *block_keys(1, layer_scale=True)}
  pos = state["embeddings.position_embeddings"]  # [1, 1 + 4, D]: row 0 is the cls row
  np.testing.assert_array_equal(out["cls_token"], state["embeddings.cls_token"] + pos[:, :1])
  np.testing.assert_array_equal(out["pos_embed"], pos[:, 1:])
  assert out["reg_token"].shape == (1, 4, 32)
  # q, k, v rows stacked in that order: timm's fused qkv Linear.
  qkv = out["blocks.1.attn.qkv.weight"]
  assert qkv.shape == (96, 32)
  np.testing.assert_array_equal(qkv[32:64],
                                state["encoder.layer.1.attention.attention.key.weight"])
  np.testing.assert_array_equal(out["blocks.0.ls2.gamma"],
                                state["encoder.layer.0.layer_scale2.lambda1"])


def test_dinov2_keeps_its_cls_position_row_and_packs_swiglu():
  config, state = released("dinov2")
  out, arch, _, _, _ = hf_vision.to_timm(config, state)
  assert arch == "vit_w32_patch14_dinov2" and "reg_token" not in out
  np.testing.assert_array_equal(out["pos_embed"], state["embeddings.position_embeddings"])
  config, state = released("dinov2_swiglu")
  out, _, args, _, _ = hf_vision.to_timm(config, state)
  assert args["mlp_layer"] == "swiglu_packed"
  # weights_in is [x1; x2] with silu(x1) * x2: timm's SwiGLUPacked fc1, unchanged.
  np.testing.assert_array_equal(out["blocks.0.mlp.fc1.weight"],
                                state["encoder.layer.0.mlp.weights_in.weight"])


def test_vit_mae_drops_the_decoder_and_keeps_hfs_epsilon():
  config, state = released("vit_mae_pretraining")
  out, arch, _, overrides, skipped = hf_vision.to_timm(config, state)
  assert arch == "vit_w32_patch16_224" and overrides == {"layernorm_epsilon": 1e-12}
  assert skipped and all(k.startswith("decoder.") for k in skipped)
  assert set(out) == {"cls_token", "pos_embed", "patch_embed.proj.weight",
                      "patch_embed.proj.bias", "norm.weight", "norm.bias", *block_keys(0),
                      *block_keys(1)}


def test_deit_distilled_has_both_tokens_and_heads():
  config, state = released("deit_distilled")
  out, arch, _, _, _ = hf_vision.to_timm(config, state)
  assert arch == "deit_w32_distilled_patch16_224"
  assert out["dist_token"].shape == (1, 1, 32) and out["pos_embed"].shape == (1, 6, 32)
  assert out["head.weight"].shape == out["head_dist.weight"].shape == (5, 32)


@pytest.mark.parametrize("name", ["clip", "clip_vision_projection"])
def test_clip_vision_tower_with_its_bias_free_projection(name):
  config, state = released(name)
  out, arch, _, overrides, skipped = hf_vision.to_timm(config, state)
  assert arch == "vit_w32_patch16_clip_quickgelu_32" and overrides == {"layernorm_epsilon": 1e-5}
  assert out["cls_token"].shape == (1, 1, 32) and out["pos_embed"].shape == (1, 5, 32)
  assert "patch_embed.proj.bias" not in out and "norm_pre.weight" in out
  np.testing.assert_array_equal(out["head.weight"], state["visual_projection.weight"])
  assert not out["head.bias"].any()
  if name == "clip":  # the text tower is left out, and said so
    assert "logit_scale" in skipped and any(k.startswith("text_model.") for k in skipped)
    assert "text_projection.weight" in skipped


def test_siglip_map_head_splits_query_from_key_value():
  config, state = released("siglip_vision")
  out, arch, args, _, _ = hf_vision.to_timm(config, state)
  assert arch == "vit_w32_patch16_siglip_32"
  # HF and big_vision SigLIP use tanh GELU (timm's siglip definitions default to erf).
  assert args == {"img_size": 32, "act_layer": "gelu_tanh", "global_pool": "map"}
  assert "cls_token" not in out and out["pos_embed"].shape == (1, 4, 32)
  w = state["head.attention.in_proj_weight"]
  np.testing.assert_array_equal(out["attn_pool.q.weight"], w[:32])
  np.testing.assert_array_equal(out["attn_pool.kv.weight"], w[32:])
  assert out["attn_pool.latent"].shape == (1, 1, 32)


def test_unmapped_keys_and_unknown_families_are_named():
  config, state = released("dinov2")
  state["encoder.layer.0.attention.attention.rel_bias"] = np.zeros(3, np.float32)
  with pytest.raises(CheckpointError, match=r"1 keys that no dinov2 rule maps.*rel_bias"):
    hf_vision.to_timm(config, state)
  with pytest.raises(CheckpointError, match=r"model_type='swin'.*\['clip', 'clip_vision_model'"):
    hf_vision.to_timm({"model_type": "swin"}, {})
