"""OpenCLIP / OpenAI CLIP image towers (`visual.*`) in `.safetensors`.

open_clip's `VisionTransformer` state dict (open_clip/transformer.py), as OpenCLIP saves
`open_clip_model.safetensors` (docs/checkpoint_formats.md, 'OpenCLIP'):

  visual.conv1.weight [D, 3, p, p] (no bias)      -> embedding/kernel (patch_bias=False)
  visual.class_embedding [D]                      -> cls [1, 1, D]
  visual.positional_embedding [N+1, D]            -> posemb [1, N+1, D]
  visual.ln_pre                                   -> Transformer/pre_norm
  visual.transformer.resblocks.{i}.ln_1 / ln_2    -> LayerNorm_0 / LayerNorm_1
    attn.in_proj_weight [3D, D] rows [q; k; v], attn.in_proj_bias, attn.out_proj
    mlp.c_fc, mlp.c_proj                          -> MlpBlock_0/Dense_0, Dense_1
  visual.ln_post (on the pooled cls token)        -> Transformer/encoder_norm
  visual.proj [D, E], x @ proj, no bias           -> head/kernel (head_bias=False)

The text tower's tensors (everything not under `visual.`) are not read. The weights do
not say the activation: OpenAI's models use QuickGELU, OpenCLIP's own GELU (erf);
`open_clip_config.json` beside the file (`model_cfg.quick_gelu`, `vision_cfg.width /
head_width`) tells, or the caller's `quick_gelu=`. The rest (LayerNorm epsilon 1e-5, ...)
is the CLIP family's (`vit_jax.families.clip.OPENCLIP`); a `vision_cfg` whose width or
layer count is not the weights' is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from vit_jax import families
from vit_jax.checkpoint import safetensors_io as st
from vit_jax.checkpoint import timm_model
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.checkpoint.model_spec import ModelSpec

CONFIG_FILE = "open_clip_config.json"
PREFIX = "visual."
DEFAULT_HEAD_WIDTH = 64  # open_clip CLIPVisionCfg.head_width


def is_openclip(tensors: Mapping[str, Any]) -> bool:
  return PREFIX + "conv1.weight" in tensors


def to_timm_names(tensors: Mapping[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
  """The image tower of an open_clip state dict in timm's names (the canonical layout).

  Every `visual.*` tensor is used (a leftover is refused); the rest (the text tower,
  `logit_scale`) is not the image model.
  """
  visual = {k: v for k, v in tensors.items() if k.startswith(PREFIX)}
  get = st.Consumer(visual, path)
  p = PREFIX
  sd: dict[str, np.ndarray] = {
      "patch_embed.proj.weight": get(p + "conv1.weight"),
      "cls_token": get(p + "class_embedding").reshape(1, 1, -1),
      "pos_embed": get(p + "positional_embedding")[None],
  }
  renames = {"ln_pre": "norm_pre", "ln_post": "norm"}
  depth = st.count_blocks(visual, re.escape(p) + r"transformer\.resblocks\.(\d+)\.")
  for i in range(depth):
    src, dst = f"{p}transformer.resblocks.{i}.", f"blocks.{i}."
    # in_proj rows are [q; k; v], as timm's fused qkv.
    sd[dst + "attn.qkv.weight"] = get(src + "attn.in_proj_weight")
    sd[dst + "attn.qkv.bias"] = get(src + "attn.in_proj_bias")
    renames.update({f"transformer.resblocks.{i}.{a}": f"blocks.{i}.{b}" for a, b in (
        ("attn.out_proj", "attn.proj"), ("ln_1", "norm1"), ("ln_2", "norm2"),
        ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"))})
  for src, dst in renames.items():
    for name in ("weight", "bias"):
      sd[f"{dst}.{name}"] = get(f"{p}{src}.{name}")
  if p + "proj" in get:
    sd["head.weight"] = get(p + "proj").T  # used as x @ proj: (in, out) -> torch (out, in)
  get.check_all_used("OpenCLIP")
  return sd


def _heads(width: int, num_heads: Optional[int], path: str) -> int:
  heads = num_heads or width // DEFAULT_HEAD_WIDTH
  if not heads or width % heads:
    raise CheckpointError(f"{path}: width {width} does not split into heads of "
                          f"{DEFAULT_HEAD_WIDTH}: pass num_heads (or keep {CONFIG_FILE} beside "
                          "the file).")
  return heads


def openclip_to_linen(tensors: Mapping[str, np.ndarray], path: str,
                      num_heads: Optional[int] = None) -> dict[str, Any]:
  """The image tower of an open_clip state dict -> per-layer Linen params."""
  sd = to_timm_names(tensors, path)
  heads = _heads(sd["patch_embed.proj.weight"].shape[0], num_heads, path)
  return st.timm_to_linen(sd, path, heads)


def read_openclip(path: str, quick_gelu: Optional[bool] = None,
                  num_heads: Optional[int] = None) -> tuple[dict[str, Any], ModelSpec]:
  """Reads an OpenCLIP `.safetensors` (a folder holding one, or the file) -> (params, spec).

  `quick_gelu`: the activation (OpenAI's weights: True); taken from
  open_clip_config.json beside the file when not given.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if len(files) != 1:
      raise CheckpointError(f"{path}: expected one .safetensors file, found {files or 'none'}.")
    path = os.path.join(path, files[0])
  config_path = os.path.join(os.path.dirname(os.path.abspath(path)), CONFIG_FILE)
  model_cfg: dict[str, Any] = {}
  if os.path.exists(config_path):
    try:
      with open(config_path) as f:
        model_cfg = json.load(f).get("model_cfg") or {}
    except (OSError, ValueError, AttributeError) as e:
      raise CheckpointError(f"{config_path}: cannot read it ({e}); fix or remove it.") from e
  if quick_gelu is None:
    quick_gelu = model_cfg.get("quick_gelu")
  if quick_gelu is None:
    raise CheckpointError(
        f"{path}: an OpenCLIP image tower, but the weights do not say its activation: pass "
        f"quick_gelu=True (OpenAI's CLIP weights) or False (OpenCLIP's own), or keep "
        f"{CONFIG_FILE} beside the file.")
  vision = model_cfg.get("vision_cfg") or {}
  if num_heads is None and vision.get("width"):
    num_heads = vision["width"] // vision.get("head_width", DEFAULT_HEAD_WIDTH)
  tensors = st.read_safetensors(path)
  if not is_openclip(tensors):
    raise CheckpointError(f"{path}: no `visual.conv1.weight`: not an OpenCLIP model.")
  sd = to_timm_names(tensors, path)
  width = sd["patch_embed.proj.weight"].shape[0]
  depth = st.count_blocks(sd, r"blocks\.(\d+)\.")
  for field, found in (("width", width), ("layers", depth)):
    if vision.get(field) not in (None, found):
      raise CheckpointError(
          f"{config_path}: model_cfg.vision_cfg.{field}={vision[field]}, the weights have "
          f"{found}: the config belongs to another model (fix or remove {CONFIG_FILE}).")
  heads = _heads(width, num_heads, path)
  family = families.openclip_family()
  settings = {k: v for k, v in family.openclip.items() if k in families.ARCHITECTURE_ONLY}
  settings["act_layer"] = "quick_gelu" if quick_gelu else "gelu"
  found = timm_model.describe(sd, path, settings=settings, num_heads=heads)
  params = st.timm_to_linen(sd, path, heads)
  return params, dataclasses.replace(found, architecture="open_clip", key_names="openclip",
                                     family=family.name)
