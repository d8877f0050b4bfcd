"""VideoPrism's original Flax release (flax_*_repeated.npz): read against a numpy forward.

The npz has exactly the array names and shapes of google-deepmind/videoprism's
FactorizedEncoder with scanned ("repeated") layers, at a tiny width
(data/videoprism_npz_keys.json, dumped from that repository's own model), filled with
random values. `flax_forward` is that encoder's forward in numpy (float64), written from
its encoders.py / layers.py (Praxis LayerNorm `1 + scale`, `post` projection [D, H, hd]).
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest
from _ckpt_helpers import gelu, layer_norm, softmax

from vit_jax.checkpoint import videoprism_npz
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.checkpoint.pretrained import load_pretrained

DATA = json.loads((pathlib.Path(__file__).parent / "data" / "videoprism_npz_keys.json").read_text())
CAP = 2.0  # the tiny model's logit cap: low enough to change the output


def arrays(seed=0):
  rng = np.random.default_rng(seed)
  return {k: (0.3 * rng.standard_normal(s)).astype(np.float32) for k, s in DATA["keys"].items()}


def _ln(x, a, name, index=None):
  scale, bias = a[f"{name}/scale"], a[f"{name}/bias"]
  if index is not None:
    scale, bias = scale[index], bias[index]
  return layer_norm(x, 1.0 + scale, bias, 1e-6)


def _stack(x, a, which, depth):
  s = f"params/{which}_encoder/transformers_stack/x_layers/"
  for i in range(depth):
    y = _ln(x, a, s + "layer_norm", i)
    q, k, v = (np.einsum("bld,dnh->blnh", y, a[s + f"self_attention/{p}/w"][i])
               + a[s + f"self_attention/{p}/b"][i] for p in ("query", "key", "value"))
    logits = np.einsum("bqnh,bknh->bnqk", q / np.sqrt(q.shape[-1]), k)
    probs = softmax(CAP * np.tanh(logits / CAP))
    ctx = np.einsum("bnqk,bknh->bqnh", probs, v)
    x = x + np.einsum("blnh,dnh->bld", ctx, a[s + "self_attention/post/w"][i]) \
        + a[s + "self_attention/post/b"][i]
    y = _ln(x, a, s + "ff_layer/layer_norm", i)
    y = gelu(y @ a[s + "ff_layer/ffn_layer1/linear/kernel"][i]
             + a[s + "ff_layer/ffn_layer1/linear/bias"][i], approximate=False)
    x = x + y @ a[s + "ff_layer/ffn_layer2/linear/kernel"][i] \
        + a[s + "ff_layer/ffn_layer2/linear/bias"][i]
  return x


def flax_forward(a, video):
  """FactorizedEncoder's output tokens [B, T*n, D], averaged -> [B, D]."""
  cfg = DATA["config"]
  p = cfg["patch_size"]
  b, t, h, w, c = video.shape
  x = video.astype(np.float64).reshape(b * t, h // p, p, w // p, p, c)
  x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b * t, (h // p) * (w // p), p * p * c)  # (m n)(p q c)
  x = x @ a["params/patch_projection/linear/kernel"] + a["params/patch_projection/linear/bias"]
  x = x + a["params/spatial_pos_emb/emb_var"]
  x = _ln(_stack(x, a, "spatial", cfg["num_spatial_layers"]), a, "params/spatial_ln")
  n, d = x.shape[1:]
  x = x.reshape(b, t, n, d).transpose(0, 2, 1, 3).reshape(b * n, t, d)  # (bt)nd->(bn)td
  x = x + a["params/temporal_pos_emb/emb_var"]
  x = _ln(_stack(x, a, "temporal", cfg["num_temporal_layers"]), a, "params/temporal_ln")
  return x.reshape(b, n * t, d).mean(1)


def test_convert_matches_numpy_forward():
  a = arrays()
  arch = videoprism_npz.architecture({k: v.shape for k, v in a.items()}, "tiny")
  assert arch == dict(patch_size=4, pos_emb_shape=(3, 4, 4), model_dim=32, num_spatial_layers=2,
                      num_temporal_layers=1, num_heads=2, mlp_dim=96)
  model, params = videoprism_npz.convert(a, dict(arch, atten_logit_cap=CAP))
  video = np.random.default_rng(1).uniform(0, 1, (2, 3, 16, 16, 3)).astype(np.float32)
  out = jax.jit(lambda x: model.apply({"params": params}, x))(video)
  np.testing.assert_allclose(out, flax_forward(a, video), atol=1e-4, rtol=0)


def test_documented_configs_give_the_cap_and_others_are_refused(tmp_path):
  # The released base encoder's shapes (videoprism/models.py CONFIGS) -> cap 50.
  d, heads, mlp, layers = 768, 12, 3072, {"spatial": 12, "temporal": 4}
  shapes = {"params/patch_projection/linear/kernel": (18 * 18 * 3, d),
            "params/spatial_pos_emb/emb_var": (256, d), "params/temporal_pos_emb/emb_var": (16, d)}
  for which, depth in layers.items():
    stack = f"params/{which}_encoder/transformers_stack/x_layers/"
    shapes[stack + "self_attention/query/w"] = (depth, d, heads, d // heads)
    shapes[stack + "ff_layer/ffn_layer1/linear/kernel"] = (depth, d, mlp)
  config = videoprism_npz.documented_config(videoprism_npz.architecture(shapes, "base"), "base")
  assert (config["name"], config["atten_logit_cap"]) == ("videoprism_v1_base", 50.0)
  # A file of undocumented shapes (the tiny one) does not say its cap: refused, whole.
  path = tmp_path / "flax_tiny_repeated.npz"
  np.savez(path, **arrays())
  with pytest.raises(CheckpointError, match="none of VideoPrism's documented configs"):
    load_pretrained(str(path))
  # The video-text model and a stray array are refused by name.
  with pytest.raises(CheckpointError, match="video-text"):
    videoprism_npz.architecture({"params/vision_encoder/x": (1,)}, "lvt")
  extra = dict(arrays(), **{"params/auxiliary_encoder/w": np.zeros(2, np.float32)})
  with pytest.raises(CheckpointError, match="auxiliary_encoder"):
    videoprism_npz.convert(extra, dict(DATA["config"], pos_emb_shape=(3, 4, 4),
                                       atten_logit_cap=CAP))
