"""timm and Hugging Face `transformers` ViT weights in `.safetensors`, without torch.

PyTorch ports store linear weights as (out, in), conv weights as OIHW, and
concatenate attention heads along the output features (feature = head * head_dim
+ d). timm fuses query/key/value into one `qkv` (3D, D) weight ordered
[q | k | v]; transformers keeps them apart. Our kernels are (in, out), HWIO, and
attention kernels split the heads out: query (D, H, hd), out (H, hd, D).

The files do not record the head count; `num_heads` defaults to the count of
the standard size with that width (see `HEADS_BY_WIDTH`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, Optional

import numpy as np
import safetensors
import safetensors.numpy

from vit_jax import families
from vit_jax.checkpoint import naflex_io
from vit_jax.checkpoint import tree as tree_lib
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.checkpoint.npz import atomic_write, storable
from vit_jax.models import layout as layout_lib

# Width -> heads of every size letter of the families, and of three sizes no family here
# registers: timm's medium (512), big_vision's giant (1408) and gigantic (1664). Where two
# sizes share a width (H and DINOv3's H+), the first listed (the standard size) is kept.
HEADS_BY_WIDTH: dict[int, int] = {}
for _size in families.SIZES.values():
  HEADS_BY_WIDTH.setdefault(_size["hidden_size"], _size["num_heads"])
HEADS_BY_WIDTH.update({512: 8, 1408: 16, 1664: 16})

_BLOCK = "Transformer/encoderblock_{}/"


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """All tensors of a `.safetensors` file as numpy arrays (copied out of the mmap)."""
  try:
    return {k: np.array(v) for k, v in safetensors.numpy.load_file(path).items()}
  except (safetensors.SafetensorError, OSError, ValueError, TypeError) as e:
    raise CheckpointError(
        f"{path}: cannot read it as a .safetensors file ({type(e).__name__}: {e}). "
        "The file is truncated or corrupt (download it again)."
    ) from e


def safetensors_format(tensors: Collection[str], path: str) -> str:
  """'timm' or 'hf' (transformers), from the key names (a mapping's keys, or a list)."""
  if "patch_embed.proj.weight" in tensors:
    return "timm"
  if any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in tensors):
    return "hf"
  raise CheckpointError(
      f"{path}: not a ViT checkpoint: expected timm's `patch_embed.proj.weight` or "
      "transformers' `vit.embeddings.patch_embeddings.projection.weight`; its keys start "
      f"{sorted(tensors)[:5]}.")


def head_count(width: int, num_heads: Optional[int], path: str) -> int:
  heads = num_heads or HEADS_BY_WIDTH.get(width)
  if heads is None:
    raise CheckpointError(
        f"{path}: width {width} is not a standard ViT size, so the head count is unknown: "
        "pass num_heads=... to vit_jax.checkpoint.load.")
  if width % heads:
    raise CheckpointError(f"{path}: width {width} is not divisible by num_heads={heads}.")
  return heads


def config_heads(path: str) -> Optional[int]:
  """The head count from a `config.json` beside the weights: transformers'
  `num_attention_heads` or timm's `model_args.num_heads`."""
  config = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
  if not os.path.exists(config):
    return None
  try:
    with open(config) as f:
      config = json.load(f)
  except (OSError, ValueError):
    return None
  if not isinstance(config, dict):
    return None
  return config.get("num_attention_heads") or (config.get("model_args") or {}).get("num_heads")


class Consumer:
  """Hands out tensors by name and remembers which ones were used.

  Every key of the file must be consumed; leftovers mean a component we do not
  model (e.g. register tokens, layer scale), and converting without it would
  silently change the network.
  """

  def __init__(self, tensors: Mapping[str, np.ndarray], path: str):
    self.tensors = dict(tensors)
    self.path = path
    self.used: set[str] = set()

  def __contains__(self, key: str) -> bool:
    return key in self.tensors

  def __call__(self, key: str) -> np.ndarray:
    if key not in self.tensors:
      raise CheckpointError(f"{self.path}: missing tensor {key!r} (the ViT layout needs it).")
    self.used.add(key)
    return self.tensors[key]

  def check_all_used(self, what: str) -> None:
    left = sorted(set(self.tensors) - self.used)
    if left:
      shown = ", ".join(f"{k} {tuple(self.tensors[k].shape)}" for k in left[:8])
      raise CheckpointError(
          f"{self.path}: {len(left)} tensor(s) do not belong to a plain {what} ViT and would "
          f"be dropped: {shown}{' ...' if len(left) > 8 else ''}. This is another "
          "architecture (or a ViT variant this project does not implement).")


def linear(get: Callable[[str], np.ndarray], name: str) -> dict[str, np.ndarray]:
  """torch Linear (out, in) -> Dense {kernel (in, out), bias}."""
  return {"kernel": get(f"{name}.weight").T, "bias": get(f"{name}.bias")}


def layer_norm(get: Callable[[str], np.ndarray], name: str) -> dict[str, np.ndarray]:
  """torch LayerNorm -> {scale, bias}; an RMSNorm (a Consumer without `.bias`) -> {scale}."""
  if isinstance(get, Consumer) and f"{name}.weight" in get and f"{name}.bias" not in get:
    return {"scale": get(f"{name}.weight")}
  return {"scale": get(f"{name}.weight"), "bias": get(f"{name}.bias")}


def heads_in(weight: np.ndarray, bias: np.ndarray, heads: int) -> dict[str, np.ndarray]:
  """q/k/v Linear (H*hd, D) -> DenseGeneral kernel (D, H, hd), bias (H, hd)."""
  width = weight.shape[1]
  return {"kernel": weight.T.reshape(width, heads, -1), "bias": bias.reshape(heads, -1)}


def heads_out(weight: np.ndarray, bias: np.ndarray, heads: int) -> dict[str, np.ndarray]:
  """Output Linear (D, H*hd) -> DenseGeneral kernel (H, hd, D)."""
  return {"kernel": weight.T.reshape(heads, -1, weight.shape[0]), "bias": bias}


def conv(get: Callable[[str], np.ndarray], name: str) -> dict[str, np.ndarray]:
  """torch Conv2d OIHW -> flax Conv HWIO."""
  return {"kernel": get(f"{name}.weight").transpose(2, 3, 1, 0), "bias": get(f"{name}.bias")}


def count_blocks(tensors: Mapping[str, Any], pattern: str) -> int:
  found = {int(m.group(1)) for k in tensors if (m := re.match(pattern, k))}
  if found and found != set(range(len(found))):
    raise CheckpointError(f"Encoder blocks are not numbered 0..{len(found) - 1}: "
                          f"found {sorted(found)}.")
  return len(found)


def optional_linear(get: Consumer, name: str) -> dict[str, np.ndarray]:
  """A torch Linear whose bias may be absent (CLIP's projection)."""
  out = {"kernel": get(f"{name}.weight").T}
  if f"{name}.bias" in get:
    out["bias"] = get(f"{name}.bias")
  return out


def _timm_attention(get: Consumer, src: str, width: int, heads: int) -> dict[str, Any]:
  """timm `Attention` (fused qkv [+ bias]) or `EvaAttention` (fused qkv with q_bias /
  v_bias, or separate q_proj / k_proj / v_proj) -> MultiHeadDotProductAttention params."""
  names = ("query", "key", "value")
  if src + "attn.qkv.weight" in get:
    weights = list(get(src + "attn.qkv.weight").reshape(3, -1, width))  # [q | k | v] rows
    if src + "attn.qkv.bias" in get:
      biases = list(get(src + "attn.qkv.bias").reshape(3, -1))
    elif src + "attn.q_bias" in get:  # EVA: k has no bias (a zero buffer, not saved)
      biases = [get(src + "attn.q_bias"), None, get(src + "attn.v_bias")]
    else:
      biases = [None, None, None]
  else:
    weights, biases = [], []
    for short in ("q", "k", "v"):
      weights.append(get(f"{src}attn.{short}_proj.weight"))
      bias = f"{src}attn.{short}_proj.bias"
      biases.append(get(bias) if bias in get else None)
  attn = {}
  for name, weight, bias in zip(names, weights, biases):
    attn[name] = {"kernel": weight.T.reshape(width, heads, -1)}
    if bias is not None:
      attn[name]["bias"] = bias.reshape(heads, -1)
  out_weight = get(src + "attn.proj.weight")
  attn["out"] = {"kernel": out_weight.T.reshape(heads, -1, width)}
  if src + "attn.proj.bias" in get:  # AIMv2's has none
    attn["out"]["bias"] = get(src + "attn.proj.bias")
  for short, name in (("q", "query_norm"), ("k", "key_norm")):
    if f"{src}attn.{short}_norm.weight" in get:
      attn[name] = layer_norm(get, f"{src}attn.{short}_norm")
  return attn


def _timm_mlp(get: Consumer, src: str) -> dict[str, Any]:
  """timm Mlp, SwiGLUPacked / GluMlp (fc1 = [gate | x] rows) or SwiGLU (fc1_g, fc1_x),
  with EVA-02's optional inner `mlp.norm` -> MlpBlock params."""
  if src + "mlp.fc1_g.weight" in get:  # AIMv2's have no biases
    mlp = {"gate": optional_linear(get, src + "mlp.fc1_g"),
           "up": optional_linear(get, src + "mlp.fc1_x")}
  else:
    fc1_w, fc1_b = get(src + "mlp.fc1.weight"), get(src + "mlp.fc1.bias")
    hidden = get.tensors[src + "mlp.fc2.weight"].shape[1]
    if fc1_w.shape[0] == 2 * hidden:  # packed SwiGLU: silu(first half) * second half
      mlp = {"gate": {"kernel": fc1_w[:hidden].T, "bias": fc1_b[:hidden]},
             "up": {"kernel": fc1_w[hidden:].T, "bias": fc1_b[hidden:]}}
    else:
      mlp = {"Dense_0": {"kernel": fc1_w.T, "bias": fc1_b}}
  if src + "mlp.norm.weight" in get:
    mlp["inner_norm"] = layer_norm(get, src + "mlp.norm")
  mlp["Dense_1"] = optional_linear(get, src + "mlp.fc2")
  return mlp


def timm_to_linen(tensors: Mapping[str, np.ndarray], path: str,
                  num_heads: Optional[int] = None,
                  map_num_heads: Optional[int] = None) -> dict[str, Any]:
  """timm `VisionTransformer` / `Eva` state dict -> per-layer Linen params.

  Every timm name has its place (docs/checkpoint_formats.md, 'timm'): reg_token ->
  registers, dist_token -> dist, norm_pre -> Transformer/pre_norm, fc_norm, ls{1,2}.gamma
  / gamma_{1,2} -> LayerScale_{0,1}, q_bias / v_bias, q_norm / k_norm, SwiGLU. The
  position embedding is kept as stored (with `no_embed_class` it covers the patches
  only; the model must then be built with no_embed_class=True, see timm_model). A timm
  NaFlexViT's names are read as their ViT equivalents (naflex_io). Also:
  patch_embed.norm -> embedding_norm, RMSNorms (no `.bias`) -> {scale}, bias-free
  projections (AIMv2), RoPE-Mixed's rope.freqs [2, depth, H, hd/2] -> each block's
  MultiHeadDotProductAttention_0/rope_freqs [2, H, hd/2]; `map_num_heads`: the
  attn_pool's heads when not the encoder's (Perception Encoder).
  """
  if naflex_io.is_naflex(tensors):
    tensors = naflex_io.to_vit_names(tensors)
  get = Consumer(tensors, path)
  width = tensors["patch_embed.proj.weight"].shape[0]
  heads = head_count(width, num_heads or config_heads(path), path)
  flat: dict[str, np.ndarray] = {}
  flat["embedding/kernel"] = get("patch_embed.proj.weight").transpose(2, 3, 1, 0)
  if "patch_embed.proj.bias" in get:
    flat["embedding/bias"] = get("patch_embed.proj.bias")
  for src, dst in (("cls_token", "cls"), ("dist_token", "dist"), ("reg_token", "registers")):
    if src in get:
      flat[dst] = get(src)
  if "patch_embed.norm.weight" in get:
    flat.update(tree_lib.flatten(layer_norm(get, "patch_embed.norm"), "embedding_norm/"))
  if "pos_embed" in get:
    flat["Transformer/posembed_input/pos_embedding"] = get("pos_embed")
  rope_freqs = get("rope.freqs") if "rope.freqs" in get else None  # [2, depth, H, hd/2]
  if "norm_pre.weight" in get:
    flat.update(tree_lib.flatten(layer_norm(get, "norm_pre"), "Transformer/pre_norm/"))
  for i in range(count_blocks(tensors, r"blocks\.(\d+)\.")):
    src, dst = f"blocks.{i}.", _BLOCK.format(i)
    block = {
        "LayerNorm_0": layer_norm(get, src + "norm1"),
        "MultiHeadDotProductAttention_0": _timm_attention(get, src, width, heads),
        "LayerNorm_1": layer_norm(get, src + "norm2"),
        "MlpBlock_0": _timm_mlp(get, src),
    }
    if rope_freqs is not None:
      block["MultiHeadDotProductAttention_0"]["rope_freqs"] = rope_freqs[:, i]
    for j, (vit_name, eva_name) in enumerate((("ls1.gamma", "gamma_1"),
                                              ("ls2.gamma", "gamma_2"))):
      for name in (vit_name, eva_name):
        if src + name in get:
          block[f"LayerScale_{j}"] = {"scale": get(src + name)}
    flat.update(tree_lib.flatten(block, dst))
  if "norm.weight" in get:
    flat.update(tree_lib.flatten(layer_norm(get, "norm"), "Transformer/encoder_norm/"))
  if "fc_norm.weight" in get:
    flat.update(tree_lib.flatten(layer_norm(get, "fc_norm"), "fc_norm/"))
  if "attn_pool.latent" in get and "attn_pool.q.weight" not in get:
    # The attention-only head (transformers AIMv2): the latent is the query.
    kv_w = get("attn_pool.kv.weight").reshape(2, width, width)  # [k | v] rows
    kv_b = (get("attn_pool.kv.bias").reshape(2, width) if "attn_pool.kv.bias" in get
            else (None, None))
    heads_map = map_num_heads or heads
    attn = {}
    for name, w, b in (("key", kv_w[0], kv_b[0]), ("value", kv_w[1], kv_b[1])):
      attn[name] = {"kernel": w.T.reshape(width, heads_map, -1)}
      if b is not None:
        attn[name]["bias"] = b.reshape(heads_map, -1)
    attn["out"] = heads_out(get("attn_pool.proj.weight"), get("attn_pool.proj.bias"), heads_map)
    flat.update(tree_lib.flatten(dict(attn, probe=get("attn_pool.latent")), "MAPHead_0/"))
  elif "attn_pool.latent" in get:
    heads = map_num_heads or heads
    kv_w = get("attn_pool.kv.weight").reshape(2, width, width)  # [k | v] rows
    kv_b = get("attn_pool.kv.bias").reshape(2, width)
    map_head = {
        "probe": get("attn_pool.latent"),
        "MultiHeadDotProductAttention_0": {
            "query": heads_in(get("attn_pool.q.weight"), get("attn_pool.q.bias"), heads),
            "key": heads_in(kv_w[0], kv_b[0], heads),
            "value": heads_in(kv_w[1], kv_b[1], heads),
            "out": heads_out(get("attn_pool.proj.weight"), get("attn_pool.proj.bias"), heads),
        },
        "LayerNorm_0": layer_norm(get, "attn_pool.norm"),
        "MlpBlock_0": {"Dense_0": linear(get, "attn_pool.mlp.fc1"),
                       "Dense_1": linear(get, "attn_pool.mlp.fc2")},
    }
    flat.update(tree_lib.flatten(map_head, "MAPHead_0/"))
  if "pre_logits.fc.weight" in get:
    flat.update(tree_lib.flatten(linear(get, "pre_logits.fc"), "pre_logits/"))
  for name in ("head", "head_dist"):
    if f"{name}.weight" in get:
      flat.update(tree_lib.flatten(optional_linear(get, name), f"{name}/"))
  get.check_all_used("timm")
  return tree_lib.unflatten(flat)


TIMM_NAMES = ("vit", "eva", "eva_separate_qkv", "eva_swiglu", "naflex")


def timm_names(params: Mapping[str, Any]) -> str:
  """The timm module family whose key names `params` are written in, when not given.

  "eva" (timm `Eva`: gamma_{1,2}, q_bias / v_bias) for models timm builds only in eva.py:
  query/value biases without a key bias, or no absolute position embedding (RoPE only);
  its EVA-02 B/L form "eva_separate_qkv" (q_proj / k_proj / v_proj) goes with the MLP's
  inner LayerNorm, as in timm's EVA-02 definitions; "eva_swiglu" (fused qkv, SwiGLU's gate
  and value as separate `fc1_g` / `fc1_x`) is DINOv3's S+ / H+ / 7B (timm
  `swiglu_align_to`): a SwiGLU without inner norm and without absolute position embedding.
  RoPE-Mixed (`rope_freqs`) is "eva". Otherwise "vit" (VisionTransformer). The params cannot
  show that a model with a position embedding and all three biases was built by timm's Eva
  (Perception Encoder, RoPE-Axial with APE): with LayerScale its names differ (gamma_1 /
  ls1.gamma), so pass the reader's `ModelSpec.key_names` to write such a model back.
  """
  flat = tree_lib.flatten(params)
  query_bias = any(k.endswith("MultiHeadDotProductAttention_0/query/bias") and "/encoderblock"
                   in k for k in flat)
  key_bias = any(k.endswith("MultiHeadDotProductAttention_0/key/bias") and "/encoderblock"
                 in k for k in flat)
  eva = (query_bias and not key_bias) or "Transformer/posembed_input/pos_embedding" not in flat
  eva = eva or any(k.endswith("/rope_freqs") for k in flat)  # RoPE-Mixed: only timm's Eva
  if not eva:
    return "vit"
  if any("/inner_norm/" in k for k in flat):
    return "eva_separate_qkv"
  if "Transformer/posembed_input/pos_embedding" not in flat and any(
      "/MlpBlock_0/gate/" in k for k in flat):
    return "eva_swiglu"
  return "eva"


def linen_to_timm(params: Mapping[str, Any], names: Optional[str] = None) -> dict[str, np.ndarray]:
  """Our params (per-layer or scanned) -> timm `VisionTransformer` / `Eva` state dict.

  `names`: one of TIMM_NAMES (default: `timm_names(params)`). timm reads the result
  with the architecture the params came from (docs/checkpoint_formats.md, 'timm'); a
  plain ViT with `global_pool="token"` (cls models), `class_token=False,
  global_pool="avg", fc_norm=False` (gap models: our final LayerNorm comes before
  pooling), or `global_pool="map"` (MAP models).
  """
  params = tree_lib.to_numpy(params)
  if names is None:
    names = timm_names(params)
  if names not in TIMM_NAMES:
    raise CheckpointError(f"Unknown timm names {names!r}; choose one of {TIMM_NAMES}.")
  if names == "naflex":  # timm NaFlexViT: the ViT's tensors under its own names
    return naflex_io.from_vit_names(linen_to_timm(params, "vit"))
  if layout_lib.is_stacked(params):
    params = layout_lib.unstack_layers(params)
  flat = tree_lib.flatten(params)
  out: dict[str, np.ndarray] = {}

  def put_linear(name, dense):
    out[f"{name}.weight"] = dense["kernel"].T
    if "bias" in dense:
      out[f"{name}.bias"] = dense["bias"]

  put_norm = lambda name, ln: out.update({f"{name}.weight": ln["scale"],
                                          **({f"{name}.bias": ln["bias"]} if "bias" in ln
                                             else {})})
  merge_heads_in = lambda d: (d["kernel"].reshape(d["kernel"].shape[0], -1).T,
                              d["bias"].reshape(-1) if "bias" in d else None)
  merge_heads_out = lambda d: (d["kernel"].reshape(-1, d["kernel"].shape[-1]).T, d.get("bias"))

  out["patch_embed.proj.weight"] = params["embedding"]["kernel"].transpose(3, 2, 0, 1)
  if "bias" in params["embedding"]:
    out["patch_embed.proj.bias"] = params["embedding"]["bias"]
  if "embedding_norm" in params:
    put_norm("patch_embed.norm", params["embedding_norm"])
  for src, dst in (("cls", "cls_token"), ("dist", "dist_token"), ("registers", "reg_token")):
    if src in params:
      out[dst] = params[src]
  if "Transformer/posembed_input/pos_embedding" in flat:
    out["pos_embed"] = flat["Transformer/posembed_input/pos_embedding"]
  encoder = params["Transformer"]
  if "pre_norm" in encoder:
    put_norm("norm_pre", encoder["pre_norm"])
  depth = len([k for k in encoder if k.startswith("encoderblock_")])
  for i in range(depth):
    block, dst = encoder[f"encoderblock_{i}"], f"blocks.{i}."
    attn = block["MultiHeadDotProductAttention_0"]
    qkv = [merge_heads_in(attn[n]) for n in ("query", "key", "value")]
    biases = [b for _, b in qkv]
    if names == "eva_separate_qkv":
      for short, (w, b) in zip("qkv", qkv):
        out[f"{dst}attn.{short}_proj.weight"] = w
        if b is not None:
          out[f"{dst}attn.{short}_proj.bias"] = b
    else:
      out[dst + "attn.qkv.weight"] = np.concatenate([w for w, _ in qkv], axis=0)
      # timm Eva's q_bias / v_bias (its key bias a zero buffer); a bias on all three is a
      # fused qkv.bias (timm's AttentionRope: PE, RoPE-ViT).
      if names in ("eva", "eva_swiglu") and biases[0] is not None and biases[1] is None:
        out[dst + "attn.q_bias"], out[dst + "attn.v_bias"] = biases[0], biases[2]
      elif all(b is not None for b in biases):
        out[dst + "attn.qkv.bias"] = np.concatenate(biases, axis=0)
      elif any(b is not None for b in biases):
        raise CheckpointError("timm's VisionTransformer has a bias on all of q, k, v or on "
                              "none; these params have it on some: export with names='eva'.")
    out[dst + "attn.proj.weight"], proj_bias = merge_heads_out(attn["out"])
    if proj_bias is not None:
      out[dst + "attn.proj.bias"] = proj_bias
    if "rope_freqs" in attn:  # stacked over the blocks again below: [2, depth, H, hd/2]
      out.setdefault("rope.freqs", []).append(attn["rope_freqs"])
    for short, name in (("q", "query_norm"), ("k", "key_norm")):
      if name in attn:
        put_norm(f"{dst}attn.{short}_norm", attn[name])
    put_norm(dst + "norm1", block["LayerNorm_0"])
    put_norm(dst + "norm2", block["LayerNorm_1"])
    mlp = block["MlpBlock_0"]
    if "gate" in mlp and ("inner_norm" in mlp or "bias" not in mlp["gate"]
                          or names == "eva_swiglu"):
      # timm SwiGLU: EVA-02 B/L (inner norm), AIMv2 (no biases), DINOv3 S+/H+/7B
      put_linear(dst + "mlp.fc1_g", mlp["gate"])
      put_linear(dst + "mlp.fc1_x", mlp["up"])
    elif "gate" in mlp:  # timm SwiGLUPacked / GluMlp: [gate | x] rows
      put_linear(dst + "mlp.fc1", {k: np.concatenate([mlp["gate"][k], mlp["up"][k]], axis=-1)
                               for k in ("kernel", "bias")})
    else:
      put_linear(dst + "mlp.fc1", mlp["Dense_0"])
    if "inner_norm" in mlp:
      put_norm(dst + "mlp.norm", mlp["inner_norm"])
    put_linear(dst + "mlp.fc2", mlp["Dense_1"])
    gammas = ("gamma_1", "gamma_2") if names.startswith("eva") else ("ls1.gamma", "ls2.gamma")
    for j, name in enumerate(gammas):
      if f"LayerScale_{j}" in block:
        out[dst + name] = block[f"LayerScale_{j}"]["scale"]
  if "rope.freqs" in out:
    out["rope.freqs"] = np.stack(out["rope.freqs"], axis=1)
  if "encoder_norm" in encoder:
    put_norm("norm", encoder["encoder_norm"])
  if "fc_norm" in params:
    put_norm("fc_norm", params["fc_norm"])
  if "MAPHead_0" in params and "MultiHeadDotProductAttention_0" not in params["MAPHead_0"]:
    head = params["MAPHead_0"]  # attention only (transformers AIMv2): no q, norm or MLP
    out["attn_pool.latent"] = head["probe"]
    kv = [merge_heads_in(head[n]) for n in ("key", "value")]
    out["attn_pool.kv.weight"] = np.concatenate([w for w, _ in kv], axis=0)
    if kv[0][1] is not None:
      out["attn_pool.kv.bias"] = np.concatenate([b for _, b in kv], axis=0)
    out["attn_pool.proj.weight"], out["attn_pool.proj.bias"] = merge_heads_out(head["out"])
  elif "MAPHead_0" in params:
    head = params["MAPHead_0"]
    attn = head["MultiHeadDotProductAttention_0"]
    out["attn_pool.latent"] = head["probe"]
    out["attn_pool.q.weight"], out["attn_pool.q.bias"] = merge_heads_in(attn["query"])
    kv = [merge_heads_in(attn[n]) for n in ("key", "value")]
    out["attn_pool.kv.weight"] = np.concatenate([w for w, _ in kv], axis=0)
    out["attn_pool.kv.bias"] = np.concatenate([b for _, b in kv], axis=0)
    out["attn_pool.proj.weight"], out["attn_pool.proj.bias"] = merge_heads_out(attn["out"])
    put_norm("attn_pool.norm", head["LayerNorm_0"])
    put_linear("attn_pool.mlp.fc1", head["MlpBlock_0"]["Dense_0"])
    put_linear("attn_pool.mlp.fc2", head["MlpBlock_0"]["Dense_1"])
  if "pre_logits" in params:
    put_linear("pre_logits.fc", params["pre_logits"])
  for name in ("head", "head_dist"):
    if name in params:
      put_linear(name, params[name])
  return out


def save_safetensors_timm(params: Mapping[str, Any], path: str,
                          names: Optional[str] = None) -> None:
  """Writes `params` as a timm `VisionTransformer` / `Eva` `.safetensors` (atomically).

  bfloat16 leaves are written as float32; see `linen_to_timm` for `names` and the timm
  options that read non-cls models.
  """
  tensors = {k: np.ascontiguousarray(storable(v))
             for k, v in linen_to_timm(params, names).items()}
  data = safetensors.numpy.save(tensors, metadata={"format": "pt"})
  atomic_write(path, lambda f: f.write(data))
