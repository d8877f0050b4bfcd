"""Test helpers: checkpoint files with the released key names, and numpy ViT forwards.

Every file builder here writes the key names and shapes of the real releases
(docs/checkpoint_formats.md, timm's and transformers' state dicts), filled with
random values. Each reference forward pass reads the weights in its own
format's conventions (HWIO/einsum for the JAX formats, OIHW/(out, in) and
head-major feature order for the PyTorch ports), written from those codebases'
definitions rather than from our loader, so a misplaced value changes the output.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import safetensors.numpy
import scipy.special

EPS = 1e-6

# Mu: hidden 32, 2 layers, mlp 64, 2 heads (vit_jax.models.registry.VIT_SIZES).
MU = dict(width=32, depth=2, mlp=64, heads=2)


def write_hub_folder(folder, sd, config) -> pathlib.Path:
  """`folder` as transformers' save_pretrained / timm's Hub upload write it: the state
  dict in model.safetensors (metadata format "pt") and config.json."""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  safetensors.numpy.save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
  (folder / "config.json").write_text(json.dumps(config))
  return folder


# --------------------------------------------------------------------------- math

def gelu(x, approximate):
  if approximate:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
  return 0.5 * x * (1 + scipy.special.erf(x / np.sqrt(2)))


def layer_norm(x, scale, bias, eps=EPS):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def softmax(x):
  x = x - x.max(-1, keepdims=True)
  e = np.exp(x)
  return e / e.sum(-1, keepdims=True)


def images(batch=2, height=16, width=12, seed=0):
  """NHWC images in [-1, 1]; non-square so that a swapped H/W shows."""
  return np.random.default_rng(seed).uniform(-1, 1, (batch, height, width, 3)).astype(np.float32)


# ------------------------------------------------------------- JAX-style (HWIO, einsum)

def _patchify_hwio(x, kernel, bias):
  """Strided conv with an HWIO kernel on NHWC images -> tokens [B, gh*gw, D]."""
  b, h, w, c = x.shape
  ph, pw = kernel.shape[:2]
  x = x.reshape(b, h // ph, ph, w // pw, pw, c)
  tokens = np.einsum("biyjxc,yxcd->bijd", x, kernel) + bias
  return tokens.reshape(b, -1, kernel.shape[-1])


def _flax_attention(xq, xkv, p):
  """flax MultiHeadDotProductAttention with kernels (D, H, hd) / (H, hd, D)."""
  q = np.einsum("bnd,dhk->bnhk", xq, p["query/kernel"]) + p["query/bias"]
  k = np.einsum("bnd,dhk->bnhk", xkv, p["key/kernel"]) + p["key/bias"]
  v = np.einsum("bnd,dhk->bnhk", xkv, p["value/kernel"]) + p["value/bias"]
  logits = np.einsum("bqhk,bshk->bhqs", q / np.sqrt(q.shape[-1]), k)
  out = np.einsum("bhqs,bshk->bqhk", softmax(logits), v)
  return np.einsum("bqhk,hkd->bqd", out, p["out/kernel"]) + p["out/bias"]


def _flax_mlp(x, p, approximate):
  x = gelu(x @ p["Dense_0/kernel"] + p["Dense_0/bias"], approximate)
  return x @ p["Dense_1/kernel"] + p["Dense_1/bias"]


def _sub(flat, prefix, index=None):
  """The entries under `prefix/`, optionally the `index`-th slice of stacked leaves."""
  out = {k[len(prefix) + 1:]: v for k, v in flat.items() if k.startswith(prefix + "/")}
  return {k: v[index] for k, v in out.items()} if index is not None else out


def jax_style_forward(flat, x, *, depth, block_names, scanned=False, posemb_before_cls=False,
                      pool="token", approximate=True):
  """Forward pass of a vit_jax / big_vision checkpoint, read by its own key names.

  Args:
    flat: the file's arrays with the prefix removed.
    block_names: (ln1, attn, ln2, mlp) sub-module names inside a block, e.g. the
      released ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3").
    scanned: blocks stacked under `Transformer/encoderblock` on axis 0.
    posemb_before_cls: big_vision's top-level `pos_embedding` added to the patch
      tokens before cls is concatenated; else vit_jax's posemb with a cls row.
    pool: "token" (big_vision's "tok"), "gap" or "map".
  """
  x = x.astype(np.float64)
  tokens = _patchify_hwio(x, flat["embedding/kernel"], flat["embedding/bias"])
  if posemb_before_cls:
    tokens = tokens + flat["pos_embedding"]
  if "cls" in flat:
    cls = np.broadcast_to(flat["cls"], (tokens.shape[0], 1, tokens.shape[2]))
    tokens = np.concatenate([cls, tokens], axis=1)
  if not posemb_before_cls:
    tokens = tokens + flat["Transformer/posembed_input/pos_embedding"]
  ln1, attn, ln2, mlp = block_names
  for i in range(depth):
    if scanned:
      p = _sub(flat, "Transformer/encoderblock", i)
    else:
      p = _sub(flat, f"Transformer/encoderblock_{i}")
    y = layer_norm(tokens, p[f"{ln1}/scale"], p[f"{ln1}/bias"])
    tokens = tokens + _flax_attention(y, y, _sub(p, attn))
    y = layer_norm(tokens, p[f"{ln2}/scale"], p[f"{ln2}/bias"])
    tokens = tokens + _flax_mlp(y, _sub(p, mlp), approximate)
  tokens = layer_norm(tokens, flat["Transformer/encoder_norm/scale"],
                      flat["Transformer/encoder_norm/bias"])
  if pool in ("token", "tok"):
    rep = tokens[:, 0]
  elif pool == "gap":
    rep = tokens.mean(1)
  else:
    m = _sub(flat, "MAPHead_0")
    probe = np.broadcast_to(m["probe"], (tokens.shape[0], 1, tokens.shape[2]))
    y = _flax_attention(probe, tokens, _sub(m, "MultiHeadDotProductAttention_0"))
    rep = (y + _flax_mlp(layer_norm(y, m["LayerNorm_0/scale"], m["LayerNorm_0/bias"]),
                         _sub(m, "MlpBlock_0"), approximate))[:, 0]
  if "pre_logits/kernel" in flat:
    rep = np.tanh(rep @ flat["pre_logits/kernel"] + flat["pre_logits/bias"])
  return rep @ flat["head/kernel"] + flat["head/bias"]


# ------------------------------------------------------- PyTorch-style (OIHW, (out, in))

def _linear(x, sd, name):
  """A torch Linear from a state dict: x W^T (+ b when the state dict has a bias)."""
  out = x @ sd[f"{name}.weight"].T
  return out + sd[f"{name}.bias"] if f"{name}.bias" in sd else out


def _layer_norm(x, sd, name, eps):
  """A torch LayerNorm from a state dict."""
  return layer_norm(x, sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def _patchify_oihw(x_nhwc, weight, bias):
  """torch Conv2d(kernel=stride=p) on NCHW images, flattened as timm/HF do."""
  x = x_nhwc.transpose(0, 3, 1, 2)  # NHWC -> NCHW, the ports' input layout
  b, c, h, w = x.shape
  ph, pw = weight.shape[2:]
  x = x.reshape(b, c, h // ph, ph, w // pw, pw)
  out = np.einsum("bciyjx,dcyx->bdij", x, weight) + bias[None, :, None, None]  # [B, D, gh, gw]
  return out.reshape(b, out.shape[1], -1).transpose(0, 2, 1)  # flatten(2).transpose(1, 2)


def _torch_heads(x, heads):
  """[B, N, H*hd] -> [B, H, N, hd] (the ports' view + permute)."""
  b, n, d = x.shape
  return x.reshape(b, n, heads, d // heads).transpose(0, 2, 1, 3)


def _sdpa(q, k, v):
  attn = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]))
  out = attn @ v  # [B, H, N, hd]
  b, h, n, hd = out.shape
  return out.transpose(0, 2, 1, 3).reshape(b, n, h * hd)


def timm_forward(sd, x, *, depth, heads, pool="token", no_embed_class=False, approximate=False):
  """timm `VisionTransformer.forward` on a state dict (fused qkv, reshape(B,N,3,H,hd))."""
  x = x.astype(np.float64)
  tokens = _patchify_oihw(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"])
  b = tokens.shape[0]
  if no_embed_class:
    tokens = tokens + sd["pos_embed"]
  if "cls_token" in sd:
    tokens = np.concatenate([np.broadcast_to(sd["cls_token"], (b, 1, tokens.shape[2])), tokens], 1)
  if not no_embed_class:
    tokens = tokens + sd["pos_embed"]
  for i in range(depth):
    p = f"blocks.{i}."
    y = layer_norm(tokens, sd[p + "norm1.weight"], sd[p + "norm1.bias"])
    n, d = y.shape[1:]
    qkv = _linear(y, sd, p + "attn.qkv").reshape(b, n, 3, heads, d // heads)
    q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # permute(2, 0, 3, 1, 4)
    tokens = tokens + _linear(_sdpa(q, k, v), sd, p + "attn.proj")
    y = layer_norm(tokens, sd[p + "norm2.weight"], sd[p + "norm2.bias"])
    tokens = tokens + _linear(gelu(_linear(y, sd, p + "mlp.fc1"), approximate), sd, p + "mlp.fc2")
  tokens = layer_norm(tokens, sd["norm.weight"], sd["norm.bias"])
  if pool == "token":
    rep = tokens[:, 0]
  elif pool == "avg":
    rep = tokens.mean(1)
  else:  # timm AttentionPoolLatent
    d = tokens.shape[2]
    q = _torch_heads(np.broadcast_to(sd["attn_pool.latent"], (b, 1, d)) @ sd["attn_pool.q.weight"].T
                     + sd["attn_pool.q.bias"], heads)
    kv = _linear(tokens, sd, "attn_pool.kv").reshape(b, -1, 2, heads, d // heads)
    k, v = kv.transpose(2, 0, 3, 1, 4)
    y = _linear(_sdpa(q, k, v), sd, "attn_pool.proj")
    y = y + _linear(gelu(_linear(layer_norm(y, sd["attn_pool.norm.weight"],
                                            sd["attn_pool.norm.bias"]), sd, "attn_pool.mlp.fc1"),
                         approximate), sd, "attn_pool.mlp.fc2")
    rep = y[:, 0]
  if "pre_logits.fc.weight" in sd:
    rep = np.tanh(_linear(rep, sd, "pre_logits.fc"))
  return _linear(rep, sd, "head")


def hf_forward(sd, x, *, depth, heads, prefix="vit.", eps=EPS):
  """transformers `ViTForImageClassification` (classifier on the cls token), or
  `ViTModel`'s pooler output when the file has no classifier."""
  x = x.astype(np.float64)
  p = lambda name: sd[prefix + name]
  tokens = _patchify_oihw(x, p("embeddings.patch_embeddings.projection.weight"),
                          p("embeddings.patch_embeddings.projection.bias"))
  b = tokens.shape[0]
  cls = np.broadcast_to(p("embeddings.cls_token"), (b, 1, tokens.shape[2]))
  tokens = np.concatenate([cls, tokens], 1) + p("embeddings.position_embeddings")
  for i in range(depth):
    layer = f"{prefix}encoder.layer.{i}."
    y = layer_norm(tokens, sd[layer + "layernorm_before.weight"],
                   sd[layer + "layernorm_before.bias"], eps)
    q, k, v = (_torch_heads(_linear(y, sd, f"{layer}attention.attention.{n}"), heads)
               for n in ("query", "key", "value"))
    tokens = tokens + _linear(_sdpa(q, k, v), sd, layer + "attention.output.dense")
    y = layer_norm(tokens, sd[layer + "layernorm_after.weight"],
                   sd[layer + "layernorm_after.bias"], eps)
    y = gelu(_linear(y, sd, layer + "intermediate.dense"), approximate=False)
    tokens = tokens + _linear(y, sd, layer + "output.dense")
  tokens = layer_norm(tokens, p("layernorm.weight"), p("layernorm.bias"), eps)
  if "classifier.weight" in sd:
    return _linear(tokens[:, 0], sd, "classifier")
  return np.tanh(_linear(tokens[:, 0], sd, prefix + "pooler.dense"))


# ------------------------------------------------------------------- file builders

class Filler:
  """Random values: unit-scale for weights, around 1 for LayerNorm scales."""

  def __init__(self, seed=0):
    self.rng = np.random.default_rng(seed)

  def __call__(self, *shape, scale=None, around=0.0):
    fan_in = shape[0] if len(shape) > 1 else 1
    scale = scale if scale is not None else (1.0 / np.sqrt(fan_in) if len(shape) > 1 else 0.1)
    return (around + scale * self.rng.standard_normal(shape)).astype(np.float32)


class ShapeOnly:
  """A Filler stand-in that returns the shape instead of values (for key/shape specs)."""

  def __call__(self, *shape, scale=None, around=0.0):
    return tuple(shape)


RELEASED_BLOCK = ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
LINEN_BLOCK = ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")


def _flax_block(fill, width, mlp, heads, names):
  ln1, attn, ln2, mlp_name = names
  hd = width // heads
  out = {f"{ln1}/scale": fill(width, around=1.0), f"{ln1}/bias": fill(width),
         f"{ln2}/scale": fill(width, around=1.0), f"{ln2}/bias": fill(width),
         f"{mlp_name}/Dense_0/kernel": fill(width, mlp), f"{mlp_name}/Dense_0/bias": fill(mlp),
         f"{mlp_name}/Dense_1/kernel": fill(mlp, width), f"{mlp_name}/Dense_1/bias": fill(width),
         f"{attn}/out/kernel": fill(heads, hd, width, scale=width ** -0.5),
         f"{attn}/out/bias": fill(width)}
  for n in ("query", "key", "value"):
    out[f"{attn}/{n}/kernel"] = fill(width, heads, hd)
    out[f"{attn}/{n}/bias"] = fill(heads, hd)
  return out


def released_npz_arrays(*, width, depth, mlp, heads, patch, grid, classes, representation=None,
                        seed=0, fill=None):
  """Exactly the keys and shapes of a released vit_jax/AugReg `.npz` (docs/checkpoint_formats.md).

  With fill=ShapeOnly() the values are the shapes: the spec to compare files with.
  """
  fill = fill or Filler(seed)
  out = {"cls": fill(1, 1, width, scale=0.5),
         "embedding/kernel": fill(patch, patch, 3, width, scale=(patch * patch * 3) ** -0.5),
         "embedding/bias": fill(width),
         "Transformer/posembed_input/pos_embedding": fill(1, grid[0] * grid[1] + 1, width,
                                                          scale=0.5),
         "Transformer/encoder_norm/scale": fill(width, around=1.0),
         "Transformer/encoder_norm/bias": fill(width)}
  for i in range(depth):
    for k, v in _flax_block(fill, width, mlp, heads, RELEASED_BLOCK).items():
      out[f"Transformer/encoderblock_{i}/{k}"] = v
  rep = width
  if representation:
    out["pre_logits/kernel"], out["pre_logits/bias"] = fill(width, representation), fill(
        representation)
    rep = representation
  out["head/kernel"], out["head/bias"] = fill(rep, classes), fill(classes)
  return out


def big_vision_npz_arrays(*, width, depth, mlp, heads, patch, grid, classes, pool="tok",
                          scan=True, seed=0):
  """A big_vision `vit.py` params tree, flattened: top-level `pos_embedding` without a
  cls row, Linen block names, `Transformer/encoderblock` stacked when scanned."""
  fill = Filler(seed)
  out = {"embedding/kernel": fill(patch, patch, 3, width, scale=(patch * patch * 3) ** -0.5),
         "embedding/bias": fill(width),
         "pos_embedding": fill(1, grid[0] * grid[1], width, scale=0.5),
         "Transformer/encoder_norm/scale": fill(width, around=1.0),
         "Transformer/encoder_norm/bias": fill(width),
         "head/kernel": fill(width, classes), "head/bias": fill(classes)}
  if pool == "tok":
    out["cls"] = fill(1, 1, width, scale=0.5)
  blocks = [_flax_block(fill, width, mlp, heads, LINEN_BLOCK) for _ in range(depth)]
  if scan:
    for k in blocks[0]:
      out[f"Transformer/encoderblock/{k}"] = np.stack([b[k] for b in blocks])
  else:
    for i, block in enumerate(blocks):
      out.update({f"Transformer/encoderblock_{i}/{k}": v for k, v in block.items()})
  if pool == "map":
    map_head = _flax_block(fill, width, mlp, heads, LINEN_BLOCK)
    out.update({f"MAPHead_0/{k}": v for k, v in map_head.items()
                if not k.startswith("LayerNorm_1")})
    out["MAPHead_0/probe"] = fill(1, 1, width, scale=0.5)
  return out


def timm_state_dict(*, width, depth, mlp, classes, patch, grid, pool="token",
                    no_embed_class=False, seed=0):
  """A timm `VisionTransformer` state dict (names and shapes as timm saves them)."""
  fill = Filler(seed)
  torch_linear = lambda out, inp: fill(out, inp, scale=inp ** -0.5)
  sd = {"patch_embed.proj.weight": fill(width, 3, patch, patch, scale=(patch * patch * 3) ** -0.5),
        "patch_embed.proj.bias": fill(width),
        "pos_embed": fill(1, grid[0] * grid[1] + (pool == "token" and not no_embed_class), width,
                          scale=0.5),
        "norm.weight": fill(width, around=1.0), "norm.bias": fill(width),
        "head.weight": torch_linear(classes, width), "head.bias": fill(classes)}
  if pool == "token":
    sd["cls_token"] = fill(1, 1, width, scale=0.5)
  for i in range(depth):
    p = f"blocks.{i}."
    sd.update({p + "norm1.weight": fill(width, around=1.0), p + "norm1.bias": fill(width),
               p + "attn.qkv.weight": torch_linear(3 * width, width),
               p + "attn.qkv.bias": fill(3 * width),
               p + "attn.proj.weight": torch_linear(width, width), p + "attn.proj.bias": fill(width),
               p + "norm2.weight": fill(width, around=1.0), p + "norm2.bias": fill(width),
               p + "mlp.fc1.weight": torch_linear(mlp, width), p + "mlp.fc1.bias": fill(mlp),
               p + "mlp.fc2.weight": torch_linear(width, mlp), p + "mlp.fc2.bias": fill(width)})
  if pool == "map":
    sd.update({"attn_pool.latent": fill(1, 1, width, scale=0.5),
               "attn_pool.q.weight": torch_linear(width, width), "attn_pool.q.bias": fill(width),
               "attn_pool.kv.weight": torch_linear(2 * width, width),
               "attn_pool.kv.bias": fill(2 * width),
               "attn_pool.proj.weight": torch_linear(width, width),
               "attn_pool.proj.bias": fill(width),
               "attn_pool.norm.weight": fill(width, around=1.0),
               "attn_pool.norm.bias": fill(width),
               "attn_pool.mlp.fc1.weight": torch_linear(mlp, width),
               "attn_pool.mlp.fc1.bias": fill(mlp),
               "attn_pool.mlp.fc2.weight": torch_linear(width, mlp),
               "attn_pool.mlp.fc2.bias": fill(width)})
  return sd


def hf_state_dict(*, width, depth, mlp, classes, patch, grid, prefix="vit.", pooler=False,
                  seed=0):
  """transformers `ViTForImageClassification` (prefix "vit.", `classifier`) or
  `ViTModel` (no prefix, `pooler`) weights."""
  fill = Filler(seed)
  torch_linear = lambda out, inp: fill(out, inp, scale=inp ** -0.5)
  sd = {prefix + "embeddings.cls_token": fill(1, 1, width, scale=0.5),
        prefix + "embeddings.position_embeddings": fill(1, grid[0] * grid[1] + 1, width,
                                                        scale=0.5),
        prefix + "embeddings.patch_embeddings.projection.weight":
            fill(width, 3, patch, patch, scale=(patch * patch * 3) ** -0.5),
        prefix + "embeddings.patch_embeddings.projection.bias": fill(width),
        prefix + "layernorm.weight": fill(width, around=1.0),
        prefix + "layernorm.bias": fill(width)}
  for i in range(depth):
    p = f"{prefix}encoder.layer.{i}."
    for n in ("query", "key", "value"):
      sd[f"{p}attention.attention.{n}.weight"] = torch_linear(width, width)
      sd[f"{p}attention.attention.{n}.bias"] = fill(width)
    sd.update({p + "attention.output.dense.weight": torch_linear(width, width),
               p + "attention.output.dense.bias": fill(width),
               p + "intermediate.dense.weight": torch_linear(mlp, width),
               p + "intermediate.dense.bias": fill(mlp),
               p + "output.dense.weight": torch_linear(width, mlp),
               p + "output.dense.bias": fill(width),
               p + "layernorm_before.weight": fill(width, around=1.0),
               p + "layernorm_before.bias": fill(width),
               p + "layernorm_after.weight": fill(width, around=1.0),
               p + "layernorm_after.bias": fill(width)})
  if pooler:
    sd[prefix + "pooler.dense.weight"] = torch_linear(width, width)
    sd[prefix + "pooler.dense.bias"] = fill(width)
  else:
    sd["classifier.weight"] = torch_linear(classes, width)
    sd["classifier.bias"] = fill(classes)
  return sd
