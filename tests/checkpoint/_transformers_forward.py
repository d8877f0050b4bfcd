"""Test helpers: transformers vision towers, written as numpy from the transformers modules.

`hf_family_forward` follows `transformers/models/{dinov2,dinov2_with_registers,vit_mae,deit,
clip,siglip}/modeling_*.py` on a state dict with the names those models save (HF Linear:
y = x W^T + b; Conv2d on NCHW), in float64. It reads the HF names directly and shares no
code with vit_jax/checkpoint/hf_model.py, so a misplaced tensor in the reader changes
the output.
"""

from __future__ import annotations

import numpy as np
import scipy.special
from _ckpt_helpers import _layer_norm as _ln
from _ckpt_helpers import _linear as _lin
from _ckpt_helpers import _patchify_oihw, _sdpa, _torch_heads, gelu

ACTS = {
    "gelu": lambda x: gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: gelu(x, approximate=True),
    "quick_gelu": lambda x: x * scipy.special.expit(1.702 * x),
}


def _mha(xq, xkv, wq, bq, wk, bk, wv, bv, heads):
  q = _torch_heads(xq @ wq.T + bq, heads)
  k = _torch_heads(xkv @ wk.T + bk, heads)
  v = _torch_heads(xkv @ wv.T + bv, heads)
  return _sdpa(q, k, v)


def _self_attention(x, sd, names, out, heads):
  (q, k, v) = names
  y = _mha(x, x, sd[f"{q}.weight"], sd[f"{q}.bias"], sd[f"{k}.weight"], sd[f"{k}.bias"],
           sd[f"{v}.weight"], sd[f"{v}.bias"], heads)
  return _lin(y, sd, out)


def _vit_layer(x, sd, p, heads, eps, act, dinov2):
  """ViTLayer / DeiTLayer / ViTMAELayer (layernorm_before/after) or Dinov2Layer."""
  n1, n2 = ("norm1", "norm2") if dinov2 else ("layernorm_before", "layernorm_after")
  names = tuple(f"{p}attention.attention.{n}" for n in ("query", "key", "value"))
  y = _self_attention(_ln(x, sd, p + n1, eps), sd, names, p + "attention.output.dense", heads)
  if dinov2:
    y = y * sd[f"{p}layer_scale1.lambda1"]
  x = x + y
  h = _ln(x, sd, p + n2, eps)
  if f"{p}mlp.weights_in.weight" in sd:  # Dinov2SwiGLUFFN
    x1, x2 = np.split(_lin(h, sd, p + "mlp.weights_in"), 2, axis=-1)
    y = _lin(scipy.special.expit(x1) * x1 * x2, sd, p + "mlp.weights_out")
  elif dinov2:
    y = _lin(ACTS[act](_lin(h, sd, p + "mlp.fc1")), sd, p + "mlp.fc2")
  else:
    y = _lin(ACTS[act](_lin(h, sd, p + "intermediate.dense")), sd, p + "output.dense")
  if dinov2:
    y = y * sd[f"{p}layer_scale2.lambda1"]
  return x + y


def _clip_layer(x, sd, p, heads, eps, act):
  names = tuple(f"{p}self_attn.{n}_proj" for n in "qkv")
  x = x + _self_attention(_ln(x, sd, p + "layer_norm1", eps), sd, names,
                          p + "self_attn.out_proj", heads)
  h = _ln(x, sd, p + "layer_norm2", eps)
  return x + _lin(ACTS[act](_lin(h, sd, p + "mlp.fc1")), sd, p + "mlp.fc2")


def _layers(sd, prefix):
  return sorted({int(k[len(prefix):].split(".")[0]) for k in sd if k.startswith(prefix)})


def hf_family_forward(config, sd, images):
  """The output `load_pretrained` must reproduce: logits with a head, else the pooled vector.

  dinov2(_with_registers): pooler_output (final norm of the cls token); vit_mae: the normed
  cls token of last_hidden_state; deit (with teacher): (cls_logits + distillation_logits) / 2;
  clip: image_embeds (projection of the normed cls token); siglip: pooler_output (MAP head).
  """
  x = images.astype(np.float64)
  model_type = config["model_type"]
  vision = config.get("vision_config", config)
  heads, eps = vision["num_attention_heads"], vision.get("layer_norm_eps")
  if model_type in ("dinov2", "dinov2_with_registers", "vit_mae", "deit"):
    strip = {"vit_mae": "vit.", "deit": "deit."}.get(model_type, "")
    sd = {k[len(strip):] if k.startswith(strip) else k: v for k, v in sd.items()}
    tokens = _patchify_oihw(x, sd["embeddings.patch_embeddings.projection.weight"],
                            sd["embeddings.patch_embeddings.projection.bias"])
    b = tokens.shape[0]
    prefix = [np.broadcast_to(sd["embeddings.cls_token"], (b, 1, tokens.shape[-1]))]
    if "embeddings.distillation_token" in sd:
      prefix.append(np.broadcast_to(sd["embeddings.distillation_token"], prefix[0].shape))
    x = np.concatenate([*prefix, tokens], 1) + sd["embeddings.position_embeddings"]
    if "embeddings.register_tokens" in sd:  # after cls, without position embedding
      regs = np.broadcast_to(sd["embeddings.register_tokens"],
                             (b,) + sd["embeddings.register_tokens"].shape[1:])
      x = np.concatenate([x[:, :1], regs, x[:, 1:]], 1)
    dinov2 = model_type.startswith("dinov2")
    act = config.get("hidden_act", "gelu")
    for i in _layers(sd, "encoder.layer."):
      x = _vit_layer(x, sd, f"encoder.layer.{i}.", heads, eps, act, dinov2)
    x = _ln(x, sd, "layernorm", eps)
    if "cls_classifier.weight" in sd:
      return (_lin(x[:, 0], sd, "cls_classifier") +
              _lin(x[:, 1], sd, "distillation_classifier")) / 2
    return x[:, 0]
  # CLIPModel / SiglipModel (and v4's vision models) nest the tower under vision_model.;
  # transformers 5's SiglipVisionModel saves it at the top level.
  nested = any(k.startswith("vision_model.") for k in sd)
  sd = {k[len("vision_model."):] if k.startswith("vision_model.") else k: v
        for k, v in sd.items()
        if k.startswith("vision_model.") or not nested or k == "visual_projection.weight"}
  act = vision["hidden_act"]
  if model_type.startswith("clip"):
    w = sd["embeddings.patch_embedding.weight"]
    tokens = _patchify_oihw(x, w, np.zeros(w.shape[0]))  # CLIP: no bias
    cls = np.broadcast_to(sd["embeddings.class_embedding"], (tokens.shape[0], 1, w.shape[0]))
    x = np.concatenate([cls, tokens], 1) + sd["embeddings.position_embedding.weight"]
    x = _ln(x, sd, "pre_layrnorm", eps)
    for i in _layers(sd, "encoder.layers."):
      x = _clip_layer(x, sd, f"encoder.layers.{i}.", heads, eps, act)
    pooled = _ln(x[:, 0], sd, "post_layernorm", eps)
    return pooled @ sd["visual_projection.weight"].T
  # siglip
  x = _patchify_oihw(x, sd["embeddings.patch_embedding.weight"],
                     sd["embeddings.patch_embedding.bias"])
  x = x + sd["embeddings.position_embedding.weight"]
  for i in _layers(sd, "encoder.layers."):
    x = _clip_layer(x, sd, f"encoder.layers.{i}.", heads, eps, act)
  x = _ln(x, sd, "post_layernorm", eps)
  width = x.shape[-1]
  probe = np.broadcast_to(sd["head.probe"], (x.shape[0], 1, width))
  w, bias = sd["head.attention.in_proj_weight"], sd["head.attention.in_proj_bias"]
  y = _mha(probe, x, w[:width], bias[:width], w[width:2 * width], bias[width:2 * width],
           w[2 * width:], bias[2 * width:], heads)
  y = _lin(y, sd, "head.attention.out_proj")
  y = y + _lin(ACTS[act](_lin(_ln(y, sd, "head.layernorm", eps), sd, "head.mlp.fc1")), sd,
               "head.mlp.fc2")
  return y[:, 0]
