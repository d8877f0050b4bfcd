"""NaFlex checkpoints' own names: timm NaFlexViT and transformers SigLIP 2 patch embeddings.

Both embed pre-patchified pixels with a Linear layer, [D, ph * pw * C] (torch (out, in)),
each patch flattened (ph, pw, C) row-major (timm's `batch_patchify`, transformers'
`convert_image_to_patches`): the conv kernel OIHW [D, C, ph, pw] of the canonical timm
ViT layout, reordered. timm NaFlexViT also keeps its position embedding as a grid
[1, GH, GW, D] and its tokens under `embeds.`:

  NaFlexViT (timm naflexvit.py)           canonical timm ViT
  embeds.proj.{weight [D, p*p*C], bias}   patch_embed.proj.{weight [D, C, p, p], bias}
  embeds.pos_embed [1, GH, GW, D]         pos_embed [1, GH * GW, D]
  embeds.cls_token, embeds.reg_token      cls_token, reg_token
  everything else                         the same name

`to_vit_names` and `from_vit_names` convert both ways exactly (a reshape and a transpose).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from vit_jax.checkpoint.errors import CheckpointError

_TOKENS = {"embeds.cls_token": "cls_token", "embeds.reg_token": "reg_token"}


def is_naflex(keys) -> bool:
  """A timm NaFlexViT state dict (its keys, or a mapping's)."""
  return "embeds.proj.weight" in keys


def conv_from_linear(weight: np.ndarray, channels: int = 3) -> np.ndarray:
  """A Linear patch embedding [D, p * p * C] ((ph, pw, C) order) -> OIHW [D, C, p, p]."""
  width, values = weight.shape
  side = math.isqrt(values // channels)
  if side * side * channels != values:
    raise CheckpointError(f"a Linear patch embedding of {values} inputs is not square patches "
                          f"of {channels} channels.")
  return weight.reshape(width, side, side, channels).transpose(0, 3, 1, 2)


def linear_from_conv(weight: np.ndarray) -> np.ndarray:
  """OIHW [D, C, ph, pw] -> a Linear patch embedding [D, ph * pw * C]."""
  return weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)


def to_vit_names(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """A NaFlexViT state dict in the canonical timm ViT names (module doc)."""
  out = {}
  for key, value in tensors.items():
    if key == "embeds.proj.weight":
      out["patch_embed.proj.weight"] = conv_from_linear(value)
    elif key == "embeds.proj.bias":
      out["patch_embed.proj.bias"] = value
    elif key == "embeds.pos_embed":  # [1, GH, GW, D] -> [1, GH * GW, D]
      out["pos_embed"] = value.reshape(1, -1, value.shape[-1])
    else:
      out[_TOKENS.get(key, key)] = value
  return out


def from_vit_names(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Canonical timm ViT names -> NaFlexViT's (the position grid must be square)."""
  back = {v: k for k, v in _TOKENS.items()}
  out = {}
  for key, value in tensors.items():
    if key == "patch_embed.proj.weight":
      out["embeds.proj.weight"] = linear_from_conv(value)
    elif key == "patch_embed.proj.bias":
      out["embeds.proj.bias"] = value
    elif key == "pos_embed":
      side = math.isqrt(value.shape[1])
      if side * side != value.shape[1]:
        raise CheckpointError(f"NaFlexViT keeps a square position grid; {value.shape[1]} "
                              "rows are not one (cls rows are not part of NaFlexViT's).")
      out["embeds.pos_embed"] = value.reshape(1, side, side, value.shape[-1])
    else:
      out[back.get(key, key)] = value
  return out
