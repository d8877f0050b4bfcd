"""transformers ViViT / VideoMAE folders for tests, and an independent numpy forward.

The key names, shapes and config.json fields are those transformers 5.24 `save_pretrained`
writes for tiny models (tests/checkpoint/data/hf_video_keys.json: width 32, 1 layer,
2 heads, 4 frames of 32x32, tubelet 2x16x16); `folder` fills them with random values
(and can shrink the patch / frame size, adjusting the shapes that depend on them). The
numpy forward below follows transformers' modeling_vivit.py / modeling_videomae.py
written out by hand; it calls nothing of vit_jax.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import safetensors.numpy

KEYS = os.path.join(os.path.dirname(__file__), "data", "hf_video_keys.json")
NORM_WEIGHTS = ("layernorm_before.weight", "layernorm_after.weight", "layernorm.weight",
                "fc_norm.weight")


def entry(case: str) -> dict:
  with open(KEYS) as f:
    return json.load(f)["models"][case]


def folder(tmp_path, case: str, seed: int = 0, config_overrides=None, patch: int = 16,
           image: int = 32, name: str | None = None):
  """A folder with the key names of `case`, random values; `patch` / `image` resize the
  tubelet kernel and ViViT's position rows as transformers would for those sizes."""
  e = entry(case)
  config = dict(e["config"], **(config_overrides or {}))
  rng = np.random.default_rng(seed)
  state = {}
  for key, shape in e["keys"].items():
    shape = list(shape)
    if key.endswith("patch_embeddings.projection.weight"):
      shape[3:] = [patch, patch]
    if key.endswith("embeddings.position_embeddings"):
      shape[1] = 1 + (e["config"]["num_frames"] // 2) * (image // patch) ** 2
    if key in ("decoder.head.weight", "decoder.head.bias"):
      shape[0] = 3 * 2 * patch * patch
    value = rng.normal(scale=0.2, size=shape) + key.endswith(NORM_WEIGHTS)
    state[key] = value.astype(np.float32)
  if "patch_size" in config:
    config["patch_size"] = patch
  if isinstance(config.get("tubelet_size"), list):
    config["tubelet_size"] = [2, patch, patch]
  config["image_size"] = image
  out = tmp_path / (name or case)
  out.mkdir()
  safetensors.numpy.save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
  (out / "config.json").write_text(json.dumps(config))
  return out, state, config


# ---- numpy forward of transformers' ViViT / VideoMAE.

def _layer_norm(x, w, b, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * w + b


def _act(x, name):
  if name == "gelu_fast":
    return 0.5 * x * (1.0 + np.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))
  if name == "gelu":
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
  raise ValueError(name)


def _linear(x, sd, name, bias=True):
  y = x @ sd[name + ".weight"].T
  return y + sd[name + ".bias"] if bias else y


def tubelets(video, weight, bias):
  """video [B, T, H, W, C], Conv3d weight [D, C, t, h, w] -> tokens [B, t'*gh*gw, D]
  (the Conv3d's output flattened (t', gh, gw) row-major)."""
  b, frames, height, width, c = video.shape
  d, _, t, ph, pw = weight.shape
  x = video.reshape(b, frames // t, t, height // ph, ph, width // pw, pw, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)  # [B, t', gh, gw, t, h, w, C]
  out = np.einsum("bijkayxc,dcayx->bijkd", x, weight) + bias
  return out.reshape(b, -1, d)


def _encoder_layer(x, sd, src, heads, eps, act):
  h = _layer_norm(x, sd[src + "layernorm_before.weight"], sd[src + "layernorm_before.bias"], eps)
  b, n, d = h.shape
  hd = d // heads
  proj = {}
  for name, short in (("query", "q"), ("key", "k"), ("value", "v")):
    y = h @ sd[f"{src}attention.attention.{name}.weight"].T
    for bias in (f"{src}attention.attention.{name}.bias", f"{src}attention.attention.{short}_bias"):
      if bias in sd:
        y = y + sd[bias]
    proj[name] = y.reshape(b, n, heads, hd).transpose(0, 2, 1, 3)  # [B, H, N, hd]
  scores = proj["query"] @ proj["key"].transpose(0, 1, 3, 2) / math.sqrt(hd)
  scores = np.exp(scores - scores.max(-1, keepdims=True))
  probs = scores / scores.sum(-1, keepdims=True)
  attn = (probs @ proj["value"]).transpose(0, 2, 1, 3).reshape(b, n, d)
  x = x + _linear(attn, sd, src + "attention.output.dense")
  h = _layer_norm(x, sd[src + "layernorm_after.weight"], sd[src + "layernorm_after.bias"], eps)
  h = _act(_linear(h, sd, src + "intermediate.dense"), act)
  return x + _linear(h, sd, src + "output.dense")


def _encoder(x, sd, prefix, config):
  i = 0
  while f"{prefix}encoder.layer.{i}.layernorm_before.weight" in sd:
    x = _encoder_layer(x.astype(np.float64), sd, f"{prefix}encoder.layer.{i}.",
                       config["num_attention_heads"], config["layer_norm_eps"],
                       config["hidden_act"])
    i += 1
  return x


def vivit_forward(sd, config, video):
  """VivitForVideoClassification logits, or VivitModel's pooler_output."""
  prefix = "vivit." if "classifier.weight" in sd else ""
  x = tubelets(video, sd[f"{prefix}embeddings.patch_embeddings.projection.weight"],
               sd[f"{prefix}embeddings.patch_embeddings.projection.bias"])
  cls = np.broadcast_to(sd[f"{prefix}embeddings.cls_token"], (x.shape[0], 1, x.shape[2]))
  x = np.concatenate([cls, x], axis=1) + sd[f"{prefix}embeddings.position_embeddings"]
  x = _encoder(x, sd, prefix, config)
  x = _layer_norm(x, sd[f"{prefix}layernorm.weight"], sd[f"{prefix}layernorm.bias"],
                  config["layer_norm_eps"])
  if prefix:
    return _linear(x[:, 0], sd, "classifier")
  return np.tanh(_linear(x[:, 0], sd, "pooler.dense"))


def sinusoid_table(n_position, d_hid):
  """VideoMAE's get_sinusoid_encoding_table, as its loops compute it: [N, D]."""
  table = np.array([[pos / np.power(10000, 2 * (j // 2) / d_hid) for j in range(d_hid)]
                    for pos in range(n_position)])
  table[:, 0::2] = np.sin(table[:, 0::2])
  table[:, 1::2] = np.cos(table[:, 1::2])
  return table


def videomae_forward(sd, config, video):
  """VideoMAEForVideoClassification logits; the encoders without a head: the token mean
  (after their final layernorm when they have one, else through a unit LayerNorm(1e-5),
  the fc_norm VideoMAE's fine-tuning starts from)."""
  prefix = "videomae." if any(k.startswith("videomae.") for k in sd) else ""
  x = tubelets(video, sd[f"{prefix}embeddings.patch_embeddings.projection.weight"],
               sd[f"{prefix}embeddings.patch_embeddings.projection.bias"])
  x = x + sinusoid_table(x.shape[1], x.shape[2])
  x = _encoder(x, sd, prefix, config)
  if f"{prefix}layernorm.weight" in sd:
    x = _layer_norm(x, sd[f"{prefix}layernorm.weight"], sd[f"{prefix}layernorm.bias"],
                    config["layer_norm_eps"])
    return x.mean(1)
  width = x.shape[-1]
  w, b = (sd["fc_norm.weight"], sd["fc_norm.bias"]) if "fc_norm.weight" in sd else (
      np.ones(width), np.zeros(width))
  pooled = _layer_norm(x.mean(1), w, b, 1e-5)
  return _linear(pooled, sd, "classifier") if "classifier.weight" in sd else pooled
