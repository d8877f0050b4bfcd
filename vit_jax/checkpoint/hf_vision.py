"""Hugging Face transformers vision towers as timm state dicts (names, layouts, settings).

transformers saves `model.safetensors` with the names its PyTorch modules had up to v4
(v5 renames them in memory and back on save: `transformers/conversion_mapping.py`), plus
a `config.json` holding the architecture. Each family below is renamed, key by key, to the
timm `VisionTransformer` that computes the same function, so that one reader (timm's
names) serves both. What timm's names cannot carry (the LayerNorm epsilon of a port that
differs from timm's, e.g. 1e-12 in HF's DeiT and ViTMAE) is returned as option overrides.

| model_type (config.json)   | HF classes                              | timm architecture        |
| ---                        | ---                                     | ---                      |
| dinov2                     | Dinov2Model                             | vit_*_patch14_dinov2     |
| dinov2_with_registers      | Dinov2WithRegistersModel                | vit_*_patch14_reg4_dinov2 |
| vit_mae                    | ViTMAEModel, ViTMAEForPreTraining       | vit_*_patch16_224 (MAE)  |
| deit                       | DeiTModel, DeiTForImageClassification(WithTeacher) | deit_*(_distilled)_patch16_224 |
| clip, clip_vision_model    | CLIPModel (vision tower), CLIPVisionModel(WithProjection) | vit_*_clip(_quickgelu)_* |
| siglip, siglip_vision_model | SiglipModel (vision tower), SiglipVisionModel | vit_*_siglip_*       |

The per-family conversions follow the modules of `transformers/models/<family>/modeling_*.py`
and the timm converters `_convert_dinov2` and `_convert_openai_clip` in
`timm/models/vision_transformer.py` (a DINOv2 with registers is a timm `no_embed_class`
model: the cls token absorbs position row 0, the registers get none, as in timm).
Checked numerically once against transformers 5.24 and timm 1.0.31 (tiny random models of
each family, saved with save_pretrained, renamed here, loaded strictly into timm: the same
outputs, max |difference| 0 in float32; docs/checkpoint_formats.md). HF "vit" files keep
their own reader (safetensors_io). Dinov2ForImageClassification's head (it reads the cls
token concatenated with the mean patch token) has no timm equivalent and is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_jax.checkpoint.errors import CheckpointError

# Parts of combined models that are not the vision tower: left out, and reported.
_NOT_VISION = re.compile(r"^(text_model|text_projection|logit_scale|logit_bias|decoder|"
                         r"embeddings\.mask_token|vision_model\.embeddings\.mask_token)")


def _strip(sd: Mapping[str, np.ndarray], prefixes: tuple[str, ...]) -> dict[str, np.ndarray]:
  out = {}
  for k, v in sd.items():
    for p in prefixes:
      if k.startswith(p):
        k = k[len(p):]
        break
    out[k] = v
  return out


def _blocks(sd: Mapping[str, np.ndarray], layer_re: str) -> list[int]:
  found = {int(m.group(1)) for k in sd if (m := re.match(layer_re, k))}
  return sorted(found)


def _fuse_qkv(out: dict, sd: Mapping[str, np.ndarray], names: tuple[str, str, str],
              i: int, used: set[str]) -> None:
  for part in ("weight", "bias"):
    keys = [f"{n}.{part}" for n in names]
    if all(k in sd for k in keys):
      out[f"blocks.{i}.attn.qkv.{part}"] = np.concatenate([sd[k] for k in keys], axis=0)
      used.update(keys)


def _rename(out: dict, sd: Mapping[str, np.ndarray], src: str, dst: str, used: set[str]) -> None:
  for part in ("weight", "bias"):
    if f"{src}.{part}" in sd:
      out[f"{dst}.{part}"] = sd[f"{src}.{part}"]
      used.add(f"{src}.{part}")


def _size_name(width: int) -> str:
  return {192: "tiny", 384: "small", 768: "base", 1024: "large", 1152: "so400m",
          1280: "huge", 1536: "giant"}.get(width, f"w{width}")


# ---------------------------------------------------------------- ViT-style blocks (v4 names)

def _vit_layers(sd, out, used, prefix="encoder.layer."):
  """ViT / DeiT / ViTMAE / DINOv2 encoder layers (`encoder.layer.{i}.*`)."""
  for i in _blocks(sd, re.escape(prefix) + r"(\d+)\."):
    p = f"{prefix}{i}."
    _fuse_qkv(out, sd, tuple(p + f"attention.attention.{n}" for n in ("query", "key", "value")),
              i, used)
    _rename(out, sd, p + "attention.output.dense", f"blocks.{i}.attn.proj", used)
    # ViT/DeiT/MAE name the norms layernorm_before/after, DINOv2 norm1/norm2.
    _rename(out, sd, p + "layernorm_before", f"blocks.{i}.norm1", used)
    _rename(out, sd, p + "layernorm_after", f"blocks.{i}.norm2", used)
    _rename(out, sd, p + "norm1", f"blocks.{i}.norm1", used)
    _rename(out, sd, p + "norm2", f"blocks.{i}.norm2", used)
    _rename(out, sd, p + "intermediate.dense", f"blocks.{i}.mlp.fc1", used)
    _rename(out, sd, p + "output.dense", f"blocks.{i}.mlp.fc2", used)
    _rename(out, sd, p + "mlp.fc1", f"blocks.{i}.mlp.fc1", used)
    _rename(out, sd, p + "mlp.fc2", f"blocks.{i}.mlp.fc2", used)
    # DINOv2-g's SwiGLU: weights_in packs [x1; x2], silu(x1) * x2 (timm's SwiGLUPacked).
    _rename(out, sd, p + "mlp.weights_in", f"blocks.{i}.mlp.fc1", used)
    _rename(out, sd, p + "mlp.weights_out", f"blocks.{i}.mlp.fc2", used)
    for n in (1, 2):
      key = f"{p}layer_scale{n}.lambda1"
      if key in sd:
        out[f"blocks.{i}.ls{n}.gamma"] = sd[key]
        used.add(key)


def _clip_layers(sd, out, used, prefix="encoder.layers."):
  """CLIP / SigLIP encoder layers (`encoder.layers.{i}.*`)."""
  for i in _blocks(sd, re.escape(prefix) + r"(\d+)\."):
    p = f"{prefix}{i}."
    _fuse_qkv(out, sd, tuple(p + f"self_attn.{n}_proj" for n in "qkv"), i, used)
    _rename(out, sd, p + "self_attn.out_proj", f"blocks.{i}.attn.proj", used)
    _rename(out, sd, p + "layer_norm1", f"blocks.{i}.norm1", used)
    _rename(out, sd, p + "layer_norm2", f"blocks.{i}.norm2", used)
    _rename(out, sd, p + "mlp.fc1", f"blocks.{i}.mlp.fc1", used)
    _rename(out, sd, p + "mlp.fc2", f"blocks.{i}.mlp.fc2", used)


def _patch_embedding(sd, out, used, src):
  _rename(out, sd, src, "patch_embed.proj", used)


def _take(sd, key, used):
  used.add(key)
  return sd[key]


# ---------------------------------------------------------------- families

def _dinov2(config, sd, out, used):
  sd = _strip(sd, ("dinov2.",))
  _patch_embedding(sd, out, used, "embeddings.patch_embeddings.projection")
  cls = _take(sd, "embeddings.cls_token", used)
  pos = _take(sd, "embeddings.position_embeddings", used)
  if "embeddings.register_tokens" in sd:
    out["reg_token"] = _take(sd, "embeddings.register_tokens", used)
    out["cls_token"], out["pos_embed"] = cls + pos[:, :1], pos[:, 1:]
  else:
    out["cls_token"], out["pos_embed"] = cls, pos
  _vit_layers(sd, out, used)
  _rename(out, sd, "layernorm", "norm", used)
  regs = out["reg_token"].shape[1] if "reg_token" in out else 0
  width = out["cls_token"].shape[-1]
  arch = (f"vit_{_size_name(width)}_patch{config.get('patch_size', 14)}"
          f"{f'_reg{regs}' if regs else ''}_dinov2")
  swiglu = any(k.endswith("mlp.weights_in.weight") for k in sd)
  args = {"img_size": config.get("image_size"), "mlp_layer": "swiglu_packed" if swiglu else None}
  return sd, arch, args, {"layernorm_epsilon": config.get("layer_norm_eps", 1e-6)}


def _vit_mae(config, sd, out, used):
  sd = _strip(sd, ("vit.",))
  _patch_embedding(sd, out, used, "embeddings.patch_embeddings.projection")
  out["cls_token"] = _take(sd, "embeddings.cls_token", used)
  out["pos_embed"] = _take(sd, "embeddings.position_embeddings", used)
  _vit_layers(sd, out, used)
  _rename(out, sd, "layernorm", "norm", used)
  width = out["cls_token"].shape[-1]
  arch = f"vit_{_size_name(width)}_patch{config.get('patch_size', 16)}_224"
  return sd, arch, {"img_size": config.get("image_size")}, {
      "layernorm_epsilon": config.get("layer_norm_eps", 1e-12)}


def _deit(config, sd, out, used):
  sd = _strip(sd, ("deit.",))
  _patch_embedding(sd, out, used, "embeddings.patch_embeddings.projection")
  out["cls_token"] = _take(sd, "embeddings.cls_token", used)
  out["pos_embed"] = _take(sd, "embeddings.position_embeddings", used)
  distilled = "embeddings.distillation_token" in sd
  if distilled:
    out["dist_token"] = _take(sd, "embeddings.distillation_token", used)
  _vit_layers(sd, out, used)
  _rename(out, sd, "layernorm", "norm", used)
  _rename(out, sd, "cls_classifier", "head", used)
  _rename(out, sd, "distillation_classifier", "head_dist", used)
  _rename(out, sd, "classifier", "head", used)
  width = out["cls_token"].shape[-1]
  arch = (f"deit_{_size_name(width)}{'_distilled' if distilled else ''}"
          f"_patch{config.get('patch_size', 16)}_224")
  return sd, arch, {"img_size": config.get("image_size")}, {
      "layernorm_epsilon": config.get("layer_norm_eps", 1e-12)}


def _clip(config, sd, out, used):
  vision = config.get("vision_config", config)
  sd = _strip(sd, ("vision_model.",))
  _patch_embedding(sd, out, used, "embeddings.patch_embedding")
  out["cls_token"] = _take(sd, "embeddings.class_embedding", used).reshape(1, 1, -1)
  out["pos_embed"] = _take(sd, "embeddings.position_embedding.weight", used)[None]
  _rename(out, sd, "pre_layrnorm", "norm_pre", used)  # (sic: transformers' spelling)
  _clip_layers(sd, out, used)
  _rename(out, sd, "post_layernorm", "norm", used)
  if "visual_projection.weight" in sd:  # CLIPModel / CLIPVisionModelWithProjection
    out["head.weight"] = _take(sd, "visual_projection.weight", used)
    # Bias-free in CLIP; timm's converter writes zeros (timm's Linear head has a bias).
    out["head.bias"] = np.zeros(out["head.weight"].shape[0], out["head.weight"].dtype)
  width = out["cls_token"].shape[-1]
  act = vision.get("hidden_act", "quick_gelu")
  if act not in ("quick_gelu", "gelu"):
    raise CheckpointError(f"CLIP vision config hidden_act={act!r}: only quick_gelu and gelu "
                          "are known.")
  arch = (f"vit_{_size_name(width)}_patch{vision.get('patch_size', 16)}_clip"
          f"{'_quickgelu' if act == 'quick_gelu' else ''}_{vision.get('image_size', 224)}")
  return sd, arch, {"img_size": vision.get("image_size")}, {
      "layernorm_epsilon": vision.get("layer_norm_eps", 1e-5)}


def _siglip(config, sd, out, used):
  vision = config.get("vision_config", config)
  sd = _strip(sd, ("vision_model.",))
  _patch_embedding(sd, out, used, "embeddings.patch_embedding")
  out["pos_embed"] = _take(sd, "embeddings.position_embedding.weight", used)[None]
  _clip_layers(sd, out, used)
  _rename(out, sd, "post_layernorm", "norm", used)
  if "head.probe" in sd:  # the MAP head (vision_use_head, the default)
    width = out["pos_embed"].shape[-1]
    out["attn_pool.latent"] = _take(sd, "head.probe", used)
    w = _take(sd, "head.attention.in_proj_weight", used)
    b = _take(sd, "head.attention.in_proj_bias", used)
    out["attn_pool.q.weight"], out["attn_pool.kv.weight"] = w[:width], w[width:]
    out["attn_pool.q.bias"], out["attn_pool.kv.bias"] = b[:width], b[width:]
    _rename(out, sd, "head.attention.out_proj", "attn_pool.proj", used)
    _rename(out, sd, "head.layernorm", "attn_pool.norm", used)
    _rename(out, sd, "head.mlp.fc1", "attn_pool.mlp.fc1", used)
    _rename(out, sd, "head.mlp.fc2", "attn_pool.mlp.fc2", used)
  width = out["pos_embed"].shape[-1]
  act = vision.get("hidden_act", "gelu_pytorch_tanh")
  if act not in ("gelu_pytorch_tanh", "gelu"):
    raise CheckpointError(f"SigLIP vision config hidden_act={act!r}: only gelu_pytorch_tanh "
                          "and gelu are known.")
  arch = (f"vit_{_size_name(width)}_patch{vision.get('patch_size', 16)}_siglip_"
          f"{vision.get('image_size', 224)}")
  args = {"img_size": vision.get("image_size"),
          "act_layer": "gelu_tanh" if act == "gelu_pytorch_tanh" else "gelu",
          "global_pool": "map" if "head.probe" in sd else "avg"}
  return sd, arch, args, {"layernorm_epsilon": vision.get("layer_norm_eps", 1e-6)}


FAMILIES = {
    "dinov2": _dinov2, "dinov2_with_registers": _dinov2, "vit_mae": _vit_mae, "deit": _deit,
    "clip": _clip, "clip_vision_model": _clip, "siglip": _siglip,
    "siglip_vision_model": _siglip,
}


def is_hf_vision_config(config: Mapping[str, Any]) -> bool:
  return config.get("model_type") in FAMILIES


def to_timm(config: Mapping[str, Any], state: Mapping[str, np.ndarray]
            ) -> tuple[dict[str, np.ndarray], str, dict[str, Any], dict[str, Any], list[str]]:
  """A transformers state dict and its config.json -> the same model in timm's names.

  Returns:
    (timm state dict, timm architecture name, timm model_args (img_size, ...),
     vit_jax option overrides (layernorm_epsilon), keys left out (text tower, decoder,
     mask token)).
  Raises:
    CheckpointError: an unknown model_type, or keys of the vision tower that no rule
      maps (named).
  """
  model_type = config.get("model_type")
  if model_type not in FAMILIES:
    raise CheckpointError(
        f"config.json model_type={model_type!r}: the Hugging Face vision families read "
        f"here are {sorted(FAMILIES)} (and 'vit', read as HF ViT).")
  skipped = sorted(k for k in state if _NOT_VISION.match(k))
  vision = {k: v for k, v in state.items() if k not in skipped}
  out: dict[str, np.ndarray] = {}
  used: set[str] = set()
  stripped, arch, args, overrides = FAMILIES[model_type](dict(config), vision, out, used)
  unknown = sorted(set(stripped) - used)
  if unknown:
    raise CheckpointError(
        f"{model_type} checkpoint: {len(unknown)} keys that no {model_type} rule maps, e.g. "
        f"{unknown[:5]}; is config.json's model_type right for these weights?")
  return out, arch, {k: v for k, v in args.items() if v is not None}, overrides, skipped
