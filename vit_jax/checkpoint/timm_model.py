"""Which model a timm checkpoint is: its weights, its Hub `config.json`, its architecture.

A timm state dict names most of the architecture (docs/checkpoint_formats.md, 'timm'):
tokens (`cls_token`, `dist_token`, `reg_token`), norms (`norm_pre`, `norm`, `fc_norm`),
biases, LayerScale, SwiGLU, MAP head, widths, depth. What it cannot tell comes from the
architecture name (`config.json`'s `architecture` as timm's `save_for_hf` /
`push_to_hf_hub` write it, or the caller's `architecture=`) and `model_args`. Which names
exist and what each says is stated by the families (`vit_jax/families/`, exact patterns:
an architecture none of them names is refused, never read as a plain ViT); a config's
architecture also fixes the sizes, which must be the weights':

  GELU form     erf (timm's nn.GELU), tanh (`act_layer="gelu_tanh"`) or QuickGELU
                (`*_clip_quickgelu_*`, `act_layer="quick_gelu"`)
  LayerNorm eps 1e-6, or 1e-5 for CLIP and DINOv3
  RoPE          EVA-02 (`eva02_*`) or DINOv3 (`*_dinov3*`)
  pooling       cls token, or average (timm's `global_pool`; EVA-02 and DINOv3 default
                to "avg")
  posemb rows   with or without cls/register rows (`no_embed_class`: DeiT III,
                DINOv2-reg), else guessed from the token count

A bare `.safetensors` loads when its keys leave nothing open (a timm VisionTransformer
without `norm_pre`, with an absolute position embedding and ViT-style names); EVA-style
names, a missing position embedding (RoPE) or `norm_pre` (CLIP: GELU or QuickGELU?)
need the architecture, and the error says so.

    params, found = read_timm("model_dir_or_file")
    logits = found.model().apply({"params": params}, images)
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
from vit_jax.checkpoint import naflex_io, safetensors_io
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.checkpoint.model_spec import ModelSpec
from vit_jax.models import options as options_lib
from vit_jax.models import positions

_POOLS = {"token": "token", "avg": "gap", "map": "map", "": "unpooled"}
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def describe(tensors: Mapping[str, np.ndarray], path: str, architecture: Optional[str] = None,
             model_args: Optional[Mapping[str, Any]] = None,
             num_heads: Optional[int] = None, check_sizes: bool = False,
             settings: Optional[Mapping[str, Any]] = None) -> ModelSpec:
  """The model of a timm state dict, from its keys and the architecture (see module doc).

  The one `describe` of every format: the transformers and OpenCLIP readers rename their
  keys to timm's (the canonical layout) and pass the facts their configs give as
  `settings` (ARCHITECTURE_ONLY fields, `act_layer` in any source's spelling,
  `global_pool`) instead of an architecture.

  `check_sizes`: the architecture's published sizes (width, depth; `model_args` change
  them) must be the weights' (a Hub config.json's architecture names the model; a
  caller's `architecture=` names the family's settings only).

  Raises CheckpointError when the keys leave the model open and no architecture is given,
  when the architecture is not one of `vit_jax.families`, or when the config disagrees
  with the weights (naming the field).
  """
  model_args = dict(model_args or {})
  naflex = naflex_io.is_naflex(tensors)
  if naflex:
    tensors = naflex_io.to_vit_names(tensors)
  has = lambda k: k in tensors
  if not has("patch_embed.proj.weight"):
    raise CheckpointError(f"{path}: not a timm ViT checkpoint: no `patch_embed.proj.weight`; "
                          f"its keys start {sorted(tensors)[:5]}.")
  width, _, ph, pw = tensors["patch_embed.proj.weight"].shape
  depth = len({m.group(1) for k in tensors if (m := re.match(r"blocks\.(\d+)\.", k))})
  eva_names = any(re.match(r"blocks\.\d+\.(gamma_1|attn\.q_bias|attn\.q_proj\.|mlp\.fc1_g\.)", k)
                  for k in tensors)
  if settings is not None:
    settings = dict(settings)
    family, published = None, {}
  elif architecture is None:
    unknown = [why for why, open_ in [
        ("EVA-style names (gamma_1, q_bias, q_proj, fc1_g): EVA-02 or DINOv3 RoPE settings",
         eva_names),
        ("no pos_embed: a RoPE model", not has("pos_embed")),
        ("norm_pre: a CLIP tower, GELU or QuickGELU", has("norm_pre.weight")),
        ("NaFlexViT names (embeds.*): its GELU form and position resize", naflex),
        ("norms without a bias: RMSNorm (AIMv2)?",
         has("blocks.0.norm1.weight") and not has("blocks.0.norm1.bias"))] if open_]
    if unknown:
      raise CheckpointError(
          f"{path}: the weights do not determine the model ({'; '.join(unknown)}). Put the "
          f"Hub {CONFIG_FILE} beside the file, or pass architecture=<timm name> (e.g. "
          "'eva02_base_patch14_224', 'vit_base_patch16_dinov3', "
          "'vit_base_patch16_clip_quickgelu_224').")
    settings: dict[str, Any] = dict(posemb_resize=families.TIMM_POSEMB_RESIZE)
    family, published = None, {}
  else:
    family, entry, sizes = families.timm_architecture(architecture, path)
    settings = {k: v for k, v in entry.options.items() if k in families.ARCHITECTURE_ONLY}
    settings.setdefault("posemb_resize", families.TIMM_POSEMB_RESIZE)
    if entry.global_pool:
      settings["global_pool"] = entry.global_pool
    published = dict(embed_dim=sizes["hidden_size"], depth=sizes["num_layers"],
                     num_heads=sizes["num_heads"]) if check_sizes else {}
    # The head count is the architecture's whenever the weights have its width: no table
    # of widths knows So150m's 14 heads of 64 or AIMv2-L's 8 of 128.
    if width == sizes["hidden_size"]:
      published.setdefault("num_heads", sizes["num_heads"])
  settings.update({k: v for k, v in model_args.items()
                   if k in ("act_layer", "global_pool", "init_values", "no_embed_class")})
  if "attn_pool_num_heads" in model_args:
    settings["map_num_heads"] = model_args["attn_pool_num_heads"]

  # Fields model_args state that the weights also show must agree with them, and so must
  # the architecture's published sizes where model_args leave them.
  for arg, found in (("embed_dim", width), ("depth", depth), ("patch_size", ph)):
    if arg in model_args and model_args[arg] != found:
      raise CheckpointError(
          f"{path}: {CONFIG_FILE} says model_args.{arg}={model_args[arg]}, the weights have "
          f"{found}: the config belongs to another model (fix or remove {CONFIG_FILE}).")
    if arg not in model_args and arg in published and published[arg] != found:
      raise CheckpointError(
          f"{path}: {CONFIG_FILE} says architecture={architecture!r}, whose {arg} is "
          f"{published[arg]}, but the weights have {arg}={found}: the config belongs to "
          f"another model (fix its architecture, or state model_args.{arg}).")
  heads = safetensors_io.head_count(
      width, model_args.get("num_heads") or num_heads or published.get("num_heads"), path)

  block0 = "blocks.0."
  if has(block0 + "mlp.fc1_g.weight"):
    mlp_dim, swiglu = tensors[block0 + "mlp.fc1_g.weight"].shape[0], True
  elif depth:
    mlp_dim = tensors[block0 + "mlp.fc2.weight"].shape[1]
    swiglu = tensors[block0 + "mlp.fc1.weight"].shape[0] == 2 * mlp_dim
  else:
    raise CheckpointError(f"{path}: no encoder blocks (`blocks.0.*`).")
  if has(block0 + "attn.qkv.bias") or has(block0 + "attn.k_proj.bias"):
    qkv_bias = "qkv"
  elif has(block0 + "attn.q_bias") or has(block0 + "attn.q_proj.bias"):
    qkv_bias = "qv"
  else:
    qkv_bias = "none"

  class_token = has("cls_token")
  num_registers = tensors["reg_token"].shape[1] if has("reg_token") else 0
  distilled = has("dist_token")
  prefix = int(class_token) + int(distilled) + num_registers
  if has("attn_pool.latent"):
    classifier = "map"
  elif "global_pool" in settings:
    classifier = _POOLS[settings["global_pool"]]
  else:
    classifier = "token" if class_token else "gap"
  if classifier == "token" and not class_token:
    classifier = "gap"
  if has("pos_embed"):
    tokens = tensors["pos_embed"].shape[1]
    no_embed_class = settings.get("no_embed_class")
    if no_embed_class is None:  # a square patch grid tells where the rows are
      tokens_of = {name: tensors[key] for key, name in (
          ("cls_token", "cls"), ("dist_token", "dist"), ("reg_token", "registers")) if has(key)}
      no_embed_class = bool(prefix) and positions.prefix_rows_from_params(tokens_of, tokens) == 0
  else:
    no_embed_class = False
  final_norm = has("norm.weight") or has("fc_norm.weight")
  if has("norm.weight") == has("fc_norm.weight") and (
      final_norm or settings.get("final_norm", True)):
    raise CheckpointError(f"{path}: expected one final LayerNorm, `norm` or `fc_norm`; found "
                          f"{'both' if has('norm.weight') else 'neither'}.")
  norm = settings.get("norm", "layernorm")
  if (norm == "layernorm") != has(block0 + "norm1.bias"):
    raise CheckpointError(
        f"{path}: the block norms {'have' if has(block0 + 'norm1.bias') else 'have no'} bias, "
        f"but the architecture's norm is {norm!r}: the config names another model (an RMSNorm "
        "model such as AIMv2 needs its architecture, e.g. 'aimv2_large_patch14_224').")
  proj_bias = has(block0 + "attn.proj.bias")
  if proj_bias != has(block0 + "mlp.fc2.bias"):
    raise CheckpointError(f"{path}: the attention output {'has' if proj_bias else 'has no'} "
                          "bias but the MLP's differs; this project builds both or neither.")
  if has("rope.freqs") != (settings.get("rope") == "mixed"):
    what = ("`rope.freqs` (learned RoPE-Mixed frequencies) without" if has("rope.freqs")
            else "no `rope.freqs` for")
    raise CheckpointError(f"{path}: {what} a RoPE-Mixed architecture: name the right "
                          "architecture (e.g. 'vit_base_patch16_rope_mixed_224').")
  map_mlp_dim = (tensors["attn_pool.mlp.fc1.weight"].shape[0]
                 if has("attn_pool.mlp.fc1.weight") else None)

  if swiglu:
    activation = dict(mlp_activation="swiglu")
  elif "act_layer" in settings:
    activation = families.activation_options(settings["act_layer"], f"{path}: act_layer")
  elif settings.get("mlp_activation") == "quick_gelu":
    activation = families.activation_options("quick_gelu", path)
  elif settings.get("gelu_approximate"):  # a family's tanh GELU (timm act_layer="gelu_tanh")
    activation = families.activation_options("gelu_tanh", path)
  else:  # timm's default nn.GELU (erf)
    activation = families.activation_options("gelu", path)
  has_ls = has(block0 + "ls1.gamma") or has(block0 + "gamma_1")
  options = options_lib.EncoderOptions(
      **activation,
      layernorm_epsilon=settings.get("layernorm_epsilon", 1e-6),
      layer_scale=(settings.get("init_values") or settings.get("layer_scale") or 1e-5)
      if has_ls else None,
      num_registers=num_registers, no_embed_class=no_embed_class, distilled=distilled,
      class_token=class_token if class_token != (classifier == "token") else None,
      fc_norm=has("fc_norm.weight"), pre_norm=has("norm_pre.weight"),
      patch_bias=has("patch_embed.proj.bias"),
      head_bias=has("head.bias") or not has("head.weight"),
      mlp_inner_norm=has(block0 + "mlp.norm.weight"), qkv_bias=qkv_bias,
      qk_norm=has(block0 + "attn.q_norm.weight"), rope=settings.get("rope"),
      rope_reference_grid=settings.get("rope_reference_grid"),
      posemb_resize=settings.get("posemb_resize") if has("pos_embed") else None,
      rope_temperature=settings.get("rope_temperature"),
      rope_grid_offset=settings.get("rope_grid_offset", 0.0),
      rope_grid_indexing=settings.get("rope_grid_indexing", "ij"),
      norm=norm, proj_bias=proj_bias, patch_norm=has("patch_embed.norm.weight"),
      final_norm=final_norm,
      map_num_heads=settings.get("map_num_heads") if classifier == "map" else None,
      map_mlp_dim=map_mlp_dim if map_mlp_dim != mlp_dim else None,
      map_prefix_tokens=bool(settings.get("map_prefix_tokens")) and classifier == "map"
      and prefix > 0,
      map_attention_only=has("attn_pool.latent") and not has("attn_pool.q.weight"))
  fields = dict(
      num_classes=tensors["head.weight"].shape[0] if has("head.weight") else None,
      patch_size=(ph, pw) if ph != pw else ph, hidden_size=width, num_layers=depth,
      mlp_dim=mlp_dim, num_heads=heads, classifier=classifier,
      posemb="learn" if has("pos_embed") else "none",
      representation_size=(tensors["pre_logits.fc.weight"].shape[0]
                           if has("pre_logits.fc.weight") else None))
  if naflex:
    key_names = "naflex"
  elif eva_names or not has("pos_embed"):
    key_names = "eva_separate_qkv" if has(block0 + "attn.q_proj.weight") else "eva"
    if key_names == "eva" and swiglu and has(block0 + "mlp.fc1_g.weight") and \
        not has("pos_embed"):
      key_names = "eva_swiglu"  # DINOv3 S+ / H+ / 7B (safetensors_io.timm_names)
  else:
    key_names = "vit"
  if family is not None:  # what the architecture states and the weights show must agree
    for name, value in entry.options.items():
      if name in options_lib.FIELDS and name not in families.ARCHITECTURE_ONLY and (
          getattr(options, name) != value):
        raise CheckpointError(
            f"{path}: {CONFIG_FILE} says architecture={architecture!r}, which has "
            f"{name}={value!r}, but the weights show {name}={getattr(options, name)!r}: the "
            "config belongs to another model (fix its architecture).")
  return ModelSpec(architecture, fields, options, key_names, family=family and family.name)


def _read_config(path: str) -> Optional[dict[str, Any]]:
  try:
    with open(path) as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path}: cannot read it as JSON ({e}); fix or remove it.") from e
  return config if isinstance(config, dict) and "architecture" in config else None


def check_config(tensors: Mapping[str, np.ndarray], weights: str) -> Optional[ModelSpec]:
  """For params-only reads (`checkpoint.load`): a Hub config.json beside `weights` must
  name an architecture a family knows, with the weights' sizes (model_args included), as
  for `load_pretrained`: the params of a model this project cannot build (Perception
  Encoder's RoPE, relative position biases) would otherwise be fitted into a plain ViT.
  Returns the model the config and weights describe (None without a config)."""
  config_path = os.path.join(os.path.dirname(os.path.abspath(weights)), CONFIG_FILE)
  config = _read_config(config_path) if os.path.exists(config_path) else None
  if not config:
    return None
  return describe(tensors, weights, config["architecture"], config.get("model_args") or {},
                  check_sizes=True)


def read_timm(path: str, architecture: Optional[str] = None,
              num_heads: Optional[int] = None) -> tuple[dict[str, Any], ModelSpec]:
  """Reads a timm checkpoint: a Hub folder (model.safetensors + config.json) or a file.

  A timm `config.json` beside a file is read too (the Hub cache keeps both in one
  snapshot folder); a caller's `architecture` wins over the config's.

  Returns:
    (params in the tree of `found.model()`, found: ModelSpec).
  """
  path = os.fspath(path)
  weights = os.path.join(path, WEIGHTS_FILE) if os.path.isdir(path) else path
  if not os.path.exists(weights):
    raise CheckpointError(f"{path}: no {WEIGHTS_FILE} in this folder (a timm Hub folder has "
                          f"{WEIGHTS_FILE} and {CONFIG_FILE}).")
  config_path = os.path.join(os.path.dirname(os.path.abspath(weights)), CONFIG_FILE)
  config = _read_config(config_path) if os.path.exists(config_path) else None
  tensors = safetensors_io.read_safetensors(weights)
  model_args = (config or {}).get("model_args") or {}
  found = describe(tensors, weights, architecture or (config or {}).get("architecture"),
                   model_args, num_heads, check_sizes=architecture is None and bool(config))
  params = safetensors_io.timm_to_linen(tensors, weights, found.fields["num_heads"],
                                        map_num_heads=found.options.map_num_heads)
  if config:
    found = dataclasses.replace(found, pretrained_cfg=dict(config.get("pretrained_cfg") or {}))
  return params, found
