"""SigLIP 2 NaFlex checkpoints: transformers `siglip2` folders and timm NaFlexViT folders.

`data/siglip2_naflex_keys.json` holds the real key names, shapes and config fields of a
tiny Siglip2VisionModel, a Siglip2Model (vision tower + text tower), Siglip2ImageProcessor's
preprocessor_config.json (transformers 5.24) and timm's naflexvit_base_patch16_siglip
(timm 1.0.31; width 32, 2 layers, patch 4, a 4x4 position grid), dumped from
`save_pretrained` / `state_dict()` of random-init models. The tests fill those keys with
random values, load the folders through load_pretrained and compare with an independent
numpy forward written from transformers' Siglip2VisionModel (pre-patchified pixels, a
Linear patch embedding, the learned grid resized per image with bilinear + antialias,
the MAP head): at two non-square sizes, and in a packed batch of three sizes.
"""

import json
import os

import _timm_families as F
import jax
import numpy as np
import pytest
import safetensors.numpy
from _ckpt_helpers import Filler, gelu, layer_norm, softmax

from vit_jax import checkpoint
from vit_jax.checkpoint import safetensors_io, tree
from vit_jax.models.packed import pack_images

DATA = os.path.join(os.path.dirname(__file__), "data", "siglip2_naflex_keys.json")
PATCH = 4
GRIDS = [(3, 5), (6, 2), (4, 4)]  # non-square both ways (shrinking and growing), square
ATOL = 1e-4

with open(DATA) as _f:
  KEYS = json.load(_f)


def _fill(shapes, seed=0):
  fill = Filler(seed)
  return {k: (fill(*s, around=1.0) if k.endswith(("norm1.weight", "norm2.weight", "norm.weight",
                                                  "layernorm.weight"))
              else fill(*s, scale=0.5 if len(s) < 2 or k.endswith("probe") else None))
          for k, s in shapes.items()}


def _folder(tmp_path, name, files):
  folder = tmp_path / name
  folder.mkdir()
  for file, content in files.items():
    if file.endswith(".safetensors"):
      safetensors.numpy.save_file(content, str(folder / file), metadata={"format": "pt"})
    else:
      (folder / file).write_text(json.dumps(content))
  return folder


def hf_folder(tmp_path, name, preprocessor=None):
  spec = KEYS["transformers"][name]
  sd = _fill(spec["keys"])
  files = {"model.safetensors": sd, "config.json": spec["config"]}
  files["preprocessor_config.json"] = preprocessor or KEYS["transformers"]["preprocessor_config"]
  return _folder(tmp_path, name, files), sd


def images(grids=GRIDS, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.uniform(-1, 1, (gh * PATCH, gw * PATCH, 3)).astype(np.float32) for gh, gw in grids]


# ------------------------------------------------- numpy forward (transformers' Siglip2)

def _resize_weights(grid_size, size):
  """Siglip2VisionEmbeddings.resize_positional_embeddings' weights along one axis
  (F.interpolate bilinear, align_corners=False, antialias), [size, grid_size]."""
  scale = grid_size / size
  support = max(scale, 1.0)
  center = (np.arange(size) + 0.5) * scale - 0.5
  w = np.maximum(1 - np.abs(np.arange(grid_size)[None] - center[:, None]) / support, 0)
  return w / w.sum(-1, keepdims=True)


def siglip2_forward(sd, config, image, prefix=""):
  """Siglip2VisionModel's pooler_output [D] for one image [H, W, C] (its row of a padded
  batch: padding is masked out of every attention, so the image alone gives it)."""
  v = config.get("vision_config", config)
  p, heads, eps = v["patch_size"], v["num_attention_heads"], v["layer_norm_eps"]
  e = prefix + "embeddings."
  h, w, c = image.shape
  gh, gw = h // p, w // p
  patches = image.astype(np.float64).reshape(gh, p, gw, p, c).transpose(0, 2, 1, 3, 4)
  x = patches.reshape(gh * gw, p * p * c) @ sd[e + "patch_embedding.weight"].T
  x = x + sd[e + "patch_embedding.bias"]
  table = sd[e + "position_embedding.weight"]
  side = int(round(np.sqrt(len(table))))
  grid = table.reshape(side, side, -1)
  x = x + np.einsum("ph,qw,hwd->pqd", _resize_weights(side, gh), _resize_weights(side, gw),
                    grid).reshape(gh * gw, -1)
  lin = lambda t, name: t @ sd[name + ".weight"].T + sd[name + ".bias"]
  ln = lambda t, name: layer_norm(t, sd[name + ".weight"], sd[name + ".bias"], eps)

  def mha(q, k, v_):
    split = lambda t: t.reshape(len(t), heads, -1).transpose(1, 0, 2)
    q, k, v_ = split(q), split(k), split(v_)
    out = softmax(q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])) @ v_
    return out.transpose(1, 0, 2).reshape(len(out[0]), -1)

  i = 0
  while f"{prefix}encoder.layers.{i}.layer_norm1.weight" in sd:
    L = f"{prefix}encoder.layers.{i}."
    y = ln(x, L + "layer_norm1")
    a = L + "self_attn."
    x = x + lin(mha(lin(y, a + "q_proj"), lin(y, a + "k_proj"), lin(y, a + "v_proj")),
                a + "out_proj")
    y = ln(x, L + "layer_norm2")
    x = x + lin(gelu(lin(y, L + "mlp.fc1"), approximate=True), L + "mlp.fc2")
    i += 1
  x = ln(x, prefix + "post_layernorm")
  hd = prefix + "head."
  d = x.shape[-1]
  wq, wk, wv = np.split(sd[hd + "attention.in_proj_weight"], 3)
  bq, bk, bv = np.split(sd[hd + "attention.in_proj_bias"], 3)
  probe = sd[hd + "probe"][0]  # [1, D]
  y = mha(probe @ wq.T + bq, x @ wk.T + bk, x @ wv.T + bv)
  y = lin(y, hd + "attention.out_proj")
  y = y + lin(gelu(lin(ln(y, hd + "layernorm"), hd + "mlp.fc1"), approximate=True),
              hd + "mlp.fc2")
  assert y.shape == (1, d)
  return y[0]


def _check(model, params, expected_of, classes=None):
  """The model at two non-square sizes alone, and the three sizes packed, against the
  numpy forward `expected_of(image)`."""
  apply = jax.jit(model.apply)
  imgs = images()
  for image in imgs[:2]:
    np.testing.assert_allclose(apply({"params": params}, image[None])[0], expected_of(image),
                               atol=ATOL)
  packed, slots = pack_images(imgs, (PATCH, PATCH), seq_len=40, max_images=3)
  assert packed.patches.shape[0] == 2 and (packed.image_ids == 0).any()  # 2 rows, padding
  out = apply({"params": params}, packed)
  for image, slot in zip(imgs, slots):
    np.testing.assert_allclose(out[slot], expected_of(image), atol=ATOL)


def test_transformers_siglip2_vision_model_any_size_and_packed(tmp_path):
  folder, sd = hf_folder(tmp_path, "siglip2_vision_model")
  pre = checkpoint.load_pretrained(str(folder))
  assert pre.format == "hf:siglip2_vision_model"
  assert pre.model.options.posemb_resize == "bilinear_antialias"
  assert pre.model.num_classes is None and pre.model.classifier == "map"
  assert pre.preprocessing.max_num_patches == 256
  assert pre.preprocessing.input_size == (16 * PATCH, 16 * PATCH)  # the budget's square
  config = KEYS["transformers"]["siglip2_vision_model"]["config"]
  _check(pre.model, pre.params, lambda image: siglip2_forward(sd, config, image))
  # The timm export round trip is bit-exact.
  back = safetensors_io.linen_to_timm(pre.params)
  again = safetensors_io.timm_to_linen(back, "export", num_heads=2)
  flat, flat_again = tree.flatten(pre.params), tree.flatten(again)
  assert sorted(flat) == sorted(flat_again)
  assert all(np.array_equal(flat[k], flat_again[k]) for k in flat)


def test_transformers_siglip2_model_reads_its_vision_tower(tmp_path):
  folder, sd = hf_folder(tmp_path, "siglip2")
  pre = checkpoint.load_pretrained(str(folder))
  assert any(k.startswith("text_model.") for k in pre.left_out)
  image = images()[0]
  np.testing.assert_allclose(
      jax.jit(pre.model.apply)({"params": pre.params}, image[None])[0],
      siglip2_forward(sd, KEYS["transformers"]["siglip2"]["config"], image, "vision_model."),
      atol=ATOL)


def test_naflex_processor_config_without_max_num_patches_is_refused(tmp_path):
  processor = dict(KEYS["transformers"]["preprocessor_config"])
  del processor["max_num_patches"]
  folder, _ = hf_folder(tmp_path, "siglip2_vision_model", processor)
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"preprocessor_config.json: a NaFlex image processor config needs "
                           r"max_num_patches"):
    checkpoint.load_pretrained(str(folder))


# ------------------------------------------------------------------ timm NaFlexViT

def _timm_as_transformers(sd):
  """timm NaFlexViT's tensors under Siglip2VisionModel's names (the same layers)."""
  out = {"embeddings.patch_embedding.weight": sd["embeds.proj.weight"],
         "embeddings.patch_embedding.bias": sd["embeds.proj.bias"],
         "embeddings.position_embedding.weight": sd["embeds.pos_embed"].reshape(
             -1, sd["embeds.pos_embed"].shape[-1]),
         "head.probe": sd["attn_pool.latent"],
         "head.attention.in_proj_weight": np.concatenate([sd["attn_pool.q.weight"],
                                                          sd["attn_pool.kv.weight"]]),
         "head.attention.in_proj_bias": np.concatenate([sd["attn_pool.q.bias"],
                                                        sd["attn_pool.kv.bias"]])}
  rename = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.proj": "self_attn.out_proj",
            "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
  for key, value in sd.items():
    parts = key.split(".")
    if parts[0] == "blocks":
      i, rest = parts[1], ".".join(parts[2:])
      module, param = rest.rsplit(".", 1)
      if module == "attn.qkv":
        for name, part in zip("qkv", np.split(value, 3)):
          out[f"encoder.layers.{i}.self_attn.{name}_proj.{param}"] = part
      else:
        out[f"encoder.layers.{i}.{rename[module]}.{param}"] = value
    elif parts[0] == "norm":
      out[f"post_layernorm.{parts[1]}"] = value
    elif parts[0] == "attn_pool" and parts[1] in ("proj", "norm", "mlp"):
      names = {"proj": "attention.out_proj", "norm": "layernorm", "mlp": "mlp"}
      out["head." + names[parts[1]] + "." + ".".join(parts[2:])] = value
  return out


def test_timm_naflexvit_any_size_packed_and_export(tmp_path):
  spec = KEYS["timm"]["naflexvit_base_patch16_siglip"]
  sd = _fill(spec["keys"], seed=1)
  folder = _folder(tmp_path, "naflexvit", {"model.safetensors": sd, "config.json": spec["config"]})
  pre = checkpoint.load_pretrained(str(folder))
  assert pre.model.options.posemb_resize == "bilinear_antialias"
  assert pre.model.options.gelu_approximate  # timm's act_layer="gelu_tanh"
  assert pre.preprocessing.max_num_patches == 256
  hf = _timm_as_transformers(sd)
  config = dict(patch_size=PATCH, num_attention_heads=2, layer_norm_eps=1e-6)
  logits = lambda image: siglip2_forward(hf, config, image) @ sd["head.weight"].T + sd["head.bias"]
  _check(pre.model, pre.params, logits)
  # Written back under NaFlexViT's own names, bit-exact; and read again the same.
  back = safetensors_io.linen_to_timm(pre.params, "naflex")
  assert sorted(back) == sorted(sd)
  assert all(back[k].dtype == v.dtype and np.array_equal(back[k], v) for k, v in sd.items())
  out = tmp_path / "export"
  out.mkdir()
  checkpoint.save_safetensors_timm(pre.params, str(out / "model.safetensors"), names="naflex")
  (out / "config.json").write_text(json.dumps(spec["config"]))
  again = tree.flatten(checkpoint.load_pretrained(str(out)).params)
  assert all(np.array_equal(again[k], v) for k, v in tree.flatten(pre.params).items())


def test_bare_naflexvit_file_asks_for_the_architecture(tmp_path):
  spec = KEYS["timm"]["naflexvit_base_patch16_siglip"]
  path = tmp_path / "model.safetensors"
  safetensors.numpy.save_file(_fill(spec["keys"]), str(path))
  with pytest.raises(checkpoint.CheckpointError, match=r"NaFlexViT names.*architecture="):
    checkpoint.load_pretrained(str(path))
  pre = checkpoint.load_pretrained(str(path), architecture="naflexvit_base_patch16_siglip")
  assert pre.model.options.posemb_resize == "bilinear_antialias"


def test_numpy_resize_weights_are_torch_antialiased_bilinear():
  # The forward's closed-form resize equals aten's antialiased bilinear (F.torch_resize,
  # itself checked against torch's outputs in test_timm_families).
  for side, size in [(4, 3), (4, 6), (16, 7), (16, 16), (4, 1)]:
    grid = np.random.default_rng(side * size).standard_normal((side, side, 2))
    ours = np.einsum("ph,qw,hwd->pqd", _resize_weights(side, size), _resize_weights(side, 5),
                     grid)
    np.testing.assert_allclose(ours, F.torch_resize(grid, (size, 5), "bilinear", True),
                               atol=1e-12)
