"""DINOv3 in the forms users hold: transformers `dinov3_vit` folders and timm's SwiGLU sizes.

The folders have the key names, shapes and config.json transformers' `save_pretrained`
writes (tests/checkpoint/data/hf_fam_b_keys.json); `load_pretrained` alone must give the
output of an independent numpy forward of DINOv3ViTModel (_fam_b_forward.py) on a
non-square input, where RoPE's row/column order shows. timm's S+ / H+ / 7B / `_qkvb` names
are in test_timm_families.py (dinov3_splus_qkvb) and their sizes in
tests/models/test_registry.py.
"""

import json
import os

import jax
import numpy as np
import pytest
import safetensors.numpy
from _fam_b_forward import dinov3_forward

from vit_jax import checkpoint
from vit_jax.checkpoint import preprocessing as P
from vit_jax.checkpoint import timm_model, tree
from vit_jax.models import inspection

DATA = os.path.join(os.path.dirname(__file__), "data", "hf_fam_b_keys.json")
with open(DATA) as f:
  HF = json.load(f)["models"]
ATOL = 1e-4


def generated(shapes, seed=0):
  rng = np.random.default_rng(seed)
  out = {}
  for k, shape in shapes.items():
    v = rng.normal(scale=0.3, size=shape)
    if (k.endswith("norm1.weight") or k.endswith("norm2.weight") or k == "norm.weight"
        or k.endswith("lambda1")):
      v = 1.0 + 0.1 * v
    out[k] = v.astype(np.float32)
  return out


def folder_of(tmp_path, name, state=None, **config_changes):
  entry = HF[name]
  folder = tmp_path / name
  folder.mkdir()
  state = generated(entry["keys"]) if state is None else state
  safetensors.numpy.save_file(state, str(folder / "model.safetensors"))
  (folder / "config.json").write_text(json.dumps(dict(entry["config"], **config_changes)))
  return folder, dict(entry["config"], **config_changes), state


@pytest.mark.parametrize("name", ["dinov3_vit", "dinov3_vit_gated"])
def test_transformers_folder_gives_the_reference_output(tmp_path, name):
  folder, config, state = folder_of(tmp_path, name)
  pre = checkpoint.load_pretrained(str(folder))
  assert pre.format == "hf:dinov3_vit" and pre.model.classifier == "token"
  o = pre.model.options
  assert (o.rope, o.rope_base, o.num_registers, o.qkv_bias) == ("dinov3", 100.0, 4, "qv")
  assert o.mlp_activation == ("swiglu" if name.endswith("gated") else "gelu")
  x = np.random.default_rng(1).uniform(-1, 1, (2, 16, 12, 3)).astype(np.float32)
  out = jax.jit(lambda p, x: pre.model.apply({"params": p}, x, features=True))(pre.params, x)
  np.testing.assert_allclose(out["pooled"], dinov3_forward(config, state, x), atol=ATOL)
  np.testing.assert_allclose(out["patch_tokens"], dinov3_forward(config, state, x, True),
                             atol=ATOL)
  assert pre.preprocessing.mean == P.IMAGENET_MEAN  # the family's, without a processor file


def test_rope_theta_is_read_from_the_config(tmp_path):
  folder, config, state = folder_of(tmp_path, "dinov3_vit", rope_theta=37.0)
  pre = checkpoint.load_pretrained(str(folder))
  assert pre.model.options.rope_base == 37.0
  x = np.random.default_rng(2).uniform(-1, 1, (1, 8, 12, 3)).astype(np.float32)
  np.testing.assert_allclose(jax.jit(pre.model.apply)({"params": pre.params}, x),
                             dinov3_forward(config, state, x), atol=ATOL)


def test_export_to_timm_reads_back_the_same_model(tmp_path):
  # The transformers folder in timm's names (gated: fc1_g / fc1_x as timm's S+ has them),
  # read back by timm_model with the S+ architecture: identical params and model.
  folder, _, _ = folder_of(tmp_path, "dinov3_vit_gated")
  pre = checkpoint.load_pretrained(str(folder))
  out = tmp_path / "timm"
  out.mkdir()
  checkpoint.save_safetensors_timm(pre.params, str(out / "model.safetensors"))
  keys = safetensors.numpy.load_file(str(out / "model.safetensors"))
  assert {"blocks.0.mlp.fc1_g.weight", "blocks.0.attn.q_bias", "blocks.0.gamma_1",
          "reg_token"} <= set(keys) and "blocks.0.attn.qkv.bias" not in keys
  (out / "config.json").write_text(json.dumps({
      "architecture": "vit_small_plus_patch16_dinov3_qkvb", "num_classes": 0,
      "model_args": {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 4,
                     "global_pool": "token"}}))
  params, found = timm_model.read_timm(str(out))
  flat, again = tree.flatten(pre.params), tree.flatten(params)
  assert sorted(flat) == sorted(again) and all(np.array_equal(flat[k], again[k]) for k in flat)
  # The same model (LayerScale's init value aside: timm's 1e-5, transformers' config 1.0;
  # timm's name implies the RoPE base that config.json states).
  assert found.model(layer_scale=1.0, rope_temperature=100.0) == pre.model.clone(
      layer_scale=1.0)
  back = checkpoint.save_safetensors_timm  # and once more: the same bytes' tensors
  back(params, str(tmp_path / "again.safetensors"))
  twice = safetensors.numpy.load_file(str(tmp_path / "again.safetensors"))
  assert all(np.array_equal(twice[k], keys[k]) for k in keys) and sorted(twice) == sorted(keys)


def test_attention_maps_cover_cls_registers_and_patches(tmp_path):
  folder, _, _ = folder_of(tmp_path, "dinov3_vit")
  pre = checkpoint.load_pretrained(str(folder))
  x = np.zeros((1, 16, 12, 3), np.float32)
  _, weights = jax.jit(lambda p, x: inspection.attention_weights(pre.model, p, x))(
      pre.params, x)
  maps = inspection.stack_encoder_weights(weights)
  assert maps.shape == (2, 1, 2, 5 + 12, 5 + 12)  # layers, B, heads, cls + 4 reg + 4x3
  np.testing.assert_allclose(np.asarray(maps).sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("change,match", [
    (dict(hidden_act="gelu"), r"gated MLP with hidden_act='gelu' is not built here"),
    ("no_o_bias", r"no layer.0.attention.o_proj.bias: a DINOv3 with proj_bias=False"),
    ("k_bias_only", r"q/k/v biases \{'q': False, 'k': True, 'v': False\}"),
])
def test_what_is_not_built_is_refused_by_name(tmp_path, change, match):
  state = generated(HF["dinov3_vit_gated"]["keys"])
  changes = change if isinstance(change, dict) else {}
  if change == "no_o_bias":
    for i in range(2):
      del state[f"layer.{i}.attention.o_proj.bias"]
  if change == "k_bias_only":
    for i in range(2):
      a = f"layer.{i}.attention."
      state[a + "k_proj.bias"] = state.pop(a + "q_proj.bias")
      del state[a + "v_proj.bias"]
  folder, _, _ = folder_of(tmp_path, "dinov3_vit_gated", state, **changes)
  with pytest.raises(checkpoint.CheckpointError, match=match):
    checkpoint.load_pretrained(str(folder))


def test_a_sharded_folder_reads_every_shard(tmp_path):
  # facebook/dinov3-vit7b16-*: save_pretrained shards it (model-0000i-of-0000n.safetensors
  # and model.safetensors.index.json mapping each tensor to its file).
  folder, _, state = folder_of(tmp_path, "dinov3_vit_gated")
  whole = checkpoint.load_pretrained(str(folder))
  (folder / "model.safetensors").unlink()
  names = sorted(state)
  shards = {"model-00001-of-00002.safetensors": names[::2],
            "model-00002-of-00002.safetensors": names[1::2]}
  for file, keys in shards.items():
    safetensors.numpy.save_file({k: state[k] for k in keys}, str(folder / file))
  (folder / "model.safetensors.index.json").write_text(json.dumps(
      {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}))
  sharded = checkpoint.load_pretrained(str(folder))
  flat, again = tree.flatten(whole.params), tree.flatten(sharded.params)
  assert sorted(flat) == sorted(again) and all(np.array_equal(flat[k], again[k]) for k in flat)
  assert sharded.model == whole.model
  (folder / "model-00002-of-00002.safetensors").unlink()
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"names 2 shard\(s\); missing: model-00002-of-00002.safetensors"):
    checkpoint.load_pretrained(str(folder))


@pytest.mark.slow  # the driver's Setup (data, mesh, init, adapt): ~8 s on an idle CPU
def test_from_checkpoint_fine_tunes_the_folders_model(tmp_path, digits_data_dir):
  # model_name="from_checkpoint": the architecture (RoPE, registers, no position
  # embedding to resize) and the preprocessing come from the folder; the 28 px digits
  # give a 7x7 grid where the checkpoint's RoPE needs no parameters changed.
  from tests.helpers import tiny_config  # noqa: PLC0415
  from vit_jax.driver import config as config_lib  # noqa: PLC0415
  from vit_jax.driver import train  # noqa: PLC0415

  folder, _, state = folder_of(tmp_path, "dinov3_vit_gated")
  c = tiny_config(digits_data_dir, model_name=config_lib.FROM_CHECKPOINT, total_steps=2,
                  **{"init_from.path": str(folder), "data.image_size": 28,
                     "lr.warmup_steps": 1})
  setup = train.Setup(c, str(tmp_path / "run"))
  o = setup.model.options
  assert (o.rope, o.num_registers, o.mlp_activation, setup.model.num_classes) == (
      "dinov3", 4, "swiglu", 10)
  assert setup.config.data.mean == P.IMAGENET_MEAN
  params = jax.device_get(setup.pretrained_params(str(folder)))
  np.testing.assert_array_equal(params["registers"], state["embeddings.register_tokens"])
  assert "posembed_input" not in params["Transformer"]
  assert params["head"]["kernel"].shape == (32, 10) and not np.any(params["head"]["kernel"])
