"""transformers V-JEPA 2 folders (VJEPA2Model, VJEPA2ForVideoClassification).

Each folder holds exactly the key names, shapes and config.json that transformers'
`save_pretrained` writes for a tiny model (data/vjepa2_keys.json, generated with
transformers 5.24), filled with random values; `load_pretrained` must give the output of
the numpy forward below, written from transformers' modeling_vjepa2.py (not from our
modules): 3-D RoPE on (frame, row, column) bands of each head, the attentive pooler's
self-attention layers, then the query's cross-attention without output projection.
"""

import json
import os

import jax
import numpy as np
import pytest
from _ckpt_helpers import gelu, layer_norm, softmax, write_hub_folder

from vit_jax.checkpoint import pretrained
from vit_jax.errors import CheckpointError

DATA = json.load(open(os.path.join(os.path.dirname(__file__), "data", "vjepa2_keys.json")))
ATOL = 1e-4


def state_dict(architecture, seed=0):
  """Random values for every key of the real file; weights ~ 1/sqrt(fan_in), LayerNorm
  scales around 1, so each layer changes the output visibly."""
  rng = np.random.default_rng(seed)
  out = {}
  for key, shape in DATA[architecture]["keys"].items():
    if "norm" in key and key.endswith(".weight"):  # every LayerNorm's scale
      value = 1.0 + 0.1 * rng.standard_normal(shape)
    elif len(shape) > 1:
      fan_in = int(np.prod(shape[1:])) if len(shape) > 2 else shape[-1]
      value = rng.standard_normal(shape) / np.sqrt(fan_in)
    else:
      value = 0.1 * rng.standard_normal(shape)
    out[key] = value.astype(np.float32)
  return out


def write_folder(tmp_path, architecture, sd, config=None):
  return str(write_hub_folder(tmp_path / architecture, sd,
                              config or DATA[architecture]["config"]))


# ------------------------------------------------------------- numpy reference forward

def _linear(sd, name, x):
  return x @ sd[name + ".weight"].astype(np.float64).T + sd[name + ".bias"]


def _norm(sd, name, x, eps):
  return layer_norm(x, sd[name + ".weight"], sd[name + ".bias"], eps)


def _rotate(x, pos):
  """modeling_vjepa2.rotate_queries_or_keys: x [..., N, d], pos [N]."""
  d = x.shape[-1]
  omega = 1.0 / 10000.0 ** (np.arange(d // 2) / (d / 2.0))
  freq = pos[:, None] * omega  # [N, d/2]
  sin, cos = np.tile(np.sin(freq), 2), np.tile(np.cos(freq), 2)  # torch .repeat(..., 2)
  pairs = x.reshape(x.shape[:-1] + (d // 2, 2))
  partner = np.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
  return x * cos + partner * sin


def _rope(x, frame, row, col):
  """VJEPA2RopeAttention.apply_rotary_embeddings on x [B, H, N, hd]."""
  hd = x.shape[-1]
  d = 2 * ((hd // 3) // 2)
  parts = [_rotate(x[..., i * d:(i + 1) * d], pos) for i, pos in enumerate((frame, row, col))]
  return np.concatenate(parts + [x[..., 3 * d:]], axis=-1)


def _attention(q, k, v):
  """[B, H, Lq, hd], [B, H, Lk, hd] -> [B, Lq, H*hd]."""
  weights = softmax(q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]))
  out = weights @ v
  return np.swapaxes(out, 1, 2).reshape(out.shape[0], out.shape[2], -1)


def _heads(x, heads):
  """[B, L, D] -> [B, H, L, hd]."""
  return np.swapaxes(x.reshape(x.shape[0], x.shape[1], heads, -1), 1, 2)


def _mlp(sd, name, x):
  return _linear(sd, name + ".fc2", gelu(_linear(sd, name + ".fc1", x), approximate=False))


def reference_forward(sd, config, video):
  """video [B, T, H, W, C] -> logits [B, classes], or the tokens' mean [B, D]."""
  eps, heads = config["layer_norm_eps"], config["num_attention_heads"]
  prefix = "vjepa2.encoder." if "classifier.weight" in sd else "encoder."
  w = sd[prefix + "embeddings.patch_embeddings.proj.weight"].astype(np.float64)
  dim, _, t, ph, pw = w.shape
  b, frames, height, width, c = video.shape
  grid = (frames // t, height // ph, width // pw)
  x = video.astype(np.float64).reshape(b, grid[0], t, grid[1], ph, grid[2], pw, c)
  x = np.einsum("bTtHyWxc,dctyx->bTHWd", x, w) + sd[prefix + "embeddings.patch_embeddings.proj.bias"]
  x = x.reshape(b, -1, dim)
  frame, row, col = (a.reshape(-1).astype(np.float64) for a in np.indices(grid))
  for i in range(config["num_hidden_layers"]):
    p = f"{prefix}layer.{i}."
    y = _norm(sd, p + "norm1", x, eps)
    q, k, v = (_heads(_linear(sd, p + "attention." + n, y), heads)
               for n in ("query", "key", "value"))
    q, k = _rope(q, frame, row, col), _rope(k, frame, row, col)
    x = x + _linear(sd, p + "attention.proj", _attention(q, k, v))
    x = x + _mlp(sd, p + "mlp", _norm(sd, p + "norm2", x, eps))
  x = _norm(sd, prefix + "layernorm", x, eps)
  if "classifier.weight" not in sd:
    return x.mean(axis=1)
  for i in range(config["num_pooler_layers"]):
    p = f"pooler.self_attention_layers.{i}."
    y = _norm(sd, p + "layer_norm1", x, eps)
    q, k, v = (_heads(_linear(sd, p + f"self_attn.{n}_proj", y), heads) for n in "qkv")
    x = x + _linear(sd, p + "self_attn.out_proj", _attention(q, k, v))
    x = x + _mlp(sd, p + "mlp", _norm(sd, p + "layer_norm2", x, eps))
  p = "pooler.cross_attention_layer."
  queries = np.tile(sd["pooler.query_tokens"].astype(np.float64), (b, 1, 1))
  kv = _norm(sd, p + "layer_norm1", x, eps)
  q = _heads(_linear(sd, p + "cross_attn.q_proj", queries), heads)
  k = _heads(_linear(sd, p + "cross_attn.k_proj", kv), heads)
  v = _heads(_linear(sd, p + "cross_attn.v_proj", kv), heads)
  h = queries + _attention(q, k, v)
  h = h + _mlp(sd, p + "mlp", _norm(sd, p + "layer_norm2", h, eps))
  return _linear(sd, "classifier", h[:, 0])


# ---------------------------------------------------------------------------- tests

def clip(frames, height, width, seed=1):
  return np.random.default_rng(seed).uniform(-1, 1, (2, frames, height, width, 3)).astype(
      np.float32)


@pytest.mark.parametrize("architecture", ["VJEPA2Model", "VJEPA2ForVideoClassification"])
def test_folder_gives_the_reference_output(tmp_path, architecture):
  sd = state_dict(architecture)
  config = DATA[architecture]["config"]
  found = pretrained.load_pretrained(write_folder(tmp_path, architecture, sd))
  assert found.is_video
  # The predictor (pre-training only) is left out and reported, nothing else.
  assert found.left_out == tuple(sorted(k for k in sd if "predictor." in k))
  assert found.left_out
  assert found.preprocessing.input_size == (config["crop_size"],) * 2
  assert found.preprocessing.mean == pytest.approx((0.485, 0.456, 0.406))
  apply = jax.jit(found.model.apply)
  # The checkpoint's clip (4 frames, 12 px), then another frame count and a non-square
  # frame: RoPE follows each token's (frame, row, column).
  shapes = [(4, 12, 12)] + ([(6, 12, 8)] if architecture.endswith("Classification") else [])
  for shape in shapes:
    x = clip(*shape)
    out = np.asarray(apply({"params": found.params}, x))
    expected = reference_forward(sd, config, x)
    assert out.shape == expected.shape == (2, 5 if "classifier.weight" in sd else 32)
    np.testing.assert_allclose(out, expected, atol=ATOL)
    assert np.abs(expected).max() > 0.1  # the comparison is not between near-zeros


@pytest.mark.parametrize("field,value", [("hidden_size", 48), ("num_hidden_layers", 3),
                                         ("num_pooler_layers", 3), ("mlp_ratio", 4.0),
                                         ("tubelet_size", 1)])
def test_config_that_disagrees_with_the_weights_is_refused(tmp_path, field, value):
  architecture = "VJEPA2ForVideoClassification"
  config = dict(DATA[architecture]["config"], **{field: value})
  folder = write_folder(tmp_path, architecture, state_dict(architecture), config)
  with pytest.raises(CheckpointError, match=f"config.json says {field}"):
    pretrained.load_pretrained(folder)


def test_unknown_tensor_is_refused(tmp_path):
  sd = state_dict("VJEPA2Model")
  sd["encoder.layer.0.attention.q_norm.weight"] = np.ones(16, np.float32)
  with pytest.raises(CheckpointError, match="q_norm"):
    pretrained.load_pretrained(write_folder(tmp_path, "VJEPA2Model", sd))


def test_clip_the_tubelets_cannot_cover_is_refused(tmp_path):
  found = pretrained.load_pretrained(
      write_folder(tmp_path, "VJEPA2Model", state_dict("VJEPA2Model")))
  with pytest.raises(ValueError, match="1 frame\\(s\\) is shorter than one tubelet"):
    found.model.apply({"params": found.params}, clip(1, 12, 12))
  with pytest.raises(ValueError, match="3 frames are not divisible by tubelet_size=2"):
    found.model.apply({"params": found.params}, clip(3, 12, 12))
