"""Test helpers: transformers DINOv3 and I-JEPA, written as numpy from the transformers modules.

`dinov3_forward` follows `transformers/models/dinov3_vit/modeling_dinov3_vit.py`
(DINOv3ViTModel, eval): [cls, registers, patches] without an absolute position embedding;
RoPE on the patch tokens' queries and keys only, from the patch centres in [-1, 1]
(`get_patches_center_coordinates`), angles 2 pi c / rope_theta^(4j / hd) for the row then
the column, tiled twice and applied with `rotate_half`; separate q/k/v (biases where the
file has them); LayerScale `lambda1`; an `up_proj`/`down_proj` MLP or the gated
act(gate_proj) * up_proj; final `norm`; pooler_output = the normed cls token.

`ijepa_forward` follows `transformers/models/ijepa/modeling_ijepa.py`: no cls token, a
learned position embedding over the patches, ViT layers, final `layernorm`;
IJepaForImageClassification's logits are the classifier on the mean of the normed
tokens, and IJepaModel's features the same mean (what the loaded model pools).

Both read the transformers names directly and share no code with vit_jax, in float64.
"""

from __future__ import annotations

import numpy as np
import scipy.special
from _ckpt_helpers import _layer_norm as _ln
from _ckpt_helpers import _linear as _lin
from _ckpt_helpers import _patchify_oihw, _sdpa, _torch_heads, gelu

ACTS = {"gelu": lambda x: gelu(x, approximate=False), "silu": lambda x: x * scipy.special.expit(x)}


def _rotate_half(x):
  lo, hi = np.split(x, 2, axis=-1)
  return np.concatenate([-hi, lo], axis=-1)


def dinov3_rope(grid, head_dim, theta):
  """(cos, sin) [gh*gw, hd] as DINOv3ViTRopePositionEmbedding builds them."""
  inv_freq = 1.0 / theta ** np.arange(0, 1, 4 / head_dim)  # [hd/4]
  axes = [(np.arange(n) + 0.5) / n * 2.0 - 1.0 for n in grid]
  coords = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)  # [N, (y, x)]
  angles = 2 * np.pi * coords[:, :, None] * inv_freq[None, None, :]  # [N, 2, hd/4]
  angles = np.tile(angles.reshape(len(coords), -1), 2)  # flatten(1, 2).tile(2): [N, hd]
  return np.cos(angles), np.sin(angles)


def dinov3_forward(config, sd, images, features=False):
  """DINOv3ViTModel's pooler_output (or its last_hidden_state's patch tokens)."""
  x = images.astype(np.float64)
  heads, eps = config["num_attention_heads"], config["layer_norm_eps"]
  act = ACTS[config["hidden_act"]]
  tokens = _patchify_oihw(x, sd["embeddings.patch_embeddings.weight"],
                          sd["embeddings.patch_embeddings.bias"])
  b, n, d = tokens.shape
  ph, pw = sd["embeddings.patch_embeddings.weight"].shape[2:]
  grid = (images.shape[1] // ph, images.shape[2] // pw)
  regs = sd["embeddings.register_tokens"]
  h = np.concatenate([np.broadcast_to(sd["embeddings.cls_token"], (b, 1, d)),
                      np.broadcast_to(regs, (b,) + regs.shape[1:]), tokens], 1)
  prefix = 1 + regs.shape[1]
  cos, sin = dinov3_rope(grid, d // heads, config.get("rope_theta", 100.0))
  layers = sorted({int(k.split(".")[1]) for k in sd if k.startswith("layer.")})
  for i in layers:
    p = f"layer.{i}."
    y = _ln(h, sd, p + "norm1", eps)
    q, k, v = (_torch_heads(_lin(y, sd, f"{p}attention.{s}_proj"), heads) for s in "qkv")
    q = np.concatenate([q[:, :, :prefix], q[:, :, prefix:] * cos + _rotate_half(
        q[:, :, prefix:]) * sin], 2)
    k = np.concatenate([k[:, :, :prefix], k[:, :, prefix:] * cos + _rotate_half(
        k[:, :, prefix:]) * sin], 2)
    h = h + _lin(_sdpa(q, k, v), sd, p + "attention.o_proj") * sd[p + "layer_scale1.lambda1"]
    y = _ln(h, sd, p + "norm2", eps)
    if p + "mlp.gate_proj.weight" in sd:
      m = act(_lin(y, sd, p + "mlp.gate_proj")) * _lin(y, sd, p + "mlp.up_proj")
    else:
      m = act(_lin(y, sd, p + "mlp.up_proj"))
    h = h + _lin(m, sd, p + "mlp.down_proj") * sd[p + "layer_scale2.lambda1"]
  h = _ln(h, sd, "norm", eps)
  return h[:, prefix:] if features else h[:, 0]


def ijepa_forward(config, sd, images):
  """IJepaForImageClassification's logits, or IJepaModel's mean normed token."""
  x = images.astype(np.float64)
  p = "ijepa." if "classifier.weight" in sd else ""
  heads, eps = config["num_attention_heads"], config["layer_norm_eps"]
  act = ACTS[config["hidden_act"]]
  h = _patchify_oihw(x, sd[p + "embeddings.patch_embeddings.projection.weight"],
                     sd[p + "embeddings.patch_embeddings.projection.bias"])
  h = h + sd[p + "embeddings.position_embeddings"]
  layers = sorted({int(k[len(p):].split(".")[2]) for k in sd
                   if k.startswith(p + "encoder.layer.")})
  for i in layers:
    a = f"{p}encoder.layer.{i}."
    y = _ln(h, sd, a + "layernorm_before", eps)
    q, k, v = (_torch_heads(_lin(y, sd, f"{a}attention.attention.{s}"), heads)
               for s in ("query", "key", "value"))
    h = h + _lin(_sdpa(q, k, v), sd, a + "attention.output.dense")
    y = _ln(h, sd, a + "layernorm_after", eps)
    h = h + _lin(act(_lin(y, sd, a + "intermediate.dense")), sd, a + "output.dense")
  pooled = _ln(h, sd, p + "layernorm", eps).mean(1)
  return _lin(pooled, sd, "classifier") if p else pooled
