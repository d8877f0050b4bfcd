"""VideoPrism folders of transformers: load_pretrained against a numpy forward.

The folders have exactly the key names, shapes and config.json fields that
transformers' save_pretrained writes for a tiny VideoPrismForVideoClassification and
VideoPrismVisionModel (data/hf_videoprism_keys.json, generated with transformers 5.24:
intermediate_size 96 with 2 heads, so the pooling head's 48-wide heads differ from the
encoder's 16), filled with random values. `videoprism_forward` is the eval forward of
modeling_videoprism.py in numpy (float64), written from that file, not from our modules.
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest
from _ckpt_helpers import Filler, gelu, layer_norm, softmax, write_hub_folder
from _ckpt_helpers import _linear as _lin

from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.checkpoint.pretrained import load_pretrained

DATA = json.loads((pathlib.Path(__file__).parent / "data" / "hf_videoprism_keys.json").read_text())
B = 2


def write_folder(folder, case, seed=0, config_changes=None, extra=None):
  """A transformers folder of `case` ("classifier" or "model") with random weights."""
  spec = DATA["models"][case]
  fill = Filler(seed)
  sd = {}
  for key, shape in sorted(spec["keys"].items()):
    if len(shape) >= 2 and key.endswith(".weight"):
      sd[key] = fill(*shape, scale=float(np.prod(shape[1:])) ** -0.5)
    else:  # LayerNorm weights (scale - 1), biases, embeddings, per_dim_scale
      sd[key] = fill(*shape, scale=0.3)
  sd.update(extra or {})
  config = dict(spec["config"], **(config_changes or {}))
  write_hub_folder(folder, sd, config)
  return sd, config


def _norm(x, sd, name, eps):
  """VideoPrismLayerNorm: the weight is stored minus 1."""
  return layer_norm(x, sd[f"{name}.weight"] + 1.0, sd[f"{name}.bias"], eps)


def _heads(x, heads):
  b, n, d = x.shape
  return x.reshape(b, n, heads, d // heads).transpose(0, 2, 1, 3)  # [B, H, N, hd]


def _layer(x, sd, name, config):
  """VideoPrismLayer: pre-LN attention with capped logits, pre-LN MLP (erf GELU)."""
  eps, heads, cap = (config["layer_norm_eps"], config["num_attention_heads"],
                     config["attn_logit_softcapping"])
  y = _norm(x, sd, f"{name}.layernorm_before", eps)
  q, k, v = (_heads(_lin(y, sd, f"{name}.attention.{p}_proj"), heads) for p in "qkv")
  logits = q @ k.transpose(0, 1, 3, 2) * q.shape[-1] ** -0.5
  logits = cap * np.tanh(logits / cap)
  out = softmax(logits) @ v  # [B, H, N, hd]
  out = out.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], -1)
  x = x + _lin(out, sd, f"{name}.attention.o_proj")
  y = gelu(_lin(_norm(x, sd, f"{name}.layernorm_after", eps), sd, f"{name}.mlp.fc1"),
           approximate=False)
  return x + _lin(y, sd, f"{name}.mlp.fc2")


def videoprism_forward(config, sd, video):
  """Logits [B, classes] (classifier) or the mean of last_hidden_state [B, D]."""
  p = "vision_model." if "vision_model.layernorm1.weight" in sd else ""
  eps = config["layer_norm_eps"]
  x = video.astype(np.float64)
  b, t, h, w, c = x.shape
  weight = sd[p + "spatial_embeddings.patch_embeddings.projection.weight"][:, :, 0]
  d, _, ph, pw = weight.shape
  frames = x.reshape(b * t, h // ph, ph, w // pw, pw, c)
  tokens = np.einsum("fiyjxc,dcyx->fijd", frames, weight).reshape(b * t, -1, d)
  n = tokens.shape[1]
  hidden = tokens + sd[p + "spatial_embeddings.patch_embeddings.projection.bias"]
  hidden = hidden + sd[p + "spatial_embeddings.position_embeddings"]
  for i in range(config["num_spatial_layers"]):
    hidden = _layer(hidden, sd, f"{p}spatial_layers.{i}", config)
  hidden = _norm(hidden, sd, p + "layernorm1", eps)
  # [B*T, n, D] -> [B, T, n, D] -> [B, n, T, D] -> [B*n, T, D]
  hidden = hidden.reshape(b, t, n, d).transpose(0, 2, 1, 3).reshape(b * n, t, d)
  hidden = hidden + sd[p + "temporal_embeddings.position_embeddings"]
  for i in range(config["num_temporal_layers"]):
    hidden = _layer(hidden, sd, f"{p}temporal_layers.{i}", config)
  hidden = _norm(hidden, sd, p + "layernorm2", eps)
  hidden = hidden.reshape(b, n, t, d).transpose(0, 2, 1, 3).reshape(b, t * n, d)
  if "head.q_proj.weight" not in sd:
    return hidden.mean(1)
  # VideoPrismMultiheadAttentionPoolingHead: heads of intermediate_size / H.
  heads = config["num_attention_heads"]
  hd = config["intermediate_size"] // heads
  query = _heads(_lin(np.repeat(sd["head.pooling_attention_query"], b, 0), sd, "head.q_proj"),
                 heads)
  softplus = np.log1p(np.exp(sd["head.per_dim_scale"].astype(np.float64)))
  query = query * 1.442695041 / np.sqrt(hd) * softplus
  k, v = (_heads(_lin(hidden, sd, f"head.{name}_proj"), heads) for name in "kv")
  pooled = (softmax(query @ k.transpose(0, 1, 3, 2)) @ v).transpose(0, 2, 1, 3).reshape(b, -1)
  pooled = _norm(_lin(pooled, sd, "head.o_proj"), sd, "head_layernorm", eps)
  return _lin(pooled, sd, "classifier")


def clips(frames, height=16, width=16, seed=1):
  rng = np.random.default_rng(seed)
  return rng.uniform(0, 1, (B, frames, height, width, 3)).astype(np.float32)


@pytest.mark.parametrize("case", ["classifier", "model"])
def test_load_matches_numpy_forward(tmp_path, case):
  sd, config = write_folder(tmp_path / case, case)
  found = load_pretrained(str(tmp_path / case))
  assert found.is_video
  model = found.model
  assert (model.variant, model.embedding, model.classifier) == (
      "factorised_encoder_tokens", "frame", "map" if case == "classifier" else "gap")
  assert model.options.attention_logit_cap == 2.0
  x = clips(config["num_frames"])
  out = np.asarray(jax.jit(lambda x: model.apply({"params": found.params}, x))(x))
  expected = videoprism_forward(config, sd, x)
  assert out.shape == expected.shape == ((B, 5) if case == "classifier" else (B, 32))
  np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("changes,extra,message", [
    (dict(num_frames=4), None, "num_frames=4.*3"),
    (dict(tubelet_size=[2, 4, 4]), None, "tubelet_size"),
    (dict(num_temporal_layers=2), None, "num_temporal_layers=2"),
    (dict(intermediate_size=64), None, "intermediate_size=64"),
    (dict(image_size=32), None, "image_size"),
    ({}, {"vision_model.text_projection.weight": np.zeros((2, 2), np.float32)},
     "text_projection"),
])
def test_config_that_disagrees_is_refused(tmp_path, changes, extra, message):
  write_folder(tmp_path, "classifier", config_changes=changes, extra=extra)
  with pytest.raises(CheckpointError, match=message):
    load_pretrained(str(tmp_path))
