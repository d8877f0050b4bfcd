"""Test helpers: transformers model directories of the vision families, and their
forward passes in numpy.

`hf_state_dict` writes the key names and shapes `save_pretrained` writes for each
model class (transformers' modeling_vit.py, modeling_deit.py, modeling_dinov2.py,
modeling_dinov2_with_registers.py, modeling_vit_mae.py, modeling_clip.py,
modeling_siglip.py), at a tiny width with random values; `hf_forward` is each model's
eval forward in numpy (float64), read from those files: DINOv2-reg adds the posemb to
[cls, patches] and then inserts the registers, CLIP's post_layernorm normalises the
pooled cls token, SigLIP's head is MAP attention with a fused in_proj.
"""

from __future__ import annotations

import _timm_families as F
import numpy as np
from _ckpt_helpers import Filler, gelu, softmax
from _ckpt_helpers import _layer_norm as _ln
from _ckpt_helpers import _linear as _lin

WIDTH, DEPTH, HEADS, MLP, PATCH, CLASSES = 32, 2, 2, 64, 4, 5
EPS = {"vit": 1e-12, "deit": 1e-12, "dinov2": 1e-6, "dinov2_with_registers": 1e-6,
       "vit_mae": 1e-12, "clip_vision_model": 1e-5, "siglip_vision_model": 1e-6}
ACT = {"clip_vision_model": "quick_gelu", "siglip_vision_model": "gelu_pytorch_tanh"}
# case -> (model_type, architecture class, key prefix)
CASES = {
    "vit_pooler": ("vit", "ViTModel", ""),
    "vit_classifier": ("vit", "ViTForImageClassification", "vit."),
    "deit_distilled": ("deit", "DeiTForImageClassificationWithTeacher", "deit."),
    "dinov2": ("dinov2", "Dinov2Model", ""),
    "dinov2_swiglu": ("dinov2", "Dinov2Model", ""),
    "dinov2_registers": ("dinov2_with_registers", "Dinov2WithRegistersModel", ""),
    "vit_mae": ("vit_mae", "ViTMAEModel", ""),
    "clip": ("clip_vision_model", "CLIPVisionModelWithProjection", "vision_model."),
    "siglip": ("siglip_vision_model", "SiglipVisionModel", ""),
}


def config(case, grid):
  model_type, architecture, _ = CASES[case]
  out = dict(model_type=model_type, architectures=[architecture], hidden_size=WIDTH,
             num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=MLP,
             image_size=grid[0] * PATCH, patch_size=PATCH, layer_norm_eps=EPS[model_type],
             hidden_act=ACT.get(model_type, "gelu"))
  if model_type.startswith("dinov2"):
    out.update(mlp_ratio=MLP // WIDTH, layerscale_value=1.0, use_swiglu_ffn=case.endswith("swiglu"))
  if model_type == "dinov2_with_registers":
    out["num_register_tokens"] = 4
  return out


def hf_state_dict(case, grid, seed=0):
  model_type, architecture, p = CASES[case]
  fill = Filler(seed)
  lin = lambda name, out, inp, bias=True: {f"{name}.weight": fill(out, inp, scale=inp ** -0.5),
                                           **({f"{name}.bias": fill(out)} if bias else {})}
  norm = lambda name, n=WIDTH: {f"{name}.weight": fill(n, around=1.0), f"{name}.bias": fill(n)}
  n = grid[0] * grid[1]
  sd = {}
  if model_type in ("clip_vision_model", "siglip_vision_model"):
    clip = model_type == "clip_vision_model"
    e = p + "embeddings."
    sd[e + "patch_embedding.weight"] = fill(WIDTH, 3, PATCH, PATCH, scale=(3 * PATCH ** 2) ** -0.5)
    if clip:
      sd[e + "class_embedding"] = fill(WIDTH, scale=0.5)
      sd.update(norm(p + "pre_layrnorm"))
    else:
      sd[e + "patch_embedding.bias"] = fill(WIDTH)
    sd[e + "position_embedding.weight"] = fill(n + clip, WIDTH, scale=0.5)
    for i in range(DEPTH):
      b = f"{p}encoder.layers.{i}."
      sd.update(norm(b + "layer_norm1"))
      sd.update(norm(b + "layer_norm2"))
      for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        sd.update(lin(b + "self_attn." + proj, WIDTH, WIDTH))
      sd.update(lin(b + "mlp.fc1", MLP, WIDTH))
      sd.update(lin(b + "mlp.fc2", WIDTH, MLP))
    sd.update(norm(p + "post_layernorm"))
    if clip:
      sd.update(lin("visual_projection", CLASSES, WIDTH, bias=False))
    else:
      sd[p + "head.probe"] = fill(1, 1, WIDTH, scale=0.5)
      sd[p + "head.attention.in_proj_weight"] = fill(3 * WIDTH, WIDTH, scale=WIDTH ** -0.5)
      sd[p + "head.attention.in_proj_bias"] = fill(3 * WIDTH)
      sd.update(lin(p + "head.attention.out_proj", WIDTH, WIDTH))
      sd.update(norm(p + "head.layernorm"))
      sd.update(lin(p + "head.mlp.fc1", MLP, WIDTH))
      sd.update(lin(p + "head.mlp.fc2", WIDTH, MLP))
    return sd
  e = p + "embeddings."
  sd.update(lin(e + "patch_embeddings.projection", WIDTH, 3))
  sd[e + "patch_embeddings.projection.weight"] = fill(WIDTH, 3, PATCH, PATCH,
                                                      scale=(3 * PATCH ** 2) ** -0.5)
  sd[e + "cls_token"] = fill(1, 1, WIDTH, scale=0.5)
  distilled = model_type == "deit"
  if distilled:
    sd[e + "distillation_token"] = fill(1, 1, WIDTH, scale=0.5)
  if model_type.startswith("dinov2"):
    sd[e + "mask_token"] = fill(1, WIDTH)
  if model_type == "dinov2_with_registers":
    sd[e + "register_tokens"] = fill(1, 4, WIDTH, scale=0.5)
  sd[e + "position_embeddings"] = fill(1, n + 1 + distilled, WIDTH, scale=0.5)
  for i in range(DEPTH):
    b = f"{p}encoder.layer.{i}."
    for name in ("query", "key", "value"):
      sd.update(lin(f"{b}attention.attention.{name}", WIDTH, WIDTH))
    sd.update(lin(b + "attention.output.dense", WIDTH, WIDTH))
    if model_type.startswith("dinov2"):
      sd.update(norm(b + "norm1"))
      sd.update(norm(b + "norm2"))
      sd[b + "layer_scale1.lambda1"] = fill(WIDTH, around=1.0)
      sd[b + "layer_scale2.lambda1"] = fill(WIDTH, around=1.0)
      if case.endswith("swiglu"):  # hidden = (int(MLP * 2 / 3) + 7) // 8 * 8 = 48
        sd.update(lin(b + "mlp.weights_in", 96, WIDTH))
        sd.update(lin(b + "mlp.weights_out", WIDTH, 48))
      else:
        sd.update(lin(b + "mlp.fc1", MLP, WIDTH))
        sd.update(lin(b + "mlp.fc2", WIDTH, MLP))
    else:
      sd.update(norm(b + "layernorm_before"))
      sd.update(norm(b + "layernorm_after"))
      sd.update(lin(b + "intermediate.dense", MLP, WIDTH))
      sd.update(lin(b + "output.dense", WIDTH, MLP))
  sd.update(norm(p + "layernorm"))
  if architecture == "ViTModel":
    sd.update(lin(p + "pooler.dense", WIDTH, WIDTH))
  if architecture == "ViTForImageClassification":
    sd.update(lin("classifier", CLASSES, WIDTH))
  if distilled:
    sd.update(lin("cls_classifier", CLASSES, WIDTH))
    sd.update(lin("distillation_classifier", CLASSES, WIDTH))
  return sd


def _mha(xq, xkv, q, k, v, heads):
  split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(0, 2, 1, 3)
  q, k, v = split(q), split(k), split(v)
  out = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])) @ v
  return out.transpose(0, 2, 1, 3).reshape(xq.shape[0], xq.shape[1], -1)


def _interpolated(posemb, prefix, grid, model_type):
  """`interpolate_pos_encoding=True`: the position embedding [..., P + N, D] of a square
  stored grid at the input's `grid` (F.interpolate bicubic, align_corners=False;
  Dinov2WithRegisters with antialias), the P prefix rows kept as they are."""
  rows = posemb.shape[-2] - prefix
  if rows == grid[0] * grid[1]:
    return posemb
  side = int(round(np.sqrt(rows)))
  table = posemb[..., prefix:, :].reshape(side, side, posemb.shape[-1])
  resized = F.torch_resize(table, grid, "bicubic", model_type == "dinov2_with_registers")
  resized = resized.reshape(posemb.shape[:-2] + (grid[0] * grid[1], posemb.shape[-1]))
  return np.concatenate([posemb[..., :prefix, :], resized], axis=-2)


def hf_forward(case, sd, images):
  """The model's output: logits, CLIP's image_embeds, or `pooler_output` (ViTMAE: the
  normed cls token of last_hidden_state). Another input size than the stored grid's
  interpolates the position embedding (`interpolate_pos_encoding=True`)."""
  model_type, architecture, p = CASES[case]
  eps, act = EPS[model_type], ACT.get(model_type, "gelu")
  activation = {"gelu": lambda h: gelu(h, False), "gelu_pytorch_tanh": lambda h: gelu(h, True),
                "quick_gelu": lambda h: h / (1 + np.exp(-1.702 * h))}[act]
  x = images.astype(np.float64).transpose(0, 3, 1, 2)  # pixel_values NCHW
  b, _, h, w = x.shape
  patches = x.reshape(b, 3, h // PATCH, PATCH, w // PATCH, PATCH)
  clip_like = model_type in ("clip_vision_model", "siglip_vision_model")
  conv = p + ("embeddings.patch_embedding" if clip_like else
              "embeddings.patch_embeddings.projection")
  tokens = np.einsum("bciyjx,dcyx->bijd", patches, sd[conv + ".weight"]).reshape(b, -1, WIDTH)
  if conv + ".bias" in sd:
    tokens = tokens + sd[conv + ".bias"]
  e = p + "embeddings."
  sd = dict(sd)
  for key, rows in ((e + "position_embedding.weight", int(e + "class_embedding" in sd)),
                    (e + "position_embeddings", 1 + int(e + "distillation_token" in sd))):
    if key in sd:
      sd[key] = _interpolated(sd[key], rows, (h // PATCH, w // PATCH), model_type)
  if clip_like:
    if e + "class_embedding" in sd:
      tokens = np.concatenate([np.broadcast_to(sd[e + "class_embedding"], (b, 1, WIDTH)),
                               tokens], 1)
    tokens = tokens + sd[e + "position_embedding.weight"]
    if p + "pre_layrnorm.weight" in sd:
      tokens = _ln(tokens, sd, p + "pre_layrnorm", eps)
  else:
    prefix = [np.broadcast_to(sd[e + k], (b, 1, WIDTH)) for k in ("cls_token", "distillation_token")
              if e + k in sd]
    tokens = np.concatenate(prefix + [tokens], 1) + sd[e + "position_embeddings"]
    if e + "register_tokens" in sd:  # inserted after the cls token, after the posemb
      reg = np.broadcast_to(sd[e + "register_tokens"], (b, 4, WIDTH))
      tokens = np.concatenate([tokens[:, :1], reg, tokens[:, 1:]], 1)
  for i in range(DEPTH):
    if clip_like:
      layer = f"{p}encoder.layers.{i}."
      y = _ln(tokens, sd, layer + "layer_norm1", eps)
      att = _mha(y, y, *(_lin(y, sd, f"{layer}self_attn.{s}_proj") for s in "qkv"), HEADS)
      tokens = tokens + _lin(att, sd, layer + "self_attn.out_proj")
      y = _ln(tokens, sd, layer + "layer_norm2", eps)
      tokens = tokens + _lin(activation(_lin(y, sd, layer + "mlp.fc1")), sd, layer + "mlp.fc2")
      continue
    layer = f"{p}encoder.layer.{i}."
    dino = layer + "norm1.weight" in sd
    y = _ln(tokens, sd, layer + ("norm1" if dino else "layernorm_before"), eps)
    att = _mha(y, y, *(_lin(y, sd, f"{layer}attention.attention.{s}")
                       for s in ("query", "key", "value")), HEADS)
    att = _lin(att, sd, layer + "attention.output.dense")
    tokens = tokens + (sd[layer + "layer_scale1.lambda1"] * att if dino else att)
    y = _ln(tokens, sd, layer + ("norm2" if dino else "layernorm_after"), eps)
    if layer + "mlp.weights_in.weight" in sd:
      x1, x2 = np.split(_lin(y, sd, layer + "mlp.weights_in"), 2, axis=-1)
      m = _lin(x1 / (1 + np.exp(-x1)) * x2, sd, layer + "mlp.weights_out")
    elif dino:
      m = _lin(activation(_lin(y, sd, layer + "mlp.fc1")), sd, layer + "mlp.fc2")
    else:
      m = _lin(activation(_lin(y, sd, layer + "intermediate.dense")), sd, layer + "output.dense")
    tokens = tokens + (sd[layer + "layer_scale2.lambda1"] * m if dino else m)
  if clip_like:
    if p + "head.probe" in sd:  # SigLIP: post_layernorm on every token, then the MAP head
      tokens = _ln(tokens, sd, p + "post_layernorm", eps)
      wq, wk, wv = np.split(sd[p + "head.attention.in_proj_weight"], 3)
      bq, bk, bv = np.split(sd[p + "head.attention.in_proj_bias"], 3)
      probe = np.broadcast_to(sd[p + "head.probe"], (b, 1, WIDTH))
      y = _mha(probe, tokens, probe @ wq.T + bq, tokens @ wk.T + bk, tokens @ wv.T + bv, HEADS)
      y = _lin(y, sd, p + "head.attention.out_proj")
      y = y + _lin(activation(_lin(_ln(y, sd, p + "head.layernorm", eps), sd, p + "head.mlp.fc1")),
                   sd, p + "head.mlp.fc2")
      return y[:, 0]
    pooled = _ln(tokens[:, 0], sd, p + "post_layernorm", eps)  # CLIP's pooler_output
    return _lin(pooled, sd, "visual_projection")
  tokens = _ln(tokens, sd, p + "layernorm", eps)
  if "cls_classifier.weight" in sd:
    return (_lin(tokens[:, 0], sd, "cls_classifier") +
            _lin(tokens[:, 1], sd, "distillation_classifier")) / 2
  if "classifier.weight" in sd:
    return _lin(tokens[:, 0], sd, "classifier")
  if p + "pooler.dense.weight" in sd:
    return np.tanh(_lin(tokens[:, 0], sd, p + "pooler.dense"))
  return tokens[:, 0]
