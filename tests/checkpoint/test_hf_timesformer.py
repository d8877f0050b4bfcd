"""TimeSformer folders of transformers: load_pretrained against a numpy forward.

The folders have exactly the key names, shapes and config.json fields that
transformers' save_pretrained writes for a tiny TimesformerForVideoClassification and
TimesformerModel (data/hf_timesformer_keys.json, generated with transformers 5.24),
filled with random values. `timesformer_forward` is TimesformerModel's eval forward in
numpy (float64), written from modeling_timesformer.py in its own token order (patches
space-major, frames fastest), not from our modules.
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest
from _ckpt_helpers import Filler, gelu, softmax, write_hub_folder
from _ckpt_helpers import _layer_norm as _ln
from _ckpt_helpers import _linear as _lin

from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.checkpoint.pretrained import load_pretrained

DATA = json.loads((pathlib.Path(__file__).parent / "data" / "hf_timesformer_keys.json").read_text())
B = 2


def write_folder(folder, case, seed=0, config_changes=None, extra=None):
  """A transformers folder of `case` ("classifier" or "model") with random weights."""
  spec = DATA["models"][case]
  fill = Filler(seed)
  sd = {}
  for key, shape in sorted(spec["keys"].items()):
    if "layernorm" in key and key.endswith(".weight"):
      sd[key] = fill(*shape, around=1.0)
    elif len(shape) >= 2 and key.endswith(".weight"):
      sd[key] = fill(*shape, scale=float(np.prod(shape[1:])) ** -0.5)
    else:
      sd[key] = fill(*shape, scale=0.3)
  sd.update(extra or {})
  config = dict(spec["config"], **(config_changes or {}))
  write_hub_folder(folder, sd, config)
  return sd, config


def _attention(x, sd, name, heads):
  """TimesformerSelfAttention + SelfOutput: fused qkv reshaped (B, N, 3, H, hd)."""
  b, n, d = x.shape
  qkv = _lin(x, sd, f"{name}.attention.qkv").reshape(b, n, 3, heads, d // heads)
  q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # 3 x [B, H, N, hd]
  attn = softmax(q @ k.transpose(0, 1, 3, 2) * (d // heads) ** -0.5)
  out = (attn @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
  return _lin(out, sd, f"{name}.output.dense")


def timesformer_forward(config, sd, video):
  """Logits [B, classes] (classifier) or the final LayerNorm's cls token [B, D].

  video [B, T, H, W, C]; the stored time table is resized by nearest rows when T differs.
  """
  p = "timesformer." if "timesformer.embeddings.cls_token" in sd else ""
  eps, heads, act = config["layer_norm_eps"], config["num_attention_heads"], config["hidden_act"]
  x = video.astype(np.float64)
  b, t, h, w, c = x.shape
  weight = sd[p + "embeddings.patch_embeddings.projection.weight"]  # [D, C, ph, pw]
  d, _, ph, pw = weight.shape
  gh, gw = h // ph, w // pw
  n = gh * gw
  frames = x.reshape(b, t, gh, ph, gw, pw, c)
  tokens = np.einsum("btiyjxc,dcyx->btijd", frames, weight).reshape(b, t, n, d)
  tokens = tokens + sd[p + "embeddings.patch_embeddings.projection.bias"]
  posemb = sd[p + "embeddings.position_embeddings"][0]
  cls = sd[p + "embeddings.cls_token"][0] + posemb[:1]  # [1, D]
  time = sd[p + "embeddings.time_embeddings"][0]
  time = time[np.floor(np.arange(t) * time.shape[0] / t).astype(int)]  # F.interpolate nearest
  tokens = tokens + posemb[1:][None, None] + time[None, :, None]
  # transformers' order: patch-major, frames fastest: [B, t, n, D] -> [B, n*t, D]
  hidden = np.concatenate([np.repeat(cls[None], b, 0),
                           tokens.transpose(0, 2, 1, 3).reshape(b, n * t, d)], axis=1)
  for i in range(config["num_hidden_layers"]):
    layer = f"{p}encoder.layer.{i}"
    xt = hidden[:, 1:].reshape(b * n, t, d)
    res = _attention(_ln(xt, sd, f"{layer}.temporal_layernorm", eps), sd,
                     f"{layer}.temporal_attention", heads)
    res = _lin(res.reshape(b, n * t, d), sd, f"{layer}.temporal_dense")
    xt = hidden[:, 1:] + res
    # Spatial: each frame's patches with the cls token; cls averaged over the frames.
    xs = xt.reshape(b, n, t, d).transpose(0, 2, 1, 3).reshape(b * t, n, d)
    xs = np.concatenate([np.repeat(hidden[:, :1], t, axis=0), xs], axis=1)
    res = _attention(_ln(xs, sd, f"{layer}.layernorm_before", eps), sd, f"{layer}.attention",
                     heads)
    cls_res = res[:, 0].reshape(b, t, d).mean(1, keepdims=True)
    patch_res = res[:, 1:].reshape(b, t, n, d).transpose(0, 2, 1, 3).reshape(b, n * t, d)
    hidden = np.concatenate([hidden[:, :1], xt], 1) + np.concatenate([cls_res, patch_res], 1)
    y = gelu(_lin(_ln(hidden, sd, f"{layer}.layernorm_after", eps), sd,
                  f"{layer}.intermediate.dense"), approximate=act != "gelu")
    hidden = hidden + _lin(y, sd, f"{layer}.output.dense")
  pooled = _ln(hidden, sd, p + "layernorm", eps)[:, 0]
  return _lin(pooled, sd, "classifier") if "classifier.weight" in sd else pooled


def clips(frames, side=16, seed=1):
  return np.random.default_rng(seed).uniform(-1, 1, (B, frames, side, side, 3)).astype(np.float32)


@pytest.mark.parametrize("case", ["classifier", "model"])
def test_load_matches_numpy_forward(tmp_path, case):
  sd, config = write_folder(tmp_path / case, case)
  found = load_pretrained(str(tmp_path / case))
  assert found.is_video
  model = found.model
  assert (model.variant, model.embedding, model.tubelet_size) == ("divided_space_time", "frame", 1)
  assert model.num_classes == (5 if case == "classifier" else None)
  apply = jax.jit(lambda x: model.apply({"params": found.params}, x))  # one program a shape
  x = clips(config["num_frames"])
  out = np.asarray(apply(x))
  expected = timesformer_forward(config, sd, x)
  assert out.shape == expected.shape
  np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)
  if case == "classifier":
    # Another frame count: the time table follows by nearest rows, as TimeSformer's own.
    x = clips(5, seed=2)
    np.testing.assert_allclose(apply(x),
                               timesformer_forward(config, sd, x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("changes,extra,message", [
    (dict(num_frames=4), None, "num_frames=4.*3"),
    (dict(hidden_size=64), None, "hidden_size=64"),
    (dict(num_hidden_layers=3), None, "num_hidden_layers=3"),
    (dict(image_size=32), None, "image_size"),
    (dict(attention_type="joint_space_time"), None, "attention_type='joint_space_time'"),
    (dict(hidden_act="relu"), None, "activation 'relu'"),
    ({}, {"timesformer.encoder.layer.0.extra.weight": np.zeros((2,), np.float32)},
     "extra.weight"),
])
def test_config_that_disagrees_is_refused(tmp_path, changes, extra, message):
  write_folder(tmp_path, "classifier", config_changes=changes, extra=extra)
  with pytest.raises(CheckpointError, match=message):
    load_pretrained(str(tmp_path))
