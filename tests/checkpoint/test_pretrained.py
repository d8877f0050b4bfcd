"""load_pretrained: the model, params and preprocessing of a file, with nothing else given.

Each case writes a checkpoint with its family's released key names and shapes (transformers'
from data/hf_vision_keys.json, open_clip's from data/openclip_keys.json, the released .npz),
loads it with `load_pretrained` alone, and compares the model's output with a numpy forward
pass that reads the file in its own family's names (_hf_families.py, _ckpt_helpers.py).
"""

import json
import os

import _ckpt_helpers as H
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from _transformers_forward import hf_family_forward

from vit_jax import checkpoint
from vit_jax.checkpoint import preprocessing as P
from vit_jax.checkpoint.errors import CheckpointError

DATA = os.path.join(os.path.dirname(__file__), "data")
with open(os.path.join(DATA, "hf_vision_keys.json")) as f:
  HF = json.load(f)["models"]
ATOL = 1e-4  # float32 model vs float64 numpy


def generated(shapes, seed=0):
  """Values for the released shapes: norms' scales around 1, the rest small."""
  rng = np.random.default_rng(seed)
  out = {}
  for k, shape in shapes.items():
    v = rng.normal(scale=0.3, size=shape)
    if (("norm" in k or "layrnorm" in k or "ln_" in k) and k.endswith("weight")) or \
        k.endswith("lambda1"):
      v = 1.0 + 0.1 * v
    out[k] = v.astype(np.float32)
  return out


def hf_folder(tmp_path, name, preprocessor=None):
  entry = HF[name]
  folder = tmp_path / name
  folder.mkdir()
  state = generated(entry["keys"])
  safetensors.numpy.save_file(state, str(folder / "model.safetensors"))
  (folder / "config.json").write_text(json.dumps(entry["config"]))
  if preprocessor:
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
  return folder, entry["config"], state


def images_for(config, batch=2, seed=1):
  size = config.get("vision_config", config)["image_size"]
  return np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)


def output(pre, x):
  return np.asarray(pre.model.apply({"params": pre.params}, jnp.asarray(x), train=False))


@pytest.mark.parametrize("name, out_dim", [
    ("dinov2", 32), ("dinov2_swiglu", 32), ("dinov2_with_registers", 32),
    ("vit_mae_pretraining", 32), ("deit_distilled", 5), ("clip", 24),
    ("clip_vision_projection", 24), ("siglip_vision", 32)])
def test_transformers_folders_match_the_transformers_forward(tmp_path, name, out_dim):
  folder, config, state = hf_folder(tmp_path, name)
  pre = checkpoint.load_pretrained(str(folder))
  x = images_for(config)
  expected = hf_family_forward(config, state, x)
  got = output(pre, x)
  assert got.shape == (2, out_dim)
  np.testing.assert_allclose(got, expected, atol=ATOL)
  assert pre.format == f"hf:{config['model_type']}"
  # Heads: a classifier's logits, else the pooled representation (no head).
  assert (pre.model.num_classes is None) == (name not in ("deit_distilled", "clip",
                                                          "clip_vision_projection"))


def test_preprocessing_from_the_folder_or_the_family(tmp_path):
  _, _, _ = hf_folder(tmp_path, "dinov2")
  pre = checkpoint.load_pretrained(str(tmp_path / "dinov2"))
  assert pre.preprocessing == P.Preprocessing(P.IMAGENET_MEAN, P.IMAGENET_STD, (28, 28),
                                              "bicubic", 1.0, "dinov2 default")
  folder, _, _ = hf_folder(tmp_path, "siglip_vision", preprocessor={
      "do_resize": True, "size": {"height": 32, "width": 32}, "resample": 2,
      "image_mean": [0.5] * 3, "image_std": [0.5] * 3})
  pre = checkpoint.load_pretrained(str(folder))
  assert pre.preprocessing.interpolation == "bilinear"
  assert pre.preprocessing.data_overrides()["value_range"] == (-1.0, 1.0)


def test_a_text_tower_is_left_out_and_reported(tmp_path):
  folder, _, _ = hf_folder(tmp_path, "clip")
  pre = checkpoint.load_pretrained(str(folder))
  assert "logit_scale" in pre.left_out and any(k.startswith("text_model.") for k in pre.left_out)


def to_openclip(state):
  """HF CLIPModel weights under OpenCLIP's names (open_clip's VisionTransformer)."""
  v = lambda k: state["vision_model." + k]
  out = {"visual.conv1.weight": v("embeddings.patch_embedding.weight"),
         "visual.class_embedding": v("embeddings.class_embedding"),
         "visual.positional_embedding": v("embeddings.position_embedding.weight"),
         "visual.proj": state["visual_projection.weight"].T.copy(),
         "logit_scale": np.array(2.0, np.float32)}
  for ours, theirs in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
    for p in ("weight", "bias"):
      out[f"visual.{ours}.{p}"] = v(f"{theirs}.{p}")
  for i in range(2):
    src, dst = f"encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
    for p in ("weight", "bias"):
      out[dst + f"attn.in_proj_{p}"] = np.concatenate(
          [v(src + f"self_attn.{n}_proj.{p}") for n in "qkv"])
      for ours, theirs in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"),
                           ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"),
                           ("mlp.c_proj", "mlp.fc2")):
        out[dst + f"{ours}.{p}"] = v(src + f"{theirs}.{p}")
  return out


def test_openclip_file_with_its_config(tmp_path):
  config, state = HF["clip"]["config"], generated(HF["clip"]["keys"])
  folder = tmp_path / "openclip"
  folder.mkdir()
  safetensors.numpy.save_file(to_openclip(state), str(folder / "open_clip_model.safetensors"))
  # As OpenCLIP's Hub repositories carry it (a quickgelu model).
  (folder / "open_clip_config.json").write_text(json.dumps({
      "model_cfg": {"embed_dim": 24, "quick_gelu": True,
                    "vision_cfg": {"width": 32, "head_width": 16, "layers": 2}},
      "preprocess_cfg": {"mean": list(P.OPENAI_CLIP_MEAN), "std": list(P.OPENAI_CLIP_STD)}}))
  pre = checkpoint.load_pretrained(str(folder))
  x = images_for(config)
  np.testing.assert_allclose(output(pre, x), hf_family_forward(config, state, x), atol=ATOL)
  assert pre.format == "openclip" and pre.preprocessing.mean == P.OPENAI_CLIP_MEAN
  # Without the config the activation is unknown: asked for, not guessed.
  os.remove(folder / "open_clip_config.json")
  with pytest.raises(CheckpointError, match=r"do not say its activation"):
    checkpoint.load_pretrained(str(folder / "open_clip_model.safetensors"))


def test_released_npz_gives_its_model_and_the_jax_preprocessing(tmp_path):
  arrays = H.released_npz_arrays(**H.MU, patch=4, grid=(4, 4), classes=5)
  path = str(tmp_path / "vit.npz")
  np.savez(path, **arrays)
  pre = checkpoint.load_pretrained(path)
  x = H.images(height=16, width=16)
  expected = H.jax_style_forward(arrays, x, depth=2, block_names=H.RELEASED_BLOCK)
  np.testing.assert_allclose(output(pre, x), expected, atol=ATOL)
  assert pre.model.num_classes == 5 and pre.model.classifier == "token"
  assert pre.preprocessing.input_size == (16, 16) and pre.preprocessing.mean == P.HALF


def test_a_transformers_file_without_its_config_is_refused(tmp_path):
  folder, _, _ = hf_folder(tmp_path, "siglip_vision")
  os.remove(folder / "config.json")
  with pytest.raises(CheckpointError, match=r"transformers weights without their config\.json"):
    checkpoint.load_pretrained(str(folder / "model.safetensors"))


def test_a_config_json_of_another_model_names_the_field(tmp_path):
  folder, config, _ = hf_folder(tmp_path, "dinov2")
  (folder / "config.json").write_text(json.dumps(dict(config, num_hidden_layers=12)))
  with pytest.raises(CheckpointError, match=r"config\.json says num_hidden_layers=12, the "
                     r"weights have 2"):
    checkpoint.load_pretrained(str(folder))


def test_big_vision_siglip_image_tower_npz(tmp_path):
  # SigLIP's released .npz: the image tower under params/img/ (MAP head, no cls token,
  # position embedding without a cls row, scanned blocks) beside a text tower.
  arrays = H.big_vision_npz_arrays(**H.MU, patch=4, grid=(4, 4), classes=5, pool="map",
                                   scan=True)
  on_disk = {"params/img/" + k: v for k, v in arrays.items()}
  on_disk["params/txt/Embed_0/embedding"] = np.zeros((10, 4), np.float32)
  path = str(tmp_path / "siglip.npz")
  np.savez(path, **on_disk)
  pre = checkpoint.load_pretrained(path)
  assert pre.model.classifier == "map" and pre.preprocessing.input_size == (16, 16)
  x = H.images(height=16, width=16)
  expected = H.jax_style_forward(arrays, x, depth=2, block_names=H.LINEN_BLOCK, scanned=True,
                                 posemb_before_cls=True, pool="map")
  np.testing.assert_allclose(output(pre, x), expected, atol=ATOL)


def test_hub_ids_load_their_cached_snapshot(tmp_path, monkeypatch):
  folder, config, state = hf_folder(tmp_path, "dinov2")
  cache = tmp_path / "hf_cache"
  commit = "a" * 40
  snapshot = cache / "models--facebook--dinov2-tiny" / "snapshots" / commit
  snapshot.mkdir(parents=True)
  (cache / "models--facebook--dinov2-tiny" / "refs").mkdir()
  (cache / "models--facebook--dinov2-tiny" / "refs" / "main").write_text(commit)
  for name in ("config.json", "model.safetensors"):
    os.symlink(folder / name, snapshot / name)
  monkeypatch.setenv("HF_HUB_CACHE", str(cache))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  pre = checkpoint.load_pretrained("hf-hub:facebook/dinov2-tiny")
  x = images_for(config)
  np.testing.assert_allclose(output(pre, x), hf_family_forward(config, state, x), atol=ATOL)


def test_our_npz_of_a_later_family_asks_for_its_config(tmp_path):
  import jax  # noqa: PLC0415

  from vit_jax import models  # noqa: PLC0415

  model = models.create_model("ViT-Mu_4", num_classes=5, num_registers=2)
  params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
  path = str(tmp_path / "ours.npz")
  checkpoint.save_npz(params, path)
  with pytest.raises(CheckpointError, match=r"\['registers'\]: its architecture is not in the "
                     r"params alone.*load_run"):
    checkpoint.load_pretrained(path)
