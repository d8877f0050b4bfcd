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

import json
import os
import re
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from vit_jax import families
from vit_jax.checkpoint import safetensors_io as st
from vit_jax.checkpoint import tree as tree_lib
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.checkpoint.model_spec import ModelSpec
from vit_jax.models import options as options_lib

CONFIG_FILE = "open_clip_config.json"
PREFIX = "visual."
DEFAULT_HEAD_WIDTH = 64  # open_clip CLIPVisionCfg.head_width


def is_openclip(tensors: Mapping[str, Any]) -> bool:
  return PREFIX + "conv1.weight" in tensors


def openclip_to_linen(tensors: Mapping[str, np.ndarray], path: str,
                      num_heads: Optional[int] = None) -> dict[str, Any]:
  """The image tower of an open_clip state dict -> per-layer Linen params."""
  visual = {k: v for k, v in tensors.items() if k.startswith(PREFIX)}
  get = st.Consumer(visual, path)
  p = PREFIX
  width = visual[p + "conv1.weight"].shape[0]
  heads = num_heads or width // DEFAULT_HEAD_WIDTH
  if not heads or width % heads:
    raise CheckpointError(f"{path}: width {width} does not split into heads of "
                          f"{DEFAULT_HEAD_WIDTH}: pass num_heads (or keep {CONFIG_FILE} beside "
                          "the file).")
  flat: dict[str, Any] = {
      "embedding/kernel": get(p + "conv1.weight").transpose(2, 3, 1, 0),
      "cls": get(p + "class_embedding").reshape(1, 1, -1),
      "Transformer/posembed_input/pos_embedding": get(p + "positional_embedding")[None],
  }
  flat.update(tree_lib.flatten(st.layer_norm(get, p + "ln_pre"), "Transformer/pre_norm/"))
  depth = st.count_blocks(visual, re.escape(p) + r"transformer\.resblocks\.(\d+)\.")
  for i in range(depth):
    src = f"{p}transformer.resblocks.{i}."
    w = get(src + "attn.in_proj_weight").reshape(3, width, width)
    b = get(src + "attn.in_proj_bias").reshape(3, width)
    attn = {name: st.heads_in(w[j], b[j], heads)
            for j, name in enumerate(("query", "key", "value"))}
    attn["out"] = st.heads_out(get(src + "attn.out_proj.weight"),
                                get(src + "attn.out_proj.bias"), heads)
    block = {"LayerNorm_0": st.layer_norm(get, src + "ln_1"),
             "MultiHeadDotProductAttention_0": attn,
             "LayerNorm_1": st.layer_norm(get, src + "ln_2"),
             "MlpBlock_0": {"Dense_0": st.linear(get, src + "mlp.c_fc"),
                            "Dense_1": st.linear(get, src + "mlp.c_proj")}}
    flat.update(tree_lib.flatten(block, f"Transformer/encoderblock_{i}/"))
  flat.update(tree_lib.flatten(st.layer_norm(get, p + "ln_post"), "Transformer/encoder_norm/"))
  if p + "proj" in get:
    flat["head/kernel"] = get(p + "proj")  # already (in, out): used as x @ proj
  get.check_all_used("OpenCLIP")
  return tree_lib.unflatten(flat)


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
  params = openclip_to_linen(tensors, path, num_heads)
  kernel = params["embedding"]["kernel"]
  width = kernel.shape[-1]
  encoder = params["Transformer"]
  depth = len([k for k in encoder if k.startswith("encoderblock_")])
  for field, found in (("width", width), ("layers", depth)):
    if vision.get(field) not in (None, found):
      raise CheckpointError(
          f"{config_path}: model_cfg.vision_cfg.{field}={vision[field]}, the weights have "
          f"{found}: the config belongs to another model (fix or remove {CONFIG_FILE}).")
  family = families.openclip_family()
  options = options_lib.EncoderOptions(
      **family.openclip,
      **families.activation_options("quick_gelu" if quick_gelu else "gelu", config_path))
  fields = dict(
      num_classes=params["head"]["kernel"].shape[1] if "head" in params else None,
      patch_size=kernel.shape[0], hidden_size=width,
      num_layers=depth,
      mlp_dim=encoder["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"].shape[1],
      num_heads=encoder["encoderblock_0"]["MultiHeadDotProductAttention_0"]["query"][
          "kernel"].shape[1], classifier="token")
  return params, ModelSpec("open_clip", fields, options, "openclip", family=family.name)
