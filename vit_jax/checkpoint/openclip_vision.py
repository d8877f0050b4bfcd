"""OpenCLIP / OpenAI CLIP vision towers (`visual.*`) as timm state dicts.

OpenCLIP's `VisionTransformer` (`open_clip: src/open_clip/transformer.py`) names:

    visual.conv1.weight                         [D, 3, p, p]  no bias
    visual.class_embedding                      [D]
    visual.positional_embedding                 [1 + N, D]
    visual.ln_pre.{weight,bias}
    visual.transformer.resblocks.{i}.ln_1 / ln_2
    visual.transformer.resblocks.{i}.attn.in_proj_{weight,bias}   [3D, D], [3D]  (q; k; v)
    visual.transformer.resblocks.{i}.attn.out_proj.{weight,bias}
    visual.transformer.resblocks.{i}.mlp.c_fc / c_proj
    visual.ln_post.{weight,bias}
    visual.proj                                 [D, E]  (x @ proj: the transpose of a Linear)

renamed as timm's `_convert_openai_clip` (`timm/models/vision_transformer.py`) does, into
a timm `vit_*_clip_*` model (pre-norm, no patch bias, LayerNorm eps 1e-5, cls pooling, the
projection as a bias-free head). The weights do not say whether the MLP used QuickGELU
(OpenAI's models and OpenCLIP's `*-quickgelu` configs) or GELU (most LAION models): that
comes from `open_clip_config.json` (`model_cfg.quick_gelu`, as OpenCLIP's Hub repositories
carry it) or the caller; without either the reader asks. Models with a non-standard tower
(attentional pooler, LayerScale, `final_ln_after_pool`, no cls token) are refused by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_jax.checkpoint.errors import CheckpointError

PREFIX = "visual."
CONFIG_FILE = "open_clip_config.json"
_BLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
_BLOCK_PARTS = {
    "ln_1": "norm1", "ln_2": "norm2", "attn.in_proj_": "attn.qkv.", "attn.out_proj": "attn.proj",
    "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
}
_TOP = {"conv1.weight": "patch_embed.proj.weight", "ln_pre.weight": "norm_pre.weight",
        "ln_pre.bias": "norm_pre.bias", "ln_post.weight": "norm.weight",
        "ln_post.bias": "norm.bias"}


def is_openclip(state: Mapping[str, Any]) -> bool:
  return f"{PREFIX}conv1.weight" in state and f"{PREFIX}class_embedding" in state


def _size_name(width: int) -> str:
  return {768: "base", 1024: "large", 1280: "huge", 1664: "giant"}.get(width, f"w{width}")


def quick_gelu_from_config(config: Mapping[str, Any] | None) -> bool | None:
  """open_clip_config.json -> whether the tower uses QuickGELU (None: not said)."""
  if not config:
    return None
  model_cfg = config.get("model_cfg", config)
  if "quick_gelu" in model_cfg:
    return bool(model_cfg["quick_gelu"])
  return False  # OpenCLIP's CLIP default (`quick_gelu: bool = False`)


def to_timm(state: Mapping[str, np.ndarray], *, quick_gelu: bool | None,
            source: str = "OpenCLIP checkpoint"
            ) -> tuple[dict[str, np.ndarray], str, dict[str, Any], dict[str, Any], list[str]]:
  """`visual.*` of an OpenCLIP state dict -> (timm state dict, architecture, model_args,
  option overrides, keys left out (the text tower, logit_scale))."""
  if quick_gelu is None:
    raise CheckpointError(
        f"{source}: an OpenCLIP vision tower, but whether it uses QuickGELU (OpenAI CLIP, "
        f"*-quickgelu models) or GELU (most LAION models) is not in the weights: put its "
        f"{CONFIG_FILE} beside the file, or name the timm architecture "
        "(vit_base_patch16_clip_quickgelu_224 or vit_base_patch16_clip_224).")
  vision = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
  skipped = sorted(k for k in state if not k.startswith(PREFIX))
  out: dict[str, np.ndarray] = {}
  unknown = []
  for key, value in vision.items():
    if key in _TOP:
      out[_TOP[key]] = value
    elif key == "class_embedding":
      out["cls_token"] = value.reshape(1, 1, -1)
    elif key == "positional_embedding":
      out["pos_embed"] = value[None]
    elif key == "proj":
      out["head.weight"] = np.ascontiguousarray(value.T)  # x @ proj == Linear(proj.T)
      out["head.bias"] = np.zeros(value.shape[1], value.dtype)
    elif m := _BLOCK.fullmatch(key):
      i, rest = m.groups()
      for src, dst in _BLOCK_PARTS.items():
        if rest.startswith(src):
          out[f"blocks.{i}.{dst}{rest[len(src):]}"] = value
          break
      else:
        unknown.append(PREFIX + key)
    else:
      unknown.append(PREFIX + key)
  if unknown:
    raise CheckpointError(
        f"{source}: an OpenCLIP vision tower with parts timm's CLIP ViT does not have: "
        f"{sorted(unknown)[:5]} (attentional pooler, LayerScale, ...): not supported.")
  width = out["cls_token"].shape[-1]
  patch = out["patch_embed.proj.weight"].shape[-1]
  grid = round((out["pos_embed"].shape[1] - 1) ** 0.5)
  image = grid * patch
  arch = f"vit_{_size_name(width)}_patch{patch}_clip{'_quickgelu' if quick_gelu else ''}_{image}"
  return out, arch, {"img_size": image}, {"layernorm_epsilon": 1e-5}, skipped
